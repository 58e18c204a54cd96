/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ERROR_H
#define KC_ERROR_H

/*
 * Error values travel up as `struct kc_error **err` (last argument); the
 * function returns -1.  Only main() prints them, as
 * "kcheckpoint: <msg>".  Messages are lowercase, no full stop, subjects in
 * single quotes, and each layer may prefix what it was doing.
 */

/* Documented in man/kcheckpoint.1 (EXIT STATUS); keep both in step. */
enum kc_exit {
	KC_EXIT_OK = 0,
	KC_EXIT_FAILURE = 1,     /* internal or unclassified error */
	KC_EXIT_USAGE = 2,       /* bad command line */
	KC_EXIT_NOENT = 3,       /* process, file, container not found */
	KC_EXIT_PERM = 4,        /* not root, permission denied */
	KC_EXIT_IMAGE = 5,       /* bad image dir, manifest or archive */
	KC_EXIT_GPU = 6,         /* GPU (CUDA driver) stage failed */
	KC_EXIT_CRIU = 7,        /* CRIU stage failed */
	KC_EXIT_CONTAINERD = 8,  /* containerd refused or is unreachable */
	KC_EXIT_BUSY = 9,        /* a needed pid stayed taken, lock timed out */
	KC_EXIT_ROLLBACK = 10,   /* rollback itself failed: run 'kcheckpoint recover' */
	KC_EXIT_INTERRUPTED = 130, /* SIGINT/SIGTERM; rolled back */
};

struct kc_error {
	int exit_code; /* enum kc_exit */
	int cause;     /* backend code: CUresult, errno, grpc status; 0 if none */
	char *msg;
};

/* Sets *err (if err and !*err) and returns -1, so callers can
 * `return kc_error_set(err, ...)`.  A second set keeps the first error. */
int kc_error_set(struct kc_error **err, int exit_code, int cause, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Like kc_error_set, appending ": strerror(errno_value)". */
int kc_error_errno(struct kc_error **err, int exit_code, int errno_value, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Rewrites (*err)->msg as "<prefix>: <msg>"; returns -1. */
int kc_error_prefix(struct kc_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "<msg>; <more>": what went wrong after the error (a failed undo). */
int kc_error_append(struct kc_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends "; <hint>" (what the user should do next); returns -1. */
int kc_error_set_hint(struct kc_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Moves src into *dst when *dst is empty, frees it otherwise. */
void kc_error_propagate(struct kc_error **dst, struct kc_error *src);
void kc_error_free(struct kc_error *e);
void kc_error_freep(struct kc_error **e);

#define _cleanup_error_ __attribute__((cleanup(kc_error_freep)))

#endif
