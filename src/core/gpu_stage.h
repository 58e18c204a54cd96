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

/* One driver step, for kc_held_call (hold.c): the state of one pid, or a
 * step on a set with the arguments above. */
enum kc_gpu_op { KC_GPU_STATE, KC_GPU_LOCK, KC_GPU_CHECKPOINT, KC_GPU_RESTORE, KC_GPU_UNLOCK };
struct kc_gpu_step {
	enum kc_gpu_op op;
	const struct kc_backends *b; /* KC_GPU_STATE: pid's state goes to *state */
	pid_t pid;
	enum kc_cuda_state *state;
	const struct kc_gpu_set *set;
	unsigned timeout_ms;
	const struct kc_gpu_pair *pairs;
	size_t n_pairs;
	double *secs;
	struct kc_gpu_set **done;
};
int kc_gpu_step_call(void *arg, struct kc_error **err);

#endif
