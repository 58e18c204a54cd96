/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CRIU stats images and log tails.
 *
 * data/criu/stats-dump and stats-restore were written by CRIU 4.1.1 dumping
 * and restoring a cpu_workload tree (--mb 32 --children 2); the expected
 * numbers below are what `crit decode --pretty` printed for them.
 * data/criu/dump-failed.log is a real -v4 log of a dump that failed on an
 * external unix socket, cut to its head and tail.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/criu.h"
#include "kc/error.h"
#include "kc/util.h"

static char *data_dir(void)
{
	const char *src = getenv("KC_SOURCE_DIR");
	if (!src)
		fail_msg("KC_SOURCE_DIR is not set (run through ctest)");
	return kc_xasprintf("%s/tests/unit/data/criu", src);
}

static char *read_data(const char *name, size_t *len)
{
	_cleanup_free_ char *dir = data_dir();
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, name);
	char *buf = NULL;
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_read_file(path, &buf, len, &err) < 0)
		fail_msg("%s", err->msg);
	return buf;
}

struct tmpdir {
	char path[64];
};

static int tmpdir_setup(void **state)
{
	struct tmpdir *t = kc_xcalloc(1, sizeof(*t));
	snprintf(t->path, sizeof(t->path), "/tmp/kc-test-criu-XXXXXX");
	if (!mkdtemp(t->path))
		return -1;
	*state = t;
	return 0;
}

static int tmpdir_teardown(void **state)
{
	struct tmpdir *t = *state;
	_cleanup_error_ struct kc_error *err = NULL;
	kc_rm_rf(t->path, &err);
	free(t);
	return 0;
}

static void put(const struct tmpdir *t, const char *name, const void *buf, size_t len)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", t->path, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void remove_file(const struct tmpdir *t, const char *name)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", t->path, name);
	if (unlink(path) < 0 && errno != ENOENT)
		fail_msg("unlink %s", path);
}

#define assert_double_equal_us(got, us) assert_true(fabs((got) - (double)(us) / 1e6) < 1e-9)

static void test_real_images(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = data_dir();
	struct kc_criu_stats st;
	_cleanup_error_ struct kc_error *err = NULL;

	memset(&st, 0xa5, sizeof(st));
	assert_int_equal(kc_criu_read_stats(dir, &st, &err), 0);
	assert_null(err);

	assert_true(st.have_dump);
	assert_double_equal_us(st.freezing_s, 423);
	assert_double_equal_us(st.frozen_s, 108304);
	assert_double_equal_us(st.memdump_s, 94870);
	assert_double_equal_us(st.memwrite_s, 85530);
	assert_int_equal(st.pages_scanned, 24703);
	assert_int_equal(st.pages_skipped_parent, 0);
	assert_int_equal(st.pages_written, 24659);
	assert_int_equal(st.irmap_resolve_s_us, 0);
	assert_int_equal(st.pages_lazy, 0);

	assert_true(st.have_restore);
	assert_int_equal(st.pages_compared, 54);
	assert_int_equal(st.pages_skipped_cow, 32);
	assert_double_equal_us(st.forking_s, 761);
	assert_double_equal_us(st.restore_s, 112041);
	assert_int_equal(st.pages_restored, 24627);
}

static void test_missing_files(void **state)
{
	struct tmpdir *t = *state;
	struct kc_criu_stats st;
	_cleanup_error_ struct kc_error *err = NULL;

	memset(&st, 0xa5, sizeof(st));
	assert_int_equal(kc_criu_read_stats(t->path, &st, &err), 0);
	assert_false(st.have_dump);
	assert_false(st.have_restore);
	assert_int_equal(st.pages_written, 0);

	/* only the dump side: a dump that was never restored */
	size_t len;
	_cleanup_free_ char *dump = read_data("stats-dump", &len);
	put(t, "stats-dump", dump, len);
	assert_int_equal(kc_criu_read_stats(t->path, &st, &err), 0);
	assert_true(st.have_dump);
	assert_false(st.have_restore);
	assert_int_equal(st.pages_written, 24659);
	assert_int_equal(st.pages_restored, 0);
}

static void expect_image_error(const struct tmpdir *t, const char *what)
{
	struct kc_criu_stats st;
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_criu_read_stats(t->path, &st, &err) == 0)
		fail_msg("%s: accepted", what);
	assert_non_null(err);
	assert_int_equal(err->exit_code, KC_EXIT_IMAGE);
	assert_non_null(strstr(err->msg, "stats-"));
}

static void test_every_truncation_fails(void **state)
{
	struct tmpdir *t = *state;
	const char *names[] = { "stats-dump", "stats-restore" };

	for (size_t i = 0; i < 2; i++) {
		size_t full_len;
		_cleanup_free_ char *full = read_data(names[i], &full_len);
		for (size_t cut = 0; cut < full_len; cut++) {
			put(t, names[i], full, cut);
			char what[64];
			snprintf(what, sizeof(what), "%s cut to %zu bytes", names[i], cut);
			expect_image_error(t, what);
		}
		remove_file(t, names[i]);
	}
}

static void test_bad_magic(void **state)
{
	struct tmpdir *t = *state;
	size_t len;
	_cleanup_free_ char *dump = read_data("stats-dump", &len);

	dump[0] ^= 1; /* service magic */
	put(t, "stats-dump", dump, len);
	expect_image_error(t, "bad service magic");

	dump[0] ^= 1;
	dump[5] ^= 0x40; /* stats magic */
	put(t, "stats-dump", dump, len);
	expect_image_error(t, "bad stats magic");

	/* a real image of another kind: same service head, other magic */
	const unsigned char irmap[] = { 0x40, 0x59, 0x10, 0x55, 0x59, 0x40, 0x00, 0x57, 0, 0, 0, 0 };
	put(t, "stats-dump", irmap, sizeof(irmap));
	expect_image_error(t, "irmap magic");
}

static void test_garbage(void **state)
{
	struct tmpdir *t = *state;
	static const unsigned char head[] = { 0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57 };
	struct {
		const char *what;
		unsigned char body[16];
		size_t len;
	} cases[] = {
		{ "unterminated varint", { 5, 0, 0, 0, 0x08, 0xff, 0xff, 0xff, 0xff }, 9 },
		{ "field number 0", { 2, 0, 0, 0, 0x00, 0x01 }, 6 },
		{ "group wire type", { 2, 0, 0, 0, 0x0b, 0x0c }, 6 },
		{ "dump longer than the entry", { 3, 0, 0, 0, 0x0a, 0x09, 0x08 }, 7 },
		{ "malformed inside dump", { 4, 0, 0, 0, 0x0a, 0x02, 0x08, 0x80 }, 8 },
		{ "malformed inside restore", { 4, 0, 0, 0, 0x12, 0x02, 0x0e, 0x01 }, 8 },
		{ "size past the end", { 0x10, 0, 0, 0, 0x0a, 0x00 }, 6 },
		{ "trailing bytes", { 2, 0, 0, 0, 0x0a, 0x00, 0xde, 0xad }, 8 },
	};

	for (size_t i = 0; i < KC_ARRAY_SIZE(cases); i++) {
		unsigned char buf[32];
		memcpy(buf, head, sizeof(head));
		memcpy(buf + sizeof(head), cases[i].body, cases[i].len);
		put(t, "stats-restore", buf, sizeof(head) + cases[i].len);
		expect_image_error(t, cases[i].what);
	}
}

/* What a newer CRIU might write: extra fields of every wire type, known
 * fields in another order, and no service magic (pre-1.1 images). */
static void test_unknown_fields_skipped(void **state)
{
	struct tmpdir *t = *state;
	static const unsigned char img[] = {
		0x06, 0x33, 0x09, 0x57, /* STATS_MAGIC only */
		34, 0, 0, 0,
		0x0a, 29,                      /* dump, 29 bytes */
		0x38, 0xac, 0x02,              /* pages_written = 300 */
		0xa0, 0x01, 0x07,              /* field 20 varint */
		0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, /* field 21 fixed64 */
		0xb2, 0x01, 0x01, 0x00,        /* field 22 bytes */
		0xbd, 0x01, 1, 2, 3, 4,        /* field 23 fixed32 */
		0x08, 0xe8, 0x07,              /* freezing_time = 1000 us */
		0x12, 0x01, 0x09, /* restore: a fixed64 key with no data */
	};
	put(t, "stats-dump", img, sizeof(img));
	struct kc_criu_stats st;
	_cleanup_error_ struct kc_error *err = NULL;
	/* the trailing restore sub-message is malformed on purpose ... */
	assert_int_equal(kc_criu_read_stats(t->path, &st, &err), -1);
	kc_error_free(steal_ptr(err));

	/* ... and without it the rest decodes */
	unsigned char fixed[sizeof(img)];
	memcpy(fixed, img, sizeof(img));
	fixed[4] = 31;
	put(t, "stats-dump", fixed, sizeof(img) - 3);
	assert_int_equal(kc_criu_read_stats(t->path, &st, &err), 0);
	assert_true(st.have_dump);
	assert_false(st.have_restore);
	assert_int_equal(st.pages_written, 300);
	assert_double_equal_us(st.freezing_s, 1000);
	assert_int_equal(st.pages_scanned, 0);
}

static void test_log_tail_real_log(void **state)
{
	(void)state;
	_cleanup_free_ char *dir = data_dir();
	_cleanup_free_ char *log = kc_xasprintf("%s/dump-failed.log", dir);

	_cleanup_free_ char *three = kc_criu_log_tail(log, 3);
	assert_non_null(three);
	/* timestamps gone, "Dumping FAILED." and the RLIMIT line every run
	 * logs left out, oldest first */
	assert_string_equal(three,
			    "Error (criu/sk-unix.c:874): unix: External socket is used. "
			    "Consider using --ext-unix-sk option.");

	_cleanup_free_ char *one = kc_criu_log_tail(log, 1);
	assert_string_equal(one, "Error (criu/sk-unix.c:874): unix: External socket is used. "
				 "Consider using --ext-unix-sk option.");
}

static void test_log_tail_without_errors(void **state)
{
	struct tmpdir *t = *state;
	static const char log[] = "(00.000010) Version: 4.1.1\n"
				  "(00.000020)   first  \n"
				  "\n"
				  "(00.000030) Warn  (criu/x.c:1): second\n"
				  "third without timestamp\n";
	put(t, "plain.log", log, strlen(log));
	_cleanup_free_ char *path = kc_xasprintf("%s/plain.log", t->path);

	_cleanup_free_ char *two = kc_criu_log_tail(path, 2);
	assert_string_equal(two, "Warn  (criu/x.c:1): second; third without timestamp");
	_cleanup_free_ char *all = kc_criu_log_tail(path, 10);
	assert_string_equal(all, "Version: 4.1.1; first; Warn  (criu/x.c:1): second; third without timestamp");

	/* a final error among lines without a trailing newline */
	static const char log2[] = "a\n(01.5) Error (criu/y.c:2): boom\r\nb";
	put(t, "err.log", log2, strlen(log2));
	_cleanup_free_ char *path2 = kc_xasprintf("%s/err.log", t->path);
	_cleanup_free_ char *e = kc_criu_log_tail(path2, 3);
	assert_string_equal(e, "Error (criu/y.c:2): boom");

	put(t, "empty.log", "", 0);
	_cleanup_free_ char *path3 = kc_xasprintf("%s/empty.log", t->path);
	assert_null(kc_criu_log_tail(path3, 3));

	_cleanup_free_ char *missing = kc_xasprintf("%s/missing.log", t->path);
	assert_null(kc_criu_log_tail(missing, 3));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_images),
		cmocka_unit_test_setup_teardown(test_missing_files, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_every_truncation_fails, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_bad_magic, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_garbage, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test_setup_teardown(test_unknown_fields_skipped, tmpdir_setup, tmpdir_teardown),
		cmocka_unit_test(test_log_tail_real_log),
		cmocka_unit_test_setup_teardown(test_log_tail_without_errors, tmpdir_setup, tmpdir_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
