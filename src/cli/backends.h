/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CLI_BACKENDS_H
#define KC_CLI_BACKENDS_H

#include <pthread.h>

#include "cli.h"
#include "kc/orchestrator.h"

struct kc_cli_backends {
	struct kc_cuda cuda;
	struct kc_nvml nvml;
	struct kc_criu criu; /* CRIU, or containerd when .containerd */
	bool containerd;
	struct kc_backends b;
	/* kc_cli_open_gpu_async's thread */
	pthread_t loader;
	bool loader_running;
	const struct kc_args *loader_args;
	struct kc_error *loader_err;
	int loader_rc;
};

/* libcuda and NVML; a missing driver is an error only when the user named
 * one (--libcuda, $KCHECKPOINT_LIBCUDA). */
int kc_cli_open_gpu(const struct kc_args *a, struct kc_cli_backends *cb, struct kc_error **err);
/* The CRIU binary backend, and the GPU backends when gpu. */
int kc_cli_open_backends(const struct kc_args *a, struct kc_cli_backends *cb, bool gpu, struct kc_error **err);
/* Loads the driver in a thread (cuInit takes a while); kc_cli_gpu_ready
 * (a kc_restore_opts.gpu_ready) joins it and reports its error. */
int kc_cli_open_gpu_async(const struct kc_args *a, struct kc_cli_backends *cb);
int kc_cli_gpu_ready(void *arg, struct kc_error **err);
void kc_cli_close_backends(struct kc_cli_backends *cb);
void kc_cli_criu_opts(const struct kc_args *a, struct kc_criu_opts *o);

#endif
