/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CONTAINERD_H
#define KC_CONTAINERD_H

#include <stdbool.h>
#include <sys/types.h>

#include "kc/criu.h"
#include "kc/error.h"

#define KC_CONTAINERD_DEFAULT_ADDRESS "/run/containerd/containerd.sock"
#define KC_CONTAINERD_DEFAULT_NAMESPACE "k8s.io"

struct kc_containerd_opts {
	const char *address;      /* NULL: $KCHECKPOINT_CONTAINERD_ADDRESS, else default */
	const char *ns;           /* NULL: $KCHECKPOINT_CONTAINERD_NAMESPACE, else default */
	const char *container_id; /* dump: the container; restore: the id to create */
	bool with_rw_layer;       /* dump: put the rw layer into the image */
};

/*
 * The containerd "CPU stage": fills *cpu with an ops table whose dump
 * checkpoints the container's task through containerd (runc + CRIU
 * underneath) into the images dir, along with what is needed to recreate
 * the container (spec, image ref, snapshot key; containerd.json), and
 * whose restore recreates container and task from it.  finish / resume /
 * discard act on the task through containerd.
 *
 * For dump, *task_pid gets the task's init pid (the GPU stage runs on the
 * process tree below it).  Errors: KC_EXIT_NOENT (socket, container, task
 * missing), KC_EXIT_PERM, KC_EXIT_CONTAINERD (not answering, refused;
 * containerd's own message quoted).
 */
int kc_containerd_open_dump(const struct kc_containerd_opts *o, struct kc_criu *cpu,
			    pid_t *task_pid, struct kc_error **err);
int kc_containerd_open_restore(const struct kc_containerd_opts *o, struct kc_criu *cpu,
			       struct kc_error **err);
void kc_containerd_close(struct kc_criu *cpu);

#endif
