/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target (libFuzzer) for what kcheckpoint reads from containerd's
 * socket: the gRPC frame decoder, fed in pieces whose sizes come from the
 * input itself, every decoded message unpacked as the replies we parse,
 * and the header/trailer parser with the status check.
 *
 * Input layout: byte 0 picks the chunk size (1 + b % 64) for feeding,
 * byte 1 the decoder limit (b == 0: the default); the rest is split at the
 * first 0xff: before it the DATA bytes, after it header lines.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kc/error.h"
#include "kc/grpc.h"

#include "kc_containers.pb-c.h"
#include "kc_content.pb-c.h"
#include "kc_misc.pb-c.h"
#include "kc_snapshots.pb-c.h"
#include "kc_tasks.pb-c.h"

static const ProtobufCMessageDescriptor *const replies[] = {
	&kc__containers__get_container_response__descriptor,
	&kc__tasks__get_response__descriptor,
	&kc__tasks__list_pids_response__descriptor,
	&kc__tasks__start_response__descriptor,
	&kc__tasks__wait_response__descriptor,
	&kc__snapshots__prepare_snapshot_response__descriptor,
	&kc__snapshots__stat_snapshot_response__descriptor,
	&kc__misc__version_response__descriptor,
	&kc__misc__create_lease_response__descriptor,
	&kc__misc__list_namespaces_response__descriptor,
	&kc__content__diff_response__descriptor,
	&kc__content__apply_response__descriptor,
	&kc__content__read_content_response__descriptor,
	&kc__content__write_content_response__descriptor,
};

static int on_msg(void *arg, const uint8_t *msg, size_t len, struct kc_error **err)
{
	size_t *n = arg;
	(*n)++;
	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
		ProtobufCMessage *m = protobuf_c_message_unpack(replies[i], NULL, len, msg);
		if (m) {
			/* re-encoding walks every field the unpacker produced */
			size_t plen = protobuf_c_message_get_packed_size(m);
			uint8_t *buf = malloc(plen ? plen : 1);
			if (buf)
				protobuf_c_message_pack(m, buf);
			free(buf);
			protobuf_c_message_free_unpacked(m, NULL);
		}
	}
	/* a consumer may refuse a message; the decoder must then stop */
	if (len == 3 && msg[0] == 'E')
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "refused");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	size_t chunk = 1 + data[0] % 64;
	size_t limit = data[1] ? (size_t)data[1] * 4096 : 0;
	data += 2;
	size -= 2;
	const uint8_t *sep = memchr(data, 0xff, size);
	size_t dlen = sep ? (size_t)(sep - data) : size;
	const char *hdr = sep ? (const char *)sep + 1 : NULL;
	size_t hlen = sep ? size - dlen - 1 : 0;

	struct kc_grpc_decoder d;
	kc_grpc_decoder_init(&d, limit);
	struct kc_error *err = NULL;
	size_t n = 0;
	int rc = 0;
	for (size_t off = 0; off < dlen && rc == 0; off += chunk)
		rc = kc_grpc_decoder_feed(&d, data + off, dlen - off < chunk ? dlen - off : chunk, on_msg,
					  &n, &err);
	if (rc == 0)
		rc = kc_grpc_decoder_finish(&d, &err);
	if (rc < 0 && !err)
		abort(); /* a failure must come with its reason */
	kc_error_free(err);
	err = NULL;
	if (n != d.n_messages && rc == 0)
		abort();
	kc_grpc_decoder_free(&d);

	struct kc_grpc_status st;
	kc_grpc_status_init(&st);
	while (hlen > 0) {
		const char *nl = memchr(hdr, '\n', hlen);
		size_t l = nl ? (size_t)(nl - hdr) + 1 : hlen;
		kc_grpc_status_header(&st, hdr, l);
		hdr += l;
		hlen -= l;
	}
	rc = kc_grpc_status_check(&st, "Fuzz.Method", &err);
	if (rc == 0 && (!st.have_grpc_status || st.grpc_status != 0))
		abort(); /* only an explicit grpc-status 0 is success */
	if (rc < 0 && (!err || strchr(err->msg, '\n') || strchr(err->msg, '\r')))
		abort(); /* errors are one line */
	kc_error_free(err);
	kc_grpc_status_free(&st);
	return 0;
}
