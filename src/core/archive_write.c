/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing an archive in one pass over the images.
 *
 * The manifest must come first and must hold every member's checksum, yet
 * reading the images twice (hash, then archive) would double the time the
 * dumped tree stays frozen.  The manifest's length does not depend on the
 * checksums (64 hex digits each), so its tar member has a known size: we
 * leave room for it at the start of the file, stream the images behind it
 * and fill the room in at the end.  With zstd the manifest is a frame of
 * its own, padded to the room's size with a skippable frame, so the file
 * is still an ordinary .tar.zst.  The tar writer is ours because that
 * trick needs exact control of the bytes; libarchive reads them back.
 *
 * The tar stream is cut into jobs of about 1 MiB; a worker reads a job's
 * leaves from the page cache, hashes them and compresses the job into a
 * zstd frame of its own, preceded by a skippable frame holding its
 * compressed size (pzstd's layout), so readers can decompress in parallel
 * too.  This thread plans jobs, folds leaf hashes in order and writes the
 * frames in order.  zstd's own multithreading was measured at 2.3x
 * `tar | zstd -T1` on 16 cores: the one thread feeding it copied every
 * byte twice.  Memory is the job ring, whatever the image size.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "archive_internal.h"
#include "kc/archive.h"
#include "kc/signals.h"
#include "kc/util.h"

#define TAR_BLOCK 512
#define TAR_RECORD 10240
/* Tar bytes per job: a whole leaf plus the headers around it.  Larger jobs
 * gain under 1% of ratio at level 1 and cost memory in every slot. */
#define JOB_CAP KC_ARCHIVE_JOB_CAP
#define JOB_LEAVES 64
#define MAX_JOBS 20
/* Start write-back every so often so the final fsync has little left. */
#define SYNC_EVERY ((uint64_t)64 << 20)

struct wmember {
	char *path;
	const struct kc_archive_stream *src; /* NULL: a file of the images dir */
	uint64_t size;
	mode_t mode;
	int64_t mtime;
};

struct wctx;

struct wleaf {
	size_t member;
	uint64_t off;
	size_t len, buf_off;
	bool last;
	uint8_t digest[32];
};

struct wjob {
	struct kc_ar_job job; /* first: the pool hands us this pointer */
	struct wctx *c;
	uint8_t *in, *out;
	size_t in_len, out_len;
	struct wleaf leaves[JOB_LEAVES];
	size_t n_leaves;
	/* set by the worker */
	int err_errno;
	bool err_changed;
	size_t err_member;
	size_t zerr;
};

struct wctx {
	const char *out_path; /* for messages: the temporary file has no name */
	int dirfd;
	struct wmember *mem;
	size_t n_mem;
	dev_t skip_dev[2];
	ino_t skip_ino[2];
	int level;

	struct kc_ar_pool pool;
	struct wjob *jobs;
	size_t n_jobs;
	pthread_mutex_t cctx_mu;
	ZSTD_CCtx **cctx_free;
	size_t n_cctx_free, n_cctx;

	/* the planner's position in the tar stream */
	size_t p_member;
	uint64_t p_off;
	bool p_hdr, p_pad, p_trailer;
	uint64_t p_tar; /* tar bytes planned, the manifest member included */

	int fd;
	uint64_t written, synced;
};

/* ---- scanning ---------------------------------------------------------- */

/* By path, the large memory runs last (see kc_archive_is_bulk_member). */
static int cmp_member(const void *a, const void *b)
{
	const struct wmember *x = a, *y = b;
	bool bx = x->src || kc_archive_is_bulk_member(x->path), by = y->src || kc_archive_is_bulk_member(y->path);
	if (bx != by)
		return bx ? 1 : -1;
	return strcmp(x->path, y->path);
}

static int add_streams(struct wctx *c, const struct kc_archive_opts *o, struct kc_error **err)
{
	for (size_t i = 0; o && i < o->n_streams; i++) {
		const struct kc_archive_stream *sm = &o->streams[i];
		const char *why = kc_archive_path_problem(sm->path);
		if (why)
			return kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot archive '%s': %s", sm->path, why);
		for (size_t j = 0; j < c->n_mem; j++)
			if (strcmp(c->mem[j].path, sm->path) == 0)
				return kc_error_set(err, KC_EXIT_FAILURE, EEXIST, "cannot archive '%s' twice", sm->path);
		c->mem = kc_xrealloc(c->mem, (c->n_mem + 1) * sizeof(*c->mem));
		c->mem[c->n_mem++] = (struct wmember){
			.path = kc_xstrdup(sm->path), .src = sm, .size = sm->size, .mode = 0600, .mtime = time(NULL)};
	}
	return 0;
}

static void free_members(struct wctx *c)
{
	for (size_t i = 0; i < c->n_mem; i++)
		free(c->mem[i].path);
	free(c->mem);
	c->mem = NULL;
	c->n_mem = 0;
}

static int scan(struct wctx *c, int dfd, const char *prefix, const char *top, struct kc_error **err)
{
	int dup_fd = dup(dfd);
	if (dup_fd < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot read '%s'", top);
	_cleanup_closedir_ DIR *d = fdopendir(dup_fd);
	if (!d) {
		close(dup_fd);
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot read '%s'", top);
	}
	struct dirent *de;
	while ((errno = 0, de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!*prefix && strcmp(de->d_name, KC_MANIFEST_NAME) == 0)
			continue; /* m is what we archive */
		_cleanup_free_ char *rel = *prefix ? kc_xasprintf("%s/%s", prefix, de->d_name) : kc_xstrdup(de->d_name);
		struct stat st;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot stat '%s/%s'", top, rel);
		bool skip = false;
		for (int i = 0; i < 2; i++)
			skip |= c->skip_ino[i] && st.st_dev == c->skip_dev[i] && st.st_ino == c->skip_ino[i];
		if (skip)
			continue;
		const char *why = kc_archive_path_problem(rel);
		if (why)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "cannot archive '%s/%s': %s", top, rel, why);
		if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot open '%s/%s'", top, rel);
			if (scan(c, sub, rel, top, err) < 0)
				return -1;
			continue;
		}
		if (!S_ISREG(st.st_mode))
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "cannot archive '%s/%s': not a regular file", top, rel);
		c->mem = kc_xrealloc(c->mem, (c->n_mem + 1) * sizeof(*c->mem));
		c->mem[c->n_mem++] = (struct wmember){
			.path = steal_ptr(rel),
			.size = (uint64_t)st.st_size,
			.mode = st.st_mode & 0777,
			.mtime = st.st_mtim.tv_sec,
		};
	}
	if (errno)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot read '%s'", top);
	return 0;
}

/* ---- tar headers --------------------------------------------------------- */

static void octal(char *field, size_t width, uint64_t v)
{
	snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
}

static void ustar(char *h, const char *name, const char *prefix, uint64_t size, mode_t mode, int64_t mtime,
		  char type)
{
	memset(h, 0, TAR_BLOCK);
	memcpy(h, name, strnlen(name, 100));
	octal(h + 100, 8, mode & 07777);
	octal(h + 108, 8, 0);
	octal(h + 116, 8, 0);
	octal(h + 124, 12, size > 077777777777ULL ? 0 : size); /* pax "size" says the rest */
	octal(h + 136, 12, mtime < 0 || mtime > 077777777777LL ? 0 : (uint64_t)mtime);
	memset(h + 148, ' ', 8);
	h[156] = type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	if (prefix)
		memcpy(h + 345, prefix, strnlen(prefix, 155));
	unsigned sum = 0;
	for (int i = 0; i < TAR_BLOCK; i++)
		sum += (unsigned char)h[i];
	snprintf(h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

/* "LEN key=value\n", LEN counting itself. */
static size_t pax_record(char *out, const char *key, const char *val)
{
	size_t body = strlen(key) + strlen(val) + 3, len = body + 1;
	while ((size_t)snprintf(NULL, 0, "%zu", len) + body != len)
		len++;
	return (size_t)sprintf(out, "%zu %s=%s\n", len, key, val);
}

#define HDR_MAX (3 * TAR_BLOCK + 4608)

/* Header blocks for one member into h (HDR_MAX bytes); returns their size. */
static size_t tar_header(char *h, const char *path, uint64_t size, mode_t mode, int64_t mtime)
{
	size_t len = strlen(path);
	const char *name = path;
	char prefix[156] = "";
	bool pax_path = false;
	if (len > 100) {
		/* ustar's split: prefix (at most 155) '/' name (1 to 100) */
		size_t split = 0;
		for (size_t i = 1; i < len && i <= 155; i++)
			if (path[i] == '/' && len - i - 1 <= 100 && len - i - 1 > 0) {
				split = i;
				break;
			}
		if (split) {
			memcpy(prefix, path, split);
			prefix[split] = '\0';
			name = path + split + 1;
		} else {
			pax_path = true;
		}
	}
	bool pax_size = size > 077777777777ULL;
	if (!pax_path && !pax_size) {
		ustar(h, name, prefix[0] ? prefix : NULL, size, mode, mtime, '0');
		return TAR_BLOCK;
	}
	char recs[4608];
	size_t rl = 0;
	if (pax_path)
		rl += pax_record(recs + rl, "path", path);
	if (pax_size) {
		char v[32];
		snprintf(v, sizeof(v), "%llu", (unsigned long long)size);
		rl += pax_record(recs + rl, "size", v);
	}
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	char xname[101];
	snprintf(xname, sizeof(xname), "PaxHeaders/%.80s", base);
	ustar(h, xname, NULL, rl, 0644, mtime, 'x');
	memset(h + TAR_BLOCK, 0, (rl + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK);
	memcpy(h + TAR_BLOCK, recs, rl);
	size_t off = TAR_BLOCK + (rl + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
	char shortname[101];
	snprintf(shortname, sizeof(shortname), "%.100s", base);
	ustar(h + off, pax_path ? shortname : name, pax_path ? NULL : (prefix[0] ? prefix : NULL), size, mode, mtime,
	      '0');
	return off + TAR_BLOCK;
}

/* ---- jobs ---------------------------------------------------------------- */

static ZSTD_CCtx *get_cctx(struct wctx *c)
{
	pthread_mutex_lock(&c->cctx_mu);
	ZSTD_CCtx *z = c->n_cctx_free ? c->cctx_free[--c->n_cctx_free] : NULL;
	if (!z)
		c->n_cctx++;
	pthread_mutex_unlock(&c->cctx_mu);
	if (!z) {
		z = ZSTD_createCCtx();
		if (!z)
			abort();
		ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, c->level);
		ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
	}
	return z;
}

static void put_cctx(struct wctx *c, ZSTD_CCtx *z)
{
	pthread_mutex_lock(&c->cctx_mu);
	c->cctx_free[c->n_cctx_free++] = z;
	pthread_mutex_unlock(&c->cctx_mu);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static int read_leaf(struct wctx *c, struct wjob *j, struct wleaf *l)
{
	const struct wmember *mb = &c->mem[l->member];
	if (mb->src) {
		if (mb->src->read(mb->src->arg, j->in + l->buf_off, l->len, l->off) < 0) {
			j->err_errno = errno;
			return -1;
		}
		return 0;
	}
	/* O_NONBLOCK: a FIFO put in its place would wait for a writer */
	int fd = openat(c->dirfd, mb->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		j->err_errno = errno;
		return -1;
	}
	size_t got = 0;
	while (got < l->len) {
		ssize_t r = pread(fd, j->in + l->buf_off + got, l->len - got, (off_t)(l->off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			j->err_errno = r < 0 ? errno : 0;
			j->err_changed = r == 0;
			close(fd);
			return -1;
		}
		got += (size_t)r;
	}
	struct stat st;
	if (l->last && (fstat(fd, &st) < 0 || (uint64_t)st.st_size != mb->size))
		j->err_changed = true;
	close(fd);
	return j->err_changed ? -1 : 0;
}

static void run_job(struct kc_ar_job *kj)
{
	struct wjob *j = (struct wjob *)kj;
	struct wctx *c = j->c;
	j->err_errno = 0;
	j->err_changed = false;
	j->zerr = 0;
	for (size_t i = 0; i < j->n_leaves; i++) {
		struct wleaf *l = &j->leaves[i];
		if (read_leaf(c, j, l) < 0) {
			j->err_member = l->member;
			return;
		}
	}
	/* two leaves of a length hashed side by side: twice the speed */
	for (size_t i = 0; i < j->n_leaves; i++) {
		struct wleaf *l = &j->leaves[i], *m = i + 1 < j->n_leaves ? &j->leaves[i + 1] : NULL;
		if (m && m->len == l->len) {
			kc_sha256_2(j->in + l->buf_off, j->in + m->buf_off, l->len, l->digest, m->digest);
			i++;
		} else {
			kc_sha256(j->in + l->buf_off, l->len, l->digest);
		}
	}
	if (!c->level)
		return;
	ZSTD_CCtx *z = get_cctx(c);
	size_t n = ZSTD_compress2(z, j->out + 12, ZSTD_compressBound(JOB_CAP), j->in, j->in_len);
	put_cctx(c, z);
	if (ZSTD_isError(n)) {
		j->zerr = n;
		return;
	}
	/* the size hint: a skippable frame that other readers pass over */
	put_le32(j->out, KC_ZSTD_HINT_MAGIC);
	put_le32(j->out + 4, 4);
	put_le32(j->out + 8, (uint32_t)n);
	j->out_len = 12 + n;
}

static bool more_to_plan(const struct wctx *c)
{
	return !c->p_trailer;
}

/* Cuts the next stretch of the tar stream into j. */
static void plan_job(struct wctx *c, struct wjob *j)
{
	j->in_len = 0;
	j->out_len = 0;
	j->n_leaves = 0;
	char hdr[HDR_MAX];
	while (c->p_member < c->n_mem) {
		const struct wmember *mb = &c->mem[c->p_member];
		if (!c->p_hdr) {
			size_t hl = tar_header(hdr, mb->path, mb->size, mb->mode, mb->mtime);
			if (j->in_len + hl > JOB_CAP)
				return;
			memcpy(j->in + j->in_len, hdr, hl);
			j->in_len += hl;
			c->p_hdr = true;
		}
		if (c->p_off < mb->size) {
			size_t len = mb->size - c->p_off < KC_ARCHIVE_LEAF ? (size_t)(mb->size - c->p_off) : KC_ARCHIVE_LEAF;
			if (j->in_len + len > JOB_CAP || j->n_leaves == JOB_LEAVES)
				return;
			j->leaves[j->n_leaves++] = (struct wleaf){
				.member = c->p_member,
				.off = c->p_off,
				.len = len,
				.buf_off = j->in_len,
				.last = c->p_off + len == mb->size,
			};
			j->in_len += len;
			c->p_off += len;
			continue;
		}
		if (!c->p_pad) {
			size_t pad = (size_t)((TAR_BLOCK - mb->size % TAR_BLOCK) % TAR_BLOCK);
			if (j->in_len + pad > JOB_CAP)
				return;
			memset(j->in + j->in_len, 0, pad);
			j->in_len += pad;
			c->p_pad = true;
		}
		c->p_member++;
		c->p_off = 0;
		c->p_hdr = c->p_pad = false;
	}
	/* two zero blocks, then zeros to a whole record as tar(1) writes */
	uint64_t total = c->p_tar + j->in_len + 2 * TAR_BLOCK;
	size_t trailer = 2 * TAR_BLOCK + (size_t)((TAR_RECORD - total % TAR_RECORD) % TAR_RECORD);
	if (j->in_len + trailer > JOB_CAP)
		return;
	memset(j->in + j->in_len, 0, trailer);
	j->in_len += trailer;
	c->p_trailer = true;
}

static void plan_next(struct wctx *c, struct wjob *j)
{
	plan_job(c, j);
	c->p_tar += j->in_len;
}

static int write_failed(struct wctx *c, int e, struct kc_error **err)
{
	return kc_error_errno(err, kc_ar_errno_exit(e), e, "cannot write '%s'", c->out_path);
}

static int job_failed(struct wctx *c, struct wjob *j, struct kc_error **err)
{
	if (j->zerr)
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot compress '%s': %s", c->out_path,
				    ZSTD_getErrorName(j->zerr));
	const char *path = c->mem[j->err_member].path;
	if (j->err_changed)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' changed while it was archived", path);
	return kc_error_errno(err, kc_ar_errno_exit(j->err_errno), j->err_errno, "cannot read '%s'", path);
}

/* In tar order: fold the leaves into their members' tree hashes, write. */
static int consume_job(struct wctx *c, struct wjob *j, struct kc_manifest *m, struct kc_treehash *th,
		       struct kc_archive_stats *st, struct kc_error **err)
{
	if (j->zerr || j->err_errno || j->err_changed)
		return job_failed(c, j, err);
	uint64_t data = 0;
	for (size_t i = 0; i < j->n_leaves; i++) {
		const struct wleaf *l = &j->leaves[i];
		kc_treehash_add(th, l->digest);
		data += l->len;
		if (l->last) {
			kc_treehash_final(th, m->members[l->member].sha256);
			kc_treehash_init(th);
		}
	}
	const uint8_t *p = c->level ? j->out : j->in;
	size_t n = c->level ? j->out_len : j->in_len;
	if (kc_write_all(c->fd, p, n) < 0)
		return write_failed(c, errno, err);
	c->written += n;
	if (c->written - c->synced >= SYNC_EVERY) {
		sync_file_range(c->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		c->synced = c->written;
	}
	__atomic_store_n(&st->done, st->done + data, __ATOMIC_RELAXED);
	return 0;
}

static int stream_members(struct wctx *c, struct kc_manifest *m, struct kc_archive_stats *st,
			  struct kc_error **err)
{
	struct kc_treehash th;
	kc_treehash_init(&th);
	/* empty members have no leaves: their checksum is known now */
	for (size_t i = 0; i < c->n_mem; i++)
		if (c->mem[i].size == 0)
			kc_treehash_final(&th, m->members[i].sha256);
	uint64_t submitted = 0, consumed = 0;
	int rc = 0;
	for (;;) {
		while (rc == 0 && submitted - consumed < c->n_jobs && more_to_plan(c)) {
			struct wjob *j = &c->jobs[submitted % c->n_jobs];
			plan_next(c, j);
			kc_ar_pool_submit(&c->pool, &j->job, run_job);
			submitted++;
		}
		if (consumed == submitted)
			break;
		struct wjob *j = &c->jobs[consumed % c->n_jobs];
		kc_ar_pool_wait(&c->pool, &j->job);
		consumed++;
		if (rc == 0 && kc_signals_pending())
			rc = kc_error_set(err, KC_EXIT_INTERRUPTED, 0, "interrupted");
		if (rc == 0)
			rc = consume_job(c, j, m, &th, st, err);
		/* after a failure, only drain what is in flight */
	}
	return rc;
}

/* Member 0 (the manifest) as tar bytes; *len is its size. */
static char *manifest_tar(const char *json, size_t jlen, size_t *len)
{
	size_t total = TAR_BLOCK + (jlen + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
	char *t = kc_xcalloc(1, total);
	ustar(t, KC_MANIFEST_NAME, NULL, jlen, 0600, (int64_t)time(NULL), '0');
	memcpy(t + TAR_BLOCK, json, jlen);
	*len = total;
	return t;
}

/* The room at the start of the file, filled last (see the top comment). */
static int write_head(struct wctx *c, const char *tar, size_t tar_len, uint64_t room, struct kc_error **err)
{
	if (!c->level) {
		if (kc_pwrite_all(c->fd, tar, tar_len, 0) < 0)
			return write_failed(c, errno, err);
		return 0;
	}
	size_t cap = (size_t)room;
	_cleanup_free_ uint8_t *buf = kc_xcalloc(1, cap);
	ZSTD_CCtx *z = get_cctx(c);
	size_t clen = ZSTD_compress2(z, buf, cap - 8, tar, tar_len);
	put_cctx(c, z);
	if (ZSTD_isError(clen))
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot compress the manifest: %s", ZSTD_getErrorName(clen));
	put_le32(buf + clen, ZSTD_MAGIC_SKIPPABLE_START);
	put_le32(buf + clen + 4, (uint32_t)(cap - clen - 8));
	if (kc_pwrite_all(c->fd, buf, cap, 0) < 0)
		return write_failed(c, errno, err);
	return 0;
}

static int open_output(const char *out_path, char **dir_out, char **tmp_name, struct kc_error **err)
{
	_cleanup_free_ char *copy = kc_xstrdup(out_path);
	char *dir = kc_xstrdup(dirname(copy));
	*dir_out = dir;
	*tmp_name = NULL;
	/* unnamed until it is complete: a crash leaves nothing behind */
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
		return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot create '%s'", out_path);
	_cleanup_free_ char *copy2 = kc_xstrdup(out_path);
	char *tmpl = kc_xasprintf("%s/.%s.XXXXXX", dir, basename(copy2));
	fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		free(tmpl);
		return kc_error_errno(err, kc_ar_errno_exit(e), e, "cannot create '%s'", out_path);
	}
	*tmp_name = tmpl;
	return fd;
}

static int publish(int fd, const char *dir, const char *tmp_name, const char *out_path, double *sync_s,
		   struct kc_error **err)
{
	/* on the disk before the dumped tree is killed: a node that loses
	 * power must not lose both */
	double t0 = kc_now();
	if (fsync(fd) < 0)
		return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot write '%s'", out_path);
	*sync_s = kc_now() - t0;
	_cleanup_free_ char *own = NULL;
	if (!tmp_name) {
		_cleanup_free_ char *copy = kc_xstrdup(out_path);
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		for (int i = 0;; i++) {
			free(own);
			own = kc_xasprintf("%s/.%s.%d.%d", dir, basename(copy), (int)getpid(), i);
			if (linkat(fd, "", AT_FDCWD, own, AT_EMPTY_PATH) == 0 ||
			    linkat(AT_FDCWD, proc, AT_FDCWD, own, AT_SYMLINK_FOLLOW) == 0)
				break;
			if (errno != EEXIST || i > 100)
				return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot create '%s'", out_path);
		}
		tmp_name = own;
	}
	/* never over a file that appeared while we dumped (another dump to the
	 * same name, say): the check before the dump cannot see that */
	if (renameat2(AT_FDCWD, tmp_name, AT_FDCWD, out_path, RENAME_NOREPLACE) < 0) {
		int e = errno;
		if (own)
			unlink(own);
		if (e == EEXIST)
			return kc_error_set(err, KC_EXIT_BUSY, e,
					    "'%s' appeared while this dump ran: not overwriting it", out_path);
		return kc_error_errno(err, kc_ar_errno_exit(e), e, "cannot rename '%s' to '%s'", tmp_name, out_path);
	}
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0)
		fsync(dfd);
	return 0;
}

static void clear_members(struct kc_manifest *m)
{
	for (size_t i = 0; i < m->n_members; i++)
		free(m->members[i].path);
	free(m->members);
	m->members = NULL;
	m->n_members = 0;
}

static int run_write(struct wctx *c, const char *images_dir, struct kc_manifest *m, const char *out_path,
		     int threads, const struct kc_archive_opts *o, struct kc_archive_stats *st, struct kc_error **err)
{
	/* every cleanup variable before the first goto */
	_cleanup_free_ char *dir = NULL, *tmp_name = NULL, *json0 = NULL, *head0 = NULL, *json = NULL, *head = NULL;
	c->fd = open_output(out_path, &dir, &tmp_name, err);
	if (c->fd < 0)
		return -1;
	int rc = -1;
	struct stat sb;
	if (fstat(c->fd, &sb) == 0) {
		c->skip_dev[0] = sb.st_dev;
		c->skip_ino[0] = sb.st_ino;
	}
	if (stat(out_path, &sb) == 0) {
		c->skip_dev[1] = sb.st_dev;
		c->skip_ino[1] = sb.st_ino;
	}
	c->dirfd = open(images_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0) {
		kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot open '%s'", images_dir);
		goto out;
	}
	if (scan(c, c->dirfd, "", images_dir, err) < 0 || add_streams(c, o, err) < 0)
		goto out;
	qsort(c->mem, c->n_mem, sizeof(*c->mem), cmp_member);

	/* the manifest with placeholder checksums has the final length */
	static const char zero_sum[] = "0000000000000000000000000000000000000000000000000000000000000000";
	clear_members(m);
	for (size_t i = 0; i < c->n_mem; i++)
		kc_manifest_add_member(m, c->mem[i].path, c->mem[i].size, zero_sum);
	free(m->compression);
	m->compression = c->level ? kc_xasprintf("zstd:%d", c->level) : kc_xstrdup("none");
	json0 = kc_manifest_to_string(m);
	size_t jlen = strlen(json0), head_len;
	head0 = manifest_tar(json0, jlen, &head_len);
	uint64_t room = c->level ? ZSTD_compressBound(head_len) + 8 : head_len;
	if (lseek(c->fd, (off_t)room, SEEK_SET) < 0) {
		write_failed(c, errno, err);
		goto out;
	}
	c->p_tar = head_len;
	c->written = room;

	c->n_jobs = (size_t)threads + 4 < MAX_JOBS ? (size_t)threads + 4 : MAX_JOBS;
	c->jobs = kc_xcalloc(c->n_jobs, sizeof(*c->jobs));
	for (size_t i = 0; i < c->n_jobs; i++) {
		c->jobs[i].c = c;
		c->jobs[i].in = kc_xmalloc(JOB_CAP);
		if (c->level)
			c->jobs[i].out = kc_xmalloc(12 + ZSTD_compressBound(JOB_CAP));
	}
	c->cctx_free = kc_xcalloc((size_t)threads + 1, sizeof(*c->cctx_free));
	if (kc_ar_pool_start(&c->pool, threads, err) < 0)
		goto out;
	if (stream_members(c, m, st, err) < 0)
		goto out;

	json = kc_manifest_to_string(m);
	if (strlen(json) != jlen) {
		kc_error_set(err, KC_EXIT_FAILURE, 0, "internal error: the manifest changed size");
		goto out;
	}
	head = manifest_tar(json, jlen, &head_len);
	if (write_head(c, head, head_len, room, err) < 0)
		goto out;
	if (kc_signals_pending()) {
		kc_error_set(err, KC_EXIT_INTERRUPTED, 0, "interrupted");
		goto out;
	}
	if (publish(c->fd, dir, tmp_name, out_path, &st->sync_seconds, err) < 0)
		goto out;
	st->bytes_out = c->written;
	st->bytes_in = jlen;
	for (size_t i = 0; i < c->n_mem; i++)
		st->bytes_in += c->mem[i].size;
	rc = 0;
out:
	if (rc < 0 && tmp_name)
		unlink(tmp_name);
	return rc;
}

int kc_archive_write(const char *images_dir, struct kc_manifest *m, const char *out_path,
		     const struct kc_archive_opts *o, struct kc_archive_stats *st, struct kc_error **err)
{
	double t0 = kc_now();
	struct kc_archive_stats dummy = {0};
	if (!st)
		st = &dummy;
	memset(st, 0, sizeof(*st));
	struct wctx c = {.out_path = out_path, .fd = -1, .dirfd = -1};
	if (kc_archive_parse_compression(o ? o->compression : NULL, &c.level, err) < 0)
		return -1;
	int threads = o && o->threads > 0 ? o->threads : kc_archive_online_cpus();
	pthread_mutex_init(&c.cctx_mu, NULL);
	int rc = run_write(&c, images_dir, m, out_path, threads, o, st, err);

	kc_ar_pool_stop(&c.pool);
	for (size_t i = 0; i < c.n_jobs; i++) {
		free(c.jobs[i].in);
		free(c.jobs[i].out);
	}
	free(c.jobs);
	for (size_t i = 0; i < c.n_cctx_free; i++)
		ZSTD_freeCCtx(c.cctx_free[i]);
	free(c.cctx_free);
	free_members(&c);
	if (c.dirfd >= 0)
		close(c.dirfd);
	if (c.fd >= 0)
		close(c.fd);
	pthread_mutex_destroy(&c.cctx_mu);
	st->seconds = kc_now() - t0;
	return rc;
}
