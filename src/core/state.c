/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_stage.h"
#include "kc/orchestrator.h"
#include "kc/proctree.h"
#include "kc/report.h"
#include "kc/thp.h"
#include "kc/util.h"
#include "orchestrator_int.h"

/*
 * What the driver says of one process.  It answers for a CUDA process only
 * through the process' restore thread (all but that thread's id: run 36),
 * so a stopped one's thread runs alone meanwhile, as restore has it run;
 * never on memory a killed restore did not finish, nor where another
 * kcheckpoint works on the process (locked: the caller holds the pid
 * locks; a state without them takes them, so two never hold one thread).
 * Where it cannot be asked the state is "unknown", an error if strict
 * (recover needs every answer).  1: the process is gone.
 */
static int ask_driver(const struct kc_backends *b, pid_t pid, bool locked, bool strict, struct kc_proc_state *s,
		      struct kc_error **err)
{
	struct kc_error *e = NULL;
	int tid = 0;
	bool care = kc_needs_hold(pid);
	if (b->cuda->ops->get_restore_tid(b->cuda->h, pid, &tid, &e) < 0) {
		int cause = e->cause;
		if (cause == KC_CUDA_ERROR_NOT_INITIALIZED) {
			kc_error_free(e); /* a process without CUDA */
			return 0;
		}
		if (cause == KC_CUDA_ERROR_OPERATING_SYSTEM || (care && strict)) {
			kc_error_propagate(err, e);
			return cause == KC_CUDA_ERROR_OPERATING_SYSTEM ? 1 : -1;
		}
		kc_error_free(e); /* a running process answers all the same */
		e = NULL;
		tid = 0;
		if (care) {
			s->state = KC_CUDA_UNKNOWN;
			return 0;
		}
	}
	s->restore_tid = tid;
	struct kc_gpu_step a = {.op = KC_GPU_STATE, .b = b, .pid = pid, .state = &s->state};
	if (!care) {
		if (kc_gpu_step_call(&a, &e) == 0)
			return 0;
	} else {
		if (kc_fillmark_blocks(pid)) {
			s->state = KC_CUDA_UNKNOWN;
			return 0;
		}
		_cleanup_free_ int *lock = NULL;
		struct kc_held_thread held[1];
		size_t n_held = 0;
		if ((!locked && kc_pids_lock(&pid, 1, &lock, &e) < 0) || kc_hold_tid_if_stopped(pid, tid, held, &n_held, &e) < 0) {
			kc_pids_unlock(steal_ptr(lock), 1);
			if (strict) {
				kc_error_propagate(err, e);
				return -1;
			}
			kc_error_free(e);
			s->state = KC_CUDA_UNKNOWN;
			return 0;
		}
		struct kc_held_thread *hp = held; /* no thread is created: not realloc'ed */
		int r = kc_held_call(&hp, &n_held, kc_gpu_step_call, &a, &e);
		kc_release_threads(held, &n_held);
		kc_pids_unlock(steal_ptr(lock), 1);
		if (r == 0)
			return 0;
	}
	int cause = e->cause;
	kc_error_propagate(err, e);
	return cause == KC_CUDA_ERROR_OPERATING_SYSTEM ? 1 : -1;
}

static int tree_state(pid_t pid, const struct kc_backends *b, bool locked, bool strict, struct kc_proc_state **out,
		      size_t *n, struct kc_error **err)
{
	_cleanup_free_ pid_t *pids = NULL;
	size_t np;
	if (kc_proctree(pid, &pids, &np, err) < 0)
		return -1;
	_cleanup_free_ struct kc_proc_state *v = kc_xcalloc(np, sizeof(*v));
	size_t k = 0;
	for (size_t i = 0; i < np; i++) {
		struct kc_proc_state *s = &v[k];
		s->pid = pids[i];
		kc_pid_comm(pids[i], s->comm, sizeof(s->comm));
		char st = kc_pid_state(pids[i]);
		s->run = kc_pid_tracer(pids[i]) > 0	 ? "traced"
			 : kc_fillmark_blocks(pids[i]) ? "filling"
			 : st == 'T' || st == 't'	 ? "stopped"
						 : "running";
		s->state = KC_CUDA_NONE;
		struct kc_error *e = NULL;
		int r = b->cuda ? ask_driver(b, pids[i], locked, strict, s, &e) : 0;
		if (r == 1 && i > 0) {
			kc_error_free(e); /* exited meanwhile */
			continue;
		}
		if (r != 0) {
			kc_error_propagate(err, e);
			return kc_error_prefix(err, "CUDA state of pid %d", (int)pids[i]);
		}
		k++;
	}
	*out = steal_ptr(v);
	*n = k;
	return 0;
}

int kc_tree_state(pid_t pid, const struct kc_backends *b, struct kc_proc_state **out, size_t *n,
		  struct kc_error **err)
{
	return tree_state(pid, b, false, false, out, n, err);
}

static int recover_locked(pid_t pid, const struct kc_backends *b, const pid_t *pids, size_t np,
			  struct kc_proc_state **out, size_t *n, struct kc_error **err);

int kc_recover(pid_t pid, const struct kc_backends *b, struct kc_proc_state **out, size_t *n,
	       struct kc_error **err)
{
	/* a kcheckpoint killed while it held a THP mode left it set */
	kc_thp_recover();
	_cleanup_free_ pid_t *pids = NULL;
	size_t np;
	if (kc_proctree(pid, &pids, &np, err) < 0)
		return -1;
	/* not while another kcheckpoint works on them (a dead one's locks are
	 * gone with it) */
	int *locks = NULL;
	if (kc_pids_lock(pids, np, &locks, err) < 0)
		return -1;
	int rc = recover_locked(pid, b, pids, np, out, n, err);
	kc_pids_unlock(locks, np);
	return rc;
}

static int recover_locked(pid_t pid, const struct kc_backends *b, const pid_t *pids, size_t np,
			  struct kc_proc_state **out, size_t *n, struct kc_error **err)
{
	/* a dump killed while CRIU ran leaves CRIU running on: whatever we
	 * resume now, it stops again when CRIU finishes; a debugger on any
	 * thread keeps what it stopped */
	for (size_t i = 0; i < np; i++) {
		pid_t t = kc_pid_tracer_any(pids[i]);
		if (t > 0) {
			char comm[64];
			kc_pid_comm(t, comm, sizeof(comm));
			if (strcmp(comm, "criu"))
				return kc_error_set(err, KC_EXIT_BUSY, EBUSY,
						    "pid %d is being traced by pid %d ('%s'): run 'kcheckpoint recover' "
						    "again once it has let go",
						    (int)pids[i], (int)t, comm);
			return kc_error_set(err, KC_EXIT_BUSY, EBUSY,
					    "pid %d is being traced by pid %d ('%s'), a CRIU still at work: run "
					    "'kcheckpoint recover' again once it has exited",
					    (int)pids[i], (int)t, comm);
		}
	}
	for (size_t i = 0; i < np; i++)
		if (kc_fillmark_blocks(pids[i])) {
			kc_error_set(err, KC_EXIT_CRIU, 0,
				     "pid %d was restored by a kcheckpoint that stopped before the process' memory was "
				     "all back: it must not run",
				     (int)pids[i]);
			return kc_error_set_hint(err, "kill the tree and restore the image again (it is intact)");
		}
	_cleanup_free_ struct kc_proc_state *st = NULL;
	size_t ns;
	if (tree_state(pid, b, true, true, &st, &ns, err) < 0)
		return -1;
	_cleanup_free_ struct kc_gpu_set *ckpt = kc_gpu_set_new(b, ns);
	_cleanup_free_ struct kc_gpu_set *locked = kc_gpu_set_new(b, ns);
	for (size_t i = 0; i < ns; i++) {
		if (st[i].state == KC_CUDA_CHECKPOINTED)
			ckpt->pids[ckpt->n++] = st[i].pid;
		if (st[i].state == KC_CUDA_CHECKPOINTED || st[i].state == KC_CUDA_LOCKED)
			locked->pids[locked->n++] = st[i].pid;
	}
	/* connections a --tcp-established dump left locked (repair mode, DROP
	 * rules): only sockets in repair mode are touched */
	if (b->criu && b->criu->ops->unlock_network && b->criu->ops->unlock_network(b->criu->h, pids, np, err) < 0)
		return kc_error_prefix(err, "unlock TCP connections");
	/* a restore killed while it held restore threads left their signals
	 * blocked */
	for (size_t i = 0; i < np; i++)
		kc_holdmark_undo(pids[i]);
	/* GPUs first, the tree still as it is: a stopped process' restore
	 * thread runs alone for it, as in a restore (a SIGCONT would deliver
	 * the signals waiting for a process its user stopped: a SIGTERM killed
	 * one, hostile test), kept running while the driver works */
	if (ckpt->n || locked->n) {
		if (!b->cuda) /* cannot happen: their state came from the driver */
			return kc_error_set(err, KC_EXIT_GPU, 0, "no CUDA driver loaded");
		_cleanup_free_ struct kc_gpu_set *ckpt_st = kc_gpu_set_new(b, ns);
		_cleanup_free_ struct kc_gpu_set *locked_st = kc_gpu_set_new(b, ns);
		for (size_t i = 0; i < ckpt->n; i++)
			if (kc_needs_hold(ckpt->pids[i]))
				ckpt_st->pids[ckpt_st->n++] = ckpt->pids[i];
		for (size_t i = 0; i < locked->n; i++)
			if (kc_needs_hold(locked->pids[i]))
				locked_st->pids[locked_st->n++] = locked->pids[i];
		_cleanup_free_ struct kc_held_thread *held = NULL;
		size_t n_held = 0;
		struct kc_error *why = NULL;
		if ((ckpt_st->n || locked_st->n) &&
		    kc_hold_restore_threads(b, ckpt_st, locked_st, &held, &n_held, &why) < 0) {
			/* no hold (ptrace not allowed, no thread id): they run,
			 * as restore lets a tree run then; marked ones are
			 * stopped again below */
			kc_error_free(why);
			kc_release_threads(held, &n_held);
			kc_proctree_cont(ckpt_st->pids, ckpt_st->n);
			kc_proctree_cont(locked_st->pids, locked_st->n);
		}
		struct kc_progress *gp = kc_progress_start("gpu-restore", NULL, NULL);
		struct kc_gpu_step rs = {.op = KC_GPU_RESTORE, .set = ckpt}, un = {.op = KC_GPU_UNLOCK, .set = locked};
		int rc = kc_held_call(&held, &n_held, kc_gpu_step_call, &rs, err) < 0 ? kc_error_prefix(err, "GPU restore")
			 : kc_held_call(&held, &n_held, kc_gpu_step_call, &un, err) < 0 ? kc_error_prefix(err, "GPU unlock")
											 : 0;
		kc_progress_stop(gp);
		kc_release_threads(held, &n_held);
		if (rc < 0)
			return -1;
	}
	/* then the tree runs, but for processes stopped before a dump, or
	 * when dumped (their stop marks): a dump or restore killed before it
	 * stopped them again leaves them running, so they are stopped */
	for (size_t i = 0; i < np; i++) {
		char ps = kc_pid_state(pids[i]);
		bool stopped = ps == 'T' || ps == 't';
		if (!kc_stopmark_take(pids[i])) {
			if (stopped)
				kc_proctree_cont(&pids[i], 1);
			continue;
		}
		if (stopped)
			continue;
		kill(pids[i], SIGSTOP);
		/* so the report below says so (hostile test: 1 in 5 said running) */
		for (int w = 0; w < 500 && kc_pid_state(pids[i]) != 'T' && kc_pid_alive(pids[i]); w++) {
			struct timespec ts = {0, 2000000L};
			nanosleep(&ts, NULL);
		}
	}
	return tree_state(pid, b, true, true, out, n, err);
}
