/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "kc/signals.h"
#include "kc/util.h"




double kc_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void kc_utc_timestamp(char buf[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int kc_read_file(const char *path, char **out, size_t *len, struct kc_error **err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kc_error_errno(err, errno == ENOENT ? KC_EXIT_NOENT : errno == EACCES ? KC_EXIT_PERM : KC_EXIT_FAILURE,
				      errno, "cannot open '%s'", path);
	size_t cap = 4096, n = 0;
	_cleanup_free_ char *buf = kc_xmalloc(cap + 1);
	for (;;) {
		if (n == cap) {
			cap *= 2;
			buf = kc_xrealloc(buf, cap + 1);
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot read '%s'", path);
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	if (len)
		*len = n;
	*out = steal_ptr(buf);
	return 0;
}

static int fsync_dir_of(const char *path)
{
	_cleanup_free_ char *copy = kc_xstrdup(path);
	_cleanup_close_ int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	return fsync(dfd);
}

static int write_replace(const char *path, const void *buf, size_t len, mode_t mode, bool durable,
			 struct kc_error **err)
{
	_cleanup_free_ char *tmp = kc_xasprintf("%s.tmp.%d", path, (int)getpid());
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE,
				      errno, "cannot create '%s'", tmp);
	const char *p = buf;
	size_t left = len;
	while (left) {
		ssize_t w = write(fd, p, left);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			unlink(tmp);
			return kc_error_errno(err, KC_EXIT_FAILURE, e, "cannot write '%s'", tmp);
		}
		p += w;
		left -= (size_t)w;
	}
	if ((durable && fsync(fd) < 0) || close(steal_fd(fd)) < 0) {
		int e = errno;
		unlink(tmp);
		return kc_error_errno(err, KC_EXIT_FAILURE, e, "cannot write '%s'", tmp);
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return kc_error_errno(err, KC_EXIT_FAILURE, e, "cannot rename '%s' to '%s'", tmp, path);
	}
	if (durable)
		fsync_dir_of(path);
	return 0;
}

int kc_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode, struct kc_error **err)
{
	return write_replace(path, buf, len, mode, true, err);
}

int kc_write_file_replace(const char *path, const void *buf, size_t len, mode_t mode, struct kc_error **err)
{
	return write_replace(path, buf, len, mode, false, err);
}

char *kc_run_mark_path(const char *kind, pid_t id)
{
	return kc_xasprintf("%s/%s-%d", kc_run_dir(), kind, (int)id);
}

int kc_run_mark_write(const char *kind, pid_t id, const char *text, struct kc_error **err)
{
	if (kc_mkdir_p(kc_run_dir(), 0700, err) < 0)
		return -1;
	_cleanup_free_ char *path = kc_run_mark_path(kind, id);
	return kc_write_file_replace(path, text, strlen(text), 0600, err);
}

int kc_mkdir_p(const char *path, mode_t mode, struct kc_error **err)
{
	_cleanup_free_ char *p = kc_xstrdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE,
					      errno, "cannot create directory '%s'", p);
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE,
				      errno, "cannot create directory '%s'", p);
	struct stat st;
	if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))
		return kc_error_set(err, KC_EXIT_FAILURE, ENOTDIR, "'%s' is not a directory", p);
	return 0;
}

/*
 * Depth first through descriptors (openat/unlinkat), never by path, so any
 * depth goes (an archive's member path may be longer than PATH_MAX when
 * joined to the dir's) and only one directory is open at a time: a stack
 * of names leads back up through "..".  Symbolic links are removed, not
 * followed.
 */
int kc_rm_rf(const char *path, struct kc_error **err)
{
	if (!path || !*path || strcmp(path, "/") == 0)
		return kc_error_set(err, KC_EXIT_FAILURE, EINVAL, "refusing to remove '%s'", path ? path : "");
	if (unlink(path) == 0 || errno == ENOENT)
		return 0;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot remove '%s'", path);
	struct stat top;
	if (fstat(fd, &top) < 0) {
		close(fd);
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot remove '%s'", path);
	}
	char **names = NULL;
	struct stat *dirs = NULL; /* each level's own (dev, ino), to check ".." against */
	size_t depth = 0, cap = 0;
	int e = 0;
	for (;;) {
		int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		if (!d) {
			e = errno;
			if (dfd >= 0)
				close(dfd);
			break;
		}
		int child = -1;
		struct dirent *de;
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (unlinkat(fd, de->d_name, 0) == 0 || errno == ENOENT)
				continue;
			if (errno != EISDIR && errno != EPERM) {
				e = errno;
				continue;
			}
			child = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (child < 0) {
				e = errno;
				continue;
			}
			/* never into another filesystem or mount (a bind mount in a
			 * work dir has the same st_dev: the mount-root bit tells) */
			struct stat cs;
			struct statx sx;
			bool mount_root = statx(child, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) == 0 &&
					  (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
					  (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
			if (fstat(child, &cs) < 0 || cs.st_dev != top.st_dev || mount_root) {
				close(child);
				child = -1;
				e = EXDEV;
				continue;
			}
			if (depth == cap) {
				cap = cap ? cap * 2 : 16;
				names = kc_xrealloc(names, cap * sizeof(*names));
				dirs = kc_xrealloc(dirs, cap * sizeof(*dirs));
			}
			fstat(fd, &dirs[depth]);
			names[depth++] = kc_xstrdup(de->d_name);
			break;
		}
		closedir(d);
		if (child >= 0) {
			close(fd);
			fd = child;
			continue;
		}
		if (depth == 0 || e)
			break;
		int parent = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = parent;
		char *name = names[--depth];
		/* ".." must be where we came down from: a dir moved meanwhile
		 * must not lead the removal elsewhere */
		struct stat ps;
		if (fd < 0 || fstat(fd, &ps) < 0 || ps.st_dev != dirs[depth].st_dev || ps.st_ino != dirs[depth].st_ino) {
			free(name);
			e = fd < 0 ? errno : EXDEV;
			break;
		}
		int r = fd >= 0 ? unlinkat(fd, name, AT_REMOVEDIR) : -1;
		free(name);
		if (r < 0 && errno != ENOENT) {
			e = errno; /* going down again would loop */
			break;
		}
	}
	if (fd >= 0)
		close(fd);
	while (depth)
		free(names[--depth]);
	free(names);
	free(dirs);
	if (!e && rmdir(path) < 0 && errno != ENOENT)
		e = errno;
	if (e)
		return kc_error_errno(err, KC_EXIT_FAILURE, e, "cannot remove '%s'", path);
	return 0;
}

static __thread uint64_t dir_size_total; /* nftw has no user pointer */
static int size_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag == FTW_F && S_ISREG(st->st_mode))
		dir_size_total += (uint64_t)st->st_size;
	return 0;
}

uint64_t kc_dir_size(const char *path)
{
	dir_size_total = 0;
	nftw(path, size_one, 16, FTW_PHYS);
	return dir_size_total;
}

void kc_format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
	double v = (double)bytes;
	size_t u = 0;
	while (v >= 1000.0 && u + 1 < KC_ARRAY_SIZE(units)) {
		v /= 1000.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.2f %s", v, units[u]);
}

uint64_t kc_pid_starttime(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *rp = strrchr(buf, ')');
	unsigned long long t = 0;
	/* field 22 (starttime); the fields after ')' start at field 3 */
	if (!rp || sscanf(rp + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
			  &t) != 1)
		return 0;
	return (uint64_t)t;
}

int kc_pid_stat(pid_t pid, char *state, pid_t *ppid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* comm may hold spaces and parentheses: the fields follow the last ')' */
	char *rp = strrchr(buf, ')');
	char st;
	int pp;
	if (!rp || sscanf(rp + 1, " %c %d", &st, &pp) != 2)
		return -1;
	if (state)
		*state = st;
	if (ppid)
		*ppid = pp;
	return 0;
}

int kc_pid_maps_each(pid_t pid, int (*fn)(const struct kc_map *m, void *arg), void *arg)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, f)) > 0) {
		if (line[len - 1] == '\n')
			line[len - 1] = '\0';
		struct kc_map m = {0};
		int name = 0;
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %*s %*s %llu %n", &m.lo, &m.hi, m.perms, &m.ino, &name) < 4)
			continue;
		m.name = name ? line + name : "";
		if (fn(&m, arg))
			break;
	}
	return 0;
}

char kc_pid_state(pid_t pid)
{
	char st;
	return kc_pid_stat(pid, &st, NULL) < 0 ? 0 : st;
}

bool kc_pid_exists(pid_t pid)
{
	return kc_pid_state(pid) != 0;
}

bool kc_pid_alive(pid_t pid)
{
	char s = kc_pid_state(pid);
	return s != 0 && s != 'Z' && s != 'X';
}

int kc_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO; /* no progress: never loop on it */
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int kc_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		ssize_t w = pwrite(fd, p, len, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		p += w;
		off += (uint64_t)w;
		len -= (size_t)w;
	}
	return 0;
}

int kc_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO; /* short: the file or memory ends early */
			return -1;
		}
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

size_t kc_dir_clear(const char *dir, const char *const *keep)
{
	size_t kept = 0;
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		bool spare = false;
		for (const char *const *k = keep; k && *k && !spare; k++)
			spare = !strcmp(de->d_name, *k) && de->d_type == DT_REG;
		if (spare) {
			kept++;
			continue;
		}
		_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, de->d_name);
		if (de->d_type == DT_DIR)
			kc_rm_rf(path, NULL);
		else
			unlink(path);
	}
	return kept;
}

const char *kc_run_dir(void)
{
	const char *dir = getenv("KCHECKPOINT_RUN_DIR");
	return dir && *dir ? dir : "/run/kcheckpoint";
}

int kc_pid_lock(pid_t pid, struct kc_error **err)
{
	if (kc_mkdir_p(kc_run_dir(), 0700, err) < 0)
		return -1;
	_cleanup_free_ char *path = kc_xasprintf("%s/pid-%d.lock", kc_run_dir(), (int)pid);
	for (;;) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot open '%s'", path);
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;
			close(fd);
			if (e == EWOULDBLOCK)
				return kc_error_set(err, KC_EXIT_BUSY, EBUSY,
						    "pid %d is being dumped, restored, recovered or asked about by another kcheckpoint",
						    (int)pid);
			return kc_error_errno(err, KC_EXIT_FAILURE, e, "cannot lock '%s'", path);
		}
		/* the holder before us removes the file as it unlocks (so the
		 * run dir does not fill up with one per pid ever seen): the
		 * lock counts only on the file that still has the name */
		struct stat a, b;
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return fd;
		close(fd);
	}
}

/* Removes the lock file while it is still held, then drops the lock. */
static void pid_unlock(int fd)
{
	char link[64], path[PATH_MAX];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	struct stat a, b;
	if (n > 0) {
		path[n] = '\0';
		if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			unlink(path);
	}
	close(fd);
}

int kc_pids_lock(const pid_t *pids, size_t n, int **fds, struct kc_error **err)
{
	int *v = kc_xcalloc(n + 1, sizeof(int));
	for (size_t i = 0; i < n; i++) {
		v[i] = kc_pid_lock(pids[i], err);
		if (v[i] < 0) {
			for (size_t j = 0; j < i; j++)
				pid_unlock(v[j]);
			free(v);
			return -1;
		}
	}
	*fds = v;
	return 0;
}

void kc_pids_unlock(int *fds, size_t n)
{
	for (size_t i = 0; fds && i < n; i++)
		pid_unlock(fds[i]);
	free(fds);
}

pid_t kc_pid_tracer(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	_cleanup_free_ char *text = NULL;
	if (kc_read_file(path, &text, NULL, NULL) < 0)
		return 0;
	const char *t = strstr(text, "\nTracerPid:");
	return t ? (pid_t)atoi(t + 11) : 0;
}

pid_t kc_tid_tgid(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	_cleanup_free_ char *text = NULL;
	if (kc_read_file(path, &text, NULL, NULL) < 0)
		return -1;
	const char *t = strstr(text, "\nTgid:");
	return t ? (pid_t)atoi(t + 6) : -1;
}

pid_t kc_pid_tracer_any(pid_t pid)
{
	_cleanup_free_ char *task = kc_xasprintf("/proc/%d/task", (int)pid);
	DIR *d = opendir(task);
	if (!d)
		return kc_pid_tracer(pid);
	pid_t t = 0;
	struct dirent *de;
	while (t <= 0 && (de = readdir(d))) {
		pid_t tid = (pid_t)atoi(de->d_name);
		if (tid > 0)
			t = kc_pid_tracer(tid);
	}
	closedir(d);
	return t;
}

bool kc_pid_is_kthread(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	const char *rp = strrchr(buf, ')');
	unsigned long flags = 0;
	/* state ppid pgrp session tty_nr tpgid flags */
	if (!rp || sscanf(rp + 1, " %*c %*d %*d %*d %*d %*d %lu", &flags) != 1)
		return false;
	return flags & 0x00200000; /* PF_KTHREAD */
}

void kc_pid_each_fd(pid_t pid, void (*fn)(int fd, const char *link, const char *target, void *arg), void *arg)
{
	char dir[64];
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char link[96], target[PATH_MAX];
		snprintf(link, sizeof(link), "%s/%.16s", dir, de->d_name);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		fn(atoi(de->d_name), link, target, arg);
	}
}

void kc_pid_comm(pid_t pid, char *buf, size_t len)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : -1;
	if (n <= 0) {
		snprintf(buf, len, "?");
		return;
	}
	buf[n] = '\0';
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = '\0';
	/* a process names itself: no terminal escapes into our tables, no
	 * invalid UTF-8 into our JSON */
	kc_text_sanitize(buf, true);
}

/* Length of the valid UTF-8 sequence at s (1-4), 0 if there is none. */
static size_t utf8_len(const unsigned char *s)
{
	if (s[0] < 0x80)
		return 1;
	size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	if (n == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0)))
		return 0; /* overlong, surrogate */
	if (n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90)))
		return 0;
	return n;
}

bool kc_text_sanitize(char *s, bool controls)
{
	bool changed = false;
	for (unsigned char *p = (unsigned char *)s; *p;) {
		size_t n = utf8_len(p);
		if (n == 0 || (controls && n == 1 && (*p < 0x20 || *p == 0x7f))) {
			*p++ = '?';
			changed = true;
			continue;
		}
		p += n;
	}
	return changed;
}

int kc_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

pid_t kc_parse_pid(const char *s)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v <= 0 || v > 4194304 || s[0] == '+' || s[0] == ' ')
		return -1;
	return (pid_t)v;
}

int kc_copy_to_fd(const char *path, int out, struct kc_error **err)
{
	_cleanup_close_ int in = open(path, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot open '%s'", path);
	/* sendfile to a pipe or file; a plain copy where it cannot.  Chunks
	 * of 16 MiB, so a signal (^C while the reader stalls) is seen soon:
	 * until the last byte is out the dump is not done */
	for (;;) {
		if (kc_signals_pending())
			return kc_error_set(err, KC_EXIT_INTERRUPTED, EINTR, "interrupted");
		ssize_t n = sendfile(out, in, NULL, 16 << 20);
		if (n == 0)
			return 0;
		if (n > 0 || errno == EINTR)
			continue;
		if (errno != EINVAL && errno != ENOSYS)
			return kc_error_errno(err, KC_EXIT_FAILURE, errno,
					      "cannot write");
		break;
	}
	char buf[1 << 16];
	for (;;) {
		if (kc_signals_pending())
			return kc_error_set(err, KC_EXIT_INTERRUPTED, EINTR, "interrupted");
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot read '%s'", path);
		if (n == 0)
			return 0;
		if (kc_write_all(out, buf, (size_t)n) < 0)
			return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot write");
	}
}

int kc_copy_from_fd(int in, const char *path, struct kc_error **err)
{
	_cleanup_close_ int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (out < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create '%s'", path);
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot read");
		if (n == 0)
			return 0;
		if (kc_write_all(out, buf, (size_t)n) < 0)
			return kc_error_errno(err, errno == ENOSPC ? KC_EXIT_IMAGE : KC_EXIT_FAILURE, errno,
					      "cannot write '%s'", path);
	}
}

int kc_check_room(const char *dir, uint64_t need, const char *what, struct kc_error **err)
{
	struct statvfs sv;
	if (statvfs(dir, &sv) < 0)
		return 0; /* what uses the dir next says what is wrong with it */
	uint64_t have = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (have >= need)
		return 0;
	char n[32], h[32];
	kc_format_bytes(need, n, sizeof(n));
	kc_format_bytes(have, h, sizeof(h));
	return kc_error_set(err, KC_EXIT_IMAGE, ENOSPC, "%s needs %s in '%s', which has %s free", what, n, dir, h);
}
