/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_GPU_STAGE_H
#define KC_GPU_STAGE_H

#include "kc/orchestrator.h"

/* A set of CUDA pids; one malloc() block, so an undo entry can own it. */
struct kc_gpu_set {
	const struct kc_backends *b;
	size_t n;
	pid_t pids[];
};

struct kc_gpu_set *kc_gpu_set_new(const struct kc_backends *b, size_t cap);

/* Each runs the step on every pid in parallel; *done (may be NULL) gets
 * the pids where it worked, so the caller can undo exactly those. */
int kc_gpu_lock(const struct kc_gpu_set *set, unsigned timeout_ms, double *secs, struct kc_gpu_set **done,
		struct kc_error **err);
int kc_gpu_checkpoint(const struct kc_gpu_set *set, double *secs, struct kc_gpu_set **done,
		      struct kc_error **err);
int kc_gpu_restore(const struct kc_gpu_set *set, const struct kc_gpu_pair *pairs, size_t n_pairs,
		   double *secs, struct kc_gpu_set **done, struct kc_error **err);
int kc_gpu_unlock(const struct kc_gpu_set *set, double *secs, struct kc_gpu_set **done,
		  struct kc_error **err);

/* kc_undo_fn adapters; arg is a struct kc_gpu_set *. */
int kc_gpu_undo_unlock(void *arg, struct kc_error **err);

#endif
