/* SPDX-License-Identifier: Apache-2.0 */
/* One thread of a SIGSTOPped process run alone through ptrace (the CUDA
 * driver's restore thread during a GPU restore): a real child with two
 * counting threads shows which of them moves. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/error.h"
#include "kc/proctree.h"
#include "kc/util.h"

struct shared {
	volatile uint64_t main_count, helper_count;
	volatile pid_t helper_tid;
};
static struct shared *sh;

static void *helper(void *arg)
{
	(void)arg;
	sh->helper_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		sh->helper_count++;
	return NULL;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* A child counting in two threads, stopped; *tid its helper thread. */
static pid_t start_stopped(pid_t *tid)
{
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	pid_t c = fork();
	assert_true(c >= 0);
	if (c == 0) {
		pthread_t t;
		pthread_create(&t, NULL, helper, NULL);
		for (;;)
			sh->main_count++;
	}
	while (!sh->helper_tid)
		sleep_ms(1);
	*tid = sh->helper_tid;
	kill(c, SIGSTOP);
	for (int i = 0; i < 2000 && (kc_pid_state(c) != 'T' || kc_pid_state(*tid) != 'T'); i++)
		sleep_ms(1);
	assert_int_equal(kc_pid_state(*tid), 'T');
	return c;
}

/* SigBlk of a thread, from /proc. */
static uint64_t sigblk(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	char *text = NULL;
	assert_int_equal(kc_read_file(path, &text, NULL, NULL), 0);
	const char *p = strstr(text, "\nSigBlk:");
	assert_non_null(p);
	uint64_t v = strtoull(p + 8, NULL, 16);
	free(text);
	return v;
}

static void stop_child(pid_t c)
{
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	munmap(sh, sizeof(*sh));
}

static void test_thread_runs_alone_then_stops_with_its_process(void **state)
{
	(void)state;
	pid_t tid, c = start_stopped(&tid);
	uint64_t m0 = sh->main_count, h0 = sh->helper_count;
	sleep_ms(50);
	assert_true(sh->main_count == m0 && sh->helper_count == h0); /* both stopped */

	struct kc_error *err = NULL;
	struct kc_held_thread h;
	uint64_t mask = sigblk(tid);
	assert_int_equal(kc_thread_run_alone(tid, &h, &err), 0);
	assert_null(err);
	/* no handler of the program runs on it meanwhile (SIGKILL and SIGSTOP
	 * cannot be blocked) */
	assert_true((sigblk(tid) | (1ull << (SIGKILL - 1)) | (1ull << (SIGSTOP - 1))) == ~0ull);
	sleep_ms(100);
	assert_true(sh->helper_count > h0);  /* it runs */
	assert_true(sh->main_count == m0);   /* the rest of the process does not */
	uint64_t h1 = sh->helper_count;
	sleep_ms(50);
	assert_true(sh->helper_count > h1); /* and goes on running: no second trap */

	kc_thread_release(&h);
	assert_true(sigblk(tid) == mask); /* its own mask back */
	kill(c, SIGSTOP); /* the caller's choice: stopped as a whole again */
	for (int i = 0; i < 2000 && kc_pid_state(tid) != 'T'; i++)
		sleep_ms(1);
	assert_int_equal(kc_pid_state(tid), 'T');
	uint64_t h2 = sh->helper_count;
	sleep_ms(50);
	assert_true(sh->helper_count == h2 && sh->main_count == m0);

	kill(c, SIGCONT); /* untraced: SIGCONT runs it all */
	sleep_ms(100);
	assert_true(sh->main_count > m0 && sh->helper_count > h2);
	stop_child(c);
}

static void test_a_running_thread_is_held_too(void **state)
{
	(void)state;
	pid_t tid, c = start_stopped(&tid);
	kill(c, SIGCONT);
	sleep_ms(20);
	struct kc_error *err = NULL;
	struct kc_held_thread h;
	assert_int_equal(kc_thread_run_alone(tid, &h, &err), 0);
	uint64_t h0 = sh->helper_count;
	sleep_ms(50);
	assert_true(sh->helper_count > h0);
	kc_thread_release(&h);
	stop_child(c);
}

static void test_a_thread_traced_by_another_is_refused(void **state)
{
	(void)state;
	pid_t tid, c = start_stopped(&tid);
	struct kc_error *err = NULL;
	struct kc_held_thread h;
	assert_int_equal(kc_thread_run_alone(tid, &h, &err), 0);
	/* a second tracer (us again) is refused, and says which thread */
	pid_t tracer = fork();
	if (tracer == 0) {
		struct kc_error *e2 = NULL;
		struct kc_held_thread h2;
		_exit(kc_thread_run_alone(tid, &h2, &e2) == -1 && e2 && strstr(e2->msg, "thread") ? 0 : 1);
	}
	int st;
	waitpid(tracer, &st, 0);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	kc_thread_release(&h);
	assert_int_equal(kc_thread_run_alone(9999999, &h, &err), -1);
	assert_non_null(err);
	kc_error_free(err);
	stop_child(c);
}

/* A stop signal pending for the stopped process (CRIU leaves a SIGSTOP
 * for one stopped before its dump; gdb and job control may too) cannot be
 * blocked: the held thread swallows it and runs, not trapped for good. */
static void test_a_pending_stop_signal_does_not_trap_the_held_thread(void **state)
{
	(void)state;
	pid_t tid, c = start_stopped(&tid);
	kill(c, SIGSTOP);
	kill(c, SIGTSTP);
	char path[64], *text = NULL;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	assert_int_equal(kc_read_file(path, &text, NULL, NULL), 0);
	uint64_t pending = strtoull(strstr(text, "\nShdPnd:") + 8, NULL, 16);
	free(text);
	assert_true(pending & (1ull << (SIGSTOP - 1))); /* the premise: still pending while stopped */
	assert_true(pending & (1ull << (SIGTSTP - 1)));

	struct kc_error *err = NULL;
	struct kc_held_thread h;
	assert_int_equal(kc_thread_run_alone(tid, &h, &err), 0);
	uint64_t h0 = sh->helper_count, m0 = sh->main_count;
	sleep_ms(100);
	assert_true(sh->helper_count > h0); /* it runs */
	assert_true(sh->main_count == m0);
	kc_thread_release(&h);
	kill(c, SIGCONT); /* drops the SIGTSTP still pending (blocked while held) */
	sleep_ms(100);
	assert_true(sh->main_count > m0);
	stop_child(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_thread_runs_alone_then_stops_with_its_process),
		cmocka_unit_test(test_a_running_thread_is_held_too),
		cmocka_unit_test(test_a_thread_traced_by_another_is_refused),
		cmocka_unit_test(test_a_pending_stop_signal_does_not_trap_the_held_thread),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
