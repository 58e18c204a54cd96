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

struct kc_archive_opts {
	const char *compression; /* "zstd", "zstd:LEVEL", "none"; NULL = "zstd" */
	int threads;             /* 0 = every CPU this process may run on */
};

struct kc_archive_stats {
	uint64_t bytes_in;  /* image bytes (uncompressed), manifest included */
	uint64_t bytes_out; /* archive bytes */
	double seconds;
	/* Image bytes handled so far, for a progress thread: written while
	 * the call runs with relaxed atomic stores; read with
	 * __atomic_load_n(&st->done, __ATOMIC_RELAXED). */
	uint64_t done;
};

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

/* Reads only the first member. */
int kc_archive_read_manifest(const char *archive_path, struct kc_manifest *m, struct kc_error **err);

/* Checks every member against the manifest without extracting; a checksum
 * mismatch does not stop it, and the error names every bad member. */
int kc_archive_verify(const char *archive_path, struct kc_manifest *m, struct kc_error **err);

/* True when path is a regular file (an archive), false for a directory. */
bool kc_archive_is_file(const char *path);

#endif
