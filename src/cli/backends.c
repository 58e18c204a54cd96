/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <signal.h>
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

int kc_cli_open_backends(const struct kc_args *a, struct kc_cli_backends *cb, bool gpu, struct kc_error **err)
{
	memset(cb, 0, sizeof(*cb));
	if (gpu && kc_cli_open_gpu(a, cb, err) < 0)
		return -1;
	kc_criu_init(&cb->criu);
	cb->b.criu = &cb->criu;
	return 0;
}

static void *loader_main(void *arg)
{
	struct kc_cli_backends *cb = arg;
	cb->loader_rc = kc_cli_open_gpu(cb->loader_args, cb, &cb->loader_err);
	return NULL;
}

int kc_cli_open_gpu_async(const struct kc_args *a, struct kc_cli_backends *cb)
{
	cb->loader_args = a;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int r = pthread_create(&cb->loader, NULL, loader_main, cb);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return kc_cli_open_gpu(a, cb, &cb->loader_err);
	cb->loader_running = true;
	return 0;
}

int kc_cli_gpu_ready(void *arg, struct kc_error **err)
{
	struct kc_cli_backends *cb = arg;
	if (cb->loader_running) {
		pthread_join(cb->loader, NULL);
		cb->loader_running = false;
	}
	if (cb->loader_err) {
		kc_error_propagate(err, cb->loader_err);
		cb->loader_err = NULL;
		return -1;
	}
	return 0;
}

void kc_cli_close_backends(struct kc_cli_backends *cb)
{
	kc_cli_gpu_ready(cb, NULL);
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
	o->tcp_close = a->tcp_close;
	o->shell_job = a->shell_job;
	o->link_remap = !a->containerd; /* containerd's CRIU has its own settings */
	o->extra = a->n_criu_opts ? a->criu_opts : NULL;
	/* containerd runs its own CRIU, which loads no plugin of ours */
	o->libdir = a->containerd ? NULL : kc_criu_plugin_dir();
	o->file_locks = a->file_locks;
	o->verbose = a->verbose;
}
