/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ALLOC_H
#define KC_ALLOC_H

/* src/base/alloc.c: allocation that aborts on failure, cleanup attributes
 * and ownership hand-off.  Includes nothing of the project. */

#include <stddef.h>
#include <stdio.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

void kc_freep(void *p);
void kc_closep(int *fd);
void kc_fclosep(FILE **f);
void kc_closedirp(void *d); /* DIR ** */
void kc_strvfreep(char ***v);

#define _cleanup_free_ _cleanup_(kc_freep)
#define _cleanup_close_ _cleanup_(kc_closep)
#define _cleanup_fclose_ _cleanup_(kc_fclosep)
#define _cleanup_closedir_ _cleanup_(kc_closedirp)
#define _cleanup_strv_ _cleanup_(kc_strvfreep)

/* Hand ownership out of a _cleanup_ variable. */
#define steal_ptr(p) ({ __typeof__(p) _kc_tmp = (p); (p) = NULL; _kc_tmp; })
#define steal_fd(fd) ({ int _kc_tmp = (fd); (fd) = -1; _kc_tmp; })

#define KC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Allocation failures abort: there is no sane recovery in a CLI. */
void *kc_xmalloc(size_t n);
void *kc_xcalloc(size_t n, size_t size);
void *kc_xrealloc(void *p, size_t n);
char *kc_xstrdup(const char *s);
char *kc_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void kc_strv_free(char **v);
size_t kc_strv_len(char *const *v);

#endif
