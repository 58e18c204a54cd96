/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ORCHESTRATOR_INT_H
#define KC_ORCHESTRATOR_INT_H

#include <stdatomic.h>

#include "kc/orchestrator.h"
#include "kc/undo.h"

/* KC_EXIT_INTERRUPTED when SIGINT/SIGTERM/SIGHUP arrived. */
int kc_check_interrupted(struct kc_error **err);
/* Runs the undo stack; always returns -1.  A failing rollback turns *err
 * into KC_EXIT_ROLLBACK and says so. */
int kc_rollback(struct kc_undo *u, struct kc_error **err);
void kc_fill_host_info(struct kc_manifest *m, const struct kc_backends *b);
int kc_prepare_images_dir(const char *dir, struct kc_error **err);

#include "kc/threads.h"

/* Writes the regions into the (stopped) restored processes with that many
 * threads (bulk_fill.c); *bytes written.  The bulk files that m lists as
 * members are checked against their checksums on the way (KC_EXIT_IMAGE). */
int kc_bulk_fill(const char *images_dir, const struct kc_manifest *m, const struct kc_bulk_region *v, size_t n,
		 unsigned threads, uint64_t *bytes, struct kc_error **err);

/* Checksums of a plain images dir (images_sum.c): every file but the
 * manifest, CRIU's logs and the dir lock becomes a member of m with its
 * tree hash; known ones (hashed while written) are taken as they are. */
int kc_images_checksum(const char *dir, struct kc_manifest *m, unsigned threads,
		       const struct kc_manifest_member *known, size_t n_known, struct kc_error **err);
void kc_leaves_root(const uint8_t (*d)[32], size_t n, char hex[65]);

/* The stopped restored processes of the regions, written through
 * /proc/<pid>/mem: kc_fill_target_write is a kc_archive_sink (bulk_fill.c). */
struct kc_fill_target;
int kc_fill_target_open(const struct kc_bulk_region *v, size_t n, struct kc_fill_target **t, struct kc_error **err);
/* Before any of it is filled: every run is mapped in its restored process
 * (else KC_EXIT_IMAGE), and each process is stopped. */
int kc_fill_check(const struct kc_bulk_region *v, size_t n, struct kc_error **err);
int kc_fill_target_write(void *t, const char *file, uint64_t off, const void *data, size_t len);
uint64_t kc_fill_target_done(void *t);
uint64_t kc_bulk_regions_bytes(const struct kc_bulk_region *v, size_t n);
/* Every byte of every region written exactly once; KC_EXIT_IMAGE if not. */
int kc_fill_target_check(const struct kc_fill_target *t, struct kc_error **err);
void kc_fill_target_close(struct kc_fill_target *t);

/* After CRIU dumped with bulk_min, what it left out (KC_BULK_SKIPPED): the
 * populated pages of those VMAs, readable from the stopped tree
 * (bulk_read.c).  *s stays NULL for a CRIU that dumped everything. */
#define KC_BULK_READ_NAME "kcheckpoint-bulk-read.img"
/* Its 1 MiB leaves' SHA-256 digests, 32 bytes each, in order. */
#define KC_BULK_LEAVES_NAME "kcheckpoint-bulk-read.leaves"
struct kc_bulk_source;
int kc_bulk_source_open(const char *images_dir, struct kc_bulk_source **s, struct kc_error **err);
uint64_t kc_bulk_source_size(const struct kc_bulk_source *s);
/* Bytes [off, off+len) of the runs laid end to end (KC_BULK_READ_NAME's
 * layout); thread-safe; -1 with errno. */
int kc_bulk_source_read(void *arg, void *buf, size_t len, uint64_t off);
void kc_bulk_source_free(struct kc_bulk_source *s);
/* The index lines for KC_BULK_READ_NAME (and CRIU's list goes). */
int kc_bulk_write_index(const char *images_dir, const struct kc_bulk_source *s, struct kc_error **err);
/* Reads the runs with that many threads into KC_BULK_READ_NAME in the
 * images dir (sha256: its tree hash, computed on the way), then writes the
 * index. */
int kc_bulk_read(const char *images_dir, const struct kc_bulk_source *s, unsigned threads, char sha256[65],
		 struct kc_error **err);

/* The ranges a GPU checkpoint mapped in each process: the driver's host
 * copy of its GPU memory (gpu_backup.c), in the images dir as
 * KC_GPU_BACKUP_NAME ("<pid> <start hex> <end hex>" lines). */
#define KC_GPU_BACKUP_NAME "kcheckpoint-gpu-backup.txt"
struct kc_range {
	uint64_t lo, hi;
};
struct kc_gpu_backup;
struct kc_gpu_backup *kc_gpu_backup_before(const pid_t *pids, size_t n);
int kc_gpu_backup_write(const struct kc_gpu_backup *b, const char *dir, struct kc_error **err);
void kc_gpu_backup_free(struct kc_gpu_backup *b);
/* -1 where the image has none. */
int kc_gpu_backup_read(const char *dir, pid_t **pids, struct kc_range **v, size_t *n);

/*
 * The fill beside the GPU restore (bulk_uffd.c): prepare before CRIU
 * restores (a socket in dir for the userfaultfds of our CRIU, the runs it
 * registers; *f stays NULL, no error, where the image cannot be filled so:
 * no leaf digests, no list of the driver's copy; only the runs of
 * KC_BULK_READ_NAME, the rest is the caller's), start once CRIU returned
 * and it is ready, finish
 * before anything of the tree runs (every leaf in and checked, or the
 * error; a failed fill killed the processes it fills), free last.
 */
struct kc_uffd_fill;
int kc_uffd_fill_prepare(const char *images_dir, const char *dir, const struct kc_manifest *m,
			 const struct kc_bulk_region *v, size_t n, unsigned threads, struct kc_uffd_fill **f,
			 struct kc_error **err);
const char *kc_uffd_fill_socket(const struct kc_uffd_fill *f);
const char *kc_uffd_fill_runs(const struct kc_uffd_fill *f);
/* After CRIU: false where no process sent a userfaultfd (fill as before,
 * after kc_uffd_fill_free). */
bool kc_uffd_fill_ready(struct kc_uffd_fill *f);
int kc_uffd_fill_start(struct kc_uffd_fill *f, struct kc_error **err);
/* Of start: the time the memory outside the driver's copy took. */
double kc_uffd_fill_first_seconds(const struct kc_uffd_fill *f);
/* Whether some of it goes on beside the GPU restore. */
bool kc_uffd_fill_pending(const struct kc_uffd_fill *f);
uint64_t kc_uffd_fill_done(void *f);
uint64_t kc_uffd_fill_total(const struct kc_uffd_fill *f);
/* Failed by itself (a damaged image, a read error), not because a process
 * or a mapping of it went away: its error is then the one to report. */
bool kc_uffd_fill_failed(const struct kc_uffd_fill *f);
int kc_uffd_fill_finish(struct kc_uffd_fill *f, double *seconds, uint64_t *bytes, struct kc_error **err);
/* Stops its threads (a process waiting on a page then waits until it is
 * killed); free closes the userfaultfds, after which their VMAs are plain
 * memory. */
void kc_uffd_fill_stop(struct kc_uffd_fill *f);
void kc_uffd_fill_free(struct kc_uffd_fill *f);

/* A fill in progress for pid (bulk_fill.c): recover refuses to continue a
 * stopped pid with a mark. */
int kc_fillmark_set(pid_t pid, struct kc_error **err);
void kc_fillmark_clear(pid_t pid);
void kc_fillmark_stamp(pid_t pid);
bool kc_fillmark_blocks(pid_t pid);
/* The signal masks of pid's threads that a restore killed while it held
 * them (hold.c keeps "held-<tid>" marks in the run dir) are put back. */
void kc_holdmark_undo(pid_t pid);
/* Processes stopped when dumped, while a restore works on them (hold.c):
 * recover stops a process again whose mark is its own (and removes it). */
int kc_stopmark_set(pid_t pid, struct kc_error **err);
void kc_stopmark_clear(pid_t pid);
bool kc_stopmark_take(pid_t pid);
/* Removes the marks of processes that are gone. */
void kc_stopmark_sweep(void);
/* The restore thread of each process of both sets runs alone (hold.c);
 * *held gets them, each with its mark.  On failure the ones held so far
 * are in *held too: kc_release_threads lets them go. */
struct kc_gpu_set;
struct kc_held_thread;
int kc_hold_restore_threads(const struct kc_backends *b, const struct kc_gpu_set *a, const struct kc_gpu_set *c,
			    struct kc_held_thread **held, size_t *n_held, struct kc_error **err);
void kc_release_threads(struct kc_held_thread *h, size_t *n);
/* The driver asks a CUDA process' restore thread for everything but that
 * thread's id, and waits for it as long as it takes: on driver 580 a
 * get_state, lock or restore of a SIGSTOPped process never returned (run
 * 36).  If pid's restore thread is stopped it runs alone, as above, and
 * goes into held[*n_held] (room for one more needed); a process without
 * CUDA, gone or running needs nothing.  Exit 9 where another tracer has
 * it stopped. */
int kc_hold_if_stopped(const struct kc_backends *b, pid_t pid, struct kc_held_thread *held, size_t *n_held,
		       struct kc_error **err);
/* The same, with the restore thread's id already had from the driver. */
int kc_hold_tid_if_stopped(pid_t pid, pid_t tid, struct kc_held_thread *held, size_t *n_held, struct kc_error **err);
/* Whether a thread of pid is stopped: asking the driver about it needs
 * care (kc_hold_if_stopped, and the pid lock against another's hold). */
bool kc_needs_hold(pid_t pid);
/* Every thread of pid runs through ptrace, signals blocked, while its
 * process stays stopped (no SIGCONT: no handler runs, and a signal that
 * waits stays waiting): a lock or checkpoint needs the whole process
 * (run 37).  Threads they create are traced too, and held by
 * kc_held_call.  Appended to *held (realloc'ed); on failure the ones held
 * so far are there too. */
int kc_hold_all_threads(pid_t pid, struct kc_held_thread **held, size_t *n_held, struct kc_error **err);
/* fn(arg) in a thread of its own while this one, the tracer, keeps the
 * held threads running: a SIGSTOP sent meanwhile would stop one, and the
 * driver would wait for it forever.  Threads that held ones create
 * meanwhile (kc_hold_all_threads traces them) are appended to *held,
 * which must then be malloc'ed. */
int kc_held_call(struct kc_held_thread **held, size_t *n_held, int (*fn)(void *arg, struct kc_error **err),
		 void *arg, struct kc_error **err);
/* What kc_held_call does between two looks: stopped held threads
 * continued, created ones appended; before letting go of them too. */
void kc_held_settle(struct kc_held_thread **held, size_t *n_held);
/* Lets go of threads held by kc_hold_all_threads, those they created
 * included: all stopped first, then each let go. */
void kc_release_all_threads(struct kc_held_thread **held, size_t *n_held);

/* GPU devices a process still has open or mapped (gpu_devices.c). */
struct kc_gpu_dev_use {
	unsigned maps, fds;
	char example[256]; /* the first such file */
};
void kc_gpu_dev_scan(pid_t pid, struct kc_gpu_dev_use *u);
/* Before the GPU stage: every non-CUDA process holding GPU devices must be
 * a child forked after CUDA init (marked forked_after_cuda), and the CRIU
 * plugin that handles those must be there. */
int kc_gpu_dev_preflight(struct kc_manifest *m, bool have_plugin, struct kc_error **err);
/* After the GPU checkpoint: no CUDA process may still hold one. */
int kc_gpu_dev_after_checkpoint(const struct kc_manifest *m, struct kc_error **err);

#endif
