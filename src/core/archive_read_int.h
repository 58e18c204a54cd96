/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ARCHIVE_READ_INT_H
#define KC_ARCHIVE_READ_INT_H

/* What archive_read.c (members, checks, the two-step extraction) and
 * archive_feed.c (the thread that reads the archive and hands whole zstd
 * frames to the pool) share. */

#include <archive.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <zstd.h>

#include "archive_internal.h"
#include "kc/archive.h"
#include "kc/manifest.h"

#define OUT_CAP KC_ARCHIVE_JOB_CAP
#define IN_CAP ZSTD_COMPRESSBOUND(KC_ARCHIVE_JOB_CAP)
#define IBUF ((size_t)1 << 20)
/* frames in flight: enough to keep 16 threads decoding */
#define ITEMS 32
#define MANIFEST_MAX ((uint64_t)8 << 20)
/* Our writer's levels need at most 2^23; refusing more bounds our memory
 * whatever an archive asks for. */
#define WINDOW_LOG_MAX 24

enum rmode { R_MANIFEST, R_VERIFY, R_EXTRACT };
enum derr_kind { D_OK, D_TRUNCATED, D_CORRUPT, D_IO };

struct rleaf {
	struct kc_ar_job job; /* first: the pool hands us this pointer */
	uint8_t *data;
	size_t len;
	uint64_t off;
	size_t member;
	bool last;
	int fd;
	bool write;
	bool sink; /* to the sink instead of a file */
	struct rctx *ctx;
	int werr;
	uint8_t digest[32];
};

struct rmember {
	bool seen, bad;
	int fd;
	struct kc_treehash th;
};

struct ritem {
	struct kc_ar_job job; /* first: the pool hands us this pointer */
	struct rctx *c;
	uint8_t *in, *out;
	size_t in_len, out_len;
	bool pending; /* out comes from a pool job */
	size_t zerr;
	/* in comes from the file at this offset, read by the job itself */
	bool from_file;
	uint64_t file_off;
	int ioerr; /* errno, or -1: the file ended inside the frame */
};

struct rctx {
	const char *path;
	int fd;
	enum rmode mode;

	/* decompressor thread -> libarchive */
	pthread_t dthread;
	bool dthread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ritem items[ITEMS];
	uint64_t dprod, dcons;
	ZSTD_DCtx **dctx_free;
	size_t n_dctx_free;
	bool handed, deof, dstop;
	enum derr_kind dkind;
	char *ddetail;
	uint64_t archive_bytes;
	bool zstd;
	bool seekable; /* a regular file: frames are read by the workers */
	uint64_t tar_bytes;  /* handed to libarchive */
	size_t zero_tail;    /* zero bytes at its end, up to 1024 */

	/* leaves */
	struct kc_ar_pool pool;
	struct rleaf *leaves;
	size_t n_leaves;
	uint64_t lsub, lreap;

	struct kc_manifest *m;
	size_t *order; /* member indices sorted by path */
	struct rmember *rm;
	char **dirs_seen;
	size_t n_dirs_seen;
	size_t n_bad;
	int destfd;
	const char *dest;
	const char *cur; /* member being read, for messages */

	la_int64_t data_end; /* tar bytes consumed after the last member's data */

	/* two-step extraction (kc_archive_extract_begin/_rest) */
	bool stop_at_bulk;
	ssize_t pending; /* the bulk member whose header was read, or -1 */
	kc_archive_sink sink;
	void *sink_arg;
};

/* Names from an archive go into messages: no terminal control bytes. */
/* archive_feed.c */
void *kc_ar_feeder_main(void *arg);
la_ssize_t kc_ar_la_read(struct archive *a, void *ud, const void **buf);
void kc_ar_stop_decompressor(struct rctx *c);

#endif
