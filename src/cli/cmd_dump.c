/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <limits.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kc/backends.h"
#include "cli.h"
#include "kc/archive.h"
#include "kc/orchestrator.h"
#include "kc/util.h"

/*
 * Where the filesystem has no O_TMPFILE the archive is written under
 * ".<name>.<pid>.<n>" (archive_write.c); a kcheckpoint killed then leaves
 * it.  One whose pid is gone is removed by the next dump to that name.
 */
static void sweep_partial(const char *dir, const char *base, bool quiet)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	struct dirent *de;
	size_t bl = strlen(base);
	while (d && (de = readdir(d))) {
		int pid, n, used = 0;
		if (de->d_name[0] != '.' || strncmp(de->d_name + 1, base, bl) || de->d_name[bl + 1] != '.' ||
		    sscanf(de->d_name + bl + 2, "%d.%d%n", &pid, &n, &used) != 2 || de->d_name[bl + 2 + used] ||
		    pid <= 0 || (kill(pid, 0) == 0 || errno != ESRCH))
			continue;
		_cleanup_free_ char *p = kc_xasprintf("%s/%s", dir, de->d_name);
		if (unlink(p) == 0 && !quiet)
			fprintf(stderr, "kcheckpoint: removed '%s', left by a kcheckpoint that was killed\n", p);
	}
}

/* Before anything is locked: a dump that cannot be written must not start. */
static int check_output(const char *path, bool quiet, struct kc_error **err)
{
	/* the archive is written as ".<name>.<pid>.<n>" first: that name must
	 * fit too, or the dump fails only after the whole GPU and CRIU work */
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if (strlen(base) + 24 > NAME_MAX || strlen(path) + 24 >= PATH_MAX)
		return kc_error_set(err, KC_EXIT_USAGE, ENAMETOOLONG, "'%.60s...': the archive's name is too long (%zu bytes)",
				    path, strlen(path));
	if (access(path, F_OK) == 0)
		return kc_error_set(err, KC_EXIT_USAGE, EEXIST, "'%s' already exists: refusing to overwrite it", path);
	_cleanup_free_ char *dir = kc_xstrdup(path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	if (access(dir, W_OK) < 0)
		return kc_error_errno(err, errno == ENOENT ? KC_EXIT_NOENT : errno == ENAMETOOLONG ? KC_EXIT_USAGE
									: KC_EXIT_PERM,
				      errno, "cannot write the archive into '%s'", dir);
	sweep_partial(dir, base, quiet);
	return 0;
}

static char *default_output(pid_t pid, const char *compress, const char *container)
{
	char ts[32];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
	const char *ext = compress && strcmp(compress, "none") == 0 ? "tar" : "tar.zst";
	if (container)
		return kc_xasprintf("kcheckpoint-%s-%s.%s", container, ts, ext);
	return kc_xasprintf("kcheckpoint-%d-%s.%s", (int)pid, ts, ext);
}

static void *dump_json(const struct kc_report *r, const struct kc_manifest *m, const char *images_dir,
		       const char *output)
{
	json_object *o = kc_report_to_json(r);
	json_object_object_add(o, "root_pid", json_object_new_int(m->root_pid));
	json_object_object_add(o, output ? "archive" : "images_dir", json_object_new_string(output ? output : images_dir));
	json_object_object_add(o, "vram_bytes", json_object_new_uint64(m->vram_bytes));
	json_object *procs = json_object_new_array();
	for (size_t i = 0; i < m->n_procs; i++) {
		const struct kc_manifest_proc *p = &m->procs[i];
		json_object *po = json_object_new_object();
		json_object_object_add(po, "pid", json_object_new_int(p->pid));
		json_object_object_add(po, "comm", json_object_new_string(p->comm));
		json_object_object_add(po, "cuda", json_object_new_boolean(p->cuda));
		json_object_object_add(po, "forked_after_cuda", json_object_new_boolean(p->forked_after_cuda));
		json_object_object_add(po, "vram_bytes", json_object_new_uint64(p->vram_bytes));
		json_object_array_add(procs, po);
	}
	json_object_object_add(o, "processes", procs);
	json_object *lr = json_object_new_array();
	for (char **l = m->link_remaps; l && *l; l++)
		json_object_array_add(lr, json_object_new_string(*l));
	json_object_object_add(o, "link_remaps", lr);
	return o;
}

int kc_cmd_dump(const struct kc_args *ap, struct kc_error **err)
{
	const struct kc_args a = *ap;
	pid_t pid = a.containerd ? 0 : a.pid;
	if (a.images_dir && (a.output || a.compress || a.work_dir || a.keep_images))
		return kc_error_set(err, KC_EXIT_USAGE, 0,
				    "'--images-dir' writes a plain images dir: it does not go with '--output', "
				    "'--compress', '--work-dir' or '--keep-images'");
	if (a.rw_layer && !a.containerd)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'--ignore-rootfs' and '--with-rw-layer' are for '--containerd'");
	if (a.tcp_established && a.tcp_close)
		return kc_error_set(err, KC_EXIT_USAGE, 0,
				    "'--tcp-established' keeps connections, '--tcp-close' closes them: choose one");
	int level;
	if (a.compress && kc_archive_parse_compression(a.compress, &level, err) < 0)
		return kc_error_prefix(err, "option '--compress'");

	/* the total counts driver start-up too: the command's wall time */
	struct kc_report r;
	kc_report_init(&r, "dump");
	double t0 = kc_now();
	struct kc_backend_set cb;
	if (kc_backends_open(&cb, true, a.libcuda, a.verbose, err) < 0)
		return -1;
	if (cb.b.cuda)
		kc_report_add(&r, "gpu-init", kc_now() - t0, 0);
	int rc = -1;
	struct kc_manifest m;
	kc_manifest_init(&m);
	_cleanup_free_ char *output = NULL;
	_cleanup_free_ pid_t *task_pids = NULL;
	/* containerd's CRIU writes its own images: they stay as they are */
	struct kc_dump_opts o = {.lock_timeout_ms = a.lock_timeout_ms, .leave_running = a.leave_running,
				 .split_bulk = a.fill_threads != 0 && !a.containerd,
				 .fill_threads = a.fill_threads > 0 ? (unsigned)a.fill_threads
								    : (unsigned)sysconf(_SC_NPROCESSORS_ONLN),
				 /* by default only where there are cores to read with; an explicit
				  * --fill-threads always reads */
				 .read_min_threads = a.fill_threads > 0 ? 1 : 4,
				 .work_dir = a.work_dir, .keep_images = a.keep_images, .thp = a.thp, .quiet = a.quiet};
	kc_cli_criu_opts(&a, &o.criu);

	if (a.containerd) {
		struct kc_container_opts co = {.address = a.address, .ns = a.ns, .id = a.containerd,
					       .rw_layer = a.rw_layer};
		if (kc_backends_use_container_dump(&cb, &co, &pid, &task_pids, &o.n_pids, err) < 0)
			goto out;
		o.pids = task_pids;
		m.containerd = kc_backends_container_section(&cb);
	}
	o.pid = pid;

	o.archive_opts = (struct kc_archive_opts){.compression = a.compress, .threads = (int)a.threads};
	if (a.images_dir) {
		o.images_dir = a.images_dir;
	} else {
		output = a.output ? kc_xstrdup(a.output) : default_output(pid, a.compress, a.containerd);
		if (!strcmp(output, "-")) {
			/* the archive goes to stdout (a pipe, ssh): nothing else may */
			if (a.json) {
				kc_error_set(err, KC_EXIT_USAGE, 0, "'-o -' writes the archive to stdout: it does not go with '--json'");
				goto out;
			}
			if (isatty(STDOUT_FILENO)) {
				kc_error_set(err, KC_EXIT_USAGE, 0, "refusing to write an archive to a terminal ('-o -')");
				goto out;
			}
			/* a closed stdout would be reused by the next open() */
			struct stat so;
			if (fstat(STDOUT_FILENO, &so) < 0 ||
			    !(S_ISFIFO(so.st_mode) || S_ISSOCK(so.st_mode) || S_ISREG(so.st_mode))) {
				kc_error_set(err, KC_EXIT_USAGE, 0,
					     "'-o -' needs stdout open on a pipe, socket or file");
				goto out;
			}
		} else if (check_output(output, a.quiet, err) < 0) {
			goto out;
		}
		o.archive = output;
	}

	if (kc_dump(&o, &cb.b, &m, &r, err) < 0)
		goto out;
	kc_report_finish(&r);
	if (!a.quiet) {
		kc_report_print(&r, stderr);
		fprintf(stderr, "dumped pid %d (%zu process%s) to '%s'%s\n", (int)m.root_pid, m.n_procs,
			m.n_procs == 1 ? "" : "es", output ? (strcmp(output, "-") ? output : "stdout") : o.images_dir,
			a.leave_running ? ", left running" : "");
	}
	if (a.json)
		kc_cli_print_json(dump_json(&r, &m, o.images_dir, output));
	rc = 0;
out:
	kc_manifest_free(&m);
	kc_backends_close(&cb);
	return rc;
}
