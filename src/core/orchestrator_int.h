/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ORCHESTRATOR_INT_H
#define KC_ORCHESTRATOR_INT_H

#include <stdatomic.h>

#include "kc/orchestrator.h"
#include "kc/undo.h"

/* KC_EXIT_INTERRUPTED when SIGINT/SIGTERM/SIGHUP arrived. */
int kc_check_interrupted(struct kc_error **err);
/* Runs the undo stack; always returns -1.  A failing rollback turns *err
 * into KC_EXIT_ROLLBACK and says so. */
int kc_rollback(struct kc_undo *u, struct kc_error **err);
void kc_fill_host_info(struct kc_manifest *m, const struct kc_backends *b);
int kc_prepare_images_dir(const char *dir, struct kc_error **err);

/* Keeps the first of several workers' failures (an errno). */
static inline void kc_fail_once(atomic_int *failed, int e)
{
	int zero = 0;
	atomic_compare_exchange_strong(failed, &zero, e);
}

/* Runs fn(arg) in that many threads, at most one per work item and at
 * least one (signals blocked in them), and waits for all; fn takes its
 * work from arg until there is none. */
void kc_run_pool(unsigned threads, size_t items, void *(*fn)(void *), void *arg);

/* Writes the regions into the (stopped) restored processes with that many
 * threads (bulk_fill.c); *bytes written. */
int kc_bulk_fill(const char *images_dir, const struct kc_bulk_region *v, size_t n, unsigned threads,
		 uint64_t *bytes, struct kc_error **err);

/* After CRIU dumped with bulk_min: reads what it left out (KC_BULK_SKIPPED)
 * with that many threads into the images dir and the index (bulk_read.c). */
int kc_bulk_read(const char *images_dir, unsigned threads, uint64_t *bytes, struct kc_error **err);

/* A fill in progress for pid (bulk_fill.c): recover refuses to continue a
 * stopped pid with a mark. */
int kc_fillmark_set(pid_t pid, struct kc_error **err);
void kc_fillmark_clear(pid_t pid);
bool kc_fillmark_blocks(pid_t pid);

/* GPU devices a process still has open or mapped (gpu_devices.c). */
struct kc_gpu_dev_use {
	unsigned maps, fds;
	char example[256]; /* the first such file */
};
void kc_gpu_dev_scan(pid_t pid, struct kc_gpu_dev_use *u);
/* Before the GPU stage: every non-CUDA process holding GPU devices must be
 * a child forked after CUDA init (marked forked_after_cuda), and the CRIU
 * plugin that handles those must be there. */
int kc_gpu_dev_preflight(struct kc_manifest *m, bool have_plugin, struct kc_error **err);
/* After the GPU checkpoint: no CUDA process may still hold one. */
int kc_gpu_dev_after_checkpoint(const struct kc_manifest *m, struct kc_error **err);

#endif
