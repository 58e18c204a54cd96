/* SPDX-License-Identifier: Apache-2.0 */
/*
 * --with-rw-layer: the container's writable layer as a tar, made and
 * applied by containerd's own differ so overlay whiteouts and opaque dirs
 * come out as the OCI layer format says, whatever the snapshotter.
 *
 * Dump: a read-only view of the image layers (the snapshot's parent) and
 * the container's snapshot go to Diff.Diff, which writes the difference
 * into the content store; Content.Read streams it into the images dir.
 * Restore: Content.Write streams it back, Diff.Apply unpacks it onto the
 * freshly prepared snapshot.  Content made here is deleted afterwards; the
 * caller's lease covers the moments in between.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "containerd_int.h"
#include "kc/grpc.h"
#include "kc/util.h"

#include "kc_content.pb-c.h"
#include "kc_snapshots.pb-c.h"

#define SVC_SNAPSHOTS "/containerd.services.snapshots.v1.Snapshots/"
#define SVC_DIFF "/containerd.services.diff.v1.Diff/"
#define SVC_CONTENT "/containerd.services.content.v1.Content/"

#define LAYER_TAR "application/vnd.oci.image.layer.v1.tar"
#define CHUNK (1u << 20)

#define free_msg(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

void kc_ctrd_rw_clear(struct kc_ctrd_rw *rw)
{
	free(rw->file);
	free(rw->media_type);
	free(rw->digest);
	memset(rw, 0, sizeof(*rw));
}

static void content_delete(struct kc_grpc *g, const char *digest)
{
	Kc__Content__DeleteContentRequest r = KC__CONTENT__DELETE_CONTENT_REQUEST__INIT;
	r.digest = (char *)digest;
	struct kc_error *e = NULL;
	kc_grpc_unary(g, SVC_CONTENT "Delete", &r.base, NULL, NULL, KC_GRPC_DEFAULT_TIMEOUT, &e);
	kc_error_free(e); /* the lease's end collects it anyway */
}

/* ---- dump ----------------------------------------------------------- */

struct reader {
	int fd;
	int64_t next; /* offset the next message must start at */
	const char *path;
};

static int on_content(void *arg, const uint8_t *msg, size_t len, struct kc_error **err)
{
	struct reader *r = arg;
	Kc__Content__ReadContentResponse *m = kc__content__read_content_response__unpack(NULL, len, msg);
	if (!m)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0, "cannot decode containerd's content");
	int rc = 0;
	if (m->offset != r->next) {
		rc = kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				  "containerd sent content at offset %lld, expected %lld",
				  (long long)m->offset, (long long)r->next);
	} else {
		size_t done = 0;
		while (done < m->data.len) {
			ssize_t w = write(r->fd, m->data.data + done, m->data.len - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				rc = kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot write '%s'", r->path);
				break;
			}
			done += (size_t)w;
		}
		r->next += (int64_t)m->data.len;
	}
	free_msg(m);
	return rc;
}

static int mounts_of(struct kc_grpc *g, const char *method, const ProtobufCMessage *req,
		     Kc__Snapshots__MountsResponse **out, struct kc_error **err)
{
	/* View/Mounts responses share the layout: repeated Mount mounts = 1 */
	return kc_grpc_unary(g, method, req, &kc__snapshots__mounts_response__descriptor,
			     (ProtobufCMessage **)out, KC_GRPC_DEFAULT_TIMEOUT, err);
}

int kc_ctrd_rw_save(struct kc_grpc *g, const char *snapshotter, const char *key, const char *parent,
		    const char *tag, const char *dir, struct kc_ctrd_rw *out, struct kc_error **err)
{
	_cleanup_free_ char *view_key = kc_xasprintf("kcheckpoint-view-%s", tag);
	_cleanup_free_ char *ref = kc_xasprintf("kcheckpoint-diff-%s", tag);
	Kc__Snapshots__MountsResponse *lower = NULL, *upper = NULL;
	Kc__Content__DiffResponse *diff = NULL;
	bool viewed = false;
	int rc = -1;
	/* before the first goto: out: frees and closes them */
	_cleanup_free_ char *path = NULL;
	_cleanup_free_ uint8_t *rbuf = NULL;
	_cleanup_close_ int fd = -1;

	Kc__Snapshots__ViewSnapshotRequest vr = KC__SNAPSHOTS__VIEW_SNAPSHOT_REQUEST__INIT;
	vr.snapshotter = (char *)snapshotter;
	vr.key = view_key;
	vr.parent = (char *)(parent ? parent : "");
	if (mounts_of(g, SVC_SNAPSHOTS "View", &vr.base, &lower, err) < 0) {
		kc_error_prefix(err, "cannot view the image layers");
		goto out;
	}
	viewed = true;
	Kc__Snapshots__MountsRequest mr = KC__SNAPSHOTS__MOUNTS_REQUEST__INIT;
	mr.snapshotter = (char *)snapshotter;
	mr.key = (char *)key;
	if (mounts_of(g, SVC_SNAPSHOTS "Mounts", &mr.base, &upper, err) < 0) {
		kc_error_prefix(err, "cannot get the mounts of snapshot '%s'", key);
		goto out;
	}

	Kc__Content__DiffRequest dr = KC__CONTENT__DIFF_REQUEST__INIT;
	dr.left = lower->mounts;
	dr.n_left = lower->n_mounts;
	dr.right = upper->mounts;
	dr.n_right = upper->n_mounts;
	dr.media_type = LAYER_TAR;
	dr.ref = ref;
	if (kc_grpc_unary(g, SVC_DIFF "Diff", &dr.base, &kc__content__diff_response__descriptor,
			  (ProtobufCMessage **)&diff, 0, err) < 0) {
		kc_error_prefix(err, "cannot make the rw layer");
		goto out;
	}
	if (!diff->diff || !diff->diff->digest || !*diff->diff->digest || diff->diff->size < 0) {
		kc_error_set(err, KC_EXIT_CONTAINERD, 0, "containerd's differ returned no layer");
		goto out;
	}

	out->file = kc_xstrdup(KC_CTRD_RW_FILE);
	out->media_type = kc_xstrdup(diff->diff->media_type && *diff->diff->media_type
					     ? diff->diff->media_type
					     : LAYER_TAR);
	out->digest = kc_xstrdup(diff->diff->digest);
	out->size = diff->diff->size;

	path = kc_xasprintf("%s/%s", dir, KC_CTRD_RW_FILE);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create '%s'", path);
		goto out;
	}
	struct reader rd = {.fd = fd, .path = path};
	Kc__Content__ReadContentRequest rr = KC__CONTENT__READ_CONTENT_REQUEST__INIT;
	rr.digest = out->digest;
	size_t rlen = protobuf_c_message_get_packed_size(&rr.base);
	rbuf = kc_xmalloc(rlen + 1);
	protobuf_c_message_pack(&rr.base, rbuf);
	if (kc_grpc_call_raw(g, SVC_CONTENT "Read", rbuf, rlen, 0, on_content, &rd, err) < 0) {
		kc_error_prefix(err, "cannot read the rw layer from containerd");
		goto out;
	}
	if (rd.next != out->size) {
		kc_error_set(err, KC_EXIT_CONTAINERD, 0, "rw layer: got %lld bytes of %lld",
			     (long long)rd.next, (long long)out->size);
		goto out;
	}
	if (fsync(fd) < 0) {
		kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot write '%s'", path);
		goto out;
	}
	rc = 0;
out:
	if (diff && diff->diff && diff->diff->digest && *diff->diff->digest)
		content_delete(g, diff->diff->digest);
	if (viewed) {
		Kc__Snapshots__RemoveSnapshotRequest r = KC__SNAPSHOTS__REMOVE_SNAPSHOT_REQUEST__INIT;
		r.snapshotter = (char *)snapshotter;
		r.key = view_key;
		struct kc_error *e = NULL;
		kc_grpc_unary(g, SVC_SNAPSHOTS "Remove", &r.base, NULL, NULL, KC_GRPC_DEFAULT_TIMEOUT, &e);
		kc_error_free(e);
	}
	if (rc < 0)
		kc_ctrd_rw_clear(out);
	if (lower)
		free_msg(lower);
	if (upper)
		free_msg(upper);
	if (diff)
		free_msg(diff);
	return rc;
}

/* ---- restore -------------------------------------------------------- */

struct writer {
	int fd;
	const char *path;
	const struct kc_ctrd_rw *rw;
	const char *ref;
	int64_t offset;   /* file offset of the next chunk */
	uint8_t *frame;   /* the framed message being sent */
	size_t frame_len, frame_pos;
	bool done;
	uint8_t *chunk;
};

/* One message: the chunk at offset, COMMIT with the last one. */
static size_t message_size(const struct writer *w, int64_t offset, size_t n,
			   Kc__Content__WriteContentRequest *m)
{
	kc__content__write_content_request__init(m);
	bool last = offset + (int64_t)n >= w->rw->size;
	m->action = last ? KC__CONTENT__WRITE_ACTION__COMMIT : KC__CONTENT__WRITE_ACTION__WRITE;
	m->ref = (char *)w->ref;
	m->total = w->rw->size;
	m->expected = w->rw->digest;
	m->offset = offset;
	m->data.data = w->chunk;
	m->data.len = n;
	return protobuf_c_message_get_packed_size(&m->base);
}

static size_t chunk_at(const struct writer *w, int64_t offset)
{
	int64_t left = w->rw->size - offset;
	return left > (int64_t)CHUNK ? CHUNK : (size_t)(left > 0 ? left : 0);
}

static uint64_t body_size(struct writer *w)
{
	uint64_t total = 0;
	int64_t off = 0;
	do {
		size_t n = chunk_at(w, off);
		Kc__Content__WriteContentRequest m;
		total += 5 + message_size(w, off, n, &m);
		off += (int64_t)n;
	} while (off < w->rw->size);
	return total;
}

static int next_frame(struct writer *w, struct kc_error **err)
{
	size_t n = chunk_at(w, w->offset);
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(w->fd, w->chunk + got, n - got, w->offset + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot read '%s'", w->path);
		if (r == 0)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is shorter than recorded", w->path);
		got += (size_t)r;
	}
	Kc__Content__WriteContentRequest m;
	size_t len = message_size(w, w->offset, n, &m);
	free(w->frame);
	w->frame = kc_xmalloc(len + 5);
	w->frame[0] = 0;
	w->frame[1] = (uint8_t)(len >> 24);
	w->frame[2] = (uint8_t)(len >> 16);
	w->frame[3] = (uint8_t)(len >> 8);
	w->frame[4] = (uint8_t)len;
	protobuf_c_message_pack(&m.base, w->frame + 5);
	w->frame_len = len + 5;
	w->frame_pos = 0;
	w->offset += (int64_t)n;
	if (w->offset >= w->rw->size)
		w->done = true;
	return 0;
}

static ssize_t write_body(void *arg, uint8_t *buf, size_t len, struct kc_error **err)
{
	struct writer *w = arg;
	size_t out = 0;
	while (out < len) {
		if (w->frame_pos == w->frame_len) {
			if (w->done && w->frame)
				break;
			if (next_frame(w, err) < 0)
				return -1;
		}
		size_t n = w->frame_len - w->frame_pos;
		if (n > len - out)
			n = len - out;
		memcpy(buf + out, w->frame + w->frame_pos, n);
		w->frame_pos += n;
		out += n;
	}
	return (ssize_t)out;
}

struct write_result {
	bool committed;
	char *digest;
};

static int on_written(void *arg, const uint8_t *msg, size_t len, struct kc_error **err)
{
	struct write_result *r = arg;
	Kc__Content__WriteContentResponse *m = kc__content__write_content_response__unpack(NULL, len, msg);
	if (!m)
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0, "cannot decode containerd's write status");
	if (m->action == KC__CONTENT__WRITE_ACTION__COMMIT) {
		r->committed = true;
		free(r->digest);
		r->digest = kc_xstrdup(m->digest ? m->digest : "");
	}
	free_msg(m);
	return 0;
}

int kc_ctrd_rw_apply(struct kc_grpc *g, const char *dir, const struct kc_ctrd_rw *rw, const char *tag,
		     Kc__Types__Mount **mounts, size_t n_mounts, struct kc_error **err)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, rw->file);
	_cleanup_free_ char *ref = kc_xasprintf("kcheckpoint-rw-%s", tag);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open the rw layer '%s'", path);
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size != rw->size)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "rw layer '%s' has %lld bytes, recorded %lld",
				    path, (long long)st.st_size, (long long)rw->size);

	struct writer w = {.fd = fd, .path = path, .rw = rw, .ref = ref, .chunk = kc_xmalloc(CHUNK)};
	struct write_result res = {0};
	struct kc_error *e = NULL;
	int wr = kc_grpc_call_stream(g, SVC_CONTENT "Write", write_body, &w, body_size(&w), 0,
				     on_written, &res, &e);
	free(w.frame);
	free(w.chunk);
	if (wr < 0 && !(e && e->cause == KC_GRPC_ALREADY_EXISTS)) {
		free(res.digest);
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot hand the rw layer to containerd");
	}
	kc_error_free(e);
	if (wr == 0 && (!res.committed || strcmp(res.digest, rw->digest) != 0)) {
		kc_error_set(err, KC_EXIT_CONTAINERD, 0, "containerd stored the rw layer as '%s', not '%s'",
			     res.digest ? res.digest : "(nothing)", rw->digest);
		free(res.digest);
		content_delete(g, rw->digest);
		return -1;
	}
	free(res.digest);

	Kc__Types__Descriptor d = KC__TYPES__DESCRIPTOR__INIT;
	d.media_type = rw->media_type;
	d.digest = rw->digest;
	d.size = rw->size;
	Kc__Content__ApplyRequest ar = KC__CONTENT__APPLY_REQUEST__INIT;
	ar.diff = &d;
	ar.mounts = mounts;
	ar.n_mounts = n_mounts;
	Kc__Content__ApplyResponse *resp = NULL;
	int rc = kc_grpc_unary(g, SVC_DIFF "Apply", &ar.base, &kc__content__apply_response__descriptor,
			       (ProtobufCMessage **)&resp, 0, err);
	if (rc < 0)
		kc_error_prefix(err, "cannot apply the rw layer");
	else
		free_msg(resp);
	content_delete(g, rw->digest);
	return rc;
}
