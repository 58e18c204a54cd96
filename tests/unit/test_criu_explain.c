/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kc_criu_explain on log lines the way CRIU writes them.  Each excerpt was
 * taken from a real failed run (CRIU 4.1.1 and 4.2.1, kernel 6.18): the
 * timing prefixes, the source locations and the harmless RLIMIT line that
 * every run logs first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kc/criu.h"

#define RLIMIT "(00.032230) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n"

struct want {
	const char *log;
	const char *cause; /* substring of the explanation */
	const char *hint;  /* substring of the hint, NULL: no hint */
};

static void check(const struct want *w)
{
	char *hint = NULL;
	char *why = kc_criu_explain(w->log, &hint);
	assert_non_null(why);
	if (!strstr(why, w->cause))
		fail_msg("'%s' does not say '%s'", why, w->cause);
	if (w->hint) {
		assert_non_null(hint);
		if (!strstr(hint, w->hint))
			fail_msg("hint '%s' does not say '%s'", hint, w->hint);
	} else {
		assert_null(hint);
	}
	free(why);
	free(hint);
}

static void device_mapping_names_the_pid(void **state)
{
	check(&(struct want){RLIMIT "(00.052114) Dumping task (pid: 8127 comm: python3)\n"
				    "(00.061000) Error (criu/proc_parse.c:663): Can't handle non-regular mapping on "
				    "8130's map 200600000\n(00.061500) Error (criu/cr-dump.c:1975): Dumping FAILED.\n",
			     "pid 8130 maps a device file", "spawn or forkserver"});
}

static void established_tcp_names_the_task(void **state)
{
	check(&(struct want){RLIMIT "(00.010000) Dumping task (pid: 4242 comm: server)\n"
				    "(00.020000) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using "
				    "--tcp-established option.\n",
			     "pid 4242 ('server') has an established TCP connection", "--tcp-close"});
}

static void old_criu_on_new_kernel(void **state)
{
	check(&(struct want){RLIMIT "(00.030000) Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: Operation "
				    "not supported\n",
			     "cannot dump inet sockets on this kernel", "4.2"});
}

static void shell_job(void **state)
{
	check(&(struct want){"(00.01) Dumping task (pid: 77 comm: sleep)\n(00.02) Error (criu/tty.c:1830): Found "
			     "dangling tty with sid 70 pgid 77 (pts) on peer fd 0.\n",
			     "pid 77 ('sleep') has the terminal of a shell", "--shell-job"});
}

static void stale_link_remap(void **state)
{
	check(&(struct want){"(00.040467) Warn  (criu/files-reg.c:1881): Can't link  -> ./dev/shm/link_remap.30\n"
			     "(00.040490) Error (criu/files-reg.c:1159): Can't link remap to /dev/shm/sem.en7x97: File "
			     "exists\n",
			     "link_remap file of an earlier dump", "stale link_remap"});
}

static void pid_taken_at_restore(void **state)
{
	check(&(struct want){RLIMIT "(00.026087) Error (criu/cr-restore.c:1237): Can't fork for 8040: File exists\n",
			     "a pid of the image is taken", "still running"});
}

static void unsupported_descriptor_has_no_hint(void **state)
{
	check(&(struct want){"(00.01) Dumping task (pid: 9 comm: x)\n(00.02) Error (criu/files-ext.c:94): Can't dump "
			     "file 5 of that type [20600] (chr 10:232)\n",
			     "pid 9 ('x') has a descriptor CRIU cannot dump", NULL});
}

static void harmless_lines_alone_explain_nothing(void **state)
{
	char *hint = NULL;
	assert_null(kc_criu_explain(RLIMIT "(00.5) Error (criu/cr-dump.c:1975): Dumping FAILED.\n", &hint));
	assert_null(hint);
	assert_null(kc_criu_explain("", &hint));
	/* a task line is context, whatever its comm says */
	assert_null(kc_criu_explain("(00.1) Dumping task (pid: 1 comm: Error (x): Can't fork for)\n", &hint));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(device_mapping_names_the_pid),
		cmocka_unit_test(established_tcp_names_the_task),
		cmocka_unit_test(old_criu_on_new_kernel),
		cmocka_unit_test(shell_job),
		cmocka_unit_test(stale_link_remap),
		cmocka_unit_test(pid_taken_at_restore),
		cmocka_unit_test(unsupported_descriptor_has_no_hint),
		cmocka_unit_test(harmless_lines_alone_explain_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
