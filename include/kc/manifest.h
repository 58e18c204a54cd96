/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_MANIFEST_H
#define KC_MANIFEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "kc/cuda.h"
#include "kc/error.h"
#include "kc/report.h"

#define KC_MANIFEST_NAME "kcheckpoint.json"
/* The newest format this kcheckpoint reads.  Format 2: the image keeps
 * memory outside CRIU's page images (kcheckpoint-bulk.txt), which an older
 * kcheckpoint would restore as zeros, so it must refuse the image. */
#define KC_MANIFEST_FORMAT 2
#define KC_MANIFEST_FORMAT_PLAIN 1
#define KC_MANIFEST_FORMAT_BULK 2

struct kc_manifest_proc {
	pid_t pid;
	pid_t ppid;
	char comm[64];
	bool cuda;                     /* a CUDA process when dumped */
	/* no CUDA context, but GPU device maps or files inherited from a CUDA
	 * parent (a worker forked after CUDA init): kcheckpoint's CRIU plugin
	 * brings them back as stand-ins */
	bool forked_after_cuda;
	/* stopped (SIGSTOP, ^Z) when dumped: a restore leaves it stopped */
	bool stopped;
	enum kc_cuda_state cuda_state; /* state found before the dump */
	char **gpus;                   /* NULL-terminated GPU UUIDs (NVML) */
	uint64_t vram_bytes;
	double lock_s, checkpoint_s;
};

/* One file of the image, as recorded for archives (see archive.h). */
struct kc_manifest_member {
	char *path; /* relative to the image root */
	uint64_t size;
	char sha256[65];
};

struct kc_manifest {
	int format;
	char *tool_version;
	char *kernel;
	char *driver_version; /* NVML's string, NULL without NVML */
	int cuda_driver_version; /* cuDriverGetVersion, 0 without libcuda */
	char *criu_version;
	char *host;
	char *created; /* UTC, ISO 8601 */
	pid_t root_pid;
	struct kc_manifest_proc *procs;
	size_t n_procs;
	uint64_t vram_bytes; /* sum over procs */
	char **node_gpus;    /* NULL-terminated UUIDs of every GPU the node had */
	bool tcp_established, tcp_close, shell_job, file_locks, link_remap;
	char **criu_extra; /* NULL-terminated --criu-opt of the dump, or NULL */
	/* Hard links CRIU left on the dumping node for deleted files that had
	 * another name (--link-remap); a restore needs them, and removes them. */
	char **link_remaps;
	struct kc_stage stages[KC_REPORT_MAX_STAGES];
	size_t n_stages;
	struct kc_manifest_member *members;
	size_t n_members;
	char *compression; /* "zstd:3", "none"; NULL for an image dir */
	/* Opaque extension objects (json-c), owned: containerd section. */
	void *containerd;
};

void kc_manifest_init(struct kc_manifest *m);
void kc_manifest_free(struct kc_manifest *m);
struct kc_manifest_proc *kc_manifest_add_proc(struct kc_manifest *m);
void kc_manifest_add_member(struct kc_manifest *m, const char *path, uint64_t size, const char *sha256);

/* Serialises to a malloc()ed, pretty-printed JSON string. */
char *kc_manifest_to_string(const struct kc_manifest *m);
/* KC_EXIT_IMAGE with a clear reason on anything malformed. */
int kc_manifest_parse(const char *json, size_t len, struct kc_manifest *m, struct kc_error **err);
int kc_manifest_write(const struct kc_manifest *m, const char *dir, struct kc_error **err);
/* KC_EXIT_IMAGE "'<dir>' is not a kcheckpoint image" when absent. */
int kc_manifest_read(const char *dir, struct kc_manifest *m, struct kc_error **err);

#endif
