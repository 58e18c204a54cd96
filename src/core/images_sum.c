/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checksums of a plain images dir (dump -D), so that a damaged or tampered
 * image is refused before it becomes a process with wrong memory, as an
 * archive's is.  Same scheme as archive members (archive_internal.h: SHA-256
 * tree over 1 MiB leaves, recorded in the manifest's "members"), computed by
 * many threads a leaf range at a time.  The large memory files are hashed
 * where their bytes pass anyway (bulk_read.c while reading, bulk_fill.c
 * while filling); this file does the rest.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive_internal.h"
#include "kc/archive.h"
#include "kc/signals.h"
#include "kc/util.h"
#include "orchestrator_int.h"

#define SPAN 16 /* leaves per work item */

/* Files of an images dir that are not part of the image. */
static bool not_image(const char *name)
{
	static const char *const names[] = {KC_MANIFEST_NAME, ".kcheckpoint-lock", "criu-dump.log", "criu-restore.log",
					    "restore.pid", "stats-restore", NULL};
	for (const char *const *n = names; *n; n++)
		if (!strcmp(name, *n))
			return true;
	return false;
}

void kc_leaves_root(const uint8_t (*d)[32], size_t n, char hex[65])
{
	struct kc_treehash t;
	kc_treehash_init(&t);
	for (size_t i = 0; i < n; i++)
		kc_treehash_add(&t, d[i]);
	kc_treehash_final(&t, hex);
}

struct hfile {
	const char *path;
	uint64_t size;
	size_t first; /* its first leaf in the digest array */
	int err;
};

struct hitem {
	size_t file, leaf; /* leaf within the file */
	size_t n;
};

struct hjob {
	int dirfd;
	struct hfile *files;
	struct hitem *items;
	size_t n_items;
	uint8_t (*d)[32];
	atomic_size_t next;
	atomic_int failed;
};

static void *hash_worker(void *arg)
{
	struct hjob *j = arg;
	unsigned char *buf = malloc(2 * KC_ARCHIVE_LEAF); /* two leaves, hashed side by side */
	if (!buf) {
		kc_fail_once(&j->failed, ENOMEM);
		return NULL;
	}
	int fd = -1;
	size_t fd_file = SIZE_MAX;
	for (;;) {
		if (kc_signals_pending())
			kc_fail_once(&j->failed, EINTR);
		if (atomic_load(&j->failed))
			break;
		size_t i = atomic_fetch_add(&j->next, 1);
		if (i >= j->n_items)
			break;
		const struct hitem *it = &j->items[i];
		struct hfile *f = &j->files[it->file];
		if (fd_file != it->file) {
			if (fd >= 0)
				close(fd);
			/* O_NONBLOCK: a FIFO put in its place would wait for a writer */
			fd = openat(j->dirfd, f->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			fd_file = it->file;
			if (fd < 0) {
				f->err = errno;
				continue;
			}
		}
		if (fd < 0)
			continue;
		for (size_t l = it->leaf; l < it->leaf + it->n; l += 2) {
			uint64_t off = (uint64_t)l * KC_ARCHIVE_LEAF;
			uint64_t want = (l + 1 < it->leaf + it->n ? 2 : 1) * (uint64_t)KC_ARCHIVE_LEAF;
			size_t len = f->size - off < want ? (size_t)(f->size - off) : (size_t)want;
			if (kc_pread_all(fd, buf, len, off) < 0) {
				f->err = errno ? errno : EIO;
				break;
			}
			kc_sha256_leaves(buf, len, KC_ARCHIVE_LEAF, &j->d[f->first + l]);
		}
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return NULL;
}

/* Roots of n files (sizes as given: a file of another size is an error). */
static int hash_files(int dirfd, const char *dir, struct hfile *files, size_t n, unsigned threads, char (*roots)[65],
		      struct kc_error **err)
{
	size_t leaves = 0, n_items = 0;
	for (size_t i = 0; i < n; i++) {
		files[i].first = leaves;
		size_t fl = (size_t)((files[i].size + KC_ARCHIVE_LEAF - 1) / KC_ARCHIVE_LEAF);
		leaves += fl;
		n_items += (fl + SPAN - 1) / SPAN;
	}
	struct hjob j = {.dirfd = dirfd, .files = files, .n_items = n_items};
	j.d = kc_xcalloc(leaves + 1, sizeof(*j.d));
	j.items = kc_xcalloc(n_items + 1, sizeof(*j.items));
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		size_t fl = (size_t)((files[i].size + KC_ARCHIVE_LEAF - 1) / KC_ARCHIVE_LEAF);
		for (size_t l = 0; l < fl; l += SPAN)
			j.items[k++] = (struct hitem){.file = i, .leaf = l, .n = fl - l < SPAN ? fl - l : SPAN};
	}
	kc_run_pool(threads, n_items, hash_worker, &j);
	int rc = 0;
	int e = atomic_load(&j.failed);
	if (e == EINTR)
		rc = kc_check_interrupted(err);
	else if (e)
		rc = kc_error_errno(err, KC_EXIT_FAILURE, e, "cannot hash the images in '%s'", dir);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (files[i].err) {
			rc = kc_error_errno(err, files[i].err == ENOENT ? KC_EXIT_IMAGE : KC_EXIT_FAILURE, files[i].err,
					    "cannot read '%s/%s'", dir, files[i].path);
			break;
		}
		size_t fl = (size_t)((files[i].size + KC_ARCHIVE_LEAF - 1) / KC_ARCHIVE_LEAF);
		kc_leaves_root((const uint8_t(*)[32])j.d + files[i].first, fl, roots[i]);
	}
	free(j.d);
	free(j.items);
	return rc;
}

struct list {
	char **paths;
	uint64_t *sizes;
	size_t n, cap;
};

static int scan(int dfd, const char *prefix, const char *top, struct list *l, struct kc_error **err)
{
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot read '%s'", top);
	}
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || (!*prefix && not_image(de->d_name)))
			continue;
		_cleanup_free_ char *rel = *prefix ? kc_xasprintf("%s/%s", prefix, de->d_name) : kc_xstrdup(de->d_name);
		struct stat st;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot stat '%s/%s'", top, rel);
		} else if (S_ISDIR(st.st_mode)) {
			int sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			rc = sub < 0 ? kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open '%s/%s'", top, rel)
				     : scan(sub, rel, top, l, err);
			if (sub >= 0)
				close(sub);
		} else if (S_ISREG(st.st_mode)) {
			if (l->n == l->cap) {
				l->cap = l->cap ? l->cap * 2 : 64;
				l->paths = kc_xrealloc(l->paths, l->cap * sizeof(*l->paths));
				l->sizes = kc_xrealloc(l->sizes, l->cap * sizeof(*l->sizes));
			}
			l->paths[l->n] = steal_ptr(rel);
			l->sizes[l->n++] = (uint64_t)st.st_size;
		}
	}
	closedir(d);
	return rc;
}

int kc_images_checksum(const char *dir, struct kc_manifest *m, unsigned threads,
		       const struct kc_manifest_member *known, size_t n_known, struct kc_error **err)
{
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open '%s'", dir);
	struct list l = {0};
	int rc = scan(dfd, "", dir, &l, err);
	/* in path order, as an archive lists them */
	for (size_t i = 1; rc == 0 && i < l.n; i++)
		for (size_t k = i; k > 0 && strcmp(l.paths[k - 1], l.paths[k]) > 0; k--) {
			char *p = l.paths[k];
			uint64_t s = l.sizes[k];
			l.paths[k] = l.paths[k - 1];
			l.sizes[k] = l.sizes[k - 1];
			l.paths[k - 1] = p;
			l.sizes[k - 1] = s;
		}
	struct hfile *files = kc_xcalloc(l.n + 1, sizeof(*files));
	char (*roots)[65] = kc_xcalloc(l.n + 1, sizeof(*roots));
	size_t n = 0;
	for (size_t i = 0; rc == 0 && i < l.n; i++) {
		bool have = false;
		for (size_t k = 0; k < n_known && !have; k++)
			have = !strcmp(known[k].path, l.paths[i]) && known[k].size == l.sizes[i];
		if (!have)
			files[n++] = (struct hfile){.path = l.paths[i], .size = l.sizes[i]};
	}
	if (rc == 0)
		rc = hash_files(dfd, dir, files, n, threads, roots, err);
	if (rc == 0) {
		for (size_t i = 0; i < m->n_members; i++)
			free(m->members[i].path);
		free(m->members);
		m->members = NULL;
		m->n_members = 0;
		for (size_t i = 0, f = 0; i < l.n; i++) {
			const char *sum = NULL;
			if (f < n && files[f].path == l.paths[i])
				sum = roots[f++];
			for (size_t k = 0; !sum && k < n_known; k++)
				if (!strcmp(known[k].path, l.paths[i]))
					sum = known[k].sha256;
			kc_manifest_add_member(m, l.paths[i], l.sizes[i], sum);
		}
	}
	for (size_t i = 0; i < l.n; i++)
		free(l.paths[i]);
	free(l.paths);
	free(l.sizes);
	free(files);
	free(roots);
	return rc;
}

int kc_images_verify(const char *dir, const struct kc_manifest *m, unsigned threads, bool (*skip)(const char *path),
		     struct kc_error **err)
{
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open '%s'", dir);
	struct hfile *files = kc_xcalloc(m->n_members + 1, sizeof(*files));
	size_t *which = kc_xcalloc(m->n_members + 1, sizeof(*which));
	char (*roots)[65] = kc_xcalloc(m->n_members + 1, sizeof(*roots));
	size_t n = 0;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < m->n_members; i++) {
		const struct kc_manifest_member *mm = &m->members[i];
		if (skip && skip(mm->path))
			continue;
		struct stat st;
		if (kc_archive_path_problem(mm->path))
			rc = kc_error_set(err, KC_EXIT_IMAGE, 0, "bad manifest in '%s': member '%s': %s", dir, mm->path,
					  kc_archive_path_problem(mm->path));
		else if (fstatat(dfd, mm->path, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			rc = kc_error_set(err, KC_EXIT_IMAGE, ENOENT, "'%s' is missing from '%s'", mm->path, dir);
		else if ((uint64_t)st.st_size != mm->size)
			rc = kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s/%s' has %llu bytes, the manifest says %llu", dir,
					  mm->path, (unsigned long long)st.st_size, (unsigned long long)mm->size);
		files[n] = (struct hfile){.path = mm->path, .size = mm->size};
		which[n++] = i;
	}
	/* and nothing else: a file the manifest does not list would go to
	 * CRIU unchecked (an archive refuses such a member too) */
	struct list l = {0};
	if (rc == 0)
		rc = scan(dfd, "", dir, &l, err);
	for (size_t i = 0; rc == 0 && i < l.n; i++) {
		bool listed = false;
		for (size_t k = 0; k < m->n_members && !listed; k++)
			listed = !strcmp(m->members[k].path, l.paths[i]);
		if (!listed)
			rc = kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s/%s' is not in the manifest", dir, l.paths[i]);
	}
	for (size_t i = 0; i < l.n; i++)
		free(l.paths[i]);
	free(l.paths);
	free(l.sizes);
	if (rc == 0)
		rc = hash_files(dfd, dir, files, n, threads, roots, err);
	if (rc == 0) {
		_cleanup_free_ char *bad = NULL;
		size_t n_bad = 0;
		for (size_t f = 0; f < n; f++) {
			if (!strcmp(roots[f], m->members[which[f]].sha256))
				continue;
			char *b = kc_xasprintf("%s%s'%s'", bad ? bad : "", bad ? ", " : "", files[f].path);
			free(bad);
			bad = b;
			n_bad++;
		}
		if (n_bad)
			rc = kc_error_set(err, KC_EXIT_IMAGE, 0, "checksum mismatch for member%s %s in '%s'",
					  n_bad > 1 ? "s" : "", bad, dir);
	}
	free(files);
	free(which);
	free(roots);
	return rc;
}
