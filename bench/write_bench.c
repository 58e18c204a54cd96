/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Page-cache write benchmark: prints figures, asserts nothing about speed.
 * How fast can THREADS threads write GIB of 16 MiB pwrites (the chunk of
 * src/core/bulk_read.c) into FILES files in DIR, without fsync?  It chose
 * one writer at a time in memory-read: on the H200 node (kernel 6.18,
 * ext4, 24 GiB) 16 threads into one file got 1.58 GB/s, one thread 3.73,
 * 16 threads into 16 files 3.71 (docs/PERFORMANCE.md).
 *
 *   write_bench GIB THREADS FILES DIR
 *
 * The files are unlinked as they are made, so their pages go with the
 * process; run `sync` between runs.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (16u << 20)
#define MAX 256

static int n_files, fds[MAX];
static size_t n_chunks, per_file;
static atomic_size_t next;

static void *writer(void *arg)
{
	const char *buf = arg;
	for (;;) {
		size_t c = atomic_fetch_add(&next, 1);
		if (c >= n_chunks)
			return NULL;
		size_t f = c / per_file;
		if (pwrite(fds[f], buf, CHUNK, (off_t)((c - f * per_file) * CHUNK)) != CHUNK) {
			perror("pwrite");
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: write_bench GIB THREADS FILES DIR\n");
		return 2;
	}
	double gib = atof(argv[1]);
	int threads = atoi(argv[2]);
	n_files = atoi(argv[3]);
	if (gib <= 0 || threads < 1 || threads > MAX || n_files < 1 || n_files > MAX) {
		fprintf(stderr, "write_bench: GIB > 0, 1 <= THREADS, FILES <= %d\n", MAX);
		return 2;
	}
	n_chunks = (size_t)(gib * 1024 / 16);
	per_file = (n_chunks + (size_t)n_files - 1) / (size_t)n_files;
	for (int i = 0; i < n_files; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/write-bench-%d", argv[4], i);
		fds[i] = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fds[i] < 0) {
			perror(path);
			return 1;
		}
		unlink(path);
	}
	pthread_t t[MAX];
	char *bufs[MAX];
	for (int i = 0; i < threads; i++) { /* filled before the clock starts */
		bufs[i] = malloc(CHUNK);
		if (!bufs[i])
			return 1;
		for (size_t k = 0; k < CHUNK; k++)
			bufs[i][k] = (char)(k * 7 + (size_t)i);
	}
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, writer, bufs[i]);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	printf("%.1f GiB threads %d files %d: %.2f s %.2f GB/s\n", gib, threads, n_files, s, gib * 1.073741824 / s);
	return 0;
}
