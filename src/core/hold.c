/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Restore keeps the tree CRIU left stopped so until its GPUs are back, but
 * for each CUDA process' restore thread, which the driver needs running:
 * that one runs alone, through ptrace, its signals blocked (CRIU's CUDA
 * plugin does the same).  Here: holding and letting go of those threads,
 * and the marks that let recover undo a hold whose kcheckpoint was killed
 * and stop again what was stopped when dumped.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gpu_stage.h"
#include "kc/proctree.h"
#include "kc/signals.h"
#include "kc/threads.h"
#include "kc/util.h"
#include "orchestrator_int.h"

/*
 * A held thread's signals are blocked; if kcheckpoint is killed meanwhile
 * the kernel detaches it with them still blocked.  Its own mask waits in
 * the run dir ("<start time> <mask hex>") for recover to put back.
 */
static int holdmark_set(const struct kc_held_thread *h, struct kc_error **err)
{
	char text[64];
	snprintf(text, sizeof(text), "%llu %" PRIx64 "\n", (unsigned long long)kc_pid_starttime(h->tid), h->sigmask);
	return kc_run_mark_write("held", h->tid, text, err);
}

/* The mask tid's mark keeps, if the mark is whole and of this very
 * thread (not one that got the id of a held thread since). */
static bool holdmark_read(pid_t tid, uint64_t *mask)
{
	_cleanup_free_ char *path = kc_run_mark_path("held", tid);
	_cleanup_free_ char *text = NULL;
	unsigned long long start, m;
	if (kc_read_file(path, &text, NULL, NULL) < 0 || sscanf(text, "%llu %llx", &start, &m) != 2 ||
	    start != kc_pid_starttime(tid))
		return false;
	*mask = (uint64_t)m;
	return true;
}

static bool holdmark_valid(pid_t tid)
{
	uint64_t mask;
	return holdmark_read(tid, &mask);
}

/* Marks (name: "<kind>-<id>") of processes or threads that are gone (a
 * tree killed rather than recovered), or whose id another one has now,
 * are of no use to anyone. */
static void sweep(const char *kind, bool (*valid)(pid_t id))
{
	DIR *d = opendir(kc_run_dir());
	if (!d)
		return;
	size_t len = strlen(kind);
	struct dirent *de;
	while ((de = readdir(d))) {
		int id;
		char end;
		if (strncmp(de->d_name, kind, len) || de->d_name[len] != '-' ||
		    sscanf(de->d_name + len + 1, "%d%c", &id, &end) != 1 || id <= 0 || valid(id))
			continue; /* not a mark, or still recover's business */
		_cleanup_free_ char *path = kc_xasprintf("%s/%s", kc_run_dir(), de->d_name);
		unlink(path);
	}
	closedir(d);
}

void kc_holdmark_undo(pid_t pid)
{
	_cleanup_free_ char *task = kc_xasprintf("/proc/%d/task", (int)pid);
	DIR *d = opendir(task);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		pid_t tid = (pid_t)atoi(de->d_name);
		if (tid <= 0)
			continue;
		_cleanup_free_ char *path = kc_run_mark_path("held", tid);
		if (access(path, F_OK) < 0)
			continue;
		uint64_t mask;
		if (holdmark_read(tid, &mask))
			(void)kc_thread_set_sigmask(tid, mask, NULL);
		unlink(path);
	}
	closedir(d);
}

static bool all_threads_stopped(pid_t pid);

/* The signals held threads were about to take, to their processes again,
 * once every thread of one that was stopped is back in its stop: one a
 * thread still on its way there took, a fatal one killed the process
 * (hostile test). */
static void send_caught(const struct kc_held_thread *h, size_t n, const pid_t *tgid)
{
	for (size_t i = 0; i < n; i++) {
		if (!h[i].caught || tgid[i] <= 0)
			continue;
		for (int w = 0; h[i].group_stopped && w < 500 && !all_threads_stopped(tgid[i]); w++) {
			struct timespec ts = {0, 1000000L};
			nanosleep(&ts, NULL);
		}
		for (int sig = 1; sig <= 64; sig++)
			if (h[i].caught & 1ull << (sig - 1))
				kill(tgid[i], sig);
	}
}

/* The second half of letting go, for threads already stopped where
 * stopped[i] says: mask back (kept ones), detached, marks gone, the
 * signals they were about to take sent again. */
static void let_go_all(struct kc_held_thread *h, size_t n, const bool *stopped)
{
	_cleanup_free_ pid_t *tgid = kc_xcalloc(n + 1, sizeof(*tgid));
	for (size_t i = 0; i < n; i++)
		tgid[i] = kc_tid_tgid(h[i].tid);
	for (size_t i = 0; i < n; i++) {
		kc_thread_let_go(&h[i], stopped[i]);
		_cleanup_free_ char *path = kc_run_mark_path("held", h[i].tid);
		unlink(path);
	}
	send_caught(h, n, tgid);
}

void kc_release_threads(struct kc_held_thread *h, size_t *n)
{
	_cleanup_free_ bool *stopped = kc_xcalloc(*n + 1, sizeof(*stopped));
	for (size_t i = 0; i < *n; i++) {
		pid_t child;
		stopped[i] = kc_thread_stop(&h[i], &child) == 0;
	}
	let_go_all(h, *n, stopped);
	*n = 0;
}

static bool is_held(const struct kc_held_thread *held, size_t n, pid_t tid)
{
	for (size_t i = 0; i < n; i++)
		if (held[i].tid == tid)
			return true;
	return false;
}

/* tid runs alone, its mask kept where recover finds it (or not held).
 * A mark a killed kcheckpoint left for it holds the thread's own mask
 * (the one it has now is that hold's): that one is kept and put back. */
static int hold_one(pid_t tid, bool clones, struct kc_held_thread *h, struct kc_error **err)
{
	uint64_t own;
	bool marked = holdmark_read(tid, &own);
	if ((clones ? kc_thread_run_traced(tid, h, err) : kc_thread_run_alone(tid, h, err)) < 0)
		return -1;
	if (marked)
		h->sigmask = own;
	if (holdmark_set(h, err) < 0) {
		kc_thread_release(h);
		return -1;
	}
	return 0;
}

/* The restore thread of each process of both sets runs alone. */
int kc_hold_restore_threads(const struct kc_backends *b, const struct kc_gpu_set *a, const struct kc_gpu_set *c,
				struct kc_held_thread **held, size_t *n_held, struct kc_error **err)
{
	if (!b->cuda || !b->cuda->ops->get_restore_tid)
		return kc_error_set(err, KC_EXIT_GPU, 0, "the driver names no restore thread");
	sweep("held", holdmark_valid);
	*held = kc_xcalloc(a->n + c->n + 1, sizeof(**held));
	const struct kc_gpu_set *sets[] = {a, c};
	for (size_t k = 0; k < 2; k++)
		for (size_t i = 0; i < sets[k]->n; i++) {
			/* a process in both sets: asked once */
			bool again = false;
			for (size_t j = 0; k == 1 && j < a->n && !again; j++)
				again = a->pids[j] == sets[k]->pids[i];
			if (again)
				continue;
			int tid = 0;
			if (b->cuda->ops->get_restore_tid(b->cuda->h, sets[k]->pids[i], &tid, err) < 0)
				return -1;
			if (tid <= 0)
				return kc_error_set(err, KC_EXIT_GPU, 0, "no restore thread for pid %d",
						    (int)sets[k]->pids[i]);
			if (is_held(*held, *n_held, tid))
				continue;
			/* CRIU stops the threads as it ends; one still on its way
			 * would trap again once continued */
			for (int w = 0; w < 1000 && !kc_signals_pending(); w++) {
				char st = kc_pid_state(tid);
				if (st == 'T' || !st) /* stopped, or no such thread (ptrace says) */
					break;
				struct timespec ts = {0, 1000000L};
				nanosleep(&ts, NULL);
			}
			if (hold_one(tid, false, &(*held)[*n_held], err) < 0)
				return -1;
			(*n_held)++;
		}
	return 0;
}

/* How many threads pid has, in a group stop ('T'), or stopped either
 * way ('T', or 't' by a tracer); stops counting at the first stopped one
 * when first_stop. */
static void thread_stops(pid_t pid, bool first_stop, size_t *n, size_t *group, size_t *any)
{
	*n = *group = *any = 0;
	_cleanup_free_ char *task = kc_xasprintf("/proc/%d/task", (int)pid);
	DIR *d = opendir(task);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) && !(first_stop && *any)) {
		pid_t tid = (pid_t)atoi(de->d_name);
		if (tid <= 0)
			continue;
		char st = kc_pid_state(tid);
		(*n)++;
		*group += st == 'T';
		*any += st == 'T' || st == 't';
	}
	closedir(d);
}

bool kc_needs_hold(pid_t pid)
{
	size_t n, group, any;
	thread_stops(pid, true, &n, &group, &any);
	return any > 0;
}

static int traced_by_another(pid_t pid, pid_t tid, struct kc_error **err)
{
	pid_t tracer = kc_pid_tracer(tid);
	if (tracer <= 0 || tracer == getpid())
		return 0;
	char comm[64];
	kc_pid_comm(tracer, comm, sizeof(comm));
	return kc_error_set(err, KC_EXIT_BUSY, EBUSY,
			    "pid %d is stopped, and its thread %d traced by pid %d ('%s'): the driver cannot be asked "
			    "about it until that one lets go",
			    (int)pid, (int)tid, (int)tracer, comm);
}

int kc_hold_if_stopped(const struct kc_backends *b, pid_t pid, struct kc_held_thread *held, size_t *n_held,
		       struct kc_error **err)
{
	/* a thread stopped while the process runs (a debugger's non-stop
	 * mode) may be the restore thread as well */
	if (!b->cuda || !b->cuda->ops->get_restore_tid || !kc_needs_hold(pid))
		return 0;
	/* the one call the driver answers without that thread (run 36) */
	int tid = 0;
	struct kc_error *e = NULL;
	if (b->cuda->ops->get_restore_tid(b->cuda->h, pid, &tid, &e) < 0 || tid <= 0) {
		int cause = e ? e->cause : 0;
		if (!e || cause == KC_CUDA_ERROR_NOT_INITIALIZED || cause == KC_CUDA_ERROR_OPERATING_SYSTEM) {
			kc_error_free(e); /* no CUDA, or gone: answered at once */
			return 0;
		}
		/* a thread we cannot name would be waited for in vain */
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "restore thread of stopped pid %d", (int)pid);
	}
	return kc_hold_tid_if_stopped(pid, tid, held, n_held, err);
}

int kc_hold_tid_if_stopped(pid_t pid, pid_t tid, struct kc_held_thread *held, size_t *n_held, struct kc_error **err)
{
	char st = kc_pid_state(tid);
	if ((st != 'T' && st != 't') || is_held(held, *n_held, tid))
		return 0;
	if (traced_by_another(pid, tid, err) < 0)
		return -1;
	if (hold_one(tid, false, &held[*n_held], err) < 0)
		return -1;
	(*n_held)++;
	return 0;
}

int kc_hold_all_threads(pid_t pid, struct kc_held_thread **held, size_t *n_held, struct kc_error **err)
{
	_cleanup_free_ char *task = kc_xasprintf("/proc/%d/task", (int)pid);
	DIR *d = opendir(task);
	if (!d)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot list the threads of pid %d", (int)pid);
	size_t cap = *n_held + 16;
	*held = kc_xrealloc(*held, cap * sizeof(**held));
	struct dirent *de;
	int rc = 0;
	while (rc == 0 && (de = readdir(d))) {
		pid_t tid = (pid_t)atoi(de->d_name);
		/* one a held thread created since is ours already: its
		 * creator's report of it has it held (kc_held_settle) */
		if (tid <= 0 || is_held(*held, *n_held, tid) || kc_pid_tracer(tid) == getpid())
			continue;
		if (*n_held == cap) {
			cap *= 2;
			*held = kc_xrealloc(*held, cap * sizeof(**held));
		}
		rc = traced_by_another(pid, tid, err) < 0 || hold_one(tid, true, &(*held)[*n_held], err) < 0 ? -1 : 0;
		if (rc == 0)
			(*n_held)++;
	}
	closedir(d);
	return rc;
}

struct held_call {
	int (*fn)(void *arg, struct kc_error **err);
	void *arg;
	struct kc_error *err;
	int rc;
	atomic_bool done;
};

static void *held_call_main(void *p)
{
	struct held_call *c = p;
	c->rc = c->fn(c->arg, &c->err);
	atomic_store(&c->done, true);
	return NULL;
}

void kc_held_settle(struct kc_held_thread **held, size_t *n_held)
{
	for (size_t i = 0; i < *n_held; i++) {
		pid_t child = kc_thread_keep_running(&(*held)[i]);
		if (child <= 0)
			continue;
		/* a thread created meanwhile has its creator's blocked signals:
		 * held too, to get the creator's own */
		uint64_t own = (*held)[i].sigmask;
		*held = kc_xrealloc(*held, (*n_held + 1) * sizeof(**held));
		struct kc_held_thread *h = &(*held)[*n_held];
		(void)kc_thread_adopt(child, own, h); /* one gone already is reaped when let go */
		(void)holdmark_set(h, NULL);
		(*n_held)++;
	}
}

static bool all_threads_stopped(pid_t pid)
{
	size_t n, group, any;
	thread_stops(pid, false, &n, &group, &any);
	return group == n;
}

void kc_release_all_threads(struct kc_held_thread **held, size_t *n_held)
{
	kc_held_settle(held, n_held);
	/* every one stopped before any is let go: one still running could
	 * create a thread meanwhile, traced by us and never let go (hostile
	 * test: CRIU refused that thread, stopped on its own, and it kept
	 * every signal blocked); the ones created so are stopped too */
	_cleanup_free_ bool *stopped = NULL;
	for (size_t i = 0; i < *n_held; i++) {
		pid_t child = 0;
		stopped = kc_xrealloc(stopped, (*n_held + 1) * sizeof(*stopped));
		stopped[i] = kc_thread_stop(&(*held)[i], &child) == 0;
		if (child <= 0 || is_held(*held, *n_held, child))
			continue;
		*held = kc_xrealloc(*held, (*n_held + 1) * sizeof(**held));
		(*held)[*n_held] = (struct kc_held_thread){
			.tid = child, .sigmask = (*held)[i].sigmask, .group_stopped = true, .intercept = true};
		(void)holdmark_set(&(*held)[*n_held], NULL);
		(*n_held)++;
	}
	let_go_all(*held, *n_held, stopped);
	*n_held = 0;
}

int kc_held_call(struct kc_held_thread **held, size_t *n_held, int (*fn)(void *arg, struct kc_error **err),
		 void *arg, struct kc_error **err)
{
	struct held_call c = {.fn = fn, .arg = arg};
	pthread_t t;
	if (!*n_held || kc_thread_start(&t, held_call_main, &c) != 0)
		return fn(arg, err);
	/* ptrace requests come from the tracer's own thread: this one */
	while (!atomic_load(&c.done)) {
		kc_held_settle(held, n_held);
		struct timespec ts = {0, 2000000L};
		nanosleep(&ts, NULL);
	}
	pthread_join(t, NULL);
	if (c.rc < 0)
		kc_error_propagate(err, c.err);
	return c.rc;
}

/*
 * A process that was stopped when dumped comes back stopped (restore.c
 * run_tree).  Should kcheckpoint be killed before that, recover, which
 * has to let the tree run for the driver, stops it again: restore leaves
 * "stopped-<pid>" ("<start time>") in the run dir while it works.
 */
int kc_stopmark_set(pid_t pid, struct kc_error **err)
{
	char text[32];
	snprintf(text, sizeof(text), "%llu\n", (unsigned long long)kc_pid_starttime(pid));
	return kc_run_mark_write("stopped", pid, text, err);
}

void kc_stopmark_clear(pid_t pid)
{
	_cleanup_free_ char *path = kc_run_mark_path("stopped", pid);
	unlink(path);
}

/* pid's mark, if it is of this very process */
static bool stopmark_valid(pid_t pid)
{
	_cleanup_free_ char *path = kc_run_mark_path("stopped", pid);
	_cleanup_free_ char *text = NULL;
	unsigned long long start;
	return kc_read_file(path, &text, NULL, NULL) == 0 && sscanf(text, "%llu", &start) == 1 && start &&
	       start == kc_pid_starttime(pid);
}

bool kc_stopmark_take(pid_t pid)
{
	bool ours = stopmark_valid(pid);
	kc_stopmark_clear(pid); /* taken, or stale: another process has the pid now */
	return ours;
}

void kc_stopmark_sweep(void)
{
	sweep("stopped", stopmark_valid);
}
