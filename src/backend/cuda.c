/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CUDA driver backend: the cuCheckpointProcess* API through dlopen(), so
 * the binary runs (and `check` can explain) on hosts without a driver and
 * never needs cuda.h to build.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc/cuda.h"
#include "kc/util.h"

#include "cuda_abi.h"
#include "dlib.h"

struct cuda_lib {
	void *dl;
	int version; /* cuDriverGetVersion(), e.g. 13000 */
	kc_cu_result (*init)(unsigned int flags);
	kc_cu_result (*driver_get_version)(int *version);
	kc_cu_result (*get_error_name)(kc_cu_result r, const char **name); /* may be NULL */
	kc_cu_result (*get_state)(int pid, kc_cu_process_state *state);
	kc_cu_result (*lock)(int pid, struct kc_cu_lock_args *args);
	kc_cu_result (*checkpoint)(int pid, struct kc_cu_checkpoint_args *args);
	kc_cu_result (*restore)(int pid, void *args); /* layout depends on version */
	kc_cu_result (*unlock)(int pid, struct kc_cu_unlock_args *args);
	kc_cu_result (*get_restore_tid)(int pid, int *tid);
	/* for the GPU list; optional, older drivers still checkpoint */
	kc_cu_result (*device_get_count)(int *count);
	kc_cu_result (*device_get)(int *device, int ordinal);
	kc_cu_result (*device_get_uuid)(struct kc_uuid *uuid, int device);
};

const char *const kc_cuda_checkpoint_symbols[] = {
	"cuCheckpointProcessGetState",
	"cuCheckpointProcessLock",
	"cuCheckpointProcessCheckpoint",
	"cuCheckpointProcessRestore",
	"cuCheckpointProcessUnlock",
	"cuCheckpointProcessGetRestoreThreadId",
	NULL,
};

static const struct kc_dl_sym cuda_syms[] = {
	{"cuInit", offsetof(struct cuda_lib, init), false},
	{"cuDriverGetVersion", offsetof(struct cuda_lib, driver_get_version), false},
	{"cuGetErrorName", offsetof(struct cuda_lib, get_error_name), true},
	{"cuCheckpointProcessGetState", offsetof(struct cuda_lib, get_state), false},
	{"cuCheckpointProcessLock", offsetof(struct cuda_lib, lock), false},
	{"cuCheckpointProcessCheckpoint", offsetof(struct cuda_lib, checkpoint), false},
	{"cuCheckpointProcessRestore", offsetof(struct cuda_lib, restore), false},
	{"cuCheckpointProcessUnlock", offsetof(struct cuda_lib, unlock), false},
	{"cuCheckpointProcessGetRestoreThreadId", offsetof(struct cuda_lib, get_restore_tid), false},
	{"cuDeviceGetCount", offsetof(struct cuda_lib, device_get_count), true},
	{"cuDeviceGet", offsetof(struct cuda_lib, device_get), true},
	{"cuDeviceGetUuid_v2", offsetof(struct cuda_lib, device_get_uuid), true},
};

/* Every CUresult of CUDA 13.0's cuda.h, sorted by value. */
static const struct {
	int value;
	const char *name;
} cuda_result_names[] = {
	{0, "CUDA_SUCCESS"},
	{1, "CUDA_ERROR_INVALID_VALUE"},
	{2, "CUDA_ERROR_OUT_OF_MEMORY"},
	{3, "CUDA_ERROR_NOT_INITIALIZED"},
	{4, "CUDA_ERROR_DEINITIALIZED"},
	{5, "CUDA_ERROR_PROFILER_DISABLED"},
	{6, "CUDA_ERROR_PROFILER_NOT_INITIALIZED"},
	{7, "CUDA_ERROR_PROFILER_ALREADY_STARTED"},
	{8, "CUDA_ERROR_PROFILER_ALREADY_STOPPED"},
	{34, "CUDA_ERROR_STUB_LIBRARY"},
	{36, "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER"},
	{46, "CUDA_ERROR_DEVICE_UNAVAILABLE"},
	{100, "CUDA_ERROR_NO_DEVICE"},
	{101, "CUDA_ERROR_INVALID_DEVICE"},
	{102, "CUDA_ERROR_DEVICE_NOT_LICENSED"},
	{200, "CUDA_ERROR_INVALID_IMAGE"},
	{201, "CUDA_ERROR_INVALID_CONTEXT"},
	{202, "CUDA_ERROR_CONTEXT_ALREADY_CURRENT"},
	{205, "CUDA_ERROR_MAP_FAILED"},
	{206, "CUDA_ERROR_UNMAP_FAILED"},
	{207, "CUDA_ERROR_ARRAY_IS_MAPPED"},
	{208, "CUDA_ERROR_ALREADY_MAPPED"},
	{209, "CUDA_ERROR_NO_BINARY_FOR_GPU"},
	{210, "CUDA_ERROR_ALREADY_ACQUIRED"},
	{211, "CUDA_ERROR_NOT_MAPPED"},
	{212, "CUDA_ERROR_NOT_MAPPED_AS_ARRAY"},
	{213, "CUDA_ERROR_NOT_MAPPED_AS_POINTER"},
	{214, "CUDA_ERROR_ECC_UNCORRECTABLE"},
	{215, "CUDA_ERROR_UNSUPPORTED_LIMIT"},
	{216, "CUDA_ERROR_CONTEXT_ALREADY_IN_USE"},
	{217, "CUDA_ERROR_PEER_ACCESS_UNSUPPORTED"},
	{218, "CUDA_ERROR_INVALID_PTX"},
	{219, "CUDA_ERROR_INVALID_GRAPHICS_CONTEXT"},
	{220, "CUDA_ERROR_NVLINK_UNCORRECTABLE"},
	{221, "CUDA_ERROR_JIT_COMPILER_NOT_FOUND"},
	{222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"},
	{223, "CUDA_ERROR_JIT_COMPILATION_DISABLED"},
	{224, "CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY"},
	{225, "CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC"},
	{226, "CUDA_ERROR_CONTAINED"},
	{300, "CUDA_ERROR_INVALID_SOURCE"},
	{301, "CUDA_ERROR_FILE_NOT_FOUND"},
	{302, "CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND"},
	{303, "CUDA_ERROR_SHARED_OBJECT_INIT_FAILED"},
	{304, "CUDA_ERROR_OPERATING_SYSTEM"},
	{400, "CUDA_ERROR_INVALID_HANDLE"},
	{401, "CUDA_ERROR_ILLEGAL_STATE"},
	{402, "CUDA_ERROR_LOSSY_QUERY"},
	{500, "CUDA_ERROR_NOT_FOUND"},
	{600, "CUDA_ERROR_NOT_READY"},
	{700, "CUDA_ERROR_ILLEGAL_ADDRESS"},
	{701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"},
	{702, "CUDA_ERROR_LAUNCH_TIMEOUT"},
	{703, "CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING"},
	{704, "CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED"},
	{705, "CUDA_ERROR_PEER_ACCESS_NOT_ENABLED"},
	{708, "CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE"},
	{709, "CUDA_ERROR_CONTEXT_IS_DESTROYED"},
	{710, "CUDA_ERROR_ASSERT"},
	{711, "CUDA_ERROR_TOO_MANY_PEERS"},
	{712, "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED"},
	{713, "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED"},
	{714, "CUDA_ERROR_HARDWARE_STACK_ERROR"},
	{715, "CUDA_ERROR_ILLEGAL_INSTRUCTION"},
	{716, "CUDA_ERROR_MISALIGNED_ADDRESS"},
	{717, "CUDA_ERROR_INVALID_ADDRESS_SPACE"},
	{718, "CUDA_ERROR_INVALID_PC"},
	{719, "CUDA_ERROR_LAUNCH_FAILED"},
	{720, "CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE"},
	{721, "CUDA_ERROR_TENSOR_MEMORY_LEAK"},
	{800, "CUDA_ERROR_NOT_PERMITTED"},
	{801, "CUDA_ERROR_NOT_SUPPORTED"},
	{802, "CUDA_ERROR_SYSTEM_NOT_READY"},
	{803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"},
	{804, "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE"},
	{805, "CUDA_ERROR_MPS_CONNECTION_FAILED"},
	{806, "CUDA_ERROR_MPS_RPC_FAILURE"},
	{807, "CUDA_ERROR_MPS_SERVER_NOT_READY"},
	{808, "CUDA_ERROR_MPS_MAX_CLIENTS_REACHED"},
	{809, "CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED"},
	{810, "CUDA_ERROR_MPS_CLIENT_TERMINATED"},
	{811, "CUDA_ERROR_CDP_NOT_SUPPORTED"},
	{812, "CUDA_ERROR_CDP_VERSION_MISMATCH"},
	{900, "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"},
	{901, "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"},
	{902, "CUDA_ERROR_STREAM_CAPTURE_MERGE"},
	{903, "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED"},
	{904, "CUDA_ERROR_STREAM_CAPTURE_UNJOINED"},
	{905, "CUDA_ERROR_STREAM_CAPTURE_ISOLATION"},
	{906, "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT"},
	{907, "CUDA_ERROR_CAPTURED_EVENT"},
	{908, "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD"},
	{909, "CUDA_ERROR_TIMEOUT"},
	{910, "CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE"},
	{911, "CUDA_ERROR_EXTERNAL_DEVICE"},
	{912, "CUDA_ERROR_INVALID_CLUSTER_SIZE"},
	{913, "CUDA_ERROR_FUNCTION_NOT_LOADED"},
	{914, "CUDA_ERROR_INVALID_RESOURCE_TYPE"},
	{915, "CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION"},
	{916, "CUDA_ERROR_KEY_ROTATION"},
	{999, "CUDA_ERROR_UNKNOWN"},
};

const char *kc_cuda_result_name(int result, char buf[32])
{
	size_t lo = 0, hi = KC_ARRAY_SIZE(cuda_result_names);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cuda_result_names[mid].value == result)
			return cuda_result_names[mid].name;
		if (cuda_result_names[mid].value < result)
			lo = mid + 1;
		else
			hi = mid;
	}
	snprintf(buf, 32, "CUDA_ERROR_%d", result);
	return buf;
}

const char *kc_cuda_state_name(enum kc_cuda_state s)
{
	/* a switch on int: newer drivers report states the enum lacks */
	switch ((int)s) {
	case KC_CUDA_NONE:
		return "none";
	case KC_CUDA_RUNNING:
		return "running";
	case KC_CUDA_LOCKED:
		return "locked";
	case KC_CUDA_CHECKPOINTED:
		return "checkpointed";
	case KC_CUDA_FAILED:
		return "failed";
	case 4:
		return "checkpointing";
	case 5:
		return "restoring";
	default:
		return "unknown";
	}
}

static int result_error(const struct cuda_lib *lib, struct kc_error **err, int exit_code,
			kc_cu_result r, const char *what)
{
	char buf[32];
	const char *name = kc_cuda_result_name(r, buf);
	const char *driver_name = NULL;
	/* a driver newer than our table may know the name */
	if (name == buf && lib->get_error_name && lib->get_error_name(r, &driver_name) == 0 &&
	    driver_name)
		name = driver_name;
	return kc_error_set(err, exit_code, r, "%s: %s (%d)", what, name, r);
}

/* 304 is what the driver answers for a pid that no longer exists (or
 * a zombie): said in words where that is what happened, a process that
 * died during its checkpoint or restore, say. */
static int op_error(const struct cuda_lib *lib, struct kc_error **err, kc_cu_result r, pid_t pid,
		    const char *what)
{
	if (r != KC_CUDA_ERROR_OPERATING_SYSTEM)
		return result_error(lib, err, KC_EXIT_GPU, r, what);
	char st = kc_pid_state(pid);
	if (st && st != 'Z' && st != 'X')
		return result_error(lib, err, KC_EXIT_NOENT, r, what);
	return kc_error_set(err, KC_EXIT_NOENT, r, "%s: the process is gone (CUDA_ERROR_OPERATING_SYSTEM, %d)", what,
			    r);
}

static int cuda_driver_version(void *h, int *version, struct kc_error **err)
{
	const struct cuda_lib *lib = h;
	*version = lib->version;
	return 0;
}

static int cuda_get_state(void *h, pid_t pid, enum kc_cuda_state *state, struct kc_error **err)
{
	const struct cuda_lib *lib = h;
	kc_cu_process_state s = 0;
	kc_cu_result r = lib->get_state((int)pid, &s);
	if (r == KC_CUDA_ERROR_NOT_INITIALIZED) {
		/* the driver's way of saying the process never ran cuInit */
		*state = KC_CUDA_NONE;
		return 0;
	}
	if (r != KC_CUDA_SUCCESS)
		return op_error(lib, err, r, pid, "get state");
	*state = (enum kc_cuda_state)s;
	return 0;
}

static int cuda_get_restore_tid(void *h, pid_t pid, int *tid, struct kc_error **err)
{
	const struct cuda_lib *lib = h;
	int t = 0;
	kc_cu_result r = lib->get_restore_tid((int)pid, &t);
	if (r != KC_CUDA_SUCCESS)
		return op_error(lib, err, r, pid, "get restore tid");
	*tid = t;
	return 0;
}

static int cuda_lock(void *h, pid_t pid, unsigned timeout_ms, struct kc_error **err)
{
	const struct cuda_lib *lib = h;
	struct kc_cu_lock_args args = {.timeout_ms = timeout_ms};
	kc_cu_result r = lib->lock((int)pid, &args);
	if (r == KC_CUDA_ERROR_NOT_READY)
		return result_error(lib, err, KC_EXIT_BUSY, r, "lock");
	if (r != KC_CUDA_SUCCESS)
		return op_error(lib, err, r, pid, "lock");
	return 0;
}

static int cuda_checkpoint(void *h, pid_t pid, struct kc_error **err)
{
	const struct cuda_lib *lib = h;
	kc_cu_result r = lib->checkpoint((int)pid, NULL);
	if (r != KC_CUDA_SUCCESS)
		return op_error(lib, err, r, pid, "checkpoint");
	return 0;
}

static int cuda_restore(void *h, pid_t pid, const struct kc_gpu_pair *pairs, size_t n_pairs,
			struct kc_error **err)
{
	const struct cuda_lib *lib = h;
	kc_cu_result r;

	if (n_pairs == 0) {
		/* args are optional; NULL suits every layout */
		r = lib->restore((int)pid, NULL);
	} else {
		if (lib->version < KC_CU_VERSION_GPU_PAIRS)
			return kc_error_set(err, KC_EXIT_GPU, KC_CUDA_ERROR_NOT_SUPPORTED,
					    "restore: moving a process to other GPUs needs CUDA 13.0 (driver 580) or newer, the driver is %d.%d",
					    lib->version / 1000, lib->version % 1000 / 10);
		if (n_pairs > UINT_MAX)
			return kc_error_set(err, KC_EXIT_GPU, KC_CUDA_ERROR_INVALID_VALUE,
					    "restore: too many GPU pairs");
		_cleanup_free_ struct kc_cu_gpu_pair *cu = kc_xcalloc(n_pairs, sizeof(*cu));
		for (size_t i = 0; i < n_pairs; i++) {
			memcpy(cu[i].old_uuid.bytes, pairs[i].old_uuid.bytes, 16);
			memcpy(cu[i].new_uuid.bytes, pairs[i].new_uuid.bytes, 16);
		}
		if (lib->version >= KC_CU_VERSION_RESTORE_V2) {
			struct kc_cu_restore_args_v2 args = {.gpu_pairs = cu,
							     .gpu_pairs_count = (unsigned)n_pairs};
			r = lib->restore((int)pid, &args);
		} else {
			struct kc_cu_restore_args_v1 args = {.gpu_pairs = cu,
							     .gpu_pairs_count = (unsigned)n_pairs};
			r = lib->restore((int)pid, &args);
		}
	}
	if (r != KC_CUDA_SUCCESS)
		return op_error(lib, err, r, pid, "restore");
	return 0;
}

static int cuda_unlock(void *h, pid_t pid, struct kc_error **err)
{
	const struct cuda_lib *lib = h;
	kc_cu_result r = lib->unlock((int)pid, NULL);
	if (r != KC_CUDA_SUCCESS)
		return op_error(lib, err, r, pid, "unlock");
	return 0;
}

static int cuda_list_gpus(void *h, struct kc_uuid **uuids, size_t *n, struct kc_error **err)
{
	struct cuda_lib *lib = h;
	if (!lib->device_get_count || !lib->device_get || !lib->device_get_uuid)
		return kc_error_set(err, KC_EXIT_GPU, KC_CUDA_ERROR_NOT_SUPPORTED, "driver cannot list its GPUs");
	int count = 0;
	kc_cu_result r = lib->device_get_count(&count);
	if (r != KC_CUDA_SUCCESS)
		return result_error(lib, err, KC_EXIT_GPU, r, "cuDeviceGetCount");
	_cleanup_free_ struct kc_uuid *v = kc_xcalloc((size_t)(count > 0 ? count : 1), sizeof(*v));
	for (int i = 0; i < count; i++) {
		int dev = 0;
		r = lib->device_get(&dev, i);
		if (r == KC_CUDA_SUCCESS)
			r = lib->device_get_uuid(&v[i], dev);
		if (r != KC_CUDA_SUCCESS)
			return result_error(lib, err, KC_EXIT_GPU, r, "cuDeviceGetUuid");
	}
	*uuids = steal_ptr(v);
	*n = (size_t)count;
	return 0;
}

static void cuda_lib_close(void *h)
{
	/*
	 * No dlclose(): after cuInit the real driver runs threads inside its
	 * own code, and unloading it under them crashes the process.
	 */
	free(h);
}

static const struct kc_cuda_ops cuda_dl_ops = {
	.driver_version = cuda_driver_version,
	.get_state = cuda_get_state,
	.get_restore_tid = cuda_get_restore_tid,
	.lock = cuda_lock,
	.checkpoint = cuda_checkpoint,
	.restore = cuda_restore,
	.unlock = cuda_unlock,
	.list_gpus = cuda_list_gpus,
	.close = cuda_lib_close,
};

int kc_cuda_open(const char *path, struct kc_cuda *out, struct kc_error **err)
{
	const char *name;
	void *dl = kc_dl_open(path, "KCHECKPOINT_LIBCUDA", "libcuda.so.1", &name, err);
	if (!dl)
		return -1;

	_cleanup_free_ struct cuda_lib *lib = kc_xcalloc(1, sizeof(*lib));
	lib->dl = dl;
	int missing = kc_dl_resolve(dl, cuda_syms, KC_ARRAY_SIZE(cuda_syms), lib);
	if (missing >= 0) {
		dlclose(dl);
		if (missing == 0)
			return kc_error_set(err, KC_EXIT_GPU, 0, "'%s' is not a CUDA driver: it lacks '%s'", name,
					    cuda_syms[missing].name);
		return kc_error_set(err, KC_EXIT_GPU, 0, "driver '%s' lacks '%s': driver 570 or newer is needed",
				    name, cuda_syms[missing].name);
	}

	kc_cu_result r = lib->init(0);
	if (r != KC_CUDA_SUCCESS) {
		/* dlclose() is still safe: a failed cuInit leaves no threads */
		result_error(lib, err, KC_EXIT_GPU, r, "cuInit");
		kc_error_prefix(err, "driver '%s'", name);
		dlclose(dl);
		return -1;
	}
	r = lib->driver_get_version(&lib->version);
	if (r != KC_CUDA_SUCCESS)
		return result_error(lib, err, KC_EXIT_GPU, r, "cuDriverGetVersion");

	Dl_info info;
	void *init_sym = NULL;
	memcpy(&init_sym, (char *)lib + offsetof(struct cuda_lib, init), sizeof(init_sym));
	if (dladdr(init_sym, &info) && info.dli_fname && *info.dli_fname)
		out->lib_path = kc_xstrdup(info.dli_fname);
	else
		out->lib_path = kc_xstrdup(name);
	out->ops = &cuda_dl_ops;
	out->h = steal_ptr(lib);
	return 0;
}

void kc_cuda_close(struct kc_cuda *c)
{
	if (!c)
		return;
	if (c->ops && c->ops->close)
		c->ops->close(c->h);
	free(c->lib_path);
	c->ops = NULL;
	c->h = NULL;
	c->lib_path = NULL;
}
