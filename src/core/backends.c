/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc/backends.h"
#include "kc/containerd.h"
#include "kc/threads.h"
#include "kc/util.h"

int kc_backends_open_gpu(struct kc_backend_set *cb, const char *libcuda, bool verbose, struct kc_error **err)
{
	struct kc_error *e = NULL;
	bool explicit = libcuda || getenv("KCHECKPOINT_LIBCUDA");
	if (kc_cuda_open(libcuda, &cb->cuda, &e) == 0) {
		cb->b.cuda = &cb->cuda;
	} else if (explicit) {
		kc_error_propagate(err, e);
		return -1;
	} else {
		/* no driver here: a plain CPU checkpoint is still useful */
		if (verbose)
			fprintf(stderr, "kcheckpoint: no GPU stage: %s\n", e->msg);
		kc_error_free(e);
	}
	e = NULL;
	if (kc_nvml_open(NULL, &cb->nvml, &e) == 0)
		cb->b.nvml = &cb->nvml;
	kc_error_free(e);
	return 0;
}

int kc_backends_open(struct kc_backend_set *cb, bool gpu, const char *libcuda, bool verbose, struct kc_error **err)
{
	memset(cb, 0, sizeof(*cb));
	if (gpu && kc_backends_open_gpu(cb, libcuda, verbose, err) < 0)
		return -1;
	kc_criu_init(&cb->criu);
	cb->b.criu = &cb->criu;
	return 0;
}

static void *loader_main(void *arg)
{
	struct kc_backend_set *cb = arg;
	cb->loader_rc = kc_backends_open_gpu(cb, cb->loader_libcuda, cb->loader_verbose, &cb->loader_err);
	return NULL;
}

void kc_backends_open_gpu_async(struct kc_backend_set *cb, const char *libcuda, bool verbose)
{
	cb->loader_libcuda = libcuda;
	cb->loader_verbose = verbose;
	if (kc_thread_start(&cb->loader, loader_main, cb) != 0)
		kc_backends_open_gpu(cb, libcuda, verbose, &cb->loader_err);
	else
		cb->loader_running = true;
}

int kc_backends_gpu_ready(void *arg, struct kc_error **err)
{
	struct kc_backend_set *cb = arg;
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

void kc_backends_close(struct kc_backend_set *cb)
{
	kc_backends_gpu_ready(cb, NULL);
	if (cb->b.cuda)
		kc_cuda_close(&cb->cuda);
	if (cb->b.nvml)
		kc_nvml_close(&cb->nvml);
	if (cb->containerd)
		kc_containerd_close(&cb->criu);
	memset(cb, 0, sizeof(*cb));
}

static struct kc_containerd_opts ctrd_opts(const struct kc_container_opts *o)
{
	return (struct kc_containerd_opts){.address = o->address, .ns = o->ns, .container_id = o->id,
					   .rw_layer = o->rw_layer > 0 ? KC_RW_YES : o->rw_layer < 0 ? KC_RW_NO
												   : KC_RW_AUTO};
}

int kc_backends_use_container_dump(struct kc_backend_set *s, const struct kc_container_opts *o, pid_t *pid,
				   pid_t **pids, size_t *n_pids, struct kc_error **err)
{
	struct kc_containerd_opts co = ctrd_opts(o);
	if (kc_containerd_open_dump(&co, &s->criu, pid, err) < 0)
		return -1;
	s->containerd = true;
	return kc_containerd_list_pids(&s->criu, pids, n_pids, err);
}

int kc_backends_use_container_restore(struct kc_backend_set *s, const struct kc_container_opts *o,
				      struct kc_error **err)
{
	struct kc_containerd_opts co = ctrd_opts(o);
	if (kc_containerd_open_restore(&co, &s->criu, err) < 0)
		return -1;
	s->containerd = true;
	return 0;
}

void *kc_backends_container_section(struct kc_backend_set *s)
{
	return kc_containerd_manifest_section(&s->criu);
}

const char *kc_backends_plugin_dir(void)
{
	return kc_criu_plugin_dir();
}

int kc_backends_criu_runs(struct kc_backend_set *s, const struct kc_criu_opts *o, struct kc_error **err)
{
	_cleanup_free_ char *ver = NULL;
	if (s->criu.ops->version(s->criu.h, o, &ver, err) < 0)
		return kc_error_prefix(err, "CRIU");
	return 0;
}
