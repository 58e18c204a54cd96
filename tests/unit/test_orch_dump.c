/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kc_dump (and kc_parallel) against the mock backends: the order of the steps, the rollback at
 * every point a dump can fail, signals at each step, idempotence on processes already locked or
 * checkpointed, targets refused up front.
 * Shared fixture: orch_fixture.c; mocks: mock_backends.c (a library).
 */
#include <errno.h>
#include <pthread.h>
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


/* ---- dump: the happy paths ---- */

static void test_dump_order(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	struct post p = {0};
	struct kc_dump_opts o = dump_opts(f);
	o.post_dump = post_dump;
	o.post_dump_arg = &p;

	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|post-dump|criu-finish", a, b, a, b);
	expect_state(a, KC_CUDA_CHECKPOINTED);
	expect_state(b, KC_CUDA_CHECKPOINTED);
	assert_int_equal(kc_mock_illegal(), 0);
	assert_int_equal(kc_mock_last_timeout_ms(), 4321);

	const struct kc_mock_criu_calls *c = kc_mock_criu_calls();
	assert_int_equal(c->dump_pid, a);
	assert_string_equal(c->dump_dir, f->dir);
	assert_true(c->dump_opts.leave_stopped); /* so that it can still roll back */
	assert_int_equal(c->n_finish, 2);
	assert_true((c->finish_pids[0] == a && c->finish_pids[1] == b));
	assert_int_equal(p.calls, 1);
	assert_true(p.saw_manifest);

	expect_stages(&f->r, (const char *[]){"gpu-lock", "gpu-checkpoint", "criu-dump", "checksum", "manifest", "kill", NULL});
	assert_int_equal(f->r.stages[2].bytes, 8192); /* what the mock CRIU wrote */

	assert_int_equal(f->m.root_pid, a);
	assert_int_equal(f->m.n_procs, 2);
	assert_int_equal(f->m.procs[0].pid, a);
	assert_int_equal(f->m.procs[0].ppid, getpid());
	assert_int_equal(f->m.procs[1].pid, b);
	assert_int_equal(f->m.procs[1].ppid, a);
	for (size_t i = 0; i < 2; i++) {
		assert_true(f->m.procs[i].cuda);
		assert_int_equal(f->m.procs[i].cuda_state, KC_CUDA_RUNNING);
	}
	assert_string_equal(f->m.criu_version, "4.1.1");
	assert_int_equal(f->m.cuda_driver_version, 13000);

	/* what restore will read is what the caller got */
	struct kc_manifest back;
	struct kc_error *e = NULL;
	if (kc_manifest_read(f->dir, &back, &e) < 0)
		fail_msg("%s", e->msg);
	assert_int_equal(back.n_procs, 2);
	assert_int_equal(back.procs[1].pid, b);
	assert_true(back.procs[1].cuda);
	assert_int_equal(back.root_pid, a);
	kc_manifest_free(&back);
}

static void test_dump_leave_running(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	struct post p = {0};
	struct kc_dump_opts o = dump_opts(f);
	o.leave_running = true;
	o.post_dump = post_dump;
	o.post_dump_arg = &p;

	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|post-dump|criu-resume|"
			   "restore %d,restore %d|unlock %d,unlock %d",
			   a, b, a, b, a, b, a, b);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
	assert_int_equal(kc_mock_criu_calls()->n_resume, 2);
	expect_stages(&f->r,
		      (const char *[]){"gpu-lock", "gpu-checkpoint", "criu-dump", "checksum", "manifest", "resume", NULL});
	assert_true(kc_pid_alive(a) && kc_pid_alive(b));
}

static void test_dump_without_cuda(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	kc_mock_backends(&f->b, false, false);
	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("criu-dump|criu-finish");
	assert_int_equal(f->m.n_procs, 2);
	assert_false(f->m.procs[0].cuda);
	assert_int_equal(f->m.cuda_driver_version, 0);
	expect_stages(&f->r, (const char *[]){"criu-dump", "checksum", "manifest", "kill", NULL});
}

/* Parents before children, ppids right, a non-CUDA parent left alone. */
static void test_dump_tree(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, true);
	pid_t root = f->pids[0], kid = 0, grandkid = 0;
	for (size_t i = 1; i < f->n; i++) {
		if (kc_proc_ppid(f->pids[i]) == root)
			kid = f->pids[i];
		else
			grandkid = f->pids[i];
	}
	assert_true(kid && grandkid);
	assert_int_equal(kc_proc_ppid(grandkid), kid);
	kc_mock_set_state(kid, KC_CUDA_RUNNING);
	kc_mock_set_state(grandkid, KC_CUDA_RUNNING);

	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|criu-finish", kid, grandkid, kid,
			   grandkid);
	assert_int_equal(f->m.n_procs, 3);
	assert_int_equal(f->m.procs[0].pid, root);
	assert_int_equal(f->m.procs[1].pid, kid);
	assert_int_equal(f->m.procs[2].pid, grandkid);
	assert_int_equal(f->m.procs[2].ppid, kid);
	assert_false(f->m.procs[0].cuda);
	assert_int_equal(f->m.procs[0].cuda_state, KC_CUDA_NONE);
	assert_true(f->m.procs[1].cuda && f->m.procs[2].cuda);
	assert_int_equal(kc_mock_criu_calls()->n_finish, 3);
}

static void test_dump_gpu_usage(void **state)
{
	struct fx *f = *state;
	spawn(f, 2, false);
	kc_mock_backends(&f->b, true, true);
	pid_t a = f->pids[0], b = f->pids[1], c = f->pids[2];
	kc_mock_set_state(a, KC_CUDA_RUNNING);
	kc_mock_set_state(b, KC_CUDA_RUNNING);
	kc_mock_add_gpu_proc(a, "GPU-aaaaaaaa-0000-0000-0000-000000000000", 1000000000);
	kc_mock_add_gpu_proc(a, "GPU-bbbbbbbb-0000-0000-0000-000000000000", 500000000);
	kc_mock_add_gpu_proc(b, "GPU-aaaaaaaa-0000-0000-0000-000000000000", 250000000);
	/* NVML may list what the driver does not call a CUDA process */
	kc_mock_add_gpu_proc(c, "GPU-aaaaaaaa-0000-0000-0000-000000000000", 7);

	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	assert_string_equal(f->m.driver_version, "580.65.06");
	const struct kc_manifest_proc *pa = mproc(&f->m, a), *pb = mproc(&f->m, b);
	assert_int_equal(pa->vram_bytes, 1500000000);
	assert_int_equal(kc_strv_len(pa->gpus), 2);
	assert_string_equal(pa->gpus[1], "GPU-bbbbbbbb-0000-0000-0000-000000000000");
	assert_int_equal(pb->vram_bytes, 250000000);
	assert_int_equal(f->m.vram_bytes, 1750000000);
	assert_int_equal(f->r.stages[1].bytes, 1750000000); /* gpu-checkpoint */
}

static void test_dump_reads_criu_stats(void **state)
{
	struct fx *f = *state;
	const char *src = getenv("KC_SOURCE_DIR");
	if (!src)
		fail_msg("KC_SOURCE_DIR is not set (run through ctest)");
	_cleanup_free_ char *stats = kc_xasprintf("%s/tests/unit/data/criu/stats-dump", src);
	kc_mock_set_dump_stats(stats);
	spawn(f, 0, false);
	all_cuda(f, KC_CUDA_RUNNING);
	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	assert_true(f->r.criu.have_dump);
	assert_true(f->r.criu.pages_written > 0);
	uint64_t want = f->r.criu.pages_written * (uint64_t)sysconf(_SC_PAGESIZE);
	assert_string_equal(f->r.stages[2].name, "criu-dump");
	assert_int_equal(f->r.stages[2].bytes, want);
	assert_int_equal(f->m.stages[2].bytes, want);
}

/* ---- dump: rollback at every failure point ---- */

/* ---- dump: rollback, one row per step that fails ---- */

/*
 * Two CUDA processes a and b, one step failing: the exit code and message,
 * then the mock's call log (kc_mock_assert_log's format, with the pids in
 * the order `pids` names them), and both back to RUNNING.
 */
static const struct rollback_case {
	const char *name;
	enum kc_mock_op op; /* fails once */
	char on;	    /* for pid 'a' or 'b', 0 any */
	int cuda_err;
	bool post_fails;    /* the archiving step fails instead */
	int exit_code;
	const char *msg;
	const char *log, *pids;
	bool criu_dumped;   /* CRIU ran (its resume undone by criu-resume) */
} rollback_cases[] = {
	{"lock fails", KC_MOCK_LOCK, 'b', KC_CUDA_ERROR_UNKNOWN, false, KC_EXIT_GPU, "GPU lock",
	 /* only the one that was locked is unlocked */
	 "lock %d,lock %d failed|unlock %d", "aba", false},
	{"lock busy", KC_MOCK_LOCK, 'a', KC_CUDA_ERROR_NOT_READY, false, KC_EXIT_BUSY, "CUDA_ERROR_NOT_READY",
	 "lock %d failed,lock %d|unlock %d", "abb", false},
	{"checkpoint fails", KC_MOCK_CHECKPOINT, 'b', KC_CUDA_ERROR_UNKNOWN, false, KC_EXIT_GPU, "GPU checkpoint",
	 "lock %d,lock %d|checkpoint %d,checkpoint %d failed|restore %d|unlock %d,unlock %d", "ababaab", false},
	/* a failed CRIU dump resumes the tree itself: no criu-resume of CRIU's */
	{"criu dump fails", KC_MOCK_CRIU_DUMP, 0, 1, false, KC_EXIT_CRIU, "",
	 "lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump failed|criu-resume|restore %d,restore %d|"
	 "unlock %d,unlock %d",
	 "abababab", true},
	{"archive fails", 0, 0, 0, true, KC_EXIT_IMAGE, "cannot write archive 'x.tar'",
	 "lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|post-dump|criu-resume|"
	 "restore %d,restore %d|unlock %d,unlock %d",
	 "abababab", true},
};

static void test_rollback_table(void **state)
{
	for (size_t k = 0; k < KC_ARRAY_SIZE(rollback_cases); k++) {
		const struct rollback_case *c = &rollback_cases[k];
		print_message("rollback: %s\n", c->name);
		if (k) { /* a fresh fixture for every row */
			teardown(state);
			assert_int_equal(setup(state), 0);
		}
		struct fx *f = *state;
		spawn(f, 1, false);
		pid_t a = f->pids[0], b = f->pids[1];
		all_cuda(f, KC_CUDA_RUNNING);
		if (!c->post_fails)
			kc_mock_fail(c->op, 1, c->on == 'a' ? a : c->on == 'b' ? b : 0, c->cuda_err);
		struct post p = {.fail = c->post_fails};
		struct kc_dump_opts o = dump_opts(f);
		if (c->post_fails) {
			o.post_dump = post_dump;
			o.post_dump_arg = &p;
		}
		int rc = dump(f, &o);
		expect_error(f, rc, c->exit_code);
		expect_msg(f, c->msg);
		if (c->on == 'b' && c->op == KC_MOCK_LOCK) {
			_cleanup_free_ char *pid_b = kc_xasprintf("pid %d", (int)b);
			expect_msg(f, pid_b); /* names the process it failed for */
		}
		pid_t v[8] = {0};
		for (size_t i = 0; c->pids[i] && i < 8; i++)
			v[i] = c->pids[i] == 'a' ? a : b;
		/* the formats are the literals of the table above */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
		kc_mock_assert_log(c->log, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
#pragma GCC diagnostic pop
		expect_state(a, KC_CUDA_RUNNING);
		expect_state(b, KC_CUDA_RUNNING);
		assert_int_equal(kc_mock_illegal(), 0);
		assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_DUMP) > 0, c->criu_dumped);
		assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_FINISH), 0);
		assert_true(kc_pid_alive(a) && kc_pid_alive(b));
	}
}

enum where { AT_GET_STATE, AT_LOCK, AT_CHECKPOINT, AT_CRIU_DUMP, AT_POST_DUMP };

/* SIGINT (SIGTERM in post_dump) arriving during one step of a dump. */
static void interrupted_at(struct fx *f, enum where w)
{
	static const enum kc_mock_op ops[] = {
		[AT_GET_STATE] = KC_MOCK_GET_STATE,
		[AT_LOCK] = KC_MOCK_LOCK,
		[AT_CHECKPOINT] = KC_MOCK_CHECKPOINT,
		[AT_CRIU_DUMP] = KC_MOCK_CRIU_DUMP,
	};
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	struct post p = {.sig = w == AT_POST_DUMP ? SIGTERM : 0};
	struct kc_dump_opts o = dump_opts(f);
	o.post_dump = post_dump;
	o.post_dump_arg = &p;
	if (w != AT_POST_DUMP)
		kc_mock_raise(ops[w], 1, 0, SIGINT);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_INTERRUPTED);
	expect_msg(f, w == AT_POST_DUMP ? "interrupted by TERM" : "interrupted by INT");
	switch (w) {
	case AT_GET_STATE:
		kc_mock_assert_no_log();
		break;
	case AT_LOCK:
		kc_mock_assert_log("lock %d,lock %d|unlock %d,unlock %d", a, b, a, b);
		break;
	case AT_CHECKPOINT:
		kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|restore %d,restore %d|unlock %d,unlock %d",
				   a, b, a, b, a, b, a, b);
		break;
	case AT_CRIU_DUMP:
		kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|criu-resume|"
				   "restore %d,restore %d|unlock %d,unlock %d",
				   a, b, a, b, a, b, a, b);
		break;
	case AT_POST_DUMP:
		kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|post-dump|criu-resume|"
				   "restore %d,restore %d|unlock %d,unlock %d",
				   a, b, a, b, a, b, a, b);
		break;
	}
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_FINISH), 0);
	assert_int_equal(kc_mock_illegal(), 0);
}

/* A signal once the archive is published: the dump is committed (the tree
 * is ended, exit 0), never rolled back with its archive left behind. */
static void test_interrupted_after_publish_commits(void **state)
{
	struct fx *f = *state;
	spawn(f, 0, false);
	all_cuda(f, KC_CUDA_RUNNING);
	struct post p = {.sig_after = SIGINT};
	struct kc_dump_opts o = dump_opts(f);
	o.post_dump = post_dump;
	o.post_dump_arg = &p;
	expect_ok(f, dump(f, &o));
	assert_int_equal(p.calls, 1);
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_RESUME), 0);
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_FINISH), 1);
	expect_state(f->pids[0], KC_CUDA_CHECKPOINTED);
	kc_signals_reset();
}

static void test_interrupted_before_lock(void **state)
{
	interrupted_at(*state, AT_GET_STATE);
	assert_int_equal(kc_mock_calls(KC_MOCK_LOCK), 0);
}

static void test_interrupted_in_lock(void **state)
{
	interrupted_at(*state, AT_LOCK);
}

static void test_interrupted_in_checkpoint(void **state)
{
	interrupted_at(*state, AT_CHECKPOINT);
}

static void test_interrupted_in_criu_dump(void **state)
{
	interrupted_at(*state, AT_CRIU_DUMP);
}

static void test_interrupted_in_post_dump(void **state)
{
	interrupted_at(*state, AT_POST_DUMP);
}

static void test_rollback_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_CHECKPOINT, 1, b, KC_CUDA_ERROR_UNKNOWN);
	kc_mock_fail(KC_MOCK_UNLOCK, 1, a, KC_CUDA_ERROR_UNKNOWN);
	struct kc_dump_opts o = dump_opts(f);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_ROLLBACK);
	expect_msg(f, "GPU checkpoint"); /* what went wrong first */
	expect_msg(f, "rollback of 'gpu unlock'");
	expect_msg(f, "run 'kcheckpoint recover'");
	/* the rollback went on past the failed unlock */
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d failed|restore %d|unlock %d failed,unlock %d",
			   a, b, a, b, a, a, b);
	expect_state(a, KC_CUDA_LOCKED);
	expect_state(b, KC_CUDA_RUNNING);
}

static void test_rollback_resume_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	struct post p = {.fail = true};
	struct kc_dump_opts o = dump_opts(f);
	o.post_dump = post_dump;
	o.post_dump_arg = &p;
	kc_mock_fail(KC_MOCK_CRIU_RESUME, 1, 0, 5);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_ROLLBACK);
	expect_msg(f, "run 'kcheckpoint recover'");
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|post-dump|criu-resume failed|"
			   "restore %d,restore %d|unlock %d,unlock %d",
			   a, b, a, b, a, b, a, b);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
}

/*
 * When the resume after a --leave-running dump fails, the process may be
 * left locked on the GPU: the message must say how to get out.
 */
static void test_leave_running_resume_fails_says_recover(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_UNLOCK, 1, b, KC_CUDA_ERROR_UNKNOWN);
	struct kc_dump_opts o = dump_opts(f);
	o.leave_running = true;

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_ROLLBACK);
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|criu-resume|"
			   "restore %d,restore %d|unlock %d,unlock %d failed",
			   a, b, a, b, a, b, a, b);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_LOCKED);
	expect_msg(f, "run 'kcheckpoint recover'");
}

/*
 * Once the images are complete the dump is not rolled back: if ending the
 * tree fails, the GPU stays checkpointed and the error says what failed.
 */
static void test_finish_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 0, false);
	pid_t a = f->pids[0];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_CRIU_FINISH, 1, 0, 3);
	struct kc_dump_opts o = dump_opts(f);
	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_CRIU);
	expect_msg(f, "end the dumped process");
	kc_mock_assert_log("lock %d|checkpoint %d|criu-dump|criu-finish failed", a, a);
	expect_state(a, KC_CUDA_CHECKPOINTED);
}

/* ---- dump: processes already locked or checkpointed ---- */

static void test_dump_already_locked(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	kc_mock_set_state(a, KC_CUDA_RUNNING);
	kc_mock_set_state(b, KC_CUDA_LOCKED);
	struct kc_dump_opts o = dump_opts(f);
	o.leave_running = true;

	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("lock %d|checkpoint %d,checkpoint %d|criu-dump|criu-resume|restore %d,restore %d|unlock %d",
			   a, a, b, a, b, a);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_LOCKED);
	assert_int_equal(mproc(&f->m, b)->cuda_state, KC_CUDA_LOCKED);
	assert_int_equal(kc_mock_illegal(), 0);
}

static void test_rollback_keeps_locked(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	kc_mock_set_state(a, KC_CUDA_RUNNING);
	kc_mock_set_state(b, KC_CUDA_LOCKED);
	kc_mock_fail(KC_MOCK_CRIU_DUMP, 1, 0, 1);
	struct kc_dump_opts o = dump_opts(f);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_CRIU);
	kc_mock_assert_log("lock %d|checkpoint %d,checkpoint %d|criu-dump failed|criu-resume|restore %d,restore %d|unlock %d", a, a,
			   b, a, b, a);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_LOCKED);
}

static void test_dump_already_checkpointed(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	kc_mock_set_state(a, KC_CUDA_RUNNING);
	kc_mock_set_state(b, KC_CUDA_CHECKPOINTED);
	struct kc_dump_opts o = dump_opts(f);
	o.leave_running = true;

	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("lock %d|checkpoint %d|criu-dump|criu-resume|restore %d|unlock %d", a, a, a, a);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_CHECKPOINTED);
	assert_int_equal(mproc(&f->m, b)->cuda_state, KC_CUDA_CHECKPOINTED);
	assert_true(mproc(&f->m, b)->cuda);
}

static void test_rollback_keeps_checkpointed(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	kc_mock_set_state(a, KC_CUDA_RUNNING);
	kc_mock_set_state(b, KC_CUDA_CHECKPOINTED);
	kc_mock_fail(KC_MOCK_CRIU_DUMP, 1, 0, 1);
	struct kc_dump_opts o = dump_opts(f);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_CRIU);
	kc_mock_assert_log("lock %d|checkpoint %d|criu-dump failed|criu-resume|restore %d|unlock %d", a, a, a, a);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_CHECKPOINTED);
}

static void test_dump_all_checkpointed(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	all_cuda(f, KC_CUDA_CHECKPOINTED);
	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("criu-dump|criu-finish");
	assert_int_equal(kc_mock_illegal(), 0);
}

/* ---- dump: refusals; nothing may be locked ---- */

static void expect_refused(struct fx *f, pid_t pid, int code, const char *msg)
{
	struct kc_dump_opts o = dump_opts(f);
	o.pid = pid;
	int rc = dump(f, &o);
	expect_error(f, rc, code);
	expect_msg(f, msg);
	kc_mock_assert_no_log();
	assert_int_equal(kc_mock_calls(KC_MOCK_LOCK), 0);
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_DUMP), 0);
	kc_error_free(f->err);
	f->err = NULL;
}

static void test_refuse_init_self_parent(void **state)
{
	struct fx *f = *state;
	kc_mock_set_state(1, KC_CUDA_RUNNING);
	kc_mock_set_state(getpid(), KC_CUDA_RUNNING);
	kc_mock_set_state(getppid(), KC_CUDA_RUNNING);
	expect_refused(f, 1, KC_EXIT_USAGE, "pid 1");
	expect_refused(f, getpid(), KC_EXIT_USAGE, "kcheckpoint or one of its parents");
	expect_refused(f, getppid(), KC_EXIT_USAGE, "kcheckpoint or one of its parents");
}

static void test_refuse_missing_and_zombie(void **state)
{
	struct fx *f = *state;
	pid_t gone = fork();
	assert_true(gone >= 0);
	if (gone == 0)
		_exit(0);
	/* a zombie until reaped */
	wait_state(gone, 'Z', true);
	kc_mock_set_state(gone, KC_CUDA_RUNNING);
	expect_refused(f, gone, KC_EXIT_NOENT, "zombie");
	assert_int_equal(waitpid(gone, NULL, 0), gone);
	if (!kc_pid_exists(gone)) /* else its pid was taken again at once */
		expect_refused(f, gone, KC_EXIT_NOENT, "no process");
}

static void test_refuse_nonempty_dir(void **state)
{
	struct fx *f = *state;
	spawn(f, 0, false);
	all_cuda(f, KC_CUDA_RUNNING);
	_cleanup_free_ char *old = kc_xasprintf("%s/pages-1.img", f->dir);
	struct kc_error *e = NULL;
	assert_int_equal(kc_write_file_atomic(old, "x", 1, 0600, &e), 0);
	expect_refused(f, f->pids[0], KC_EXIT_USAGE, "is not empty");
	expect_state(f->pids[0], KC_CUDA_RUNNING);
}

static void test_refuse_failed_state(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	kc_mock_set_state(f->pids[0], KC_CUDA_RUNNING);
	kc_mock_set_state(f->pids[1], KC_CUDA_FAILED);
	expect_refused(f, f->pids[0], KC_EXIT_GPU, "'failed'");
}

static void test_refuse_criu_version_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 0, false);
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_CRIU_VERSION, 1, 0, 2);
	expect_refused(f, f->pids[0], KC_EXIT_CRIU, "criu-version");
}

static void test_get_state_errors(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);

	/* an error other than "gone" stops the dump before anything is locked */
	kc_mock_fail(KC_MOCK_GET_STATE, 1, b, KC_CUDA_ERROR_UNKNOWN);
	_cleanup_free_ char *what = kc_xasprintf("CUDA state of pid %d", (int)b);
	expect_refused(f, a, KC_EXIT_GPU, what);

	/* the root itself gone is an error too */
	kc_mock_reset();
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_GET_STATE, 1, a, KC_CUDA_ERROR_OPERATING_SYSTEM);
	kc_manifest_free(&f->m);
	expect_refused(f, a, KC_EXIT_NOENT, "CUDA state of pid");
}

/* A child that exited between listing and asking is not dumped as CUDA. */
static void test_get_state_child_gone(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_GET_STATE, 1, b, KC_CUDA_ERROR_OPERATING_SYSTEM);
	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	kc_mock_assert_log("lock %d|checkpoint %d|criu-dump|criu-finish", a, a);
	expect_state(b, KC_CUDA_RUNNING);
}

/* ---- parallelism ---- */

static void test_checkpoints_overlap(void **state)
{
	struct fx *f = *state;
	spawn(f, 3, false);
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_sleep(KC_MOCK_CHECKPOINT, 200);
	struct kc_dump_opts o = dump_opts(f);
	expect_ok(f, dump(f, &o));
	assert_int_equal(kc_mock_calls(KC_MOCK_CHECKPOINT), 4);
	unsigned max = kc_mock_max_in_flight(KC_MOCK_CHECKPOINT);
	if (max < 2)
		fail_msg("checkpoint calls ran one at a time (at most %u in flight)", max);
	/* per-process time is recorded, and covers the mock's own sleep */
	for (size_t i = 0; i < f->m.n_procs; i++)
		assert_true(f->m.procs[i].checkpoint_s >= 0.199);
}

struct par_arg {
	pid_t fail_a, fail_b;
	int calls;
	pthread_mutex_t lock;
};

static int par_fn(const struct kc_backends *b, pid_t pid, void *arg, struct kc_error **err)
{
	struct par_arg *pa = arg;
	pthread_mutex_lock(&pa->lock);
	pa->calls++;
	pthread_mutex_unlock(&pa->lock);
	/* the later pid fails first in time; the earlier pid must still win */
	if (pid == pa->fail_a) {
		usleep(50000);
		return kc_error_set(err, KC_EXIT_GPU, 11, "first");
	}
	if (pid == pa->fail_b)
		return kc_error_set(err, KC_EXIT_BUSY, 22, "second");
	return 0;
}

static void test_parallel_reports_first_in_pid_order(void **state)
{
	struct fx *f = *state;
	pid_t pids[5] = {101, 102, 103, 104, 105};
	bool ok[5];
	double secs[5];
	struct par_arg pa = {.fail_a = 102, .fail_b = 104, .lock = PTHREAD_MUTEX_INITIALIZER};
	int rc = kc_parallel(&f->b, pids, 5, par_fn, &pa, ok, secs, &f->err);
	expect_error(f, rc, KC_EXIT_GPU);
	assert_string_equal(f->err->msg, "pid 102: first");
	assert_int_equal(f->err->cause, 11);
	assert_int_equal(pa.calls, 5);
	bool want[5] = {true, false, true, false, true};
	for (int i = 0; i < 5; i++)
		assert_int_equal(ok[i], want[i]);
	assert_true(secs[1] >= 0.049);

	kc_error_free(f->err);
	f->err = NULL;
	assert_int_equal(kc_parallel(&f->b, pids, 0, par_fn, &pa, NULL, NULL, &f->err), 0);
	assert_int_equal(pa.calls, 5);
}

/* ---- restore ---- */

/* Pids above pid_max: free for sure, as restore needs them. */

int main(void)
{
	/* grandchildren of a killed root come back to us to be reaped */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	const struct CMUnitTest tests[] = {
		T(test_dump_order),
		T(test_dump_leave_running),
		T(test_dump_without_cuda),
		T(test_dump_tree),
		T(test_dump_gpu_usage),
		T(test_dump_reads_criu_stats),
		T(test_rollback_table),
		T(test_interrupted_before_lock),
		T(test_interrupted_in_lock),
		T(test_interrupted_in_checkpoint),
		T(test_interrupted_in_criu_dump),
		T(test_interrupted_in_post_dump),
		T(test_rollback_fails),
		T(test_rollback_resume_fails),
		T(test_leave_running_resume_fails_says_recover),
		T(test_finish_fails),
		T(test_dump_already_locked),
		T(test_rollback_keeps_locked),
		T(test_dump_already_checkpointed),
		T(test_rollback_keeps_checkpointed),
		T(test_dump_all_checkpointed),
		T(test_refuse_init_self_parent),
		T(test_refuse_missing_and_zombie),
		T(test_refuse_nonempty_dir),
		T(test_refuse_failed_state),
		T(test_refuse_criu_version_fails),
		T(test_get_state_errors),
		T(test_get_state_child_gone),
		T(test_checkpoints_overlap),
		T(test_parallel_reports_first_in_pid_order),
		T(test_interrupted_after_publish_commits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

