/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Substitute CUDA / NVML / CRIU backends for the orchestrator's unit tests.
 *
 * The CUDA mock is the driver's state machine per pid (RUNNING -> LOCKED ->
 * CHECKPOINTED -> LOCKED -> RUNNING; anything else is ILLEGAL_STATE, 401),
 * the CRIU mock only records.  Both append every state-changing call to one
 * ordered log ("lock 123", "checkpoint 123", "criu-dump", ...), and any call
 * can be made to fail, to raise a signal or to sleep.  Everything is behind
 * one mutex: kc_parallel calls the CUDA ops from several threads.
 *
 * tests/CMakeLists.txt builds each test_*.c alone, so a test that needs the
 * mock includes "mock_backends.c" once.
 */
#ifndef KC_TEST_MOCK_BACKENDS_H
#define KC_TEST_MOCK_BACKENDS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "kc/orchestrator.h"

enum kc_mock_op {
	KC_MOCK_LOCK,
	KC_MOCK_CHECKPOINT,
	KC_MOCK_RESTORE,
	KC_MOCK_UNLOCK,
	KC_MOCK_GET_STATE,
	KC_MOCK_GET_RESTORE_TID,
	KC_MOCK_DRIVER_VERSION,
	KC_MOCK_CRIU_VERSION,
	KC_MOCK_CRIU_CHECK,
	KC_MOCK_CRIU_DUMP,
	KC_MOCK_CRIU_RESTORE,
	KC_MOCK_CRIU_FINISH,
	KC_MOCK_CRIU_RESUME,
	KC_MOCK_CRIU_DISCARD,
	KC_MOCK_N_OPS,
};

/* What the CRIU mock was called with, last call of each kind. */
struct kc_mock_criu_calls {
	pid_t dump_pid;
	char dump_dir[256];
	struct kc_criu_opts dump_opts;
	struct kc_criu_opts restore_opts;
	char restore_dir[256];
	pid_t finish_pids[64];
	size_t n_finish;
	pid_t resume_pids[64];
	size_t n_resume;
	pid_t discard_root;
};

/* What get_restore_tid answers for a CUDA pid. */
#define KC_MOCK_RESTORE_TID(pid) ((int)(pid) + 7)

/* Forgets states, log, rules and records. */
void kc_mock_reset(void);
/* Points b at the mocks; cuda / nvml may be left out (NULL). */
void kc_mock_backends(struct kc_backends *b, bool cuda, bool nvml);

/* Marks pid a CUDA process in state st (KC_CUDA_NONE: not CUDA). */
void kc_mock_set_state(pid_t pid, enum kc_cuda_state st);
enum kc_cuda_state kc_mock_state(pid_t pid);
/* Calls that hit an illegal transition or a non-CUDA pid. */
unsigned kc_mock_illegal(void);

/*
 * The nth call (1-based; 0: every call) of op, counting only calls for
 * pid (0: any pid), fails with cause: a CUresult for the CUDA ops (exit
 * code as the real backend gives it), anything for the CRIU ops
 * (KC_EXIT_CRIU).  A failed call changes no state.
 */
void kc_mock_fail(enum kc_mock_op op, unsigned nth, pid_t pid, int cause);
/* The nth call of op (pid as above) raises sig via
 * kc_signals_raise_for_test and then succeeds. */
void kc_mock_raise(enum kc_mock_op op, unsigned nth, pid_t pid, int sig);
/* Every call of op sleeps ms before it acts. */
void kc_mock_sleep(enum kc_mock_op op, unsigned ms);
unsigned kc_mock_calls(enum kc_mock_op op);
/* Most calls of op that were in progress at one time. */
unsigned kc_mock_max_in_flight(enum kc_mock_op op);
unsigned kc_mock_last_timeout_ms(void);
/* n_pairs and first pair of the last CUDA restore call. */
size_t kc_mock_last_pairs(struct kc_gpu_pair *first);

void kc_mock_set_driver_version(int version);
/* Root pid the CRIU restore mock reports. */
void kc_mock_set_restore_root(pid_t root);
/* the GPUs list_gpus reports (none by default) */
void kc_mock_set_gpus(const struct kc_uuid *uuids, size_t n);
/* A file the CRIU dump mock copies into the images dir as stats-dump. */
void kc_mock_set_dump_stats(const char *path);
/* finish SIGKILLs and reaps the pids, as the real default does. */
void kc_mock_set_finish_kills(bool on);
/* One NVML compute process entry. */
void kc_mock_add_gpu_proc(pid_t pid, const char *uuid, uint64_t used_bytes);
const struct kc_mock_criu_calls *kc_mock_criu_calls(void);

/* The log. */
void kc_mock_log_add(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
size_t kc_mock_log_len(void);
void kc_mock_log_reset(void);
const char *kc_mock_log_at(size_t i);
/* Entries starting with prefix ("lock ", "criu-"). */
size_t kc_mock_log_count(const char *prefix);
/* The whole log, "; "-joined, for failure messages; caller frees. */
char *kc_mock_log_string(void);

/*
 * Fails the test unless the log is exactly the given groups, in order:
 * groups are separated by '|', entries within one by ','; within a group
 * any order (the calls of one stage run in parallel).  printf-style, so
 * pids go in with %d: "lock %d,lock %d|checkpoint %d|criu-dump".
 */
#define kc_mock_assert_log(...) kc_mock_assert_log_at(__FILE__, __LINE__, __VA_ARGS__)
void kc_mock_assert_log_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define kc_mock_assert_no_log() kc_mock_assert_log("%s", "")

/* SIGKILL the pids and reap those that are our children. */
void kc_mock_kill_and_reap(const pid_t *pids, size_t n);

#endif
