/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_UNDO_H
#define KC_UNDO_H

#include <stddef.h>

#include "kc/error.h"

/*
 * What has been done, so it can be undone in reverse order.  Each entry
 * owns arg (freed with free() after it ran or was discarded).
 */
typedef int (*kc_undo_fn)(void *arg, struct kc_error **err);

struct kc_undo_entry {
	char what[64];
	kc_undo_fn fn;
	void *arg;
};

struct kc_undo {
	struct kc_undo_entry *v;
	size_t n, cap;
};

void kc_undo_push(struct kc_undo *u, const char *what, kc_undo_fn fn, void *arg);
/* Runs every entry, newest first, even after one fails; the first
 * failure is reported (KC_EXIT_ROLLBACK) and the stack is emptied. */
int kc_undo_run(struct kc_undo *u, struct kc_error **err);
/* Forgets everything (success path). */
void kc_undo_discard(struct kc_undo *u);
void kc_undo_free(struct kc_undo *u);

#endif
