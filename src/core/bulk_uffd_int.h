/* SPDX-License-Identifier: Apache-2.0 */
/* The fill beside the GPU restore (bulk_uffd.c): its state, shared with
 * bulk_uffd_leaves.c, which fills leaves and serves faults. */
#ifndef KC_BULK_UFFD_INT_H
#define KC_BULK_UFFD_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/types.h>

#include "archive_internal.h"
#include "orchestrator_int.h"

/* PAGEMAP_SCAN (Linux 6.7, linux/fs.h), for headers older than that */
#ifndef PAGEMAP_SCAN
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
		category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_PRESENT (1 << 3)
#endif

#define LEAF KC_ARCHIVE_LEAF
#define PAGE 4096u

enum { LEAF_FREE, LEAF_BUSY, LEAF_DONE };

struct uproc {
	pid_t pid;
	atomic_int fd; /* the process' userfaultfd, -1 until CRIU sent it */
	struct kc_range *vmas; /* registered, in address order */
	size_t n_vmas;
	int mem_fd; /* /proc/<pid>/mem: pages already there are written */
	pthread_t server;
	bool serving;
};

struct kc_uffd_fill {
	char *sock_path, *runs_path;
	int listen_fd;
	int stop_pipe[2]; /* readable once the servers must go */
	pthread_t acceptor;
	bool accepting;

	int src_fd; /* KC_BULK_READ_NAME, read with pread (a file cut short is an
		     * error, not a SIGBUS) */
	size_t len;
	uint8_t (*want)[32]; /* each leaf's digest, from the image */
	size_t n_leaves;
	_Atomic unsigned char *state;
	/* leaves with bytes outside the driver's copy of the GPU's memory:
	 * in before the driver runs (kc_uffd_fill_start) */
	unsigned char *first;
	size_t *first_list, n_first;
	atomic_size_t next_first;
	bool stats; /* KCHECKPOINT_FILL_STATS=1: where the time goes, on stderr */
	double first_s;
	atomic_uint_fast64_t ns_read, ns_sum, ns_copy, faults;

	struct kc_bulk_region *v; /* sorted by file offset (the file's order) */
	size_t n;
	struct kc_bulk_region **by_addr; /* sorted by pid, then address */
	struct uproc *procs;
	size_t n_procs;

	unsigned threads;
	pthread_t *fillers;
	size_t n_fillers;
	atomic_size_t next; /* the next leaf to fill ahead */
	atomic_uint_fast64_t done;
	atomic_int failed; /* an errno */
	atomic_bool stop;
	atomic_bool marks_cleared;
	atomic_size_t leaves_done;
	char why[160]; /* the first failure, set with failed */
	pthread_mutex_t why_lock;
	double t0;
};

/* Sets the first failure (printf-style why) and kills the processes
 * being filled; later calls do nothing. */
void kc_uffd_fail(struct kc_uffd_fill *f, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
struct uproc *kc_uffd_proc_of(struct kc_uffd_fill *f, pid_t pid);
/* The first run of pid that ends past addr, NULL for none. */
const struct kc_bulk_region *kc_uffd_run_from(const struct kc_uffd_fill *f, pid_t pid, uint64_t addr);
/* Fills leaf l (or waits for the thread that does) with buf, 1 MiB; 0 once it is in. */
int kc_uffd_fill_leaf(struct kc_uffd_fill *f, size_t l, unsigned char *buf);
/* Threads: the leaves first in (kc_uffd_fill_start waits for them), and
 * the rest in address order beside the GPU restore. */
void *kc_uffd_filler(void *arg);
void *kc_uffd_filler_rest(void *arg);
/* A thread serving p's faults until f's stop pipe is written. */
void kc_uffd_start_server(struct kc_uffd_fill *f, struct uproc *p);

#endif
