/* SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>

#include "kc/backends.h"
#include "cli.h"
#include "kc/orchestrator.h"
#include "kc/util.h"

int kc_cmd_recover(int argc, char **argv, struct kc_error **err)
{
	const struct kc_command *cmd = kc_cli_find("recover");
	struct kc_args a;
	bool done;
	if (kc_cli_parse(cmd, argc, argv, &a, &done, err) < 0 || done)
		return done ? 0 : -1;
	if (kc_cli_want_args(cmd, &a, 1, err) < 0)
		return -1;
	pid_t pid = kc_parse_pid(a.pos[0]);
	if (pid < 0)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'%s' is not a pid", a.pos[0]);
	if (kc_require_root(err) < 0)
		return -1;
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
