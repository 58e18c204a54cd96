/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ARCHIVE_H
#define KC_ARCHIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "kc/error.h"
#include "kc/manifest.h"

/*
 * A checkpoint archive: tar (pax), kcheckpoint.json FIRST, then the CRIU
 * images; the manifest lists every member with size and checksum.  The
 * checksum (manifest field "sha256") is a SHA-256 tree hash over 1 MiB
 * leaves, equal to the plain SHA-256 for members of at most 1 MiB; see
 * docs/ARCHIVE.md.  zstd archives are ordinary .tar.zst files
 * (tar -I zstd -xf works); the manifest sits in a frame of its own.
 */

/* Default zstd level: the fastest that kept the ratio (docs/ARCHIVE.md). */
#define KC_ARCHIVE_DEFAULT_LEVEL 1

/*
 * A member whose bytes come from a reader instead of a file of the images
 * dir: the dump's large memory runs, read from the stopped tree while the
 * archive is written, so they never go to the disk uncompressed.  read
 * is called from several threads at once; -1 with errno set on failure.
 */
struct kc_archive_stream {
	const char *path;
	uint64_t size;
	int (*read)(void *arg, void *buf, size_t len, uint64_t off);
	void *arg;
};

struct kc_archive_opts {
	const char *compression; /* "zstd", "zstd:LEVEL", "none"; NULL = "zstd" */
	int threads;             /* 0 = every CPU this process may run on */
	const struct kc_archive_stream *streams; /* archived after the files */
	size_t n_streams;
};

/*
 * The members of the large memory runs (kcheckpoint-bulk-*.img at the
 * top): archived after every other member, so a restore can run CRIU from
 * the others and fill memory straight from the rest of the archive.
 */
bool kc_archive_is_bulk_member(const char *path);

struct kc_archive_stats {
	uint64_t bytes_in;  /* image bytes (uncompressed), manifest included */
	uint64_t bytes_out; /* archive bytes */
	double seconds;
	double sync_seconds; /* of seconds: the archive's fsync (writing) */
	/* Image bytes handled so far, for a progress thread: written while
	 * the call runs with relaxed atomic stores; read with
	 * __atomic_load_n(&st->done, __ATOMIC_RELAXED). */
	uint64_t done;
};

/* st->done as a kc_progress bytes function takes it (arg: the stats). */
uint64_t kc_archive_stats_done(void *st);

/* The bytes an extraction writes to disk: every member but the memory
 * members, which go into the processes when they come last. */
uint64_t kc_archive_unpacked_bytes(const struct kc_manifest *m);

/* "zstd" / "zstd:1".."zstd:19" -> level, "none" -> 0; NULL means "zstd".
 * KC_EXIT_USAGE otherwise. */
int kc_archive_parse_compression(const char *spec, int *level, struct kc_error **err);

/* Records members (path, size, checksum) and compression in m, then writes
 * out_path atomically (unnamed temporary file in the same dir, fsync,
 * rename; an existing out_path is replaced only on success).  On failure
 * or interruption (kc_signals_pending) nothing is left under out_path or
 * any temporary name.  The dir's own kcheckpoint.json is not archived:
 * m is.  Only regular files and dirs may be in images_dir. */
int kc_archive_write(const char *images_dir, struct kc_manifest *m, const char *out_path,
		     const struct kc_archive_opts *o, struct kc_archive_stats *st,
		     struct kc_error **err);

/* Safe extraction into dest_dir (created 0700, or an existing empty dir);
 * checksums verified while extracting; m gets the manifest and
 * dest_dir/kcheckpoint.json holds it.  On any failure dest_dir is as it
 * was (removed if this call created it).  st may be NULL. */
int kc_archive_extract(const char *archive_path, const char *dest_dir, struct kc_manifest *m,
		       struct kc_archive_stats *st, struct kc_error **err);

/*
 * Extraction in two steps, for a restore that fills memory straight from
 * the archive.  _begin extracts every member up to the first bulk member
 * (kc_archive_is_bulk_member) and stops there; _rest hands the bulk
 * members' bytes to sink (from several threads at once; -1 with errno set
 * fails the extraction) instead of writing them, verifies them like any
 * member and checks the archive to its end.  An archive whose bulk
 * members are not all at its end is refused by _rest.  _end frees r;
 * dest_dir is left to the caller.
 */
struct kc_archive_reader;
typedef int (*kc_archive_sink)(void *arg, const char *member, uint64_t off, const void *data, size_t len);
int kc_archive_extract_begin(const char *archive_path, const char *dest_dir, struct kc_manifest *m,
			     struct kc_archive_stats *st, struct kc_archive_reader **r, struct kc_error **err);
int kc_archive_extract_rest(struct kc_archive_reader *r, kc_archive_sink sink, void *arg, struct kc_error **err);
void kc_archive_extract_end(struct kc_archive_reader *r);
/* Whether _begin stopped at a bulk member (_rest has work to do). */
bool kc_archive_extract_pending(const struct kc_archive_reader *r);
/* Whether the manifest's member order lets the bulk members be streamed
 * (all of them after every other member; archives from before 0.2 sort
 * them by name). */
bool kc_archive_bulk_last(const struct kc_manifest *m);

/* Reads only the first member. */
int kc_archive_read_manifest(const char *archive_path, struct kc_manifest *m, struct kc_error **err);

/* Checks every member against the manifest without extracting; a checksum
 * mismatch does not stop it, and the error names every bad member. */
int kc_archive_verify(const char *archive_path, struct kc_manifest *m, struct kc_error **err);
/* The same, with st->done moving as it goes (for a progress line). */
int kc_archive_verify_stats(const char *archive_path, struct kc_manifest *m, struct kc_archive_stats *st,
			    struct kc_error **err);

/* A plain images dir's checksums (dump -D records them as members, like
 * an archive's): m's members in dir, but those skip() takes; KC_EXIT_IMAGE
 * naming every bad or missing one.  threads 0: one. */
int kc_images_verify(const char *dir, const struct kc_manifest *m, unsigned threads, bool (*skip)(const char *path),
		     struct kc_error **err);

/* True when path is a regular file (an archive), false for a directory. */
bool kc_archive_is_file(const char *path);

#endif
