/* SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kc/gpumap.h"
#include "kc/util.h"

static bool same(const struct kc_uuid *a, const struct kc_uuid *b)
{
	return memcmp(a->bytes, b->bytes, sizeof(a->bytes)) == 0;
}

static bool in(const struct kc_uuid *u, const struct kc_uuid *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (same(u, &set[i]))
			return true;
	return false;
}

static bool old_in(const struct kc_uuid *u, const struct kc_gpu_pair *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (same(u, &v[i].old_uuid))
			return true;
	return false;
}

static bool new_in(const struct kc_uuid *u, const struct kc_gpu_pair *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (same(u, &v[i].new_uuid))
			return true;
	return false;
}

/*
 * Maps every GPU of src that no pair names yet onto a GPU of tgt that no
 * pair uses yet: itself where it can, else the next one left.  Does
 * nothing unless that covers src exactly.
 */
static void fill(struct kc_gpu_pair **v, size_t *n, const struct kc_uuid *src, size_t n_src,
		 const struct kc_uuid *tgt, size_t n_tgt)
{
	size_t want = 0, have = 0;
	for (size_t i = 0; i < n_src; i++)
		want += !old_in(&src[i], *v, *n);
	for (size_t i = 0; i < n_tgt; i++)
		have += !new_in(&tgt[i], *v, *n);
	if (want == 0 || want > have)
		return;
	*v = kc_xrealloc(*v, (*n + want) * sizeof(**v));
	for (size_t i = 0; i < n_src; i++)
		if (!old_in(&src[i], *v, *n) && in(&src[i], tgt, n_tgt) && !new_in(&src[i], *v, *n))
			(*v)[(*n)++] = (struct kc_gpu_pair){src[i], src[i]};
	for (size_t i = 0; i < n_src; i++) {
		if (old_in(&src[i], *v, *n))
			continue;
		for (size_t j = 0; j < n_tgt; j++)
			if (!new_in(&tgt[j], *v, *n)) {
				(*v)[(*n)++] = (struct kc_gpu_pair){src[i], tgt[j]};
				break;
			}
	}
}

int kc_gpu_map_check(const struct kc_gpu_pair *user, size_t n_user, const struct kc_uuid *local, size_t n_local,
		     struct kc_error **err)
{
	char a[41];
	for (size_t i = 0; i < n_user; i++) {
		if (old_in(&user[i].old_uuid, user, i) || new_in(&user[i].new_uuid, user, i)) {
			kc_uuid_format(old_in(&user[i].old_uuid, user, i) ? &user[i].old_uuid : &user[i].new_uuid, a);
			return kc_error_set(err, KC_EXIT_USAGE, 0, "'--gpu-map' names GPU '%s' twice", a);
		}
		if (n_local && !in(&user[i].new_uuid, local, n_local)) {
			kc_uuid_format(&user[i].new_uuid, a);
			return kc_error_set(err, KC_EXIT_USAGE, 0, "'--gpu-map': GPU '%s' is not on this node", a);
		}
	}
	return 0;
}

int kc_gpu_map_plan(const struct kc_manifest *m, const struct kc_gpu_pair *user, size_t n_user,
		    const struct kc_uuid *local, size_t n_local, struct kc_gpu_pair **out, size_t *n_out,
		    struct kc_error **err)
{
	/* the GPUs the driver saw at checkpoint: the manifest's, else ours */
	size_t n_was = kc_strv_len(m->node_gpus);
	_cleanup_free_ struct kc_uuid *was = kc_xcalloc(n_was + n_local + 1, sizeof(*was));
	size_t k = 0;
	for (size_t i = 0; i < n_was; i++)
		if (kc_uuid_parse(m->node_gpus[i], &was[k]) == 0)
			k++;
	if (k == 0 && n_local) {
		memcpy(was, local, n_local * sizeof(*local));
		k = n_local;
	}
	n_was = k;

	if (kc_gpu_map_check(user, n_user, local, n_local, err) < 0)
		return -1;
	_cleanup_free_ struct kc_gpu_pair *v = kc_xcalloc(n_user + 1, sizeof(*v));
	size_t n = n_user;
	if (n_user)
		memcpy(v, user, n_user * sizeof(*user));

	bool moved = n > 0;
	for (size_t i = 0; i < n_was && !moved; i++)
		moved = !in(&was[i], local, n_local);
	if (moved && n_local) {
		if (n == 0 && n_was > n_local)
			return kc_error_set(err, KC_EXIT_GPU, 0,
					    "the image comes from a node with %zu GPUs, this one has %zu: give '--gpu-map'",
					    n_was, n_local);
		fill(&v, &n, was, n_was, local, n_local);
	}
	*out = n ? steal_ptr(v) : NULL;
	*n_out = n;
	return 0;
}
