/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where the CUDA driver put its host copy of a process' GPU memory: the
 * anonymous address ranges a checkpoint mapped (a look at /proc/<pid>/maps
 * before and after it).  A restore fills those beside the GPU restore
 * (bulk_uffd.c), because the driver's restore thread only reads them
 * there; everything else of the process is filled before that thread runs
 * any code, so what it does meanwhile (malloc, free, munmap, madvise) only
 * ever meets memory that is all there.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc/util.h"
#include "orchestrator_int.h"

struct kc_gpu_backup {
	size_t n_pids;
	pid_t *pids;
	struct kc_range **before; /* per pid, in address order */
	size_t *n_before;
	bool *seen; /* its maps were read: else none of its memory is taken for the driver's */
};

/* The anonymous mappings of pid: private, no file, no name ([heap] and
 * [stack] left out too: the driver's copy is a plain mmap). */
struct ranges {
	struct kc_range *v;
	size_t n;
};

static int add_anon(const struct kc_map *m, void *arg)
{
	struct ranges *r = arg;
	/* private, anonymous, not named (the driver's is a plain mmap) */
	if (m->perms[3] != 'p' || m->ino || m->name[0])
		return 0;
	r->v = kc_xrealloc(r->v, (r->n + 1) * sizeof(*r->v));
	r->v[r->n++] = (struct kc_range){m->lo, m->hi};
	return 0;
}

static int anon_ranges(pid_t pid, struct kc_range **out, size_t *n)
{
	struct ranges r = {0};
	int rc = kc_pid_maps_each(pid, add_anon, &r);
	*out = r.v;
	*n = r.n;
	return rc;
}

struct kc_gpu_backup *kc_gpu_backup_before(const pid_t *pids, size_t n)
{
	struct kc_gpu_backup *b = kc_xcalloc(1, sizeof(*b));
	b->n_pids = n;
	b->pids = kc_xcalloc(n + 1, sizeof(pid_t));
	b->before = kc_xcalloc(n + 1, sizeof(*b->before));
	b->n_before = kc_xcalloc(n + 1, sizeof(size_t));
	b->seen = kc_xcalloc(n + 1, sizeof(bool));
	for (size_t i = 0; i < n; i++) {
		b->pids[i] = pids[i];
		b->seen[i] = anon_ranges(pids[i], &b->before[i], &b->n_before[i]) == 0;
	}
	return b;
}

void kc_gpu_backup_free(struct kc_gpu_backup *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n_pids; i++)
		free(b->before[i]);
	free(b->before);
	free(b->n_before);
	free(b->seen);
	free(b->pids);
	free(b);
}

/* What the checkpoint mapped: now's anonymous ranges less the ones there
 * before, pieces of at least KC_BULK_MIN (smaller ones may be any thread's
 * malloc meanwhile), written to dir as "<pid> <start hex> <end hex>". */
int kc_gpu_backup_write(const struct kc_gpu_backup *b, const char *dir, struct kc_error **err)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/" KC_GPU_BACKUP_NAME, dir);
	FILE *f = fopen(path, "we");
	if (!f)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot create '%s'", path);
	for (size_t i = 0; b && i < b->n_pids; i++) {
		_cleanup_free_ struct kc_range *now = NULL;
		size_t n_now = 0;
		if (!b->seen[i] || anon_ranges(b->pids[i], &now, &n_now) < 0)
			continue;
		for (size_t k = 0; k < n_now; k++) {
			uint64_t at = now[k].lo;
			while (at < now[k].hi) { /* the next piece not mapped before */
				uint64_t lo = at, hi = now[k].hi;
				for (size_t j = 0; j < b->n_before[i]; j++) {
					const struct kc_range *o = &b->before[i][j];
					if (o->lo <= lo && lo < o->hi)
						lo = o->hi; /* inside an old one: past it */
				}
				if (lo >= now[k].hi)
					break;
				for (size_t j = 0; j < b->n_before[i]; j++)
					if (b->before[i][j].lo > lo && b->before[i][j].lo < hi)
						hi = b->before[i][j].lo;
				if (hi - lo >= KC_BULK_MIN)
					fprintf(f, "%d %" PRIx64 " %" PRIx64 "\n", (int)b->pids[i], lo, hi);
				at = hi;
			}
		}
	}
	if (fclose(f) != 0)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot write '%s'", path);
	return 0;
}

int kc_gpu_backup_read(const char *dir, pid_t **pids, struct kc_range **v, size_t *n)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/" KC_GPU_BACKUP_NAME, dir);
	FILE *f = fopen(path, "re");
	*pids = NULL;
	*v = NULL;
	*n = 0;
	if (!f)
		return -1;
	int pid;
	uint64_t lo, hi;
	while (fscanf(f, "%d %" SCNx64 " %" SCNx64, &pid, &lo, &hi) == 3) {
		if (lo >= hi)
			continue;
		*pids = kc_xrealloc(*pids, (*n + 1) * sizeof(**pids));
		*v = kc_xrealloc(*v, (*n + 1) * sizeof(**v));
		(*pids)[*n] = pid;
		(*v)[(*n)++] = (struct kc_range){lo, hi};
	}
	fclose(f);
	return 0;
}
