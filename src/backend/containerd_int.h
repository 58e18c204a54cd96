/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CONTAINERD_INT_H
#define KC_CONTAINERD_INT_H

/* Shared by containerd.c and containerd_json.c (containerd.json). */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kc/criu.h"
#include "kc/error.h"

#include "kc_containers.pb-c.h"
#include "kc_types.pb-c.h"

#define KC_CTRD_JSON_FORMAT 1

extern const struct kc_criu_ops kc_containerd_ops;

#define KC_CTRD_RW_FILE "rw-layer.tar"

struct kc_grpc;

/* The container's writable layer, saved with --with-rw-layer. */
struct kc_ctrd_rw {
	char *file; /* in the images dir; NULL: none saved */
	char *media_type;
	char *digest;
	int64_t size;
};

void kc_ctrd_rw_clear(struct kc_ctrd_rw *rw);
/* Diff of snapshot key against its parent, into <dir>/rw-layer.tar.  tag
 * makes the temporary names (view snapshot, content ref) unique. */
int kc_ctrd_rw_save(struct kc_grpc *g, const char *snapshotter, const char *key, const char *parent,
		    const char *tag, const char *dir, struct kc_ctrd_rw *out, struct kc_error **err);
/* Unpacks the saved layer onto mounts (a prepared snapshot). */
int kc_ctrd_rw_apply(struct kc_grpc *g, const char *dir, const struct kc_ctrd_rw *rw, const char *tag,
		     Kc__Types__Mount **mounts, size_t n_mounts, struct kc_error **err);

struct kc_ctrd_proc {
	pid_t pid;    /* host pid */
	pid_t ns_pid; /* in the container's pid namespace; -1 if unknown */
};

/* What dump knows, borrowed, to be written as containerd.json. */
struct kc_ctrd_dumpinfo {
	const char *ns;
	const char *containerd_version;
	const char *snapshot_parent; /* NULL/"" when the rootfs is no snapshot */
	const Kc__Containers__Container *container;
	const Kc__Types__Process *task;
	const struct kc_ctrd_proc *procs;
	size_t n_procs;
	const struct kc_ctrd_rw *rw; /* NULL: no rw layer */
};

/* containerd.json read back; everything owned. */
struct kc_ctrd_saved {
	int format;
	char *id, *ns;
	char *image;
	char *snapshotter, *snapshot_key, *snapshot_parent;
	char *runtime_name;
	Kc__Types__Any *runtime_options; /* NULL when none */
	char *spec_type_url;
	char *spec; /* the runtime spec's JSON text */
	char *sandbox;
	Kc__Containers__Container__LabelsEntry **labels;
	size_t n_labels;
	Kc__Containers__Container__ExtensionsEntry **extensions;
	size_t n_extensions;
	char *task_stdout, *task_stderr;
	pid_t task_pid;
	struct kc_ctrd_proc *procs;
	size_t n_procs;
	struct kc_ctrd_rw rw; /* rw.file NULL: none */
};

/* malloc()ed JSON text. */
char *kc_ctrd_saved_json(const struct kc_ctrd_dumpinfo *d);
int kc_ctrd_saved_write(const struct kc_ctrd_dumpinfo *d, const char *dir, struct kc_error **err);
/* KC_EXIT_IMAGE on anything malformed. */
int kc_ctrd_saved_parse(const char *json, size_t len, struct kc_ctrd_saved **out,
			struct kc_error **err);
/* KC_EXIT_IMAGE "'<dir>' has no containerd.json ..." when absent. */
int kc_ctrd_saved_read(const char *dir, struct kc_ctrd_saved **out, struct kc_error **err);
void kc_ctrd_saved_free(struct kc_ctrd_saved *s);

/*
 * The spec for the container restored as new_id: the saved one, with a
 * cgroups path that ends in the old id ("/k8s.io/<id>", "slice:cri:<id>")
 * moved to the new id so the restored task does not share the cgroup of
 * a container that may still run.  Caller frees.
 */
char *kc_ctrd_spec_for(const struct kc_ctrd_saved *s, const char *new_id);

/* RFC 4648 base64, for the protobuf blobs in containerd.json. */
char *kc_ctrd_base64_encode(const uint8_t *data, size_t len);
/* -1 on malformed input. */
int kc_ctrd_base64_decode(const char *s, uint8_t **out, size_t *len);


/* ---- shared by containerd.c (connection, dump) and containerd_restore.c ---- */

#include "kc/grpc.h"
#include "kc_misc.pb-c.h"
#include "kc_snapshots.pb-c.h"
#include "kc_tasks.pb-c.h"

#define free_msg(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

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


int kc_ctrd_call(struct ctrd *c, const char *path, const void *req, const ProtobufCMessageDescriptor *desc, void *resp, unsigned timeout_ms, struct kc_error **err);
bool kc_ctrd_is_code(const struct kc_error *e, int code);
int kc_ctrd_get_container(struct ctrd *c, const char *id, Kc__Containers__GetContainerResponse **out, struct kc_error **err);
int kc_ctrd_kill_task(struct ctrd *c, struct kc_error **err);
int kc_ctrd_remove_snapshot(struct ctrd *c, const char *snapshotter, const char *key, struct kc_error **err);
int kc_ctrd_delete_container(struct ctrd *c, struct kc_error **err);
int kc_ctrd_list_procs(struct ctrd *c, pid_t init, struct kc_ctrd_proc **out, size_t *n, struct kc_error **err);
bool kc_ctrd_runtime_is_runc(const char *name);
int kc_ctrd_snapshot_parent(struct ctrd *c, const char *snapshotter, const char *key, char **parent, struct kc_error **err);
char *kc_ctrd_take_log(const char *dir, const char *runc_name, const char *our_name);
int kc_ctrd_criu_failure(struct kc_error **err, struct kc_error *e, const char *what, const char *id, const char *log);
int kc_ctrd_lease_create(struct ctrd *c, char **id, struct kc_error **err);
void kc_ctrd_lease_delete(struct ctrd *c, const char *id);
int kc_ctrd_check_id_free(struct ctrd *c, struct kc_error **err);
int kc_ctrd_op_restore(void *h, const struct kc_criu_opts *o, const char *images_dir, pid_t *root_pid, struct kc_error **err);
int kc_ctrd_op_discard(void *h, pid_t root_pid, struct kc_error **err);
pid_t kc_ctrd_op_restored_pid(void *h, pid_t dumped);

#endif
