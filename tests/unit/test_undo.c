/* SPDX-License-Identifier: Apache-2.0 */
/* The undo stack: newest first, on through failures, the first failure
 * reported, every arg freed whatever happened to it. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kc/error.h"
#include "kc/undo.h"
#include "kc/util.h"

/* What the undo functions did, in order. */
static char ran[4096];

struct step {
	char name[16];
	int fail;        /* 0 ok, 1 fail with a message, 2 fail without one */
	char pad[60000]; /* big enough that a leak shows in mallinfo2 */
};

static struct step *step(const char *name, int fail)
{
	struct step *s = kc_xcalloc(1, sizeof(*s));
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->fail = fail;
	return s;
}

static int undo_fn(void *arg, struct kc_error **err)
{
	struct step *s = arg;
	size_t len = strlen(ran);
	snprintf(ran + len, sizeof(ran) - len, "%s%s", len ? " " : "", s->name);
	if (s->fail == 1)
		return kc_error_set(err, KC_EXIT_GPU, 42, "cannot undo '%s'", s->name);
	if (s->fail == 2)
		return -1;
	return 0;
}

static int setup(void **state)
{
	ran[0] = '\0';
	return 0;
}

/* A failed undo adds its part after the error it follows, once
 * (containerd's rollback said it first, or said the error twice). */
static void test_error_append_and_prefix(void **state)
{
	struct kc_error *err = NULL;
	kc_error_set(&err, KC_EXIT_CRIU, 0, "criu dump failed");
	kc_error_append(&err, "and resuming it failed too (%s)", "no such task");
	kc_error_prefix(&err, "container '%s'", "c1");
	assert_string_equal(err->msg, "container 'c1': criu dump failed; and resuming it failed too (no such task)");
	assert_int_equal(err->exit_code, KC_EXIT_CRIU);
	kc_error_free(err);
	assert_int_equal(kc_error_append(NULL, "x"), -1);
}

static void test_reverse_order(void **state)
{
	struct kc_undo u = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	kc_undo_push(&u, "first", undo_fn, step("a", 0));
	kc_undo_push(&u, "second", undo_fn, step("b", 0));
	kc_undo_push(&u, "third", undo_fn, step("c", 0));
	assert_int_equal(u.n, 3);
	assert_int_equal(kc_undo_run(&u, &err), 0);
	assert_null(err);
	assert_string_equal(ran, "c b a");
	assert_int_equal(u.n, 0);

	/* emptied: a second run does nothing */
	assert_int_equal(kc_undo_run(&u, &err), 0);
	assert_string_equal(ran, "c b a");
	kc_undo_free(&u);
}

static void test_grows(void **state)
{
	struct kc_undo u = {0};
	char want[4096] = "";
	for (int i = 0; i < 40; i++) {
		char name[16];
		snprintf(name, sizeof(name), "s%d", i);
		kc_undo_push(&u, name, undo_fn, step(name, 0));
	}
	for (int i = 39; i >= 0; i--) {
		size_t len = strlen(want);
		snprintf(want + len, sizeof(want) - len, "%ss%d", len ? " " : "", i);
	}
	assert_int_equal(kc_undo_run(&u, NULL), 0);
	assert_string_equal(ran, want);
	kc_undo_free(&u);
}

static void test_keeps_going_reports_first(void **state)
{
	struct kc_undo u = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	kc_undo_push(&u, "gpu unlock", undo_fn, step("a", 0));
	kc_undo_push(&u, "gpu restore", undo_fn, step("b", 1));
	kc_undo_push(&u, "resume", undo_fn, step("c", 1));
	kc_undo_push(&u, "newest", undo_fn, step("d", 0));

	assert_int_equal(kc_undo_run(&u, &err), -1);
	assert_string_equal(ran, "d c b a"); /* on past both failures */
	assert_non_null(err);
	/* the first to fail is the newest failing step */
	assert_string_equal(err->msg, "rollback of 'resume': cannot undo 'c'");
	assert_int_equal(err->exit_code, KC_EXIT_ROLLBACK);
	assert_int_equal(err->cause, 42);
	assert_int_equal(u.n, 0);
	kc_undo_free(&u);
}

static void test_failure_without_message(void **state)
{
	struct kc_undo u = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	kc_undo_push(&u, "resume", undo_fn, step("a", 2));
	assert_int_equal(kc_undo_run(&u, &err), -1);
	assert_non_null(err);
	assert_string_equal(err->msg, "rollback of 'resume': failed");
	assert_int_equal(err->exit_code, KC_EXIT_ROLLBACK);
	kc_undo_free(&u);
}

/* The caller's error wins; the rollback's is not lost silently either. */
static void test_existing_error_kept(void **state)
{
	struct kc_undo u = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	kc_error_set(&err, KC_EXIT_CRIU, 0, "criu dump failed");
	kc_undo_push(&u, "resume", undo_fn, step("a", 1));
	assert_int_equal(kc_undo_run(&u, &err), -1);
	assert_string_equal(ran, "a");
	assert_string_equal(err->msg, "criu dump failed");
	kc_undo_free(&u);
}

static void test_discard(void **state)
{
	struct kc_undo u = {0};
	kc_undo_push(&u, "x", undo_fn, step("a", 1));
	kc_undo_push(&u, "y", undo_fn, step("b", 1));
	kc_undo_discard(&u);
	assert_int_equal(u.n, 0);
	assert_int_equal(kc_undo_run(&u, NULL), 0);
	assert_string_equal(ran, ""); /* nothing ran */
	/* still usable after a discard */
	kc_undo_push(&u, "z", undo_fn, step("c", 0));
	assert_int_equal(kc_undo_run(&u, NULL), 0);
	assert_string_equal(ran, "c");
	kc_undo_free(&u);
	assert_null(u.v);
	assert_int_equal(u.cap, 0);
}

static void test_what_truncated(void **state)
{
	struct kc_undo u = {0};
	_cleanup_error_ struct kc_error *err = NULL;
	char what[200];
	memset(what, 'w', sizeof(what) - 1);
	what[sizeof(what) - 1] = '\0';
	kc_undo_push(&u, what, undo_fn, step("a", 1));
	assert_int_equal(strlen(u.v[0].what), sizeof(u.v[0].what) - 1);
	assert_int_equal(kc_undo_run(&u, &err), -1);
	kc_undo_free(&u);
}

#if defined(__SANITIZE_ADDRESS__)
/* LeakSanitizer checks the frees of this build at exit. */
#define KC_MALLINFO 0
#else
#define KC_MALLINFO 1
#endif

/* Every arg is freed: after running, after a failure, after a discard,
 * and by kc_undo_free for what was never run. */
static void test_frees_args(void **state)
{
	if (!KC_MALLINFO)
		return;
	struct mallinfo2 before = mallinfo2();
	struct kc_undo u = {0};
	struct kc_error *err = NULL;
	kc_undo_push(&u, "a", undo_fn, step("a", 0));
	kc_undo_push(&u, "b", undo_fn, step("b", 1));
	kc_undo_push(&u, "c", undo_fn, step("c", 2));
	kc_undo_push(&u, "d", undo_fn, step("d", 0));
	struct mallinfo2 mid = mallinfo2();
	/* the measure itself works */
	assert_true(mid.uordblks - before.uordblks >= 4 * sizeof(struct step));
	kc_undo_run(&u, &err);
	kc_error_free(err);
	kc_undo_push(&u, "e", undo_fn, step("e", 0));
	kc_undo_discard(&u);
	kc_undo_push(&u, "f", undo_fn, step("f", 0));
	kc_undo_free(&u);
	struct mallinfo2 after = mallinfo2();
	if (after.uordblks > before.uordblks + 1024)
		fail_msg("%zu bytes still allocated", after.uordblks - before.uordblks);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_append_and_prefix),
		cmocka_unit_test_setup(test_reverse_order, setup),
		cmocka_unit_test_setup(test_grows, setup),
		cmocka_unit_test_setup(test_keeps_going_reports_first, setup),
		cmocka_unit_test_setup(test_failure_without_message, setup),
		cmocka_unit_test_setup(test_existing_error_kept, setup),
		cmocka_unit_test_setup(test_discard, setup),
		cmocka_unit_test_setup(test_what_truncated, setup),
		cmocka_unit_test_setup(test_frees_args, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
