/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CRIU_H
#define KC_CRIU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kc/error.h"

/* kcheckpoint's CRIU plugin (src/criu-plugin/) */
#define KC_CRIU_PLUGIN_NAME "kcheckpoint_gpu_fork.so"

struct kc_criu_opts {
	const char *criu_path; /* NULL: $KCHECKPOINT_CRIU, else "criu" in PATH */
	bool tcp_established;
	bool tcp_close; /* established connections come back closed */
	bool shell_job;
	bool file_locks;
	/* A deleted file that still has another name (Python's semaphores)
	 * is kept reachable by a hard link next to it (criu --link-remap). */
	bool link_remap;
	bool verbose;
	/* CRIU's --libdir: kcheckpoint's plugin (kc_criu_plugin_dir), NULL
	 * for none. */
	const char *libdir;
	/* More CRIU options, passed as they are; NULL-terminated or NULL. */
	char *const *extra;
	/* Set by the caller, never by the user: dump leaves the tree
	 * SIGSTOPped so kcheckpoint can roll back until it decides to kill. */
	bool leave_stopped;
	/* Restore leaves the tree SIGSTOPped (its large memory is filled by
	 * kcheckpoint before anything runs). */
	bool restore_stopped;
	/* Dump: private anonymous VMAs of at least this many bytes are left to
	 * kcheckpoint (listed in KC_BULK_SKIPPED) by a CRIU that knows how
	 * (patches/criu/); 0: CRIU dumps all. */
	uint64_t bulk_min;
	/* Restore: where CRIU puts its log, pidfile and stats (criu -W);
	 * NULL: the images dir. */
	const char *log_dir;
	/* Restore: a file of "<pid> <start hex> <end hex>" runs that
	 * kcheckpoint fills itself; a CRIU that knows how (patches/criu/0002)
	 * advises MADV_HUGEPAGE on the VMAs they mostly cover.  NULL: none. */
	const char *huge_runs;
	/* Restore: a CRIU that knows how (patches/criu/0003) registers the
	 * VMAs the runs of uffd_runs (same format) touch with a userfaultfd and
	 * sends it, with the pid, to the unix socket uffd_socket.  NULL: none. */
	const char *uffd_socket, *uffd_runs;
};

/* From CRIU's stats-dump / stats-restore images (images/stats.proto). */
struct kc_criu_stats {
	bool have_dump;
	double freezing_s, frozen_s, memdump_s, memwrite_s;
	uint64_t pages_scanned, pages_skipped_parent, pages_written, pages_lazy;
	uint64_t irmap_resolve_s_us;
	bool have_restore;
	double forking_s, restore_s;
	uint64_t pages_compared, pages_skipped_cow, pages_restored;
};

struct kc_criu_ops {
	/* "4.1.1" */
	int (*version)(void *h, const struct kc_criu_opts *o, char **version, struct kc_error **err);
	/* Runs `criu check`; output gets what it printed. */
	int (*check)(void *h, const struct kc_criu_opts *o, char **output, struct kc_error **err);
	/* Optional.  Dumps (and leaves running) a throwaway child holding a
	 * listening TCP socket: CRIUs before 4.2 fail that on kernels >= 6.16,
	 * and every server has one. */
	int (*probe_inet)(void *h, const struct kc_criu_opts *o, struct kc_error **err);
	/* Logs to <dir>/criu-dump.log; on failure the message carries CRIU's
	 * last error lines. */
	int (*dump)(void *h, const struct kc_criu_opts *o, pid_t pid, const char *images_dir,
		    struct kc_error **err);
	/* Detached restore (the tree is not our child); logs to
	 * <dir>/criu-restore.log; *root_pid from --pidfile. */
	int (*restore)(void *h, const struct kc_criu_opts *o, const char *images_dir,
		       pid_t *root_pid, struct kc_error **err);
	/*
	 * Optional; NULL means the default for a plain process tree.  After a
	 * successful dump (tree left stopped): `finish` ends the dumped tree
	 * (default: SIGKILL every pid and wait), `resume` lets it run on
	 * again, for rollback and --leave-running (default: SIGCONT).
	 * `discard` undoes a restore that must be rolled back (default:
	 * SIGKILL the restored tree).  The containerd backend uses these to
	 * kill/resume the task through containerd.
	 */
	int (*finish)(void *h, const pid_t *pids, size_t n, struct kc_error **err);
	int (*resume)(void *h, const pid_t *pids, size_t n, struct kc_error **err);
	int (*discard)(void *h, pid_t root_pid, struct kc_error **err);
	/* Optional: before a tree dumped with tcp_established and left
	 * stopped runs on (rollback, --leave-running), what CRIU itself does
	 * only for -R: its connections out of repair mode, their DROP rules
	 * gone. */
	int (*unlock_network)(void *h, const pid_t *pids, size_t n, struct kc_error **err);
	/* Optional; NULL: processes come back under the pids they were dumped
	 * with.  Otherwise (a container's own pid namespace) the host pid now
	 * of the process dumped as `dumped`, -1 if unknown, and restore does
	 * not wait for the dumped pids to be free. */
	pid_t (*restored_pid)(void *h, pid_t dumped);
};

struct kc_criu {
	const struct kc_criu_ops *ops;
	void *h;
};

/* The real backend: runs the criu binary. */
void kc_criu_init(struct kc_criu *out);

/* See kc_criu_ops.unlock_network (criu_netlock.c). */
int kc_criu_unlock_network(const pid_t *pids, size_t n, struct kc_error **err);

/* The dir holding kcheckpoint's CRIU plugin: $KCHECKPOINT_CRIU_LIBDIR
 * (empty: none), else beside the binary (installed, bundle, build tree).
 * NULL when there is none.  Static storage. */
const char *kc_criu_plugin_dir(void);

/* The hard links CRIU made for --link-remap, as absolute paths in the
 * dumped tree's root (NULL-terminated, possibly empty). */
int kc_criu_link_remaps(const char *images_dir, char ***paths, struct kc_error **err);

/* Large runs of private memory kept out of CRIU's page images (see
 * criu_bulk.c): each of pid's bytes at vaddr are at offset in file. */
#define KC_BULK_INDEX "kcheckpoint-bulk.txt"
#define KC_BULK_SKIPPED "kcheckpoint-skipped.txt"
struct kc_bulk_region {
	pid_t pid;
	uint64_t vaddr, bytes, offset;
	char file[64]; /* in the images dir */
};
/* After a dump: moves the runs of at least min_bytes out; *moved their
 * total (0: the images are CRIU's own, no index written). */
int kc_criu_split_bulk(const char *images_dir, uint64_t min_bytes, uint64_t *moved, struct kc_error **err);
/* The index; none (n 0) for images without one. */
int kc_criu_read_bulk(const char *images_dir, struct kc_bulk_region **v, size_t *n, struct kc_error **err);

/* Reads whichever of stats-dump / stats-restore exist in dir. */
int kc_criu_read_stats(const char *images_dir, struct kc_criu_stats *st, struct kc_error **err);

/* Last `max_lines` lines of a CRIU log that carry "Error" (or the last
 * lines if none do), joined by "; ".  Caller frees; NULL if unreadable. */
char *kc_criu_log_tail(const char *log_path, int max_lines);

/* What a failed CRIU run's log says, for a person: the first error that
 * CRIU's known failures explain, as "<cause>" plus, where one helps, the
 * option that fixes it ("use --tcp-established").  NULL if none matched.
 * Lines known to be harmless are never the answer. */
char *kc_criu_explain(const char *log_text, char **hint);

#endif
