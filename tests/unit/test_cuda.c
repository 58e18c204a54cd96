/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CUDA backend (src/backend/cuda.c) against the fake driver
 * (tests/fake/fake_libcuda.c, path in $KC_FAKE_LIBCUDA), GPU UUIDs, and
 * the NVML loader's failure paths.  Forked children play the CUDA
 * processes; each test has its own state dir.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/cuda.h"
#include "kc/error.h"
#include "kc/nvml.h"
#include "kc/util.h"

#define GPU1 "GPU-00000000-0000-0000-0000-000000000001"
#define GPU2 "GPU-8c0e1b2a-3d4f-5a6b-7c8d-9e0f1a2b3c4d"

struct fx {
	char dir[64];
	struct kc_cuda cuda;
	pid_t kids[16];
	size_t n_kids;
};

static const char *fake_path(void)
{
	const char *p = getenv("KC_FAKE_LIBCUDA");
	if (!p || !*p)
		fail_msg("KC_FAKE_LIBCUDA is not set (run through ctest)");
	return p;
}

static void clear_fake_env(void)
{
	unsetenv("KC_FAKE_CUDA_FAIL");
	unsetenv("KC_FAKE_CUDA_DELAY_MS");
	unsetenv("KC_FAKE_CUDA_VERSION");
	unsetenv("KC_FAKE_CUDA_GPU");
	unsetenv("KCHECKPOINT_LIBCUDA");
}

static void open_cuda(struct fx *f)
{
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_cuda_open(fake_path(), &f->cuda, &err) < 0)
		fail_msg("kc_cuda_open: %s", err->msg);
}

static int fx_setup(void **state)
{
	struct fx *f = kc_xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kc-test-cuda-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	clear_fake_env();
	setenv("KC_FAKE_CUDA_DIR", f->dir, 1);
	open_cuda(f);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < f->n_kids; i++) {
		kill(f->kids[i], SIGKILL);
		waitpid(f->kids[i], NULL, 0);
	}
	kc_cuda_close(&f->cuda);
	kc_rm_rf(f->dir, NULL);
	clear_fake_env();
	free(f);
	return 0;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static size_t task_count(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	_cleanup_closedir_ DIR *d = opendir(path);
	size_t n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		n += de->d_name[0] != '.';
	return n;
}

static void set_state(struct fx *f, pid_t pid, const char *text)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%d", f->dir, (int)pid);
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_write_file_atomic(path, text, strlen(text), 0644, &err) < 0)
		fail_msg("%s", err->msg);
}

/* -1 when the state file is missing. */
static int file_state(struct fx *f, pid_t pid)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%d", f->dir, (int)pid);
	_cleanup_free_ char *buf = NULL;
	if (kc_read_file(path, &buf, NULL, NULL) < 0)
		return -1;
	return atoi(buf);
}

/* A child that idles until killed; marked as a RUNNING CUDA process. */
static pid_t spawn(struct fx *f, int extra_threads, bool mark)
{
	assert_true(f->n_kids < KC_ARRAY_SIZE(f->kids));
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (int i = 0; i < extra_threads; i++) {
			pthread_t t;
			pthread_create(&t, NULL, sleeper, NULL);
		}
		sleeper(NULL);
	}
	f->kids[f->n_kids++] = pid;
	while (task_count(pid) < (size_t)extra_threads + 1)
		usleep(1000);
	if (mark)
		set_state(f, pid, "0\n");
	return pid;
}

static char *read_log(struct fx *f)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/calls.log", f->dir);
	char *buf = NULL;
	if (kc_read_file(path, &buf, NULL, NULL) < 0)
		return kc_xstrdup("");
	return buf;
}

static void truncate_log(struct fx *f)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/calls.log", f->dir);
	unlink(path);
}

static void check_error(struct kc_error *err, int exit_code, int cause, const char *msg)
{
	assert_non_null(err);
	assert_string_equal(err->msg, msg);
	assert_int_equal(err->exit_code, exit_code);
	assert_int_equal(err->cause, cause);
}

static int get_state(struct fx *f, pid_t pid)
{
	_cleanup_error_ struct kc_error *err = NULL;
	enum kc_cuda_state s;
	if (f->cuda.ops->get_state(f->cuda.h, pid, &s, &err) < 0)
		fail_msg("get_state: %s", err->msg);
	return (int)s;
}

/* ---- loading ---- */

static void test_open_missing_lib(void **state)
{
	(void)state;
	struct kc_cuda c = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(kc_cuda_open("/nonexistent/libcuda.so.1", &c, &err), -1);
	assert_non_null(err);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_true(strncmp(err->msg, "cannot load '/nonexistent/libcuda.so.1': ", 41) == 0);
	assert_non_null(strstr(err->msg, "no such file"));
	assert_null(c.ops);

	/* the variable is used when no path is given */
	kc_error_freep(&err);
	setenv("KCHECKPOINT_LIBCUDA", "/nonexistent/from-env.so", 1);
	assert_int_equal(kc_cuda_open(NULL, &c, &err), -1);
	unsetenv("KCHECKPOINT_LIBCUDA");
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_true(strncmp(err->msg, "cannot load '/nonexistent/from-env.so': ", 40) == 0);
}

static void test_open_not_a_driver(void **state)
{
	(void)state;
	struct kc_cuda c = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(kc_cuda_open("libm.so.6", &c, &err), -1);
	check_error(err, KC_EXIT_GPU, 0, "'libm.so.6' is not a CUDA driver: it lacks 'cuInit'");
	assert_null(c.ops);
}

/*
 * A driver with cuInit but without the checkpoint API (as 550 was): a copy
 * of the fake whose dynamic symbol name is spoiled, so dlsym cannot find it.
 */
static void test_open_driver_too_old(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	assert_int_equal(kc_read_file(fake_path(), &buf, &len, NULL), 0);
	static const char sym[] = "cuCheckpointProcessLock"; /* with its NUL */
	size_t hits = 0;
	for (size_t i = 0; i + sizeof(sym) <= len; i++) {
		if (memcmp(buf + i, sym, sizeof(sym)) == 0) {
			buf[i + sizeof(sym) - 2] = 'X';
			hits++;
		}
	}
	assert_true(hits >= 1);
	_cleanup_free_ char *old = kc_xasprintf("%s/old/libcuda.so.1", f->dir);
	_cleanup_free_ char *old_dir = kc_xasprintf("%s/old", f->dir);
	assert_int_equal(kc_mkdir_p(old_dir, 0755, NULL), 0);
	assert_int_equal(kc_write_file_atomic(old, buf, len, 0755, NULL), 0);

	struct kc_cuda c = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(kc_cuda_open(old, &c, &err), -1);
	_cleanup_free_ char *want =
		kc_xasprintf("driver '%s' lacks 'cuCheckpointProcessLock': driver 570 or newer is needed", old);
	check_error(err, KC_EXIT_GPU, 0, want);
}

static void test_open_init_fails(void **state)
{
	(void)state;
	struct kc_cuda c = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	setenv("KC_FAKE_CUDA_FAIL", "init:100", 1);
	assert_int_equal(kc_cuda_open(fake_path(), &c, &err), -1);
	_cleanup_free_ char *want =
		kc_xasprintf("driver '%s': cuInit: CUDA_ERROR_NO_DEVICE (100)", fake_path());
	check_error(err, KC_EXIT_GPU, 100, want);

	/* without its state dir the fake is a driver that cannot initialise */
	kc_error_freep(&err);
	unsetenv("KC_FAKE_CUDA_FAIL");
	_cleanup_free_ char *dir = kc_xstrdup(getenv("KC_FAKE_CUDA_DIR"));
	unsetenv("KC_FAKE_CUDA_DIR");
	assert_int_equal(kc_cuda_open(fake_path(), &c, &err), -1);
	setenv("KC_FAKE_CUDA_DIR", dir, 1);
	assert_int_equal(err->cause, KC_CUDA_ERROR_NOT_INITIALIZED);
	assert_int_equal(err->exit_code, KC_EXIT_GPU);
}

static void test_open_reports_path_and_version(void **state)
{
	struct fx *f = *state;
	char *real = realpath(fake_path(), NULL);
	assert_non_null(real);
	char *loaded = realpath(f->cuda.lib_path, NULL);
	assert_non_null(loaded);
	assert_string_equal(loaded, real);
	free(real);
	free(loaded);

	int v = 0;
	assert_int_equal(f->cuda.ops->driver_version(f->cuda.h, &v, NULL), 0);
	assert_int_equal(v, 13000);

	kc_cuda_close(&f->cuda);
	assert_null(f->cuda.ops);
	setenv("KC_FAKE_CUDA_VERSION", "13030", 1);
	open_cuda(f);
	assert_int_equal(f->cuda.ops->driver_version(f->cuda.h, &v, NULL), 0);
	assert_int_equal(v, 13030);
}

static void test_symbol_list(void **state)
{
	(void)state;
	size_t n = 0;
	void *dl = dlopen(fake_path(), RTLD_NOW | RTLD_NOLOAD);
	assert_non_null(dl);
	for (; kc_cuda_checkpoint_symbols[n]; n++) {
		assert_true(strncmp(kc_cuda_checkpoint_symbols[n], "cuCheckpointProcess", 19) == 0);
		assert_non_null(dlsym(dl, kc_cuda_checkpoint_symbols[n]));
	}
	assert_int_equal(n, 6);
	dlclose(dl);
}

/* ---- the state machine ---- */

static void test_full_cycle(void **state)
{
	struct fx *f = *state;
	const struct kc_cuda_ops *ops = f->cuda.ops;
	void *h = f->cuda.h;
	pid_t pid = spawn(f, 0, true);
	_cleanup_error_ struct kc_error *err = NULL;

	assert_int_equal(get_state(f, pid), KC_CUDA_RUNNING);
	int tid = 0;
	assert_int_equal(ops->get_restore_tid(h, pid, &tid, &err), 0);
	assert_int_equal(tid, pid); /* single-threaded: the leader */

	assert_int_equal(ops->lock(h, pid, 0, &err), 0);
	assert_int_equal(file_state(f, pid), 1);
	assert_int_equal(get_state(f, pid), KC_CUDA_LOCKED);
	assert_int_equal(ops->checkpoint(h, pid, &err), 0);
	assert_int_equal(file_state(f, pid), 2);
	assert_int_equal(get_state(f, pid), KC_CUDA_CHECKPOINTED);
	assert_int_equal(ops->get_restore_tid(h, pid, &tid, &err), 0);
	assert_int_equal(ops->restore(h, pid, NULL, 0, &err), 0);
	assert_int_equal(file_state(f, pid), 1);
	assert_int_equal(ops->unlock(h, pid, &err), 0);
	assert_int_equal(file_state(f, pid), 0);
	assert_int_equal(get_state(f, pid), KC_CUDA_RUNNING);
	assert_null(err);

	_cleanup_free_ char *log = read_log(f);
	_cleanup_free_ char *want = kc_xasprintf(
		"get_state %1$d 0\nrestore_tid %1$d 0\nlock %1$d 0\nget_state %1$d 0\n"
		"checkpoint %1$d 0\nget_state %1$d 0\nrestore_tid %1$d 0\nrestore %1$d 0\n"
		"unlock %1$d 0\nget_state %1$d 0\n",
		(int)pid);
	assert_string_equal(log, want);
}

static void test_restore_tid_is_a_thread(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 2, true);
	int tid = 0;
	assert_int_equal(f->cuda.ops->get_restore_tid(f->cuda.h, pid, &tid, NULL), 0);
	assert_int_not_equal(tid, pid);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d", (int)pid, tid);
	assert_int_equal(access(path, F_OK), 0);

	/* the driver takes any thread of the process, as CRIU's plugin does */
	assert_int_equal(f->cuda.ops->lock(f->cuda.h, tid, 0, NULL), 0);
	assert_int_equal(file_state(f, pid), 1);
	assert_int_equal(get_state(f, tid), KC_CUDA_LOCKED);
}

static void test_not_a_cuda_process(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 0, false);
	_cleanup_error_ struct kc_error *err = NULL;

	assert_int_equal(get_state(f, pid), KC_CUDA_NONE);
	assert_int_equal(f->cuda.ops->lock(f->cuda.h, pid, 0, &err), -1);
	check_error(err, KC_EXIT_GPU, 3, "lock: CUDA_ERROR_NOT_INITIALIZED (3)");
	kc_error_freep(&err);
	int tid;
	assert_int_equal(f->cuda.ops->get_restore_tid(f->cuda.h, pid, &tid, &err), -1);
	check_error(err, KC_EXIT_GPU, 3, "get restore tid: CUDA_ERROR_NOT_INITIALIZED (3)");
	assert_int_equal(file_state(f, pid), -1);
}

static void test_process_gone(void **state)
{
	struct fx *f = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	set_state(f, pid, "0\n");

	_cleanup_error_ struct kc_error *err = NULL;
	enum kc_cuda_state s;
	assert_int_equal(f->cuda.ops->get_state(f->cuda.h, pid, &s, &err), -1);
	check_error(err, KC_EXIT_NOENT, 304, "get state: the process is gone (CUDA_ERROR_OPERATING_SYSTEM, 304)");
	kc_error_freep(&err);
	assert_int_equal(f->cuda.ops->lock(f->cuda.h, pid, 0, &err), -1);
	check_error(err, KC_EXIT_NOENT, 304, "lock: the process is gone (CUDA_ERROR_OPERATING_SYSTEM, 304)");
	assert_int_equal(file_state(f, pid), 0);
}

enum { OP_LOCK, OP_CHECKPOINT, OP_RESTORE, OP_UNLOCK };
static const char *const op_label[] = {"lock", "checkpoint", "restore", "unlock"};

static int do_op(struct fx *f, int op, pid_t pid, struct kc_error **err)
{
	const struct kc_cuda_ops *ops = f->cuda.ops;
	switch (op) {
	case OP_LOCK:
		return ops->lock(f->cuda.h, pid, 0, err);
	case OP_CHECKPOINT:
		return ops->checkpoint(f->cuda.h, pid, err);
	case OP_RESTORE:
		return ops->restore(f->cuda.h, pid, NULL, 0, err);
	default:
		return ops->unlock(f->cuda.h, pid, err);
	}
}

static void test_every_transition(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 0, true);
	/* next[state][op]: the state after success, -1 for ILLEGAL_STATE */
	static const int next[4][4] = {
		[0] = {1, -1, -1, -1},
		[1] = {-1, 2, -1, 0},
		[2] = {-1, -1, 1, -1},
		[3] = {-1, -1, -1, -1}, /* FAILED: nothing but a new process helps */
	};
	int successes = 0, refusals = 0;
	for (int s = 0; s < 4; s++) {
		for (int op = 0; op < 4; op++) {
			char text[16];
			snprintf(text, sizeof(text), "%d\n", s);
			set_state(f, pid, text);
			_cleanup_error_ struct kc_error *err = NULL;
			int r = do_op(f, op, pid, &err);
			if (next[s][op] >= 0) {
				assert_int_equal(r, 0);
				assert_null(err);
				assert_int_equal(file_state(f, pid), next[s][op]);
				successes++;
			} else {
				assert_int_equal(r, -1);
				char want[96];
				snprintf(want, sizeof(want), "%s: CUDA_ERROR_ILLEGAL_STATE (401)", op_label[op]);
				check_error(err, KC_EXIT_GPU, 401, want);
				assert_int_equal(file_state(f, pid), s);
				refusals++;
			}
		}
	}
	assert_int_equal(successes, 4);
	assert_int_equal(refusals, 12);
	set_state(f, pid, "3\n");
	assert_int_equal(get_state(f, pid), KC_CUDA_FAILED);
}

static void test_lock_busy(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 0, true);
	_cleanup_error_ struct kc_error *err = NULL;

	setenv("KC_FAKE_CUDA_FAIL", "lock:600", 1);
	assert_int_equal(f->cuda.ops->lock(f->cuda.h, pid, 1000, &err), -1);
	check_error(err, KC_EXIT_BUSY, 600, "lock: CUDA_ERROR_NOT_READY (600)");
	assert_int_equal(file_state(f, pid), 0);
	unsetenv("KC_FAKE_CUDA_FAIL");

	/* a lock that takes longer than its timeout gives up the same way */
	kc_error_freep(&err);
	setenv("KC_FAKE_CUDA_DELAY_MS", "lock:2000", 1);
	assert_int_equal(f->cuda.ops->lock(f->cuda.h, pid, 20, &err), -1);
	check_error(err, KC_EXIT_BUSY, 600, "lock: CUDA_ERROR_NOT_READY (600)");
	assert_int_equal(file_state(f, pid), 0);
	setenv("KC_FAKE_CUDA_DELAY_MS", "lock:5", 1);
	assert_int_equal(f->cuda.ops->lock(f->cuda.h, pid, 20, NULL), 0);
	assert_int_equal(file_state(f, pid), 1);
}

static void test_injection_nth(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 0, true);
	_cleanup_error_ struct kc_error *err = NULL;

	setenv("KC_FAKE_CUDA_FAIL", "restore:1:2", 1);
	/* the 1st restore comes from another process: the count is shared */
	pid_t helper = fork();
	assert_true(helper >= 0);
	if (helper == 0) {
		_cleanup_error_ struct kc_error *e = NULL;
		for (int op = 0; op < 4; op++)
			if (do_op(f, op, pid, &e) < 0)
				_exit(1);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(helper, &status, 0), helper);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(file_state(f, pid), 0);

	assert_int_equal(do_op(f, OP_LOCK, pid, &err), 0);
	assert_int_equal(do_op(f, OP_CHECKPOINT, pid, &err), 0);
	assert_int_equal(do_op(f, OP_RESTORE, pid, &err), -1);
	check_error(err, KC_EXIT_GPU, 1, "restore: CUDA_ERROR_INVALID_VALUE (1)");
	assert_int_equal(file_state(f, pid), 2);
	kc_error_freep(&err);
	assert_int_equal(do_op(f, OP_RESTORE, pid, &err), 0); /* the 3rd */
	assert_int_equal(file_state(f, pid), 1);

	_cleanup_free_ char *log = read_log(f);
	_cleanup_free_ char *line = kc_xasprintf("restore %d 1\n", (int)pid);
	assert_non_null(strstr(log, line));
}

static void test_injection_pid_and_lists(void **state)
{
	struct fx *f = *state;
	pid_t a = spawn(f, 0, true), b = spawn(f, 0, true);
	_cleanup_error_ struct kc_error *err = NULL;
	char rules[128];

	snprintf(rules, sizeof(rules), "unlock:999:1:%d,checkpoint:304::%d", (int)b, (int)a);
	setenv("KC_FAKE_CUDA_FAIL", rules, 1);
	assert_int_equal(do_op(f, OP_LOCK, a, &err), 0);
	assert_int_equal(do_op(f, OP_LOCK, b, &err), 0);
	assert_int_equal(do_op(f, OP_CHECKPOINT, a, &err), -1);
	check_error(err, KC_EXIT_NOENT, 304, "checkpoint: CUDA_ERROR_OPERATING_SYSTEM (304)");
	assert_int_equal(file_state(f, a), 1);
	kc_error_freep(&err);
	assert_int_equal(do_op(f, OP_CHECKPOINT, a, &err), -1); /* every call for a */
	kc_error_freep(&err);
	assert_int_equal(do_op(f, OP_CHECKPOINT, b, &err), 0);

	assert_int_equal(do_op(f, OP_UNLOCK, a, &err), 0); /* a's 1st unlock: not b's rule */
	assert_int_equal(file_state(f, a), 0);
	assert_int_equal(do_op(f, OP_RESTORE, b, &err), 0);
	assert_int_equal(do_op(f, OP_UNLOCK, b, &err), -1); /* b's 1st unlock */
	check_error(err, KC_EXIT_GPU, 999, "unlock: CUDA_ERROR_UNKNOWN (999)");
	assert_int_equal(file_state(f, b), 1);
	kc_error_freep(&err);
	assert_int_equal(do_op(f, OP_UNLOCK, b, &err), 0);
	assert_int_equal(file_state(f, b), 0);
}

static void test_before_cuinit(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 0, true);
	/* a private copy of the fake, untouched by kc_cuda_open's cuInit */
	void *dl = dlmopen(LM_ID_NEWLM, fake_path(), RTLD_NOW | RTLD_LOCAL);
	assert_non_null(dl);
	int (*get_state_fn)(int, int *) = (int (*)(int, int *))dlsym(dl, "cuCheckpointProcessGetState");
	int (*init_fn)(unsigned) = (int (*)(unsigned))dlsym(dl, "cuInit");
	assert_non_null(get_state_fn);
	assert_non_null(init_fn);
	int s = -1;
	assert_int_equal(get_state_fn(pid, &s), 3);
	assert_int_equal(init_fn(0), 0);
	assert_int_equal(get_state_fn(pid, &s), 0);
	assert_int_equal(s, 0);
	dlclose(dl);

	_cleanup_free_ char *log = read_log(f);
	_cleanup_free_ char *want = kc_xasprintf("get_state %1$d 3\nget_state %1$d 0\n", (int)pid);
	assert_string_equal(log, want);
}

/* ---- restore arguments and GPU pairs ---- */

static struct kc_gpu_pair pair(const char *old_uuid, const char *new_uuid)
{
	struct kc_gpu_pair p;
	assert_int_equal(kc_uuid_parse(old_uuid, &p.old_uuid), 0);
	assert_int_equal(kc_uuid_parse(new_uuid, &p.new_uuid), 0);
	return p;
}

static void checkpointed(struct fx *f, pid_t pid)
{
	_cleanup_error_ struct kc_error *err = NULL;
	if (do_op(f, OP_LOCK, pid, &err) < 0 || do_op(f, OP_CHECKPOINT, pid, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(file_state(f, pid), 2);
}

static char *gpu_file(struct fx *f, pid_t pid)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%d.gpu", f->dir, (int)pid);
	char *buf = NULL;
	if (kc_read_file(path, &buf, NULL, NULL) < 0)
		return kc_xstrdup("");
	return buf;
}

static void restore_pairs_for(struct fx *f, const char *version)
{
	setenv("KC_FAKE_CUDA_VERSION", version, 1);
	setenv("KC_FAKE_CUDA_GPU", GPU1 "," GPU2, 1);
	kc_cuda_close(&f->cuda);
	open_cuda(f);
	pid_t pid = spawn(f, 0, true);
	checkpointed(f, pid);

	_cleanup_error_ struct kc_error *err = NULL;
	struct kc_gpu_pair wrong = pair(GPU2, GPU1);
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, &wrong, 1, &err), -1);
	check_error(err, KC_EXIT_GPU, 1, "restore: CUDA_ERROR_INVALID_VALUE (1)");
	assert_int_equal(file_state(f, pid), 2);
	kc_error_freep(&err);

	struct kc_gpu_pair absent[2] = {pair(GPU1, "GPU-ffffffff-0000-0000-0000-000000000000"), pair(GPU2, GPU1)};
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, absent, 2, &err), -1);
	assert_int_equal(err->cause, 1);
	assert_int_equal(file_state(f, pid), 2);
	kc_error_freep(&err);

	/* as on a real H200 x2 node: a pair for one GPU alone is refused, the
	 * same move as a permutation of the node's GPUs works */
	struct kc_gpu_pair move[2] = {pair(GPU1, GPU2), pair(GPU2, GPU1)};
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, move, 1, &err), -1);
	assert_int_equal(err->cause, 1);
	assert_int_equal(file_state(f, pid), 2);
	kc_error_freep(&err);
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, move, 2, &err), 0);
	assert_int_equal(file_state(f, pid), 1);
	_cleanup_free_ char *gpu = gpu_file(f, pid);
	assert_string_equal(gpu, GPU2 "\n");

	/* back again; without pairs it stays where it is */
	assert_int_equal(do_op(f, OP_CHECKPOINT, pid, &err), 0);
	struct kc_gpu_pair back[2] = {pair(GPU2, GPU1), pair(GPU1, GPU2)};
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, back, 2, &err), 0);
	free(gpu);
	gpu = gpu_file(f, pid);
	assert_string_equal(gpu, GPU1 "\n");
	assert_int_equal(do_op(f, OP_CHECKPOINT, pid, &err), 0);
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, NULL, 0, &err), 0);
	assert_null(err);
}

static void test_restore_pairs_13_0(void **state)
{
	restore_pairs_for(*state, "13000");
}

static void test_restore_pairs_13_3(void **state)
{
	restore_pairs_for(*state, "13030");
}

/* The checkpointed GPU left the machine: only a pair can restore. */
static void test_restore_migrated(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 0, true);
	checkpointed(f, pid);
	setenv("KC_FAKE_CUDA_GPU", GPU2, 1);
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, NULL, 0, &err), -1);
	assert_int_equal(err->cause, 1);
	kc_error_freep(&err);
	struct kc_gpu_pair move = pair(GPU1, GPU2);
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, &move, 1, &err), 0);
	assert_int_equal(file_state(f, pid), 1);
}

/* The driver's device list, in its order: what --gpu-map is completed with. */
static void test_list_gpus(void **state)
{
	struct fx *f = *state;
	setenv("KC_FAKE_CUDA_GPU", GPU2 "," GPU1, 1);
	_cleanup_free_ struct kc_uuid *v = NULL;
	size_t n = 0;
	assert_int_equal(f->cuda.ops->list_gpus(f->cuda.h, &v, &n, NULL), 0);
	assert_int_equal(n, 2);
	char a[41];
	kc_uuid_format(&v[0], a);
	assert_string_equal(a, GPU2);
	kc_uuid_format(&v[1], a);
	assert_string_equal(a, GPU1);
}

static void test_restore_pairs_need_13(void **state)
{
	struct fx *f = *state;
	setenv("KC_FAKE_CUDA_VERSION", "12080", 1);
	kc_cuda_close(&f->cuda);
	open_cuda(f);
	pid_t pid = spawn(f, 0, true);
	checkpointed(f, pid);
	truncate_log(f);

	_cleanup_error_ struct kc_error *err = NULL;
	struct kc_gpu_pair move = pair(GPU1, GPU1);
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, &move, 1, &err), -1);
	check_error(err, KC_EXIT_GPU, KC_CUDA_ERROR_NOT_SUPPORTED,
		    "restore: moving a process to other GPUs needs CUDA 13.0 (driver 580) or newer, the driver is 12.8");
	_cleanup_free_ char *log = read_log(f);
	assert_string_equal(log, ""); /* refused before the driver saw it */
	assert_int_equal(f->cuda.ops->restore(f->cuda.h, pid, NULL, 0, NULL), 0);
	assert_int_equal(file_state(f, pid), 1);
}

/*
 * The fake reads arguments at the driver's byte offsets; anything in a
 * reserved field (a struct declared wrong) is CUDA_ERROR_INVALID_VALUE and
 * changes nothing.
 */
static void test_fake_checks_layouts(void **state)
{
	struct fx *f = *state;
	pid_t pid = spawn(f, 0, true);
	void *dl = dlopen(fake_path(), RTLD_NOW | RTLD_NOLOAD);
	assert_non_null(dl);
	int (*lock)(int, void *) = (int (*)(int, void *))dlsym(dl, "cuCheckpointProcessLock");
	int (*ckpt)(int, void *) = (int (*)(int, void *))dlsym(dl, "cuCheckpointProcessCheckpoint");
	int (*restore)(int, void *) = (int (*)(int, void *))dlsym(dl, "cuCheckpointProcessRestore");
	int (*unlock)(int, void *) = (int (*)(int, void *))dlsym(dl, "cuCheckpointProcessUnlock");
	assert_non_null(lock);
	unsigned char args[64];

	memset(args, 0, sizeof(args));
	args[4] = 1; /* reserved0 */
	assert_int_equal(lock(pid, args), 1);
	args[4] = 0;
	args[0] = 100; /* timeoutMs */
	assert_int_equal(lock(pid, args), 0);
	assert_int_equal(file_state(f, pid), 1);

	memset(args, 0, sizeof(args));
	args[63] = 1;
	assert_int_equal(ckpt(pid, args), 1);
	assert_int_equal(unlock(pid, args), 1);
	assert_int_equal(file_state(f, pid), 1);
	args[63] = 0;
	assert_int_equal(ckpt(pid, args), 0);

	unsigned char pairs[32] = {0};
	pairs[15] = 1; /* old: GPU-...0001 */
	pairs[31] = 1; /* new: the same */
	void *p = pairs;
	unsigned count = 1;

	/* count where 13.0 keeps reserved bytes */
	memset(args, 0, sizeof(args));
	memcpy(args, &p, sizeof(p));
	memcpy(args + 12, &count, sizeof(count));
	assert_int_equal(restore(pid, args), 1);
	/* 13.0's reserved1 at 56 set */
	memset(args, 0, sizeof(args));
	memcpy(args, &p, sizeof(p));
	memcpy(args + 8, &count, sizeof(count));
	args[56] = 1;
	assert_int_equal(restore(pid, args), 1);
	/* pairs without a count */
	memset(args, 0, sizeof(args));
	memcpy(args, &p, sizeof(p));
	assert_int_equal(restore(pid, args), 1);
	assert_int_equal(file_state(f, pid), 2);
	/* right */
	memcpy(args + 8, &count, sizeof(count));
	assert_int_equal(restore(pid, args), 0);
	assert_int_equal(file_state(f, pid), 1);
	dlclose(dl);
}

/* ---- threads ---- */

struct worker {
	struct fx *f;
	pid_t pid;
	int failures;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	for (int round = 0; round < 5; round++) {
		for (int op = 0; op < 4; op++) {
			_cleanup_error_ struct kc_error *err = NULL;
			if (do_op(w->f, op, w->pid, &err) < 0)
				w->failures++;
		}
	}
	return NULL;
}

static void test_threads_on_different_pids(void **state)
{
	struct fx *f = *state;
	struct worker w[4];
	pthread_t t[4];
	setenv("KC_FAKE_CUDA_DELAY_MS", "checkpoint:10,restore:10", 1);
	/*
	 * Children first: one forked while a worker is inside the fake would
	 * share that worker's flock()ed file description and keep it locked.
	 */
	for (int i = 0; i < 4; i++)
		w[i] = (struct worker){.f = f, .pid = spawn(f, 0, true)};
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].failures, 0);
		assert_int_equal(file_state(f, w[i].pid), 0);
	}

	/* per pid, the log holds 5 rounds of lock, checkpoint, restore, unlock */
	_cleanup_free_ char *log = read_log(f);
	size_t lines = 0;
	for (int i = 0; i < 4; i++) {
		int next = 0;
		for (char *l = log; *l; l = strchr(l, '\n') + 1) {
			char op[32];
			int pid, r;
			assert_int_equal(sscanf(l, "%31s %d %d", op, &pid, &r), 3);
			if (pid != w[i].pid)
				continue;
			assert_string_equal(op, op_label[next % 4]);
			assert_int_equal(r, 0);
			next++;
			lines++;
		}
		assert_int_equal(next, 20);
	}
	assert_int_equal(lines, 80);
}

/* ---- names and UUIDs ---- */

static void test_names(void **state)
{
	(void)state;
	char buf[32];
	assert_string_equal(kc_cuda_result_name(0, buf), "CUDA_SUCCESS");
	assert_string_equal(kc_cuda_result_name(600, buf), "CUDA_ERROR_NOT_READY");
	assert_string_equal(kc_cuda_result_name(304, buf), "CUDA_ERROR_OPERATING_SYSTEM");
	assert_string_equal(kc_cuda_result_name(999, buf), "CUDA_ERROR_UNKNOWN");
	assert_string_equal(kc_cuda_result_name(34, buf), "CUDA_ERROR_STUB_LIBRARY");
	assert_string_equal(kc_cuda_result_name(12345, buf), "CUDA_ERROR_12345");
	assert_string_equal(kc_cuda_result_name(-1, buf), "CUDA_ERROR_-1");

	assert_string_equal(kc_cuda_state_name(KC_CUDA_RUNNING), "running");
	assert_string_equal(kc_cuda_state_name(KC_CUDA_LOCKED), "locked");
	assert_string_equal(kc_cuda_state_name(KC_CUDA_CHECKPOINTED), "checkpointed");
	assert_string_equal(kc_cuda_state_name(KC_CUDA_FAILED), "failed");
	assert_string_equal(kc_cuda_state_name(KC_CUDA_NONE), "none");
	assert_string_equal(kc_cuda_state_name((enum kc_cuda_state)42), "unknown");
}

static void test_uuid_round_trip(void **state)
{
	(void)state;
	struct kc_uuid u;
	char buf[41];
	assert_int_equal(kc_uuid_parse(GPU2, &u), 0);
	assert_int_equal(u.bytes[0], 0x8c);
	assert_int_equal(u.bytes[15], 0x4d);
	kc_uuid_format(&u, buf);
	assert_string_equal(buf, GPU2);

	/* no prefix, upper case, no dashes: all the same GPU */
	struct kc_uuid v;
	assert_int_equal(kc_uuid_parse("8C0E1B2A-3D4F-5A6B-7C8D-9E0F1A2B3C4D", &v), 0);
	assert_memory_equal(u.bytes, v.bytes, 16);
	assert_int_equal(kc_uuid_parse("8c0e1b2a3d4f5a6b7c8d9e0f1a2b3c4d", &v), 0);
	assert_memory_equal(u.bytes, v.bytes, 16);

	for (int i = 0; i < 256; i++) {
		for (int k = 0; k < 16; k++)
			u.bytes[k] = (unsigned char)(i * 31 + k * 7);
		kc_uuid_format(&u, buf);
		assert_int_equal(strlen(buf), 40);
		assert_int_equal(kc_uuid_parse(buf, &v), 0);
		assert_memory_equal(u.bytes, v.bytes, 16);
	}
}

static void test_uuid_bad(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",
		"GPU-",
		"GPU-8c0e1b2a-3d4f-5a6b-7c8d-9e0f1a2b3c4",   /* short */
		"GPU-8c0e1b2a-3d4f-5a6b-7c8d-9e0f1a2b3c4d0", /* long */
		"GPU-8c0e1b2a-3d4f-5a6b-7c8d-9e0f1a2b3c4g",  /* not hex */
		"GPU-8c0e1b2a3-d4f-5a6b-7c8d-9e0f1a2b3c4d",  /* dash moved */
		"GPU-8c0e1b2a-3d4f-5a6b-7c8d-9e0f1a2b3c4d ", /* trailing space */
		"MIG-8c0e1b2a-3d4f-5a6b-7c8d-9e0f1a2b3c4d",
		"gpu:8c0e1b2a-3d4f-5a6b-7c8d-9e0f1a2b3c4d",
		"8c0e1b2a3d4f5a6b7c8d9e0f1a2b3c4",
		"8c0e1b2a-3d4f5a6b7c8d9e0f1a2b3c4d",
	};
	struct kc_uuid u;
	memset(&u, 0xaa, sizeof(u));
	for (size_t i = 0; i < KC_ARRAY_SIZE(bad); i++) {
		if (kc_uuid_parse(bad[i], &u) != -1)
			fail_msg("'%s' parsed", bad[i]);
	}
	assert_int_equal(kc_uuid_parse(NULL, &u), -1);
	for (int k = 0; k < 16; k++)
		assert_int_equal(u.bytes[k], 0xaa); /* untouched on failure */
}

/* ---- NVML loader ---- */

static void test_nvml_open_failures(void **state)
{
	(void)state;
	struct kc_nvml n = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(kc_nvml_open("/nonexistent/libnvidia-ml.so.1", &n, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_true(strncmp(err->msg, "cannot load '/nonexistent/libnvidia-ml.so.1': ", 46) == 0);
	kc_error_freep(&err);

	assert_int_equal(kc_nvml_open("libm.so.6", &n, &err), -1);
	check_error(err, KC_EXIT_GPU, 0, "'libm.so.6' lacks 'nvmlInit_v2': not an NVML library, or too old");
	assert_null(n.ops);
	kc_nvml_close(&n); /* harmless on a failed open */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_missing_lib),
		cmocka_unit_test(test_open_not_a_driver),
		cmocka_unit_test_setup_teardown(test_open_driver_too_old, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_open_init_fails, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_open_reports_path_and_version, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_symbol_list, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_full_cycle, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_restore_tid_is_a_thread, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_not_a_cuda_process, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_process_gone, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_every_transition, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_lock_busy, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_injection_nth, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_injection_pid_and_lists, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_before_cuinit, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_restore_pairs_13_0, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_restore_pairs_13_3, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_restore_migrated, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_list_gpus, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_restore_pairs_need_13, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_fake_checks_layouts, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_threads_on_different_pids, fx_setup, fx_teardown),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_uuid_round_trip),
		cmocka_unit_test(test_uuid_bad),
		cmocka_unit_test(test_nvml_open_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
