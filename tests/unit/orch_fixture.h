/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_TEST_ORCH_FIXTURE_H
#define KC_TEST_ORCH_FIXTURE_H

/* What the orchestrator tests share (orch_fixture.c): a fresh images dir,
 * a real process tree spawned per test, the mock backends (a library,
 * mock_backends.c), and the checks they all make. */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kc/manifest.h"
#include "kc/orchestrator.h"
#include "kc/report.h"
#include "mock_backends.h"

struct fx {
	char dir[64]; /* fresh and empty for every test */
	pid_t pids[16]; /* the spawned tree, root first */
	size_t n;
	struct kc_backends b;
	struct kc_manifest m;
	struct kc_report r;
	struct kc_error *err;
};

struct post {
	int calls;
	bool fail;
	int sig;       /* arrives while archiving: the archive is not published */
	int sig_after; /* arrives once the archive is published */
	bool saw_manifest;
};

#define expect_ok(f, rc)                                                                       \
	do {                                                                                   \
		if ((rc) != 0 || (f)->err)                                                     \
			fail_msg("expected success, got rc %d: %s", (rc),                      \
				 (f)->err ? (f)->err->msg : "(no error)");                     \
	} while (0)
#define expect_error(f, rc, code)                                                              \
	do {                                                                                   \
		if ((rc) != -1 || !(f)->err)                                                   \
			fail_msg("expected failure (exit %d), got rc %d", (code), (rc));      \
		if ((f)->err->exit_code != (code))                                             \
			fail_msg("expected exit %d, got %d: %s", (code), (f)->err->exit_code, \
				 (f)->err->msg);                                               \
	} while (0)
#define expect_msg(f, s)                                                                       \
	do {                                                                                   \
		if (!(f)->err || !strstr((f)->err->msg, (s)))                                   \
			fail_msg("message lacks \"%s\": %s", (s),                             \
				 (f)->err ? (f)->err->msg : "(no error)");                     \
	} while (0)

int setup(void **state);
int teardown(void **state);
void spawn(struct fx *f, int nkids, bool grandkid);
void wait_state(pid_t pid, char st, bool is);
void all_cuda(struct fx *f, enum kc_cuda_state st);
struct kc_dump_opts dump_opts(const struct fx *f);
int dump(struct fx *f, const struct kc_dump_opts *o);
void expect_state(pid_t pid, enum kc_cuda_state want);
void expect_stages(const struct kc_report *r, const char *const *names);
const struct kc_manifest_proc *mproc(const struct kc_manifest *m, pid_t pid);
int post_dump(void *arg, const char *dir, struct kc_manifest *m, struct kc_report *r, struct kc_error **err);
pid_t fake_pid(int i);
void fake_image(struct fx *f, const enum kc_cuda_state *before, size_t n, pid_t *pids);
int restore(struct fx *f, const struct kc_gpu_pair *pairs, size_t n_pairs, pid_t *root);

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

#endif
