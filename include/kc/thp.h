/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_THP_H
#define KC_THP_H

#include "kc/error.h"

/*
 * Transparent huge pages mode for the length of one operation ('always'
 * made every stage 1.5-2x faster on an H200 node).  kc_thp_set saves the
 * old mode in old (at least 16 bytes); kc_thp_put_back writes it back and
 * is safe to call when nothing was set (old[0] == 0).
 */
int kc_thp_get(char *mode, size_t len, struct kc_error **err);
int kc_thp_set(const char *mode, char *old, size_t len, struct kc_error **err);
void kc_thp_put_back(char *old);
/* The original mode back if a kcheckpoint that had set one was killed
 * (for `recover`). */
void kc_thp_recover(void);

#endif
