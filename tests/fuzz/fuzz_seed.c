/* SPDX-License-Identifier: Apache-2.0 */
/* Writes a seed corpus for fuzz_archive: small real archives and a manifest. */
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "kc/archive.h"
#include "kc/util.h"

static void put(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fuzz_seed DIR\n");
		return 2;
	}
	struct kc_error *err = NULL;
	_cleanup_free_ char *img = kc_xasprintf("%s/.img", argv[1]);
	_cleanup_free_ char *sub = kc_xasprintf("%s/sub", img);
	if (kc_mkdir_p(sub, 0700, &err) < 0)
		goto fail;
	char *p = kc_xasprintf("%s/core-1.img", img);
	put(p, "core core core core core core core core", 39);
	free(p);
	p = kc_xasprintf("%s/sub/pages-1.img", img);
	char zeros[3000] = {0};
	put(p, zeros, sizeof(zeros));
	free(p);
	const char *comp[] = {"zstd", "none"};
	for (int i = 0; i < 2; i++) {
		struct kc_manifest m;
		kc_manifest_init(&m);
		m.tool_version = kc_xstrdup("seed");
		m.host = kc_xstrdup("seed");
		m.created = kc_xstrdup("2026-01-01T00:00:00Z");
		m.root_pid = 1;
		struct kc_manifest_proc *pr = kc_manifest_add_proc(&m);
		pr->pid = 1;
		snprintf(pr->comm, sizeof(pr->comm), "seed");
		struct kc_archive_opts o = {.compression = comp[i], .threads = 1};
		char *out = kc_xasprintf("%s/seed-%s.tar", argv[1], comp[i]);
		unlink(out); /* a rerun's: the writer never replaces a file */
		if (kc_archive_write(img, &m, out, &o, NULL, &err) < 0)
			goto fail;
		char *json = kc_manifest_to_string(&m);
		char *mp = kc_xasprintf("%s/manifest-%s.json", argv[1], comp[i]);
		put(mp, json, strlen(json));
		free(mp);
		free(json);
		free(out);
		kc_manifest_free(&m);
	}
	kc_rm_rf(img, NULL);
	return 0;
fail:
	fprintf(stderr, "fuzz_seed: %s\n", err->msg);
	kc_error_free(err);
	return 1;
}
