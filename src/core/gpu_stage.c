/* SPDX-License-Identifier: Apache-2.0 */
/* The CUDA half of both directions, and the undo steps that reverse it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_stage.h"
#include "kc/util.h"

static int do_lock(const struct kc_backends *b, pid_t pid, void *arg, struct kc_error **err)
{
	const unsigned *timeout_ms = arg;
	return b->cuda->ops->lock(b->cuda->h, pid, *timeout_ms, err);
}

static int do_checkpoint(const struct kc_backends *b, pid_t pid, void *arg, struct kc_error **err)
{
	(void)arg;
	return b->cuda->ops->checkpoint(b->cuda->h, pid, err);
}

struct pairs {
	const struct kc_gpu_pair *v;
	size_t n;
};

static int do_restore(const struct kc_backends *b, pid_t pid, void *arg, struct kc_error **err)
{
	const struct pairs *p = arg;
	return b->cuda->ops->restore(b->cuda->h, pid, p ? p->v : NULL, p ? p->n : 0, err);
}

static int do_unlock(const struct kc_backends *b, pid_t pid, void *arg, struct kc_error **err)
{
	(void)arg;
	return b->cuda->ops->unlock(b->cuda->h, pid, err);
}

struct kc_gpu_set *kc_gpu_set_new(const struct kc_backends *b, size_t cap)
{
	struct kc_gpu_set *s = kc_xcalloc(1, sizeof(*s) + cap * sizeof(pid_t));
	s->b = b;
	return s;
}

/* Runs fn over set, returns the subset that succeeded (NULL if none). */
static int run_stage(const struct kc_gpu_set *set, kc_pid_fn fn, void *arg, double *secs,
		     struct kc_gpu_set **done, struct kc_error **err)
{
	_cleanup_free_ bool *ok = kc_xcalloc(set->n ? set->n : 1, sizeof(bool));
	int rc = kc_parallel(set->b, set->pids, set->n, fn, arg, ok, secs, err);
	if (done) {
		*done = kc_gpu_set_new(set->b, set->n);
		for (size_t i = 0; i < set->n; i++)
			if (ok[i])
				(*done)->pids[(*done)->n++] = set->pids[i];
	}
	return rc;
}

int kc_gpu_lock(const struct kc_gpu_set *set, unsigned timeout_ms, double *secs, struct kc_gpu_set **done,
		struct kc_error **err)
{
	return run_stage(set, do_lock, &timeout_ms, secs, done, err);
}

int kc_gpu_checkpoint(const struct kc_gpu_set *set, double *secs, struct kc_gpu_set **done,
		      struct kc_error **err)
{
	return run_stage(set, do_checkpoint, NULL, secs, done, err);
}

int kc_gpu_restore(const struct kc_gpu_set *set, const struct kc_gpu_pair *pairs, size_t n_pairs,
		   double *secs, struct kc_gpu_set **done, struct kc_error **err)
{
	struct pairs p = {pairs, n_pairs};
	return run_stage(set, do_restore, &p, secs, done, err);
}

int kc_gpu_unlock(const struct kc_gpu_set *set, double *secs, struct kc_gpu_set **done, struct kc_error **err)
{
	return run_stage(set, do_unlock, NULL, secs, done, err);
}

int kc_gpu_step_call(void *arg, struct kc_error **err)
{
	const struct kc_gpu_step *g = arg;
	switch (g->op) {
	case KC_GPU_LOCK:
		return kc_gpu_lock(g->set, g->timeout_ms, g->secs, g->done, err);
	case KC_GPU_CHECKPOINT:
		return kc_gpu_checkpoint(g->set, g->secs, g->done, err);
	case KC_GPU_RESTORE:
		return kc_gpu_restore(g->set, g->pairs, g->n_pairs, g->secs, g->done, err);
	case KC_GPU_UNLOCK:
		return kc_gpu_unlock(g->set, g->secs, g->done, err);
	case KC_GPU_STATE:
	default:
		return g->b->cuda->ops->get_state(g->b->cuda->h, g->pid, g->state, err);
	}
}


