/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends.h"
#include "kc/containerd.h"
#include "kc/util.h"

int kc_cli_open_gpu(const struct kc_args *a, struct kc_cli_backends *cb, struct kc_error **err)
{
	struct kc_error *e = NULL;
	bool explicit = a->libcuda || getenv("KCHECKPOINT_LIBCUDA");
	if (kc_cuda_open(a->libcuda, &cb->cuda, &e) == 0) {
		cb->b.cuda = &cb->cuda;
	} else if (explicit) {
		kc_error_propagate(err, e);
		return -1;
	} else {
		/* no driver here: a plain CPU checkpoint is still useful */
		if (a->verbose)
			fprintf(stderr, "kcheckpoint: no GPU stage: %s\n", e->msg);
		kc_error_free(e);
	}
	e = NULL;
	if (kc_nvml_open(NULL, &cb->nvml, &e) == 0)
		cb->b.nvml = &cb->nvml;
	kc_error_free(e);
	return 0;
}

int kc_cli_open_backends(const struct kc_args *a, struct kc_cli_backends *cb, struct kc_error **err)
{
	memset(cb, 0, sizeof(*cb));
	if (kc_cli_open_gpu(a, cb, err) < 0)
		return -1;
	kc_criu_init(&cb->criu);
	cb->b.criu = &cb->criu;
	return 0;
}

void kc_cli_close_backends(struct kc_cli_backends *cb)
{
	if (cb->b.cuda)
		kc_cuda_close(&cb->cuda);
	if (cb->b.nvml)
		kc_nvml_close(&cb->nvml);
	if (cb->containerd)
		kc_containerd_close(&cb->criu);
	memset(cb, 0, sizeof(*cb));
}

void kc_cli_criu_opts(const struct kc_args *a, struct kc_criu_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->criu_path = a->criu;
	o->tcp_established = a->tcp_established;
	o->shell_job = a->shell_job;
	o->file_locks = a->file_locks;
	o->verbose = a->verbose;
}
