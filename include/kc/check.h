/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CHECK_H
#define KC_CHECK_H

/* The preflight of `kcheckpoint check` (src/core/check.c). */

struct kc_check_opts {
	const char *criu;       /* --criu, NULL: the default */
	const char *libcuda;    /* --libcuda, NULL: the default */
	const char *images_dir; /* -D: where free space matters, NULL: $TMPDIR */
};

/* status: "ok", "warn" or "fail"; name: the item; detail: one line. */
typedef void (*kc_check_item_fn)(void *arg, const char *status, const char *name, const char *detail);
void kc_check_run(const struct kc_check_opts *o, kc_check_item_fn fn, void *arg);

#endif
