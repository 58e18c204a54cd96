/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kc/proctree.h"
#include "kc/util.h"

pid_t kc_proc_ppid(pid_t pid)
{
	pid_t ppid;
	return kc_pid_stat(pid, NULL, &ppid) < 0 ? -1 : ppid;
}

struct pidvec {
	pid_t *v;
	size_t n, cap;
};

static void pv_push(struct pidvec *pv, pid_t p)
{
	for (size_t i = 0; i < pv->n; i++)
		if (pv->v[i] == p)
			return;
	if (pv->n == pv->cap) {
		pv->cap = pv->cap ? pv->cap * 2 : 16;
		pv->v = kc_xrealloc(pv->v, pv->cap * sizeof(pid_t));
	}
	pv->v[pv->n++] = p;
}

/* Children of every thread, since a child's parent is the thread that
 * forked it, not necessarily the main thread. */
static void add_children(struct pidvec *pv, pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	_cleanup_closedir_ DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		_cleanup_free_ char *cpath = kc_xasprintf("/proc/%d/task/%s/children", (int)pid, de->d_name);
		_cleanup_free_ char *buf = NULL;
		if (kc_read_file(cpath, &buf, NULL, NULL) < 0)
			continue;
		char *save = NULL;
		for (char *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			pid_t c = kc_parse_pid(tok);
			if (c > 0)
				pv_push(pv, c);
		}
	}
}

int kc_proctree(pid_t pid, pid_t **pids, size_t *n, struct kc_error **err)
{
	if (!kc_pid_exists(pid))
		return kc_error_set(err, KC_EXIT_NOENT, ESRCH, "no process with pid %d", (int)pid);
	struct pidvec pv = {0};
	pv_push(&pv, pid);
	/* breadth first: parents come before their children */
	for (size_t i = 0; i < pv.n; i++)
		add_children(&pv, pv.v[i]);
	*pids = pv.v;
	*n = pv.n;
	return 0;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/*
 * A process that got SIGKILL never runs user code again, but the kernel
 * may take a second or more to free a big address space before the pid
 * becomes a zombie.  KC_KILL_DYING waits only until no pid is still
 * stopped (the signal was taken); KC_KILL_EXITED until none is alive.
 */
int kc_proctree_kill(const pid_t *pids, size_t n, enum kc_kill_wait wait, unsigned timeout_ms,
		     struct kc_error **err)
{
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	double deadline = kc_now() + timeout_ms / 1000.0;
	for (;;) {
		size_t left = 0;
		pid_t last = 0;
		for (size_t i = 0; i < n; i++) {
			char st = wait == KC_KILL_DYING ? kc_pid_state(pids[i]) : 0;
			if (wait == KC_KILL_EXITED ? kc_pid_alive(pids[i]) : st == 'T' || st == 't') {
				left++;
				last = pids[i];
			}
		}
		if (!left)
			return 0;
		if (kc_now() > deadline)
			return kc_error_set(err, KC_EXIT_FAILURE, 0, "pid %d still %s %u ms after SIGKILL", (int)last,
					    wait == KC_KILL_EXITED ? "runs" : "stopped", timeout_ms);
		sleep_ms(wait == KC_KILL_EXITED ? 5 : 1);
	}
}

void kc_proctree_cont(const pid_t *pids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGCONT);
}

/* The next ptrace-stop of tid, bounded; a signal to us does not end it. */
static int wait_traced(pid_t tid)
{
	for (int i = 0; i < 5000; i++) {
		int st;
		pid_t r = waitpid(tid, &st, __WALL | WNOHANG);
		if (r == tid)
			return WIFSTOPPED(st) ? 0 : -1; /* exited or killed: nothing to hold */
		if (r < 0 && errno != EINTR)
			return -1;
		struct timespec ts = {0, 1000000L};
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* Seizes tid and waits for its ptrace-stop: 0, or -1 (errno) seized or not
 * (*seized says).  A thread in group-stop turns it into a ptrace-stop when
 * seized (the kernel re-reports it); only a running one needs the
 * interrupt, and one sent to a trapped thread would trap it again after
 * PTRACE_CONT. */
static int seize_stopped(pid_t tid, long opts, bool *seized)
{
	bool stopped = kc_pid_state(tid) == 'T';
	*seized = ptrace(PTRACE_SEIZE, tid, NULL, (void *)opts) == 0;
	if (!*seized)
		return -1;
	errno = 0;
	if ((!stopped && ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) < 0) || wait_traced(tid) < 0) {
		if (!errno)
			errno = EIO;
		return -1;
	}
	return 0;
}

/* Whether SIGSTOP is pending for tid, its own or its process' (SigPnd,
 * ShdPnd): the one stop signal a mask cannot block. */
static bool sigstop_pending(pid_t tid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	FILE *f = fopen(path, "re");
	uint64_t pending = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long v;
		if (sscanf(line, "SigPnd: %llx", &v) == 1 || sscanf(line, "ShdPnd: %llx", &v) == 1)
			pending |= v;
	}
	if (f)
		fclose(f);
	return pending & 1ull << (SIGSTOP - 1);
}

static int run_alone(pid_t tid, long opts, bool intercept, struct kc_held_thread *h, struct kc_error **err)
{
	bool seized;
	uint64_t all = ~(uint64_t)0;
	*h = (struct kc_held_thread){.tid = tid, .group_stopped = kc_pid_state(tid) == 'T', .intercept = intercept};
	int rc = seize_stopped(tid, opts, &seized);
	if (!seized)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot trace thread %d", (int)tid);
	/* a SIGSTOP already pending cannot be blocked: the thread would take
	 * it at once and sit in a ptrace-stop nobody ends, the driver waiting
	 * for it in vain (CRIU leaves one for a process that was stopped
	 * before its dump; a debugger or job control may too); seen while the
	 * thread is stopped, swallowed as it comes (the other stop signals
	 * stay blocked, and the SIGCONT after the GPU restore drops them) */
	bool stop = rc == 0 && !intercept && sigstop_pending(tid);
	if (rc < 0 || ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(h->sigmask), &h->sigmask) < 0 ||
	    (!intercept && ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof(all), &all) < 0) ||
	    ptrace(PTRACE_CONT, tid, NULL, NULL) < 0 ||
	    (stop && (wait_traced(tid) < 0 || ptrace(PTRACE_CONT, tid, NULL, NULL) < 0))) {
		int e = errno;
		ptrace(PTRACE_DETACH, tid, NULL, NULL);
		return kc_error_errno(err, KC_EXIT_FAILURE, e ? e : EIO, "cannot run thread %d alone", (int)tid);
	}
	return 0;
}

int kc_thread_run_alone(pid_t tid, struct kc_held_thread *h, struct kc_error **err)
{
	return run_alone(tid, 0, false, h, err);
}

int kc_thread_run_traced(pid_t tid, struct kc_held_thread *h, struct kc_error **err)
{
	return run_alone(tid, PTRACE_O_TRACECLONE, true, h, err);
}

int kc_thread_adopt(pid_t tid, uint64_t own, struct kc_held_thread *h)
{
	/* it starts in a ptrace-stop of its own, with its creator's mask
	 * (all blocked), and stops with the group once let go */
	*h = (struct kc_held_thread){.tid = tid, .sigmask = own, .group_stopped = true, .intercept = true};
	return wait_traced(tid) < 0 || ptrace(PTRACE_CONT, tid, NULL, NULL) < 0 ? -1 : 0;
}

/* A signal a held thread was about to take: dropped where it would stop
 * it (its process is stopped anyway, and stays so once let go), else
 * kept in h->caught, to be sent again once it is let go; the signal to
 * deliver now: none. */
static int catch_signal(struct kc_held_thread *h, int st)
{
	int sig = WSTOPSIG(st), event = (unsigned)st >> 16;
	if (event || sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
		return 0;
	/* a fault of its own is not sent by anyone: held back, the thread
	 * would fault again and again, and the process die only later */
	if (sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGSYS)
		return sig;
	/* its signals are blocked, or they were, until the program changed
	 * its mask (rt_sigreturn, as CRIU leaves a restored thread): no
	 * handler of it runs while the rest of the process is stopped
	 * (hostile test: a restored process with a signal waiting died of
	 * SIGSEGV during its GPU restore) */
	h->caught |= 1ull << (sig - 1);
	return 0;
}

int kc_thread_stop(struct kc_held_thread *h, pid_t *child)
{
	*child = 0;
	/* a running tracee must be in a ptrace-stop to be changed and detached */
	if (ptrace(PTRACE_INTERRUPT, h->tid, NULL, NULL) < 0) {
		int st; /* exited: a traced thread waits for its tracer to reap it */
		waitpid(h->tid, &st, __WALL | WNOHANG);
		return -1;
	}
	for (int i = 0; i < 5000; i++) {
		int st;
		pid_t r = waitpid(h->tid, &st, __WALL | WNOHANG);
		if (r == h->tid) {
			if (!WIFSTOPPED(st))
				return -1;
			/* stopped on its way to create a thread (traced clones):
			 * that one is ours too, and this is a stop as good */
			unsigned long c = 0;
			if ((unsigned)st >> 16 == PTRACE_EVENT_CLONE && ptrace(PTRACE_GETEVENTMSG, h->tid, NULL, &c) == 0)
				*child = (pid_t)c;
			(void)catch_signal(h, st); /* a signal it stopped for goes with the detach */
			return 0;
		}
		if (r < 0 && errno != EINTR)
			return -1;
		sleep_ms(1);
	}
	return -1;
}

void kc_thread_let_go(const struct kc_held_thread *h, bool stopped)
{
	if (stopped && !h->intercept)
		ptrace(PTRACE_SETSIGMASK, h->tid, (void *)sizeof(h->sigmask), &h->sigmask);
	ptrace(PTRACE_DETACH, h->tid, NULL, NULL);
	/* it takes the group stop again on its way out of the ptrace-stop:
	 * a caller that looks for stopped processes next (recover continues
	 * them) must see it stopped, not running for a moment (1 in 2 runs
	 * of a test missed it); a SIGCONT meanwhile ended the stop: bounded */
	for (int i = 0; h->group_stopped && i < 200; i++) {
		char st = kc_pid_state(h->tid);
		if (st == 'T' || !st || st == 'Z' || st == 'X')
			break;
		sleep_ms(1);
	}
}

void kc_thread_release(const struct kc_held_thread *h)
{
	pid_t child;
	struct kc_held_thread copy = *h;
	kc_thread_let_go(h, kc_thread_stop(&copy, &child) == 0);
}

pid_t kc_thread_keep_running(struct kc_held_thread *h)
{
	int st;
	if (waitpid(h->tid, &st, __WALL | WNOHANG) != h->tid || !WIFSTOPPED(st))
		return 0;
	/* a stop signal sent meanwhile (a held thread's other signals are
	 * blocked, but SIGSTOP cannot be), or the group stop it starts */
	unsigned long child = 0;
	if ((unsigned)st >> 16 == PTRACE_EVENT_CLONE)
		ptrace(PTRACE_GETEVENTMSG, h->tid, NULL, &child);
	ptrace(PTRACE_CONT, h->tid, NULL, (void *)(long)catch_signal(h, st));
	return (pid_t)child;
}

int kc_thread_set_sigmask(pid_t tid, uint64_t mask, struct kc_error **err)
{
	bool seized;
	int rc = seize_stopped(tid, 0, &seized);
	if (!seized)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot trace thread %d", (int)tid);
	if (rc < 0 || ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof(mask), &mask) < 0)
		rc = kc_error_errno(err, KC_EXIT_FAILURE, errno ? errno : EIO, "cannot set the signal mask of thread %d",
				    (int)tid);
	ptrace(PTRACE_DETACH, tid, NULL, NULL);
	return rc;
}
