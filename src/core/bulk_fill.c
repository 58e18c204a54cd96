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
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kc/signals.h"
#include "kc/util.h"
#include "orchestrator_int.h"

#define CHUNK (16u << 20)

struct src {
	char file[64];
	const unsigned char *map;
	size_t len;
};

struct dst {
	pid_t pid;
	int fd; /* /proc/<pid>/mem */
};

struct chunk {
	const unsigned char *from;
	int to_fd;
	uint64_t vaddr, len;
};

struct fill {
	struct chunk *chunks;
	size_t n;
	atomic_size_t next;
	atomic_uint_fast64_t done;
	atomic_int failed; /* errno of the first failure */
	pid_t failed_pid;
};

static void *worker(void *arg)
{
	struct fill *f = arg;
	for (;;) {
		/* ^C: the restore is rolled back, the rest need not be written */
		if (kc_signals_pending())
			kc_fail_once(&f->failed, EINTR);
		if (atomic_load(&f->failed))
			return NULL;
		size_t i = atomic_fetch_add(&f->next, 1);
		if (i >= f->n)
			return NULL;
		struct chunk *c = &f->chunks[i];
		if (kc_pwrite_all(c->to_fd, c->from, c->len, c->vaddr) < 0) {
			kc_fail_once(&f->failed, errno);
			return NULL;
		}
		atomic_fetch_add(&f->done, c->len);
	}
}

static uint64_t filled(void *arg)
{
	return atomic_load(&((struct fill *)arg)->done);
}

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

int kc_bulk_fill(const char *images_dir, const struct kc_bulk_region *v, size_t n, unsigned threads,
		 uint64_t *bytes, struct kc_error **err)
{
	struct src *srcs = kc_xcalloc(n, sizeof(*srcs));
	struct dst *dsts = kc_xcalloc(n, sizeof(*dsts));
	size_t n_src = 0, n_dst = 0, n_chunks = 0;
	struct fill f = {0};
	int rc = -1;
	*bytes = 0;

	for (size_t i = 0; i < n; i++) {
		n_chunks += (v[i].bytes + CHUNK - 1) / CHUNK;
		size_t s = 0;
		while (s < n_src && strcmp(srcs[s].file, v[i].file))
			s++;
		if (s == n_src) {
			snprintf(srcs[s].file, sizeof(srcs[s].file), "%s", v[i].file);
			_cleanup_free_ char *path = kc_xasprintf("%s/%s", images_dir, v[i].file);
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			struct stat st;
			if (fd < 0 || fstat(fd, &st) < 0) {
				kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open '%s'", path);
				if (fd >= 0)
					close(fd);
				goto out;
			}
			srcs[s].len = (size_t)st.st_size;
			void *m = srcs[s].len ? mmap(NULL, srcs[s].len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
			close(fd);
			if (m == MAP_FAILED) {
				kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot map '%s'", path);
				goto out;
			}
			srcs[s].map = m;
			n_src++;
		}
		if (v[i].offset > srcs[s].len || v[i].bytes > srcs[s].len - v[i].offset) {
			kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is shorter than its index says", v[i].file);
			goto out;
		}
		size_t d = 0;
		while (d < n_dst && dsts[d].pid != v[i].pid)
			d++;
		if (d == n_dst) {
			if (wait_stopped(v[i].pid, err) < 0)
				goto out;
			char path[64];
			snprintf(path, sizeof(path), "/proc/%d/mem", (int)v[i].pid);
			dsts[d].pid = v[i].pid;
			dsts[d].fd = open(path, O_RDWR | O_CLOEXEC);
			if (dsts[d].fd < 0) {
				kc_error_errno(err, KC_EXIT_CRIU, errno, "cannot open '%s'", path);
				goto out;
			}
			n_dst++;
		}
	}

	f.chunks = kc_xcalloc(n_chunks ? n_chunks : 1, sizeof(*f.chunks));
	for (size_t i = 0; i < n; i++) {
		size_t s = 0, d = 0;
		while (strcmp(srcs[s].file, v[i].file))
			s++;
		while (dsts[d].pid != v[i].pid)
			d++;
		for (uint64_t off = 0; off < v[i].bytes; off += CHUNK)
			f.chunks[f.n++] = (struct chunk){.from = srcs[s].map + v[i].offset + off, .to_fd = dsts[d].fd,
							 .vaddr = v[i].vaddr + off,
							 .len = v[i].bytes - off < CHUNK ? v[i].bytes - off : CHUNK};
	}
	struct kc_progress *pg = kc_progress_start("memory-fill", filled, &f);
	kc_run_pool(threads, f.n, worker, &f);
	kc_progress_stop(pg);

	int e = atomic_load(&f.failed);
	if (e == EINTR && kc_check_interrupted(err) < 0)
		goto out;
	if (e) {
		kc_error_errno(err, KC_EXIT_CRIU, e, "cannot fill the memory of the restored tree");
		goto out;
	}
	*bytes = atomic_load(&f.done);
	rc = 0;
out:
	for (size_t s = 0; s < n_src; s++)
		munmap((void *)srcs[s].map, srcs[s].len);
	for (size_t d = 0; d < n_dst; d++)
		close(dsts[d].fd);
	free(srcs);
	free(dsts);
	free(f.chunks);
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
static char *mark_path(pid_t pid)
{
	return kc_xasprintf("%s/filling-%d", kc_run_dir(), (int)pid);
}

int kc_fillmark_set(pid_t pid, struct kc_error **err)
{
	_cleanup_free_ char *path = mark_path(pid);
	_cleanup_free_ char *dir = kc_xstrdup(path);
	*strrchr(dir, '/') = '\0';
	if (kc_mkdir_p(dir, 0700, err) < 0)
		return kc_error_prefix(err, "fill mark");
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create '%s'", path);
	close(fd);
	return 0;
}

void kc_fillmark_clear(pid_t pid)
{
	_cleanup_free_ char *path = mark_path(pid);
	unlink(path);
}

bool kc_fillmark_blocks(pid_t pid)
{
	_cleanup_free_ char *path = mark_path(pid);
	if (access(path, F_OK) < 0)
		return false;
	char st = kc_pid_state(pid);
	if (st == 'T' || st == 't')
		return true;
	unlink(path); /* stale */
	return false;
}
