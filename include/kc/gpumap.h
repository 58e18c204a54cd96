/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_GPUMAP_H
#define KC_GPUMAP_H

#include <stddef.h>

#include "kc/cuda.h"
#include "kc/error.h"
#include "kc/manifest.h"

/*
 * The GPU pairs handed to cuCheckpointProcessRestore.  On an H200 x2 node
 * the driver refused a pair for one GPU alone (CUDA_ERROR_INVALID_VALUE)
 * and took the same move written as a permutation of all the node's GPUs
 * (docs/PERFORMANCE.md; its documentation: "it must contain every
 * checkpointed GPU"), so a partial --gpu-map is completed: GPUs the
 * user did not name map to themselves where free, else to what is left.
 *
 * Without --gpu-map, GPUs recorded in the manifest that this node does
 * not have are mapped, in order, onto this node's GPUs that the image
 * does not use.  *out is NULL / *n_out 0 for a plain restore.
 */
int kc_gpu_map_plan(const struct kc_manifest *m, const struct kc_gpu_pair *user, size_t n_user,
		    const struct kc_uuid *local, size_t n_local, struct kc_gpu_pair **out, size_t *n_out,
		    struct kc_error **err);

/* What of the plan needs no image: no GPU named twice, every NEW GPU on
 * this node (local; not checked when n_local is 0).  KC_EXIT_USAGE. */
int kc_gpu_map_check(const struct kc_gpu_pair *user, size_t n_user, const struct kc_uuid *local, size_t n_local,
		     struct kc_error **err);

#endif
