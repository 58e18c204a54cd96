/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "kc/orchestrator.h"
#include "kc/util.h"

struct job {
	const struct kc_backends *b;
	pid_t pid;
	kc_pid_fn fn;
	void *arg;
	int rc;
	double secs;
	struct kc_error *err;
	pthread_t thread;
	bool started;
};

static void *job_main(void *p)
{
	struct job *j = p;
	double t0 = kc_now();
	j->rc = j->fn(j->b, j->pid, j->arg, &j->err);
	j->secs = kc_now() - t0;
	return NULL;
}

int kc_parallel(const struct kc_backends *b, const pid_t *pids, size_t n, kc_pid_fn fn, void *arg,
		bool *ok, double *secs, struct kc_error **err)
{
	if (n == 0)
		return 0;
	_cleanup_free_ struct job *jobs = kc_xcalloc(n, sizeof(*jobs));
	/* signals stay with the main thread, which decides about rollback;
	 * blocked here around the loop (not kc_thread_start's way) because a
	 * job run inline, one process or no thread to be had, must not see
	 * them in the middle of a driver call either */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (size_t i = 0; i < n; i++) {
		jobs[i] = (struct job){.b = b, .pid = pids[i], .fn = fn, .arg = arg};
		/* one process: no thread needed */
		if (n > 1 && pthread_create(&jobs[i].thread, NULL, job_main, &jobs[i]) == 0)
			jobs[i].started = true;
		else
			job_main(&jobs[i]);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].started)
			pthread_join(jobs[i].thread, NULL);
		if (ok)
			ok[i] = jobs[i].rc == 0;
		if (secs)
			secs[i] = jobs[i].secs;
		if (jobs[i].rc < 0) {
			rc = -1;
			if (!jobs[i].err)
				kc_error_set(&jobs[i].err, KC_EXIT_FAILURE, 0, "failed");
			kc_error_prefix(&jobs[i].err, "pid %d", (int)jobs[i].pid);
			kc_error_propagate(err, jobs[i].err);
		}
	}
	return rc;
}

