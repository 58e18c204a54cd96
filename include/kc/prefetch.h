/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_PREFETCH_H
#define KC_PREFETCH_H

#include <stdint.h>

/*
 * Reads the image files into the page cache with several threads while
 * CRIU restores: CRIU reads its pages one file after the other, a cold
 * disk serves parallel reads much faster.  Best effort: errors are ignored.
 */
struct kc_prefetch;
struct kc_prefetch *kc_prefetch_start(const char *dir, int threads);
/* Stops early (sets a flag) and joins; returns the bytes read. */
uint64_t kc_prefetch_stop(struct kc_prefetch *p);

#endif
