/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_GRPC_H
#define KC_GRPC_H

/*
 * A minimal gRPC client for containerd: unary and server-streaming calls
 * over HTTP/2 with prior knowledge on a unix socket (libcurl), messages
 * packed with protobuf-c.  The framing and status parts are pure functions
 * so the unit tests and the fuzzer can drive them with recorded bytes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "kc/error.h"

/* Largest message accepted from the server (grpc-go's default is 4 MiB;
 * container specs and pid lists stay far below). */
#define KC_GRPC_MAX_MESSAGE (16u << 20)

enum kc_grpc_code {
	KC_GRPC_OK = 0,
	KC_GRPC_CANCELLED = 1,
	KC_GRPC_UNKNOWN = 2,
	KC_GRPC_INVALID_ARGUMENT = 3,
	KC_GRPC_DEADLINE_EXCEEDED = 4,
	KC_GRPC_NOT_FOUND = 5,
	KC_GRPC_ALREADY_EXISTS = 6,
	KC_GRPC_PERMISSION_DENIED = 7,
	KC_GRPC_RESOURCE_EXHAUSTED = 8,
	KC_GRPC_FAILED_PRECONDITION = 9,
	KC_GRPC_ABORTED = 10,
	KC_GRPC_OUT_OF_RANGE = 11,
	KC_GRPC_UNIMPLEMENTED = 12,
	KC_GRPC_INTERNAL = 13,
	KC_GRPC_UNAVAILABLE = 14,
	KC_GRPC_DATA_LOSS = 15,
	KC_GRPC_UNAUTHENTICATED = 16,
};

/* "not found", "failed precondition"; "code 42" style for unknown codes
 * (buf is used only then). */
const char *kc_grpc_code_name(int code, char buf[16]);

/* ---- framing (length-prefixed messages) ---------------------------- */

/* 1 byte compressed flag (0), 4 bytes big-endian length, the message.
 * Caller frees. */
uint8_t *kc_grpc_frame(const void *msg, size_t len, size_t *out_len);

/* Called once per complete message; the bytes are valid only during the
 * call.  Returning -1 stops decoding. */
typedef int (*kc_grpc_msg_fn)(void *arg, const uint8_t *msg, size_t len, struct kc_error **err);

struct kc_grpc_decoder {
	uint8_t *buf;
	size_t len, cap;
	size_t max_message;
	size_t n_messages;
	bool failed; /* sticky: further feeds fail */
};

void kc_grpc_decoder_init(struct kc_grpc_decoder *d, size_t max_message);
void kc_grpc_decoder_free(struct kc_grpc_decoder *d);
/* Feeds any number of bytes (frames may be split anywhere); fn runs for
 * each completed message.  Errors (KC_EXIT_CONTAINERD): compressed
 * message (we never offer compression), message above max_message. */
int kc_grpc_decoder_feed(struct kc_grpc_decoder *d, const void *data, size_t len,
			 kc_grpc_msg_fn fn, void *arg, struct kc_error **err);
/* After the last byte: -1 if a frame was left incomplete. */
int kc_grpc_decoder_finish(const struct kc_grpc_decoder *d, struct kc_error **err);

/* ---- response headers and trailers --------------------------------- */

struct kc_grpc_status {
	int http_status;       /* 0 until the status line was seen */
	bool have_grpc_status;
	int grpc_status;
	char *grpc_message;    /* percent-decoded; NULL if absent */
	bool have_content_type;
	bool grpc_content_type; /* application/grpc or application/grpc+... */
};

void kc_grpc_status_init(struct kc_grpc_status *st);
void kc_grpc_status_free(struct kc_grpc_status *st);
/* One header or trailer line as libcurl's header callback gives it
 * ("HTTP/2 200\r\n", "grpc-status: 5\r\n", ...).  Trailers and
 * headers land in the same struct: a Trailers-Only error response carries
 * grpc-status among the headers. */
void kc_grpc_status_header(struct kc_grpc_status *st, const char *line, size_t len);
/* RFC 3986 style %XX decoding as grpc-message uses; invalid escapes are
 * kept literally.  Caller frees. */
char *kc_grpc_percent_decode(const char *s, size_t len);
/*
 * The outcome of a finished call: 0 when grpc-status is 0; otherwise -1
 * with "containerd refused '<method>': <grpc-message>" (cause = the gRPC
 * code; exit code NOT_FOUND -> KC_EXIT_NOENT, PERMISSION_DENIED and
 * UNAUTHENTICATED -> KC_EXIT_PERM, anything else KC_EXIT_CONTAINERD), or
 * a protocol error when the HTTP status, content type or grpc-status is
 * missing or wrong.
 */
int kc_grpc_status_check(const struct kc_grpc_status *st, const char *method,
			 struct kc_error **err);

/* ---- calls --------------------------------------------------------- */

struct kc_grpc;

/*
 * Checks the socket (missing: KC_EXIT_NOENT; no permission: KC_EXIT_PERM;
 * nobody listening: KC_EXIT_CONTAINERD) and sets up the client; each call
 * then opens its own HTTP/2 connection (see grpc.c).  ns goes into the
 * containerd-namespace header of every call.
 */
int kc_grpc_open(const char *socket_path, const char *ns, struct kc_grpc **out,
		 struct kc_error **err);
void kc_grpc_close(struct kc_grpc *g);

/* Per-call limit for calls made with timeout_ms = KC_GRPC_DEFAULT_TIMEOUT
 * ($KCHECKPOINT_CONTAINERD_TIMEOUT seconds, else 30 s). */
#define KC_GRPC_DEFAULT_TIMEOUT (~0u)
/* Adds a containerd-lease header to later calls (NULL: none). */
void kc_grpc_set_lease(struct kc_grpc *g, const char *lease);

/*
 * Raw call: sends one framed request to path ("/pkg.Service/Method") and
 * hands every response message to fn.  timeout_ms: 0 = no limit.
 * A call that gets no answer in time fails with KC_EXIT_CONTAINERD,
 * "containerd did not answer '<method>' within N s".
 */
int kc_grpc_call_raw(struct kc_grpc *g, const char *path, const void *req, size_t req_len,
		     unsigned timeout_ms, kc_grpc_msg_fn fn, void *arg, struct kc_error **err);

/*
 * Client-streaming call: body writes up to len bytes of the request body
 * (framed messages, see kc_grpc_frame) into buf and returns how many, -1
 * on error (with *err set; the call is aborted and fails with that
 * error).  body_len is the body's exact total size.
 */
typedef ssize_t (*kc_grpc_body_fn)(void *arg, uint8_t *buf, size_t len, struct kc_error **err);
int kc_grpc_call_stream(struct kc_grpc *g, const char *path, kc_grpc_body_fn body, void *body_arg,
			uint64_t body_len, unsigned timeout_ms, kc_grpc_msg_fn fn, void *arg,
			struct kc_error **err);

/* Unary call with protobuf-c messages; *resp is unpacked with resp_desc
 * (free with protobuf_c_message_free_unpacked).  resp may be NULL when the
 * reply (google.protobuf.Empty) is not needed. */
int kc_grpc_unary(struct kc_grpc *g, const char *path, const ProtobufCMessage *req,
		  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
		  unsigned timeout_ms, struct kc_error **err);

/* "Tasks.Checkpoint" from "/containerd.services.tasks.v1.Tasks/Checkpoint". */
void kc_grpc_method_name(const char *path, char *buf, size_t len);

#endif
