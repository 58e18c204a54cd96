/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading an archive: inspect, verify, extract.
 *
 * An archive comes from another node or an object store, so nothing in it
 * is trusted.  libarchive parses the tar (it knows every dialect, so it
 * also names what is not ours); everything it hands us is then checked
 * against the rules in docs/ARCHIVE.md before a byte reaches the disk,
 * and members are written only through descriptors under a fresh private
 * dir, never by path, so no member can land outside it.
 *
 * Threads: a feeder reads the archive and hands whole zstd frames to a
 * pool (the size hints, see archive_internal.h; frames without one, like
 * the manifest's, it decodes itself); this thread runs libarchive over the
 * frames in order and cuts member data into 1 MiB leaves, which the pool
 * hashes and writes.  Leaves are folded
 * into each member's tree hash in order as they come back, so a member is
 * verified when its last byte is written, without a second pass.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <zstd.h>

#include "archive_internal.h"
#include "kc/archive.h"
#include "kc/signals.h"
#include "kc/threads.h"
#include "kc/util.h"

#include "archive_read_int.h"

static char *printable(const char *s)
{
	size_t n = strnlen(s, 200);
	char *p = kc_xmalloc(n + 4);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	strcpy(p + n, strlen(s) > n ? "..." : "");
	return p;
}

/* ---- errors -------------------------------------------------------------------- */

/* After libarchive or the input failed: one line that says what is wrong. */
static int read_error(struct rctx *c, struct archive *a, bool first, struct kc_error **err)
{
	_cleanup_free_ char *in = c->cur ? printable(c->cur) : NULL;
	_cleanup_free_ char *where = in ? kc_xasprintf(" (in member '%s')", in) : kc_xstrdup("");
	pthread_mutex_lock(&c->mu);
	enum derr_kind k = c->dkind;
	pthread_mutex_unlock(&c->mu);
	switch (k) {
	case D_TRUNCATED:
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated%s", c->path, where);
	case D_CORRUPT:
		if (first)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is not a kcheckpoint archive: %s", c->path,
					    c->ddetail);
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is corrupt%s: %s", c->path, where, c->ddetail);
	case D_IO:
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot read '%s': %s", c->path, c->ddetail);
	case D_OK:
		break;
	}
	const char *msg = a ? archive_error_string(a) : NULL;
	_cleanup_free_ char *lower = printable(msg ? msg : "unreadable tar data");
	if (lower[0] >= 'A' && lower[0] <= 'Z')
		lower[0] = (char)(lower[0] - 'A' + 'a');
	if (strstr(lower, "runcated"))
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated%s", c->path, where);
	if (first)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is not a kcheckpoint archive: %s", c->path, lower);
	return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is corrupt%s: %s", c->path, where, lower);
}

static int unsafe(struct rctx *c, const char *name, const char *why, struct kc_error **err)
{
	_cleanup_free_ char *p = printable(name);
	return kc_error_set(err, KC_EXIT_IMAGE, 0, "unsafe member '%s' in '%s': %s", p, c->path, why);
}

/* ---- the manifest ------------------------------------------------------------- */

static int cmp_idx(const void *a, const void *b, void *arg)
{
	const struct kc_manifest *m = arg;
	return strcmp(m->members[*(const size_t *)a].path, m->members[*(const size_t *)b].path);
}

static ssize_t find_member(struct rctx *c, const char *path)
{
	size_t lo = 0, hi = c->m->n_members;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = strcmp(c->m->members[c->order[mid]].path, path);
		if (r == 0)
			return (ssize_t)c->order[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* A dir entry is allowed only as the parent of a listed member. */
static bool is_member_dir(struct rctx *c, const char *dir)
{
	size_t dl = strlen(dir);
	size_t lo = 0, hi = c->m->n_members;
	while (lo < hi) { /* first path >= dir */
		size_t mid = (lo + hi) / 2;
		if (strcmp(c->m->members[c->order[mid]].path, dir) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* paths starting with "dir/" sort after "dir" but may follow "dir-x" */
	for (size_t i = lo; i < c->m->n_members; i++) {
		const char *p = c->m->members[c->order[i]].path;
		if (strncmp(p, dir, dl) != 0)
			return false;
		if (p[dl] == '/')
			return true;
	}
	return false;
}

static int check_manifest(struct rctx *c, struct kc_error **err)
{
	struct kc_manifest *m = c->m;
	c->order = kc_xcalloc(m->n_members, sizeof(*c->order));
	c->rm = kc_xcalloc(m->n_members, sizeof(*c->rm));
	for (size_t i = 0; i < m->n_members; i++) {
		c->order[i] = i;
		c->rm[i].fd = -1;
		kc_treehash_init(&c->rm[i].th);
		const char *why = kc_archive_path_problem(m->members[i].path);
		if (!why && strcmp(m->members[i].path, KC_MANIFEST_NAME) == 0)
			why = "the manifest's own name";
		if (why) {
			_cleanup_free_ char *p = printable(m->members[i].path);
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "bad manifest in '%s': member '%s': %s", c->path, p,
					    why);
		}
	}
	qsort_r(c->order, m->n_members, sizeof(*c->order), cmp_idx, m);
	for (size_t i = 0; i + 1 < m->n_members; i++)
		if (strcmp(m->members[c->order[i]].path, m->members[c->order[i + 1]].path) == 0) {
			_cleanup_free_ char *p = printable(m->members[c->order[i]].path);
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "bad manifest in '%s': member '%s' is listed twice",
					    c->path, p);
		}
	for (size_t i = 0; i < m->n_members; i++) {
		_cleanup_free_ char *p = kc_xstrdup(m->members[i].path);
		for (char *s = strchr(p, '/'); s; s = strchr(s + 1, '/')) {
			*s = '\0';
			bool clash = find_member(c, p) >= 0;
			*s = '/';
			if (clash) {
				_cleanup_free_ char *q = printable(p);
				return kc_error_set(err, KC_EXIT_IMAGE, 0,
						    "bad manifest in '%s': member '%s' is both a file and a dir", c->path, q);
			}
		}
	}
	return 0;
}

/* ---- the destination ---------------------------------------------------------- */

static int open_dest(const char *dest, bool *created, struct kc_error **err)
{
	*created = false;
	if (mkdir(dest, 0700) == 0) {
		*created = true;
	} else if (errno == ENOENT) {
		_cleanup_free_ char *parent = kc_xstrdup(dest);
		char *slash = strrchr(parent, '/');
		if (slash && slash != parent) {
			*slash = '\0';
			if (kc_mkdir_p(parent, 0700, err) < 0)
				return -1;
		}
		if (mkdir(dest, 0700) < 0)
			return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot create directory '%s'", dest);
		*created = true;
	} else if (errno != EEXIST) {
		return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot create directory '%s'", dest);
	}
	int fd = open(dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (*created)
			rmdir(dest);
		return kc_error_errno(err, kc_ar_errno_exit(e), e, "cannot open '%s'", dest);
	}
	if (!*created) {
		int dup_fd = dup(fd);
		DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
		bool empty = d != NULL;
		if (d)
			rewinddir(d); /* a dup shares the offset: start from the top */
		struct dirent *de;
		while (d && (de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				empty = false;
		if (d)
			closedir(d);
		else if (dup_fd >= 0)
			close(dup_fd);
		if (!empty) {
			close(fd);
			return kc_error_set(err, KC_EXIT_FAILURE, ENOTEMPTY, "cannot extract into '%s': directory not empty",
					    dest);
		}
	}
	return fd;
}

/* Leaves dest as it was: gone if we made it, empty otherwise. */
static void clean_dest(const char *dest, int destfd, bool created)
{
	if (created) {
		kc_rm_rf(dest, NULL);
		return;
	}
	int dup_fd = dup(destfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	rewinddir(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		_cleanup_free_ char *p = kc_xasprintf("%s/%s", dest, de->d_name);
		kc_rm_rf(p, NULL);
	}
	closedir(d);
}

/* Opens (creating dirs 0700 as needed) the parent of rel under destfd. */
static int open_parent(struct rctx *c, const char *rel, const char **base, struct kc_error **err)
{
	_cleanup_free_ char *p = kc_xstrdup(rel);
	int dfd = dup(c->destfd);
	if (dfd < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot open '%s'", c->dest);
	char *comp = p;
	for (char *s = strchr(comp, '/'); s; comp = s + 1, s = strchr(comp, '/')) {
		*s = '\0';
		if (mkdirat(dfd, comp, 0700) < 0 && errno != EEXIST) {
			int e = errno;
			close(dfd);
			return kc_error_errno(err, kc_ar_errno_exit(e), e, "cannot create directory '%s/%s'", c->dest, p);
		}
		int nfd = openat(dfd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(dfd);
		if (nfd < 0)
			return kc_error_errno(err, kc_ar_errno_exit(e), e, "cannot open '%s/%s'", c->dest, p);
		dfd = nfd;
		*s = '/';
	}
	*base = rel + (comp - p);
	return dfd;
}

static int create_file(struct rctx *c, const char *rel, struct kc_error **err)
{
	const char *base;
	int dfd = open_parent(c, rel, &base, err);
	if (dfd < 0)
		return -1;
	int fd = openat(dfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int e = errno;
	close(dfd);
	if (fd < 0)
		return kc_error_errno(err, kc_ar_errno_exit(e), e, "cannot create '%s/%s'", c->dest, rel);
	return fd;
}

/* ---- leaves ---------------------------------------------------------------------- */

static void leaf_job(struct kc_ar_job *j)
{
	struct rleaf *l = (struct rleaf *)j;
	kc_sha256(l->data, l->len, l->digest);
	l->werr = 0;
	if (l->write && kc_pwrite_all(l->fd, l->data, l->len, l->off) < 0)
		l->werr = errno;
	struct rctx *c = l->ctx;
	if (l->sink && c->sink(c->sink_arg, c->m->members[l->member].path, l->off, l->data, l->len) < 0)
		l->werr = errno ? errno : EIO;
}

static int finish_member(struct rctx *c, size_t idx, struct kc_error **err)
{
	struct rmember *rm = &c->rm[idx];
	const struct kc_manifest_member *mm = &c->m->members[idx];
	if (rm->fd >= 0) {
		int r = close(rm->fd);
		rm->fd = -1;
		if (r < 0)
			return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot write '%s/%s'", c->dest,
					      mm->path);
	}
	char hex[65];
	kc_treehash_final(&rm->th, hex);
	if (strcmp(hex, mm->sha256) == 0)
		return 0;
	if (c->mode == R_VERIFY) {
		rm->bad = true;
		c->n_bad++;
		return 0;
	}
	_cleanup_free_ char *p = printable(mm->path);
	return kc_error_set(err, KC_EXIT_IMAGE, 0, "checksum mismatch for member '%s' in '%s'", p, c->path);
}

static int reap_one(struct rctx *c, struct kc_error **err)
{
	struct rleaf *l = &c->leaves[c->lreap % c->n_leaves];
	kc_ar_pool_wait(&c->pool, &l->job);
	c->lreap++;
	if (l->werr && l->sink) {
		_cleanup_free_ char *p = printable(c->m->members[l->member].path);
		return kc_error_errno(err, l->werr == ENOSPC ? KC_EXIT_IMAGE : KC_EXIT_CRIU, l->werr,
				      "cannot fill memory from member '%s' of '%s'", p, c->path);
	}
	if (l->werr)
		return kc_error_errno(err, kc_ar_errno_exit(l->werr), l->werr, "cannot write '%s/%s'", c->dest,
				      c->m->members[l->member].path);
	kc_treehash_add(&c->rm[l->member].th, l->digest);
	if (l->last)
		return finish_member(c, l->member, err);
	return 0;
}

static struct rleaf *get_leaf(struct rctx *c, struct kc_error **err)
{
	if (c->lsub - c->lreap == c->n_leaves && reap_one(c, err) < 0)
		return NULL;
	return &c->leaves[c->lsub % c->n_leaves];
}

static void submit_leaf(struct rctx *c, struct rleaf *l)
{
	kc_ar_pool_submit(&c->pool, &l->job, leaf_job);
	c->lsub++;
}

/* ---- entries ---------------------------------------------------------------------- */

static int check_entry(struct rctx *c, struct archive_entry *e, char **name_out, ssize_t *idx, bool *is_dir,
		       struct kc_error **err)
{
	const char *raw = archive_entry_pathname(e);
	if (!raw || !*raw)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has a member with no name", c->path);
	if (archive_entry_hardlink(e))
		return unsafe(c, raw, "hard link", err);
	if (archive_entry_symlink(e))
		return unsafe(c, raw, "symbolic link", err);
	switch (archive_entry_filetype(e)) {
	case AE_IFREG:
		*is_dir = false;
		break;
	case AE_IFDIR:
		*is_dir = true;
		break;
	case AE_IFLNK:
		return unsafe(c, raw, "symbolic link", err);
	case AE_IFCHR:
	case AE_IFBLK:
		return unsafe(c, raw, "device", err);
	case AE_IFIFO:
		return unsafe(c, raw, "fifo", err);
	case AE_IFSOCK:
		return unsafe(c, raw, "socket", err);
	default:
		return unsafe(c, raw, "not a file or directory", err);
	}
	if (archive_entry_sparse_count(e) > 0)
		return unsafe(c, raw, "sparse file", err);
	char *name = kc_xstrdup(raw);
	*name_out = name;
	size_t len = strlen(name);
	if (*is_dir && len > 1 && name[len - 1] == '/')
		name[len - 1] = '\0';
	const char *why = kc_archive_path_problem(name);
	if (why)
		return unsafe(c, raw, why, err);
	_cleanup_free_ char *p = printable(name);
	if (strcmp(name, KC_MANIFEST_NAME) == 0)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "duplicate member '%s' in '%s'", p, c->path);
	if (*is_dir) {
		if (!is_member_dir(c, name))
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "member '%s' in '%s' is not in the manifest", p,
					    c->path);
		for (size_t i = 0; i < c->n_dirs_seen; i++)
			if (strcmp(c->dirs_seen[i], name) == 0)
				return kc_error_set(err, KC_EXIT_IMAGE, 0, "duplicate member '%s' in '%s'", p, c->path);
		c->dirs_seen = kc_xrealloc(c->dirs_seen, (c->n_dirs_seen + 1) * sizeof(*c->dirs_seen));
		c->dirs_seen[c->n_dirs_seen++] = kc_xstrdup(name);
		return 0;
	}
	*idx = find_member(c, name);
	if (*idx < 0)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "member '%s' in '%s' is not in the manifest", p, c->path);
	if (c->rm[*idx].seen)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "duplicate member '%s' in '%s'", p, c->path);
	c->rm[*idx].seen = true;
	uint64_t want = c->m->members[*idx].size;
	if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0 || (uint64_t)archive_entry_size(e) != want)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "member '%s' in '%s' has size %lld, the manifest says %llu", p,
				    c->path, (long long)archive_entry_size(e), (unsigned long long)want);
	return 0;
}

static int read_member_data(struct rctx *c, struct archive *a, size_t idx, struct kc_archive_stats *st,
			    struct kc_error **err)
{
	uint64_t size = c->m->members[idx].size, got = 0;
	struct rleaf *l = NULL;
	for (;;) {
		const void *p;
		size_t sz;
		la_int64_t off;
		int r = archive_read_data_block(a, &p, &sz, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK)
			return read_error(c, a, false, err);
		if (off < 0 || (uint64_t)off != got || sz > size - got)
			return read_error(c, NULL, false, err);
		const uint8_t *q = p;
		while (sz) {
			if (!l) {
				l = get_leaf(c, err);
				if (!l)
					return -1;
				l->len = 0;
				l->off = got;
				l->member = idx;
				l->fd = c->rm[idx].fd;
				l->sink = c->sink && kc_archive_is_bulk_member(c->m->members[idx].path);
				l->write = c->mode == R_EXTRACT && !l->sink;
				l->ctx = c;
			}
			size_t take = KC_ARCHIVE_LEAF - l->len < sz ? KC_ARCHIVE_LEAF - l->len : sz;
			memcpy(l->data + l->len, q, take);
			l->len += take;
			got += take;
			q += take;
			sz -= take;
			if (l->len == KC_ARCHIVE_LEAF) {
				l->last = got == size;
				submit_leaf(c, l);
				l = NULL;
				__atomic_store_n(&st->done, st->done + KC_ARCHIVE_LEAF, __ATOMIC_RELAXED);
				if (kc_signals_pending())
					return kc_error_set(err, KC_EXIT_INTERRUPTED, 0, "interrupted");
			}
		}
	}
	if (got != size) {
		_cleanup_free_ char *p = printable(c->m->members[idx].path);
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated (in member '%s')", c->path, p);
	}
	if (l) {
		l->last = true;
		submit_leaf(c, l);
		__atomic_store_n(&st->done, st->done + l->len, __ATOMIC_RELAXED);
	} else if (size == 0) {
		return finish_member(c, idx, err);
	}
	return 0;
}

static int read_manifest_member(struct rctx *c, struct archive *a, struct kc_error **err)
{
	struct archive_entry *e;
	int r = archive_read_next_header(a, &e);
	if (r == ARCHIVE_EOF)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is not a kcheckpoint archive: no members", c->path);
	if (r != ARCHIVE_OK)
		return read_error(c, a, true, err);
	const char *name = archive_entry_pathname(e);
	if (!name || strcmp(name, KC_MANIFEST_NAME) != 0 || archive_entry_filetype(e) != AE_IFREG ||
	    archive_entry_hardlink(e)) {
		_cleanup_free_ char *p = printable(name ? name : "");
		return kc_error_set(err, KC_EXIT_IMAGE, 0,
				    "'%s' is not a kcheckpoint archive: first member is '%s', not '%s'", c->path, p,
				    KC_MANIFEST_NAME);
	}
	la_int64_t size = archive_entry_size(e);
	if (size <= 0 || (uint64_t)size > MANIFEST_MAX)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has a manifest of %lld bytes", c->path, (long long)size);
	c->cur = KC_MANIFEST_NAME;
	_cleanup_free_ char *json = kc_xmalloc((size_t)size + 1);
	size_t got = 0;
	while (got < (size_t)size) {
		la_ssize_t n = archive_read_data(a, json + got, (size_t)size - got);
		if (n < 0)
			return read_error(c, a, false, err);
		if (n == 0)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated (in member '%s')", c->path,
					    KC_MANIFEST_NAME);
		got += (size_t)n;
	}
	json[got] = '\0';
	struct kc_error *perr = NULL;
	if (kc_manifest_parse(json, got, c->m, &perr) < 0) {
		kc_error_propagate(err, perr);
		return kc_error_prefix(err, "bad manifest in '%s'", c->path);
	}
	if (check_manifest(c, err) < 0)
		return -1;
	if (c->mode == R_EXTRACT) {
		_cleanup_close_ int fd = create_file(c, KC_MANIFEST_NAME, err);
		if (fd < 0)
			return -1;
		if (kc_write_all(fd, json, got) < 0 || close(steal_fd(fd)) < 0)
			return kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot write '%s/%s'", c->dest,
					      KC_MANIFEST_NAME);
	}
	return (int)got;
}

static int bad_members_error(struct rctx *c, struct kc_error **err)
{
	_cleanup_free_ char *list = kc_xstrdup("");
	size_t shown = 0;
	for (size_t i = 0; i < c->m->n_members; i++) {
		if (!c->rm[i].bad)
			continue;
		if (shown == 10) {
			char *more = kc_xasprintf("%s and %zu more", list, c->n_bad - shown);
			free(list);
			list = more;
			break;
		}
		_cleanup_free_ char *p = printable(c->m->members[i].path);
		char *l = kc_xasprintf("%s%s'%s'", list, shown ? ", " : "", p);
		free(list);
		list = l;
		shown++;
	}
	return kc_error_set(err, KC_EXIT_IMAGE, 0, "checksum mismatch for member%s %s in '%s'", c->n_bad > 1 ? "s" : "",
			    list, c->path);
}

static int read_head(struct rctx *c, struct archive *a, struct kc_archive_stats *st, struct kc_error **err)
{
	int jlen = read_manifest_member(c, a, err);
	if (jlen < 0)
		return -1;
	st->bytes_in = (uint64_t)jlen;
	for (size_t i = 0; i < c->m->n_members; i++)
		st->bytes_in += c->m->members[i].size;
	return 0;
}

/* Members until the end; with stop_at_bulk, 1 when the header of the first
 * bulk member was read (c->pending), every earlier member complete. */
static int read_members(struct rctx *c, struct archive *a, struct kc_archive_stats *st, struct kc_error **err)
{
	for (;;) {
		ssize_t idx = c->pending;
		c->pending = -1;
		_cleanup_free_ char *name = NULL;
		if (idx < 0) {
			c->cur = NULL;
			struct archive_entry *e;
			int r = archive_read_next_header(a, &e);
			if (r == ARCHIVE_EOF)
				break;
			if (r != ARCHIVE_OK)
				return read_error(c, a, false, err);
			bool is_dir = false;
			if (check_entry(c, e, &name, &idx, &is_dir, err) < 0)
				return -1;
			c->cur = name;
			if (is_dir) {
				if (c->sink)
					return kc_error_set(err, KC_EXIT_IMAGE, 0,
							    "'%s' has a directory after its memory members", c->path);
				if (c->mode == R_EXTRACT) {
					_cleanup_free_ char *inner = kc_xasprintf("%s/x", name);
					const char *base;
					int dfd = open_parent(c, inner, &base, err);
					if (dfd < 0)
						return -1;
					close(dfd);
				}
				continue;
			}
			bool bulk = kc_archive_is_bulk_member(c->m->members[idx].path);
			if (c->stop_at_bulk && bulk) {
				/* CRIU runs on what came before: all of it must be there */
				for (size_t i = 0; i < c->m->n_members; i++)
					if (!c->rm[i].seen && !kc_archive_is_bulk_member(c->m->members[i].path)) {
						_cleanup_free_ char *p = printable(c->m->members[i].path);
						return kc_error_set(err, KC_EXIT_IMAGE, 0,
								    "member '%s' is missing from '%s' before its memory members",
								    p, c->path);
					}
				/* every member so far is written and verified */
				while (c->lreap < c->lsub)
					if (reap_one(c, err) < 0)
						return -1;
				c->pending = idx;
				return 1;
			}
			if (c->sink && !bulk) {
				_cleanup_free_ char *p = printable(name);
				return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has member '%s' after its memory members",
						    c->path, p);
			}
		}
		c->cur = c->m->members[idx].path;
		if (c->mode == R_EXTRACT && !(c->sink && kc_archive_is_bulk_member(c->cur))) {
			c->rm[idx].fd = create_file(c, c->cur, err);
			if (c->rm[idx].fd < 0)
				return -1;
		}
		if (read_member_data(c, a, (size_t)idx, st, err) < 0)
			return -1;
		c->data_end = archive_filter_bytes(a, 0);
	}
	c->cur = NULL;
	/* tar's two zero blocks after the last member: a stream cut right
	 * after a member's data (which may itself end in zeros) is a
	 * truncation, not an end */
	la_int64_t end = archive_filter_bytes(a, 0);
	if (end >= 0 && c->data_end >= 0 && end < ((c->data_end + 511) & ~(la_int64_t)511) + 1024)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", c->path);
	while (c->lreap < c->lsub)
		if (reap_one(c, err) < 0)
			return -1;
	/* the input must end cleanly too: a cut zstd frame is a truncation */
	const void *rest;
	while (kc_ar_la_read(a, c, &rest) > 0)
		;
	if (c->dkind != D_OK)
		return read_error(c, a, false, err);
	/* a plain tar cut at a member boundary still parses: its end blocks
	 * (two zero blocks, whole 512-byte blocks) say whether it is whole */
	if (c->tar_bytes % 512 || c->zero_tail < 1024)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", c->path);
	for (size_t i = 0; i < c->m->n_members; i++)
		if (!c->rm[i].seen) {
			_cleanup_free_ char *q = printable(c->m->members[i].path);
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "member '%s' is missing from '%s'", q, c->path);
		}
	if (c->n_bad)
		return bad_members_error(c, err);
	return 0;
}

struct kc_archive_reader {
	struct rctx c;
	struct archive *a;
	bool created;
	off_t size;
	double t0;
	struct kc_archive_stats *st, dummy;
	bool two_step; /* st->seconds: the two steps' own time */
	bool done;
};

static void reader_fail(struct kc_archive_reader *R);

/* ok false: a failed extraction, whose dest dir goes back to how it was. */
static void reader_free(struct kc_archive_reader *R, bool ok)
{
	struct rctx *c = &R->c;
	kc_ar_stop_decompressor(c);
	if (R->a)
		archive_read_free(R->a);
	kc_ar_pool_stop(&c->pool); /* runs what is queued: fds stay open until then */
	for (size_t i = 0; c->rm && i < c->m->n_members; i++)
		if (c->rm[i].fd >= 0)
			close(c->rm[i].fd);
	if (!ok && c->mode == R_EXTRACT && c->destfd >= 0)
		clean_dest(c->dest, c->destfd, R->created);
	if (c->destfd >= 0)
		close(c->destfd);
	for (size_t i = 0; i < c->n_leaves; i++)
		free(c->leaves[i].data);
	free(c->leaves);
	for (int i = 0; i < ITEMS; i++) {
		free(c->items[i].out);
		free(c->items[i].in);
	}
	for (size_t i = 0; i < c->n_dctx_free; i++)
		ZSTD_freeDCtx(c->dctx_free[i]);
	free(c->dctx_free);
	for (size_t i = 0; i < c->n_dirs_seen; i++)
		free(c->dirs_seen[i]);
	free(c->dirs_seen);
	free(c->order);
	free(c->rm);
	free(c->ddetail);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	R->st->bytes_out = c->archive_bytes;
	if (ok && c->mode != R_MANIFEST)
		R->st->bytes_out = (uint64_t)R->size;
	close(c->fd);
	if (!R->two_step)
		R->st->seconds = kc_now() - R->t0;
	free(R);
}

/* Everything but the members: threads, the dest dir, libarchive, and the
 * manifest read (R_MANIFEST stops there).  NULL on failure, nothing left. */
static struct kc_archive_reader *reader_open(const char *path, const char *dest, enum rmode mode,
					     struct kc_manifest *m, struct kc_archive_stats *st, struct kc_error **err)
{
	struct kc_archive_reader *R = kc_xcalloc(1, sizeof(*R));
	R->t0 = kc_now();
	R->st = st ? st : &R->dummy;
	memset(R->st, 0, sizeof(*R->st));
	kc_manifest_init(m);
	struct rctx *c = &R->c;
	*c = (struct rctx){.path = path, .mode = mode, .m = m, .destfd = -1, .dest = dest, .pending = -1};
	c->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (c->fd < 0) {
		kc_error_errno(err, kc_ar_errno_exit(errno), errno, "cannot open '%s'", path);
		free(R);
		return NULL;
	}
	struct stat sb = {0};
	if (fstat(c->fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		close(c->fd);
		free(R);
		kc_error_set(err, KC_EXIT_IMAGE, EISDIR, "'%s' is not a kcheckpoint archive: a directory", path);
		return NULL;
	}
	R->size = sb.st_size;
	c->seekable = S_ISREG(sb.st_mode);
	posix_fadvise(c->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (mode == R_EXTRACT) {
		c->destfd = open_dest(dest, &R->created, err);
		if (c->destfd < 0) {
			close(c->fd);
			free(R);
			return NULL;
		}
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	for (int i = 0; i < ITEMS; i++) {
		c->items[i].c = c;
		c->items[i].out = kc_xmalloc(OUT_CAP);
		c->items[i].in = kc_xmalloc(IN_CAP);
	}
	int cpus = kc_archive_online_cpus();
	int workers = mode == R_MANIFEST ? 1 : cpus > 3 ? cpus - 1 : 2;
	if (workers > 16)
		workers = 16;
	c->dctx_free = kc_xcalloc((size_t)workers, sizeof(*c->dctx_free));
	if (mode != R_MANIFEST) {
		c->n_leaves = (size_t)workers + 8;
		if (c->n_leaves > 24)
			c->n_leaves = 24;
		c->leaves = kc_xcalloc(c->n_leaves, sizeof(*c->leaves));
		for (size_t i = 0; i < c->n_leaves; i++)
			c->leaves[i].data = kc_xmalloc(KC_ARCHIVE_LEAF);
	}
	if (kc_ar_pool_start(&c->pool, workers, err) < 0)
		goto fail;
	int r = kc_thread_start(&c->dthread, kc_ar_feeder_main, c);
	if (r) {
		kc_error_errno(err, KC_EXIT_FAILURE, r, "cannot start a thread");
		goto fail;
	}
	c->dthread_started = true;
	R->a = archive_read_new();
	if (!R->a)
		abort();
	archive_read_support_format_tar(R->a);
	if (archive_read_open(R->a, c, NULL, kc_ar_la_read, NULL) != ARCHIVE_OK) {
		read_error(c, R->a, true, err);
		goto fail;
	}
	if (read_head(c, R->a, R->st, err) < 0)
		goto fail;
	return R;
fail:
	reader_fail(R);
	return NULL;
}

static void reader_fail(struct kc_archive_reader *R)
{
	struct kc_manifest *m = R->c.m;
	R->two_step = false;
	reader_free(R, false);
	kc_manifest_free(m);
}

static int archive_read_run(const char *path, const char *dest, enum rmode mode, struct kc_manifest *m,
			    struct kc_archive_stats *st, struct kc_error **err)
{
	struct kc_archive_reader *R = reader_open(path, dest, mode, m, st, err);
	if (!R)
		return -1;
	if (mode != R_MANIFEST && read_members(&R->c, R->a, R->st, err) < 0) {
		reader_fail(R);
		return -1;
	}
	reader_free(R, true);
	return 0;
}

int kc_archive_extract(const char *archive_path, const char *dest_dir, struct kc_manifest *m,
		       struct kc_archive_stats *st, struct kc_error **err)
{
	return archive_read_run(archive_path, dest_dir, R_EXTRACT, m, st, err);
}

int kc_archive_extract_begin(const char *archive_path, const char *dest_dir, struct kc_manifest *m,
			     struct kc_archive_stats *st, struct kc_archive_reader **out, struct kc_error **err)
{
	*out = NULL;
	struct kc_archive_reader *R = reader_open(archive_path, dest_dir, R_EXTRACT, m, st, err);
	if (!R)
		return -1;
	R->c.stop_at_bulk = kc_archive_bulk_last(m);
	int r = read_members(&R->c, R->a, R->st, err);
	if (r < 0) {
		reader_fail(R);
		return -1;
	}
	R->done = r == 0;
	R->c.stop_at_bulk = false;
	R->two_step = true;
	R->st->seconds = kc_now() - R->t0;
	R->st->bytes_in = __atomic_load_n(&R->st->done, __ATOMIC_RELAXED); /* what was unpacked */
	R->st->bytes_out = R->c.archive_bytes;
	*out = R;
	return 0;
}

int kc_archive_extract_rest(struct kc_archive_reader *R, kc_archive_sink sink, void *arg, struct kc_error **err)
{
	if (R->done)
		return 0;
	double t0 = kc_now();
	R->c.sink = sink;
	R->c.sink_arg = arg;
	int r = read_members(&R->c, R->a, R->st, err);
	/* after a failure leaves may still be on their way to the sink, whose
	 * target the caller frees once we return: wait for every one */
	struct rctx *c = &R->c;
	for (; c->lreap < c->lsub; c->lreap++)
		kc_ar_pool_wait(&c->pool, &c->leaves[c->lreap % c->n_leaves].job);
	R->c.sink = NULL;
	R->done = true;
	R->st->seconds += kc_now() - t0;
	return r;
}

bool kc_archive_extract_pending(const struct kc_archive_reader *R)
{
	return R && !R->done;
}

void kc_archive_extract_end(struct kc_archive_reader *R)
{
	if (R)
		reader_free(R, true);
}

int kc_archive_read_manifest(const char *archive_path, struct kc_manifest *m, struct kc_error **err)
{
	return archive_read_run(archive_path, NULL, R_MANIFEST, m, NULL, err);
}

int kc_archive_verify(const char *archive_path, struct kc_manifest *m, struct kc_error **err)
{
	return archive_read_run(archive_path, NULL, R_VERIFY, m, NULL, err);
}

int kc_archive_verify_stats(const char *archive_path, struct kc_manifest *m, struct kc_archive_stats *st,
			    struct kc_error **err)
{
	return archive_read_run(archive_path, NULL, R_VERIFY, m, st, err);
}
