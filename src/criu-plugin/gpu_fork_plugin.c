/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kcheckpoint's CRIU plugin: processes forked after CUDA init.
 *
 * A child that a CUDA program forks (PyTorch's DataLoader workers,
 * inductor's compile workers, any fork() after cuInit) inherits the
 * parent's shared mappings of /dev/nvidiactl, /dev/nvidia<N> and
 * /dev/nvidia-uvm and its open descriptors of them, but it holds no CUDA
 * context: the driver refuses CUDA in a forked child, and its checkpoint
 * API answers "not initialized" for it.  The parent's GPU checkpoint
 * releases the parent's own maps and files; the child's stay, and CRIU
 * refuses them ("Can't handle non-regular mapping", "Can't dump file ...
 * chr 195:255").
 *
 * Such a child never uses them, so this plugin dumps them as nothing and
 * restores them as harmless stand-ins:
 *  - a device mapping comes back as a shared mapping of /dev/zero of the
 *    same size, address and protection (zero pages, allocated only if
 *    touched; a later dump of the restored process sees plain shared
 *    anonymous memory);
 *  - a device descriptor comes back as /dev/null under the same number.
 *
 * kcheckpoint loads this plugin (criu --libdir) only after it has checked
 * the tree: every process that still has such a mapping or descriptor when
 * CRIU runs is one without a CUDA context that was forked from a CUDA
 * process of the tree (see src/core/gpu_devices.c).  Anything else, a
 * graphics process, say, is refused before anything is frozen.
 *
 * Which devices: include/kc/gpu_device.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "criu-plugin.h"
#include "kc/gpu_device.h"

/* The descriptor ids this plugin dumped, one per line, in the images dir:
 * at restore, CRIU asks every plugin about every external file. */
#define FDS_FILE "kcheckpoint-gpu-fds.txt"

static int gpu_fork_init(int stage)
{
	return 0;
}

static void gpu_fork_exit(int stage, int ret)
{
}

CR_PLUGIN_REGISTER("kcheckpoint_gpu_fork", gpu_fork_init, gpu_fork_exit)

/* Dump: a mapping of a GPU device is ours; CRIU records only its place. */
static int handle_device_vma(int fd, const struct stat *st)
{
	return kc_is_gpu_device(st) ? 0 : -ENOTSUP;
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__HANDLE_DEVICE_VMA, handle_device_vma)

/* Restore: every mapping CRIU flagged at dump was ours (no other plugin is
 * in kcheckpoint's libdir).  CRIU takes over the descriptor. */
static int update_vma_map(const char *path, const uint64_t addr, const uint64_t old_pgoff, uint64_t *new_pgoff,
			  int *plugin_fd)
{
	int fd = open("/dev/zero", O_RDWR);
	if (fd < 0)
		return -errno;
	*new_pgoff = 0;
	*plugin_fd = fd;
	return 1;
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__UPDATE_VMA_MAP, update_vma_map)

static int dump_ext_file(int fd, int id)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !kc_is_gpu_device(&st))
		return -ENOTSUP;
	int dir = criu_get_image_dir();
	int out = openat(dir, FDS_FILE, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (out < 0)
		return -errno;
	char line[32];
	int n = snprintf(line, sizeof(line), "%d\n", id);
	int rc = write(out, line, (size_t)n) == n ? 0 : -EIO;
	close(out);
	return rc;
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__DUMP_EXT_FILE, dump_ext_file)

static bool dumped_by_us(int id)
{
	int dir = criu_get_image_dir();
	int fd = openat(dir, FDS_FILE, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return false;
	}
	bool found = false;
	int v;
	while (!found && fscanf(f, "%d", &v) == 1)
		found = v == id;
	fclose(f);
	return found;
}

/* Returns the new descriptor; CRIU moves it to the dumped number. */
static int restore_ext_file(int id)
{
	if (!dumped_by_us(id))
		return -ENOTSUP;
	int fd = open("/dev/null", O_RDWR);
	return fd < 0 ? -errno : fd;
}
CR_PLUGIN_REGISTER_HOOK(CR_PLUGIN_HOOK__RESTORE_EXT_FILE, restore_ext_file)
