/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "kc/util.h"
#include "workdir.h"

int kc_workdir_create(struct kc_workdir *wd, const char *parent, bool keep, struct kc_error **err)
{
	if (!parent)
		parent = getenv("TMPDIR");
	if (!parent || !*parent)
		parent = "/var/tmp";
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

void kc_workdir_finish(struct kc_workdir *wd, bool quiet)
{
	if (!wd->path)
		return;
	if (wd->keep) {
		if (!quiet)
			fprintf(stderr, "kept the images in '%s'\n", wd->path);
	} else {
		kc_rm_rf(wd->path, NULL);
	}
	free(wd->path);
	wd->path = NULL;
}
