/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CUDA_ABI_H
#define KC_CUDA_ABI_H

/*
 * The few CUDA driver types the checkpoint API needs, declared here so the
 * tool never needs cuda.h to build and never links libcuda.  Names differ
 * from the driver's so tests/unit/test_cuda_abi.c can include both and
 * compare sizes and offsets.
 *
 * Restore arguments have had three spellings, all 64 bytes:
 *   12.8/12.9 (drivers 570/575): cuuint64_t reserved[8], no GPU remapping
 *   13.0-13.2 (driver 580..):    gpuPairs, gpuPairsCount, char reserved[44],
 *                                cuuint64_t reserved1
 *   13.3:                        gpuPairs, gpuPairsCount, char reserved[52]
 * Later headers put customStorageInfo_out at offset 16, which stays NULL
 * (zero) for a plain restore, so the 13.3 form fits them as well.
 */

#include <stdint.h>

typedef int kc_cu_result;          /* CUresult */
typedef int kc_cu_process_state;   /* CUprocessState */

struct kc_cu_uuid {
	char bytes[16];
};

struct kc_cu_lock_args {
	unsigned int timeout_ms;
	unsigned int reserved0;
	uint64_t reserved1[7];
};

struct kc_cu_checkpoint_args {
	uint64_t reserved[8];
};

struct kc_cu_gpu_pair {
	struct kc_cu_uuid old_uuid;
	struct kc_cu_uuid new_uuid;
};

/* Drivers older than 13.0 take no GPU pairs. */
struct kc_cu_restore_args_v0 {
	uint64_t reserved[8];
};

/* CUDA 13.0 - 13.2 */
struct kc_cu_restore_args_v1 {
	struct kc_cu_gpu_pair *gpu_pairs;
	unsigned int gpu_pairs_count;
	char reserved[52 - sizeof(struct kc_cu_gpu_pair *)];
	uint64_t reserved1;
};

/* CUDA 13.3 and later */
struct kc_cu_restore_args_v2 {
	struct kc_cu_gpu_pair *gpu_pairs;
	unsigned int gpu_pairs_count;
	char reserved[64 - sizeof(struct kc_cu_gpu_pair *) - sizeof(unsigned int)];
};

struct kc_cu_unlock_args {
	uint64_t reserved[8];
};

/* cuDriverGetVersion() values where the restore-args layout changes. */
#define KC_CU_VERSION_GPU_PAIRS 13000
#define KC_CU_VERSION_RESTORE_V2 13030

#endif
