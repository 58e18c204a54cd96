/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ORCHESTRATOR_H
#define KC_ORCHESTRATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "kc/criu.h"
#include "kc/cuda.h"
#include "kc/archive.h"
#include "kc/error.h"
#include "kc/manifest.h"
#include "kc/nvml.h"
#include "kc/report.h"

/* Any of cuda / nvml may be NULL: no GPU stage / no GPU details. */
struct kc_backends {
	struct kc_cuda *cuda;
	struct kc_nvml *nvml;
	struct kc_criu *criu; /* the CPU stage: CRIU itself or containerd */
};

/* Smallest run of pages kept out of CRIU's images: below that, CRIU's own
 * one-thread restore costs less than a chunk of ours is worth. */
#define KC_BULK_MIN (4u << 20)

struct kc_dump_opts {
	pid_t pid;
	/* The processes to dump, pid first; NULL: pid and its descendants.
	 * A container's task lists its own (exec'd processes are not below
	 * its init). */
	const pid_t *pids;
	size_t n_pids;
	const char *images_dir;
	unsigned lock_timeout_ms;
	bool leave_running;
	/* Take runs of private memory of at least KC_BULK_MIN out of CRIU's
	 * images, for restore to fill with many threads (criu_bulk.c). */
	bool split_bulk;
	unsigned fill_threads; /* threads that read it, with a CRIU that leaves it to us */
	/* Fewer threads than this: CRIU reads it (its splice beats a few
	 * threads' copies; measured on 2 cores) */
	unsigned read_min_threads;
	struct kc_criu_opts criu;
	/* Non-NULL: the archive to write (atomically, never replacing a
	 * file) from the images dir, while the tree is still stopped and can
	 * be rolled back.  Memory the dump reads itself goes from the tree
	 * into the archive, not through the images dir. */
	const char *archive;
	struct kc_archive_opts archive_opts;
	/* With an archive and no images_dir: where the work dir goes (NULL:
	 * $TMPDIR, else /var/tmp) and whether it stays; the THP mode while
	 * the dump runs; quiet for notices. */
	const char *work_dir;
	bool keep_images;
	const char *thp;
	bool quiet;
	/* Test seam: runs after the archive (if any) was published. */
	int (*post_dump)(void *arg, const char *images_dir, struct kc_manifest *m,
			 struct kc_report *r, struct kc_error **err);
	void *post_dump_arg;
};

int kc_dump(const struct kc_dump_opts *o, const struct kc_backends *b, struct kc_manifest *m,
	    struct kc_report *r, struct kc_error **err);

struct kc_restore_opts {
	const char *images_dir;
	/* Non-NULL: an archive unpacked into images_dir up to its memory
	 * members (kc_archive_extract_begin), which fill the processes
	 * straight from it. */
	struct kc_archive_reader *archive;
	/* kc_restore_image: where an archive is unpacked (NULL: $TMPDIR, else
	 * /var/tmp), whether that dir stays, the THP mode while it runs, and
	 * quiet for its notices */
	const char *work_dir;
	bool keep_images;
	const char *thp;
	bool quiet;
	/* images_dir is this command's own (an unpacked archive): CRIU's log
	 * and stats may go there.  Otherwise they go to a private dir, so a
	 * read-only images dir restores and the image is left as it was. */
	bool images_private;
	const struct kc_gpu_pair *pairs;
	size_t n_pairs;
	unsigned pid_wait_ms;
	struct kc_criu_opts criu; /* criu_path/verbose; flags come from the manifest */
	/* Read the page images into the cache in parallel while CRIU restores. */
	bool prefetch;
	/* Threads that fill the memory kept out of CRIU's images. */
	unsigned fill_threads;
	/* Where THP is "madvise", have CRIU advise MADV_HUGEPAGE on the VMAs
	 * that memory fills (most of), so it faults in huge pages. */
	bool fill_huge;
	/* From an images dir with the memory's 1 MiB digests, to a CUDA
	 * process: the fill runs beside the GPU restore, each piece checked
	 * before the driver may read it (our CRIU hands over a userfaultfd). */
	bool fill_overlap;
	/* Optional: called after CRIU restored, before the GPU stage.  The CLI
	 * loads the driver (cuInit) in a thread meanwhile and joins it here, so
	 * driver start-up overlaps unpack and CRIU restore. */
	int (*gpu_ready)(void *arg, struct kc_error **err);
	void *gpu_ready_arg;
	/* The caller already checked pairs against this node's GPUs (without
	 * the driver).  Otherwise restore waits for the driver before CRIU
	 * when there are pairs: a wrong map must not cost a restore. */
	bool map_checked;
};

/* The link remaps the image needs (criu --link-remap) are on this node;
 * KC_EXIT_IMAGE naming the first one missing.  kc_restore checks too; a
 * caller with an archive checks before unpacking it. */
int kc_restore_check_links(const struct kc_manifest *m, struct kc_error **err);

/* Room in dir (where an archive is unpacked) for every member of the
 * manifest; KC_EXIT_IMAGE before anything is written otherwise. */
int kc_restore_check_space(const struct kc_manifest *m, const char *dir, struct kc_error **err);

int kc_restore(const struct kc_restore_opts *o, const struct kc_backends *b, struct kc_manifest *m,
	       struct kc_report *r, pid_t *root_pid, struct kc_error **err);
/* A --gpu-map against the GPUs the kernel module lists, before the driver
 * starts or anything is unpacked; *checked false where that cannot be
 * told (no module list, CUDA_VISIBLE_DEVICES): kc_restore then asks the
 * driver. */
int kc_restore_check_gpu_map(const struct kc_gpu_pair *pairs, size_t n_pairs, bool *checked, struct kc_error **err);
/* restore, whole: image is an archive or an images dir.  THP set and put
 * back; CRIU, link remaps and room checked before an archive is unpacked;
 * the archive unpacked up to its memory into a work dir, which goes at the
 * end (CRIU's log stays when CRIU failed); then kc_restore. */
int kc_restore_image(const struct kc_restore_opts *o, const char *image, const struct kc_backends *b,
		     struct kc_manifest *m, struct kc_report *r, pid_t *root_pid, struct kc_error **err);

struct kc_proc_state {
	pid_t pid;
	char comm[64];
	enum kc_cuda_state state; /* KC_CUDA_NONE: not a CUDA process */
	int restore_tid;          /* 0 if unknown */
	/* "running", "stopped", "traced" (by a CRIU, say), or "filling": stopped
	 * by a restore whose memory fill did not finish (recover refuses it) */
	const char *run;
};

/* The CUDA state of every process in the tree of pid. */
int kc_tree_state(pid_t pid, const struct kc_backends *b, struct kc_proc_state **out, size_t *n,
		  struct kc_error **err);
/* Brings every LOCKED/CHECKPOINTED process of the tree back to RUNNING. */
int kc_recover(pid_t pid, const struct kc_backends *b, struct kc_proc_state **out, size_t *n,
	       struct kc_error **err);

/* Runs fn(pid) for every pid, each in its own thread (the driver's
 * checkpoint calls are per process and run well in parallel).  ok[i]
 * tells which succeeded, secs[i] how long each took (both may be NULL);
 * the first failure in pid order goes to err. */
typedef int (*kc_pid_fn)(const struct kc_backends *b, pid_t pid, void *arg, struct kc_error **err);
int kc_parallel(const struct kc_backends *b, const pid_t *pids, size_t n, kc_pid_fn fn, void *arg,
		bool *ok, double *secs, struct kc_error **err);

#endif
