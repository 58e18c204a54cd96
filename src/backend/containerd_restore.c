/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd, restore: the container and its task recreated from an image
 * (the other half of kc_containerd_ops, containerd.c).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "containerd_int.h"
#include "kc/containerd.h"
#include "kc/grpc.h"
#include "kc/util.h"

#include "kc_containers.pb-c.h"
#include "kc_misc.pb-c.h"
#include "kc_snapshots.pb-c.h"
#include "kc_tasks.pb-c.h"
#include "kc_types.pb-c.h"

/* ---- restore -------------------------------------------------------- */

int kc_ctrd_lease_create(struct ctrd *c, char **id, struct kc_error **err)
{
	/* Objects we create are unreferenced for a moment (a snapshot before
	 * its container exists); the lease keeps containerd's GC off them,
	 * and expires by itself should we die before deleting it. */
	char expire[32];
	time_t t = time(NULL) + 3600;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(expire, sizeof(expire), "%Y-%m-%dT%H:%M:%SZ", &tm);
	Kc__Misc__CreateLeaseRequest__LabelsEntry le = KC__MISC__CREATE_LEASE_REQUEST__LABELS_ENTRY__INIT;
	le.key = "containerd.io/gc.expire";
	le.value = expire;
	Kc__Misc__CreateLeaseRequest__LabelsEntry *lp = &le;
	Kc__Misc__CreateLeaseRequest r = KC__MISC__CREATE_LEASE_REQUEST__INIT;
	_cleanup_free_ char *want = kc_xasprintf("kcheckpoint-%s-%d", c->id, (int)getpid());
	r.id = want;
	r.n_labels = 1;
	r.labels = &lp;
	Kc__Misc__CreateLeaseResponse *resp = NULL;
	if (kc_ctrd_call(c, SVC_LEASES "Create", &r, &kc__misc__create_lease_response__descriptor, &resp,
		 T_DEFAULT, err) < 0)
		return kc_error_prefix(err, "cannot create a containerd lease");
	*id = kc_xstrdup(resp->lease && resp->lease->id ? resp->lease->id : want);
	free_msg(resp);
	return 0;
}

void kc_ctrd_lease_delete(struct ctrd *c, const char *id)
{
	kc_grpc_set_lease(c->g, NULL);
	Kc__Misc__DeleteLeaseRequest r = KC__MISC__DELETE_LEASE_REQUEST__INIT;
	r.id = (char *)id;
	struct kc_error *e = NULL;
	kc_ctrd_call(c, SVC_LEASES "Delete", &r, NULL, NULL, T_DEFAULT, &e);
	kc_error_free(e); /* it expires by itself */
}

static int prepare_snapshot(struct ctrd *c, Kc__Types__Mount ***mounts, size_t *n_mounts,
			    Kc__Snapshots__PrepareSnapshotResponse **keep, struct kc_error **err)
{
	struct kc_ctrd_saved *sv = c->saved;
	char *parent = NULL;
	struct kc_error *e = NULL;
	if (sv->snapshot_parent && *sv->snapshot_parent) {
		/* the image's unpacked layers: without them there is no rootfs */
		if (kc_ctrd_snapshot_parent(c, sv->snapshotter, sv->snapshot_parent, &parent, &e) < 0) {
			if (kc_ctrd_is_code(e, KC_GRPC_NOT_FOUND)) {
				kc_error_free(e);
				return kc_error_set(err, KC_EXIT_NOENT, KC_GRPC_NOT_FOUND,
						    "the layers of image '%s' are not unpacked in snapshotter "
						    "'%s' (snapshot '%s'); pull the image first",
						    sv->image ? sv->image : "?", sv->snapshotter,
						    sv->snapshot_parent);
			}
			kc_error_propagate(err, e);
			return -1;
		}
		free(parent);
	}
	Kc__Snapshots__PrepareSnapshotRequest r = KC__SNAPSHOTS__PREPARE_SNAPSHOT_REQUEST__INIT;
	r.snapshotter = sv->snapshotter;
	r.key = c->id;
	r.parent = sv->snapshot_parent ? sv->snapshot_parent : "";
	if (kc_ctrd_call(c, SVC_SNAPSHOTS "Prepare", &r, &kc__snapshots__prepare_snapshot_response__descriptor,
		 keep, T_DEFAULT, &e) < 0) {
		if (kc_ctrd_is_code(e, KC_GRPC_ALREADY_EXISTS)) {
			kc_error_free(e);
			return kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_ALREADY_EXISTS,
					    "snapshot '%s' already exists in snapshotter '%s'; "
					    "remove it or restore under another container id",
					    c->id, sv->snapshotter);
		}
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot prepare the rootfs snapshot");
	}
	c->made_snapshot = true;
	c->snapshotter = kc_xstrdup(sv->snapshotter);
	c->snapshot_key = kc_xstrdup(c->id);
	*mounts = (*keep)->mounts;
	*n_mounts = (*keep)->n_mounts;
	return 0;
}

static int create_container(struct ctrd *c, struct kc_error **err)
{
	struct kc_ctrd_saved *sv = c->saved;
	Kc__Containers__Container ct = KC__CONTAINERS__CONTAINER__INIT;
	Kc__Containers__Container__Runtime rt = KC__CONTAINERS__CONTAINER__RUNTIME__INIT;
	Kc__Types__Any spec = KC__TYPES__ANY__INIT;
	_cleanup_free_ char *spec_json = kc_ctrd_spec_for(sv, c->id);

	ct.id = c->id;
	ct.image = sv->image ? sv->image : "";
	rt.name = sv->runtime_name;
	rt.options = sv->runtime_options;
	ct.runtime = &rt;
	spec.type_url = sv->spec_type_url;
	spec.value.data = (uint8_t *)spec_json;
	spec.value.len = strlen(spec_json);
	ct.spec = &spec;
	ct.snapshotter = c->made_snapshot ? sv->snapshotter : "";
	ct.snapshot_key = c->made_snapshot ? c->id : "";
	ct.n_labels = sv->n_labels;
	ct.labels = sv->labels;
	ct.n_extensions = sv->n_extensions;
	ct.extensions = sv->extensions;
	ct.sandbox = sv->sandbox ? sv->sandbox : "";

	Kc__Containers__CreateContainerRequest r = KC__CONTAINERS__CREATE_CONTAINER_REQUEST__INIT;
	r.container = &ct;
	Kc__Containers__CreateContainerResponse *resp = NULL;
	struct kc_error *e = NULL;
	if (kc_ctrd_call(c, SVC_CONTAINERS "Create", &r, &kc__containers__create_container_response__descriptor,
		 &resp, T_DEFAULT, &e) < 0) {
		if (kc_ctrd_is_code(e, KC_GRPC_ALREADY_EXISTS)) {
			kc_error_free(e);
			return kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_ALREADY_EXISTS,
					    "container '%s' already exists in namespace '%s'", c->id,
					    c->ns);
		}
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot create container '%s'", c->id);
	}
	free_msg(resp);
	c->made_container = true;
	return 0;
}

/* Keeps what the stdio of the dumped task pointed at when it can outlive
 * the client that set it up (files, logging binaries); FIFOs of a gone
 * `ctr run` cannot be reopened, so those become /dev/null. */
static const char *keep_io(const char *uri)
{
	if (uri && (strncmp(uri, "file://", 7) == 0 || strncmp(uri, "binary://", 9) == 0))
		return uri;
	return "";
}

static int create_task(struct ctrd *c, const char *dir, Kc__Types__Mount **mounts, size_t n_mounts,
		       struct kc_error **err)
{
	struct kc_ctrd_saved *sv = c->saved;
	/*
	 * Task options replace the container's runtime options in the shim,
	 * so they must carry those too.  Protobuf merges concatenated
	 * messages field by field: the saved options followed by our two
	 * fields is the saved options with the CRIU paths set, unknown fields
	 * included.
	 */
	Kc__Types__RuncOptions ro = KC__TYPES__RUNC_OPTIONS__INIT;
	ro.criu_image_path = (char *)dir;
	ro.criu_work_path = (char *)dir;
	size_t add = protobuf_c_message_get_packed_size(&ro.base);
	size_t base = 0;
	const uint8_t *base_data = NULL;
	if (sv->runtime_options && sv->runtime_options->type_url &&
	    strcmp(sv->runtime_options->type_url, TYPE_RUNC_OPTIONS) == 0) {
		base = sv->runtime_options->value.len;
		base_data = sv->runtime_options->value.data;
	}
	_cleanup_free_ uint8_t *val = kc_xmalloc(base + add + 1);
	if (base)
		memcpy(val, base_data, base);
	protobuf_c_message_pack(&ro.base, val + base);
	Kc__Types__Any any = KC__TYPES__ANY__INIT;
	any.type_url = TYPE_RUNC_OPTIONS;
	any.value.data = val;
	any.value.len = base + add;

	Kc__Tasks__CreateTaskRequest r = KC__TASKS__CREATE_TASK_REQUEST__INIT;
	r.container_id = c->id;
	r.rootfs = mounts;
	r.n_rootfs = n_mounts;
	r.stdin = "";
	r.stdout = (char *)keep_io(sv->task_stdout);
	r.stderr = (char *)keep_io(sv->task_stderr);
	r.terminal = false;
	r.options = &any;
	Kc__Tasks__CreateTaskResponse *resp = NULL;
	struct kc_error *e = NULL;
	if (kc_ctrd_call(c, SVC_TASKS "Create", &r, &kc__tasks__create_task_response__descriptor, &resp,
		 T_NONE, &e) < 0) {
		_cleanup_free_ char *log = kc_ctrd_take_log(dir, "restore.log", "criu-restore.log");
		return kc_ctrd_criu_failure(err, e, "create the task of", c->id, log);
	}
	free_msg(resp);
	c->made_task = true;
	return 0;
}

static int start_task(struct ctrd *c, const char *dir, pid_t *pid, struct kc_error **err)
{
	Kc__Tasks__StartRequest r = KC__TASKS__START_REQUEST__INIT;
	r.container_id = c->id;
	Kc__Tasks__StartResponse *resp = NULL;
	struct kc_error *e = NULL;
	int sr = kc_ctrd_call(c, SVC_TASKS "Start", &r, &kc__tasks__start_response__descriptor, &resp,
		      T_NONE, &e);
	_cleanup_free_ char *log = kc_ctrd_take_log(dir, "restore.log", "criu-restore.log");
	if (sr < 0)
		return kc_ctrd_criu_failure(err, e, "restore", c->id, log);
	*pid = (pid_t)resp->pid;
	free_msg(resp);
	return 0;
}

/* Removes whatever restore created, newest first. */
static int undo_restore(struct ctrd *c, struct kc_error **err)
{
	int rc = 0;
	if (c->made_task) {
		if (kc_ctrd_kill_task(c, err) < 0)
			rc = -1;
		else
			c->made_task = false;
	}
	if (c->made_container && rc == 0) {
		if (kc_ctrd_delete_container(c, err) < 0)
			rc = -1;
		else
			c->made_container = false;
	}
	if (c->made_snapshot && rc == 0) {
		if (kc_ctrd_remove_snapshot(c, c->snapshotter, c->snapshot_key, err) < 0)
			rc = -1;
		else
			c->made_snapshot = false;
	}
	return rc;
}

/* The id to restore as must be free; checked when opening already, so
 * the error comes before any waiting, and again right before creating. */
int kc_ctrd_check_id_free(struct ctrd *c, struct kc_error **err)
{
	Kc__Containers__GetContainerResponse *existing = NULL;
	struct kc_error *e = NULL;
	if (kc_ctrd_get_container(c, c->id, &existing, &e) == 0) {
		free_msg(existing);
		return kc_error_set(err, KC_EXIT_CONTAINERD, KC_GRPC_ALREADY_EXISTS,
				    "container '%s' already exists in namespace '%s'; delete it or "
				    "restore under another id",
				    c->id, c->ns);
	}
	/* not found is what we want; a missing namespace is fine too, as
	 * containerd creates namespaces on first use */
	if (e->exit_code != KC_EXIT_NOENT) {
		kc_error_propagate(err, e);
		return -1;
	}
	kc_error_free(e);
	return 0;
}

int kc_ctrd_op_restore(void *h, const struct kc_criu_opts *o, const char *images_dir,
		      pid_t *root_pid, struct kc_error **err)
{
	struct ctrd *c = h;
	char dir[PATH_MAX];
	if (!realpath(images_dir, dir))
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot resolve '%s'", images_dir);

	kc_ctrd_saved_free(c->saved);
	c->saved = NULL;
	if (kc_ctrd_saved_read(dir, &c->saved, err) < 0)
		return -1;
	if (!kc_ctrd_runtime_is_runc(c->saved->runtime_name))
		return kc_error_set(err, KC_EXIT_IMAGE, 0,
				    "the image was made on runtime '%s'; only %s can restore it",
				    c->saved->runtime_name, RUNC_V2);

	if (kc_ctrd_check_id_free(c, err) < 0)
		return -1;

	_cleanup_free_ char *lease = NULL;
	if (kc_ctrd_lease_create(c, &lease, err) < 0)
		return -1;
	kc_grpc_set_lease(c->g, lease);

	Kc__Snapshots__PrepareSnapshotResponse *prep = NULL;
	Kc__Types__Mount **mounts = NULL;
	size_t n_mounts = 0;
	pid_t pid = -1;
	int rc = -1;
	if (c->saved->snapshot_key && *c->saved->snapshot_key &&
	    prepare_snapshot(c, &mounts, &n_mounts, &prep, err) < 0)
		goto fail;
	if (c->saved->rw.file) {
		if (!c->made_snapshot) {
			kc_error_set(err, KC_EXIT_IMAGE, 0, "the image has a rw layer but no rootfs snapshot");
			goto fail;
		}
		_cleanup_free_ char *tag = kc_xasprintf("%s-%d", c->id, (int)getpid());
		if (kc_ctrd_rw_apply(c->g, dir, &c->saved->rw, tag, mounts, n_mounts, err) < 0)
			goto fail;
	}
	if (create_container(c, err) < 0)
		goto fail;
	if (create_task(c, dir, mounts, n_mounts, err) < 0)
		goto fail;
	if (start_task(c, dir, &pid, err) < 0)
		goto fail;
	c->restored_pid = pid;
	free(c->now);
	c->now = NULL;
	c->n_now = 0;
	if (kc_ctrd_list_procs(c, pid, &c->now, &c->n_now, err) < 0)
		goto fail;
	*root_pid = pid;
	rc = 0;
	goto out;
fail: {
	struct kc_error *ue = NULL;
	if (undo_restore(c, &ue) < 0) {
		kc_error_append(err, "and removing the half-restored container failed (%s)", ue->msg);
		(*err)->exit_code = KC_EXIT_ROLLBACK;
	}
	kc_error_free(ue);
}
out:
	if (prep)
		free_msg(prep);
	kc_ctrd_lease_delete(c, lease);
	return rc;
}

int kc_ctrd_op_discard(void *h, pid_t root_pid, struct kc_error **err)
{
	struct ctrd *c = h;
	if (undo_restore(c, err) < 0)
		return kc_error_prefix(err, "cannot remove restored container '%s'", c->id);
	c->restored_pid = 0;
	return 0;
}

pid_t kc_ctrd_op_restored_pid(void *h, pid_t dumped)
{
	struct kc_criu cpu = {.ops = &kc_containerd_ops, .h = h};
	return kc_containerd_restored_pid(&cpu, dumped);
}

