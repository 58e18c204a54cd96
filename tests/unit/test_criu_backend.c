/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The real CRIU backend against the real criu binary and cpu_workload.
 *
 * criu comes from $KCHECKPOINT_CRIU, else <source>/.deps/criu/bin/criu
 * (what scripts/build-criu.sh installs).  Without one the test fails: a
 * skipped test would read as a pass.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/criu.h"
#include "kc/error.h"
#include "kc/util.h"

static char criu_bin[PATH_MAX];
static char workload_bin[PATH_MAX];

struct fixture {
	char dir[64];
	struct kc_criu criu;
	struct kc_criu_opts opts;
	/* killed by teardown, so a failed assertion leaves no strays */
	pid_t pids[4];
	int n_pids;
};

static int setup(void **state)
{
	struct fixture *f = kc_xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kc-test-criu-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	kc_criu_init(&f->criu);
	f->opts.criu_path = criu_bin;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	_cleanup_error_ struct kc_error *err = NULL;
	for (int i = 0; i < f->n_pids; i++) {
		kill(f->pids[i], SIGKILL);
		waitpid(f->pids[i], NULL, WNOHANG);
	}
	kc_rm_rf(f->dir, &err);
	free(f);
	return 0;
}

static char *path_in(const struct fixture *f, const char *name)
{
	return kc_xasprintf("%s/%s", f->dir, name);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

struct status {
	uint64_t counter;
	char checksum[17];
	int ok;
	int pid;
};

static bool parse_status(const char *path, struct status *s)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	int n = fscanf(f, "counter=%" SCNu64 " checksum=%16s ok=%d pid=%d", &s->counter, s->checksum, &s->ok,
		       &s->pid);
	fclose(f);
	return n == 4;
}

static void wait_status(const char *path, struct status *s)
{
	for (int i = 0; i < 500; i++) {
		if (parse_status(path, s))
			return;
		sleep_ms(10);
	}
	fail_msg("no status in '%s'", path);
}

/* Asks for a fresh line and waits until one with a later counter lands. */
static void fresh_status(pid_t pid, const char *path, uint64_t after, struct status *s)
{
	assert_int_equal(kill(pid, SIGUSR1), 0);
	for (int i = 0; i < 500; i++) {
		if (parse_status(path, s) && s->counter > after)
			return;
		sleep_ms(10);
	}
	fail_msg("'%s' did not move past counter %" PRIu64, path, after);
}

static void wait_gone(pid_t pid)
{
	for (int i = 0; i < 500; i++) {
		if (!kc_pid_exists(pid))
			return;
		sleep_ms(10);
	}
	fail_msg("pid %d did not go away", (int)pid);
}

/* Like a user's job: its own session, stdio on /dev/null. */
static pid_t start_workload(struct fixture *f, const char *status, const char *children)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setsid();
		int fd = open("/dev/null", O_RDWR);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(workload_bin, workload_bin, "--mb", "16", "--seed", "42", "--status", status, "--children",
		      children, (char *)NULL);
		_exit(127);
	}
	f->pids[f->n_pids++] = pid;
	return pid;
}

static void test_version(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *v = NULL;
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(f->criu.ops->version(f->criu.h, &f->opts, &v, &err), 0);
	assert_true(v[0] >= '4' && v[0] <= '9' && strchr(v, '.'));

	_cleanup_free_ char *cmd = kc_xasprintf("'%s' --version", criu_bin);
	FILE *p = popen(cmd, "r");
	char line[256] = "";
	assert_non_null(fgets(line, sizeof(line), p));
	pclose(p);
	_cleanup_free_ char *want = kc_xasprintf("Version: %s\n", v);
	assert_string_equal(line, want);
}

static void test_missing_binary(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *v = NULL;
	_cleanup_error_ struct kc_error *err = NULL;

	f->opts.criu_path = "/nonexistent/criu";
	assert_int_equal(f->criu.ops->version(f->criu.h, &f->opts, &v, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_string_equal(err->msg, "cannot run '/nonexistent/criu': no such file or directory");
	kc_error_free(steal_ptr(err));

	/* looked up in PATH when there is no slash */
	f->opts.criu_path = "kc-no-such-criu";
	assert_int_equal(f->criu.ops->check(f->criu.h, &f->opts, &v, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_string_equal(err->msg, "cannot run 'kc-no-such-criu': no such file or directory");
}

static void test_env_and_option(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *v = NULL;
	_cleanup_error_ struct kc_error *err = NULL;

	setenv("KCHECKPOINT_CRIU", "/nonexistent/env-criu", 1);
	f->opts.criu_path = NULL;
	assert_int_equal(f->criu.ops->version(f->criu.h, &f->opts, &v, &err), -1);
	assert_non_null(strstr(err->msg, "'/nonexistent/env-criu'"));
	kc_error_free(steal_ptr(err));

	/* --criu wins over the environment */
	f->opts.criu_path = criu_bin;
	assert_int_equal(f->criu.ops->version(f->criu.h, &f->opts, &v, &err), 0);
	free(steal_ptr(v));

	setenv("KCHECKPOINT_CRIU", criu_bin, 1);
	f->opts.criu_path = NULL;
	assert_int_equal(f->criu.ops->version(f->criu.h, &f->opts, &v, &err), 0);
	unsetenv("KCHECKPOINT_CRIU");
}

static void test_check(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *out = NULL;
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(f->criu.ops->check(f->criu.h, &f->opts, &out, &err), 0);
	assert_non_null(strstr(out, "Looks good"));
}

static void test_dump_failure_carries_log(void **state)
{
	struct fixture *f = *state;
	_cleanup_error_ struct kc_error *err = NULL;

	/* a pid that was just freed */
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);

	assert_int_equal(f->criu.ops->dump(f->criu.h, &f->opts, pid, f->dir, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_CRIU);
	assert_int_equal(err->cause, 1);
	assert_ptr_equal(strstr(err->msg, "criu dump failed (exit 1): "), err->msg);
	assert_non_null(strstr(err->msg, "Error ("));
	_cleanup_free_ char *log = path_in(f, "criu-dump.log");
	assert_true(access(log, R_OK) == 0);
	kc_error_free(steal_ptr(err));

	assert_int_equal(f->criu.ops->dump(f->criu.h, &f->opts, pid, "/nonexistent/images", &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_string_equal(err->msg, "cannot open images dir '/nonexistent/images': no such file or directory");
}

/* The one stand-in here: real CRIU cannot be made to die of a signal on
 * demand, and the message for that case still needs checking. */
static void test_killed_by_signal(void **state)
{
	struct fixture *f = *state;
	_cleanup_error_ struct kc_error *err = NULL;
	_cleanup_free_ char *script = path_in(f, "crashing-criu");
	FILE *s = fopen(script, "w");
	assert_non_null(s);
	fputs("#!/bin/sh\necho 'Error (criu/fake.c:1): about to crash' >&2\nkill -TERM $$\nsleep 5\n", s);
	fclose(s);
	chmod(script, 0755);

	f->opts.criu_path = script;
	assert_int_equal(f->criu.ops->restore(f->criu.h, &f->opts, f->dir, &(pid_t){ 0 }, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_CRIU);
	assert_string_equal(err->msg, "criu restore was killed by SIGTERM: Error (criu/fake.c:1): about to crash");
}

/* A ^C on the terminal must reach only kcheckpoint, which rolls back at
 * a safe point; so criu runs in a process group of its own. */
static void test_own_process_group(void **state)
{
	struct fixture *f = *state;
	_cleanup_error_ struct kc_error *err = NULL;
	_cleanup_free_ char *out = NULL;
	_cleanup_free_ char *script = path_in(f, "pgid-criu");
	FILE *s = fopen(script, "w");
	assert_non_null(s);
	fputs("#!/bin/sh\nread line\necho \"Error (x): pid=$$ pgid=$(cut -d' ' -f5 /proc/$$/stat) stdin=${line:-eof}\"\n"
	      "echo 'not an error line'\nexit 3\n", s);
	fclose(s);
	chmod(script, 0755);

	/* something criu must not read: our stdin may be a user's terminal */
	int p[2], saved = dup(0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "ours\n", 5), 5);
	close(p[1]);
	dup2(p[0], 0);
	close(p[0]);

	f->opts.criu_path = script;
	int r = f->criu.ops->check(f->criu.h, &f->opts, &out, &err);
	dup2(saved, 0);
	close(saved);
	assert_int_equal(r, -1);
	assert_int_equal(err->exit_code, KC_EXIT_CRIU);
	assert_int_equal(err->cause, 3);
	int pid = 0, pgid = 0;
	char in[16] = "";
	assert_int_equal(sscanf(err->msg, "criu check failed (exit 3): Error (x): pid=%d pgid=%d stdin=%15s", &pid,
				&pgid, in), 3);
	assert_int_equal(pid, pgid);
	assert_int_not_equal(pgid, getpgrp());
	assert_string_equal(in, "eof"); /* stdin is /dev/null, not ours */
	/* check hands back everything it printed even when it fails */
	assert_non_null(out);
	assert_non_null(strstr(out, "not an error line"));
}

static void dump_stopped(struct fixture *f, pid_t pid)
{
	_cleanup_error_ struct kc_error *err = NULL;
	f->opts.leave_stopped = true;
	if (f->criu.ops->dump(f->criu.h, &f->opts, pid, f->dir, &err) < 0)
		fail_msg("%s", err->msg);
	assert_int_equal(kc_pid_state(pid), 'T');
}

static void test_dump_leave_stopped_then_continue(void **state)
{
	struct fixture *f = *state;
	_cleanup_free_ char *status = path_in(f, "status");
	pid_t pid = start_workload(f, status, "0");
	struct status before, after;
	wait_status(status, &before);
	fresh_status(pid, status, before.counter, &before);

	dump_stopped(f, pid);
	_cleanup_free_ char *pages = path_in(f, "stats-dump");
	assert_true(access(pages, R_OK) == 0);

	/* rollback: the tree just carries on */
	assert_int_equal(kill(pid, SIGCONT), 0);
	fresh_status(pid, status, before.counter, &after);
	assert_int_equal(after.ok, 1);
	assert_string_equal(after.checksum, before.checksum);

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static void test_dump_kill_restore(void **state)
{
	struct fixture *f = *state;
	_cleanup_error_ struct kc_error *err = NULL;
	_cleanup_free_ char *status = path_in(f, "status");
	_cleanup_free_ char *child_status = path_in(f, "status.0");
	pid_t pid = start_workload(f, status, "1");
	struct status before, child, after;
	wait_status(status, &before);
	wait_status(child_status, &child);
	f->pids[f->n_pids++] = child.pid;
	fresh_status(pid, status, before.counter, &before);

	dump_stopped(f, pid);
	kill(child.pid, SIGKILL);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	wait_gone(child.pid);

	for (int round = 0; round < 2; round++) {
		pid_t root = 0;
		if (f->criu.ops->restore(f->criu.h, &f->opts, f->dir, &root, &err) < 0)
			fail_msg("round %d: %s", round, err->msg);
		assert_int_equal(root, pid);
		/* detached: reparented away from us, and running again */
		char path[64], buf[512];
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)root);
		FILE *st = fopen(path, "r");
		assert_non_null(st);
		assert_non_null(fgets(buf, sizeof(buf), st));
		fclose(st);
		int ppid = -1;
		assert_int_equal(sscanf(strrchr(buf, ')') + 2, "%*c %d", &ppid), 1);
		assert_int_not_equal(ppid, getpid());

		fresh_status(root, status, before.counter, &after);
		assert_int_equal(after.ok, 1);
		assert_int_equal(after.pid, pid);
		assert_string_equal(after.checksum, before.checksum);
		struct status child_after;
		fresh_status(child.pid, child_status, child.counter, &child_after);
		assert_int_equal(child_after.ok, 1);
		assert_string_equal(child_after.checksum, before.checksum);

		struct kc_criu_stats stats;
		if (kc_criu_read_stats(f->dir, &stats, &err) < 0)
			fail_msg("%s", err->msg);
		assert_true(stats.have_dump && stats.have_restore);
		/* 16 MB of pattern at least, once (the child shares it COW) */
		assert_true(stats.pages_written >= 4096);
		assert_true(stats.pages_restored + stats.pages_skipped_cow >= 4096);
		assert_true(stats.frozen_s > 0 && stats.restore_s > 0);

		kill(child.pid, SIGKILL);
		kill(root, SIGKILL);
		wait_gone(root);
		wait_gone(child.pid);
	}
}

int main(void)
{
	const char *env = getenv("KCHECKPOINT_CRIU");
	const char *src = getenv("KC_SOURCE_DIR");
	if (env && *env)
		snprintf(criu_bin, sizeof(criu_bin), "%s", env);
	else if (src)
		snprintf(criu_bin, sizeof(criu_bin), "%s/.deps/criu/bin/criu", src);
	if (access(criu_bin, X_OK) < 0) {
		fprintf(stderr, "no criu at '%s': run scripts/build-criu.sh or set KCHECKPOINT_CRIU\n", criu_bin);
		return 1;
	}
	unsetenv("KCHECKPOINT_CRIU");

	const char *build = getenv("KC_BUILD_DIR");
	if (build) {
		snprintf(workload_bin, sizeof(workload_bin), "%s/workload/cpu_workload", build);
	} else {
		char self[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n < 0)
			return 1;
		self[n] = '\0';
		/* <build>/tests/test_criu_backend -> <build>/workload/ */
		snprintf(workload_bin, sizeof(workload_bin), "%s/../workload/cpu_workload", dirname(self));
	}
	if (access(workload_bin, X_OK) < 0) {
		fprintf(stderr, "no workload at '%s'\n", workload_bin);
		return 1;
	}

	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_binary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_env_and_option, setup, teardown),
		cmocka_unit_test_setup_teardown(test_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dump_failure_carries_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_killed_by_signal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_own_process_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dump_leave_stopped_then_continue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dump_kill_restore, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
