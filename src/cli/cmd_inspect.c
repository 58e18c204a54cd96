/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "kc/archive.h"
#include "kc/manifest.h"
#include "kc/report.h"
#include "kc/util.h"

static void print_human(const struct kc_manifest *m, const char *image, uint64_t archive_bytes)
{
	char b[32];
	printf("image:       %s\n", image);
	printf("created:     %s on '%s'\n", m->created ? m->created : "?", m->host ? m->host : "?");
	printf("versions:    kcheckpoint %s, kernel %s, CRIU %s, driver %s (CUDA %d.%d)\n",
	       m->tool_version ? m->tool_version : "?", m->kernel ? m->kernel : "?",
	       m->criu_version ? m->criu_version : "?", m->driver_version ? m->driver_version : "-",
	       m->cuda_driver_version / 1000, (m->cuda_driver_version % 1000) / 10);
	if (m->containerd) {
		/* the manifest's containerd section (a json-c object) */
		json_object *c = m->containerd, *v;
#define CSTR(k) (json_object_object_get_ex(c, k, &v) && json_object_get_string(v) ? json_object_get_string(v) : "?")
		printf("container:   '%s' in namespace '%s', image %s\n", CSTR("id"), CSTR("namespace"), CSTR("image"));
		printf("             runtime %s, snapshotter %s, containerd %s, rw layer %s\n", CSTR("runtime"),
		       CSTR("snapshotter"), CSTR("containerd_version"),
		       json_object_object_get_ex(c, "rw_layer", &v) ? (json_object_get_boolean(v) ? "in the image" : "left out")
								   : "?");
#undef CSTR
	}
	kc_format_bytes(m->vram_bytes, b, sizeof(b));
	printf("root pid:    %d, %zu process%s, VRAM %s\n", (int)m->root_pid, m->n_procs, m->n_procs == 1 ? "" : "es", b);
	printf("criu:        tcp-established %s, tcp-close %s, shell-job %s, file-locks %s, link-remap %s\n",
	       m->tcp_established ? "yes" : "no", m->tcp_close ? "yes" : "no", m->shell_job ? "yes" : "no",
	       m->file_locks ? "yes" : "no", m->link_remap ? "yes" : "no");
	if (m->criu_extra && *m->criu_extra) {
		printf("criu opts:  ");
		for (char **x = m->criu_extra; *x; x++)
			printf(" %s", *x);
		printf("\n");
	}
	for (char **l = m->link_remaps; l && *l; l++)
		printf("needs:       %s (on '%s', until restored)\n", *l, m->host ? m->host : "?");
	printf("\n%-8s %-8s %-16s %-13s %12s  %s\n", "PID", "PPID", "COMM", "CUDA", "VRAM", "GPUS");
	for (size_t i = 0; i < m->n_procs; i++) {
		const struct kc_manifest_proc *p = &m->procs[i];
		kc_format_bytes(p->vram_bytes, b, sizeof(b));
		printf("%-8d %-8d %-16s %-13s %12s  ", (int)p->pid, (int)p->ppid, p->comm,
		       p->cuda ? kc_cuda_state_name(p->cuda_state) : p->forked_after_cuda ? "forked-after" : "-",
		       p->vram_bytes ? b : "-");
		for (char **g = p->gpus; g && *g; g++)
			printf("%s%s", g == p->gpus ? "" : ",", *g);
		printf("\n");
	}
	if (m->n_stages) {
		printf("\n%-16s %9s %12s\n", "stage", "seconds", "bytes");
		for (size_t i = 0; i < m->n_stages; i++) {
			kc_format_bytes(m->stages[i].bytes, b, sizeof(b));
			printf("%-16s %9.3f %12s\n", m->stages[i].name, m->stages[i].seconds, m->stages[i].bytes ? b : "-");
		}
	}
	if (m->n_members) {
		uint64_t total = 0;
		printf("\n%-40s %12s  %s\n", "member", "bytes", "sha256 tree");
		for (size_t i = 0; i < m->n_members; i++) {
			total += m->members[i].size;
			printf("%-40s %12llu  %.16s...\n", m->members[i].path, (unsigned long long)m->members[i].size,
			       m->members[i].sha256);
		}
		kc_format_bytes(total, b, sizeof(b));
		char a[32];
		kc_format_bytes(archive_bytes, a, sizeof(a));
		if (archive_bytes)
			printf("\n%zu members, %s; archive %s (%s), ratio %.2f\n", m->n_members, b, a,
			       m->compression ? m->compression : "none", (double)total / (double)archive_bytes);
		else
			printf("\n%zu members, %s\n", m->n_members, b);
	}
}

int kc_cmd_inspect(const struct kc_args *ap, struct kc_error **err)
{
	const struct kc_args a = *ap;
	const char *image = a.pos[0];
	struct stat st;
	if (stat(image, &st) < 0)
		return kc_error_errno(err, errno == EACCES ? KC_EXIT_PERM : KC_EXIT_NOENT, errno, "cannot open image '%s'",
				      image);
	struct kc_manifest m;
	kc_manifest_init(&m);
	int rc = -1;
	bool is_file = S_ISREG(st.st_mode);
	if (is_file) {
		if (kc_archive_read_manifest(image, &m, err) < 0)
			goto out;
		if (a.verify) {
			struct kc_manifest vm;
			kc_manifest_init(&vm);
			struct kc_archive_stats vs = {0};
			struct kc_progress *vp = kc_progress_start("verify", kc_archive_stats_done, &vs);
			uint64_t total = 0;
			for (size_t i = 0; i < m.n_members; i++)
				total += m.members[i].size;
			kc_progress_total(vp, total);
			int vr = kc_archive_verify_stats(image, &vm, &vs, err);
			kc_progress_stop(vp);
			kc_manifest_free(&vm);
			if (vr < 0)
				goto out;
		}
	} else if (S_ISDIR(st.st_mode)) {
		if (kc_manifest_read(image, &m, err) < 0)
			goto out;
		if (a.verify && !m.n_members) {
			kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has no checksums to verify (dumped by kcheckpoint 0.1)",
				     image);
			goto out;
		}
		if (a.verify && kc_images_verify(image, &m, (unsigned)sysconf(_SC_NPROCESSORS_ONLN), NULL, err) < 0)
			goto out;
	} else {
		kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is neither an archive nor an images dir", image);
		goto out;
	}
	if (a.json) {
		_cleanup_free_ char *s = kc_manifest_to_string(&m);
		json_object *o = json_tokener_parse(s);
		json_object_object_add(o, "archive_bytes", json_object_new_uint64(is_file ? (uint64_t)st.st_size : 0));
		if (a.verify)
			json_object_object_add(o, "verified", json_object_new_boolean(true));
		kc_cli_print_json(o);
	} else {
		print_human(&m, image, is_file ? (uint64_t)st.st_size : 0);
		if (a.verify)
			printf("verified: every member matches its size and sha256 tree hash\n");
	}
	rc = 0;
out:
	kc_manifest_free(&m);
	return rc;
}
