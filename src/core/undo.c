/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include "kc/undo.h"
#include "kc/util.h"

void kc_undo_push(struct kc_undo *u, const char *what, kc_undo_fn fn, void *arg)
{
	if (u->n == u->cap) {
		u->cap = u->cap ? u->cap * 2 : 8;
		u->v = kc_xrealloc(u->v, u->cap * sizeof(*u->v));
	}
	struct kc_undo_entry *e = &u->v[u->n++];
	snprintf(e->what, sizeof(e->what), "%s", what);
	e->fn = fn;
	e->arg = arg;
}

int kc_undo_run(struct kc_undo *u, struct kc_error **err)
{
	struct kc_error *first = NULL;
	/* Keep going after a failure: a later (older) step may still bring a
	 * process back even if a newer one could not be undone. */
	while (u->n) {
		struct kc_undo_entry *e = &u->v[--u->n];
		struct kc_error *e_err = NULL;
		if (e->fn(e->arg, &e_err) < 0) {
			if (!e_err)
				kc_error_set(&e_err, KC_EXIT_ROLLBACK, 0, "failed");
			kc_error_prefix(&e_err, "rollback of '%s'", e->what);
			e_err->exit_code = KC_EXIT_ROLLBACK;
			kc_error_propagate(&first, e_err);
		}
		free(e->arg);
	}
	if (first) {
		kc_error_propagate(err, first);
		return -1;
	}
	return 0;
}

void kc_undo_discard(struct kc_undo *u)
{
	for (size_t i = 0; i < u->n; i++)
		free(u->v[i].arg);
	u->n = 0;
}

void kc_undo_free(struct kc_undo *u)
{
	kc_undo_discard(u);
	free(u->v);
	u->v = NULL;
	u->cap = 0;
}
