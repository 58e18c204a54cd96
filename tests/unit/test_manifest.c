/* SPDX-License-Identifier: Apache-2.0 */
/* kcheckpoint.json: a full round trip, and a clear KC_EXIT_IMAGE naming
 * the culprit for every way a manifest can be malformed. */
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/error.h"
#include "kc/manifest.h"
#include "kc/util.h"

#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

/* Every field set, none to its zero value. */
static void fill(struct kc_manifest *m)
{
	kc_manifest_init(m);
	m->tool_version = kc_xstrdup("0.1.0");
	m->kernel = kc_xstrdup("6.18.0-test");
	m->driver_version = kc_xstrdup("580.65.06");
	m->cuda_driver_version = 13000;
	m->criu_version = kc_xstrdup("4.1.1");
	m->host = kc_xstrdup("node-7");
	m->created = kc_xstrdup("2026-11-22T02:37:20Z");
	m->root_pid = 4711;
	m->vram_bytes = 80ULL * 1000 * 1000 * 1000 + 3; /* above 2^32 */
	m->tcp_established = true;
	m->shell_job = true;
	m->file_locks = true;

	struct kc_manifest_proc *p = kc_manifest_add_proc(m);
	p->pid = 4711;
	p->ppid = 1;
	snprintf(p->comm, sizeof(p->comm), "vllm \"serve\"");
	p->cuda = true;
	p->cuda_state = KC_CUDA_LOCKED;
	p->gpus = kc_xcalloc(3, sizeof(char *));
	p->gpus[0] = kc_xstrdup("GPU-8c0e1f2a-0000-1111-2222-333344445555");
	p->gpus[1] = kc_xstrdup("GPU-9d1f2a3b-0000-1111-2222-333344445555");
	p->vram_bytes = m->vram_bytes;
	p->lock_s = 0.1234567890123;
	p->checkpoint_s = 12.5;

	p = kc_manifest_add_proc(m);
	p->pid = 4712;
	p->ppid = 4711;
	snprintf(p->comm, sizeof(p->comm), "tokenizer");
	p->cuda = false;
	p->forked_after_cuda = true;
	m->tcp_close = true;
	m->link_remap = true;
	m->criu_extra = kc_xcalloc(2, sizeof(char *));
	m->criu_extra[0] = kc_xstrdup("--ghost-limit=64M");
	m->link_remaps = kc_xcalloc(2, sizeof(char *));
	m->link_remaps[0] = kc_xstrdup("/dev/shm/link_remap.30");

	const char *names[] = {"gpu-lock", "gpu-checkpoint", "criu-dump"};
	for (size_t i = 0; i < 3; i++) {
		struct kc_stage *s = &m->stages[m->n_stages++];
		snprintf(s->name, sizeof(s->name), "%s", names[i]);
		s->seconds = 0.25 * (double)(i + 1) + 1e-7;
		s->bytes = i ? 5000000000ULL * i : 0;
	}
	m->compression = kc_xstrdup("zstd:3");
	kc_manifest_add_member(m, "pages-1.img", 5000000000ULL, SHA_A);
	kc_manifest_add_member(m, "sub/dir/core-4711.img", 1234, SHA_B);
	json_object *c = json_object_new_object();
	json_object_object_add(c, "namespace", json_object_new_string("k8s.io"));
	json_object_object_add(c, "id", json_object_new_string("abc123"));
	m->containerd = c;
}

static void expect_same(const struct kc_manifest *a, const struct kc_manifest *b)
{
	assert_int_equal(a->format, b->format);
	assert_string_equal(a->tool_version, b->tool_version);
	assert_string_equal(a->kernel, b->kernel);
	assert_string_equal(a->driver_version, b->driver_version);
	assert_int_equal(a->cuda_driver_version, b->cuda_driver_version);
	assert_string_equal(a->criu_version, b->criu_version);
	assert_string_equal(a->host, b->host);
	assert_string_equal(a->created, b->created);
	assert_int_equal(a->root_pid, b->root_pid);
	assert_int_equal(a->vram_bytes, b->vram_bytes);
	assert_int_equal(a->tcp_established, b->tcp_established);
	assert_int_equal(a->shell_job, b->shell_job);
	assert_int_equal(a->file_locks, b->file_locks);
	assert_int_equal(a->tcp_close, b->tcp_close);
	assert_int_equal(a->link_remap, b->link_remap);
	assert_int_equal(kc_strv_len(a->criu_extra), kc_strv_len(b->criu_extra));
	for (size_t i = 0; a->criu_extra && a->criu_extra[i]; i++)
		assert_string_equal(a->criu_extra[i], b->criu_extra[i]);
	assert_int_equal(kc_strv_len(a->link_remaps), kc_strv_len(b->link_remaps));
	for (size_t i = 0; a->link_remaps && a->link_remaps[i]; i++)
		assert_string_equal(a->link_remaps[i], b->link_remaps[i]);
	assert_int_equal(a->n_procs, b->n_procs);
	for (size_t i = 0; i < a->n_procs; i++) {
		const struct kc_manifest_proc *p = &a->procs[i], *q = &b->procs[i];
		assert_int_equal(p->pid, q->pid);
		assert_int_equal(p->ppid, q->ppid);
		assert_string_equal(p->comm, q->comm);
		assert_int_equal(p->cuda, q->cuda);
		assert_int_equal(p->forked_after_cuda, q->forked_after_cuda);
		assert_int_equal(p->cuda_state, q->cuda_state);
		assert_int_equal(kc_strv_len(p->gpus), kc_strv_len(q->gpus));
		for (size_t g = 0; p->gpus && p->gpus[g]; g++)
			assert_string_equal(p->gpus[g], q->gpus[g]);
		assert_int_equal(p->vram_bytes, q->vram_bytes);
		assert_true(p->lock_s == q->lock_s);
		assert_true(p->checkpoint_s == q->checkpoint_s);
	}
	assert_int_equal(a->n_stages, b->n_stages);
	for (size_t i = 0; i < a->n_stages; i++) {
		assert_string_equal(a->stages[i].name, b->stages[i].name);
		assert_true(a->stages[i].seconds == b->stages[i].seconds);
		assert_int_equal(a->stages[i].bytes, b->stages[i].bytes);
	}
	assert_string_equal(a->compression, b->compression);
	assert_int_equal(a->n_members, b->n_members);
	for (size_t i = 0; i < a->n_members; i++) {
		assert_string_equal(a->members[i].path, b->members[i].path);
		assert_int_equal(a->members[i].size, b->members[i].size);
		assert_string_equal(a->members[i].sha256, b->members[i].sha256);
	}
	assert_non_null(b->containerd);
	assert_true(json_object_equal(a->containerd, b->containerd));
}

static void test_round_trip(void **state)
{
	struct kc_manifest m, back;
	fill(&m);
	_cleanup_free_ char *s = kc_manifest_to_string(&m);
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_manifest_parse(s, strlen(s), &back, &err) < 0)
		fail_msg("%s", err->msg);
	expect_same(&m, &back);
	/* and again: nothing lost or added on the way */
	_cleanup_free_ char *s2 = kc_manifest_to_string(&back);
	assert_string_equal(s, s2);
	json_object *root = json_tokener_parse(s);
	assert_non_null(root);
	assert_string_equal(json_object_get_string(json_object_object_get(root, "tool")), "kcheckpoint");
	assert_int_equal(json_object_get_int(json_object_object_get(root, "format")), KC_MANIFEST_FORMAT_PLAIN);
	json_object_put(root);
	kc_manifest_free(&back);
	kc_manifest_free(&m);
}

/* Optional parts left out (no NVML, no archive) survive as absent. */
static void test_round_trip_minimal(void **state)
{
	struct kc_manifest m, back;
	kc_manifest_init(&m);
	m.root_pid = 9;
	struct kc_manifest_proc *p = kc_manifest_add_proc(&m);
	p->pid = 9;
	_cleanup_free_ char *s = kc_manifest_to_string(&m);
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_manifest_parse(s, strlen(s), &back, &err) < 0)
		fail_msg("%s", err->msg);
	assert_null(back.driver_version);
	assert_null(back.compression);
	assert_null(back.containerd);
	assert_int_equal(back.n_members, 0);
	assert_int_equal(back.n_procs, 1);
	assert_false(back.procs[0].cuda);
	assert_int_equal(back.procs[0].cuda_state, KC_CUDA_NONE);
	kc_manifest_free(&back);
	kc_manifest_free(&m);
}

static void test_write_read(void **state)
{
	char dir[] = "/tmp/kc-test-manifest-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct kc_manifest m, back;
	fill(&m);
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_manifest_write(&m, dir, &err) < 0 || kc_manifest_read(dir, &back, &err) < 0)
		fail_msg("%s", err->msg);
	expect_same(&m, &back);
	kc_manifest_free(&back);
	kc_manifest_free(&m);
	kc_rm_rf(dir, &err);
}

static void test_read_not_an_image(void **state)
{
	char dir[] = "/tmp/kc-test-manifest-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct kc_manifest m;
	_cleanup_error_ struct kc_error *err = NULL;
	assert_int_equal(kc_manifest_read(dir, &m, &err), -1);
	assert_non_null(err);
	assert_int_equal(err->exit_code, KC_EXIT_IMAGE);
	_cleanup_free_ char *want = kc_xasprintf("'%s' is not a kcheckpoint image", dir);
	if (!strstr(err->msg, want))
		fail_msg("got: %s", err->msg);
	kc_error_free(err);
	err = NULL;

	/* a broken one names the file */
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, KC_MANIFEST_NAME);
	assert_int_equal(kc_write_file_atomic(path, "{\"tool\": 1}", 11, 0600, &err), 0);
	assert_int_equal(kc_manifest_read(dir, &m, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_IMAGE);
	if (!strstr(err->msg, path) || !strstr(err->msg, "'tool'"))
		fail_msg("got: %s", err->msg);
	kc_rm_rf(dir, &err);
}

/* ---- malformed manifests ---- */

static void expect_bad_text(const char *json, size_t len, const char *want)
{
	struct kc_manifest m;
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_manifest_parse(json, len, &m, &err) == 0) {
		kc_manifest_free(&m);
		fail_msg("accepted, want an error with \"%s\"", want);
	}
	assert_non_null(err);
	if (err->exit_code != KC_EXIT_IMAGE)
		fail_msg("exit %d, want %d: %s", err->exit_code, KC_EXIT_IMAGE, err->msg);
	if (!strstr(err->msg, want))
		fail_msg("message lacks \"%s\": %s", want, err->msg);
	/* nothing half-parsed is left for the caller to free */
	assert_int_equal(m.n_procs, 0);
	assert_null(m.procs);
	assert_null(m.tool_version);
}

/* A valid manifest as a json-c tree, to break one thing in. */
static json_object *valid(void)
{
	struct kc_manifest m;
	fill(&m);
	_cleanup_free_ char *s = kc_manifest_to_string(&m);
	kc_manifest_free(&m);
	return json_tokener_parse(s);
}

static void expect_bad(json_object *root, const char *want)
{
	const char *s = json_object_to_json_string(root);
	expect_bad_text(s, strlen(s), want);
	json_object_put(root);
}

static json_object *proc0(json_object *root)
{
	json_object *procs = json_object_object_get(root, "processes");
	return json_object_array_get_idx(procs, 0);
}

static void test_valid_base(void **state)
{
	/* the base the error cases start from is itself accepted */
	json_object *root = valid();
	const char *s = json_object_to_json_string(root);
	struct kc_manifest m;
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_manifest_parse(s, strlen(s), &m, &err) < 0)
		fail_msg("%s", err->msg);
	kc_manifest_free(&m);
	json_object_put(root);
}

static void test_missing_fields(void **state)
{
	const char *top[] = {"tool", "format", "versions", "root_pid", "processes"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(top); i++) {
		json_object *root = valid();
		json_object_object_del(root, top[i]);
		_cleanup_free_ char *want = kc_xasprintf("field '%s' is missing", top[i]);
		expect_bad(root, want);
	}
	const char *in_proc[] = {"pid", "cuda"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(in_proc); i++) {
		json_object *root = valid();
		json_object_object_del(proc0(root), in_proc[i]);
		_cleanup_free_ char *want = kc_xasprintf("field '%s' is missing", in_proc[i]);
		expect_bad(root, want);
	}
	/* null is as good as missing */
	json_object *root = valid();
	json_object_object_add(root, "root_pid", NULL);
	expect_bad(root, "field 'root_pid' is missing");

	root = valid();
	json_object *members = json_object_object_get(root, "members");
	json_object_object_del(json_object_array_get_idx(members, 1), "sha256_tree");
	expect_bad(root, "field 'sha256_tree' is missing");
}

static void test_wrong_types(void **state)
{
	json_object *root = valid();
	json_object_object_add(root, "root_pid", json_object_new_string("4711"));
	expect_bad(root, "field 'root_pid' has the wrong type");

	root = valid();
	json_object_object_add(root, "processes", json_object_new_object());
	expect_bad(root, "field 'processes' has the wrong type");

	root = valid();
	json_object_object_add(proc0(root), "cuda", json_object_new_int(1));
	expect_bad(root, "field 'cuda' has the wrong type");

	root = valid();
	json_object_object_add(proc0(root), "lock_seconds", json_object_new_string("fast"));
	expect_bad(root, "field 'lock_seconds' has the wrong type");

	root = valid();
	json_object_object_add(root, "versions", json_object_new_array());
	expect_bad(root, "field 'versions' has the wrong type");

	root = valid();
	json_object_array_put_idx(json_object_object_get(proc0(root), "gpus"), 0, json_object_new_int(3));
	expect_bad(root, "field 'gpus'");

	root = valid();
	json_object_array_add(json_object_object_get(root, "processes"), json_object_new_string("4713"));
	expect_bad(root, "process entry is not an object");
}

static void test_bad_values(void **state)
{
	json_object *root = valid();
	json_object_object_add(proc0(root), "cuda_state", json_object_new_string("sleeping"));
	expect_bad(root, "field 'cuda_state' of pid 4711 is not a CUDA state");

	root = valid();
	json_object_object_add(proc0(root), "pid", json_object_new_int(0));
	expect_bad(root, "field 'pid' is out of range");

	root = valid();
	json_object_object_add(root, "root_pid", json_object_new_int64(1LL << 40));
	expect_bad(root, "field 'root_pid' is out of range");

	root = valid();
	json_object_object_add(root, "vram_bytes", json_object_new_int(-5));
	expect_bad(root, "field 'vram_bytes' is negative");
}

static void test_other_tool(void **state)
{
	json_object *root = valid();
	json_object_object_add(root, "tool", json_object_new_string("criu"));
	expect_bad(root, "written by another tool");
}

static void test_newer_format(void **state)
{
	json_object *root = valid();
	json_object_object_add(root, "format", json_object_new_int(KC_MANIFEST_FORMAT + 1));
	_cleanup_free_ char *want = kc_xasprintf("format %d is newer than this kcheckpoint", KC_MANIFEST_FORMAT + 1);
	expect_bad(root, want);

	root = valid();
	json_object_object_add(root, "format", json_object_new_int(0));
	expect_bad(root, "field 'format' is out of range");
}

static void test_trailing_garbage(void **state)
{
	json_object *root = valid();
	_cleanup_free_ char *good = kc_xstrdup(json_object_to_json_string(root));
	json_object_put(root);

	_cleanup_free_ char *garbage = kc_xasprintf("%s x", good);
	expect_bad_text(garbage, strlen(garbage), "trailing data");
	_cleanup_free_ char *two = kc_xasprintf("%s{}", good);
	expect_bad_text(two, strlen(two), "trailing data");

	/* whitespace after the object is not garbage (the file ends in \n) */
	_cleanup_free_ char *ws = kc_xasprintf("%s \r\n\t\n", good);
	struct kc_manifest m;
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_manifest_parse(ws, strlen(ws), &m, &err) < 0)
		fail_msg("%s", err->msg);
	kc_manifest_free(&m);
}

static void test_not_json(void **state)
{
	expect_bad_text("", 0, "not valid JSON");
	expect_bad_text("PK\x03\x04", 4, "not valid JSON");
	expect_bad_text("{\"tool\": \"kcheckpoint\",", 23, "not valid JSON");
	expect_bad_text("[1, 2]", 6, "not a JSON object");

	json_object *root = valid();
	const char *good = json_object_to_json_string(root);
	/* every cut of a valid manifest is refused */
	for (size_t cut = 0; cut < strlen(good); cut += 7)
		expect_bad_text(good, cut, "not valid JSON");
	json_object_put(root);
}

static void test_malformed_sha256(void **state)
{
	const char *bad[] = {
		"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", /* upper case */
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",  /* 63 */
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0", /* 65 */
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg", /* not hex */
		"",
	};
	for (size_t i = 0; i < KC_ARRAY_SIZE(bad); i++) {
		json_object *root = valid();
		json_object *members = json_object_object_get(root, "members");
		json_object_object_add(json_object_array_get_idx(members, 1), "sha256_tree", json_object_new_string(bad[i]));
		expect_bad(root, "member 'sub/dir/core-4711.img' has a malformed sha256");
	}
}

static void test_empty_processes(void **state)
{
	json_object *root = valid();
	json_object_object_add(root, "processes", json_object_new_array());
	expect_bad(root, "field 'processes' is empty");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_round_trip_minimal),
		cmocka_unit_test(test_write_read),
		cmocka_unit_test(test_read_not_an_image),
		cmocka_unit_test(test_valid_base),
		cmocka_unit_test(test_missing_fields),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_other_tool),
		cmocka_unit_test(test_newer_format),
		cmocka_unit_test(test_trailing_garbage),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_malformed_sha256),
		cmocka_unit_test(test_empty_processes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
