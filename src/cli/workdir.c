/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kc/util.h"
#include "workdir.h"

const char *kc_workdir_parent(const char *given)
{
	if (given)
		return given;
	const char *env = getenv("TMPDIR");
	return env && *env ? env : "/var/tmp";
}

int kc_workdir_create(struct kc_workdir *wd, const char *parent, bool keep, struct kc_error **err)
{
	parent = kc_workdir_parent(parent);
	if (kc_mkdir_p(parent, 0700, err) < 0)
		return kc_error_prefix(err, "work dir");
	_cleanup_free_ char *tmpl = kc_xasprintf("%s/kcheckpoint-XXXXXX", parent);
	if (!mkdtemp(tmpl))
		return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE, errno,
				      "cannot create a work dir in '%s'", parent);
	wd->path = steal_ptr(tmpl);
	wd->keep = keep;
	return 0;
}

void kc_workdir_finish(struct kc_workdir *wd, bool quiet, const char *keep_log)
{
	if (!wd->path)
		return;
	if (wd->keep) {
		if (!quiet)
			fprintf(stderr, "kept the images in '%s'\n", wd->path);
	} else if (keep_log && kc_dir_clear(wd->path, (const char *const[]){keep_log, NULL})) {
		/* the error names the log: it must outlive the images */
		if (!quiet)
			fprintf(stderr, "kept CRIU's log in '%s'\n", wd->path);
	} else {
		kc_rm_rf(wd->path, NULL);
	}
	free(wd->path);
	wd->path = NULL;
}
