/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_SHA256_H
#define KC_SHA256_H

/* src/base/sha256.c: SHA-256 (SHA-NI where the CPU has it) and the tree
 * hash over 1 MiB leaves that archives and images dirs record (see
 * docs/ARCHIVE.md). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kc_sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t n;
};

void kc_sha256_init(struct kc_sha256 *c);
void kc_sha256_update(struct kc_sha256 *c, const void *p, size_t n);
void kc_sha256_final(struct kc_sha256 *c, uint8_t out[32]);
void kc_sha256(const void *p, size_t n, uint8_t out[32]);
/* a and b each take n bytes, hashed side by side (twice the speed with
 * SHA-NI) where neither holds part of a block; else one after the other. */
void kc_sha256_update2(struct kc_sha256 *a, const void *pa, struct kc_sha256 *b, const void *pb, size_t n);
/* The digests of a[0..n) and b[0..n), hashed side by side. */
void kc_sha256_2(const void *a, const void *b, size_t n, uint8_t da[32], uint8_t db[32]);
/* The digest of each leaf-sized piece of p[0..len) (the last may be
 * shorter) into out[0], out[1], ..., two at a time. */
void kc_sha256_leaves(const void *p, size_t len, size_t leaf, uint8_t (*out)[32]);
/* Test hooks: whether SHA-NI is in use, and a switch to the portable code. */
bool kc_sha256_accelerated(void);
void kc_sha256_force_portable(bool on);

struct kc_treehash {
	uint8_t d[64][32];
	uint8_t level[64];
	unsigned n;
	uint64_t leaves;
};

void kc_treehash_init(struct kc_treehash *t);
void kc_treehash_add(struct kc_treehash *t, const uint8_t leaf[32]);
/* Root as 64 lowercase hex digits. */
void kc_treehash_final(struct kc_treehash *t, char hex[65]);

void kc_hex(const uint8_t *d, size_t n, char *out);

#endif
