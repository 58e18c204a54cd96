/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_PROCTREE_H
#define KC_PROCTREE_H

#include <stddef.h>
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

#endif
