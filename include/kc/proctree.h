/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_PROCTREE_H
#define KC_PROCTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kc/error.h"

/* pid and all its descendants (via /proc/<pid>/task/<tid>/children),
 * parents before children.  KC_EXIT_NOENT if pid does not exist. */
int kc_proctree(pid_t pid, pid_t **pids, size_t *n, struct kc_error **err);
pid_t kc_proc_ppid(pid_t pid);

enum kc_kill_wait {
	KC_KILL_DYING,  /* the signal was taken: no pid is stopped any more */
	KC_KILL_EXITED, /* none is alive (teardown done) */
};

/* SIGKILL every pid and wait (bounded) as far as wait says. */
int kc_proctree_kill(const pid_t *pids, size_t n, enum kc_kill_wait wait, unsigned timeout_ms,
		     struct kc_error **err);
/* SIGCONT every pid. */
void kc_proctree_cont(const pid_t *pids, size_t n);

/* Thread tid of a stopped (SIGSTOP) process runs alone, through ptrace,
 * while the rest of the process stays stopped: the CUDA driver's restore
 * thread, which the GPU restore needs running.  Its signals are blocked
 * meanwhile (as CRIU's CUDA plugin does), so that none runs a handler of
 * the program while its other threads are stopped.  The caller's thread
 * is the tracer: kc_thread_release must come from the same thread.  Fails
 * (nothing held) where ptrace is not allowed or the thread is traced. */
struct kc_held_thread {
	pid_t tid;
	uint64_t sigmask;   /* its own, put back on release */
	bool group_stopped; /* when seized: it stops again once let go */
	/* kc_thread_run_traced: its mask is left alone (the program's code
	 * runs, and saves and restores masks: glibc's pthread_create put a
	 * mask set through ptrace back after it had been let go) */
	bool intercept;
	/* signals it was about to take while held (kc_thread_keep_running,
	 * kc_thread_stop), to be sent again once it is let go */
	uint64_t caught;
};
int kc_thread_run_alone(pid_t tid, struct kc_held_thread *h, struct kc_error **err);
/* Stops it again, puts its signal mask back and detaches; the process
 * stays as it is otherwise (a caller that wants it stopped sends SIGSTOP
 * after).  One seized in a group stop is back in it on return. */
void kc_thread_release(const struct kc_held_thread *h);
/* The two halves of it, for letting go of threads that may create more:
 * stopped (0; -1 if it is gone), with *child the thread it was creating
 * (traced clones), if that is where it stopped; then let go (stopped:
 * what the first half returned). */
int kc_thread_stop(struct kc_held_thread *h, pid_t *child);
void kc_thread_let_go(const struct kc_held_thread *h, bool stopped);
/* Runs tid through ptrace while its process stays stopped, for a lock
 * or checkpoint of the whole process: its mask is its own, the signals
 * it would take are caught (h->caught) and dropped, stop signals for
 * good, others to be sent again once let go; threads it creates are
 * traced too (their creation comes out of kc_thread_keep_running). */
int kc_thread_run_traced(pid_t tid, struct kc_held_thread *h, struct kc_error **err);
/* A thread so created, now traced: held as its creator is, with the
 * creator's own mask to get back (own). */
int kc_thread_adopt(pid_t tid, uint64_t own, struct kc_held_thread *h);
/* A held thread that a signal stopped meanwhile (SIGSTOP cannot be
 * blocked) is set running again; from the tracer's thread, often, while
 * the driver waits for it (the held thread is what serves the driver).
 * Returns the id of a thread it created meanwhile (kc_thread_run_traced),
 * else 0. */
pid_t kc_thread_keep_running(struct kc_held_thread *h);
/* Puts mask back on a thread nobody traces (one a killed kcheckpoint held):
 * seized, stopped, changed, detached. */
int kc_thread_set_sigmask(pid_t tid, uint64_t mask, struct kc_error **err);

#endif
