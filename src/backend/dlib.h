/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_DLIB_H
#define KC_DLIB_H

#include <stdbool.h>
#include <stddef.h>

#include "kc/error.h"

/* One entry point of a dlopen()ed library, stored at offset in a table. */
struct kc_dl_sym {
	const char *name;
	size_t offset;
	bool optional;
};

/* dlopen()s path, else $env, else dflt (*name: the one used);
 * KC_EXIT_NOENT "cannot load 'x': <why>" when it is not there. */
void *kc_dl_open(const char *path, const char *env, const char *dflt, const char **name,
		 struct kc_error **err);
/* Stores each symbol at its offset in table; returns the index of the
 * first required one missing, -1 when all are there. */
int kc_dl_resolve(void *dl, const struct kc_dl_sym *syms, size_t n, void *table);

#endif
