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
#include "kc/archive.h"
#include "kc/gpumap.h"
#include "kc/orchestrator.h"
#include "kc/thp.h"
#include "kc/util.h"
#include "workdir.h"

static uint64_t unpacked_so_far(void *arg)
{
	return __atomic_load_n(&((struct kc_archive_stats *)arg)->done, __ATOMIC_RELAXED);
}

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
	/* Checked now, before anything is unpacked, where the kernel module
	 * lists its GPUs; else kc_restore waits for the driver to check it.
	 * CUDA_VISIBLE_DEVICES hides GPUs from the driver, not from the
	 * module: then only the driver's view counts. */
	bool map_checked = false;
	_cleanup_free_ struct kc_uuid *node = NULL;
	size_t n_node = 0;
	if (n_pairs && !getenv("CUDA_VISIBLE_DEVICES") && kc_procfs_gpus(&node, &n_node) == 0) {
		if (kc_gpu_map_check(pairs, n_pairs, node, n_node, err) < 0)
			return -1;
		map_checked = true;
	}
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
	struct stat st;
	if (stat(image, &st) < 0)
		return kc_error_errno(err, KC_EXIT_NOENT, errno, "cannot open image '%s'", image);
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is neither an archive nor an images dir", image);

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
	struct kc_workdir wd = {0};
	struct kc_archive_reader *reader = NULL;
	struct kc_archive_stats as = {0}; /* the reader's, until it ends */
	uint64_t unpack_total = 0;
	char thp_old[16] = "";
	const char *pf = getenv("KCHECKPOINT_PREFETCH");
	struct kc_restore_opts o = {.pairs = pairs, .n_pairs = n_pairs, .pid_wait_ms = a.pid_wait_ms,
				    .prefetch = pf && strcmp(pf, "1") == 0,
				    .gpu_ready = kc_backends_gpu_ready, .gpu_ready_arg = &cb, .map_checked = map_checked,
				    .fill_threads = a.fill_threads > 0 ? (unsigned)a.fill_threads
								       : (unsigned)sysconf(_SC_NPROCESSORS_ONLN)};
	kc_cli_criu_opts(&a, &o.criu);

	if (a.thp && kc_thp_set(a.thp, thp_old, sizeof(thp_old), err) < 0)
		goto out;
	/* a CRIU that is not there is found before gigabytes are unpacked */
	if (!a.containerd && kc_backends_criu_runs(&cb, &o.criu, err) < 0)
		goto out;
	if (S_ISREG(st.st_mode)) {
		/* a missing link remap is known from the manifest alone: refuse
		 * before gigabytes are unpacked */
		struct kc_manifest pre;
		kc_manifest_init(&pre);
		int pr = kc_archive_read_manifest(image, &pre, err);
		if (pr == 0 && !a.containerd)
			pr = kc_restore_check_links(&pre, err);
		/* and room for it: a small archive can hold a lot of memory */
		if (pr == 0)
			pr = kc_restore_check_space(&pre, kc_workdir_parent(a.work_dir), err);
		bool streamed = kc_archive_bulk_last(&pre);
		for (size_t i = 0; i < pre.n_members; i++)
			if (!streamed || !kc_archive_is_bulk_member(pre.members[i].path))
				unpack_total += pre.members[i].size;
		kc_manifest_free(&pre);
		if (pr < 0)
			goto out;
		if (kc_workdir_create(&wd, a.work_dir, a.keep_images, a.quiet, err) < 0)
			goto out;
		/* up to the memory members, which fill the processes from the
		 * archive once CRIU restored them */
		struct kc_progress *up = kc_progress_start("unpack", unpacked_so_far, &as);
		kc_progress_total(up, unpack_total);
		int ur = kc_archive_extract_begin(image, wd.path, &m, &as, &reader, err);
		kc_progress_stop(up);
		if (ur < 0)
			goto out;
		kc_report_add_io(&r, "unpack", as.seconds, as.bytes_in, as.bytes_out);
		o.images_dir = wd.path;
		o.images_private = true;
		if (kc_archive_extract_pending(reader))
			o.archive = reader;
	} else {
		if (a.work_dir || a.keep_images) {
			kc_error_set(err, KC_EXIT_USAGE, 0, "'--work-dir' and '--keep-images' are for archives; '%s' is a dir",
				     image);
			goto out;
		}
		if (kc_manifest_read(image, &m, err) < 0)
			goto out;
		o.images_dir = image;
	}

	if (a.containerd) {
		struct kc_container_opts co = {.address = a.address, .ns = a.ns, .id = a.containerd};
		if (kc_backends_use_container_restore(&cb, &co, err) < 0)
			goto out;
	}

	pid_t root = 0;
	if (kc_restore(&o, &cb.b, &m, &r, &root, err) < 0)
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
	kc_archive_extract_end(reader);
	kc_thp_put_back(thp_old);
	/* the log is kept where the error names it: a failure of CRIU */
	kc_workdir_finish(&wd, a.quiet, rc != 0 && err && *err && (*err)->exit_code == KC_EXIT_CRIU ? "criu-restore.log" : NULL);
	kc_manifest_free(&m);
	kc_backends_close(&cb);
	return rc;
}
