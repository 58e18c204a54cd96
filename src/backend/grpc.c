/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gRPC over HTTP/2 (prior knowledge) on a unix socket, the way containerd
 * serves it.  libcurl does the HTTP/2; this file adds the gRPC parts:
 * request headers, the 5-byte message framing and the grpc-status /
 * grpc-message trailers.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>

#include "kc/grpc.h"
#include "kc/util.h"
#include "kc/version.h"

/*
 * libcurl 8.12.0 - 8.13.x drop the "te: trailers" request header on HTTP/2
 * (curl issue #17122); gRPC servers may then refuse the call, and the
 * trailers carrying the status are what the whole protocol rests on.
 */
#if LIBCURL_VERSION_NUM >= 0x080c00 && LIBCURL_VERSION_NUM < 0x080e00
#error "libcurl 8.12 and 8.13 strip the 'te: trailers' header gRPC needs; build against another libcurl"
#endif
#if LIBCURL_VERSION_NUM < 0x073e00
#error "libcurl >= 7.62 is needed (HTTP/2 trailers over unix sockets)"
#endif

static bool curl_runtime_bad(unsigned v)
{
	return v >= 0x080c00 && v < 0x080e00;
}

const char *kc_grpc_code_name(int code, char buf[16])
{
	static const char *const names[] = {
		"ok", "cancelled", "unknown", "invalid argument", "deadline exceeded",
		"not found", "already exists", "permission denied", "resource exhausted",
		"failed precondition", "aborted", "out of range", "unimplemented",
		"internal", "unavailable", "data loss", "unauthenticated",
	};
	if (code >= 0 && (size_t)code < KC_ARRAY_SIZE(names))
		return names[code];
	snprintf(buf, 16, "code %d", code);
	return buf;
}

/* ---- framing ------------------------------------------------------- */

uint8_t *kc_grpc_frame(const void *msg, size_t len, size_t *out_len)
{
	uint8_t *f = kc_xmalloc(len + 5);
	f[0] = 0;
	f[1] = (uint8_t)(len >> 24);
	f[2] = (uint8_t)(len >> 16);
	f[3] = (uint8_t)(len >> 8);
	f[4] = (uint8_t)len;
	if (len)
		memcpy(f + 5, msg, len);
	*out_len = len + 5;
	return f;
}

void kc_grpc_decoder_init(struct kc_grpc_decoder *d, size_t max_message)
{
	memset(d, 0, sizeof(*d));
	d->max_message = max_message ? max_message : KC_GRPC_MAX_MESSAGE;
}

void kc_grpc_decoder_free(struct kc_grpc_decoder *d)
{
	free(d->buf);
	d->buf = NULL;
	d->len = d->cap = 0;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks a frame header; -1 with the reason when it cannot be accepted. */
static int check_header(const struct kc_grpc_decoder *d, const uint8_t *h, struct kc_error **err)
{
	if (h[0] == 1)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				    "containerd sent a compressed message, which was not asked for");
	if (h[0] != 0)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				    "malformed gRPC frame (flags 0x%02x)", h[0]);
	uint32_t n = be32(h + 1);
	if (n > d->max_message)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				    "gRPC message of %u bytes exceeds the limit of %zu", n, d->max_message);
	return 0;
}

int kc_grpc_decoder_feed(struct kc_grpc_decoder *d, const void *data, size_t len,
			 kc_grpc_msg_fn fn, void *arg, struct kc_error **err)
{
	const uint8_t *p = data;
	if (d->failed)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0, "gRPC stream already failed");

	while (len > 0) {
		/* Fast path: whole frames straight from the caller's buffer. */
		if (d->len == 0 && len >= 5) {
			if (check_header(d, p, err) < 0)
				goto fail;
			size_t n = be32(p + 1);
			if (len - 5 >= n) {
				d->n_messages++;
				if (fn && fn(arg, p + 5, n, err) < 0)
					goto fail;
				p += 5 + n;
				len -= 5 + n;
				continue;
			}
		}
		/* Slow path: gather the header, then the body, in d->buf. */
		size_t need;
		if (d->len < 5) {
			need = 5 - d->len;
		} else {
			need = 5 + (size_t)be32(d->buf + 1) - d->len;
		}
		size_t take = len < need ? len : need;
		if (d->len + take > d->cap) {
			size_t cap = d->cap ? d->cap : 64;
			while (cap < d->len + take)
				cap *= 2;
			d->buf = kc_xrealloc(d->buf, cap);
			d->cap = cap;
		}
		memcpy(d->buf + d->len, p, take);
		d->len += take;
		p += take;
		len -= take;
		if (d->len == 5 && check_header(d, d->buf, err) < 0)
			goto fail;
		if (d->len >= 5 && d->len == 5 + (size_t)be32(d->buf + 1)) {
			d->n_messages++;
			d->len = 0;
			if (fn && fn(arg, d->buf + 5, be32(d->buf + 1), err) < 0)
				goto fail;
		}
	}
	return 0;
fail:
	d->failed = true;
	return -1;
}

int kc_grpc_decoder_finish(const struct kc_grpc_decoder *d, struct kc_error **err)
{
	if (d->len != 0)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				    "gRPC stream ended inside a message (%zu bytes pending)", d->len);
	return 0;
}

/* ---- headers and trailers ------------------------------------------ */

void kc_grpc_status_init(struct kc_grpc_status *st)
{
	memset(st, 0, sizeof(*st));
}

void kc_grpc_status_free(struct kc_grpc_status *st)
{
	free(st->grpc_message);
	st->grpc_message = NULL;
}

char *kc_grpc_percent_decode(const char *s, size_t len)
{
	char *out = kc_xmalloc(len + 1);
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		int hi, lo;
		if (s[i] == '%' && i + 2 < len && (hi = kc_hex_value(s[i + 1])) >= 0 && (lo = kc_hex_value(s[i + 2])) >= 0) {
			char c = (char)(hi << 4 | lo);
			/* A NUL would cut the message short; keep it visible. */
			out[o++] = c ? c : '?';
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

static bool name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* Strict: 1-3 decimal digits, nothing else. */
static int parse_code(const char *v, size_t n)
{
	if (n == 0 || n > 3)
		return -1;
	int code = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		code = code * 10 + (v[i] - '0');
	}
	return code;
}

void kc_grpc_status_header(struct kc_grpc_status *st, const char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		const char *sp = memchr(line, ' ', len);
		if (!sp)
			return;
		size_t rest = len - (size_t)(sp - line) - 1;
		int code = 0, digits = 0;
		for (size_t i = 0; i < rest && digits < 3; i++, digits++) {
			char c = sp[1 + i];
			if (c < '0' || c > '9')
				break;
			code = code * 10 + (c - '0');
		}
		if (digits == 3)
			st->http_status = code;
		return;
	}
	const char *colon = memchr(line, ':', len);
	if (!colon || colon == line)
		return;
	size_t nlen = (size_t)(colon - line);
	const char *v = colon + 1;
	size_t vlen = len - nlen - 1;
	while (vlen > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;

	if (name_is(line, nlen, "grpc-status")) {
		int code = parse_code(v, vlen);
		st->have_grpc_status = true;
		st->grpc_status = code < 0 ? KC_GRPC_UNKNOWN : code;
		if (code < 0 && !st->grpc_message)
			st->grpc_message = kc_xstrdup("malformed grpc-status trailer");
	} else if (name_is(line, nlen, "grpc-message")) {
		free(st->grpc_message);
		st->grpc_message = kc_grpc_percent_decode(v, vlen);
	} else if (name_is(line, nlen, "content-type")) {
		st->have_content_type = true;
		st->grpc_content_type =
			(vlen == 16 && strncasecmp(v, "application/grpc", 16) == 0) ||
			(vlen > 16 && strncasecmp(v, "application/grpc", 16) == 0 &&
			 (v[16] == '+' || v[16] == ';'));
	}
}

static int code_exit(int code)
{
	switch (code) {
	case KC_GRPC_NOT_FOUND:
		return KC_EXIT_NOENT;
	case KC_GRPC_PERMISSION_DENIED:
	case KC_GRPC_UNAUTHENTICATED:
		return KC_EXIT_PERM;
	default:
		return KC_EXIT_CONTAINERD;
	}
}

int kc_grpc_status_check(const struct kc_grpc_status *st, const char *method,
			 struct kc_error **err)
{
	char buf[16];
	if (st->have_grpc_status) {
		if (st->grpc_status == KC_GRPC_OK)
			return 0;
		const char *msg = st->grpc_message && *st->grpc_message
					  ? st->grpc_message
					  : kc_grpc_code_name(st->grpc_status, buf);
		/* errors are one line: runc and CRIU messages may carry newlines */
		_cleanup_free_ char *line = kc_xstrdup(msg);
		for (char *p = line; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = ' ';
		return kc_error_set(err, code_exit(st->grpc_status), st->grpc_status,
				    "containerd refused '%s': %s", method, line);
	}
	if (st->http_status == 0)
		return kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_UNAVAILABLE,
				    "containerd closed the connection without answering '%s'", method);
	if (st->http_status != 200)
		return kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_UNKNOWN,
				    "containerd answered '%s' with HTTP status %d", method,
				    st->http_status);
	if (st->have_content_type && !st->grpc_content_type)
		return kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_UNKNOWN,
				    "the answer to '%s' is not gRPC (wrong content-type)", method);
	return kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_UNKNOWN,
			    "the answer to '%s' carries no grpc-status", method);
}

void kc_grpc_method_name(const char *path, char *buf, size_t len)
{
	/* "/containerd.services.tasks.v1.Tasks/Checkpoint" -> "Tasks.Checkpoint" */
	const char *slash = strrchr(path, '/');
	if (!slash || slash == path) {
		snprintf(buf, len, "%s", path);
		return;
	}
	const char *svc = slash;
	while (svc > path && svc[-1] != '.' && svc[-1] != '/')
		svc--;
	snprintf(buf, len, "%.*s.%s", (int)(slash - svc), svc, slash + 1);
}

/* ---- the client ---------------------------------------------------- */

struct kc_grpc {
	CURL *curl;
	char *socket_path;
	char *ns;
	char *lease;
	unsigned default_timeout_ms;
	char errbuf[CURL_ERROR_SIZE];
};

static void curl_global(void)
{
	static bool done;
	if (!done) {
		curl_global_init(CURL_GLOBAL_NOTHING);
		done = true;
	}
}

/* Connects once ourselves: gives an errno to explain a failure with,
 * which curl's "couldn't connect" does not. */
static int probe_socket(const char *path, struct kc_error **err)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return kc_error_set(err, KC_EXIT_NOENT, ENOENT,
					    "containerd socket '%s' does not exist", path);
		return kc_error_errno(err, errno == EACCES ? KC_EXIT_PERM : KC_EXIT_CONTAINERD, errno,
				      "cannot access containerd socket '%s'", path);
	}
	if (!S_ISSOCK(st.st_mode))
		return kc_error_set(err, KC_EXIT_CONTAINERD, ENOTSOCK, "'%s' is not a socket", path);

	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return kc_error_set(err, KC_EXIT_USAGE, ENAMETOOLONG,
				    "containerd socket path '%s' is too long", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create a unix socket");
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		if (e == EACCES || e == EPERM)
			return kc_error_errno(err, KC_EXIT_PERM, e,
					      "cannot connect to containerd at '%s'", path);
		if (e == ECONNREFUSED)
			return kc_error_set(err, KC_EXIT_CONTAINERD, e,
					    "containerd is not listening on '%s'", path);
		return kc_error_errno(err, KC_EXIT_CONTAINERD, e,
				      "cannot connect to containerd at '%s'", path);
	}
	return 0;
}

static unsigned env_timeout_ms(void)
{
	const char *s = getenv("KCHECKPOINT_CONTAINERD_TIMEOUT");
	if (s && *s) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(s, &end, 10);
		if (!errno && *end == '\0' && v > 0 && v < UINT_MAX / 1000)
			return (unsigned)v * 1000;
	}
	return 30000;
}

int kc_grpc_open(const char *socket_path, const char *ns, struct kc_grpc **out,
		 struct kc_error **err)
{
	curl_global();
	curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
	if (curl_runtime_bad(vi->version_num))
		return kc_error_set(err, KC_EXIT_FAILURE, 0,
				    "libcurl %s strips the 'te: trailers' header gRPC needs; "
				    "use libcurl < 8.12 or >= 8.14",
				    vi->version);
	if (!(vi->features & CURL_VERSION_HTTP2))
		return kc_error_set(err, KC_EXIT_FAILURE, 0,
				    "libcurl %s was built without HTTP/2, which containerd's gRPC needs",
				    vi->version);
	if (!(vi->features & CURL_VERSION_UNIX_SOCKETS))
		return kc_error_set(err, KC_EXIT_FAILURE, 0,
				    "libcurl %s was built without unix socket support", vi->version);

	if (probe_socket(socket_path, err) < 0)
		return -1;

	struct kc_grpc *g = kc_xcalloc(1, sizeof(*g));
	g->curl = curl_easy_init();
	if (!g->curl) {
		free(g);
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot initialise libcurl");
	}
	g->socket_path = kc_xstrdup(socket_path);
	g->ns = kc_xstrdup(ns);
	g->default_timeout_ms = env_timeout_ms();
	*out = g;
	return 0;
}

void kc_grpc_close(struct kc_grpc *g)
{
	if (!g)
		return;
	if (g->curl)
		curl_easy_cleanup(g->curl);
	free(g->socket_path);
	free(g->ns);
	free(g->lease);
	free(g);
}

void kc_grpc_set_lease(struct kc_grpc *g, const char *lease)
{
	free(g->lease);
	g->lease = lease ? kc_xstrdup(lease) : NULL;
}

struct call_ctx {
	struct kc_grpc_decoder dec;
	struct kc_grpc_status st;
	kc_grpc_msg_fn fn;
	void *arg;
	struct kc_error *cb_err;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
	struct call_ctx *c = ud;
	size_t len = size * n;
	if (kc_grpc_decoder_feed(&c->dec, p, len, c->fn, c->arg, &c->cb_err) < 0)
		return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
	return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct call_ctx *c = ud;
	kc_grpc_status_header(&c->st, p, size * n);
	return size * n;
}

static struct curl_slist *add_header(struct curl_slist *l, const char *h)
{
	struct curl_slist *n = curl_slist_append(l, h);
	if (!n)
		abort();
	return n;
}

struct body_src {
	kc_grpc_body_fn fn;
	void *arg;
	struct kc_error *err;
};

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
	struct body_src *b = ud;
	ssize_t r = b->fn(b->arg, (uint8_t *)buf, size * n, &b->err);
	if (r < 0)
		return CURL_READFUNC_ABORT;
	return (size_t)r;
}

/* One call; the body is either `body` or produced by `src`. */
static int perform(struct kc_grpc *g, const char *path, const uint8_t *body, uint64_t body_len,
		   struct body_src *src, unsigned timeout_ms, kc_grpc_msg_fn fn, void *arg,
		   struct kc_error **err)
{
	char method[128];
	kc_grpc_method_name(path, method, sizeof(method));
	if (timeout_ms == KC_GRPC_DEFAULT_TIMEOUT)
		timeout_ms = g->default_timeout_ms;

	_cleanup_free_ char *url = kc_xasprintf("http://localhost%s", path);
	_cleanup_free_ char *ns_h = kc_xasprintf("containerd-namespace: %s", g->ns);
	_cleanup_free_ char *lease_h = g->lease ? kc_xasprintf("containerd-lease: %s", g->lease) : NULL;
	_cleanup_free_ char *timeout_h =
		timeout_ms ? kc_xasprintf("grpc-timeout: %um", timeout_ms) : NULL;
	_cleanup_free_ char *ua_h = kc_xasprintf("user-agent: kcheckpoint/%s", KC_VERSION);

	struct curl_slist *hdrs = NULL;
	hdrs = add_header(hdrs, "content-type: application/grpc");
	hdrs = add_header(hdrs, "te: trailers");
	hdrs = add_header(hdrs, ns_h);
	hdrs = add_header(hdrs, ua_h);
	hdrs = add_header(hdrs, "Accept:"); /* curl's default has no place in gRPC */
	if (lease_h)
		hdrs = add_header(hdrs, lease_h);
	if (timeout_h)
		hdrs = add_header(hdrs, timeout_h);

	struct call_ctx c = { .fn = fn, .arg = arg };
	kc_grpc_decoder_init(&c.dec, KC_GRPC_MAX_MESSAGE);
	kc_grpc_status_init(&c.st);

	CURL *h = g->curl;
	curl_easy_reset(h);
	/*
	 * One connection per call: libcurl 7.88 fails the second request on a
	 * reused HTTP/2 prior-knowledge connection ("Error in the HTTP2
	 * framing layer"), and a unix socket connection costs next to nothing.
	 */
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, g->socket_path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	if (src) {
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, src);
	} else {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, (const char *)body);
	}
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &c);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &c);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, g->errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
	g->errbuf[0] = '\0';
	if (getenv("KCHECKPOINT_GRPC_DEBUG"))
		curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);

	CURLcode rc = curl_easy_perform(h);
	curl_slist_free_all(hdrs);

	int ret = -1;
	if (src && src->err) {
		kc_error_propagate(err, src->err);
		src->err = NULL;
	} else if (c.cb_err) {
		kc_error_propagate(err, c.cb_err);
		c.cb_err = NULL;
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_DEADLINE_EXCEEDED,
			     "containerd did not answer '%s' within %u s", method,
			     (timeout_ms + 999) / 1000);
	} else if (rc == CURLE_COULDNT_CONNECT) {
		if (probe_socket(g->socket_path, err) == 0)
			kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_UNAVAILABLE,
				     "cannot connect to containerd at '%s': %s", g->socket_path,
				     g->errbuf[0] ? g->errbuf : curl_easy_strerror(rc));
	} else if (rc != CURLE_OK && !(c.st.have_grpc_status && c.st.grpc_status != 0)) {
		kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_UNAVAILABLE,
			     "no gRPC answer from containerd at '%s' for '%s': %s", g->socket_path,
			     method, g->errbuf[0] ? g->errbuf : curl_easy_strerror(rc));
	} else if (kc_grpc_status_check(&c.st, method, err) == 0 &&
		   kc_grpc_decoder_finish(&c.dec, err) == 0) {
		ret = 0;
	}
	kc_error_free(c.cb_err);
	kc_grpc_decoder_free(&c.dec);
	kc_grpc_status_free(&c.st);
	return ret;
}

int kc_grpc_call_raw(struct kc_grpc *g, const char *path, const void *req, size_t req_len,
		     unsigned timeout_ms, kc_grpc_msg_fn fn, void *arg, struct kc_error **err)
{
	size_t body_len;
	_cleanup_free_ uint8_t *body = kc_grpc_frame(req, req_len, &body_len);
	return perform(g, path, body, body_len, NULL, timeout_ms, fn, arg, err);
}

int kc_grpc_call_stream(struct kc_grpc *g, const char *path, kc_grpc_body_fn body, void *body_arg,
			uint64_t body_len, unsigned timeout_ms, kc_grpc_msg_fn fn, void *arg,
			struct kc_error **err)
{
	struct body_src src = {.fn = body, .arg = body_arg};
	int rc = perform(g, path, NULL, body_len, &src, timeout_ms, fn, arg, err);
	kc_error_free(src.err);
	return rc;
}

struct unary_ctx {
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *msg;
	size_t n;
	const char *method;
};

static int unary_msg(void *arg, const uint8_t *msg, size_t len, struct kc_error **err)
{
	struct unary_ctx *u = arg;
	if (++u->n > 1)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				    "containerd sent more than one reply to '%s'", u->method);
	if (!u->desc)
		return 0;
	u->msg = protobuf_c_message_unpack(u->desc, NULL, len, msg);
	if (!u->msg)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				    "cannot decode containerd's reply to '%s'", u->method);
	return 0;
}

int kc_grpc_unary(struct kc_grpc *g, const char *path, const ProtobufCMessage *req,
		  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
		  unsigned timeout_ms, struct kc_error **err)
{
	char method[128];
	kc_grpc_method_name(path, method, sizeof(method));
	size_t len = protobuf_c_message_get_packed_size(req);
	_cleanup_free_ uint8_t *buf = kc_xmalloc(len ? len : 1);
	protobuf_c_message_pack(req, buf);

	struct unary_ctx u = { .desc = resp ? resp_desc : NULL, .method = method };
	if (kc_grpc_call_raw(g, path, buf, len, timeout_ms, unary_msg, &u, err) < 0) {
		if (u.msg)
			protobuf_c_message_free_unpacked(u.msg, NULL);
		return -1;
	}
	if (resp) {
		if (!u.msg)
			return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
					    "containerd sent no reply message for '%s'", method);
		*resp = u.msg;
	}
	return 0;
}
