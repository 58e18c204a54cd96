/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kc_dump / kc_restore / kc_tree_state / kc_recover / kc_parallel against
 * the mock backends (mock_backends.c): the order of the steps, the
 * rollback at every point a dump or restore can fail, idempotence on
 * processes already locked or checkpointed, and that the per-process GPU
 * calls really run at the same time.
 *
 * kc_dump walks /proc, so the dumped trees are real processes that
 * pause(); the mock decides which of them are "CUDA processes".
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
#include "mock_backends.h"

#include "mock_backends.c"

struct fx {
	char dir[64]; /* fresh and empty for every test */
	pid_t pids[16]; /* the spawned tree, root first */
	size_t n;
	struct kc_backends b;
	struct kc_manifest m;
	struct kc_report r;
	struct kc_error *err;
};

static int setup(void **state)
{
	struct fx *f = kc_xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kc-test-orch-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	kc_mock_reset();
	kc_signals_reset();
	kc_mock_backends(&f->b, true, false);
	kc_manifest_init(&f->m);
	kc_report_init(&f->r, "dump");
	*state = f;
	return 0;
}

/* Only what is still ours: a reaped pid may already be someone else's. */
static bool our_descendant(pid_t pid)
{
	for (pid_t p = kc_proc_ppid(pid); p > 1; p = kc_proc_ppid(p))
		if (p == getpid())
			return true;
	return false;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	pid_t ours[16];
	size_t n = 0;
	for (size_t i = 0; i < f->n; i++)
		if (our_descendant(f->pids[i]))
			ours[n++] = f->pids[i];
	kill_and_reap(ours, n);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	struct kc_error *e = NULL;
	kc_rm_rf(f->dir, &e);
	kc_error_free(e);
	kc_manifest_free(&f->m);
	kc_error_free(f->err);
	kc_signals_reset();
	kc_mock_reset();
	free(f);
	return 0;
}

static void write_pid(int fd, pid_t pid)
{
	if (write(fd, &pid, sizeof(pid)) != sizeof(pid))
		_exit(1);
}

static _Noreturn void idle(int fd)
{
	close(fd);
	for (;;)
		pause();
}

/*
 * A root that forks nkids children (the first of which forks a grandchild
 * when asked); all pause().  Returns once every fork is done, so /proc
 * shows the whole tree.  f->pids: root first, the rest in no set order.
 */
static void spawn(struct fx *f, int nkids, bool grandkid)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t root = fork();
	assert_true(root >= 0);
	if (root == 0) {
		close(fds[0]);
		for (int i = 0; i < nkids; i++) {
			pid_t c = fork();
			if (c == 0) {
				if (i == 0 && grandkid) {
					pid_t g = fork();
					if (g == 0)
						idle(fds[1]);
					write_pid(fds[1], g);
				}
				idle(fds[1]);
			}
			write_pid(fds[1], c);
		}
		idle(fds[1]);
	}
	close(fds[1]);
	f->pids[f->n++] = root;
	for (int i = 0; i < nkids + (grandkid ? 1 : 0); i++) {
		pid_t p;
		assert_int_equal(read(fds[0], &p, sizeof(p)), sizeof(p));
		f->pids[f->n++] = p;
	}
	close(fds[0]);
}

/* Signals land asynchronously: wait (bounded) until pid is, or is no
 * longer, in state letter st. */
static void wait_state(pid_t pid, char st, bool is)
{
	for (int i = 0; i < 5000; i++) {
		if ((kc_pid_state(pid) == st) == is)
			return;
		usleep(1000);
	}
	fail_msg("pid %d: state '%c', waited for %s'%c'", (int)pid, kc_pid_state(pid), is ? "" : "not ", st);
}

static void all_cuda(struct fx *f, enum kc_cuda_state st)
{
	for (size_t i = 0; i < f->n; i++)
		kc_mock_set_state(f->pids[i], st);
}

static struct kc_dump_opts dump_opts(const struct fx *f)
{
	return (struct kc_dump_opts){.pid = f->pids[0], .images_dir = f->dir, .lock_timeout_ms = 4321};
}

static int dump(struct fx *f, const struct kc_dump_opts *o)
{
	return kc_dump(o, &f->b, &f->m, &f->r, &f->err);
}

#define expect_ok(f, rc)                                                                       \
	do {                                                                                   \
		if ((rc) != 0 || (f)->err)                                                     \
			fail_msg("expected success, got rc %d: %s", (rc),                      \
				 (f)->err ? (f)->err->msg : "(no error)");                     \
	} while (0)

#define expect_error(f, rc, code)                                                              \
	do {                                                                                   \
		if ((rc) != -1 || !(f)->err)                                                   \
			fail_msg("expected failure (exit %d), got rc %d", (code), (rc));      \
		if ((f)->err->exit_code != (code))                                             \
			fail_msg("expected exit %d, got %d: %s", (code), (f)->err->exit_code, \
				 (f)->err->msg);                                               \
	} while (0)

#define expect_msg(f, s)                                                                       \
	do {                                                                                   \
		if (!(f)->err || !strstr((f)->err->msg, (s)))                                   \
			fail_msg("message lacks \"%s\": %s", (s),                             \
				 (f)->err ? (f)->err->msg : "(no error)");                     \
	} while (0)

static void expect_state(pid_t pid, enum kc_cuda_state want)
{
	enum kc_cuda_state got = kc_mock_state(pid);
	if (got != want)
		fail_msg("pid %d is '%s', want '%s'", (int)pid, kc_cuda_state_name(got), kc_cuda_state_name(want));
}

static void expect_stages(const struct kc_report *r, const char *const *names)
{
	size_t i = 0;
	for (; names[i]; i++) {
		if (i >= r->n_stages)
			fail_msg("stage %zu: want '%s', the report ends", i, names[i]);
		if (strcmp(r->stages[i].name, names[i]))
			fail_msg("stage %zu: want '%s', got '%s'", i, names[i], r->stages[i].name);
	}
	assert_int_equal(r->n_stages, i);
}

static const struct kc_manifest_proc *mproc(const struct kc_manifest *m, pid_t pid)
{
	for (size_t i = 0; i < m->n_procs; i++)
		if (m->procs[i].pid == pid)
			return &m->procs[i];
	fail_msg("pid %d is not in the manifest", (int)pid);
	return NULL;
}

struct post {
	int calls;
	bool fail;
	int sig;       /* arrives while archiving: the archive is not published */
	int sig_after; /* arrives once the archive is published */
	bool saw_manifest;
};

/* Stands for archiving: runs while the tree can still be rolled back. */
static int post_dump(void *arg, const char *dir, struct kc_manifest *m, struct kc_report *r,
		     struct kc_error **err)
{
	struct post *p = arg;
	p->calls++;
	kc_mock_log_add("post-dump");
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, KC_MANIFEST_NAME);
	p->saw_manifest = access(path, F_OK) == 0;
	if (p->sig) {
		/* as kc_archive_write does: it checks before it publishes */
		kc_signals_raise_for_test(p->sig);
		return kc_error_set(err, KC_EXIT_INTERRUPTED, p->sig, "interrupted by %s", sigabbrev_np(p->sig));
	}
	if (p->sig_after)
		kc_signals_raise_for_test(p->sig_after);
	if (p->fail)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "cannot write archive 'x.tar': test");
	return 0;
}

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

static void test_rollback_lock_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_LOCK, 1, b, KC_CUDA_ERROR_UNKNOWN);
	struct kc_dump_opts o = dump_opts(f);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_GPU);
	expect_msg(f, "GPU lock");
	_cleanup_free_ char *pid_b = kc_xasprintf("pid %d", (int)b);
	expect_msg(f, pid_b);
	/* only the one that was locked is unlocked */
	kc_mock_assert_log("lock %d,lock %d failed|unlock %d", a, b, a);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
	assert_int_equal(kc_mock_illegal(), 0);
}

static void test_rollback_lock_busy(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_LOCK, 1, a, KC_CUDA_ERROR_NOT_READY);
	struct kc_dump_opts o = dump_opts(f);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_BUSY);
	expect_msg(f, "CUDA_ERROR_NOT_READY");
	kc_mock_assert_log("lock %d failed,lock %d|unlock %d", a, b, b);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
}

static void test_rollback_checkpoint_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_CHECKPOINT, 1, b, KC_CUDA_ERROR_UNKNOWN);
	struct kc_dump_opts o = dump_opts(f);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_GPU);
	expect_msg(f, "GPU checkpoint");
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d failed|restore %d|unlock %d,unlock %d", a, b,
			   a, b, a, a, b);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_DUMP), 0);
}

static void test_rollback_criu_dump_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	kc_mock_fail(KC_MOCK_CRIU_DUMP, 1, 0, 1);
	struct kc_dump_opts o = dump_opts(f);

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_CRIU);
	/* a failed CRIU dump resumes the tree itself: no criu-resume */
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump failed|criu-resume|restore %d,restore %d|"
			   "unlock %d,unlock %d",
			   a, b, a, b, a, b, a, b);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
}

static void test_rollback_post_dump_fails(void **state)
{
	struct fx *f = *state;
	spawn(f, 1, false);
	pid_t a = f->pids[0], b = f->pids[1];
	all_cuda(f, KC_CUDA_RUNNING);
	struct post p = {.fail = true};
	struct kc_dump_opts o = dump_opts(f);
	o.post_dump = post_dump;
	o.post_dump_arg = &p;

	int rc = dump(f, &o);
	expect_error(f, rc, KC_EXIT_IMAGE);
	expect_msg(f, "cannot write archive 'x.tar'");
	kc_mock_assert_log("lock %d,lock %d|checkpoint %d,checkpoint %d|criu-dump|post-dump|criu-resume|"
			   "restore %d,restore %d|unlock %d,unlock %d",
			   a, b, a, b, a, b, a, b);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_RUNNING);
	assert_int_equal(kc_mock_calls(KC_MOCK_CRIU_FINISH), 0);
	assert_true(kc_pid_alive(a) && kc_pid_alive(b));
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
static pid_t fake_pid(int i)
{
	FILE *fp = fopen("/proc/sys/kernel/pid_max", "r");
	long max = 4194304;
	if (fp) {
		if (fscanf(fp, "%ld", &max) != 1)
			max = 4194304;
		fclose(fp);
	}
	pid_t p = (pid_t)(max + 100 + i);
	assert_false(kc_pid_exists(p));
	return p;
}

/* An image of n processes, each CUDA in the given state before the dump
 * (KC_CUDA_NONE: not CUDA); the mock holds them as a dump leaves them. */
static void fake_image(struct fx *f, const enum kc_cuda_state *before, size_t n, pid_t *pids)
{
	f->m.root_pid = fake_pid(0);
	for (size_t i = 0; i < n; i++) {
		struct kc_manifest_proc *p = kc_manifest_add_proc(&f->m);
		pids[i] = p->pid = fake_pid((int)i);
		p->ppid = i ? pids[0] : 1;
		snprintf(p->comm, sizeof(p->comm), "worker%zu", i);
		p->cuda = before[i] != KC_CUDA_NONE;
		p->cuda_state = before[i];
		if (p->cuda)
			kc_mock_set_state(pids[i], KC_CUDA_CHECKPOINTED);
	}
	f->m.tcp_established = true;
	f->m.file_locks = true;
	kc_mock_set_restore_root(4242);
}

static int restore(struct fx *f, const struct kc_gpu_pair *pairs, size_t n_pairs, pid_t *root)
{
	struct kc_restore_opts o = {.images_dir = f->dir, .pairs = pairs, .n_pairs = n_pairs, .pid_wait_ms = 30};
	o.criu.verbose = true;
	o.criu.leave_stopped = true; /* must be ignored */
	kc_report_init(&f->r, "restore");
	return kc_restore(&o, &f->b, &f->m, &f->r, root, &f->err);
}

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
	assert_int_equal(root, 4242);
	assert_int_equal(f->r.root_pid, 4242);
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
	assert_int_equal(kc_mock_criu_calls()->discard_root, 4242);
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
	assert_int_equal(kc_mock_criu_calls()->discard_root, 4242);
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
	kc_mock_set_restore_root(a);
	pid_t root = 0;
	expect_ok(f, restore(f, NULL, 0, &root));
	kc_mock_assert_log("lock %d|checkpoint %d|criu-dump|criu-finish|criu-restore|restore %d|unlock %d", a, a, a, a);
	assert_int_equal(f->m.n_procs, 2);
	expect_state(a, KC_CUDA_RUNNING);
	expect_state(b, KC_CUDA_CHECKPOINTED);
	assert_int_equal(root, a);
}

/* ---- state and recover ---- */

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

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

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
		T(test_rollback_lock_fails),
		T(test_rollback_lock_busy),
		T(test_rollback_checkpoint_fails),
		T(test_rollback_criu_dump_fails),
		T(test_rollback_post_dump_fails),
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
		T(test_tree_state),
		T(test_interrupted_after_publish_commits),
		T(test_recover),
		T(test_recover_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
