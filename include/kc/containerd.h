/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CONTAINERD_H
#define KC_CONTAINERD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "kc/criu.h"
#include "kc/error.h"

#define KC_CONTAINERD_DEFAULT_ADDRESS "/run/containerd/containerd.sock"
#define KC_CONTAINERD_DEFAULT_NAMESPACE "k8s.io"
/* What dump writes into the images dir for restore to recreate the
 * container from (spec, image, snapshot parent, runtime, pids). */
#define KC_CONTAINERD_JSON "containerd.json"

struct kc_containerd_opts {
	/* NULL: $KCHECKPOINT_CONTAINERD_ADDRESS, $CONTAINERD_ADDRESS, default */
	const char *address;
	/* NULL: $KCHECKPOINT_CONTAINERD_NAMESPACE, $CONTAINERD_NAMESPACE, default */
	const char *ns;
	const char *container_id; /* dump: the container; restore: the id to create */
	/* dump: the container's writable layer into the image (as podman and
	 * the kubelet do): KC_RW_AUTO when the container has a rootfs
	 * snapshot, KC_RW_YES or an error, KC_RW_NO (--ignore-rootfs) */
	enum { KC_RW_AUTO, KC_RW_YES, KC_RW_NO } rw_layer;
};

/*
 * The containerd "CPU stage": fills *cpu with an ops table whose dump
 * checkpoints the container's task through containerd (runc + CRIU
 * underneath) into the images dir, along with what is needed to recreate
 * the container (containerd.json), and whose restore recreates container
 * and task from it.
 *
 * Dump: ops->dump pauses the task (cgroup freezer), checkpoints it with
 * runc's "leave running", saves the rw layer when asked (rw-layer.tar, made
 * by containerd's differ) and writes containerd.json; the task stays
 * PAUSED.  ops->finish kills and deletes the task, deletes the container
 * and its snapshot; ops->resume resumes the task (rollback,
 * --leave-running).  The pid argument of dump and the pids of finish /
 * resume are not used: containerd addresses the task by container id.
 *
 * Restore: ops->restore creates the snapshot (applying the rw layer if
 * the image has one), container and task (the task restored from the
 * images by runc) and returns the task's init pid;
 * ops->discard kills and deletes all of that again.
 *
 * open_dump checks that the container exists and has a running (or
 * paused) task; *task_pid gets the task's init pid.
 *
 * Errors, one line each: KC_EXIT_NOENT (socket, namespace, container or
 * task missing), KC_EXIT_PERM (socket not accessible), KC_EXIT_CONTAINERD
 * (not answering, refused: containerd's own message quoted), KC_EXIT_CRIU
 * (the checkpoint or restore failed inside CRIU: its log's last error
 * lines), KC_EXIT_IMAGE (containerd.json missing or malformed).
 */
int kc_containerd_open_dump(const struct kc_containerd_opts *o, struct kc_criu *cpu,
			    pid_t *task_pid, struct kc_error **err);
int kc_containerd_open_restore(const struct kc_containerd_opts *o, struct kc_criu *cpu,
			       struct kc_error **err);
void kc_containerd_close(struct kc_criu *cpu);

/* True when cpu was set up by one of the open functions above. */
bool kc_containerd_is(const struct kc_criu *cpu);

/*
 * Host pids of all the task's processes now (Tasks.ListPids), init first,
 * then ascending; exec'd processes included, which the process tree of
 * the init pid misses.  After open_dump, or after a successful restore.
 * Caller frees *pids.
 */
int kc_containerd_list_pids(struct kc_criu *cpu, pid_t **pids, size_t *n, struct kc_error **err);

/*
 * After a successful restore: the host pid now of the process that had
 * host pid `dumped` when the image was made, matched through its pid in
 * the container's pid namespace (recorded in containerd.json).  -1 when
 * the image does not know that pid or the process is not there.
 */
pid_t kc_containerd_restored_pid(struct kc_criu *cpu, pid_t dumped);

/*
 * A small description for the manifest's "containerd" section (json-c
 * object, caller owns): id, namespace, image, snapshotter, runtime,
 * containerd version.  After open_dump / a successful restore; NULL
 * otherwise.
 */
void *kc_containerd_manifest_section(struct kc_criu *cpu);

/* Address and namespace the options resolve to (env, defaults). */
const char *kc_containerd_address(const struct kc_containerd_opts *o);
const char *kc_containerd_namespace(const struct kc_containerd_opts *o);

#endif
