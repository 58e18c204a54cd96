/* SPDX-License-Identifier: Apache-2.0 */
/* The timing report: its rows, the printed table (GB/s) and --json. */
#include <json-c/json.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kc/report.h"
#include "kc/signals.h"
#include "kc/util.h"

static void test_rows(void **state)
{
	struct kc_report r;
	kc_report_init(&r, "dump");
	assert_string_equal(r.command, "dump");
	assert_int_equal(r.n_stages, 0);
	kc_report_add(&r, "gpu-lock", 0.5, 0);
	kc_report_add(&r, "gpu-checkpoint", 2.0, 4000000000ULL);
	kc_report_add_io(&r, "archive", 3.0, 6000000000ULL, 1500000000ULL);
	assert_int_equal(r.n_stages, 3);
	assert_string_equal(r.stages[1].name, "gpu-checkpoint");
	assert_int_equal(r.stages[1].bytes, 4000000000ULL);
	assert_int_equal(r.stages[1].bytes_out, 0);
	assert_int_equal(r.stages[2].bytes, 6000000000ULL);
	assert_int_equal(r.stages[2].bytes_out, 1500000000ULL);
	assert_true(kc_report_seconds(&r, "gpu-checkpoint") == 2.0);
	assert_true(kc_report_seconds(&r, "archive") == 3.0);
	assert_true(kc_report_seconds(&r, "criu-dump") == -1);
}

static void test_rows_capped(void **state)
{
	struct kc_report r;
	kc_report_init(&r, "dump");
	for (int i = 0; i < KC_REPORT_MAX_STAGES + 8; i++) {
		char name[32];
		snprintf(name, sizeof(name), "s%d", i);
		kc_report_add_io(&r, name, i, i, 7);
	}
	assert_int_equal(r.n_stages, KC_REPORT_MAX_STAGES);
	char last[32];
	snprintf(last, sizeof(last), "s%d", KC_REPORT_MAX_STAGES - 1);
	assert_string_equal(r.stages[KC_REPORT_MAX_STAGES - 1].name, last);
	assert_int_equal(r.stages[KC_REPORT_MAX_STAGES - 1].bytes_out, 7);

	/* a long name is cut, not overrun */
	kc_report_init(&r, "dump");
	kc_report_add(&r, "a-stage-name-far-longer-than-thirty-one-characters", 1, 0);
	assert_int_equal(strlen(r.stages[0].name), sizeof(r.stages[0].name) - 1);
}

/* The printed table, split into lines of whitespace-separated words. */
struct table {
	char *text;
	char *lines[64][12];
	size_t n_words[64];
	size_t n;
};

static void print_table(const struct kc_report *r, struct table *t)
{
	size_t len = 0;
	memset(t, 0, sizeof(*t));
	FILE *f = open_memstream(&t->text, &len);
	assert_non_null(f);
	kc_report_print(r, f);
	assert_int_equal(fclose(f), 0);
	_cleanup_free_ char *copy = kc_xstrdup(t->text);
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line && t->n < 64; line = strtok_r(NULL, "\n", &save)) {
		char *wsave = NULL;
		size_t k = 0;
		for (char *w = strtok_r(line, " ", &wsave); w && k < 12; w = strtok_r(NULL, " ", &wsave))
			t->lines[t->n][k++] = kc_xstrdup(w);
		t->n_words[t->n++] = k;
	}
}

static void free_table(struct table *t)
{
	for (size_t i = 0; i < t->n; i++)
		for (size_t k = 0; k < t->n_words[i]; k++)
			free(t->lines[i][k]);
	free(t->text);
}

/* The words of the row whose first word is name. */
static char **row(struct table *t, const char *name, size_t want_words)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->n_words[i] && strcmp(t->lines[i][0], name) == 0) {
			if (t->n_words[i] != want_words)
				fail_msg("row '%s' has %zu words, want %zu:\n%s", name, t->n_words[i], want_words,
					 t->text);
			return t->lines[i];
		}
	fail_msg("no row '%s' in:\n%s", name, t->text);
	return NULL;
}

static void test_print(void **state)
{
	struct kc_report r;
	kc_report_init(&r, "dump");
	kc_report_add(&r, "gpu-lock", 0.5, 0);
	kc_report_add(&r, "gpu-checkpoint", 2.0, 4000000000ULL);
	kc_report_add(&r, "criu-dump", 0.25, 750000000ULL);
	kc_report_add(&r, "instant", 0, 1000);
	kc_report_add_io(&r, "archive", 3.0, 6000000000ULL, 1500000000ULL);
	r.total_s = 9.75;

	struct table t;
	print_table(&r, &t);
	char **w = row(&t, "stage", 5);
	assert_string_equal(w[1], "seconds");
	assert_string_equal(w[3], "GB/s");

	w = row(&t, "gpu-lock", 4); /* no bytes: no rate */
	assert_string_equal(w[1], "0.500");
	assert_string_equal(w[2], "-");
	assert_string_equal(w[3], "-");

	w = row(&t, "gpu-checkpoint", 5);
	assert_string_equal(w[1], "2.000");
	assert_string_equal(w[2], "4.00");
	assert_string_equal(w[3], "GB");
	assert_string_equal(w[4], "2.00"); /* 4 GB in 2 s */

	w = row(&t, "criu-dump", 5);
	assert_string_equal(w[2], "750.00");
	assert_string_equal(w[3], "MB");
	assert_string_equal(w[4], "3.00");

	w = row(&t, "instant", 5); /* bytes but no time: no rate */
	assert_string_equal(w[2], "1.00");
	assert_string_equal(w[3], "kB");
	assert_string_equal(w[4], "-");

	w = row(&t, "archive", 7);
	assert_string_equal(w[4], "2.00"); /* GB/s counts the input side */
	assert_string_equal(w[5], "1.50");
	assert_string_equal(w[6], "GB");

	w = row(&t, "total", 2);
	assert_string_equal(w[1], "9.750");
	assert_null(strstr(t.text, "criu:"));
	free_table(&t);

	/* without a measured total, the stages are summed */
	r.total_s = 0;
	print_table(&r, &t);
	w = row(&t, "total", 2);
	assert_string_equal(w[1], "5.750");
	free_table(&t);
}

static void test_print_criu_figures(void **state)
{
	struct kc_report r;
	kc_report_init(&r, "dump");
	r.criu.have_dump = true;
	r.criu.freezing_s = 0.001;
	r.criu.frozen_s = 0.25;
	r.criu.memdump_s = 0.125;
	r.criu.memwrite_s = 0.5;
	r.criu.pages_scanned = 24703;
	r.criu.pages_written = 24659;
	struct table t;
	print_table(&r, &t);
	assert_non_null(strstr(t.text, "criu: freezing 0.001 s, frozen 0.250 s, memdump 0.125 s, memwrite 0.500 s, "
					"pages scanned 24703, written 24659"));
	assert_null(strstr(t.text, "forking"));
	free_table(&t);

	r.criu.have_dump = false;
	r.criu.have_restore = true;
	r.criu.forking_s = 0.002;
	r.criu.restore_s = 1.5;
	r.criu.pages_restored = 999;
	print_table(&r, &t);
	assert_non_null(strstr(t.text, "criu: forking 0.002 s, restore 1.500 s, pages restored 999"));
	assert_null(strstr(t.text, "freezing"));
	free_table(&t);
}

static json_object *get(json_object *o, const char *key)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
	return v;
}

static bool has(json_object *o, const char *key)
{
	return json_object_object_get_ex(o, key, NULL);
}

static void test_json(void **state)
{
	struct kc_report r;
	kc_report_init(&r, "restore");
	kc_report_add(&r, "criu-restore", 0.5, 2000000000ULL);
	kc_report_add(&r, "gpu-unlock", 0.01, 0);
	kc_report_add_io(&r, "unpack", 2.0, 1000000000ULL, 3000000000ULL);
	r.total_s = 3.5;

	json_object *o = kc_report_to_json(&r);
	/* what --json prints parses back */
	json_object *back = json_tokener_parse(json_object_to_json_string(o));
	assert_non_null(back);
	json_object_put(o);
	o = back;

	assert_string_equal(json_object_get_string(get(o, "command")), "restore");
	assert_true(json_object_get_double(get(o, "total_seconds")) == 3.5);
	assert_false(has(o, "root_pid")); /* not known */
	assert_false(has(o, "criu"));

	json_object *stages = get(o, "stages");
	assert_int_equal(json_object_array_length(stages), 3);
	json_object *s0 = json_object_array_get_idx(stages, 0);
	assert_string_equal(json_object_get_string(get(s0, "stage")), "criu-restore");
	assert_true(json_object_get_double(get(s0, "seconds")) == 0.5);
	assert_int_equal(json_object_get_uint64(get(s0, "bytes")), 2000000000ULL);
	assert_true(fabs(json_object_get_double(get(s0, "gb_per_s")) - 4.0) < 1e-9);
	assert_false(has(s0, "bytes_out"));

	json_object *s1 = json_object_array_get_idx(stages, 1);
	assert_int_equal(json_object_get_uint64(get(s1, "bytes")), 0);
	assert_true(json_object_is_type(get(s1, "gb_per_s"), json_type_null));

	json_object *s2 = json_object_array_get_idx(stages, 2);
	assert_int_equal(json_object_get_uint64(get(s2, "bytes_out")), 3000000000ULL);
	assert_true(fabs(json_object_get_double(get(s2, "gb_per_s")) - 0.5) < 1e-9);
	json_object_put(o);
}

static void test_json_criu_and_root(void **state)
{
	struct kc_report r;
	kc_report_init(&r, "restore");
	r.root_pid = 4711;
	r.criu.have_restore = true;
	r.criu.forking_s = 0.25;
	r.criu.restore_s = 1.5;
	r.criu.pages_restored = 24627;
	json_object *o = kc_report_to_json(&r);
	assert_int_equal(json_object_get_int(get(o, "root_pid")), 4711);
	json_object *c = get(o, "criu");
	assert_true(json_object_get_double(get(c, "forking_seconds")) == 0.25);
	assert_true(json_object_get_double(get(c, "restore_seconds")) == 1.5);
	assert_int_equal(json_object_get_uint64(get(c, "pages_restored")), 24627);
	assert_false(has(c, "pages_written"));
	assert_int_equal(json_object_array_length(get(o, "stages")), 0);
	json_object_put(o);

	r.criu.have_dump = true;
	r.criu.pages_written = 24659;
	r.criu.pages_scanned = 24703;
	r.criu.memwrite_s = 0.5;
	o = kc_report_to_json(&r);
	c = get(o, "criu");
	assert_int_equal(json_object_get_uint64(get(c, "pages_written")), 24659);
	assert_int_equal(json_object_get_uint64(get(c, "pages_scanned")), 24703);
	assert_true(json_object_get_double(get(c, "memwrite_seconds")) == 0.5);
	assert_true(has(c, "freezing_seconds") && has(c, "frozen_seconds") && has(c, "memdump_seconds"));
	assert_true(has(c, "pages_restored"));
	json_object_put(o);
}

/* Without a terminal: no progress lines, but a signal that arrives while a
 * stage runs on is announced (issue 11, item 9). */
static void test_progress_off(void **state)
{
	kc_progress_mode = KC_PROGRESS_NONE;
	char path[] = "/tmp/kc-test-progress-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stderr);
	int saved = dup(2);
	dup2(fd, 2);
	struct kc_progress *p = kc_progress_start("criu-dump", NULL, NULL);
	struct timespec ts = {1, 300000000L}; /* past the 1 s a progress line waits for */
	nanosleep(&ts, NULL);
	kc_signals_raise_for_test(SIGTERM);
	ts = (struct timespec){0, 600000000L};
	nanosleep(&ts, NULL);
	kc_progress_stop(p);
	kc_progress_stop(NULL);
	kc_signals_reset();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char buf[512] = "";
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	assert_non_null(strstr(buf, "rolling back as soon as criu-dump allows"));
	assert_null(strchr(buf, '\r'));
	assert_null(strstr(buf, " s  "));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rows),
		cmocka_unit_test(test_rows_capped),
		cmocka_unit_test(test_print),
		cmocka_unit_test(test_print_criu_figures),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_json_criu_and_root),
		cmocka_unit_test(test_progress_off),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
