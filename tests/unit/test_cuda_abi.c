/* SPDX-License-Identifier: Apache-2.0 */
/*
 * src/backend/cuda_abi.h against the toolkit's cuda.h: same sizes, same
 * field offsets.  Built only where CMake found cuda.h (tests/CMakeLists.txt),
 * so a host without a toolkit runs no test rather than an empty one.  The
 * static assertions fail the build; the cmocka checks repeat them so the
 * figures show in the test output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <cuda.h>

#include "../../src/backend/cuda_abi.h"
#include "kc/cuda.h"
#include "kc/error.h"

#define SAME_SIZE(ours, theirs) _Static_assert(sizeof(ours) == sizeof(theirs), #ours " size")
#define SAME_OFFSET(ours, f, theirs, g) \
	_Static_assert(offsetof(ours, f) == offsetof(theirs, g), #ours "." #f " offset")

#if CUDA_VERSION >= 13030
typedef struct kc_cu_restore_args_v2 header_restore_args;
#else
typedef struct kc_cu_restore_args_v1 header_restore_args;
#endif

SAME_SIZE(kc_cu_result, CUresult);
SAME_SIZE(kc_cu_process_state, CUprocessState);
SAME_SIZE(struct kc_cu_uuid, CUuuid);
SAME_SIZE(struct kc_uuid, CUuuid);

SAME_SIZE(struct kc_cu_lock_args, CUcheckpointLockArgs);
SAME_OFFSET(struct kc_cu_lock_args, timeout_ms, CUcheckpointLockArgs, timeoutMs);
SAME_OFFSET(struct kc_cu_lock_args, reserved0, CUcheckpointLockArgs, reserved0);
SAME_OFFSET(struct kc_cu_lock_args, reserved1, CUcheckpointLockArgs, reserved1);

SAME_SIZE(struct kc_cu_checkpoint_args, CUcheckpointCheckpointArgs);
SAME_SIZE(struct kc_cu_unlock_args, CUcheckpointUnlockArgs);

SAME_SIZE(struct kc_cu_gpu_pair, CUcheckpointGpuPair);
SAME_OFFSET(struct kc_cu_gpu_pair, old_uuid, CUcheckpointGpuPair, oldUuid);
SAME_OFFSET(struct kc_cu_gpu_pair, new_uuid, CUcheckpointGpuPair, newUuid);

SAME_SIZE(header_restore_args, CUcheckpointRestoreArgs);
SAME_OFFSET(header_restore_args, gpu_pairs, CUcheckpointRestoreArgs, gpuPairs);
SAME_OFFSET(header_restore_args, gpu_pairs_count, CUcheckpointRestoreArgs, gpuPairsCount);
SAME_OFFSET(header_restore_args, reserved, CUcheckpointRestoreArgs, reserved);
SAME_SIZE(((header_restore_args *)0)->reserved, ((CUcheckpointRestoreArgs *)0)->reserved);
SAME_SIZE(((struct kc_cu_lock_args *)0)->reserved1, ((CUcheckpointLockArgs *)0)->reserved1);
SAME_SIZE(((struct kc_cu_checkpoint_args *)0)->reserved, ((CUcheckpointCheckpointArgs *)0)->reserved);
SAME_SIZE(((struct kc_cu_unlock_args *)0)->reserved, ((CUcheckpointUnlockArgs *)0)->reserved);
#if CUDA_VERSION < 13030
SAME_OFFSET(struct kc_cu_restore_args_v1, reserved1, CUcheckpointRestoreArgs, reserved1);
#endif

/* The layouts the tool picks between must agree where it writes. */
SAME_SIZE(struct kc_cu_restore_args_v0, struct kc_cu_restore_args_v1);
SAME_SIZE(struct kc_cu_restore_args_v1, struct kc_cu_restore_args_v2);
SAME_OFFSET(struct kc_cu_restore_args_v1, gpu_pairs, struct kc_cu_restore_args_v2, gpu_pairs);
SAME_OFFSET(struct kc_cu_restore_args_v1, gpu_pairs_count, struct kc_cu_restore_args_v2,
	    gpu_pairs_count);

static void test_sizes(void **state)
{
	(void)state;
	assert_int_equal(sizeof(struct kc_cu_lock_args), sizeof(CUcheckpointLockArgs));
	assert_int_equal(sizeof(struct kc_cu_checkpoint_args), sizeof(CUcheckpointCheckpointArgs));
	assert_int_equal(sizeof(struct kc_cu_unlock_args), sizeof(CUcheckpointUnlockArgs));
	assert_int_equal(sizeof(struct kc_cu_gpu_pair), sizeof(CUcheckpointGpuPair));
	assert_int_equal(sizeof(header_restore_args), sizeof(CUcheckpointRestoreArgs));
	assert_int_equal(sizeof(CUcheckpointRestoreArgs), 64);
	assert_int_equal(sizeof(CUcheckpointLockArgs), 64);
}

static void test_offsets(void **state)
{
	(void)state;
	assert_int_equal(offsetof(header_restore_args, gpu_pairs_count),
			 offsetof(CUcheckpointRestoreArgs, gpuPairsCount));
	assert_int_equal(offsetof(header_restore_args, reserved), offsetof(CUcheckpointRestoreArgs, reserved));
	assert_int_equal(sizeof(((header_restore_args *)0)->reserved),
			 sizeof(((CUcheckpointRestoreArgs *)0)->reserved));
	assert_int_equal(offsetof(struct kc_cu_lock_args, reserved1), offsetof(CUcheckpointLockArgs, reserved1));
}

/* The public enums carry the driver's numbers. */
static void test_enum_values(void **state)
{
	(void)state;
	assert_int_equal(KC_CUDA_RUNNING, CU_PROCESS_STATE_RUNNING);
	assert_int_equal(KC_CUDA_LOCKED, CU_PROCESS_STATE_LOCKED);
	assert_int_equal(KC_CUDA_CHECKPOINTED, CU_PROCESS_STATE_CHECKPOINTED);
	assert_int_equal(KC_CUDA_FAILED, CU_PROCESS_STATE_FAILED);
	assert_int_equal(KC_CUDA_SUCCESS, CUDA_SUCCESS);
	assert_int_equal(KC_CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_INVALID_VALUE);
	assert_int_equal(KC_CUDA_ERROR_NOT_INITIALIZED, CUDA_ERROR_NOT_INITIALIZED);
	assert_int_equal(KC_CUDA_ERROR_OPERATING_SYSTEM, CUDA_ERROR_OPERATING_SYSTEM);
	assert_int_equal(KC_CUDA_ERROR_NOT_FOUND, CUDA_ERROR_NOT_FOUND);
	assert_int_equal(KC_CUDA_ERROR_ILLEGAL_STATE, CUDA_ERROR_ILLEGAL_STATE);
	assert_int_equal(KC_CUDA_ERROR_NOT_READY, CUDA_ERROR_NOT_READY);
	assert_int_equal(KC_CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_NOT_SUPPORTED);
	assert_int_equal(KC_CUDA_ERROR_UNKNOWN, CUDA_ERROR_UNKNOWN);

	char buf[32];
	assert_string_equal(kc_cuda_result_name(CUDA_ERROR_STUB_LIBRARY, buf), "CUDA_ERROR_STUB_LIBRARY");
	assert_string_equal(kc_cuda_result_name(CUDA_ERROR_KEY_ROTATION, buf), "CUDA_ERROR_KEY_ROTATION");
}

#ifdef KC_CUDA_STUB_LIB
/*
 * NVIDIA's link stub exports the real symbol names and fails cuInit with
 * CUDA_ERROR_STUB_LIBRARY: getting that far proves every name resolves.
 */
static void test_toolkit_stub_symbols(void **state)
{
	(void)state;
	struct kc_cuda c = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(kc_cuda_open(KC_CUDA_STUB_LIB, &c, &err), -1);
	assert_non_null(err);
	assert_int_equal(err->cause, CUDA_ERROR_STUB_LIBRARY);
	assert_int_equal(err->exit_code, KC_EXIT_GPU);
	assert_string_equal(err->msg, "driver '" KC_CUDA_STUB_LIB "': cuInit: CUDA_ERROR_STUB_LIBRARY (34)");
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_offsets),
		cmocka_unit_test(test_enum_values),
#ifdef KC_CUDA_STUB_LIB
		cmocka_unit_test(test_toolkit_stub_symbols),
#endif
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
