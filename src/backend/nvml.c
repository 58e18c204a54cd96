/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NVML backend, through dlopen() like the CUDA one: which GPUs there are,
 * their persistence mode and memory, and which pids use them.  Used by
 * `check` and `ps`; the checkpoint itself never depends on it.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlib.h"
#include "kc/nvml.h"
#include "kc/util.h"

/* Layouts from nvml.h (driver 510 and later). */
typedef void *nvml_device;

struct nvml_memory {
	unsigned long long total;
	unsigned long long free;
	unsigned long long used;
};

/* nvmlProcessInfo_v1_t, for the unsuffixed call */
struct nvml_process_info_v1 {
	unsigned int pid;
	unsigned long long used_gpu_memory;
};

/* nvmlProcessInfo_v2_t; nvmlProcessInfo_t (taken by _v3) is the same */
struct nvml_process_info_v2 {
	unsigned int pid;
	unsigned long long used_gpu_memory;
	unsigned int gpu_instance_id;
	unsigned int compute_instance_id;
};

#define NVML_SUCCESS 0
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_VALUE_NOT_AVAILABLE (~0ULL)
#define NVML_BUFFER_SIZE 96 /* NVML_DEVICE_UUID_V2_BUFFER_SIZE, ..._NAME_V2_... */

struct nvml_lib {
	void *dl;
	int (*init)(void);
	int (*shutdown)(void);
	int (*driver_version)(char *buf, unsigned int len);
	int (*device_count)(unsigned int *count);
	int (*device_by_index)(unsigned int index, nvml_device *dev);
	int (*device_uuid)(nvml_device dev, char *buf, unsigned int len);
	int (*device_name)(nvml_device dev, char *buf, unsigned int len);
	int (*device_persistence)(nvml_device dev, int *mode);
	int (*device_memory)(nvml_device dev, struct nvml_memory *mem);
	int (*procs_v3)(nvml_device dev, unsigned int *count, struct nvml_process_info_v2 *infos);
	int (*procs_v2)(nvml_device dev, unsigned int *count, struct nvml_process_info_v2 *infos);
	int (*procs_v1)(nvml_device dev, unsigned int *count, struct nvml_process_info_v1 *infos);
};

static const struct kc_dl_sym nvml_syms[] = {
	{"nvmlInit_v2", offsetof(struct nvml_lib, init), false},
	{"nvmlShutdown", offsetof(struct nvml_lib, shutdown), false},
	{"nvmlSystemGetDriverVersion", offsetof(struct nvml_lib, driver_version), false},
	{"nvmlDeviceGetCount_v2", offsetof(struct nvml_lib, device_count), false},
	{"nvmlDeviceGetHandleByIndex_v2", offsetof(struct nvml_lib, device_by_index), false},
	{"nvmlDeviceGetUUID", offsetof(struct nvml_lib, device_uuid), false},
	{"nvmlDeviceGetName", offsetof(struct nvml_lib, device_name), false},
	{"nvmlDeviceGetPersistenceMode", offsetof(struct nvml_lib, device_persistence), false},
	{"nvmlDeviceGetMemoryInfo", offsetof(struct nvml_lib, device_memory), false},
	{"nvmlDeviceGetComputeRunningProcesses_v3", offsetof(struct nvml_lib, procs_v3), true},
	{"nvmlDeviceGetComputeRunningProcesses_v2", offsetof(struct nvml_lib, procs_v2), true},
	{"nvmlDeviceGetComputeRunningProcesses", offsetof(struct nvml_lib, procs_v1), true},
};

static const char *const nvml_result_names[] = {
	"NVML_SUCCESS",
	"NVML_ERROR_UNINITIALIZED",
	"NVML_ERROR_INVALID_ARGUMENT",
	"NVML_ERROR_NOT_SUPPORTED",
	"NVML_ERROR_NO_PERMISSION",
	"NVML_ERROR_ALREADY_INITIALIZED",
	"NVML_ERROR_NOT_FOUND",
	"NVML_ERROR_INSUFFICIENT_SIZE",
	"NVML_ERROR_INSUFFICIENT_POWER",
	"NVML_ERROR_DRIVER_NOT_LOADED",
	"NVML_ERROR_TIMEOUT",
	"NVML_ERROR_IRQ_ISSUE",
	"NVML_ERROR_LIBRARY_NOT_FOUND",
	"NVML_ERROR_FUNCTION_NOT_FOUND",
	"NVML_ERROR_CORRUPTED_INFOROM",
	"NVML_ERROR_GPU_IS_LOST",
	"NVML_ERROR_RESET_REQUIRED",
	"NVML_ERROR_OPERATING_SYSTEM",
	"NVML_ERROR_LIB_RM_VERSION_MISMATCH",
	"NVML_ERROR_IN_USE",
	"NVML_ERROR_MEMORY",
	"NVML_ERROR_NO_DATA",
	"NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
	"NVML_ERROR_INSUFFICIENT_RESOURCES",
	"NVML_ERROR_FREQ_NOT_SUPPORTED",
	"NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
	"NVML_ERROR_DEPRECATED",
	"NVML_ERROR_NOT_READY",
	"NVML_ERROR_GPU_NOT_FOUND",
	"NVML_ERROR_INVALID_STATE",
};

static int nvml_error(struct kc_error **err, int r, const char *what)
{
	if (r >= 0 && (size_t)r < KC_ARRAY_SIZE(nvml_result_names))
		return kc_error_set(err, KC_EXIT_GPU, r, "%s: %s (%d)", what, nvml_result_names[r], r);
	if (r == 999)
		return kc_error_set(err, KC_EXIT_GPU, r, "%s: NVML_ERROR_UNKNOWN (999)", what);
	return kc_error_set(err, KC_EXIT_GPU, r, "%s: NVML_ERROR_%d", what, r);
}

static int nvml_driver_version(void *h, char *buf, size_t len, struct kc_error **err)
{
	const struct nvml_lib *lib = h;
	char v[128] = "";
	int r = lib->driver_version(v, sizeof(v));
	if (r != NVML_SUCCESS)
		return nvml_error(err, r, "nvmlSystemGetDriverVersion");
	snprintf(buf, len, "%s", v);
	return 0;
}

static int nvml_list_gpus(void *h, struct kc_gpu_info **gpus, size_t *n, struct kc_error **err)
{
	const struct nvml_lib *lib = h;
	unsigned int count = 0;
	int r = lib->device_count(&count);
	if (r != NVML_SUCCESS)
		return nvml_error(err, r, "nvmlDeviceGetCount_v2");

	_cleanup_free_ struct kc_gpu_info *out = kc_xcalloc(count, sizeof(*out));
	for (unsigned int i = 0; i < count; i++) {
		struct kc_gpu_info *g = &out[i];
		nvml_device dev = NULL;
		g->index = i;
		r = lib->device_by_index(i, &dev);
		if (r != NVML_SUCCESS) {
			nvml_error(err, r, "nvmlDeviceGetHandleByIndex_v2");
			return kc_error_prefix(err, "GPU %u", i);
		}
		r = lib->device_uuid(dev, g->uuid, sizeof(g->uuid));
		if (r != NVML_SUCCESS) {
			nvml_error(err, r, "nvmlDeviceGetUUID");
			return kc_error_prefix(err, "GPU %u", i);
		}
		/* the rest is informational: a GPU that will not say stays listed */
		if (lib->device_name(dev, g->name, sizeof(g->name)) != NVML_SUCCESS)
			snprintf(g->name, sizeof(g->name), "?");
		int mode = 0;
		r = lib->device_persistence(dev, &mode);
		g->persistence = r == NVML_SUCCESS ? mode != 0 : -1;
		struct nvml_memory mem = {0};
		if (lib->device_memory(dev, &mem) == NVML_SUCCESS) {
			g->mem_total = mem.total;
			g->mem_used = mem.used;
		}
	}
	*gpus = steal_ptr(out);
	*n = count;
	return 0;
}

/*
 * One call of whichever nvmlDeviceGetComputeRunningProcesses the driver
 * has, newest first; the v3 and v2 records share one layout.
 */
static int procs_call(const struct nvml_lib *lib, nvml_device dev, unsigned int *count, void *buf,
		      bool *v1)
{
	*v1 = false;
	if (lib->procs_v3)
		return lib->procs_v3(dev, count, buf);
	if (lib->procs_v2)
		return lib->procs_v2(dev, count, buf);
	*v1 = true;
	return lib->procs_v1(dev, count, buf);
}

static int gpu_procs(const struct nvml_lib *lib, nvml_device dev, const char *uuid,
		     struct kc_gpu_proc **procs, size_t *n, struct kc_error **err)
{
	unsigned int count = 0;
	bool v1;
	_cleanup_free_ void *buf = NULL;
	int r = procs_call(lib, dev, &count, NULL, &v1);
	if (r == NVML_SUCCESS)
		count = 0; /* nothing could have been written to a NULL buffer */

	/* processes come and go between the two calls: grow and retry */
	for (int tries = 0; r == NVML_ERROR_INSUFFICIENT_SIZE && tries < 8; tries++) {
		count += 16;
		free(buf);
		buf = kc_xcalloc(count, sizeof(struct nvml_process_info_v2));
		r = procs_call(lib, dev, &count, buf, &v1);
	}
	if (r != NVML_SUCCESS)
		return nvml_error(err, r, "nvmlDeviceGetComputeRunningProcesses");

	*procs = kc_xrealloc(*procs, (*n + count) * sizeof(**procs));
	for (unsigned int i = 0; i < count; i++) {
		struct kc_gpu_proc *p = &(*procs)[(*n)++];
		unsigned long long used;
		if (v1) {
			const struct nvml_process_info_v1 *info = (const struct nvml_process_info_v1 *)buf + i;
			p->pid = (pid_t)info->pid;
			used = info->used_gpu_memory;
		} else {
			const struct nvml_process_info_v2 *info = (const struct nvml_process_info_v2 *)buf + i;
			p->pid = (pid_t)info->pid;
			used = info->used_gpu_memory;
		}
		p->used_bytes = used == NVML_VALUE_NOT_AVAILABLE ? 0 : used;
		snprintf(p->uuid, sizeof(p->uuid), "%s", uuid);
	}
	return 0;
}

static int nvml_list_procs(void *h, struct kc_gpu_proc **procs, size_t *n, struct kc_error **err)
{
	const struct nvml_lib *lib = h;
	unsigned int count = 0;
	int r = lib->device_count(&count);
	if (r != NVML_SUCCESS)
		return nvml_error(err, r, "nvmlDeviceGetCount_v2");

	_cleanup_free_ struct kc_gpu_proc *out = NULL;
	size_t n_out = 0;
	for (unsigned int i = 0; i < count; i++) {
		nvml_device dev = NULL;
		char uuid[NVML_BUFFER_SIZE] = "";
		r = lib->device_by_index(i, &dev);
		if (r == NVML_SUCCESS)
			r = lib->device_uuid(dev, uuid, sizeof(uuid));
		if (r != NVML_SUCCESS) {
			nvml_error(err, r, "nvmlDeviceGetHandleByIndex_v2");
			return kc_error_prefix(err, "GPU %u", i);
		}
		if (gpu_procs(lib, dev, uuid, &out, &n_out, err) < 0)
			return kc_error_prefix(err, "GPU %u", i);
	}
	*procs = steal_ptr(out);
	*n = n_out;
	return 0;
}

static void nvml_lib_close(void *h)
{
	struct nvml_lib *lib = h;
	if (!lib)
		return;
	lib->shutdown();
	dlclose(lib->dl);
	free(lib);
}

static const struct kc_nvml_ops nvml_dl_ops = {
	.driver_version = nvml_driver_version,
	.list_gpus = nvml_list_gpus,
	.list_procs = nvml_list_procs,
	.close = nvml_lib_close,
};

int kc_nvml_open(const char *path, struct kc_nvml *out, struct kc_error **err)
{
	const char *name;
	void *dl = kc_dl_open(path, "KCHECKPOINT_LIBNVML", "libnvidia-ml.so.1", &name, err);
	if (!dl)
		return -1;

	_cleanup_free_ struct nvml_lib *lib = kc_xcalloc(1, sizeof(*lib));
	lib->dl = dl;
	int missing = kc_dl_resolve(dl, nvml_syms, KC_ARRAY_SIZE(nvml_syms), lib);
	if (missing >= 0) {
		dlclose(dl);
		return kc_error_set(err, KC_EXIT_GPU, 0, "'%s' lacks '%s': not an NVML library, or too old", name,
				    nvml_syms[missing].name);
	}
	if (!lib->procs_v3 && !lib->procs_v2 && !lib->procs_v1) {
		dlclose(dl);
		return kc_error_set(err, KC_EXIT_GPU, 0, "'%s' lacks 'nvmlDeviceGetComputeRunningProcesses'",
				    name);
	}

	int r = lib->init();
	if (r != NVML_SUCCESS) {
		nvml_error(err, r, "nvmlInit_v2");
		dlclose(dl);
		return -1;
	}
	out->ops = &nvml_dl_ops;
	out->h = steal_ptr(lib);
	return 0;
}

void kc_nvml_close(struct kc_nvml *n)
{
	if (!n)
		return;
	if (n->ops && n->ops->close)
		n->ops->close(n->h);
	n->ops = NULL;
	n->h = NULL;
}
