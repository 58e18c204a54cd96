/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fresh-memory fill benchmark: prints figures, asserts nothing about speed.
 *   uffd_copy_bench MIB THREADS MODE [HUGE]
 * fills MIB of fresh private anonymous memory in 1 MiB pieces from THREADS
 * threads, either by memcpy (MODE 0: the page faults of a plain fill) or
 * through UFFDIO_COPY into a userfaultfd-registered range (MODE 1: what
 * src/core/bulk_uffd.c does), with MADV_HUGEPAGE when HUGE is 1.  Run 44
 * (docs/PERFORMANCE.md) asked whether UFFDIO_COPY could keep up.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PIECE ((size_t)1 << 20)

static size_t total;
static char *dst;
static int uffd, mode;
static atomic_size_t next;

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
	(void)arg;
	char *buf = aligned_alloc(4096, PIECE);
	if (!buf)
		exit(1);
	memset(buf, 7, PIECE);
	for (;;) {
		size_t i = atomic_fetch_add(&next, 1);
		if (i * PIECE >= total)
			break;
		char *d = dst + i * PIECE;
		if (mode == 0) {
			memcpy(d, buf, PIECE);
			continue;
		}
		struct uffdio_copy c = {.dst = (uint64_t)(uintptr_t)d, .src = (uint64_t)(uintptr_t)buf, .len = PIECE};
		if (ioctl(uffd, UFFDIO_COPY, &c) != 0) {
			perror("UFFDIO_COPY");
			exit(1);
		}
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: uffd_copy_bench MIB THREADS MODE [HUGE]\n");
		return 2;
	}
	total = (size_t)atoi(argv[1]) << 20;
	int n = atoi(argv[2]);
	mode = atoi(argv[3]);
	int huge = argc > 4 && atoi(argv[4]);
	if (n < 1 || n > 64 || !total)
		return 2;
	dst = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		return 1;
	if (huge)
		madvise(dst, total, MADV_HUGEPAGE);
	if (mode) {
		uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
		struct uffdio_api a = {.api = UFFD_API};
		struct uffdio_register r = {.range = {(uint64_t)(uintptr_t)dst, total}, .mode = UFFDIO_REGISTER_MODE_MISSING};
		if (uffd < 0 || ioctl(uffd, UFFDIO_API, &a) || ioctl(uffd, UFFDIO_REGISTER, &r)) {
			perror("userfaultfd");
			return 1;
		}
	}
	pthread_t t[64];
	double t0 = now();
	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, worker, NULL);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	double s = now() - t0;
	printf("mode %s huge %d threads %d: %.3f s %.2f GB/s\n", mode ? "uffdio_copy" : "memcpy-fault", huge, n, s,
	       (double)total / s / 1e9);
	return 0;
}
