/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kc_restore against the mock backends: the order of the steps, the GPU map checked before CRIU,
 * the rollback at every point a restore can fail.
 * Shared fixture: orch_fixture.c; mocks: mock_backends.c (a library).
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/error.h"
#include "kc/manifest.h"
#include "kc/orchestrator.h"
#include "kc/proctree.h"
#include "kc/report.h"
#include "kc/signals.h"
#include "kc/util.h"
#include "orch_fixture.h"


static void test_restore_order(void **state)
{
	struct fx *f = *state;
	pid_t p[2], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING, KC_CUDA_RUNNING}, 2, p);
	struct kc_gpu_pair pair;
	memset(&pair, 0, sizeof(pair));
	pair.old_uuid.bytes[0] = 0xaa;
	pair.new_uuid.bytes[0] = 0xbb;

	expect_ok(f, restore(f, &pair, 1, &root));
	kc_mock_assert_log("criu-restore|restore %d,restore %d|unlock %d,unlock %d", p[0], p[1], p[0], p[1]);
	expect_state(p[0], KC_CUDA_RUNNING);
	expect_state(p[1], KC_CUDA_RUNNING);
	assert_int_equal(root, f->pids[0]);
	assert_int_equal(f->r.root_pid, f->pids[0]);
	const struct kc_mock_criu_calls *c = kc_mock_criu_calls();
	assert_string_equal(c->restore_dir, f->dir);
	/* CRIU's flags come from the manifest, not the caller */
	assert_true(c->restore_opts.tcp_established);
	assert_true(c->restore_opts.file_locks);
	assert_false(c->restore_opts.shell_job);
	assert_false(c->restore_opts.leave_stopped);
	assert_true(c->restore_opts.verbose);
	struct kc_gpu_pair got;
	assert_int_equal(kc_mock_last_pairs(&got), 1);
	assert_int_equal(got.old_uuid.bytes[0], 0xaa);
	assert_int_equal(got.new_uuid.bytes[0], 0xbb);
	expect_stages(&f->r, (const char *[]){"criu-restore", "gpu-restore", "gpu-unlock", NULL});
}

static int log_gpu_ready(void *arg, struct kc_error **err)
{
	(void)arg;
	(void)err;
	kc_mock_log_add("gpu-ready");
	return 0;
}

static int restore_ready(struct fx *f, const struct kc_gpu_pair *pairs, size_t n_pairs, bool map_checked)
{
	struct kc_restore_opts o = {.images_dir = f->dir, .pairs = pairs, .n_pairs = n_pairs, .pid_wait_ms = 30};
	o.gpu_ready = log_gpu_ready;
	o.map_checked = map_checked;
	kc_report_init(&f->r, "restore");
	pid_t root = 0;
	return kc_restore(&o, &f->b, &f->m, &f->r, &root, &f->err);
}

/* A --gpu-map naming a GPU this node lacks is refused before CRIU runs;
 * without a map, or with one the caller checked, the driver is waited for
 * only after CRIU (overlap). */
static void test_restore_checks_gpu_map_before_criu(void **state)
{
	struct fx *f = *state;
	pid_t p[1];
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING}, 1, p);
	struct kc_uuid here[2] = {{.bytes = {0x01}}, {.bytes = {0x02}}};
	kc_mock_set_gpus(here, 2);
	struct kc_gpu_pair pair = {.old_uuid = {.bytes = {0x01}}, .new_uuid = {.bytes = {0x03}}};
	expect_error(f, restore_ready(f, &pair, 1, false), KC_EXIT_USAGE);
	expect_msg(f, "is not on this node");
	kc_mock_assert_log("gpu-ready");
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_RESTORE), 0);
	expect_state(p[0], KC_CUDA_CHECKPOINTED);

	kc_error_free(f->err);
	f->err = NULL;
	kc_mock_log_reset();
	pair.new_uuid.bytes[0] = 0x02;
	expect_ok(f, restore_ready(f, &pair, 1, false));
	kc_mock_assert_log("gpu-ready|criu-restore|restore %d|unlock %d", p[0], p[0]);
	assert_int_equal(kc_mock_last_pairs(NULL), 2); /* completed: 01=02, 02=01 */

	kc_mock_set_state(p[0], KC_CUDA_CHECKPOINTED);
	kc_mock_log_reset();
	expect_ok(f, restore_ready(f, NULL, 0, false));
	kc_mock_assert_log("criu-restore|gpu-ready|restore %d|unlock %d", p[0], p[0]);

	/* checked by the caller already (the kernel module's list): overlap kept */
	kc_mock_set_state(p[0], KC_CUDA_CHECKPOINTED);
	kc_mock_log_reset();
	expect_ok(f, restore_ready(f, &pair, 1, true));
	kc_mock_assert_log("criu-restore|gpu-ready|restore %d|unlock %d", p[0], p[0]);
	assert_int_equal(kc_mock_last_pairs(NULL), 2);
}

/* No driver and none loading: refused before CRIU restores anything. */
static void test_restore_without_driver(void **state)
{
	struct fx *f = *state;
	pid_t p[1], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING}, 1, p);
	kc_mock_backends(&f->b, false, false);
	expect_error(f, restore(f, NULL, 0, &root), KC_EXIT_GPU);
	expect_msg(f, "the image holds 1 CUDA process(es) but no CUDA driver is loaded");
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_RESTORE), 0);
	expect_state(p[0], KC_CUDA_CHECKPOINTED);
}

static void test_restore_gpu_fails(void **state)
{
	struct fx *f = *state;
	pid_t p[2], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING, KC_CUDA_RUNNING}, 2, p);
	kc_mock_fail(KC_MOCK_RESTORE, 1, p[1], KC_CUDA_ERROR_UNKNOWN);
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_GPU);
	expect_msg(f, "GPU restore");
	kc_mock_assert_log("criu-restore|restore %d,restore %d failed|criu-discard", p[0], p[1]);
	assert_int_equal(kc_mock_criu_calls()->discard_root, f->pids[0]);
	assert_int_equal(root, 0);
}

static void test_restore_unlock_fails(void **state)
{
	struct fx *f = *state;
	pid_t p[2], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING, KC_CUDA_RUNNING}, 2, p);
	kc_mock_fail(KC_MOCK_UNLOCK, 1, p[0], KC_CUDA_ERROR_UNKNOWN);
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_GPU);
	expect_msg(f, "GPU unlock");
	kc_mock_assert_log("criu-restore|restore %d,restore %d|unlock %d failed,unlock %d|criu-discard", p[0], p[1],
			   p[0], p[1]);
	assert_int_equal(kc_mock_criu_calls()->discard_root, f->pids[0]);
}

static void test_restore_criu_fails(void **state)
{
	struct fx *f = *state;
	pid_t p[1], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING}, 1, p);
	kc_mock_fail(KC_MOCK_CRIU_RESTORE, 1, 0, 1);
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_CRIU);
	kc_mock_assert_log("criu-restore failed");
	expect_state(p[0], KC_CUDA_CHECKPOINTED);
}

static void test_restore_interrupted(void **state)
{
	struct fx *f = *state;
	pid_t p[1], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING}, 1, p);
	kc_mock_raise(KC_MOCK_CRIU_RESTORE, 1, 0, SIGINT);
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_INTERRUPTED);
	kc_mock_assert_log("criu-restore|criu-discard");
}

static void test_restore_interrupted_in_gpu_restore(void **state)
{
	struct fx *f = *state;
	pid_t p[2], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING, KC_CUDA_RUNNING}, 2, p);
	kc_mock_raise(KC_MOCK_RESTORE, 1, 0, SIGTERM);
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_INTERRUPTED);
	expect_msg(f, "GPU restore: interrupted by TERM");
	kc_mock_assert_log("criu-restore|restore %d,restore %d|criu-discard", p[0], p[1]);
	assert_int_equal(root, 0);
}

static void test_restore_discard_fails(void **state)
{
	struct fx *f = *state;
	pid_t p[1], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING}, 1, p);
	kc_mock_fail(KC_MOCK_RESTORE, 1, 0, KC_CUDA_ERROR_UNKNOWN);
	kc_mock_fail(KC_MOCK_CRIU_DISCARD, 1, 0, 9);
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_ROLLBACK);
	expect_msg(f, "GPU restore");
	expect_msg(f, "run 'kcheckpoint recover'");
	kc_mock_assert_log("criu-restore|restore %d failed|criu-discard failed", p[0]);
}

/* Each process goes back to the state it had before the dump. */
static void test_restore_keeps_prior_states(void **state)
{
	struct fx *f = *state;
	pid_t p[4], root = 0;
	fake_image(f,
		   (enum kc_cuda_state[]){KC_CUDA_LOCKED, KC_CUDA_CHECKPOINTED, KC_CUDA_RUNNING, KC_CUDA_NONE}, 4,
		   p);
	expect_ok(f, restore(f, NULL, 0, &root));
	kc_mock_assert_log("criu-restore|restore %d,restore %d|unlock %d", p[0], p[2], p[2]);
	expect_state(p[0], KC_CUDA_LOCKED);
	expect_state(p[1], KC_CUDA_CHECKPOINTED);
	expect_state(p[2], KC_CUDA_RUNNING);
	assert_int_equal(kc_mock_illegal(), 0);
}

static void test_restore_needs_driver(void **state)
{
	struct fx *f = *state;
	pid_t p[1], root = 0;
	fake_image(f, (enum kc_cuda_state[]){KC_CUDA_RUNNING}, 1, p);
	kc_mock_backends(&f->b, false, false);
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_GPU);
	expect_msg(f, "no CUDA driver");
	kc_mock_assert_no_log();
}

static void test_restore_pid_taken(void **state)
{
	struct fx *f = *state;
	spawn(f, 0, false);
	struct kc_manifest_proc *p = kc_manifest_add_proc(&f->m);
	p->pid = f->pids[0];
	f->m.root_pid = p->pid;
	pid_t root = 0;
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_BUSY);
	expect_msg(f, "still taken");
	kc_mock_assert_no_log();
}

static void test_restore_not_an_image(void **state)
{
	struct fx *f = *state;
	pid_t root = 0;
	int rc = restore(f, NULL, 0, &root);
	expect_error(f, rc, KC_EXIT_IMAGE);
	expect_msg(f, "is not a kcheckpoint image");
	kc_mock_assert_no_log();
}

/* dump (the tree ends) then restore from what the dump wrote. */
static void test_dump_then_restore(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	kc_mock_set_state(a, KC_CUDA_RUNNING);
	kc_mock_set_state(b, KC_CUDA_CHECKPOINTED);
	kc_mock_set_finish_kills(true);
	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	assert_false(kc_pid_exists(a) || kc_pid_exists(b));
	f->n = 0; /* reaped: not ours to kill any more */

	kc_manifest_free(&f->m); /* restore reads it from the dir */
	spawn(f, 0, false); /* what the mock CRIU "restores": a live root */
	kc_mock_set_restore_root(f->pids[0]);
	pid_t root = 0;
	expect_ok(f, restore(f, NULL, 0, &root));
	kc_mock_assert_log("lock %d|checkpoint %d|criu-dump|criu-finish|criu-restore|restore %d|unlock %d", a, a, a, a);
	assert_int_equal(f->m.n_procs, 2);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_CHECKPOINTED);
	assert_int_equal(root, f->pids[0]);
}

/* ---- state and recover ---- */


int main(void)
{
	/* grandchildren of a killed root come back to us to be reaped */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	const struct CMUnitTest tests[] = {
		T(test_restore_order),
		T(test_restore_checks_gpu_map_before_criu),
		T(test_restore_without_driver),
		T(test_restore_gpu_fails),
		T(test_restore_unlock_fails),
		T(test_restore_criu_fails),
		T(test_restore_interrupted),
		T(test_restore_interrupted_in_gpu_restore),
		T(test_restore_discard_fails),
		T(test_restore_keeps_prior_states),
		T(test_restore_needs_driver),
		T(test_restore_pid_taken),
		T(test_restore_not_an_image),
		T(test_dump_then_restore),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

