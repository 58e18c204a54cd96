/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kc_tree_state and kc_recover against the mock backends.
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


static void test_tree_state(void **state)
{
	struct fx *f = *state;
	spawn(f, 2, false);
	kc_mock_set_state(f->pids[1], KC_CUDA_LOCKED);
	kc_mock_set_state(f->pids[2], KC_CUDA_CHECKPOINTED);
	_cleanup_free_ struct kc_proc_state *st = NULL;
	size_t n = 0;
	expect_ok(f, kc_tree_state(f->pids[0], &f->b, &st, &n, &f->err));
	assert_int_equal(n, 3);
	assert_int_equal(st[0].pid, f->pids[0]);
	assert_int_equal(st[0].state, KC_CUDA_NONE);
	assert_int_equal(st[0].restore_tid, 0);
	for (size_t i = 1; i < 3; i++) {
		const struct kc_proc_state *s = NULL;
		for (size_t j = 0; j < n; j++)
			if (st[j].pid == f->pids[i])
				s = &st[j];
		assert_non_null(s);
		assert_int_equal(s->state, kc_mock_state(f->pids[i]));
		assert_int_equal(s->restore_tid, KC_MOCK_RESTORE_TID(f->pids[i]));
		assert_true(s->comm[0] && strcmp(s->comm, "?"));
	}
	kc_mock_assert_no_log(); /* looking changes nothing */
}

static void test_recover(void **state)
{
	struct fx *f = *state;
	spawn(f, 3, false);
	pid_t r = f->pids[0], k1 = f->pids[1], k2 = f->pids[2];
	kc_mock_set_state(r, KC_CUDA_CHECKPOINTED);
	kc_mock_set_state(k1, KC_CUDA_LOCKED);
	kc_mock_set_state(k2, KC_CUDA_RUNNING);
	/* a dump that died left the tree stopped */
	assert_int_equal(kill(r, SIGSTOP), 0);
	wait_state(r, 'T', true);

	_cleanup_free_ struct kc_proc_state *st = NULL;
	size_t n = 0;
	expect_ok(f, kc_recover(r, &f->b, &st, &n, &f->err));
	kc_mock_assert_log("restore %d|unlock %d,unlock %d", r, r, k1);
	for (size_t i = 0; i < 3; i++)
		expect_state(f->pids[i], KC_CUDA_RUNNING);
	assert_int_equal(n, 4);
	for (size_t i = 0; i < n; i++)
		assert_true(st[i].state == KC_CUDA_RUNNING || st[i].state == KC_CUDA_NONE);
	/* the driver's restore thread needs it running */
	wait_state(r, 'T', false);
}

static void test_recover_errors(void **state)
{
	struct fx *f = *state;
	spawn(f, 0, false);
	kc_mock_set_state(f->pids[0], KC_CUDA_CHECKPOINTED);
	struct kc_backends none;
	kc_mock_backends(&none, false, false);
	_cleanup_free_ struct kc_proc_state *st = NULL;
	size_t n = 0;
	/* without a driver (a CPU-only tree a killed dump left stopped) there
	 * is still the stop to undo */
	kill(f->pids[0], SIGSTOP);
	for (int i = 0; i < 500 && kc_pid_state(f->pids[0]) != 'T'; i++)
		usleep(2000);
	assert_int_equal(kc_pid_state(f->pids[0]), 'T');
	int rc = kc_recover(f->pids[0], &none, &st, &n, &f->err);
	expect_ok(f, rc);
	assert_int_not_equal(kc_pid_state(f->pids[0]), 'T');
	free(steal_ptr(st));

	kc_mock_fail(KC_MOCK_RESTORE, 1, 0, KC_CUDA_ERROR_UNKNOWN);
	rc = kc_recover(f->pids[0], &f->b, &st, &n, &f->err);
	expect_error(f, rc, KC_EXIT_GPU);
	expect_msg(f, "GPU restore");
	expect_state(f->pids[0], KC_CUDA_CHECKPOINTED);
}


int main(void)
{
	/* grandchildren of a killed root come back to us to be reaped */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	const struct CMUnitTest tests[] = {
		T(test_tree_state),
		T(test_recover),
		T(test_recover_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

