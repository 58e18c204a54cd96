/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CUDA_H
#define KC_CUDA_H

#include <stddef.h>
#include <sys/types.h>

#include "kc/error.h"

/* Same values as the driver's CUprocessState. */
enum kc_cuda_state {
	KC_CUDA_RUNNING = 0,
	KC_CUDA_LOCKED = 1,
	KC_CUDA_CHECKPOINTED = 2,
	KC_CUDA_FAILED = 3,
	KC_CUDA_NONE = -1, /* not a CUDA process (driver says NOT_INITIALIZED) */
	/* a CUDA process the driver could not be asked about (stopped, and
	 * its restore thread may not run: see kcheckpoint(1), state) */
	KC_CUDA_UNKNOWN = -2,
};

/* CUresult values the orchestrator branches on (driver API numbers). */
enum {
	KC_CUDA_SUCCESS = 0,
	KC_CUDA_ERROR_INVALID_VALUE = 1,
	KC_CUDA_ERROR_NOT_INITIALIZED = 3,
	KC_CUDA_ERROR_OPERATING_SYSTEM = 304,
	KC_CUDA_ERROR_NOT_FOUND = 500,
	KC_CUDA_ERROR_ILLEGAL_STATE = 401,
	KC_CUDA_ERROR_NOT_READY = 600,
	KC_CUDA_ERROR_NOT_SUPPORTED = 801,
	KC_CUDA_ERROR_UNKNOWN = 999,
};

/* A GPU UUID as the driver's CUuuid: 16 raw bytes. */
struct kc_uuid {
	unsigned char bytes[16];
};

struct kc_gpu_pair {
	struct kc_uuid old_uuid;
	struct kc_uuid new_uuid;
};

/*
 * Operations on one process' CUDA state.  All return 0 or -1; on -1 the
 * error's `cause` is the CUresult, and exit_code is KC_EXIT_GPU (or
 * KC_EXIT_BUSY for NOT_READY from lock).  Every op must be callable from
 * several threads at once for different pids.
 */
struct kc_cuda_ops {
	int (*driver_version)(void *h, int *version, struct kc_error **err);
	int (*get_state)(void *h, pid_t pid, enum kc_cuda_state *state, struct kc_error **err);
	int (*get_restore_tid)(void *h, pid_t pid, int *tid, struct kc_error **err);
	int (*lock)(void *h, pid_t pid, unsigned timeout_ms, struct kc_error **err);
	int (*checkpoint)(void *h, pid_t pid, struct kc_error **err);
	int (*restore)(void *h, pid_t pid, const struct kc_gpu_pair *pairs, size_t n_pairs,
		       struct kc_error **err);
	int (*unlock)(void *h, pid_t pid, struct kc_error **err);
	/* The GPUs the driver sees, in its order (may be NULL). */
	int (*list_gpus)(void *h, struct kc_uuid **uuids, size_t *n, struct kc_error **err);
	void (*close)(void *h);
};

struct kc_cuda {
	const struct kc_cuda_ops *ops;
	void *h;
	char *lib_path; /* the library actually loaded */
};

/*
 * dlopen()s the driver (path, else $KCHECKPOINT_LIBCUDA, else
 * "libcuda.so.1"), resolves the cuCheckpointProcess* symbols and runs
 * cuInit(0).  KC_EXIT_NOENT when the library is missing, KC_EXIT_GPU when
 * a symbol is missing (driver too old) or cuInit fails.
 */
int kc_cuda_open(const char *path, struct kc_cuda *out, struct kc_error **err);
void kc_cuda_close(struct kc_cuda *c);

/* Names of the checkpoint symbols, for `check`; NULL terminated. */
extern const char *const kc_cuda_checkpoint_symbols[];

const char *kc_cuda_state_name(enum kc_cuda_state s);
/* "CUDA_ERROR_NOT_READY" etc.; "CUDA_ERROR_<n>" for unknown codes. */
const char *kc_cuda_result_name(int result, char buf[32]);

/* "GPU-8c0e...", or bare hex with dashes -> 16 bytes.  -1 on bad syntax. */
int kc_uuid_parse(const char *s, struct kc_uuid *out);
/* Always "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (NVML's form). */
void kc_uuid_format(const struct kc_uuid *u, char buf[41]);
/* The GPUs the kernel module lists ($KCHECKPOINT_NVIDIA_PROCFS, else
 * /proc/driver/nvidia/gpus), no driver start-up needed; -1 when none. */
int kc_procfs_gpus(struct kc_uuid **out, size_t *n);

#endif
