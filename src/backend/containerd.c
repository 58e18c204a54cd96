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

#define SVC_TASKS "/containerd.services.tasks.v1.Tasks/"
#define SVC_CONTAINERS "/containerd.services.containers.v1.Containers/"
#define SVC_SNAPSHOTS "/containerd.services.snapshots.v1.Snapshots/"
#define SVC_LEASES "/containerd.services.leases.v1.Leases/"
#define SVC_NAMESPACES "/containerd.services.namespaces.v1.Namespaces/"
#define SVC_VERSION "/containerd.services.version.v1.Version/"

#define RUNC_V2 "io.containerd.runc.v2"
#define RUNC_V1 "io.containerd.runc.v1"
#define TYPE_RUNC_OPTIONS "containerd.runc.v1.Options"
#define TYPE_RUNC_CHECKPOINT "containerd.runc.v1.CheckpointOptions"

#define T_DEFAULT KC_GRPC_DEFAULT_TIMEOUT
#define T_NONE 0u /* checkpoint and restore take as long as memory does */
#define EXIT_WAIT_MS 10000u

struct ctrd {
	struct kc_grpc *g;
	char *address;
	char *ns;
	char *id;
	int rw_layer; /* KC_RW_*; AUTO becomes YES or NO once the container is known */
	char *version; /* containerd's */

	/* dump */
	Kc__Containers__GetContainerResponse *got;
	pid_t task_pid;
	bool we_paused; /* paused by dump and not resumed since */
	bool finished;

	/* restore */
	struct kc_ctrd_saved *saved;
	bool made_snapshot, made_container, made_task;
	char *snapshotter, *snapshot_key;
	pid_t restored_pid;
	struct kc_ctrd_proc *now; /* after restore: host pid + ns pid */
	size_t n_now;
};

static int call(struct ctrd *c, const char *path, const void *req,
		const ProtobufCMessageDescriptor *desc, void *resp, unsigned timeout_ms,
		struct kc_error **err)
{
	return kc_grpc_unary(c->g, path, req, desc, (ProtobufCMessage **)resp, timeout_ms, err);
}

#define free_msg(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

static bool is_code(const struct kc_error *e, int code)
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
	if (call(c, SVC_VERSION "Version", &e, &kc__misc__version_response__descriptor, &v,
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
	if (call(c, SVC_NAMESPACES "List", &r, &kc__misc__list_namespaces_response__descriptor,
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

static int get_container(struct ctrd *c, const char *id,
			 Kc__Containers__GetContainerResponse **out, struct kc_error **err)
{
	Kc__Containers__GetContainerRequest r = KC__CONTAINERS__GET_CONTAINER_REQUEST__INIT;
	r.id = (char *)id;
	struct kc_error *e = NULL;
	if (call(c, SVC_CONTAINERS "Get", &r, &kc__containers__get_container_response__descriptor,
		 out, T_DEFAULT, &e) == 0) {
		if (!(*out)->container) {
			free_msg(*out);
			*out = NULL;
			return kc_error_set(err, KC_EXIT_CONTAINERD, 0,
					    "containerd returned no container for '%s'", id);
		}
		return 0;
	}
	if (is_code(e, KC_GRPC_NOT_FOUND)) {
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
	if (call(c, SVC_TASKS "Get", &r, &kc__tasks__get_response__descriptor, out, T_DEFAULT,
		 &e) < 0) {
		if (is_code(e, KC_GRPC_NOT_FOUND)) {
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
	return call(c, path, &r, NULL, NULL, T_DEFAULT, err);
}

static int task_kill(struct ctrd *c, int sig, struct kc_error **err)
{
	Kc__Tasks__KillRequest r = KC__TASKS__KILL_REQUEST__INIT;
	r.container_id = c->id;
	r.signal = (uint32_t)sig;
	r.all = true;
	return call(c, SVC_TASKS "Kill", &r, NULL, NULL, T_DEFAULT, err);
}

static int task_wait(struct ctrd *c, struct kc_error **err)
{
	Kc__Tasks__WaitRequest r = KC__TASKS__WAIT_REQUEST__INIT;
	r.container_id = c->id;
	Kc__Tasks__WaitResponse *resp = NULL;
	if (call(c, SVC_TASKS "Wait", &r, &kc__tasks__wait_response__descriptor, &resp,
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
static int kill_task(struct ctrd *c, struct kc_error **err)
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
	if (task_simple(c, "Delete", &e) < 0 && !is_code(e, KC_GRPC_NOT_FOUND)) {
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot delete the task of container '%s'", c->id);
	}
	kc_error_free(e);
	return 0;
}

static int remove_snapshot(struct ctrd *c, const char *snapshotter, const char *key,
			   struct kc_error **err)
{
	Kc__Snapshots__RemoveSnapshotRequest r = KC__SNAPSHOTS__REMOVE_SNAPSHOT_REQUEST__INIT;
	r.snapshotter = (char *)snapshotter;
	r.key = (char *)key;
	struct kc_error *e = NULL;
	if (call(c, SVC_SNAPSHOTS "Remove", &r, NULL, NULL, T_DEFAULT, &e) < 0 &&
	    !is_code(e, KC_GRPC_NOT_FOUND)) {
		kc_error_propagate(err, e);
		return kc_error_prefix(err, "cannot remove snapshot '%s'", key);
	}
	kc_error_free(e);
	return 0;
}

static int delete_container(struct ctrd *c, struct kc_error **err)
{
	Kc__Containers__DeleteContainerRequest r = KC__CONTAINERS__DELETE_CONTAINER_REQUEST__INIT;
	r.id = c->id;
	struct kc_error *e = NULL;
	if (call(c, SVC_CONTAINERS "Delete", &r, NULL, NULL, T_DEFAULT, &e) < 0 &&
	    !is_code(e, KC_GRPC_NOT_FOUND)) {
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

static int list_procs(struct ctrd *c, pid_t init, struct kc_ctrd_proc **out, size_t *n,
		      struct kc_error **err)
{
	Kc__Tasks__ListPidsRequest r = KC__TASKS__LIST_PIDS_REQUEST__INIT;
	r.container_id = c->id;
	Kc__Tasks__ListPidsResponse *resp = NULL;
	if (call(c, SVC_TASKS "ListPids", &r, &kc__tasks__list_pids_response__descriptor, &resp,
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

static bool runtime_is_runc(const char *name)
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
	if (get_container(c, c->id, &c->got, err) < 0 || get_task(c, &task, err) < 0)
		goto fail;

	Kc__Containers__Container *ct = c->got->container;
	const char *rt = ct->runtime ? ct->runtime->name : NULL;
	if (!runtime_is_runc(rt)) {
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

static int snapshot_parent(struct ctrd *c, const char *snapshotter, const char *key, char **parent,
			   struct kc_error **err)
{
	Kc__Snapshots__StatSnapshotRequest r = KC__SNAPSHOTS__STAT_SNAPSHOT_REQUEST__INIT;
	r.snapshotter = (char *)snapshotter;
	r.key = (char *)key;
	Kc__Snapshots__StatSnapshotResponse *resp = NULL;
	if (call(c, SVC_SNAPSHOTS "Stat", &r, &kc__snapshots__stat_snapshot_response__descriptor,
		 &resp, T_DEFAULT, err) < 0)
		return kc_error_prefix(err, "cannot inspect the rootfs snapshot '%s' of container '%s'",
				       key, c->id);
	*parent = kc_xstrdup(resp->info && resp->info->parent ? resp->info->parent : "");
	free_msg(resp);
	return 0;
}

/* runc's work dir gets CRIU's log as dump.log / restore.log; the plain
 * CRIU backend names them criu-dump.log / criu-restore.log, so do we. */
static char *take_log(const char *dir, const char *runc_name, const char *our_name)
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
static int criu_failure(struct kc_error **err, struct kc_error *e, const char *what,
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

static int lease_create(struct ctrd *c, char **id, struct kc_error **err);
static void lease_delete(struct ctrd *c, const char *id);

static int save_rw_layer(struct ctrd *c, const char *parent, const char *dir, struct kc_ctrd_rw *rw,
			 struct kc_error **err)
{
	Kc__Containers__Container *ct = c->got->container;
	_cleanup_free_ char *lease = NULL;
	if (lease_create(c, &lease, err) < 0)
		return -1;
	kc_grpc_set_lease(c->g, lease);
	_cleanup_free_ char *tag = kc_xasprintf("%s-%d", c->id, (int)getpid());
	int rc = kc_ctrd_rw_save(c->g, ct->snapshotter, ct->snapshot_key, parent, tag, dir, rw, err);
	lease_delete(c, lease);
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
	    snapshot_parent(c, ct->snapshotter, ct->snapshot_key, &parent, err) < 0)
		goto out;
	if (list_procs(c, c->task_pid, &procs, &n_procs, err) < 0)
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
	int cr = call(c, SVC_TASKS "Checkpoint", &r, &kc__tasks__checkpoint_task_response__descriptor,
		      &resp, T_NONE, &e);
	log = take_log(dir, "dump.log", "criu-dump.log");
	if (cr < 0) {
		criu_failure(err, e, "checkpoint", c->id, log);
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
	if (kill_task(c, err) < 0 || delete_container(c, err) < 0)
		return -1;
	if (ct && ct->snapshot_key && *ct->snapshot_key && ct->snapshotter &&
	    remove_snapshot(c, ct->snapshotter, ct->snapshot_key, err) < 0)
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

/* ---- restore -------------------------------------------------------- */

static int lease_create(struct ctrd *c, char **id, struct kc_error **err)
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
	if (call(c, SVC_LEASES "Create", &r, &kc__misc__create_lease_response__descriptor, &resp,
		 T_DEFAULT, err) < 0)
		return kc_error_prefix(err, "cannot create a containerd lease");
	*id = kc_xstrdup(resp->lease && resp->lease->id ? resp->lease->id : want);
	free_msg(resp);
	return 0;
}

static void lease_delete(struct ctrd *c, const char *id)
{
	kc_grpc_set_lease(c->g, NULL);
	Kc__Misc__DeleteLeaseRequest r = KC__MISC__DELETE_LEASE_REQUEST__INIT;
	r.id = (char *)id;
	struct kc_error *e = NULL;
	call(c, SVC_LEASES "Delete", &r, NULL, NULL, T_DEFAULT, &e);
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
		if (snapshot_parent(c, sv->snapshotter, sv->snapshot_parent, &parent, &e) < 0) {
			if (is_code(e, KC_GRPC_NOT_FOUND)) {
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
	if (call(c, SVC_SNAPSHOTS "Prepare", &r, &kc__snapshots__prepare_snapshot_response__descriptor,
		 keep, T_DEFAULT, &e) < 0) {
		if (is_code(e, KC_GRPC_ALREADY_EXISTS)) {
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
	if (call(c, SVC_CONTAINERS "Create", &r, &kc__containers__create_container_response__descriptor,
		 &resp, T_DEFAULT, &e) < 0) {
		if (is_code(e, KC_GRPC_ALREADY_EXISTS)) {
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
	if (call(c, SVC_TASKS "Create", &r, &kc__tasks__create_task_response__descriptor, &resp,
		 T_NONE, &e) < 0) {
		_cleanup_free_ char *log = take_log(dir, "restore.log", "criu-restore.log");
		return criu_failure(err, e, "create the task of", c->id, log);
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
	int sr = call(c, SVC_TASKS "Start", &r, &kc__tasks__start_response__descriptor, &resp,
		      T_NONE, &e);
	_cleanup_free_ char *log = take_log(dir, "restore.log", "criu-restore.log");
	if (sr < 0)
		return criu_failure(err, e, "restore", c->id, log);
	*pid = (pid_t)resp->pid;
	free_msg(resp);
	return 0;
}

/* Removes whatever restore created, newest first. */
static int undo_restore(struct ctrd *c, struct kc_error **err)
{
	int rc = 0;
	if (c->made_task) {
		if (kill_task(c, err) < 0)
			rc = -1;
		else
			c->made_task = false;
	}
	if (c->made_container && rc == 0) {
		if (delete_container(c, err) < 0)
			rc = -1;
		else
			c->made_container = false;
	}
	if (c->made_snapshot && rc == 0) {
		if (remove_snapshot(c, c->snapshotter, c->snapshot_key, err) < 0)
			rc = -1;
		else
			c->made_snapshot = false;
	}
	return rc;
}

/* The id to restore as must be free; checked when opening already, so
 * the error comes before any waiting, and again right before creating. */
static int check_id_free(struct ctrd *c, struct kc_error **err)
{
	Kc__Containers__GetContainerResponse *existing = NULL;
	struct kc_error *e = NULL;
	if (get_container(c, c->id, &existing, &e) == 0) {
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

static int op_restore(void *h, const struct kc_criu_opts *o, const char *images_dir,
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
	if (!runtime_is_runc(c->saved->runtime_name))
		return kc_error_set(err, KC_EXIT_IMAGE, 0,
				    "the image was made on runtime '%s'; only %s can restore it",
				    c->saved->runtime_name, RUNC_V2);

	if (check_id_free(c, err) < 0)
		return -1;

	_cleanup_free_ char *lease = NULL;
	if (lease_create(c, &lease, err) < 0)
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
	if (list_procs(c, pid, &c->now, &c->n_now, err) < 0)
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
	lease_delete(c, lease);
	return rc;
}

static int op_discard(void *h, pid_t root_pid, struct kc_error **err)
{
	struct ctrd *c = h;
	if (undo_restore(c, err) < 0)
		return kc_error_prefix(err, "cannot remove restored container '%s'", c->id);
	c->restored_pid = 0;
	return 0;
}

static pid_t op_restored_pid(void *h, pid_t dumped)
{
	struct kc_criu cpu = {.ops = &kc_containerd_ops, .h = h};
	return kc_containerd_restored_pid(&cpu, dumped);
}

const struct kc_criu_ops kc_containerd_ops = {
	.restored_pid = op_restored_pid,
	.version = op_version,
	.check = op_check,
	.dump = op_dump,
	.restore = op_restore,
	.finish = op_finish,
	.resume = op_resume,
	.discard = op_discard,
};

int kc_containerd_open_restore(const struct kc_containerd_opts *o, struct kc_criu *cpu,
			       struct kc_error **err)
{
	struct ctrd *c = NULL;
	if (ctrd_connect(o, &c, err) < 0)
		return -1;
	if (check_id_free(c, err) < 0) {
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
	if (list_procs(c, init, &p, &m, err) < 0)
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
