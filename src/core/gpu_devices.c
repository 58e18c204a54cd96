/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Who in the tree still holds a GPU device, and may it.
 *
 * A CUDA process gives up every /dev/nvidia* mapping and descriptor when
 * the driver checkpoints it.  A child forked after CUDA init (DataLoader
 * and compile workers) has none of its own, but keeps the ones it
 * inherited; kcheckpoint's CRIU plugin dumps those as nothing and restores
 * stand-ins (src/criu-plugin/).  That is right only for such children, so
 * the tree is checked twice:
 *  - before anything is locked: a process with GPU devices but no CUDA
 *    context must descend from a CUDA process of the tree, and the plugin
 *    must be there;
 *  - after the GPU checkpoint, before CRIU: no CUDA process may still hold
 *    one (NVML or a graphics API would otherwise come back as stand-ins).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kc/gpu_device.h"
#include "kc/util.h"
#include "orchestrator_int.h"

/* Device files only: sockets, pipes, /dev/shm, /dev/null and the like
 * are not worth a stat.  /dev/zero is CRIU's own business. */
static bool maybe_device(const char *path)
{
	return !strncmp(path, "/dev/", 5) && strncmp(path, "/dev/shm/", 9) && strcmp(path, "/dev/zero") &&
	       strcmp(path, "/dev/null") && strncmp(path, "/dev/pts/", 9);
}

static void note(struct kc_gpu_dev_use *u, const char *path)
{
	if (!u->example[0])
		snprintf(u->example, sizeof(u->example), "%.255s", path);
}

/* Mappings: the path column of /proc/<pid>/maps, the file itself through
 * map_files (right also in another mount namespace). */
struct maps_arg {
	pid_t pid;
	struct kc_gpu_dev_use *u;
};

static int scan_map(const struct kc_map *m, void *arg)
{
	struct maps_arg *a = arg;
	if (m->name[0] != '/' || !maybe_device(m->name))
		return 0;
	char link[96];
	struct stat st;
	snprintf(link, sizeof(link), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)a->pid, m->lo, m->hi);
	if (stat(link, &st) == 0 && kc_is_gpu_device(&st)) {
		a->u->maps++;
		note(a->u, m->name);
	}
	return 0;
}

static void scan_maps(pid_t pid, struct kc_gpu_dev_use *u)
{
	struct maps_arg a = {pid, u};
	kc_pid_maps_each(pid, scan_map, &a);
}

static void note_fd(int fd, const char *link, const char *target, void *arg)
{
	struct kc_gpu_dev_use *u = arg;
	struct stat st;
	if (maybe_device(target) && stat(link, &st) == 0 && kc_is_gpu_device(&st)) {
		u->fds++;
		note(u, target);
	}
}

void kc_gpu_dev_scan(pid_t pid, struct kc_gpu_dev_use *u)
{
	memset(u, 0, sizeof(*u));
	scan_maps(pid, u);
	kc_pid_each_fd(pid, note_fd, u);
}

/* The nearest ancestor in the manifest that is a CUDA process. */
static bool cuda_ancestor(const struct kc_manifest *m, size_t i)
{
	pid_t ppid = m->procs[i].ppid;
	for (size_t hops = 0; hops < m->n_procs && ppid > 0; hops++) {
		size_t j = 0;
		while (j < m->n_procs && m->procs[j].pid != ppid)
			j++;
		if (j == m->n_procs)
			return false;
		if (m->procs[j].cuda)
			return true;
		ppid = m->procs[j].ppid;
	}
	return false;
}

int kc_gpu_dev_preflight(struct kc_manifest *m, bool have_plugin, struct kc_error **err)
{
	const char *bad;
	if (!kc_gpu_devices_env_ok(&bad))
		return kc_error_set(err, KC_EXIT_USAGE, 0, "KCHECKPOINT_GPU_DEVICES: '%s' is not a list of [b|c]MAJ:MIN",
				    bad);
	for (size_t i = 0; i < m->n_procs; i++) {
		struct kc_manifest_proc *p = &m->procs[i];
		if (p->cuda)
			continue; /* its GPU state is the driver's to checkpoint */
		struct kc_gpu_dev_use u;
		kc_gpu_dev_scan(p->pid, &u);
		if (!u.maps && !u.fds)
			continue;
		if (!cuda_ancestor(m, i))
			return kc_error_set(err, KC_EXIT_GPU, 0,
					    "pid %d ('%s') uses the GPU device '%s' without a CUDA context, and no CUDA "
					    "process of the tree forked it: only CUDA state can be checkpointed",
					    (int)p->pid, p->comm, u.example);
		if (!have_plugin) {
			kc_error_set(err, KC_EXIT_GPU, 0,
				     "pid %d ('%s') was forked after CUDA init and still maps '%s', which CRIU "
				     "cannot dump without kcheckpoint's CRIU plugin",
				     (int)p->pid, p->comm, u.example);
			return kc_error_set_hint(err, "install the plugin (KCHECKPOINT_CRIU_LIBDIR in kcheckpoint(1)), or "
						      "start workers with the spawn or forkserver method");
		}
		p->forked_after_cuda = true;
	}
	return 0;
}

int kc_gpu_dev_after_checkpoint(const struct kc_manifest *m, struct kc_error **err)
{
	for (size_t i = 0; i < m->n_procs; i++) {
		const struct kc_manifest_proc *p = &m->procs[i];
		if (!p->cuda)
			continue;
		struct kc_gpu_dev_use u;
		kc_gpu_dev_scan(p->pid, &u);
		if (u.maps || u.fds)
			return kc_error_set(err, KC_EXIT_GPU, 0,
					    "pid %d ('%s') still holds '%s' (%u mappings, %u descriptors) after its GPU "
					    "checkpoint: something besides CUDA (NVML, graphics) uses the GPU, which "
					    "cannot be checkpointed",
					    (int)p->pid, p->comm, u.example, u.maps, u.fds);
	}
	return 0;
}
