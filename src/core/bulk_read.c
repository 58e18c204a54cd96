/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dump side of the parallel memory path: CRIU (patched, see
 * patches/criu/) left the pages of large private anonymous VMAs out of its
 * images and listed the VMAs in kcheckpoint-skipped.txt; the tree is still
 * stopped (--leave-stopped), so their memory cannot change.  Here many
 * threads read the populated pages of those VMAs (per /proc/<pid>/pagemap:
 * present or swapped) through /proc/<pid>/mem and write them into
 * kcheckpoint-bulk-read.img, and each run goes into the index
 * (kcheckpoint-bulk.txt) that restore fills from.  For an archive the same
 * reads feed the archive writer instead (kc_bulk_source_read): the memory
 * is compressed into the archive as it is read, never written out plain.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "archive_internal.h"
#include "kc/signals.h"
#include "kc/util.h"
#include "orchestrator_int.h"

#define CHUNK (16u << 20)
#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)

struct run {
	pid_t pid;
	uint64_t vaddr, bytes, offset;
};

struct kc_bulk_source {
	struct run *runs;
	size_t n;
	int *memfd; /* per run: /proc/<pid>/mem, shared by a pid's runs */
	uint64_t total;
};

struct job {
	struct kc_bulk_source *src;
	int out_fd;
	atomic_size_t next; /* chunk counter */
	size_t n_chunks;
	uint8_t (*d)[32]; /* leaf digests */
	pthread_mutex_t write_lock;
	atomic_uint_fast64_t done;
	atomic_int failed;
};

static void add_run(struct run **v, size_t *n, size_t *cap, pid_t pid, uint64_t vaddr, uint64_t bytes)
{
	if (*n && (*v)[*n - 1].pid == pid && (*v)[*n - 1].vaddr + (*v)[*n - 1].bytes == vaddr) {
		(*v)[*n - 1].bytes += bytes;
		return;
	}
	if (*n == *cap)
		*v = kc_xrealloc(*v, (*cap = *cap ? *cap * 2 : 64) * sizeof(**v));
	(*v)[(*n)++] = (struct run){.pid = pid, .vaddr = vaddr, .bytes = bytes};
}

#define PM_PFN_MASK ((1ull << 55) - 1)

/* The frame of the kernel's shared zero page, which a page only ever read
 * maps: such a page is not data (CRIU skips it too), and copying it would
 * turn it into real memory at restore.  0 if it cannot be found. */
static uint64_t zero_pfn(void)
{
	static uint64_t pfn = UINT64_MAX;
	if (pfn != UINT64_MAX)
		return pfn;
	pfn = 0;
	long page = sysconf(_SC_PAGESIZE);
	volatile char *p = mmap(NULL, (size_t)page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return pfn;
	(void)p[0]; /* a read fault maps the zero page */
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t e = 0;
	if (fd >= 0 && pread(fd, &e, sizeof(e), (off_t)((uintptr_t)p / (uintptr_t)page * sizeof(e))) == sizeof(e) &&
	    (e & PM_PRESENT))
		pfn = e & PM_PFN_MASK;
	if (fd >= 0)
		close(fd);
	munmap((void *)p, (size_t)page);
	return pfn;
}

/* The populated pages of [start, end) of pid, as runs. */
static int scan(pid_t pid, uint64_t start, uint64_t end, struct run **v, size_t *n, size_t *cap,
		struct kc_error **err)
{
	uint64_t zero = zero_pfn();
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kc_error_errno(err, KC_EXIT_CRIU, errno, "cannot open '%s'", path);
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t buf[4096];
	for (uint64_t va = start; va < end;) {
		size_t want = (size_t)((end - va) / page);
		if (want > KC_ARRAY_SIZE(buf))
			want = KC_ARRAY_SIZE(buf);
		ssize_t got = pread(fd, buf, want * sizeof(uint64_t), (off_t)(va / page * sizeof(uint64_t)));
		if (got <= 0 || got % (ssize_t)sizeof(uint64_t))
			return kc_error_errno(err, KC_EXIT_CRIU, got < 0 ? errno : EIO, "cannot read '%s'", path);
		for (size_t i = 0; i < (size_t)got / sizeof(uint64_t); i++, va += page)
			if ((buf[i] & PM_SWAPPED) ||
			    ((buf[i] & PM_PRESENT) && !(zero && (buf[i] & PM_PFN_MASK) == zero)))
				add_run(v, n, cap, pid, va, page);
	}
	return 0;
}

static void *reader(void *arg)
{
	struct job *j = arg;
	pthread_setname_np(pthread_self(), "kc-memory-read"); /* for top -H and bench/thread_sampler.py */
	/* through a buffer and pwrite, not into a shared mapping of the file:
	 * on ext4 every first write fault of a mapped page costs a journal
	 * handle (page_mkwrite), and the H200 node read at 1.9 GB/s that way */
	unsigned char *buf = malloc(CHUNK);
	if (!buf) {
		kc_fail_once(&j->failed, ENOMEM);
		return NULL;
	}
	for (;;) {
		if (kc_signals_pending())
			kc_fail_once(&j->failed, EINTR);
		if (atomic_load(&j->failed))
			break;
		size_t c = atomic_fetch_add(&j->next, 1);
		if (c >= j->n_chunks)
			break;
		/* chunks of the file, whole 1 MiB leaves: hashed here, for the
		 * manifest, while the bytes are at hand */
		uint64_t off = (uint64_t)c * CHUNK;
		size_t len = j->src->total - off < CHUNK ? (size_t)(j->src->total - off) : CHUNK;
		if (kc_bulk_source_read(j->src, buf, len, off) < 0) {
			kc_fail_once(&j->failed, errno);
			break;
		}
		kc_sha256_leaves(buf, len, KC_ARCHIVE_LEAF, &j->d[off / KC_ARCHIVE_LEAF]);
		/* one writer at a time: writes into one file's page cache take
		 * its inode lock anyway, and on the H200 node 16 writers of one
		 * file got 1.6 GB/s where one got 3.7, as did 16 files
		 * (bench/write_bench.c) */
		pthread_mutex_lock(&j->write_lock);
		int w = kc_pwrite_all(j->out_fd, buf, len, off), e = errno;
		pthread_mutex_unlock(&j->write_lock);
		if (w < 0) {
			kc_fail_once(&j->failed, e);
			break;
		}
		atomic_fetch_add(&j->done, len);
	}
	free(buf);
	return NULL;
}

static uint64_t read_so_far(void *arg)
{
	return atomic_load(&((struct job *)arg)->done);
}

void kc_bulk_source_free(struct kc_bulk_source *s)
{
	if (!s)
		return;
	for (size_t i = 0; s->memfd && i < s->n; i++)
		if (s->memfd[i] >= 0 && (i == 0 || s->memfd[i] != s->memfd[i - 1]))
			close(s->memfd[i]);
	free(s->memfd);
	free(s->runs);
	free(s);
}

int kc_bulk_source_open(const char *images_dir, struct kc_bulk_source **out, struct kc_error **err)
{
	*out = NULL;
	_cleanup_free_ char *list = kc_xasprintf("%s/" KC_BULK_SKIPPED, images_dir);
	_cleanup_free_ char *text = NULL;
	_cleanup_error_ struct kc_error *rerr = NULL;
	if (kc_read_file(list, &text, NULL, &rerr) < 0) {
		if (rerr->cause == ENOENT)
			return 0; /* a CRIU that dumped everything itself */
		kc_error_propagate(err, steal_ptr(rerr));
		return -1;
	}
	struct kc_bulk_source *s = kc_xcalloc(1, sizeof(*s));
	size_t cap = 0;
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		int pid;
		uint64_t start, end;
		if (sscanf(l, "%d %" SCNx64 " %" SCNx64, &pid, &start, &end) != 3 || pid <= 0 || end <= start) {
			kc_error_set(err, KC_EXIT_CRIU, 0, "'%s': bad line '%s'", list, l);
			goto fail;
		}
		if (scan((pid_t)pid, start, end, &s->runs, &s->n, &cap, err) < 0)
			goto fail;
	}
	s->memfd = kc_xcalloc(s->n + 1, sizeof(int));
	for (size_t i = 0; i < s->n; i++) {
		s->memfd[i] = -1;
		s->runs[i].offset = s->total;
		s->total += s->runs[i].bytes;
	}
	for (size_t i = 0; i < s->n; i++) {
		if (i && s->runs[i - 1].pid == s->runs[i].pid) {
			s->memfd[i] = s->memfd[i - 1];
			continue;
		}
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/mem", (int)s->runs[i].pid);
		s->memfd[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (s->memfd[i] < 0) {
			kc_error_errno(err, KC_EXIT_CRIU, errno, "cannot open '%s'", path);
			goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	kc_bulk_source_free(s);
	return -1;
}

uint64_t kc_bulk_source_size(const struct kc_bulk_source *s)
{
	return s ? s->total : 0;
}

int kc_bulk_source_read(void *arg, void *buf, size_t len, uint64_t off)
{
	const struct kc_bulk_source *s = arg;
	/* the last run starting at or before off */
	size_t lo = 0, hi = s->n;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->runs[mid].offset <= off)
			lo = mid;
		else
			hi = mid;
	}
	unsigned char *p = buf;
	for (size_t r = lo; len; r++) {
		if (r >= s->n || off < s->runs[r].offset || off - s->runs[r].offset >= s->runs[r].bytes) {
			errno = EINVAL; /* past the end: the caller's sizes are wrong */
			return -1;
		}
		uint64_t in = off - s->runs[r].offset;
		size_t take = s->runs[r].bytes - in < len ? (size_t)(s->runs[r].bytes - in) : len;
		if (kc_pread_all(s->memfd[r], p, take, s->runs[r].vaddr + in) < 0)
			return -1;
		p += take;
		off += take;
		len -= take;
	}
	return 0;
}

int kc_bulk_write_index(const char *images_dir, const struct kc_bulk_source *s, struct kc_error **err)
{
	_cleanup_free_ char *idx_path = kc_xasprintf("%s/" KC_BULK_INDEX, images_dir);
	FILE *idx = fopen(idx_path, "ae");
	if (!idx)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot write '%s'", idx_path);
	for (size_t i = 0; i < s->n; i++)
		fprintf(idx, "%d %" PRIx64 " %" PRIu64 " " KC_BULK_READ_NAME " %" PRIu64 "\n", (int)s->runs[i].pid,
			s->runs[i].vaddr, s->runs[i].bytes, s->runs[i].offset);
	if (fclose(idx) != 0)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot write '%s'", idx_path);
	_cleanup_free_ char *list = kc_xasprintf("%s/" KC_BULK_SKIPPED, images_dir);
	unlink(list); /* CRIU's note, now in the index */
	return 0;
}

int kc_bulk_read(const char *images_dir, const struct kc_bulk_source *s, unsigned threads, char sha256[65],
		 struct kc_error **err)
{
	struct job j = {.src = (struct kc_bulk_source *)s, .write_lock = PTHREAD_MUTEX_INITIALIZER};
	int rc = -1;
	_cleanup_free_ char *out_path = kc_xasprintf("%s/" KC_BULK_READ_NAME, images_dir);
	_cleanup_free_ char *leaves_path = kc_xasprintf("%s/" KC_BULK_LEAVES_NAME, images_dir);
	int out_fd = -1;
	j.n_chunks = (size_t)((s->total + CHUNK - 1) / CHUNK);
	size_t leaves = (size_t)((s->total + KC_ARCHIVE_LEAF - 1) / KC_ARCHIVE_LEAF);
	j.d = kc_xcalloc(leaves + 1, sizeof(*j.d));
	if (s->total && kc_check_room(images_dir, s->total, "the memory to read", err) < 0)
		goto out;
	if (s->total) {
		out_fd = open(out_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (out_fd < 0 || ftruncate(out_fd, (off_t)s->total) < 0) {
			kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot create '%s'", out_path);
			goto out;
		}
		j.out_fd = out_fd;
		struct kc_progress *pg = kc_progress_start("memory-read", read_so_far, &j);
		kc_progress_total(pg, s->total);
		kc_run_pool(threads, j.n_chunks, reader, &j);
		kc_progress_stop(pg);
		int e = atomic_load(&j.failed);
		if (e == EINTR && kc_check_interrupted(err) < 0)
			goto out;
		if (e) {
			kc_error_errno(err, e == ENOSPC || e == EDQUOT ? KC_EXIT_IMAGE : KC_EXIT_FAILURE, e,
				       "cannot read the memory of the dumped tree into '%s'", out_path);
			goto out;
		}
	}
	kc_leaves_root((const uint8_t(*)[32])j.d, leaves, sha256);
	/* each 1 MiB's own hash, so that a restore can check a piece before
	 * the CUDA driver reads it, long before the last one is there
	 * (bulk_uffd.c); a member of the image like any other */
	if (s->total && kc_write_file_replace(leaves_path, j.d, leaves * sizeof(*j.d), 0600, err) < 0)
		goto out;
	if (kc_bulk_write_index(images_dir, s, err) < 0)
		goto out;
	rc = 0;
out:
	if (out_fd >= 0)
		close(out_fd);
	if (rc < 0) {
		unlink(out_path);
		unlink(leaves_path);
	}
	free(j.d);
	return rc;
}
