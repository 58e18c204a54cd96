/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the manifest parser and the archive reader on any
 * bytes.  Besides the sanitizers it checks the reader's promises: a
 * refused archive leaves no dest dir behind, an accepted one holds every
 * member the manifest lists, at its size, and nothing else.
 *
 *   fuzz_archive -max_total_time=60 CORPUS_DIR   (fuzz_seed CORPUS_DIR first)
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kc/archive.h"
#include "kc/manifest.h"
#include "kc/util.h"

static char work[64];

static size_t count_files(const char *dir)
{
	size_t n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char *p = kc_xasprintf("%s/%s", dir, de->d_name);
		struct stat st;
		if (lstat(p, &st) == 0)
			n += S_ISDIR(st.st_mode) ? count_files(p) : 1;
		free(p);
	}
	closedir(d);
	return n;
}

static void remove_work(void)
{
	kc_rm_rf(work, NULL);
}

static void check_extract(const char *path)
{
	char *dest = kc_xasprintf("%s/dest", work);
	struct kc_manifest m;
	struct kc_error *err = NULL;
	if (kc_archive_extract(path, dest, &m, NULL, &err) < 0) {
		struct stat st;
		if (lstat(dest, &st) == 0 || count_files(work) != 0) {
			fprintf(stderr, "refused (%s) but left files behind\n", err->msg);
			abort();
		}
		kc_error_free(err);
		free(dest);
		return;
	}
	for (size_t i = 0; i < m.n_members; i++) {
		char *p = kc_xasprintf("%s/%s", dest, m.members[i].path);
		struct stat st;
		if (lstat(p, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != m.members[i].size) {
			fprintf(stderr, "accepted but member '%s' is wrong\n", m.members[i].path);
			abort();
		}
		free(p);
	}
	if (count_files(dest) != m.n_members + 1) {
		fprintf(stderr, "accepted but extracted something unlisted\n");
		abort();
	}
	kc_manifest_free(&m);
	kc_rm_rf(dest, NULL);
	free(dest);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!work[0]) {
		snprintf(work, sizeof(work), "/tmp/kc-fuzz.XXXXXX");
		if (!mkdtemp(work))
			abort();
		atexit(remove_work);
	}
	struct kc_manifest m;
	struct kc_error *err = NULL;
	kc_manifest_parse((const char *)data, size, &m, &err);
	kc_manifest_free(&m);
	kc_error_free(err);
	err = NULL;

	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		abort();
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (kc_archive_read_manifest(path, &m, &err) == 0) {
		kc_manifest_free(&m);
		if (kc_archive_verify(path, &m, &err) == 0)
			kc_manifest_free(&m);
		kc_error_free(err);
		check_extract(path);
	} else {
		kc_error_free(err);
	}
	close(fd);
	return 0;
}
