/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kc/backends.h"
#include "cli.h"
#include "kc/orchestrator.h"
#include "kc/util.h"
#include "kc/workdir.h"


static int restore_image(const struct kc_args *ap, const char *image, struct kc_gpu_pair *pairs, size_t n_pairs,
			 bool map_checked, struct kc_error **err);

int kc_cmd_restore(const struct kc_args *ap, struct kc_error **err)
{
	const struct kc_args a = *ap;
	const char *image = a.pos[0];
	_cleanup_free_ struct kc_gpu_pair *pairs = NULL;
	size_t n_pairs = 0;
	if (a.gpu_map && kc_cli_parse_gpu_map(a.gpu_map, &pairs, &n_pairs, err) < 0)
		return -1;
	/* a wrong map costs nothing: before the driver starts */
	bool map_checked = false;
	if (kc_restore_check_gpu_map(pairs, n_pairs, &map_checked, err) < 0)
		return -1;
	/* "-": an archive on stdin (ssh node kcheckpoint dump -o - | ...):
	 * spooled into a work dir of its own, since the manifest is read
	 * before the members and the members after CRIU */
	struct kc_workdir spool = {0};
	_cleanup_free_ char *spooled = NULL;
	if (!strcmp(image, "-")) {
		if (isatty(STDIN_FILENO))
			return kc_error_set(err, KC_EXIT_USAGE, 0, "'restore -' reads an archive from stdin, not a terminal");
		if (kc_workdir_create(&spool, a.work_dir, false, a.quiet, err) < 0)
			return -1;
		spooled = kc_xasprintf("%s/stdin.tar", spool.path);
		if (kc_copy_from_fd(STDIN_FILENO, spooled, err) < 0) {
			kc_workdir_finish(&spool, true, NULL);
			return kc_error_prefix(err, "archive from stdin");
		}
		image = spooled;
	}
	int rc = restore_image(&a, image, pairs, n_pairs, map_checked, err);
	kc_workdir_finish(&spool, true, NULL);
	return rc;
}

static int restore_image(const struct kc_args *ap, const char *image, struct kc_gpu_pair *pairs, size_t n_pairs,
			 bool map_checked, struct kc_error **err)
{
	const struct kc_args a = *ap;
	struct kc_report r;
	kc_report_init(&r, "restore");
	struct kc_backend_set cb;
	if (kc_backends_open(&cb, false, a.libcuda, a.verbose, err) < 0)
		return -1;
	/* driver start-up runs while we unpack and CRIU restores */
	kc_backends_open_gpu_async(&cb, a.libcuda, a.verbose);
	int rc = -1;
	struct kc_manifest m;
	kc_manifest_init(&m);
	const char *pf = getenv("KCHECKPOINT_PREFETCH");
	struct kc_restore_opts o = {.pairs = pairs, .n_pairs = n_pairs, .pid_wait_ms = a.pid_wait_ms,
				    .prefetch = pf && strcmp(pf, "1") == 0,
				    .gpu_ready = kc_backends_gpu_ready, .gpu_ready_arg = &cb, .map_checked = map_checked,
				    .fill_threads = a.fill_threads > 0 ? (unsigned)a.fill_threads
								       : (unsigned)sysconf(_SC_NPROCESSORS_ONLN),
				    .fill_huge = !a.no_fill_huge, .fill_overlap = !a.no_fill_overlap, .work_dir = a.work_dir, .keep_images = a.keep_images,
				    .thp = a.thp, .quiet = a.quiet};
	kc_cli_criu_opts(&a, &o.criu);
	if (a.containerd) {
		struct kc_container_opts co = {.address = a.address, .ns = a.ns, .id = a.containerd};
		if (kc_backends_use_container_restore(&cb, &co, err) < 0)
			goto out;
	}
	pid_t root = 0;
	if (kc_restore_image(&o, image, &cb.b, &m, &r, &root, err) < 0)
		goto out;
	kc_report_finish(&r);
	if (!a.quiet) {
		kc_report_print(&r, stderr);
		fprintf(stderr, "restored pid %d (%zu process%s)\n", (int)root, m.n_procs, m.n_procs == 1 ? "" : "es");
	}
	if (a.json)
		kc_cli_print_json(kc_report_to_json(&r));
	else
		printf("%d\n", (int)root);
	rc = 0;
out:
	kc_manifest_free(&m);
	kc_backends_close(&cb);
	return rc;
}
