/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fill beside the GPU restore, its leaves (see bulk_uffd.c): each
 * 1 MiB of the memory file read into a thread's buffer, checked against
 * its digest there, and copied into the processes' runs through their
 * userfaultfds; and the threads that serve the faults of a process whose
 * code reads memory not filled yet (the driver's restore thread).
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bulk_uffd_int.h"
#include "kc/alloc.h"
#include "kc/sha256.h"
#include "kc/signals.h"
#include "kc/threads.h"
#include "kc/util.h"

void kc_uffd_fail(struct kc_uffd_fill *f, int e, const char *fmt, ...)
{
	pthread_mutex_lock(&f->why_lock);
	if (!atomic_load(&f->failed)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(f->why, sizeof(f->why), fmt, ap);
		va_end(ap);
		atomic_store(&f->failed, e ? e : EIO);
		/* a thread of theirs may wait on memory that will never come; a
		 * reader from outside (process_vm_readv) waits on, unkillable,
		 * until the range is no longer registered */
		for (size_t i = 0; i < f->n_procs; i++) {
			kill(f->procs[i].pid, SIGKILL);
			int fd = atomic_load(&f->procs[i].fd);
			for (size_t k = 0; fd >= 0 && k < f->procs[i].n_vmas; k++) {
				struct uffdio_range r = {.start = f->procs[i].vmas[k].lo,
							 .len = f->procs[i].vmas[k].hi - f->procs[i].vmas[k].lo};
				ioctl(fd, UFFDIO_UNREGISTER, &r);
			}
		}
	}
	pthread_mutex_unlock(&f->why_lock);
}

struct uproc *kc_uffd_proc_of(struct kc_uffd_fill *f, pid_t pid)
{
	for (size_t i = 0; i < f->n_procs; i++)
		if (f->procs[i].pid == pid)
			return &f->procs[i];
	return NULL;
}

/* UFFDIO_COPY of [src, src+len) to dst; a page already there is written
 * through mem_fd (the kernel wrote into some while CRIU restored: the
 * rseq area at the top of each thread's stack); -1 with errno. */
static int copy_in(int fd, int mem_fd, uint64_t dst, const unsigned char *src, uint64_t len)
{
	while (len) {
		struct uffdio_copy c = {.dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = 0};
		if (ioctl(fd, UFFDIO_COPY, &c) == 0)
			return 0;
		int e = errno;
		if (c.copy > 0) { /* part of it went in */
			dst += (uint64_t)c.copy;
			src += c.copy;
			len -= (uint64_t)c.copy;
			continue;
		}
		if (e == EAGAIN) /* the process' mappings were changing: again */
			continue;
		if (e == EEXIST) {
			if (kc_pwrite_all(mem_fd, src, PAGE, dst) < 0)
				return -1;
			dst += PAGE;
			src += PAGE;
			len -= PAGE;
			continue;
		}
		errno = e;
		return -1;
	}
	return 0;
}

/* UFFDIO_COPY goes into one VMA at a time (a run may go on into the next
 * VMA: a thread's stack after its neighbour, a mapping split by
 * mprotect); every byte must be in one registered. */
static int copy_run(const struct uproc *p, int fd, uint64_t dst, const unsigned char *src, uint64_t len)
{
	size_t lo = 0, hi = p->n_vmas;
	while (lo < hi) { /* the first VMA ending past dst */
		size_t mid = (lo + hi) / 2;
		if (p->vmas[mid].hi <= dst)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (len) {
		if (lo >= p->n_vmas || p->vmas[lo].lo > dst) {
			errno = ENOENT;
			return -1;
		}
		uint64_t n = p->vmas[lo].hi - dst < len ? p->vmas[lo].hi - dst : len;
		if (copy_in(fd, p->mem_fd, dst, src, n) < 0)
			return -1;
		dst += n;
		src += n;
		len -= n;
		lo++;
	}
	return 0;
}

/* Once every leaf is in and checked (whoever filled the last one), recover
 * may run the tree: a restore killed from here on (the GPU restore going
 * on) loses nothing. */
static void all_in(struct kc_uffd_fill *f)
{
	if (atomic_load(&f->failed) || atomic_exchange(&f->marks_cleared, true))
		return;
	for (size_t i = 0; i < f->n_procs; i++)
		kc_fillmark_clear(f->procs[i].pid);
}

/* Waits for the thread that fills leaf l; 0 once it is in. */
static int wait_leaf(struct kc_uffd_fill *f, size_t l)
{
	while (atomic_load(&f->state[l]) != LEAF_DONE) {
		if (atomic_load(&f->failed) || atomic_load(&f->stop))
			return -1;
		struct timespec ts = {0, 20000};
		nanosleep(&ts, NULL);
	}
	return 0;
}

static uint64_t leaf_len(const struct kc_uffd_fill *f, size_t l)
{
	uint64_t off = (uint64_t)l * LEAF;
	return f->len - off < LEAF ? f->len - off : LEAF;
}

/* Copies the checked leaf l, at buf, into the runs it holds. */
static int put_leaf(struct kc_uffd_fill *f, size_t l, const unsigned char *buf)
{
	uint64_t off = (uint64_t)l * LEAF, len = leaf_len(f, l);
	/* the runs this leaf holds: the first whose end is past off */
	size_t lo = 0, hi = f->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (f->v[mid].offset + f->v[mid].bytes <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < f->n && f->v[i].offset < off + len; i++) {
		const struct kc_bulk_region *r = &f->v[i];
		uint64_t s = r->offset > off ? r->offset : off;
		uint64_t e = r->offset + r->bytes < off + len ? r->offset + r->bytes : off + len;
		struct uproc *p = kc_uffd_proc_of(f, r->pid);
		int fd = p ? atomic_load(&p->fd) : -1;
		if (fd < 0) {
			kc_uffd_fail(f, ESRCH, "no userfaultfd came for pid %d", (int)r->pid);
			return -1;
		}
		if (copy_run(p, fd, r->vaddr + (s - r->offset), buf + (s - off), e - s) < 0) {
			kc_uffd_fail(f, errno, "cannot fill pid %d at 0x%" PRIx64 ": %s", (int)r->pid, r->vaddr + (s - r->offset),
			     strerror(errno));
			return -1;
		}
	}
	atomic_fetch_add(&f->done, len);
	atomic_store(&f->state[l], LEAF_DONE);
	if (atomic_fetch_add(&f->leaves_done, 1) + 1 == f->n_leaves)
		all_in(f);
	return 0;
}

/*
 * Fills leaves ls[0..n) (n is 1 or 2; buf holds n leaves), or waits for the
 * threads that fill them; 0 once they are in.  Two leaves are hashed side
 * by side, twice as fast (kc_sha256_2).
 */
static int fill_leaves(struct kc_uffd_fill *f, const size_t *ls, size_t n, unsigned char *buf)
{
	size_t mine[2] = {0, 0}, k = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char expect = LEAF_FREE;
		if (atomic_compare_exchange_strong(&f->state[ls[i]], &expect, LEAF_BUSY))
			mine[k++] = ls[i];
	}
	double t0 = f->stats ? kc_now() : 0, t1 = 0;
	/* copied once into this thread's buffer, checked there, and copied
	 * into the process from there: what was checked is what goes in */
	for (size_t i = 0; i < k; i++) {
		uint64_t off = (uint64_t)mine[i] * LEAF, len = leaf_len(f, mine[i]);
		if (kc_pread_all(f->src_fd, buf + i * LEAF, len, off) < 0) { /* shorter than verify saw it, or unreadable */
			int e = errno;
			struct stat st;
			bool cut = fstat(f->src_fd, &st) == 0 && (uint64_t)st.st_size < off + len;
			kc_uffd_fail(f, cut ? EBADMSG : e, "cannot read '" KC_BULK_READ_NAME "' at MiB %zu: %s", mine[i],
			     cut ? "it is shorter than its checksum says" : strerror(e));
			return -1;
		}
	}
	if (f->stats) {
		t1 = kc_now();
		atomic_fetch_add(&f->ns_read, (uint64_t)((t1 - t0) * 1e9));
	}
	uint8_t d[2][32];
	if (k == 2 && leaf_len(f, mine[0]) == leaf_len(f, mine[1]))
		kc_sha256_2(buf, buf + LEAF, leaf_len(f, mine[0]), d[0], d[1]);
	else
		for (size_t i = 0; i < k; i++)
			kc_sha256(buf + i * LEAF, leaf_len(f, mine[i]), d[i]);
	if (f->stats) {
		t0 = kc_now();
		atomic_fetch_add(&f->ns_sum, (uint64_t)((t0 - t1) * 1e9));
	}
	for (size_t i = 0; i < k; i++)
		if (memcmp(d[i], f->want[mine[i]], 32)) {
			kc_uffd_fail(f, EBADMSG, "checksum mismatch for member '" KC_BULK_READ_NAME "' (its MiB %zu)", mine[i]);
			return -1;
		}
	for (size_t i = 0; i < k; i++)
		if (put_leaf(f, mine[i], buf + i * LEAF) < 0)
			return -1;
	if (f->stats)
		atomic_fetch_add(&f->ns_copy, (uint64_t)((kc_now() - t0) * 1e9));
	for (size_t i = 0; i < n; i++)
		if (wait_leaf(f, ls[i]) < 0)
			return -1;
	return 0;
}

/* Fills leaf l (or waits for the thread that does); 0 once it is in. */
int kc_uffd_fill_leaf(struct kc_uffd_fill *f, size_t l, unsigned char *buf)
{
	return fill_leaves(f, &l, 1, buf);
}

/* Fills the first leaves (kc_uffd_fill_start waits for them), or all the
 * others, in address order (beside the GPU restore), two at a time. */
static void fill_loop(struct kc_uffd_fill *f, bool first)
{
	unsigned char *buf = malloc(2 * LEAF);
	if (!buf) {
		kc_uffd_fail(f, ENOMEM, "out of memory");
		return;
	}
	size_t end = first ? f->n_first : f->n_leaves;
	while (!atomic_load(&f->failed) && !atomic_load(&f->stop)) {
		/* ^C before the GPU restore: nothing waits on the rest */
		if (first && kc_signals_pending())
			atomic_store(&f->stop, true);
		size_t i = atomic_fetch_add(first ? &f->next_first : &f->next, 2);
		if (i >= end)
			break;
		size_t ls[2], n = 0;
		for (size_t j = i; j < i + 2 && j < end; j++) {
			size_t l = first ? f->first_list[j] : j;
			/* beside the GPU, a leaf a fault's thread took is its */
			if (first || atomic_load(&f->state[l]) == LEAF_FREE)
				ls[n++] = l;
		}
		if (n)
			fill_leaves(f, ls, n, buf);
	}
	free(buf);
}

void *kc_uffd_filler(void *arg)
{
	/* named, for top -H and bench/thread_sampler.py */
	pthread_setname_np(pthread_self(), "kc-fill-first");
	fill_loop(arg, true);
	return NULL;
}

void *kc_uffd_filler_rest(void *arg)
{
	pthread_setname_np(pthread_self(), "kc-fill-beside");
	fill_loop(arg, false);
	return NULL;
}

/* The first run of pid that ends past addr, NULL for none. */
const struct kc_bulk_region *kc_uffd_run_from(const struct kc_uffd_fill *f, pid_t pid, uint64_t addr)
{
	size_t lo = 0, hi = f->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct kc_bulk_region *r = f->by_addr[mid];
		if (r->pid < pid || (r->pid == pid && r->vaddr + r->bytes <= addr))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < f->n && f->by_addr[lo]->pid == pid ? f->by_addr[lo] : NULL;
}

/* The run of pid that holds addr, NULL for a hole of its VMAs. */
static const struct kc_bulk_region *run_at(const struct kc_uffd_fill *f, pid_t pid, uint64_t addr)
{
	const struct kc_bulk_region *r = kc_uffd_run_from(f, pid, addr);
	return r && r->vaddr <= addr ? r : NULL;
}

struct server_arg {
	struct kc_uffd_fill *f;
	struct uproc *p;
};

/* Serves one process' faults until told to stop. */
static void *server(void *arg)
{
	struct server_arg sa = *(struct server_arg *)arg;
	free(arg);
	pthread_setname_np(pthread_self(), "kc-uffd-fault");
	struct kc_uffd_fill *f = sa.f;
	int fd = atomic_load(&sa.p->fd);
	unsigned char *buf = malloc(LEAF);
	if (!buf) {
		kc_uffd_fail(f, ENOMEM, "out of memory");
		return NULL;
	}
	for (;;) {
		struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = f->stop_pipe[0], .events = POLLIN}};
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			kc_uffd_fail(f, errno, "the fault thread of pid %d stopped: %s", (int)sa.p->pid, strerror(errno));
			break;
		}
		if (pf[1].revents)
			break;
		/* a thread of the process may wait on a page: gone with
		 * this thread, it would wait for ever */
		if (pf[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			kc_uffd_fail(f, EIO, "the userfaultfd of pid %d failed", (int)sa.p->pid);
			break;
		}
		struct uffd_msg msg;
		ssize_t got = read(fd, &msg, sizeof(msg));
		if (got < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (got != (ssize_t)sizeof(msg)) {
			kc_uffd_fail(f, got < 0 ? errno : EIO, "cannot read the faults of pid %d", (int)sa.p->pid);
			break;
		}
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t addr = msg.arg.pagefault.address & ~(uint64_t)(PAGE - 1);
		atomic_fetch_add(&f->faults, 1);
		const struct kc_bulk_region *r = run_at(f, sa.p->pid, addr);
		size_t l = r ? (size_t)((r->offset + (addr - r->vaddr)) / LEAF) : 0;
		/* a page never there, or one gone since it was filled (the
		 * driver's thread ran madvise(MADV_DONTNEED) on it): zero, as
		 * the kernel would give; one filled meanwhile just wakes */
		if (!r || atomic_load(&f->state[l]) == LEAF_DONE) {
			struct uffdio_zeropage z = {.range = {.start = addr, .len = PAGE}};
			if (ioctl(fd, UFFDIO_ZEROPAGE, &z) < 0 && errno != EEXIST && errno != EAGAIN && errno != ENOENT) {
				kc_uffd_fail(f, errno, "cannot map a zero page into pid %d at 0x%" PRIx64 ": %s", (int)sa.p->pid,
				     addr, strerror(errno));
				break;
			}
		} else if (kc_uffd_fill_leaf(f, l, buf) < 0) {
			break;
		}
		/* filled by another thread before this fault was read, or just
		 * now: either way the thread waiting on it goes on */
		struct uffdio_range w = {.start = addr, .len = PAGE};
		ioctl(fd, UFFDIO_WAKE, &w);
	}
	free(buf);
	return NULL;
}

void kc_uffd_start_server(struct kc_uffd_fill *f, struct uproc *p)
{
	struct server_arg *sa = kc_xcalloc(1, sizeof(*sa));
	*sa = (struct server_arg){.f = f, .p = p};
	if (kc_thread_start(&p->server, server, sa) != 0) {
		free(sa);
		kc_uffd_fail(f, EAGAIN, "cannot start a thread");
		return;
	}
	p->serving = true;
}

