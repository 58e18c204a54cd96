/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CLI_BACKENDS_H
#define KC_CLI_BACKENDS_H

#include "cli.h"
#include "kc/orchestrator.h"

struct kc_cli_backends {
	struct kc_cuda cuda;
	struct kc_nvml nvml;
	struct kc_criu criu; /* CRIU, or containerd when .containerd */
	bool containerd;
	struct kc_backends b;
};

/* libcuda and NVML; a missing driver is an error only when the user named
 * one (--libcuda, $KCHECKPOINT_LIBCUDA). */
int kc_cli_open_gpu(const struct kc_args *a, struct kc_cli_backends *cb, struct kc_error **err);
/* GPU backends plus the CRIU binary backend. */
int kc_cli_open_backends(const struct kc_args *a, struct kc_cli_backends *cb, struct kc_error **err);
void kc_cli_close_backends(struct kc_cli_backends *cb);
void kc_cli_criu_opts(const struct kc_args *a, struct kc_criu_opts *o);

#endif
