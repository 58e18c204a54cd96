/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kc/util.h"
#include "kc/workdir.h"

const char *kc_workdir_parent(const char *given)
{
	if (given)
		return given;
	const char *env = getenv("TMPDIR");
	return env && *env ? env : "/var/tmp";
}

/*
 * A work dir holds gigabytes; a kcheckpoint killed by SIGKILL cannot remove
 * its own.  Each live one holds a flock on <dir>.lock beside it, so the
 * next kcheckpoint that makes a work dir in the same parent can tell a
 * dead one's (the lock file is there, nobody holds it) and remove it.
 * Kept dirs (--keep-images, a CRIU log) lose their lock file and stay.
 */
static void sweep(const char *parent, bool quiet)
{
	_cleanup_closedir_ DIR *d = opendir(parent);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		/* exactly what kc_workdir_create makes: kcheckpoint-XXXXXX.lock
		 * beside a dir kcheckpoint-XXXXXX, both ours */
		const char *nm = de->d_name;
		if (strlen(nm) != 23 || strncmp(nm, "kcheckpoint-", 12) || strcmp(nm + 18, ".lock"))
			continue;
		bool ok = true;
		for (int i = 12; i < 18 && ok; i++)
			ok = isalnum((unsigned char)nm[i]);
		if (!ok)
			continue;
		_cleanup_free_ char *lock = kc_xasprintf("%s/%s", parent, nm);
		_cleanup_free_ char *dir = kc_xstrdup(lock);
		dir[strlen(dir) - 5] = '\0';
		struct stat ls, ds;
		if (lstat(lock, &ls) < 0 || !S_ISREG(ls.st_mode) || ls.st_uid != geteuid() || lstat(dir, &ds) < 0 ||
		    !S_ISDIR(ds.st_mode) || ds.st_uid != geteuid())
			continue;
		struct statx sx; /* a mount point is nobody's leftover */
		if (statx(AT_FDCWD, dir, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) == 0 &&
		    (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
			continue;
		_cleanup_close_ int fd = open(lock, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
			continue; /* a live kcheckpoint's */
		uint64_t bytes = kc_dir_size(dir);
		_cleanup_error_ struct kc_error *e = NULL;
		if (kc_rm_rf(dir, &e) < 0) {
			if (!quiet)
				fprintf(stderr, "kcheckpoint: cannot remove '%s', left by a kcheckpoint that was killed: %s\n",
					dir, e->msg);
		} else {
			unlink(lock);
			if (!quiet) {
				char b[32];
				kc_format_bytes(bytes, b, sizeof(b));
				fprintf(stderr, "kcheckpoint: removed '%s' (%s), left by a kcheckpoint that was killed\n", dir, b);
			}
		}
	}
}

int kc_workdir_create(struct kc_workdir *wd, const char *parent, bool keep, bool quiet, struct kc_error **err)
{
	wd->lock_fd = -1;
	parent = kc_workdir_parent(parent);
	if (kc_mkdir_p(parent, 0700, err) < 0)
		return kc_error_prefix(err, "work dir");
	sweep(parent, quiet);
	/* locked before it has the name a sweep looks for */
	_cleanup_free_ char *ltmp = kc_xasprintf("%s/.kcheckpoint-lock-XXXXXX", parent);
	int lfd = mkostemp(ltmp, O_CLOEXEC);
	if (lfd < 0)
		return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE, errno,
				      "cannot create a work dir in '%s'", parent);
	flock(lfd, LOCK_EX);
	_cleanup_free_ char *tmpl = kc_xasprintf("%s/kcheckpoint-XXXXXX", parent);
	if (!mkdtemp(tmpl)) {
		int e = errno;
		unlink(ltmp);
		close(lfd);
		return kc_error_errno(err, e == EACCES || e == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE, e,
				      "cannot create a work dir in '%s'", parent);
	}
	_cleanup_free_ char *lock = kc_xasprintf("%s.lock", tmpl);
	if (rename(ltmp, lock) < 0)
		unlink(ltmp);
	wd->lock_fd = lfd;
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
	_cleanup_free_ char *lock = kc_xasprintf("%s.lock", wd->path);
	unlink(lock);
	if (wd->lock_fd >= 0)
		close(wd->lock_fd);
	wd->lock_fd = -1;
	free(wd->path);
	wd->path = NULL;
}
