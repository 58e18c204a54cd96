/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd.json (what restore recreates a container from), the spec
 * rewrite for a new id, and the option resolution of the containerd
 * backend.  The container below is the one recorded in
 * data/grpc/get_container.data (containerd 1.6.20, `ctr run` of busybox).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "../../src/backend/containerd_int.h"
#include "kc/containerd.h"
#include "kc/error.h"
#include "kc/util.h"

#include "kc_containers.pb-c.h"

static Kc__Containers__GetContainerResponse *recorded_container(void)
{
	const char *src = getenv("KC_SOURCE_DIR");
	if (!src)
		fail_msg("KC_SOURCE_DIR is not set (run through ctest)");
	_cleanup_free_ char *path = kc_xasprintf("%s/tests/unit/data/grpc/get_container.data", src);
	_cleanup_free_ char *buf = NULL;
	size_t len = 0;
	struct kc_error *err = NULL;
	if (kc_read_file(path, &buf, &len, &err) < 0)
		fail_msg("%s", err->msg);
	assert_true(len > 5);
	Kc__Containers__GetContainerResponse *r =
		kc__containers__get_container_response__unpack(NULL, len - 5, (uint8_t *)buf + 5);
	assert_non_null(r);
	return r;
}

static void test_base64(void **state)
{
	struct {
		const char *raw, *enc;
	} cases[] = {
		{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
		{"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
	};
	for (size_t i = 0; i < KC_ARRAY_SIZE(cases); i++) {
		_cleanup_free_ char *e =
			kc_ctrd_base64_encode((const uint8_t *)cases[i].raw, strlen(cases[i].raw));
		assert_string_equal(e, cases[i].enc);
		uint8_t *d = NULL;
		size_t n = 0;
		assert_int_equal(kc_ctrd_base64_decode(cases[i].enc, &d, &n), 0);
		assert_int_equal(n, strlen(cases[i].raw));
		assert_memory_equal(d, cases[i].raw, n);
		free(d);
	}
	/* binary, every byte value */
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	_cleanup_free_ char *e = kc_ctrd_base64_encode(all, sizeof(all));
	uint8_t *d = NULL;
	size_t n = 0;
	assert_int_equal(kc_ctrd_base64_decode(e, &d, &n), 0);
	assert_int_equal(n, 256);
	assert_memory_equal(d, all, 256);
	free(d);

	const char *bad[] = {"Zg=", "Z===", "Zm9v!A==", "=Zm9", "Zg==Zg==", "Zm=v"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(bad); i++) {
		d = NULL;
		assert_int_equal(kc_ctrd_base64_decode(bad[i], &d, &n), -1);
		assert_null(d);
	}
}

static void test_roundtrip(void **state)
{
	Kc__Containers__GetContainerResponse *r = recorded_container();
	Kc__Containers__Container *ct = r->container;

	/* an extension and runtime options, which `ctr run` did not set */
	uint8_t opt[] = {0x48, 0x01}; /* systemd_cgroup = true */
	Kc__Types__Any ropt = KC__TYPES__ANY__INIT;
	ropt.type_url = "containerd.runc.v1.Options";
	ropt.value.data = opt;
	ropt.value.len = sizeof(opt);
	Kc__Types__Any *recorded_opt = ct->runtime->options;
	ct->runtime->options = &ropt;
	uint8_t extv[] = {0x00, 0xff, 0x10};
	Kc__Types__Any ext = KC__TYPES__ANY__INIT;
	ext.type_url = "example.com/ext";
	ext.value.data = extv;
	ext.value.len = sizeof(extv);
	Kc__Containers__Container__ExtensionsEntry ee = KC__CONTAINERS__CONTAINER__EXTENSIONS_ENTRY__INIT;
	ee.key = "kc-test";
	ee.value = &ext;
	Kc__Containers__Container__ExtensionsEntry *eep = &ee;
	ct->extensions = &eep;
	ct->n_extensions = 1;

	Kc__Types__Process task = KC__TYPES__PROCESS__INIT;
	task.pid = 4327;
	task.stdout = "file:///var/log/c1.log";
	task.stderr = "";
	struct kc_ctrd_proc procs[] = {{4327, 1}, {8501, 37}};
	struct kc_ctrd_dumpinfo di = {
		.ns = "k8s.io",
		.containerd_version = "1.6.20~ds1",
		.snapshot_parent = "sha256:2a51c15333a6aa9649f2539ac11e4aec6e30e037d6b9536798ae08d671fa21d0",
		.container = ct,
		.task = &task,
		.procs = procs,
		.n_procs = 2,
		.rw = &(struct kc_ctrd_rw){.file = "rw-layer.tar",
					   .media_type = "application/vnd.oci.image.layer.v1.tar",
					   .digest = "sha256:abcd",
					   .size = 5120},
	};
	_cleanup_free_ char *text = kc_ctrd_saved_json(&di);

	/* readable: the spec is JSON, not a blob */
	json_object *root = json_tokener_parse(text);
	assert_non_null(root);
	json_object *spec, *js, *proc, *args;
	assert_true(json_object_object_get_ex(root, "spec", &spec));
	assert_true(json_object_object_get_ex(spec, "json", &js));
	assert_true(json_object_object_get_ex(js, "process", &proc));
	assert_true(json_object_object_get_ex(proc, "args", &args));
	assert_string_equal(json_object_get_string(json_object_array_get_idx(args, 0)), "sh");
	json_object_put(root);

	struct kc_ctrd_saved *s = NULL;
	struct kc_error *err = NULL;
	assert_int_equal(kc_ctrd_saved_parse(text, strlen(text), &s, &err), 0);
	assert_string_equal(s->id, "c1");
	assert_string_equal(s->ns, "k8s.io");
	assert_string_equal(s->image, "docker.io/kcheckpoint/busybox:test");
	assert_string_equal(s->snapshotter, "overlayfs");
	assert_string_equal(s->snapshot_key, "c1");
	assert_string_equal(s->snapshot_parent, di.snapshot_parent);
	assert_string_equal(s->runtime_name, "io.containerd.runc.v2");
	assert_non_null(s->runtime_options);
	assert_string_equal(s->runtime_options->type_url, "containerd.runc.v1.Options");
	assert_int_equal(s->runtime_options->value.len, sizeof(opt));
	assert_memory_equal(s->runtime_options->value.data, opt, sizeof(opt));
	assert_string_equal(s->spec_type_url, ct->spec->type_url);
	assert_int_equal(s->n_labels, ct->n_labels);
	assert_string_equal(s->labels[0]->key, "io.containerd.image.config.stop-signal");
	assert_string_equal(s->labels[0]->value, "SIGTERM");
	assert_int_equal(s->n_extensions, 1);
	assert_string_equal(s->extensions[0]->key, "kc-test");
	assert_int_equal(s->extensions[0]->value->value.len, sizeof(extv));
	assert_memory_equal(s->extensions[0]->value->value.data, extv, sizeof(extv));
	assert_string_equal(s->task_stdout, "file:///var/log/c1.log");
	assert_int_equal(s->task_pid, 4327);
	assert_int_equal(s->n_procs, 2);
	assert_int_equal(s->procs[1].pid, 8501);
	assert_int_equal(s->procs[1].ns_pid, 37);
	assert_string_equal(s->rw.file, "rw-layer.tar");
	assert_string_equal(s->rw.media_type, "application/vnd.oci.image.layer.v1.tar");
	assert_string_equal(s->rw.digest, "sha256:abcd");
	assert_int_equal(s->rw.size, 5120);

	/* the spec comes back as the same JSON document */
	json_object *a = json_tokener_parse(s->spec);
	_cleanup_free_ char *orig = kc_xmalloc(ct->spec->value.len + 1);
	memcpy(orig, ct->spec->value.data, ct->spec->value.len);
	orig[ct->spec->value.len] = '\0';
	json_object *b = json_tokener_parse(orig);
	assert_non_null(a);
	assert_non_null(b);
	assert_true(json_object_equal(a, b));
	json_object_put(a);
	json_object_put(b);

	/* same id: the spec as it was */
	_cleanup_free_ char *same = kc_ctrd_spec_for(s, "c1");
	assert_string_equal(same, s->spec);
	/* new id: the cgroup moves along, nothing else changes */
	_cleanup_free_ char *moved = kc_ctrd_spec_for(s, "c1-copy");
	json_object *m = json_tokener_parse(moved), *lin, *cg;
	assert_true(json_object_object_get_ex(m, "linux", &lin));
	assert_true(json_object_object_get_ex(lin, "cgroupsPath", &cg));
	assert_string_equal(json_object_get_string(cg), "/k8s.io/c1-copy");
	json_object_object_add(lin, "cgroupsPath", json_object_new_string("/k8s.io/c1"));
	json_object *o2 = json_tokener_parse(s->spec);
	assert_true(json_object_equal(m, o2));
	json_object_put(m);
	json_object_put(o2);

	kc_ctrd_saved_free(s);
	ct->runtime->options = recorded_opt;
	ct->extensions = NULL;
	ct->n_extensions = 0;
	kc__containers__get_container_response__free_unpacked(r, NULL);
}

static struct kc_ctrd_saved *saved_with_cgroup(const char *id, const char *cgroups_path)
{
	struct kc_ctrd_saved *s = kc_xcalloc(1, sizeof(*s));
	s->id = kc_xstrdup(id);
	s->spec = kc_xasprintf("{\"linux\":{\"cgroupsPath\":\"%s\"},\"hostname\":\"%s\"}",
			       cgroups_path, id);
	return s;
}

static void test_spec_cgroups(void **state)
{
	struct {
		const char *path, *want;
	} cases[] = {
		{"/k8s.io/abc", "/k8s.io/new"},
		{"kubepods-besteffort.slice:cri-containerd:abc", "kubepods-besteffort.slice:cri-containerd:new"},
		/* only a whole trailing component is the id */
		{"/k8s.io/xabc", "/k8s.io/xabc"},
		{"abc", "abc"},
		{"/k8s.io/abc/sub", "/k8s.io/abc/sub"},
	};
	for (size_t i = 0; i < KC_ARRAY_SIZE(cases); i++) {
		struct kc_ctrd_saved *s = saved_with_cgroup("abc", cases[i].path);
		_cleanup_free_ char *out = kc_ctrd_spec_for(s, "new");
		json_object *o = json_tokener_parse(out), *lin, *cg, *host;
		assert_true(json_object_object_get_ex(o, "linux", &lin));
		assert_true(json_object_object_get_ex(lin, "cgroupsPath", &cg));
		assert_string_equal(json_object_get_string(cg), cases[i].want);
		/* the hostname is the user's business, left alone */
		assert_true(json_object_object_get_ex(o, "hostname", &host));
		assert_string_equal(json_object_get_string(host), "abc");
		json_object_put(o);
		kc_ctrd_saved_free(s);
	}
	/* no linux section: unchanged */
	struct kc_ctrd_saved *s = kc_xcalloc(1, sizeof(*s));
	s->id = kc_xstrdup("abc");
	s->spec = kc_xstrdup("{\"process\":{}}");
	_cleanup_free_ char *out = kc_ctrd_spec_for(s, "new");
	assert_string_equal(out, "{\"process\":{}}");
	kc_ctrd_saved_free(s);
}

static void test_parse_errors(void **state)
{
	const char *bad[] = {
		"",
		"[]",
		"{\"format\":2,\"id\":\"a\"}",
		"{\"format\":1}",
		"{\"format\":1,\"id\":\"a\"}",
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"io.containerd.runc.v2\"}}",
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\"},\"spec\":{\"type_url\":\"t\"}}",
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\",\"options\":{\"type_url\":\"t\","
		"\"value\":\"!!\"}},\"spec\":{\"type_url\":\"t\",\"json\":{}}}",
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\"},\"spec\":{\"type_url\":\"t\","
		"\"json\":{}},\"labels\":{\"k\":1}}",
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\"},\"spec\":{\"type_url\":\"t\","
		"\"json\":{}},\"processes\":[{\"pid\":1}]}",
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\"},\"spec\":{\"type_url\":\"t\","
		"\"json\":{}},\"snapshot_key\":\"a\"}",
		/* the rw layer must be a plain file name in the images dir */
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\"},\"spec\":{\"type_url\":\"t\","
		"\"json\":{}},\"rw_layer\":{\"file\":\"../x\",\"media_type\":\"m\",\"digest\":\"d\","
		"\"size\":1}}",
		"{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\"},\"spec\":{\"type_url\":\"t\","
		"\"json\":{}},\"rw_layer\":{\"file\":\"f\",\"media_type\":\"m\",\"digest\":\"d\","
		"\"size\":-1}}",
		"{\"format\":1,\"id\":7,\"runtime\":{\"name\":\"r\"},\"spec\":{\"type_url\":\"t\",\"json\":{}}}",
	};
	for (size_t i = 0; i < KC_ARRAY_SIZE(bad); i++) {
		struct kc_ctrd_saved *s = NULL;
		struct kc_error *err = NULL;
		assert_int_equal(kc_ctrd_saved_parse(bad[i], strlen(bad[i]), &s, &err), -1);
		assert_null(s);
		assert_int_equal(err->exit_code, KC_EXIT_IMAGE);
		assert_non_null(strstr(err->msg, "containerd.json"));
		kc_error_free(err);
	}
	/* the smallest valid one, with a spec kept as base64 */
	const char *ok = "{\"format\":1,\"id\":\"a\",\"runtime\":{\"name\":\"r\"},"
			 "\"spec\":{\"type_url\":\"t\",\"base64\":\"bm90IGpzb24=\"}}";
	struct kc_ctrd_saved *s = NULL;
	struct kc_error *err = NULL;
	assert_int_equal(kc_ctrd_saved_parse(ok, strlen(ok), &s, &err), 0);
	assert_string_equal(s->spec, "not json");
	assert_null(s->runtime_options);
	assert_null(s->rw.file);
	_cleanup_free_ char *same = kc_ctrd_spec_for(s, "b");
	assert_string_equal(same, "not json");
	kc_ctrd_saved_free(s);
}

static void test_read_missing(void **state)
{
	char dir[] = "/tmp/kc-test-ctrd-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct kc_ctrd_saved *s = NULL;
	struct kc_error *err = NULL;
	assert_int_equal(kc_ctrd_saved_read(dir, &s, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_IMAGE);
	assert_non_null(strstr(err->msg, "it was not dumped with --containerd"));
	kc_error_free(err);
	rmdir(dir);
}

static void test_options(void **state)
{
	unsetenv("KCHECKPOINT_CONTAINERD_ADDRESS");
	unsetenv("CONTAINERD_ADDRESS");
	unsetenv("KCHECKPOINT_CONTAINERD_NAMESPACE");
	unsetenv("CONTAINERD_NAMESPACE");
	struct kc_containerd_opts o = {0};
	assert_string_equal(kc_containerd_address(&o), "/run/containerd/containerd.sock");
	assert_string_equal(kc_containerd_namespace(&o), "k8s.io");
	setenv("CONTAINERD_ADDRESS", "/a.sock", 1);
	setenv("CONTAINERD_NAMESPACE", "ns-a", 1);
	assert_string_equal(kc_containerd_address(&o), "/a.sock");
	assert_string_equal(kc_containerd_namespace(&o), "ns-a");
	setenv("KCHECKPOINT_CONTAINERD_ADDRESS", "/b.sock", 1);
	setenv("KCHECKPOINT_CONTAINERD_NAMESPACE", "ns-b", 1);
	assert_string_equal(kc_containerd_address(&o), "/b.sock");
	assert_string_equal(kc_containerd_namespace(&o), "ns-b");
	o.address = "/c.sock";
	o.ns = "ns-c";
	assert_string_equal(kc_containerd_address(&o), "/c.sock");
	assert_string_equal(kc_containerd_namespace(&o), "ns-c");
	unsetenv("KCHECKPOINT_CONTAINERD_ADDRESS");
	unsetenv("CONTAINERD_ADDRESS");
	unsetenv("KCHECKPOINT_CONTAINERD_NAMESPACE");
	unsetenv("CONTAINERD_NAMESPACE");

	/* bad ids are refused before any connection is tried */
	const char *bad_ids[] = {"", "a/b", "-a", "a-", "x y", "../etc"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(bad_ids); i++) {
		struct kc_containerd_opts b = {.address = "/nonexistent.sock", .container_id = bad_ids[i]};
		struct kc_criu cpu = {0};
		pid_t pid;
		struct kc_error *err = NULL;
		assert_int_equal(kc_containerd_open_dump(&b, &cpu, &pid, &err), -1);
		assert_int_equal(err->exit_code, KC_EXIT_USAGE);
		kc_error_free(err);
		assert_false(kc_containerd_is(&cpu));
	}
	/* a good id gets as far as the socket */
	struct kc_containerd_opts g = {.address = "/nonexistent.sock", .container_id = "a.b_c-1"};
	struct kc_criu cpu = {0};
	struct kc_error *err = NULL;
	assert_int_equal(kc_containerd_open_restore(&g, &cpu, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_string_equal(err->msg, "containerd socket '/nonexistent.sock' does not exist");
	kc_error_free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_spec_cgroups),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_read_missing),
		cmocka_unit_test(test_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
