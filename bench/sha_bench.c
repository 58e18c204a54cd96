/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SHA-256 benchmark: prints figures, asserts nothing about speed.  One core
 * hashes MIB MiB of 1 MiB leaves (from a buffer that stays in memory) one
 * leaf at a time (kc_sha256) and two side by side (kc_sha256_2), with the
 * code the CPU gets (SHA-NI where it has it) and the portable code, and
 * checks that both give the same digests.
 *
 *   sha_bench [MIB]      (default 1024)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kc/sha256.h"

#define LEAF (1u << 20)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	/* 64 MiB of leaves, hashed over and over: the figure is the core's,
	 * not the memory's */
	size_t n = 64;
	unsigned char *buf = malloc(n * LEAF);
	uint8_t (*one)[32] = calloc(n, 32), (*two)[32] = calloc(n, 32);
	if (!buf || !one || !two || mib < 2)
		return 1;
	unsigned long long s = 88172645463325252ULL;
	for (size_t i = 0; i < n * LEAF; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		buf[i] = (unsigned char)s;
	}
	printf("%-9s %-12s %8s\n", "code", "leaves", "GB/s");
	for (int portable = 0; portable < 2; portable++) {
		kc_sha256_force_portable(portable);
		size_t rounds = portable ? (mib / 8 + n - 1) / n : (mib + n - 1) / n;
		double t0 = now();
		for (size_t r = 0; r < rounds; r++)
			for (size_t i = 0; i < n; i++)
				kc_sha256(buf + i * LEAF, LEAF, one[i]);
		double t1 = now();
		for (size_t r = 0; r < rounds; r++)
			kc_sha256_leaves(buf, n * LEAF, LEAF, two);
		double t2 = now();
		if (memcmp(one, two, n * 32)) {
			fprintf(stderr, "sha_bench: the digests differ\n");
			return 1;
		}
		double bytes = (double)rounds * n * LEAF;
		const char *code = portable ? "portable" : kc_sha256_accelerated() ? "sha-ni" : "portable";
		printf("%-9s %-12s %8.2f\n%-9s %-12s %8.2f\n", code, "one by one", bytes / (t1 - t0) / 1e9, code,
		       "two at once", bytes / (t2 - t1) / 1e9);
	}
	return 0;
}
