/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRIU's common failures, said for a person.
 *
 * CRIU's log says what failed in its own terms ("Can't handle non-regular
 * mapping on 4242's map 7f...").  The table below turns the failures that
 * real workloads hit into one line naming the process and the cause, and
 * the option that fixes it.  Anything not in it falls back to CRIU's own
 * error lines (kc_criu_log_tail).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc/criu.h"
#include "kc/util.h"

struct rule {
	const char *needle; /* in an "Error" line of the log */
	bool subject;       /* cause follows the process: "pid 42 ('python3') <cause>" */
	const char *cause;
	const char *hint;   /* NULL if none helps */
};

static const struct rule rules[] = {
	{"Can't handle non-regular mapping", true, "maps a device file CRIU cannot dump",
	 "a worker forked after CUDA init needs kcheckpoint's CRIU plugin (see KCHECKPOINT_CRIU_LIBDIR in "
	 "kcheckpoint(1)); or start workers with the spawn or forkserver method"},
	{"Connected TCP socket, consider using", true, "has an established TCP connection",
	 "use --tcp-established to keep it, or --tcp-close to restore it closed (clients reconnect)"},
	{"Connected TCP socket in image", false, "the image holds established TCP connections",
	 "it was dumped with --tcp-established; restore it on a node where their addresses exist"},
	{"External socket is used", true, "has a unix socket connected to a process outside the tree",
	 "dump the tree that holds both ends (their common parent), or pass --criu-opt=--ext-unix-sk"},
	{"Found dangling tty", true, "has the terminal of a shell", "use --shell-job"},
	{"Task attached to shell terminal", true, "has the terminal of a shell", "use --shell-job"},
	{"Can't create link remap for", true, "has a deleted file that still has another name",
	 NULL},
	{"Can't link remap to", false, "a link_remap file of an earlier dump is in the way",
	 "remove the stale link_remap.* files beside that file (no image of this node needs them once "
	 "restored or discarded)"},
	{"Can't dump file", true, "has a descriptor CRIU cannot dump", NULL},
	{"Can't fork for", false, "a pid of the image is taken on this node",
	 "is the dumped process still running, or did another process get its pid? end it, or wait"},
	{"Missing required plugin", false, "the image was dumped with a CRIU plugin this restore does not have",
	 "restore with the kcheckpoint (and plugin dir) that dumped it"},
	{"opt: Operation not supported", false, "this CRIU cannot dump inet sockets on this kernel",
	 "use CRIU >= 4.2 (scripts/build-criu.sh builds 4.2.1); kernels >= 6.16 refuse what older CRIUs ask"},
	{"Unable to load", false, "CRIU could not load a plugin", "check KCHECKPOINT_CRIU_LIBDIR"},
};

/* "(00.040490) Error (criu/files-reg.c:1159): Can't ...": the part after
 * the source location. */
static const char *error_text(const char *line)
{
	const char *e = strstr(line, "Error (");
	if (!e)
		return NULL;
	const char *close = strstr(e, "): ");
	return close ? close + 3 : e;
}

char *kc_criu_explain(const char *log_text, char **hint)
{
	*hint = NULL;
	_cleanup_free_ char *text = kc_xstrdup(log_text);
	char who[96] = "";
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		/* the task CRIU is at: "Dumping task (pid: 4242 comm: python3)" */
		const char *t = strstr(l, "Dumping task (pid: ");
		int pid;
		char comm[32];
		if (t && sscanf(t, "Dumping task (pid: %d comm: %31[^)])", &pid, comm) == 2) {
			snprintf(who, sizeof(who), "pid %d ('%s')", pid, comm);
			continue;
		}
		const char *msg = error_text(l);
		if (!msg)
			continue;
		for (size_t i = 0; i < KC_ARRAY_SIZE(rules); i++) {
			if (!strstr(msg, rules[i].needle))
				continue;
			/* The pid in "...on 4242's map" beats the task context. */
			int mpid;
			char mwho[32] = "";
			const char *on = strstr(msg, "mapping on ");
			if (on && sscanf(on, "mapping on %d's", &mpid) == 1)
				snprintf(mwho, sizeof(mwho), "pid %d", mpid);
			const char *subject = *mwho ? mwho : *who ? who : "a process of the tree";
			_cleanup_free_ char *detail = kc_xasprintf(" (CRIU: %s)", msg);
			char *out = rules[i].subject ? kc_xasprintf("%s %s%s", subject, rules[i].cause, detail)
						     : kc_xasprintf("%s%s", rules[i].cause, detail);
			if (rules[i].hint)
				*hint = kc_xstrdup(rules[i].hint);
			return out;
		}
	}
	return NULL;
}
