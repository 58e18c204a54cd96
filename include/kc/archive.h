/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ARCHIVE_H
#define KC_ARCHIVE_H

#include <stdbool.h>
#include <stdint.h>

#include "kc/error.h"
#include "kc/manifest.h"

/*
 * A checkpoint archive: tar (pax), kcheckpoint.json FIRST, then the CRIU
 * images; the manifest lists every member with size and sha256.
 */
struct kc_archive_opts {
	const char *compression; /* "zstd", "zstd:LEVEL", "none"; NULL = "zstd" */
	int threads;             /* 0 = all online CPUs */
};

struct kc_archive_stats {
	uint64_t bytes_in;  /* image bytes (uncompressed) */
	uint64_t bytes_out; /* archive bytes */
	double seconds;
};

/* Records members + compression in m, then writes out_path atomically
 * (temp name in the same dir, fsync, rename).  Nothing is left under
 * out_path or the temp name on failure. */
int kc_archive_write(const char *images_dir, struct kc_manifest *m, const char *out_path,
		     const struct kc_archive_opts *o, struct kc_archive_stats *st,
		     struct kc_error **err);

/* Safe extraction into dest_dir (created, must not exist or be empty);
 * checksums verified while extracting; m gets the manifest. */
int kc_archive_extract(const char *archive_path, const char *dest_dir, struct kc_manifest *m,
		       struct kc_archive_stats *st, struct kc_error **err);

/* Reads only the first member. */
int kc_archive_read_manifest(const char *archive_path, struct kc_manifest *m, struct kc_error **err);

/* Checks every member against the manifest without extracting. */
int kc_archive_verify(const char *archive_path, struct kc_manifest *m, struct kc_error **err);

/* True when path is a regular file (an archive), false for a directory. */
bool kc_archive_is_file(const char *path);

#endif
