/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include "kc/backends.h"
#include "cli.h"
#include "kc/orchestrator.h"
#include "kc/util.h"

int kc_cmd_recover(const struct kc_args *ap, struct kc_error **err)
{
	const struct kc_args a = *ap;
	pid_t pid = a.pid;
	struct kc_backend_set cb;
	/* without a driver there is still a stopped tree or a TCP lock to undo */
	if (kc_backends_open(&cb, true, a.libcuda, a.verbose, err) < 0)
		return -1;
	_cleanup_free_ struct kc_proc_state *s = NULL;
	size_t n;
	int rc = kc_recover(pid, &cb.b, &s, &n, err);
	if (rc == 0)
		kc_cli_print_states(s, n, a.json);
	kc_backends_close(&cb);
	return rc;
}
