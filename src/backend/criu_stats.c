/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reads CRIU's stats-dump and stats-restore images for the report.
 *
 * Layout (criu/image.c, criu/protobuf.c, criu/include/magic.h):
 *
 *   u32 IMG_SERVICE_MAGIC   0x55105940, absent in pre-1.1 images
 *   u32 STATS_MAGIC         0x57093306
 *   u32 size                little endian
 *   size bytes              StatsEntry (images/stats.proto)
 *
 * The protobuf is three flat messages of integers, so a varint reader is
 * all it takes; linking protobuf-c and carrying generated code for this is
 * not worth it.  Fields we do not know are skipped, so newer CRIUs that add
 * counters still parse.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kc/criu.h"
#include "kc/util.h"
#include "criu_pb.h"

#define IMG_SERVICE_MAGIC 0x55105940u
#define STATS_MAGIC 0x57093306u

static double us_to_s(uint64_t us)
{
	return (double)us / 1e6;
}

static int decode_dump(struct pb b, struct kc_criu_stats *st)
{
	struct pb_field f = {0};
	int r;
	while ((r = pb_next(&b, &f)) > 0) {
		if (f.wire != WIRE_VARINT)
			continue;
		switch (f.num) {
		case 1: st->freezing_s = us_to_s(f.value); break;
		case 2: st->frozen_s = us_to_s(f.value); break;
		case 3: st->memdump_s = us_to_s(f.value); break;
		case 4: st->memwrite_s = us_to_s(f.value); break;
		case 5: st->pages_scanned = f.value; break;
		case 6: st->pages_skipped_parent = f.value; break;
		case 7: st->pages_written = f.value; break;
		case 8: st->irmap_resolve_s_us = f.value; break;
		case 9: st->pages_lazy = f.value; break;
		default: break;
		}
	}
	if (r < 0)
		return -1;
	st->have_dump = true;
	return 0;
}

static int decode_restore(struct pb b, struct kc_criu_stats *st)
{
	struct pb_field f = {0};
	int r;
	while ((r = pb_next(&b, &f)) > 0) {
		if (f.wire != WIRE_VARINT)
			continue;
		switch (f.num) {
		case 1: st->pages_compared = f.value; break;
		case 2: st->pages_skipped_cow = f.value; break;
		case 3: st->forking_s = us_to_s(f.value); break;
		case 4: st->restore_s = us_to_s(f.value); break;
		case 5: st->pages_restored = f.value; break;
		default: break;
		}
	}
	if (r < 0)
		return -1;
	st->have_restore = true;
	return 0;
}


static int decode_image(const char *path, const unsigned char *buf, size_t len, struct kc_criu_stats *st,
			struct kc_error **err)
{
	size_t off = 0;
	if (len < 4)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", path);
	uint32_t magic = le32(buf);
	off = 4;
	if (magic == IMG_SERVICE_MAGIC) {
		if (len < 8)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", path);
		magic = le32(buf + 4);
		off = 8;
	}
	if (magic != STATS_MAGIC)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is not a CRIU stats image (magic 0x%08x)",
				    path, magic);
	if (len - off < 4)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", path);
	uint32_t size = le32(buf + off);
	off += 4;
	if (size > len - off)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated (entry of %u bytes, %zu left)",
				    path, size, len - off);
	/* CRIU writes exactly one entry; anything after it means we are not
	 * reading what we think we are. */
	if (size != len - off)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has %zu bytes of trailing data", path,
				    len - off - size);

	struct pb b = { buf + off, buf + off + size };
	struct pb_field f = {0};
	int r;
	while ((r = pb_next(&b, &f)) > 0) {
		if (f.wire != WIRE_LEN)
			continue;
		if (f.num == 1 && decode_dump(f.sub, st) < 0)
			r = -1;
		else if (f.num == 2 && decode_restore(f.sub, st) < 0)
			r = -1;
		if (r < 0)
			break;
	}
	if (r < 0)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' holds a malformed stats entry", path);
	return 0;
}

static int read_one(const char *dir, const char *name, struct kc_criu_stats *st, struct kc_error **err)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, name);
	_cleanup_free_ char *buf = NULL;
	_cleanup_error_ struct kc_error *rerr = NULL;
	size_t len;
	if (kc_read_file(path, &buf, &len, &rerr) < 0) {
		/* Stats are a nicety: containerd's CRIU may not leave them. */
		if (rerr->cause == ENOENT)
			return 0;
		kc_error_propagate(err, steal_ptr(rerr));
		return -1;
	}
	return decode_image(path, (const unsigned char *)buf, len, st, err);
}

int kc_criu_read_stats(const char *images_dir, struct kc_criu_stats *st, struct kc_error **err)
{
	memset(st, 0, sizeof(*st));
	if (read_one(images_dir, "stats-dump", st, err) < 0 ||
	    read_one(images_dir, "stats-restore", st, err) < 0)
		return -1;
	return 0;
}

/*
 * Link remaps (criu --link-remap): remap-fpath.img pairs a file id with the
 * id of its stand-in (RemapFilePathEntry: orig_id 1, remap_id 2,
 * remap_type 3, LINKED = 0 or absent); files.img holds the stand-in as a
 * FileEntry (type 1 = REG, id 2, reg 3: RegFileEntry name 6), the hard
 * link CRIU made in the dumped tree's root.  Both images are IMG_COMMON
 * magic, image magic, then (u32 size, entry) until the end.
 */
#define REMAP_FPATH_MAGIC 0x59133954u
#define FILES_MAGIC 0x56303138u

typedef int (*entry_fn)(struct pb entry, void *arg);

static int each_entry(const char *dir, const char *name, uint32_t want_magic, entry_fn fn, void *arg,
		      struct kc_error **err)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, name);
	_cleanup_free_ char *buf = NULL;
	_cleanup_error_ struct kc_error *rerr = NULL;
	size_t len;
	if (kc_read_file(path, &buf, &len, &rerr) < 0) {
		if (rerr->cause == ENOENT) /* CRIU writes it only when needed */
			return 0;
		kc_error_propagate(err, steal_ptr(rerr));
		return -1;
	}
	const unsigned char *p = (const unsigned char *)buf;
	if (len < 8 || le32(p) != IMG_COMMON_MAGIC || le32(p + 4) != want_magic)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is not the CRIU image it should be", path);
	for (size_t off = 8; off < len;) {
		if (len - off < 4)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", path);
		uint32_t size = le32(p + off);
		off += 4;
		if (size > len - off)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", path);
		if (fn((struct pb){p + off, p + off + size}, arg) < 0)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' holds a malformed entry", path);
		off += size;
	}
	return 0;
}

struct remaps {
	uint32_t *ids; /* remap_id of each LINKED remap */
	size_t n;
	char **paths;
	size_t n_paths;
};

static int remap_entry(struct pb b, void *arg)
{
	struct remaps *rm = arg;
	struct pb_field f = {0};
	uint64_t remap_id = 0, type = 0;
	bool have_id = false;
	int r;
	while ((r = pb_next(&b, &f)) > 0) {
		if (f.num == 2 && f.wire == WIRE_VARINT) {
			remap_id = f.value;
			have_id = true;
		} else if (f.num == 3 && f.wire == WIRE_VARINT) {
			type = f.value;
		}
	}
	if (r < 0 || !have_id)
		return -1;
	if (type == 0) {
		rm->ids = kc_xrealloc(rm->ids, (rm->n + 1) * sizeof(*rm->ids));
		rm->ids[rm->n++] = (uint32_t)remap_id;
	}
	return 0;
}

static int file_entry(struct pb b, void *arg)
{
	struct remaps *rm = arg;
	struct pb_field f = {0};
	uint64_t type = 0, id = 0;
	struct pb reg = {NULL, NULL};
	int r;
	while ((r = pb_next(&b, &f)) > 0) {
		if (f.num == 1 && f.wire == WIRE_VARINT)
			type = f.value;
		else if (f.num == 2 && f.wire == WIRE_VARINT)
			id = f.value;
		else if (f.num == 3 && f.wire == WIRE_LEN)
			reg = f.sub;
	}
	if (r < 0)
		return -1;
	if (type != 1 || !reg.p)
		return 0;
	bool wanted = false;
	for (size_t i = 0; i < rm->n && !wanted; i++)
		wanted = rm->ids[i] == id;
	if (!wanted)
		return 0;
	while ((r = pb_next(&reg, &f)) > 0) {
		if (f.num != 6 || f.wire != WIRE_LEN)
			continue;
		size_t len = (size_t)(f.sub.end - f.sub.p);
		if (len == 0 || f.sub.p[0] != '/' || memchr(f.sub.p, '\0', len))
			return -1;
		rm->paths = kc_xrealloc(rm->paths, (rm->n_paths + 2) * sizeof(char *));
		rm->paths[rm->n_paths] = kc_xmalloc(len + 1);
		memcpy(rm->paths[rm->n_paths], f.sub.p, len);
		rm->paths[rm->n_paths++][len] = '\0';
		rm->paths[rm->n_paths] = NULL;
	}
	return r < 0 ? -1 : 0;
}

int kc_criu_link_remaps(const char *images_dir, char ***paths, struct kc_error **err)
{
	struct remaps rm = {0};
	int rc = -1;
	if (each_entry(images_dir, "remap-fpath.img", REMAP_FPATH_MAGIC, remap_entry, &rm, err) < 0)
		goto out;
	if (rm.n && each_entry(images_dir, "files.img", FILES_MAGIC, file_entry, &rm, err) < 0)
		goto out;
	*paths = rm.paths ? steal_ptr(rm.paths) : kc_xcalloc(1, sizeof(char *));
	rc = 0;
out:
	free(rm.ids);
	kc_strv_free(rm.paths);
	return rc;
}
