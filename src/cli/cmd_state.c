/* SPDX-License-Identifier: Apache-2.0 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "kc/backends.h"
#include "cli.h"
#include "kc/orchestrator.h"
#include "kc/util.h"

/* Shared by `state` and `recover`: the same table after either. */
void kc_cli_print_states(const struct kc_proc_state *s, size_t n, bool json)
{
	if (json) {
		json_object *arr = json_object_new_array();
		for (size_t i = 0; i < n; i++) {
			json_object *o = json_object_new_object();
			json_object_object_add(o, "pid", json_object_new_int(s[i].pid));
			json_object_object_add(o, "comm", json_object_new_string(s[i].comm));
			json_object_object_add(o, "cuda", json_object_new_boolean(s[i].state != KC_CUDA_NONE));
			json_object_object_add(o, "state", s[i].state == KC_CUDA_NONE
								   ? json_object_new_null()
								   : json_object_new_string(kc_cuda_state_name(s[i].state)));
			if (s[i].restore_tid)
				json_object_object_add(o, "restore_tid", json_object_new_int(s[i].restore_tid));
			json_object_object_add(o, "process", json_object_new_string(s[i].run ? s[i].run : "running"));
			json_object_array_add(arr, o);
		}
		json_object *root = json_object_new_object();
		json_object_object_add(root, "processes", arr);
		kc_cli_print_json(root);
		return;
	}
	printf("%-8s %-16s %-13s %-9s %s\n", "PID", "COMM", "CUDA", "PROCESS", "RESTORE-TID");
	for (size_t i = 0; i < n; i++) {
		char tid[16] = "-";
		if (s[i].restore_tid)
			snprintf(tid, sizeof(tid), "%d", s[i].restore_tid);
		printf("%-8d %-16s %-13s %-9s %s\n", (int)s[i].pid, s[i].comm,
		       s[i].state == KC_CUDA_NONE ? "-" : kc_cuda_state_name(s[i].state), s[i].run ? s[i].run : "running",
		       tid);
	}
}

int kc_cmd_state(const struct kc_args *ap, struct kc_error **err)
{
	const struct kc_args a = *ap;
	pid_t pid = a.pid;
	struct kc_backend_set cb = {0};
	if (kc_backends_open_gpu(&cb, a.libcuda, a.verbose, err) < 0)
		return -1;
	cb.b.criu = NULL;
	_cleanup_free_ struct kc_proc_state *s = NULL;
	size_t n;
	int rc = kc_tree_state(pid, &cb.b, &s, &n, err);
	if (rc == 0)
		kc_cli_print_states(s, n, a.json);
	kc_backends_close(&cb);
	return rc;
}
