/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_WORKDIR_H
#define KC_WORKDIR_H

#include <stdbool.h>

#include "kc/error.h"

/* A private directory for the CRIU images of an archive, removed at the
 * end unless kept. */
struct kc_workdir {
	char *path;
	bool keep;
	int lock_fd; /* flock on <path>.lock while this command lives */
};

/* parent: --work-dir, else $TMPDIR, else /var/tmp (disk, not tmpfs: images
 * are as large as the process' memory). */
/* The dir a work dir is made in: given, else $TMPDIR, else /var/tmp. */
const char *kc_workdir_parent(const char *given);
/* Also removes the work dirs in parent that a killed kcheckpoint left (a
 * <dir>.lock nobody holds), saying so unless quiet. */
int kc_workdir_create(struct kc_workdir *wd, const char *parent, bool keep, bool quiet, struct kc_error **err);
/* keep_log: after a failure, the CRIU log of this command (the error names
 * it): if it is there, it alone is kept; NULL: all goes. */
void kc_workdir_finish(struct kc_workdir *wd, bool quiet, const char *keep_log);

#endif
