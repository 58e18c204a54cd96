/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_ARCHIVE_INTERNAL_H
#define KC_ARCHIVE_INTERNAL_H

/* Shared by archive_*.c and sha256.c; tests and the fuzz target include it too. */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kc/error.h"
#include "kc/sha256.h"

/*
 * Member checksums are SHA-256 tree hashes over 1 MiB leaves (the scheme
 * of Amazon Glacier): leaf = SHA-256(chunk), parent = SHA-256(left||right),
 * pairs formed left to right, an odd last node promoted unchanged.  A
 * member of at most 1 MiB therefore has its plain SHA-256 (sha256sum can
 * check it); an empty one has SHA-256("").  Why not plain SHA-256: one
 * core hashes 1.3 GB/s with SHA-NI on the 16-core Xeon we target, and a
 * GPU process's image is mostly one pages-N.img; leaves let every core
 * hash one file, so neither dump nor restore is held to one core's speed.
 */
#define KC_ARCHIVE_LEAF ((size_t)1 << 20)

/*
 * zstd archives are a run of independent frames of at most
 * KC_ARCHIVE_JOB_CAP bytes of tar each, every one preceded by a skippable
 * frame of this magic whose 4-byte payload is the frame's compressed size,
 * so a reader can hand whole frames to threads (pzstd's layout; plain
 * zstd skips the hints).
 */
#define KC_ARCHIVE_JOB_CAP (KC_ARCHIVE_LEAF + ((size_t)64 << 10))
#define KC_ZSTD_HINT_MAGIC 0x184D2A5BU

/*
 * Member paths are relative, canonical ("a/b", never "./a", "a//b", "a/",
 * "..", a leading "/") and free of control characters.  Returns NULL when
 * safe, otherwise why not.
 */
const char *kc_archive_path_problem(const char *path);

/* The CPUs this process may run on (affinity mask, so cgroup cpusets count). */
int kc_archive_online_cpus(void);

/*
 * Worker threads: a FIFO of jobs run by n threads with every signal
 * blocked (SIGINT only sets a flag the main thread polls).
 */
struct kc_ar_job;
typedef void (*kc_ar_job_fn)(struct kc_ar_job *j);
struct kc_ar_job {
	kc_ar_job_fn fn;
	struct kc_ar_job *next;
	bool done;
};

struct kc_ar_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done;
	struct kc_ar_job *head, *tail;
	pthread_t *threads;
	int n;
	bool stop;
};

int kc_ar_pool_start(struct kc_ar_pool *p, int n, struct kc_error **err);
void kc_ar_pool_submit(struct kc_ar_pool *p, struct kc_ar_job *j, kc_ar_job_fn fn);
void kc_ar_pool_wait(struct kc_ar_pool *p, struct kc_ar_job *j);
void kc_ar_pool_stop(struct kc_ar_pool *p);

/* write() until done, EINTR-safe; pwrite likewise. -1 with errno set. */

/* KC_EXIT_* for an errno met opening or creating something. */
int kc_ar_errno_exit(int e);

#endif
