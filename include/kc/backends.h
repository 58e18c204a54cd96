/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_BACKENDS_H
#define KC_BACKENDS_H

/* The backends a command works with, opened and closed in one place
 * (src/core/backends.c): the CLI names them, core opens them. */

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include "kc/orchestrator.h"

struct kc_backend_set {
	struct kc_cuda cuda;
	struct kc_nvml nvml;
	struct kc_criu criu; /* CRIU, or containerd when .containerd */
	bool containerd;
	struct kc_backends b;
	/* the driver loader thread of kc_backends_open_gpu_async */
	pthread_t loader;
	bool loader_running;
	const char *loader_libcuda;
	bool loader_verbose;
	struct kc_error *loader_err;
	int loader_rc;
};

/* libcuda (NULL: $KCHECKPOINT_LIBCUDA, else libcuda.so.1) and NVML; a
 * missing driver is an error only when one was named; verbose says why
 * there is no GPU stage. */
int kc_backends_open_gpu(struct kc_backend_set *s, const char *libcuda, bool verbose, struct kc_error **err);
/* The CRIU binary backend, and the GPU backends when gpu. */
int kc_backends_open(struct kc_backend_set *s, bool gpu, const char *libcuda, bool verbose, struct kc_error **err);
/* Loads the driver in a thread (cuInit takes a while); kc_backends_gpu_ready
 * (a kc_restore_opts.gpu_ready) joins it and reports its error. */
void kc_backends_open_gpu_async(struct kc_backend_set *s, const char *libcuda, bool verbose);
int kc_backends_gpu_ready(void *set, struct kc_error **err);
void kc_backends_close(struct kc_backend_set *s);

/* containerd instead of the CRIU binary: the container to dump (its task's
 * pid into *pid, its processes into *pids) or the id to restore as.  The
 * manifest's containerd section after a dump: kc_backends_container_section. */
struct kc_container_opts {
	const char *address, *ns, *id;
	int rw_layer; /* 1 required, -1 left out, 0 when there is one */
};
int kc_backends_use_container_dump(struct kc_backend_set *s, const struct kc_container_opts *o, pid_t *pid,
				   pid_t **pids, size_t *n_pids, struct kc_error **err);
int kc_backends_use_container_restore(struct kc_backend_set *s, const struct kc_container_opts *o,
				      struct kc_error **err);
void *kc_backends_container_section(struct kc_backend_set *s);

/* The CRIU binary runs (its version answers): checked before an archive
 * is unpacked.  "CRIU: cannot run ..." otherwise. */
int kc_backends_criu_runs(struct kc_backend_set *s, const struct kc_criu_opts *o, struct kc_error **err);

/* kcheckpoint's CRIU plugin dir (criu --libdir), NULL if there is none. */
const char *kc_backends_plugin_dir(void);

#endif
