/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_NVML_H
#define KC_NVML_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kc/error.h"

struct kc_gpu_info {
	unsigned index;
	char uuid[96]; /* "GPU-..." */
	char name[96];
	int persistence; /* 1 on, 0 off, -1 unknown */
	uint64_t mem_total;
	uint64_t mem_used;
};

struct kc_gpu_proc {
	pid_t pid;
	char uuid[96];
	uint64_t used_bytes; /* 0 when the driver does not say */
};

struct kc_nvml_ops {
	int (*driver_version)(void *h, char *buf, size_t len, struct kc_error **err);
	int (*list_gpus)(void *h, struct kc_gpu_info **gpus, size_t *n, struct kc_error **err);
	/* Compute processes of every GPU; one entry per (pid, GPU). */
	int (*list_procs)(void *h, struct kc_gpu_proc **procs, size_t *n, struct kc_error **err);
	void (*close)(void *h);
};

struct kc_nvml {
	const struct kc_nvml_ops *ops;
	void *h;
};

/* dlopen()s path or $KCHECKPOINT_LIBNVML or "libnvidia-ml.so.1" and
 * runs nvmlInit_v2.  KC_EXIT_NOENT when the library is absent. */
int kc_nvml_open(const char *path, struct kc_nvml *out, struct kc_error **err);
void kc_nvml_close(struct kc_nvml *n);

#endif
