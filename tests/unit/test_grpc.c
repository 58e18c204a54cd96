/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC framing, headers/trailers and the client's socket errors.
 *
 * data/grpc/<name>.data are the raw HTTP/2 DATA bytes and <name>.headers
 * the header and trailer lines (as libcurl hands them to the header
 * callback) of real answers from containerd 1.6.20 (Debian bookworm):
 *   version            Version.Version
 *   get_container      Containers.Get of a busybox container 'c1'
 *   get_notfound       Containers.Get of 'nosuch' (a Trailers-Only answer)
 *   listpids           Tasks.ListPids of 'c1' (pids 4327 and 8501)
 *   task_get           Tasks.Get of 'c1' (pid 4327, running)
 *   no_such_method     Tasks/NoSuchMethod (unimplemented)
 *   checkpoint_refused Tasks.Checkpoint of a task with a TCP connection
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/error.h"
#include "kc/grpc.h"
#include "kc/util.h"

#include "kc_containers.pb-c.h"
#include "kc_misc.pb-c.h"
#include "kc_tasks.pb-c.h"
#include "kc_types.pb-c.h"

static uint8_t *read_data(const char *name, size_t *len)
{
	const char *src = getenv("KC_SOURCE_DIR");
	if (!src)
		fail_msg("KC_SOURCE_DIR is not set (run through ctest)");
	_cleanup_free_ char *path = kc_xasprintf("%s/tests/unit/data/grpc/%s", src, name);
	char *buf = NULL;
	struct kc_error *err = NULL;
	if (kc_read_file(path, &buf, len, &err) < 0)
		fail_msg("%s", err->msg);
	return (uint8_t *)buf;
}

/* ---- message collection -------------------------------------------- */

struct collect {
	size_t n;
	uint8_t *msgs[16];
	size_t lens[16];
	int fail_at; /* 1-based message index whose callback fails; 0: never */
};

static int collect_fn(void *arg, const uint8_t *msg, size_t len, struct kc_error **err)
{
	struct collect *c = arg;
	if (c->n >= 16)
		fail_msg("too many messages");
	if (c->fail_at && (int)c->n + 1 == c->fail_at)
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "callback says no");
	c->msgs[c->n] = kc_xmalloc(len + 1);
	memcpy(c->msgs[c->n], msg, len);
	c->lens[c->n++] = len;
	return 0;
}

static void collect_free(struct collect *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->msgs[i]);
	c->n = 0;
}

/* Feeds data in pieces of `step` bytes (0: all at once). */
static int feed(const uint8_t *data, size_t len, size_t step, struct collect *c,
		struct kc_error **err)
{
	struct kc_grpc_decoder d;
	kc_grpc_decoder_init(&d, 0);
	int rc = 0;
	if (step == 0)
		step = len ? len : 1;
	for (size_t off = 0; off < len && rc == 0; off += step)
		rc = kc_grpc_decoder_feed(&d, data + off, len - off < step ? len - off : step,
					  collect_fn, c, err);
	if (rc == 0)
		rc = kc_grpc_decoder_finish(&d, err);
	kc_grpc_decoder_free(&d);
	return rc;
}

/* ---- framing -------------------------------------------------------- */

static void test_frame_request(void **state)
{
	/* ListPidsRequest{container_id: "c1"} as containerd expects it */
	Kc__Tasks__ListPidsRequest r = KC__TASKS__LIST_PIDS_REQUEST__INIT;
	r.container_id = "c1";
	uint8_t buf[16];
	size_t n = protobuf_c_message_pack(&r.base, buf);
	size_t flen;
	_cleanup_free_ uint8_t *f = kc_grpc_frame(buf, n, &flen);
	const uint8_t want[] = {0x00, 0x00, 0x00, 0x00, 0x04, 0x0a, 0x02, 'c', '1'};
	assert_int_equal(flen, sizeof(want));
	assert_memory_equal(f, want, sizeof(want));

	/* the empty message of Version.Version: a bare 5-byte header */
	_cleanup_free_ uint8_t *e = kc_grpc_frame(NULL, 0, &flen);
	const uint8_t want_e[] = {0, 0, 0, 0, 0};
	assert_int_equal(flen, 5);
	assert_memory_equal(e, want_e, 5);
}

static void test_frame_roundtrip_large(void **state)
{
	/* lengths above 2^24 use every byte of the prefix */
	size_t len = (1u << 24) + 0x010203;
	uint8_t *msg = kc_xmalloc(len);
	for (size_t i = 0; i < len; i++)
		msg[i] = (uint8_t)(i * 7);
	size_t flen;
	uint8_t *f = kc_grpc_frame(msg, len, &flen);
	assert_int_equal(f[1], 0x01);
	assert_int_equal(f[2], 0x01);
	assert_int_equal(f[3], 0x02);
	assert_int_equal(f[4], 0x03);

	struct kc_grpc_decoder d;
	kc_grpc_decoder_init(&d, 32u << 20);
	struct collect c = {0};
	struct kc_error *err = NULL;
	assert_int_equal(kc_grpc_decoder_feed(&d, f, flen / 3, collect_fn, &c, &err), 0);
	assert_int_equal(kc_grpc_decoder_feed(&d, f + flen / 3, flen - flen / 3, collect_fn, &c, &err), 0);
	assert_int_equal(kc_grpc_decoder_finish(&d, &err), 0);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.lens[0], len);
	assert_memory_equal(c.msgs[0], msg, len);
	collect_free(&c);
	kc_grpc_decoder_free(&d);
	free(f);
	free(msg);
}

static void test_decode_version(void **state)
{
	size_t len;
	_cleanup_free_ uint8_t *data = read_data("version.data", &len);
	struct collect c = {0};
	struct kc_error *err = NULL;
	assert_int_equal(feed(data, len, 0, &c, &err), 0);
	assert_int_equal(c.n, 1);
	Kc__Misc__VersionResponse *v =
		kc__misc__version_response__unpack(NULL, c.lens[0], c.msgs[0]);
	assert_non_null(v);
	assert_string_equal(v->version, "1.6.20~ds1");
	assert_string_equal(v->revision, "1.6.20~ds1-1+deb12u3");
	kc__misc__version_response__free_unpacked(v, NULL);
	collect_free(&c);
}

static void test_decode_split_everywhere(void **state)
{
	/* the decoder must give the same message however the bytes arrive */
	size_t len;
	_cleanup_free_ uint8_t *data = read_data("get_container.data", &len);
	struct collect whole = {0};
	struct kc_error *err = NULL;
	assert_int_equal(feed(data, len, 0, &whole, &err), 0);
	assert_int_equal(whole.n, 1);
	assert_int_equal(whole.lens[0], len - 5);

	for (size_t step = 1; step <= 13; step++) {
		struct collect c = {0};
		assert_int_equal(feed(data, len, step, &c, &err), 0);
		assert_int_equal(c.n, 1);
		assert_int_equal(c.lens[0], whole.lens[0]);
		assert_memory_equal(c.msgs[0], whole.msgs[0], whole.lens[0]);
		collect_free(&c);
	}

	Kc__Containers__GetContainerResponse *r =
		kc__containers__get_container_response__unpack(NULL, whole.lens[0], whole.msgs[0]);
	assert_non_null(r);
	assert_non_null(r->container);
	assert_string_equal(r->container->id, "c1");
	assert_string_equal(r->container->image, "docker.io/kcheckpoint/busybox:test");
	assert_string_equal(r->container->runtime->name, "io.containerd.runc.v2");
	assert_string_equal(r->container->snapshotter, "overlayfs");
	assert_string_equal(r->container->snapshot_key, "c1");
	assert_string_equal(r->container->spec->type_url,
			    "types.containerd.io/opencontainers/runtime-spec/1/Spec");
	assert_true(r->container->spec->value.len > 1000);
	assert_int_equal(r->container->spec->value.data[0], '{');
	kc__containers__get_container_response__free_unpacked(r, NULL);
	collect_free(&whole);
}

static void test_decode_listpids_and_task(void **state)
{
	size_t len;
	_cleanup_free_ uint8_t *data = read_data("listpids.data", &len);
	struct collect c = {0};
	struct kc_error *err = NULL;
	assert_int_equal(feed(data, len, 1, &c, &err), 0);
	assert_int_equal(c.n, 1);
	Kc__Tasks__ListPidsResponse *r = kc__tasks__list_pids_response__unpack(NULL, c.lens[0], c.msgs[0]);
	assert_non_null(r);
	assert_int_equal(r->n_processes, 2);
	assert_int_equal(r->processes[0]->pid, 4327);
	assert_int_equal(r->processes[1]->pid, 8501);
	kc__tasks__list_pids_response__free_unpacked(r, NULL);
	collect_free(&c);

	_cleanup_free_ uint8_t *t = read_data("task_get.data", &len);
	assert_int_equal(feed(t, len, 0, &c, &err), 0);
	Kc__Tasks__GetResponse *g = kc__tasks__get_response__unpack(NULL, c.lens[0], c.msgs[0]);
	assert_non_null(g);
	assert_string_equal(g->process->id, "c1");
	assert_int_equal(g->process->pid, 4327);
	assert_int_equal(g->process->status, KC__TYPES__STATUS__RUNNING);
	kc__tasks__get_response__free_unpacked(g, NULL);
	collect_free(&c);
}

static void test_decode_several_frames(void **state)
{
	/* a server stream: three messages, one of them empty */
	uint8_t buf[64];
	size_t off = 0, flen;
	const char *msgs[] = {"abc", "", "hello world"};
	for (int i = 0; i < 3; i++) {
		uint8_t *f = kc_grpc_frame(msgs[i], strlen(msgs[i]), &flen);
		memcpy(buf + off, f, flen);
		off += flen;
		free(f);
	}
	for (size_t step = 0; step <= 7; step++) {
		struct collect c = {0};
		struct kc_error *err = NULL;
		assert_int_equal(feed(buf, off, step, &c, &err), 0);
		assert_int_equal(c.n, 3);
		for (int i = 0; i < 3; i++) {
			assert_int_equal(c.lens[i], strlen(msgs[i]));
			assert_memory_equal(c.msgs[i], msgs[i], c.lens[i]);
		}
		collect_free(&c);
	}
}

static void test_decode_truncated(void **state)
{
	size_t len;
	_cleanup_free_ uint8_t *data = read_data("version.data", &len);
	for (size_t cut = 1; cut < len; cut++) {
		struct collect c = {0};
		struct kc_error *err = NULL;
		assert_int_equal(feed(data, cut, 0, &c, &err), -1);
		assert_int_equal(c.n, 0);
		assert_int_equal(err->exit_code, KC_EXIT_CONTAINERD);
		assert_non_null(strstr(err->msg, "ended inside a message"));
		kc_error_free(err);
	}
}

static void test_decode_bad_frames(void **state)
{
	struct kc_error *err = NULL;
	struct collect c = {0};
	const uint8_t compressed[] = {0x01, 0, 0, 0, 1, 'x'};
	assert_int_equal(feed(compressed, sizeof(compressed), 0, &c, &err), -1);
	assert_non_null(strstr(err->msg, "compressed"));
	kc_error_free(err);
	err = NULL;

	const uint8_t flags[] = {0x80, 0, 0, 0, 0};
	assert_int_equal(feed(flags, sizeof(flags), 1, &c, &err), -1);
	assert_non_null(strstr(err->msg, "flags 0x80"));
	kc_error_free(err);
	err = NULL;

	/* 4 GiB - 1 announced: refused at the header, nothing allocated */
	const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff, 'a', 'b'};
	assert_int_equal(feed(huge, sizeof(huge), 2, &c, &err), -1);
	assert_non_null(strstr(err->msg, "exceeds the limit"));
	kc_error_free(err);
	err = NULL;
	assert_int_equal(c.n, 0);

	/* a limit of our own */
	struct kc_grpc_decoder d;
	kc_grpc_decoder_init(&d, 4);
	const uint8_t five[] = {0, 0, 0, 0, 5, '1', '2', '3', '4', '5'};
	assert_int_equal(kc_grpc_decoder_feed(&d, five, sizeof(five), collect_fn, &c, &err), -1);
	kc_error_free(err);
	err = NULL;
	/* sticky: a failed stream stays failed */
	const uint8_t ok[] = {0, 0, 0, 0, 1, 'x'};
	assert_int_equal(kc_grpc_decoder_feed(&d, ok, sizeof(ok), collect_fn, &c, &err), -1);
	kc_error_free(err);
	kc_grpc_decoder_free(&d);
	assert_int_equal(c.n, 0);
}

static void test_decode_callback_error(void **state)
{
	uint8_t buf[32];
	size_t off = 0, flen;
	for (int i = 0; i < 3; i++) {
		uint8_t *f = kc_grpc_frame("ab", 2, &flen);
		memcpy(buf + off, f, flen);
		off += flen;
		free(f);
	}
	struct collect c = {.fail_at = 2};
	struct kc_error *err = NULL;
	assert_int_equal(feed(buf, off, 0, &c, &err), -1);
	assert_string_equal(err->msg, "callback says no");
	assert_int_equal(c.n, 1); /* the third message was not delivered */
	kc_error_free(err);
	collect_free(&c);
}

/* ---- headers and trailers ------------------------------------------ */

/* Runs every recorded header line through kc_grpc_status_header. */
static void load_headers(const char *name, struct kc_grpc_status *st)
{
	size_t len;
	_cleanup_free_ uint8_t *data = read_data(name, &len);
	kc_grpc_status_init(st);
	const char *p = (const char *)data, *end = p + len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t l = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		kc_grpc_status_header(st, p, l);
		p += l;
	}
}

static void test_status_ok(void **state)
{
	struct kc_grpc_status st;
	load_headers("version.headers", &st);
	assert_int_equal(st.http_status, 200);
	assert_true(st.have_grpc_status);
	assert_int_equal(st.grpc_status, 0);
	assert_true(st.grpc_content_type);
	assert_string_equal(st.grpc_message, "");
	struct kc_error *err = NULL;
	assert_int_equal(kc_grpc_status_check(&st, "Version.Version", &err), 0);
	assert_null(err);
	kc_grpc_status_free(&st);
}

static void test_status_not_found(void **state)
{
	struct kc_grpc_status st;
	load_headers("get_notfound.headers", &st);
	assert_int_equal(st.grpc_status, KC_GRPC_NOT_FOUND);
	struct kc_error *err = NULL;
	assert_int_equal(kc_grpc_status_check(&st, "Containers.Get", &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_int_equal(err->cause, KC_GRPC_NOT_FOUND);
	assert_string_equal(err->msg, "containerd refused 'Containers.Get': "
				      "container \"nosuch\" in namespace \"k8s.io\": not found");
	kc_error_free(err);
	kc_grpc_status_free(&st);
}

static void test_status_refused(void **state)
{
	struct kc_grpc_status st;
	struct kc_error *err = NULL;
	load_headers("checkpoint_refused.headers", &st);
	assert_int_equal(st.grpc_status, KC_GRPC_UNKNOWN);
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Checkpoint", &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_CONTAINERD);
	assert_int_equal(err->cause, KC_GRPC_UNKNOWN);
	assert_non_null(strstr(err->msg, "containerd refused 'Tasks.Checkpoint': runc did not "
					 "terminate successfully"));
	assert_null(strchr(err->msg, '\r'));
	assert_null(strchr(err->msg, '\n'));
	kc_error_free(err);
	kc_grpc_status_free(&st);

	err = NULL;
	load_headers("no_such_method.headers", &st);
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.NoSuchMethod", &err), -1);
	assert_int_equal(err->cause, KC_GRPC_UNIMPLEMENTED);
	assert_non_null(strstr(err->msg, "unknown method NoSuchMethod"));
	kc_error_free(err);
	kc_grpc_status_free(&st);
}

static void lines(struct kc_grpc_status *st, const char *const *l)
{
	kc_grpc_status_init(st);
	for (; *l; l++)
		kc_grpc_status_header(st, *l, strlen(*l));
}

static void test_status_protocol_errors(void **state)
{
	struct kc_grpc_status st;
	struct kc_error *err = NULL;

	/* nothing at all: the connection went away */
	kc_grpc_status_init(&st);
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Get", &err), -1);
	assert_string_equal(err->msg, "containerd closed the connection without answering 'Tasks.Get'");
	kc_error_free(err);
	err = NULL;

	/* an HTTP error from something that is not gRPC */
	lines(&st, (const char *const[]){"HTTP/2 503 \r\n", "content-type: text/plain\r\n", NULL});
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Get", &err), -1);
	assert_string_equal(err->msg, "containerd answered 'Tasks.Get' with HTTP status 503");
	kc_error_free(err);
	err = NULL;

	lines(&st, (const char *const[]){"HTTP/2 200\r\n", "content-type: text/html\r\n", NULL});
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Get", &err), -1);
	assert_non_null(strstr(err->msg, "not gRPC"));
	kc_error_free(err);
	err = NULL;

	/* 200 with data but the trailers never came */
	lines(&st, (const char *const[]){"HTTP/2 200\r\n", "content-type: application/grpc\r\n", NULL});
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Get", &err), -1);
	assert_non_null(strstr(err->msg, "carries no grpc-status"));
	kc_error_free(err);
	err = NULL;

	/* malformed status: treated as UNKNOWN, never as OK */
	lines(&st, (const char *const[]){"HTTP/2 200\r\n", "grpc-status: 0x\r\n", NULL});
	assert_int_equal(st.grpc_status, KC_GRPC_UNKNOWN);
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Get", &err), -1);
	assert_non_null(strstr(err->msg, "malformed grpc-status"));
	kc_error_free(err);
	err = NULL;
	kc_grpc_status_free(&st);

	/* header names are case-insensitive; a later grpc-message wins */
	lines(&st, (const char *const[]){"HTTP/2 200\r\n", "Content-Type: application/grpc+proto\r\n",
					 "Grpc-Message: first\r\n", "GRPC-STATUS:   7  \r\n",
					 "grpc-message: second%20one\r\n", NULL});
	assert_true(st.grpc_content_type);
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Kill", &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_PERM);
	assert_string_equal(err->msg, "containerd refused 'Tasks.Kill': second one");
	kc_error_free(err);
	err = NULL;
	kc_grpc_status_free(&st);

	/* one line, whatever the message holds */
	lines(&st, (const char *const[]){"HTTP/2 200\r\n", "grpc-status: 2\r\n",
					 "grpc-message: criu failed%0Asee log%0D%09x\r\n", NULL});
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Checkpoint", &err), -1);
	assert_string_equal(err->msg, "containerd refused 'Tasks.Checkpoint': criu failed see log  x");
	kc_error_free(err);
	err = NULL;
	kc_grpc_status_free(&st);

	/* no message: the code's name */
	lines(&st, (const char *const[]){"HTTP/2 200\r\n", "grpc-status: 14\r\n", NULL});
	assert_int_equal(kc_grpc_status_check(&st, "Tasks.Get", &err), -1);
	assert_string_equal(err->msg, "containerd refused 'Tasks.Get': unavailable");
	assert_int_equal(err->exit_code, KC_EXIT_CONTAINERD);
	kc_error_free(err);
	kc_grpc_status_free(&st);
}

static void test_percent_decode(void **state)
{
	struct {
		const char *in, *out;
	} cases[] = {
		{"", ""},
		{"plain text", "plain text"},
		{"a%20b", "a b"},
		{"100%25", "100%"},
		{"%E2%9C%93", "\xe2\x9c\x93"},
		{"line%0Anext", "line\nnext"},
		{"nul%00here", "nul?here"},
		{"bad%zzescape", "bad%zzescape"},
		{"trailing%4", "trailing%4"},
		{"trailing%", "trailing%"},
	};
	for (size_t i = 0; i < KC_ARRAY_SIZE(cases); i++) {
		_cleanup_free_ char *s = kc_grpc_percent_decode(cases[i].in, strlen(cases[i].in));
		assert_string_equal(s, cases[i].out);
	}
}

static void test_names(void **state)
{
	char buf[128];
	kc_grpc_method_name("/containerd.services.tasks.v1.Tasks/Checkpoint", buf, sizeof(buf));
	assert_string_equal(buf, "Tasks.Checkpoint");
	kc_grpc_method_name("/Svc/M", buf, sizeof(buf));
	assert_string_equal(buf, "Svc.M");
	char cb[16];
	assert_string_equal(kc_grpc_code_name(5, cb), "not found");
	assert_string_equal(kc_grpc_code_name(16, cb), "unauthenticated");
	assert_string_equal(kc_grpc_code_name(42, cb), "code 42");
}

/* ---- the client against sockets that are not containerd ------------ */

static char *temp_socket_path(const char *tag)
{
	return kc_xasprintf("/tmp/kc-test-grpc-%d-%s.sock", (int)getpid(), tag);
}

static int listen_on(const char *path)
{
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

static void test_client_socket_missing(void **state)
{
	struct kc_grpc *g = NULL;
	struct kc_error *err = NULL;
	_cleanup_free_ char *path = temp_socket_path("missing");
	unlink(path);
	assert_int_equal(kc_grpc_open(path, "k8s.io", &g, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_NOENT);
	assert_non_null(strstr(err->msg, "does not exist"));
	kc_error_free(err);
}

static void test_client_not_a_socket(void **state)
{
	struct kc_grpc *g = NULL;
	struct kc_error *err = NULL;
	_cleanup_free_ char *path = temp_socket_path("file");
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(kc_grpc_open(path, "k8s.io", &g, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_CONTAINERD);
	assert_non_null(strstr(err->msg, "is not a socket"));
	kc_error_free(err);
	unlink(path);
}

static void test_client_nobody_listening(void **state)
{
	struct kc_grpc *g = NULL;
	struct kc_error *err = NULL;
	_cleanup_free_ char *path = temp_socket_path("dead");
	int fd = listen_on(path);
	close(fd); /* the socket file stays, nobody accepts: ECONNREFUSED */
	assert_int_equal(kc_grpc_open(path, "k8s.io", &g, &err), -1);
	assert_int_equal(err->exit_code, KC_EXIT_CONTAINERD);
	assert_non_null(strstr(err->msg, "containerd is not listening on"));
	kc_error_free(err);
	unlink(path);
}

static void test_client_no_permission(void **state)
{
	/* root may connect anywhere; a child drops to nobody to see EACCES */
	_cleanup_free_ char *path = temp_socket_path("perm");
	int fd = listen_on(path);
	assert_int_equal(chmod(path, 0600), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (getuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
			_exit(10);
		struct kc_grpc *g = NULL;
		struct kc_error *err = NULL;
		int rc = kc_grpc_open(path, "k8s.io", &g, &err);
		_exit(rc == -1 && err->exit_code == KC_EXIT_PERM &&
				      strstr(err->msg, "permission denied")
			      ? 0
			      : 11);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	close(fd);
	unlink(path);
}

/* A listener that accepts and then says nothing, like a hung daemon. */
struct mute {
	int fd;
	int conn;
};

static void *mute_server(void *arg)
{
	struct mute *m = arg;
	m->conn = accept(m->fd, NULL, NULL);
	return NULL;
}

static void test_client_not_answering(void **state)
{
	_cleanup_free_ char *path = temp_socket_path("mute");
	struct mute m = {.fd = listen_on(path), .conn = -1};
	setenv("KCHECKPOINT_CONTAINERD_TIMEOUT", "1", 1);
	struct kc_grpc *g = NULL;
	struct kc_error *err = NULL;
	/* the probe connection is accepted by the backlog; then the call's */
	assert_int_equal(kc_grpc_open(path, "k8s.io", &g, &err), 0);
	pthread_t t;
	/* drain the probe's connection so the call's is the one left hanging */
	int probe = accept(m.fd, NULL, NULL);
	assert_int_equal(pthread_create(&t, NULL, mute_server, &m), 0);
	Kc__Types__Empty e = KC__TYPES__EMPTY__INIT;
	Kc__Misc__VersionResponse *v = NULL;
	int rc = kc_grpc_unary(g, "/containerd.services.version.v1.Version/Version", &e.base,
			       &kc__misc__version_response__descriptor, (ProtobufCMessage **)&v,
			       KC_GRPC_DEFAULT_TIMEOUT, &err);
	assert_int_equal(rc, -1);
	assert_int_equal(err->exit_code, KC_EXIT_CONTAINERD);
	assert_string_equal(err->msg, "containerd did not answer 'Version.Version' within 1 s");
	kc_error_free(err);
	pthread_join(t, NULL);
	kc_grpc_close(g);
	unsetenv("KCHECKPOINT_CONTAINERD_TIMEOUT");
	close(probe);
	if (m.conn >= 0)
		close(m.conn);
	close(m.fd);
	unlink(path);
}

/* A server that speaks, but not HTTP/2: closes after reading. */
static void *rude_server(void *arg)
{
	struct mute *m = arg;
	int c = accept(m->fd, NULL, NULL);
	char buf[256];
	if (c >= 0) {
		if (read(c, buf, sizeof(buf)) < 0) {
			/* closing is the point either way */
		}
		if (write(c, "HTTP/1.1 400 Bad Request\r\n\r\n", 28) < 0) {
		}
		close(c);
	}
	return NULL;
}

static void test_client_not_grpc(void **state)
{
	_cleanup_free_ char *path = temp_socket_path("rude");
	struct mute m = {.fd = listen_on(path)};
	struct kc_grpc *g = NULL;
	struct kc_error *err = NULL;
	assert_int_equal(kc_grpc_open(path, "k8s.io", &g, &err), 0);
	int probe = accept(m.fd, NULL, NULL);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, rude_server, &m), 0);
	Kc__Types__Empty e = KC__TYPES__EMPTY__INIT;
	int rc = kc_grpc_unary(g, "/containerd.services.version.v1.Version/Version", &e.base, NULL,
			       NULL, 5000, &err);
	assert_int_equal(rc, -1);
	assert_int_equal(err->exit_code, KC_EXIT_CONTAINERD);
	assert_non_null(strstr(err->msg, "'Version.Version'"));
	kc_error_free(err);
	pthread_join(t, NULL);
	kc_grpc_close(g);
	close(probe);
	close(m.fd);
	unlink(path);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_request),
		cmocka_unit_test(test_frame_roundtrip_large),
		cmocka_unit_test(test_decode_version),
		cmocka_unit_test(test_decode_split_everywhere),
		cmocka_unit_test(test_decode_listpids_and_task),
		cmocka_unit_test(test_decode_several_frames),
		cmocka_unit_test(test_decode_truncated),
		cmocka_unit_test(test_decode_bad_frames),
		cmocka_unit_test(test_decode_callback_error),
		cmocka_unit_test(test_status_ok),
		cmocka_unit_test(test_status_not_found),
		cmocka_unit_test(test_status_refused),
		cmocka_unit_test(test_status_protocol_errors),
		cmocka_unit_test(test_percent_decode),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_client_socket_missing),
		cmocka_unit_test(test_client_not_a_socket),
		cmocka_unit_test(test_client_nobody_listening),
		cmocka_unit_test(test_client_no_permission),
		cmocka_unit_test(test_client_not_answering),
		cmocka_unit_test(test_client_not_grpc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
