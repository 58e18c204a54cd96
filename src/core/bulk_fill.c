/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fills the large memory runs that the dump kept out of CRIU's images
 * (src/backend/criu_bulk.c) into the restored, still stopped tree, with
 * many threads: each writes chunks through /proc/<pid>/mem straight from
 * the page cache (the images mapped read-only), one copy per byte.
 * /proc/<pid>/mem, not process_vm_writev: it writes read-only private
 * mappings too, as CRIU does when it restores them.
 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "archive_internal.h"
#include "kc/signals.h"
#include "kc/util.h"
#include "orchestrator_int.h"

#define CHUNK (16u << 20)
#define FILL_PIECE ((uint64_t)128 << 10) /* hashed then written: fits a core's L2 */

struct dst {
	pid_t pid;
	uint64_t start; /* its start time: a pid that dies may go to another process */
	int fd; /* /proc/<pid>/mem */
};

/* Stopped by CRIU (--leave-stopped) before running one instruction of its
 * own: wait until the kernel shows it, bounded. */
static int wait_stopped(pid_t pid, struct kc_error **err)
{
	for (int i = 0; i < 1000; i++) {
		char st = kc_pid_state(pid);
		if (st == 'T' || st == 't')
			return 0;
		if (!st || st == 'Z' || st == 'X')
			return kc_error_set(err, KC_EXIT_CRIU, ESRCH, "restored pid %d is gone before its memory was filled",
					    (int)pid);
		struct timespec ts = {0, 1000000L};
		nanosleep(&ts, NULL);
	}
	return kc_error_set(err, KC_EXIT_CRIU, 0, "restored pid %d is not stopped: its memory cannot be filled safely",
			    (int)pid);
}

/* ---- filling from a stream (an archive's memory members) -------------------------------- */

struct tregion {
	const struct kc_bulk_region *r;
	int fd;
	atomic_uint_fast64_t written;
};

struct kc_fill_target {
	struct tregion *v; /* sorted by file, then offset */
	size_t n;
	struct dst *dsts;
	size_t n_dst;
	atomic_uint_fast64_t done;
};

static int cmp_tregion(const void *a, const void *b)
{
	const struct kc_bulk_region *x = ((const struct tregion *)a)->r, *y = ((const struct tregion *)b)->r;
	int c = strcmp(x->file, y->file);
	if (c)
		return c;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

void kc_fill_target_close(struct kc_fill_target *t)
{
	if (!t)
		return;
	for (size_t d = 0; d < t->n_dst; d++)
		close(t->dsts[d].fd);
	free(t->dsts);
	free(t->v);
	free(t);
}

struct span {
	uint64_t a, b;
};

static int cover(const struct kc_map *m, void *arg)
{
	struct span *s = arg;
	if (m->lo <= s->a && s->a < m->hi)
		s->a = m->hi; /* maps are in address order */
	return s->a >= s->b;
}

/* Whether [a, b) lies within pid's mappings (adjacent ones may share it):
 * an index that names memory CRIU did not map is refused as a bad image,
 * not met as a write error half way through. */
static bool mapped(pid_t pid, uint64_t a, uint64_t b)
{
	struct span s = {a, b};
	kc_pid_maps_each(pid, cover, &s);
	return s.a >= s.b;
}

int kc_fill_check(const struct kc_bulk_region *v, size_t n, struct kc_error **err)
{
	for (size_t i = 0; i < n; i++)
		if (!mapped(v[i].pid, v[i].vaddr, v[i].vaddr + v[i].bytes))
			return kc_error_set(err, KC_EXIT_IMAGE, 0,
					    "the image's index names %" PRIu64 " bytes at 0x%" PRIx64
					    " that restored pid %d does not have",
					    v[i].bytes, v[i].vaddr, (int)v[i].pid);
	for (size_t i = 0; i < n; i++)
		if ((i == 0 || v[i].pid != v[i - 1].pid) && wait_stopped(v[i].pid, err) < 0)
			return -1;
	return 0;
}

int kc_fill_target_open(const struct kc_bulk_region *v, size_t n, struct kc_fill_target **out, struct kc_error **err)
{
	if (kc_fill_check(v, n, err) < 0)
		return -1;
	struct kc_fill_target *t = kc_xcalloc(1, sizeof(*t));
	t->v = kc_xcalloc(n + 1, sizeof(*t->v));
	t->dsts = kc_xcalloc(n + 1, sizeof(*t->dsts));
	for (size_t i = 0; i < n; i++) {
		size_t d = 0;
		while (d < t->n_dst && t->dsts[d].pid != v[i].pid)
			d++;
		if (d == t->n_dst) {
			char path[64];
			snprintf(path, sizeof(path), "/proc/%d/mem", (int)v[i].pid);
			t->dsts[d].pid = v[i].pid;
			t->dsts[d].start = kc_pid_starttime(v[i].pid);
			t->dsts[d].fd = open(path, O_RDWR | O_CLOEXEC);
			if (t->dsts[d].fd < 0) {
				kc_error_errno(err, KC_EXIT_CRIU, errno, "cannot open '%s'", path);
				goto fail;
			}
			t->n_dst++;
		}
		t->v[t->n].r = &v[i];
		t->v[t->n++].fd = t->dsts[d].fd;
	}
	qsort(t->v, t->n, sizeof(*t->v), cmp_tregion);
	*out = t;
	return 0;
fail:
	kc_fill_target_close(t);
	return -1;
}

int kc_fill_target_write(void *arg, const char *file, uint64_t off, const void *data, size_t len)
{
	struct kc_fill_target *t = arg;
	/* the first region of file that ends after off */
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct kc_bulk_region *r = t->v[mid].r;
		int c = strcmp(r->file, file);
		if (c < 0 || (c == 0 && r->offset + r->bytes <= off))
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < t->n && strcmp(t->v[i].r->file, file) == 0 && t->v[i].r->offset < off + len; i++) {
		const struct kc_bulk_region *r = t->v[i].r;
		uint64_t from = r->offset > off ? r->offset : off;
		uint64_t to = r->offset + r->bytes < off + len ? r->offset + r->bytes : off + len;
		if (from >= to)
			continue;
		if (kc_pwrite_all(t->v[i].fd, (const unsigned char *)data + (from - off), to - from,
				  r->vaddr + (from - r->offset)) < 0)
			return -1;
		atomic_fetch_add(&t->v[i].written, to - from);
		atomic_fetch_add(&t->done, to - from);
	}
	return 0;
}

uint64_t kc_bulk_regions_bytes(const struct kc_bulk_region *v, size_t n)
{
	uint64_t t = 0;
	for (size_t i = 0; i < n; i++)
		t += v[i].bytes;
	return t;
}

uint64_t kc_fill_target_done(void *arg)
{
	return atomic_load(&((struct kc_fill_target *)arg)->done);
}

int kc_fill_target_check(const struct kc_fill_target *t, struct kc_error **err)
{
	for (size_t i = 0; i < t->n; i++)
		if (atomic_load(&t->v[i].written) != t->v[i].r->bytes)
			return kc_error_set(err, KC_EXIT_IMAGE, 0,
					    "the image's memory members do not hold %" PRIu64 " bytes of pid %d at 0x%" PRIx64
					    " that its index promises",
					    t->v[i].r->bytes, (int)t->v[i].r->pid, t->v[i].r->vaddr);
	return 0;
}

/* ---- filling from the images dir ---------------------------------------------------------- */

/*
 * The bulk files are cut into chunks at 16 MiB of file offset (whole 1 MiB
 * leaves).  A worker reads each 128 KiB piece into its own buffer, hashes
 * it there, for the manifest's checksum, and writes it into the processes
 * from there, while it is still in the core's cache: what was checked is
 * what goes in, even if the file changes meanwhile (read twice from a
 * shared mapping, a byte rewritten between the two got past the check;
 * a file cut short was a SIGBUS).
 */
struct src {
	char file[64];
	int fd;
	size_t len;
	size_t first_leaf;
	int member; /* in the manifest, -1: not checked */
};

struct fchunk {
	size_t src;
	uint64_t off, len;
};

struct ffill {
	struct kc_fill_target *t;
	struct src *srcs;
	struct fchunk *chunks;
	size_t n;
	uint8_t (*d)[32];
	atomic_size_t next;
	atomic_int failed;
};

/* len bytes of s at off into buf; a file shorter than it was is a damaged image */
static int read_piece(struct ffill *f, const struct src *s, unsigned char *buf, uint64_t len, uint64_t off)
{
	if (kc_pread_all(s->fd, buf, len, off) == 0)
		return 0;
	kc_fail_once(&f->failed, errno == EIO ? EBADMSG : errno);
	return -1;
}

static int write_piece(struct ffill *f, const struct src *s, const unsigned char *buf, uint64_t len, uint64_t off)
{
	if (kc_fill_target_write(f->t, s->file, off, buf, len) == 0)
		return 0;
	kc_fail_once(&f->failed, errno);
	return -1;
}

/*
 * k (1 or 2) runs of len bytes of s, at at and at + 1 MiB, piece by piece:
 * each piece read into buf (k pieces side by side), hashed into d[0..k)
 * (NULL: a member not checked), two at once, and written from there.
 */
static int fill_leaves(struct ffill *f, const struct src *s, unsigned char *buf, uint64_t at, uint64_t len, int k,
		       uint8_t (*d)[32])
{
	struct kc_sha256 h[2];
	kc_sha256_init(&h[0]);
	kc_sha256_init(&h[1]);
	for (uint64_t p = 0; p < len; p += FILL_PIECE) {
		uint64_t n = len - p < FILL_PIECE ? len - p : FILL_PIECE;
		for (int j = 0; j < k; j++)
			if (read_piece(f, s, buf + j * FILL_PIECE, n, at + j * KC_ARCHIVE_LEAF + p) < 0)
				return -1;
		if (d && k == 2)
			kc_sha256_update2(&h[0], buf, &h[1], buf + FILL_PIECE, n);
		else if (d)
			kc_sha256_update(&h[0], buf, n);
		for (int j = 0; j < k; j++)
			if (write_piece(f, s, buf + j * FILL_PIECE, n, at + j * KC_ARCHIVE_LEAF + p) < 0)
				return -1;
	}
	for (int j = 0; d && j < k; j++)
		kc_sha256_final(&h[j], d[j]);
	return 0;
}

static void *fill_worker(void *arg)
{
	struct ffill *f = arg;
	pthread_setname_np(pthread_self(), "kc-fill");
	unsigned char *buf = malloc(2 * FILL_PIECE);
	if (!buf) {
		kc_fail_once(&f->failed, ENOMEM);
		return NULL;
	}
	for (;;) {
		/* ^C: the restore is rolled back, the rest need not be written */
		if (kc_signals_pending())
			kc_fail_once(&f->failed, EINTR);
		if (atomic_load(&f->failed))
			break;
		size_t i = atomic_fetch_add(&f->next, 1);
		if (i >= f->n)
			break;
		const struct fchunk *c = &f->chunks[i];
		const struct src *s = &f->srcs[c->src];
		if (s->member < 0) {
			if (fill_leaves(f, s, buf, c->off, c->len, 1, NULL) < 0)
				break;
			continue;
		}
		/* two leaves at a time where two are left, hashed side by side */
		for (uint64_t o = 0; o < c->len;) {
			uint64_t at = c->off + o, rest = c->len - o;
			int k = rest >= 2 * KC_ARCHIVE_LEAF ? 2 : 1;
			uint64_t len = rest < KC_ARCHIVE_LEAF ? rest : KC_ARCHIVE_LEAF;
			if (fill_leaves(f, s, buf, at, len, k, &f->d[s->first_leaf + at / KC_ARCHIVE_LEAF]) < 0)
				break;
			o += k * len;
		}
	}
	free(buf);
	return NULL;
}

int kc_bulk_fill(const char *images_dir, const struct kc_manifest *m, const struct kc_bulk_region *v, size_t n,
		 unsigned threads, uint64_t *bytes, struct kc_error **err)
{
	struct src *srcs = kc_xcalloc(n + 1, sizeof(*srcs));
	size_t n_src = 0, n_chunks = 0, leaves = 0;
	struct ffill f = {.srcs = srcs};
	int rc = -1;
	*bytes = 0;

	for (size_t i = 0; i < n; i++) {
		size_t s = 0;
		while (s < n_src && strcmp(srcs[s].file, v[i].file))
			s++;
		if (s == n_src) {
			snprintf(srcs[s].file, sizeof(srcs[s].file), "%s", v[i].file);
			_cleanup_free_ char *path = kc_xasprintf("%s/%s", images_dir, v[i].file);
			/* a file of the image, not a link out of it */
			/* O_NONBLOCK: a FIFO put in its place would wait for a writer */
			int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			struct stat st;
			if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
				if (fd >= 0)
					errno = EINVAL;
				kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open '%s'", path);
				if (fd >= 0)
					close(fd);
				goto out;
			}
			srcs[s].len = (size_t)st.st_size;
			srcs[s].fd = fd;
			srcs[s].member = -1;
			for (size_t k = 0; m && k < m->n_members; k++)
				if (!strcmp(m->members[k].path, srcs[s].file))
					srcs[s].member = (int)k;
			if (srcs[s].member >= 0 && m->members[srcs[s].member].size != srcs[s].len) {
				kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has %zu bytes, the manifest says %llu", path,
					     srcs[s].len, (unsigned long long)m->members[srcs[s].member].size);
				n_src++;
				goto out;
			}
			srcs[s].first_leaf = leaves;
			leaves += (srcs[s].len + KC_ARCHIVE_LEAF - 1) / KC_ARCHIVE_LEAF;
			n_chunks += (srcs[s].len + CHUNK - 1) / CHUNK;
			n_src++;
		}
		if (v[i].offset > srcs[s].len || v[i].bytes > srcs[s].len - v[i].offset) {
			kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is shorter than its index says", v[i].file);
			goto out;
		}
	}
	if (kc_fill_target_open(v, n, &f.t, err) < 0)
		goto out;
	f.chunks = kc_xcalloc(n_chunks + 1, sizeof(*f.chunks));
	f.d = kc_xcalloc(leaves + 1, sizeof(*f.d));
	for (size_t s = 0; s < n_src; s++)
		for (uint64_t off = 0; off < srcs[s].len; off += CHUNK)
			f.chunks[f.n++] = (struct fchunk){.src = s, .off = off,
							  .len = srcs[s].len - off < CHUNK ? srcs[s].len - off : CHUNK};
	struct kc_progress *pg = kc_progress_start("memory-fill", kc_fill_target_done, f.t);
	kc_progress_total(pg, kc_bulk_regions_bytes(v, n));
	kc_run_pool(threads, f.n, fill_worker, &f);
	kc_progress_stop(pg);

	int e = atomic_load(&f.failed);
	if (e == EINTR && kc_check_interrupted(err) < 0)
		goto out;
	if (e == EBADMSG) {
		kc_error_set(err, KC_EXIT_IMAGE, 0, "a memory member in '%s' is shorter than when the restore began",
			     images_dir);
		goto out;
	}
	if (e) {
		/* killed from outside (the OOM killer, say): say which, not EIO */
		for (size_t d = 0; d < f.t->n_dst; d++) {
			const struct dst *x = &f.t->dsts[d];
			if (!kc_pid_alive(x->pid) || kc_pid_starttime(x->pid) != x->start) {
				kc_error_set(err, KC_EXIT_CRIU, 0, "pid %d of the restored tree died while its memory was filled",
					     (int)x->pid);
				goto out;
			}
		}
		kc_error_errno(err, KC_EXIT_CRIU, e, "cannot fill the memory of the restored tree");
		goto out;
	}
	/* the tree is still stopped: a wrong byte never runs */
	for (size_t s = 0; s < n_src; s++) {
		if (srcs[s].member < 0)
			continue;
		char hex[65];
		kc_leaves_root((const uint8_t(*)[32])f.d + srcs[s].first_leaf,
			       (srcs[s].len + KC_ARCHIVE_LEAF - 1) / KC_ARCHIVE_LEAF, hex);
		if (strcmp(hex, m->members[srcs[s].member].sha256)) {
			kc_error_set(err, KC_EXIT_IMAGE, 0, "checksum mismatch for member '%s' in '%s'", srcs[s].file,
				     images_dir);
			goto out;
		}
	}
	if (kc_fill_target_check(f.t, err) < 0)
		goto out;
	*bytes = kc_fill_target_done(f.t);
	rc = 0;
out:
	kc_fill_target_close(f.t);
	for (size_t s = 0; s < n_src; s++)
		if (srcs[s].fd >= 0)
			close(srcs[s].fd);
	free(srcs);
	free(f.chunks);
	free(f.d);
	return rc;
}

/*
 * Marks of a fill in progress.  Between CRIU's restore and the end of the
 * fill the tree is stopped with part of its memory still empty; if
 * kcheckpoint dies there (SIGKILL), `recover` must not let it run.  The
 * mark lives in /run/kcheckpoint (a tmpfs: gone with a reboot, as the
 * tree is), one file per pid.  A mark only counts while its pid is
 * stopped: a running pid means the fill finished or the pid was reused.
 */
int kc_fillmark_set(pid_t pid, struct kc_error **err)
{
	if (kc_run_mark_write("filling", pid, "", err) < 0)
		return kc_error_prefix(err, "fill mark");
	return 0;
}

/* Once CRIU made the process: its start time goes into the mark, so a
 * later process that gets the same pid is not taken for it. */
void kc_fillmark_stamp(pid_t pid)
{
	char text[32];
	snprintf(text, sizeof(text), "%llu\n", (unsigned long long)kc_pid_starttime(pid));
	kc_run_mark_write("filling", pid, text, NULL);
}

void kc_fillmark_clear(pid_t pid)
{
	_cleanup_free_ char *path = kc_run_mark_path("filling", pid);
	unlink(path);
}

bool kc_fillmark_blocks(pid_t pid)
{
	_cleanup_free_ char *path = kc_run_mark_path("filling", pid);
	_cleanup_free_ char *text = NULL;
	if (kc_read_file(path, &text, NULL, NULL) < 0)
		return false;
	/* a stamp of another process with this pid: stale (empty: the
	 * restore was killed before CRIU made it, so this one may be it) */
	unsigned long long t;
	bool other = sscanf(text, "%llu", &t) == 1 && t != kc_pid_starttime(pid);
	char st = kc_pid_state(pid);
	if (!other && (st == 'T' || st == 't'))
		return true;
	unlink(path); /* stale */
	return false;
}
