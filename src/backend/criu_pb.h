/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CRIU_PB_H
#define KC_CRIU_PB_H

/*
 * Just enough protobuf to walk CRIU's images: the fields we read are
 * integers, strings and nested messages, so a varint reader is all it
 * takes; carrying CRIU's .proto files and protobuf-c's generated code for
 * that is not worth it.  Unknown fields are skipped, so newer CRIUs that
 * add fields still parse.  (criu_stats.c, criu_bulk.c)
 */
#include <stddef.h>
#include <stdint.h>

#define IMG_COMMON_MAGIC 0x54564319u

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

struct pb {
	const unsigned char *p, *end;
};

struct pb_field {
	uint32_t num;
	int wire;
	uint64_t value;  /* WIRE_VARINT, WIRE_I64, WIRE_I32 */
	struct pb sub;   /* WIRE_LEN */
};

static inline int pb_varint(struct pb *b, uint64_t *out)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p == b->end)
			return -1;
		unsigned char c = *b->p++;
		v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return -1;
}

static inline int pb_fixed(struct pb *b, size_t n, uint64_t *out)
{
	if ((size_t)(b->end - b->p) < n)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)b->p[i] << (8 * i);
	b->p += n;
	*out = v;
	return 0;
}

/* 1: got a field, 0: end of message, -1: malformed. */
static inline int pb_next(struct pb *b, struct pb_field *f)
{
	if (b->p == b->end)
		return 0;
	uint64_t key;
	if (pb_varint(b, &key) < 0 || (key >> 3) == 0 || (key >> 3) > UINT32_MAX)
		return -1;
	f->num = (uint32_t)(key >> 3);
	f->wire = (int)(key & 7);
	switch (f->wire) {
	case WIRE_VARINT:
		return pb_varint(b, &f->value) < 0 ? -1 : 1;
	case WIRE_I64:
		return pb_fixed(b, 8, &f->value) < 0 ? -1 : 1;
	case WIRE_I32:
		return pb_fixed(b, 4, &f->value) < 0 ? -1 : 1;
	case WIRE_LEN: {
		uint64_t len;
		if (pb_varint(b, &len) < 0 || len > (uint64_t)(b->end - b->p))
			return -1;
		f->sub.p = b->p;
		f->sub.end = b->p + len;
		b->p += len;
		return 1;
	}
	default: /* groups (3, 4) are not in any CRIU image */
		return -1;
	}
}

static inline uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Appends a varint; returns its length (at most 10). */
static inline size_t pb_put_varint(unsigned char *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	return n;
}

#endif
