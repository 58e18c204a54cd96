/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "kc/thp.h"
#include "kc/util.h"

/* Tests point this at a file of their own. */
static const char *thp_path(void)
{
	const char *p = getenv("KCHECKPOINT_THP_PATH");
	return p && *p ? p : "/sys/kernel/mm/transparent_hugepage/enabled";
}

int kc_thp_get(char *mode, size_t len, struct kc_error **err)
{
	_cleanup_free_ char *s = NULL;
	if (kc_read_file(thp_path(), &s, NULL, err) < 0)
		return kc_error_prefix(err, "transparent huge pages");
	/* "always [madvise] never": the bracketed one is in force; a plain
	 * word (a test's stand-in file after a write) is the mode itself */
	char *l = strchr(s, '['), *r = l ? strchr(l, ']') : NULL;
	if (!l) {
		l = s - 1;
		r = s + strcspn(s, " \n");
	}
	if (!r || r == l + 1 || (size_t)(r - l - 1) >= len)
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot parse '%s'", thp_path());
	memcpy(mode, l + 1, (size_t)(r - l - 1));
	mode[r - l - 1] = '\0';
	return 0;
}

static int thp_write(const char *mode, struct kc_error **err)
{
	_cleanup_close_ int fd = open(thp_path(), O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE, errno,
				      "cannot open '%s'", thp_path());
	if (write(fd, mode, strlen(mode)) < 0)
		return kc_error_errno(err, errno == EINVAL ? KC_EXIT_USAGE : KC_EXIT_FAILURE, errno,
				      "cannot set transparent huge pages to '%s'", mode);
	return 0;
}

/*
 * Several kcheckpoints may set the mode at once, and one may be killed
 * before it puts the old one back.  So the mode found before the first of
 * them changed it is kept in <run dir>/thp-original, each one that holds
 * a mode has <run dir>/thp-holder-<pid>, all under a lock, and the last
 * holder (or, once none is alive, the next kcheckpoint to set a mode, or
 * `recover`) writes the original back.
 */
struct thp_state {
	int lock_fd;
	char *dir;
};

static int thp_lock(struct thp_state *st, struct kc_error **err)
{
	st->dir = kc_xstrdup(kc_run_dir());
	if (kc_mkdir_p(st->dir, 0700, err) < 0)
		return kc_error_prefix(err, "transparent huge pages");
	_cleanup_free_ char *path = kc_xasprintf("%s/thp.lock", st->dir);
	st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0 || flock(st->lock_fd, LOCK_EX) < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot lock '%s'", path);
	return 0;
}

static void thp_unlock(struct thp_state *st)
{
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	st->lock_fd = -1;
	free(st->dir);
	st->dir = NULL;
}

/* Holders still alive, after removing the files of dead ones. */
static size_t live_holders(const char *dir)
{
	size_t n = 0;
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		int pid;
		if (sscanf(de->d_name, "thp-holder-%d", &pid) != 1)
			continue;
		if (pid > 0 && kc_pid_alive(pid)) {
			n++;
			continue;
		}
		_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, de->d_name);
		unlink(path);
	}
	return n;
}

/* With no holder left: the original mode back, and forgotten. */
static void restore_original(const char *dir)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/thp-original", dir);
	_cleanup_free_ char *mode = NULL;
	if (kc_read_file(path, &mode, NULL, NULL) < 0)
		return;
	mode[strcspn(mode, "\n")] = '\0';
	if (thp_write(mode, NULL) == 0)
		unlink(path);
}

int kc_thp_set(const char *mode, char *old, size_t len, struct kc_error **err)
{
	old[0] = '\0';
	if (strcmp(mode, "always") && strcmp(mode, "madvise") && strcmp(mode, "never"))
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'--thp %s': want always, madvise or never", mode);
	struct thp_state st = {.lock_fd = -1};
	_cleanup_free_ char *orig = NULL, *me = NULL;
	int rc = -1;
	if (thp_lock(&st, err) < 0)
		goto out;
	if (!live_holders(st.dir))
		restore_original(st.dir); /* a kcheckpoint killed while it held one */
	orig = kc_xasprintf("%s/thp-original", st.dir);
	if (access(orig, F_OK) < 0) {
		char cur[16];
		if (kc_thp_get(cur, sizeof(cur), err) < 0 || kc_write_file_atomic(orig, cur, strlen(cur), 0600, err) < 0)
			goto out;
	}
	me = kc_xasprintf("%s/thp-holder-%d", st.dir, (int)getpid());
	if (kc_write_file_atomic(me, "", 0, 0600, err) < 0 || thp_write(mode, err) < 0) {
		unlink(me);
		if (!live_holders(st.dir))
			restore_original(st.dir);
		goto out;
	}
	snprintf(old, len, "held");
	rc = 0;
out:
	thp_unlock(&st);
	return rc;
}

void kc_thp_put_back(char *old)
{
	if (!old || !old[0])
		return;
	old[0] = '\0';
	struct thp_state st = {.lock_fd = -1};
	if (thp_lock(&st, NULL) == 0) {
		_cleanup_free_ char *me = kc_xasprintf("%s/thp-holder-%d", st.dir, (int)getpid());
		unlink(me);
		if (!live_holders(st.dir))
			restore_original(st.dir);
	}
	thp_unlock(&st);
}

void kc_thp_recover(void)
{
	struct thp_state st = {.lock_fd = -1};
	if (thp_lock(&st, NULL) == 0 && !live_holders(st.dir))
		restore_original(st.dir);
	thp_unlock(&st);
}
