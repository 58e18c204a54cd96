/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The containerd CPU stage: checkpoint and restore a container's task
 * through containerd's own API (runc and CRIU underneath), so the node's
 * containerd keeps knowing about everything that runs.
 *
 * Keeping rollback possible: dump pauses the task (Tasks.Pause, the cgroup
 * freezer) and then checkpoints it with runc's "leave running"
 * (CheckpointOptions.exit = false).  CRIU restores the freezer state it
 * found, so the task stays frozen after the checkpoint: nothing in the
 * container runs between the checkpoint and our decision, exactly like
 * the SIGSTOPped tree of a plain CRIU dump.  Rollback and --leave-running
 * are then a Tasks.Resume; finish is Kill + Delete.  Checkpointing with
 * exit = true instead would make rollback a restore, which can fail, and
 * letting the task run on unfrozen would let it act (write files, answer
 * requests) after the state we saved.
 *
 * CRIU writes its images straight into the kcheckpoint images dir
 * (CheckpointOptions.image_path, honoured by containerd >= 1.5 for the
 * runc shims), and restore hands that dir to runc the same way
 * (runc Options.criu_image_path on Tasks.Create); nothing goes through
 * the content store.
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

int kc_ctrd_call(struct ctrd *c, const char *path, const void *req,
		const ProtobufCMessageDescriptor *desc, void *resp, unsigned timeout_ms,
		struct kc_error **err)
{
	return kc_grpc_unary(c->g, path, req, desc, (ProtobufCMessage **)resp, timeout_ms, err);
}


bool kc_ctrd_is_code(const struct kc_error *e, int code)
{
	return e && e->cause == code && (e->exit_code == KC_EXIT_NOENT ||
					 e->exit_code == KC_EXIT_CONTAINERD ||
					 e->exit_code == KC_EXIT_PERM);
}

/* ---- options and connection ---------------------------------------- */

static const char *env_or(const char *a, const char *b, const char *def)
{
	const char *v = getenv(a);
	if (v && *v)
		return v;
	v = getenv(b);
	if (v && *v)
		return v;
	return def;
}

const char *kc_containerd_address(const struct kc_containerd_opts *o)
{
	if (o && o->address && *o->address)
		return o->address;
	return env_or("KCHECKPOINT_CONTAINERD_ADDRESS", "CONTAINERD_ADDRESS",
		      KC_CONTAINERD_DEFAULT_ADDRESS);
}

const char *kc_containerd_namespace(const struct kc_containerd_opts *o)
{
	if (o && o->ns && *o->ns)
		return o->ns;
	return env_or("KCHECKPOINT_CONTAINERD_NAMESPACE", "CONTAINERD_NAMESPACE",
		      KC_CONTAINERD_DEFAULT_NAMESPACE);
}

static void ctrd_free(struct ctrd *c)
{
	if (!c)
		return;
	kc_grpc_close(c->g);
	free(c->address);
	free(c->ns);
	free(c->id);
	free(c->version);
	if (c->got)
		free_msg(c->got);
	kc_ctrd_saved_free(c->saved);
	free(c->snapshotter);
	free(c->snapshot_key);
	free(c->now);
	free(c);
}

/* containerd ids: what its identifiers package accepts. */
static bool valid_id(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 76)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			     (ch >= '0' && ch <= '9');
		if (!alnum && !(i > 0 && i < n - 1 && (ch == '.' || ch == '_' || ch == '-')))
			return false;
	}
	return true;
}

static int ctrd_connect(const struct kc_containerd_opts *o, struct ctrd **out,
			struct kc_error **err)
{
	if (!o->container_id || !valid_id(o->container_id))
		return kc_error_set(err, KC_EXIT_USAGE, 0, "invalid container id '%s'",
				    o->container_id ? o->container_id : "");
	struct ctrd *c = kc_xcalloc(1, sizeof(*c));
	c->address = kc_xstrdup(kc_containerd_address(o));
	c->ns = kc_xstrdup(kc_containerd_namespace(o));
	c->id = kc_xstrdup(o->container_id);
	c->rw_layer = o->rw_layer;
	if (!valid_id(c->ns)) {
		kc_error_set(err, KC_EXIT_USAGE, 0, "invalid containerd namespace '%s'", c->ns);
		goto fail;
	}
	if (kc_grpc_open(c->address, c->ns, &c->g, err) < 0)
		goto fail;

	Kc__Types__Empty e = KC__TYPES__EMPTY__INIT;
	Kc__Misc__VersionResponse *v = NULL;
	if (kc_ctrd_call(c, SVC_VERSION "Version", &e, &kc__misc__version_response__descriptor, &v,
		 T_DEFAULT, err) < 0)
		goto fail;
	c->version = kc_xstrdup(v->version);
	free_msg(v);
	*out = c;
	return 0;
fail:
	ctrd_free(c);
	return -1;
}

/* A container NOT_FOUND says nothing of whether the namespace exists; an
 * operator who typed the wrong one wants to know.  (Namespaces.Get answers
 * for namespaces that do not exist, so look at the list.) */
static bool namespace_exists(struct ctrd *c)
{
	Kc__Misc__ListNamespacesRequest r = KC__MISC__LIST_NAMESPACES_REQUEST__INIT;
	Kc__Misc__ListNamespacesResponse *resp = NULL;
	struct kc_error *e = NULL;
	if (kc_ctrd_call(c, SVC_NAMESPACES "List", &r, &kc__misc__list_namespaces_response__descriptor,
		 &resp, T_DEFAULT, &e) < 0) {
		kc_error_free(e);
		return true; /* cannot tell: do not claim it is missing */
	}
	bool found = false;
	for (size_t i = 0; i < resp->n_namespaces && !found; i++)
		found = resp->namespaces[i]->name && strcmp(resp->namespaces[i]->name, c->ns) == 0;
	free_msg(resp);
	return found;
}

int kc_ctrd_get_container(struct ctrd *c, const char *id,
			 Kc__Containers__GetContainerResponse **out, struct kc_error **err)
{
	Kc__Containers__GetContainerRequest r = KC__CONTAINERS__GET_CONTAINER_REQUEST__INIT;
	r.id = (char *)id;
	struct kc_error *e = NULL;
	if (kc_ctrd_call(c, SVC_CONTAINERS "Get", &r, &kc__containers__get_container_response__descriptor,
		 out, T_DEFAULT, &e) == 0) {
		if (!(*out)->container) {
			free_msg(*out);
			*out = NULL;
			return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
					    "containerd returned no container for '%s'", id);
		}
		return 0;
	}
	if (kc_ctrd_is_code(e, KC_GRPC_NOT_FOUND)) {
		int cause = e->cause;
		kc_error_free(e);
		if (!namespace_exists(c))
			return kc_error_set(err, KC_EXIT_NOENT, cause,
					    "containerd namespace '%s' does not exist", c->ns);
		return kc_error_set(err, KC_EXIT_NOENT, cause,
				    "container '%s' not found in namespace '%s'", id, c->ns);
	}
	kc_error_propagate(err, e);
	return -1;
}

static const char *status_name(int s)
{
	switch (s) {
	case KC__TYPES__STATUS__CREATED:
		return "created";
	case KC__TYPES__STATUS__RUNNING:
		return "running";
	case KC__TYPES__STATUS__STOPPED:
		return "stopped";
	case KC__TYPES__STATUS__PAUSED:
		return "paused";
	case KC__TYPES__STATUS__PAUSING:
		return "pausing";
	default:
		return "unknown";
	}
}

static int get_task(struct ctrd *c, Kc__Tasks__GetResponse **out, struct kc_error **err)
{
	Kc__Tasks__GetRequest r = KC__TASKS__GET_REQUEST__INIT;
	r.container_id = c->id;
	struct kc_error *e = NULL;
	if (kc_ctrd_call(c, SVC_TASKS "Get", &r, &kc__tasks__get_response__descriptor, out, T_DEFAULT,
		 &e) < 0) {
		if (kc_ctrd_is_code(e, KC_GRPC_NOT_FOUND)) {
			kc_error_free(e);
			return kc_error_set(err, KC_EXIT_NOENT, KC_GRPC_NOT_FOUND,
					    "container '%s' has no task: it is not running", c->id);
		}
		kc_error_propagate(err, e);
		return -1;
	}
	if (!(*out)->process) {
		free_msg(*out);
		*out = NULL;
		return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
				    "containerd returned no task for '%s'", c->id);
	}
	return 0;
}

/* ---- small task operations ----------------------------------------- */

static int task_simple(struct ctrd *c, const char *method, struct kc_error **err)
{
	/* Pause, Resume and Delete requests all carry only container_id = 1. */
	Kc__Tasks__PauseTaskRequest r = KC__TASKS__PAUSE_TASK_REQUEST__INIT;
	r.container_id = c->id;
	_cleanup_free_ char *path = kc_xasprintf(SVC_TASKS "%s", method);
	return kc_ctrd_call(c, path, &r, NULL, NULL, T_DEFAULT, err);
}

static int task_kill(struct ctrd *c, int sig, struct kc_error **err)
{
	Kc__Tasks__KillRequest r = KC__TASKS__KILL_REQUEST__INIT;
	r.container_id = c->id;
	r.signal = (uint32_t)sig;
	r.all = true;
	return kc_ctrd_call(c, SVC_TASKS "Kill", &r, NULL, NULL, T_DEFAULT, err);
}

static int task_wait(struct ctrd *c, struct kc_error **err)
{
	Kc__Tasks__WaitRequest r = KC__TASKS__WAIT_REQUEST__INIT;
	r.container_id = c->id;
	Kc__Tasks__WaitResponse *resp = NULL;
	if (kc_ctrd_call(c, SVC_TASKS "Wait", &r, &kc__tasks__wait_response__descriptor, &resp,
		 EXIT_WAIT_MS, err) < 0)
		return -1;
	free_msg(resp);
	return 0;
}

/*
 * Kill the task (SIGKILL to all its processes), wait for it to exit and
 * delete it.  Killing a frozen task: the signal is pending when the
 * freezer lets go, so the processes die before running another
 * instruction; the resume is needed on cgroup v1, where frozen tasks do
 * not even die.
 */
int kc_ctrd_kill_task(struct ctrd *c, struct kc_error **err)
{
	struct kc_error *e = NULL;
	Kc__Tasks__GetResponse *task = NULL;
	if (get_task(c, &task, &e) < 0) {
		bool gone = e->exit_code == KC_EXIT_NOENT;
		if (!gone) {
			kc_error_propagate(err, e);
			return kc_error_prefix(err, "cannot end the task of container '%s'", c->id);
		}
		kc_error_free(e);
		c->we_paused = false;
		return 0; /* no task: nothing to kill */
	}
	int status = task->process->status;
	free_msg(task);

	/* A task whose start failed (a restore CRIU refused) is CREATED with
	 * no process: runc knows no container to signal, there is nothing to
	 * wait for, only the shim's state to delete. */
	if (status != KC__TYPES__STATUS__CREATED && status != KC__TYPES__STATUS__STOPPED) {
		if (task_kill(c, SIGKILL, &e) < 0) {
			/* "already finished" and friends: Wait/Delete decide */
			kc_error_free(e);
			e = NULL;
		}
		if (status != KC__TYPES__STATUS__RUNNING && task_simple(c, "Resume", &e) < 0) {
			kc_error_free(e);
			e = NULL;
		}
		c->we_paused = false;
		if (task_wait(c, err) < 0)
			return kc_error_prefix(err, "task of container '%s' did not exit", c->id);
	}
	if (task_simple(c, "Delete", &e) < 0 && !kc_ctrd_is_code(e, KC_GRPC_NOT_FOUND)) {
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot delete the task of container '%s'", c->id);
	}
	kc_error_free(e);
	return 0;
}

int kc_ctrd_remove_snapshot(struct ctrd *c, const char *snapshotter, const char *key,
			   struct kc_error **err)
{
	Kc__Snapshots__RemoveSnapshotRequest r = KC__SNAPSHOTS__REMOVE_SNAPSHOT_REQUEST__INIT;
	r.snapshotter = (char *)snapshotter;
	r.key = (char *)key;
	struct kc_error *e = NULL;
	if (kc_ctrd_call(c, SVC_SNAPSHOTS "Remove", &r, NULL, NULL, T_DEFAULT, &e) < 0 &&
	    !kc_ctrd_is_code(e, KC_GRPC_NOT_FOUND)) {
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot remove snapshot '%s'", key);
	}
	kc_error_free(e);
	return 0;
}

int kc_ctrd_delete_container(struct ctrd *c, struct kc_error **err)
{
	Kc__Containers__DeleteContainerRequest r = KC__CONTAINERS__DELETE_CONTAINER_REQUEST__INIT;
	r.id = c->id;
	struct kc_error *e = NULL;
	if (kc_ctrd_call(c, SVC_CONTAINERS "Delete", &r, NULL, NULL, T_DEFAULT, &e) < 0 &&
	    !kc_ctrd_is_code(e, KC_GRPC_NOT_FOUND)) {
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot delete container '%s'", c->id);
	}
	kc_error_free(e);
	return 0;
}

/* NSpid's last field: the pid inside the innermost pid namespace. */
static pid_t ns_pid_of(pid_t pid)
{
	_cleanup_free_ char *path = kc_xasprintf("/proc/%d/status", (int)pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "NSpid:", 6) != 0)
			continue;
		pid_t last = -1;
		char *save = NULL;
		for (char *t = strtok_r(line + 6, " \t\n", &save); t;
		     t = strtok_r(NULL, " \t\n", &save))
			last = (pid_t)atoi(t);
		return last;
	}
	return -1;
}

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
	return (x > y) - (x < y);
}

int kc_ctrd_list_procs(struct ctrd *c, pid_t init, struct kc_ctrd_proc **out, size_t *n,
		      struct kc_error **err)
{
	Kc__Tasks__ListPidsRequest r = KC__TASKS__LIST_PIDS_REQUEST__INIT;
	r.container_id = c->id;
	Kc__Tasks__ListPidsResponse *resp = NULL;
	if (kc_ctrd_call(c, SVC_TASKS "ListPids", &r, &kc__tasks__list_pids_response__descriptor, &resp,
		 T_DEFAULT, err) < 0)
		return kc_error_prefix(err, "cannot list the processes of container '%s'", c->id);
	_cleanup_free_ pid_t *pids = kc_xcalloc(resp->n_processes + 1, sizeof(pid_t));
	size_t k = 0;
	for (size_t i = 0; i < resp->n_processes; i++)
		if (resp->processes[i]->pid > 0 && (pid_t)resp->processes[i]->pid != init)
			pids[k++] = (pid_t)resp->processes[i]->pid;
	free_msg(resp);
	qsort(pids, k, sizeof(pid_t), cmp_pid);
	struct kc_ctrd_proc *p = kc_xcalloc(k + 1, sizeof(*p));
	size_t m = 0;
	if (init > 0) {
		p[m].pid = init;
		p[m++].ns_pid = ns_pid_of(init);
	}
	for (size_t i = 0; i < k; i++) {
		p[m].pid = pids[i];
		p[m++].ns_pid = ns_pid_of(pids[i]);
	}
	*out = p;
	*n = m;
	return 0;
}

/* ---- ops: version, check ------------------------------------------- */

static int op_version(void *h, const struct kc_criu_opts *o, char **version, struct kc_error **err)
{
	struct ctrd *c = h;
	/* runc picks CRIU from containerd's PATH; what we can name is containerd */
	*version = kc_xasprintf("containerd %s", c->version);
	return 0;
}

static int op_check(void *h, const struct kc_criu_opts *o, char **output, struct kc_error **err)
{
	struct ctrd *c = h;
	*output = kc_xasprintf("containerd %s answers on '%s' (namespace '%s')\n", c->version,
			       c->address, c->ns);
	return 0;
}

/* ---- dump ----------------------------------------------------------- */

bool kc_ctrd_runtime_is_runc(const char *name)
{
	return name && (strcmp(name, RUNC_V2) == 0 || strcmp(name, RUNC_V1) == 0);
}

int kc_containerd_open_dump(const struct kc_containerd_opts *o, struct kc_criu *cpu,
			    pid_t *task_pid, struct kc_error **err)
{
	struct ctrd *c = NULL;
	Kc__Tasks__GetResponse *task = NULL;
	if (ctrd_connect(o, &c, err) < 0)
		return -1;
	if (kc_ctrd_get_container(c, c->id, &c->got, err) < 0 || get_task(c, &task, err) < 0)
		goto fail;

	Kc__Containers__Container *ct = c->got->container;
	const char *rt = ct->runtime ? ct->runtime->name : NULL;
	if (!kc_ctrd_runtime_is_runc(rt)) {
		kc_error_set(err, KC_EXIT_CONTAINERD, 0,
			     "container '%s' runs on runtime '%s'; only %s can be checkpointed",
			     c->id, rt ? rt : "", RUNC_V2);
		goto fail;
	}
	Kc__Types__Process *p = task->process;
	if (p->status != KC__TYPES__STATUS__RUNNING && p->status != KC__TYPES__STATUS__PAUSED) {
		kc_error_set(err, KC_EXIT_NOENT, 0, "task of container '%s' is %s, not running",
			     c->id, status_name(p->status));
		goto fail;
	}
	if (p->terminal) {
		kc_error_set(err, KC_EXIT_CONTAINERD, 0,
			     "container '%s' has a terminal; containers with a tty cannot be checkpointed",
			     c->id);
		goto fail;
	}
	if (p->pid == 0) {
		kc_error_set(err, KC_EXIT_CONTAINERD, 0, "containerd reports no pid for the task of '%s'",
			     c->id);
		goto fail;
	}
	bool has_rootfs = ct->snapshot_key && *ct->snapshot_key;
	if (c->rw_layer == KC_RW_YES && !has_rootfs) {
		kc_error_set(err, KC_EXIT_USAGE, 0,
			     "container '%s' has no rootfs snapshot, so no rw layer to save", c->id);
		goto fail;
	}
	if (c->rw_layer == KC_RW_AUTO)
		c->rw_layer = has_rootfs ? KC_RW_YES : KC_RW_NO;
	c->task_pid = (pid_t)p->pid;
	free_msg(task);
	*task_pid = c->task_pid;
	cpu->ops = &kc_containerd_ops;
	cpu->h = c;
	return 0;
fail:
	if (task)
		free_msg(task);
	ctrd_free(c);
	return -1;
}

int kc_ctrd_snapshot_parent(struct ctrd *c, const char *snapshotter, const char *key, char **parent,
			   struct kc_error **err)
{
	Kc__Snapshots__StatSnapshotRequest r = KC__SNAPSHOTS__STAT_SNAPSHOT_REQUEST__INIT;
	r.snapshotter = (char *)snapshotter;
	r.key = (char *)key;
	Kc__Snapshots__StatSnapshotResponse *resp = NULL;
	if (kc_ctrd_call(c, SVC_SNAPSHOTS "Stat", &r, &kc__snapshots__stat_snapshot_response__descriptor,
		 &resp, T_DEFAULT, err) < 0)
		return kc_error_prefix(err, "cannot inspect the rootfs snapshot '%s' of container '%s'",
				       key, c->id);
	*parent = kc_xstrdup(resp->info && resp->info->parent ? resp->info->parent : "");
	free_msg(resp);
	return 0;
}

/* runc's work dir gets CRIU's log as dump.log / restore.log; the plain
 * CRIU backend names them criu-dump.log / criu-restore.log, so do we. */
char *kc_ctrd_take_log(const char *dir, const char *runc_name, const char *our_name)
{
	_cleanup_free_ char *from = kc_xasprintf("%s/%s", dir, runc_name);
	char *to = kc_xasprintf("%s/%s", dir, our_name);
	if (rename(from, to) < 0 && errno != ENOENT) {
		free(to);
		return NULL;
	}
	if (access(to, R_OK) < 0) {
		free(to);
		return NULL;
	}
	return to;
}

/*
 * A failed checkpoint or restore: containerd's message is long
 * ("runc did not terminate successfully: criu failed: type NOTIFY
 * errno 0 path= /run/.../criu-dump.log: unknown"); CRIU's own error lines
 * say what went wrong.  One line with both.
 */
int kc_ctrd_criu_failure(struct kc_error **err, struct kc_error *e, const char *what,
			const char *id, const char *log)
{
	_cleanup_free_ char *tail = log ? kc_criu_log_tail(log, 3) : NULL;
	if (tail && strstr(tail, "Error"))
		kc_error_set(err, KC_EXIT_CRIU, e ? e->cause : 0,
			     "cannot %s container '%s': CRIU failed: %s (log '%s')", what, id, tail, log);
	else
		kc_error_set(err, e ? e->exit_code : KC_EXIT_CONTAINERD, e ? e->cause : 0,
			     "cannot %s container '%s': %s", what, id, e ? e->msg : "failed");
	kc_error_free(e);
	return -1;
}


static int save_rw_layer(struct ctrd *c, const char *parent, const char *dir, struct kc_ctrd_rw *rw,
			 struct kc_error **err)
{
	Kc__Containers__Container *ct = c->got->container;
	_cleanup_free_ char *lease = NULL;
	if (kc_ctrd_lease_create(c, &lease, err) < 0)
		return -1;
	kc_grpc_set_lease(c->g, lease);
	_cleanup_free_ char *tag = kc_xasprintf("%s-%d", c->id, (int)getpid());
	int rc = kc_ctrd_rw_save(c->g, ct->snapshotter, ct->snapshot_key, parent, tag, dir, rw, err);
	kc_ctrd_lease_delete(c, lease);
	if (rc < 0)
		return kc_error_prefix(err, "rw layer of container '%s'", c->id);
	return 0;
}

static int op_dump(void *h, const struct kc_criu_opts *o, pid_t pid, const char *images_dir,
		   struct kc_error **err)
{
	struct ctrd *c = h;
	Kc__Containers__Container *ct = c->got->container;
	Kc__Tasks__GetResponse *task = NULL;
	_cleanup_free_ char *parent = NULL;
	_cleanup_free_ struct kc_ctrd_proc *procs = NULL;
	size_t n_procs = 0;
	struct kc_ctrd_rw rw = {0};
	struct kc_error *e = NULL;
	int rc = -1;
	/* before the first goto: out: frees them */
	_cleanup_free_ uint8_t *obuf = NULL;
	_cleanup_free_ char *log = NULL;

	char dir[PATH_MAX];
	if (!realpath(images_dir, dir))
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot resolve '%s'", images_dir);

	if (get_task(c, &task, err) < 0)
		return -1;
	int status = task->process->status;
	if (status != KC__TYPES__STATUS__RUNNING && status != KC__TYPES__STATUS__PAUSED) {
		kc_error_set(err, KC_EXIT_NOENT, 0, "task of container '%s' is %s, not running", c->id,
			     status_name(status));
		goto out;
	}

	if (ct->snapshot_key && *ct->snapshot_key &&
	    kc_ctrd_snapshot_parent(c, ct->snapshotter, ct->snapshot_key, &parent, err) < 0)
		goto out;
	if (kc_ctrd_list_procs(c, c->task_pid, &procs, &n_procs, err) < 0)
		goto out;

	if (status == KC__TYPES__STATUS__RUNNING) {
		if (task_simple(c, "Pause", err) < 0) {
			kc_error_prefix(err, "cannot pause container '%s'", c->id);
			goto out;
		}
		c->we_paused = true;
	}

	Kc__Types__RuncCheckpointOptions co = KC__TYPES__RUNC_CHECKPOINT_OPTIONS__INIT;
	co.exit = false;
	co.open_tcp = o && o->tcp_established;
	co.file_locks = o && o->file_locks;
	co.image_path = dir;
	co.work_path = dir;
	size_t olen = protobuf_c_message_get_packed_size(&co.base);
	obuf = kc_xmalloc(olen ? olen : 1);
	protobuf_c_message_pack(&co.base, obuf);
	Kc__Types__Any any = KC__TYPES__ANY__INIT;
	any.type_url = TYPE_RUNC_CHECKPOINT;
	any.value.data = obuf;
	any.value.len = olen;

	Kc__Tasks__CheckpointTaskRequest r = KC__TASKS__CHECKPOINT_TASK_REQUEST__INIT;
	r.container_id = c->id;
	r.options = &any;
	Kc__Tasks__CheckpointTaskResponse *resp = NULL;
	int cr = kc_ctrd_call(c, SVC_TASKS "Checkpoint", &r, &kc__tasks__checkpoint_task_response__descriptor,
		      &resp, T_NONE, &e);
	log = kc_ctrd_take_log(dir, "dump.log", "criu-dump.log");
	if (cr < 0) {
		kc_ctrd_criu_failure(err, e, "checkpoint", c->id, log);
		goto out; /* paused: the undo stack resumes it */
	}
	free_msg(resp);

	/* the files as they are now, with the task still frozen */
	if (c->rw_layer == KC_RW_YES && save_rw_layer(c, parent, dir, &rw, err) < 0)
		goto out; /* paused: the undo stack resumes it */

	struct kc_ctrd_dumpinfo di = {
		.ns = c->ns,
		.containerd_version = c->version,
		.snapshot_parent = parent,
		.container = ct,
		.task = task->process,
		.procs = procs,
		.n_procs = n_procs,
		.rw = rw.file ? &rw : NULL,
	};
	if (kc_ctrd_saved_write(&di, dir, err) < 0)
		goto out; /* paused: the undo stack resumes it */
	rc = 0;
	goto out;

	/* on failure the task stays paused: the command's undo stack resumes
	 * it (op_resume, the "resume" entry kc_dump pushed before this call),
	 * as it does for a tree CRIU stopped; no second rollback here */
out:
	kc_ctrd_rw_clear(&rw);
	if (task)
		free_msg(task);
	return rc;
}

static int op_finish(void *h, const pid_t *pids, size_t n, struct kc_error **err)
{
	struct ctrd *c = h;
	Kc__Containers__Container *ct = c->got ? c->got->container : NULL;
	if (kc_ctrd_kill_task(c, err) < 0 || kc_ctrd_delete_container(c, err) < 0)
		return -1;
	if (ct && ct->snapshot_key && *ct->snapshot_key && ct->snapshotter &&
	    kc_ctrd_remove_snapshot(c, ct->snapshotter, ct->snapshot_key, err) < 0)
		return -1;
	c->finished = true;
	return 0;
}

static int op_resume(void *h, const pid_t *pids, size_t n, struct kc_error **err)
{
	struct ctrd *c = h;
	if (!c->we_paused)
		return 0;
	if (task_simple(c, "Resume", err) < 0)
		return kc_error_prefix(err, "cannot resume container '%s'", c->id);
	c->we_paused = false;
	return 0;
}

const struct kc_criu_ops kc_containerd_ops = {
	.restored_pid = kc_ctrd_op_restored_pid,
	.version = op_version,
	.check = op_check,
	.dump = op_dump,
	.restore = kc_ctrd_op_restore,
	.finish = op_finish,
	.resume = op_resume,
	.discard = kc_ctrd_op_discard,
};

int kc_containerd_open_restore(const struct kc_containerd_opts *o, struct kc_criu *cpu,
			       struct kc_error **err)
{
	struct ctrd *c = NULL;
	if (ctrd_connect(o, &c, err) < 0)
		return -1;
	if (kc_ctrd_check_id_free(c, err) < 0) {
		ctrd_free(c);
		return -1;
	}
	cpu->ops = &kc_containerd_ops;
	cpu->h = c;
	return 0;
}

void kc_containerd_close(struct kc_criu *cpu)
{
	if (!kc_containerd_is(cpu))
		return;
	ctrd_free(cpu->h);
	cpu->h = NULL;
	cpu->ops = NULL;
}

bool kc_containerd_is(const struct kc_criu *cpu)
{
	return cpu && cpu->ops == &kc_containerd_ops && cpu->h;
}

int kc_containerd_list_pids(struct kc_criu *cpu, pid_t **pids, size_t *n, struct kc_error **err)
{
	if (!kc_containerd_is(cpu))
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "not a containerd backend");
	struct ctrd *c = cpu->h;
	pid_t init = c->restored_pid > 0 ? c->restored_pid : c->task_pid;
	_cleanup_free_ struct kc_ctrd_proc *p = NULL;
	size_t m = 0;
	if (kc_ctrd_list_procs(c, init, &p, &m, err) < 0)
		return -1;
	pid_t *out = kc_xcalloc(m + 1, sizeof(pid_t));
	for (size_t i = 0; i < m; i++)
		out[i] = p[i].pid;
	*pids = out;
	*n = m;
	return 0;
}

pid_t kc_containerd_restored_pid(struct kc_criu *cpu, pid_t dumped)
{
	if (!kc_containerd_is(cpu))
		return -1;
	struct ctrd *c = cpu->h;
	if (!c->saved || !c->now)
		return -1;
	pid_t ns = -1;
	for (size_t i = 0; i < c->saved->n_procs; i++)
		if (c->saved->procs[i].pid == dumped)
			ns = c->saved->procs[i].ns_pid;
	if (ns <= 0)
		return -1;
	for (size_t i = 0; i < c->n_now; i++)
		if (c->now[i].ns_pid == ns)
			return c->now[i].pid;
	return -1;
}

void *kc_containerd_manifest_section(struct kc_criu *cpu)
{
	if (!kc_containerd_is(cpu))
		return NULL;
	struct ctrd *c = cpu->h;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(c->id));
	json_object_object_add(o, "namespace", json_object_new_string(c->ns));
	json_object_object_add(o, "containerd_version", json_object_new_string(c->version));
	const char *image = NULL, *snapshotter = NULL, *runtime = NULL;
	if (c->got) {
		image = c->got->container->image;
		snapshotter = c->got->container->snapshotter;
		runtime = c->got->container->runtime ? c->got->container->runtime->name : NULL;
	} else if (c->saved) {
		image = c->saved->image;
		snapshotter = c->saved->snapshotter;
		runtime = c->saved->runtime_name;
	}
	json_object_object_add(o, "image", json_object_new_string(image ? image : ""));
	json_object_object_add(o, "snapshotter", json_object_new_string(snapshotter ? snapshotter : ""));
	json_object_object_add(o, "runtime", json_object_new_string(runtime ? runtime : ""));
	json_object_object_add(o, "task_pid",
			       json_object_new_int(c->restored_pid > 0 ? c->restored_pid : c->task_pid));
	json_object_object_add(o, "rw_layer", json_object_new_boolean(c->rw_layer == KC_RW_YES));
	return o;
}
