/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_REPORT_H
#define KC_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kc/criu.h"

#define KC_REPORT_MAX_STAGES 32

struct kc_stage {
	char name[32];
	double seconds;
	uint64_t bytes;     /* 0: not applicable (no GB/s printed) */
	uint64_t bytes_out; /* archive/unpack: the compressed side */
};

struct kc_report {
	const char *command; /* "dump", "restore" */
	struct kc_stage stages[KC_REPORT_MAX_STAGES];
	size_t n_stages;
	double started; /* kc_now() at start */
	double total_s;
	struct kc_criu_stats criu; /* CRIU's own figures, when it wrote them */
	pid_t root_pid;
};

void kc_report_init(struct kc_report *r, const char *command);
void kc_report_add(struct kc_report *r, const char *name, double seconds, uint64_t bytes);
/* A stage that reads one size and writes another (GB/s counts bytes_in). */
void kc_report_add_io(struct kc_report *r, const char *name, double seconds, uint64_t bytes_in,
		      uint64_t bytes_out);
/* Time of a named stage, -1 if absent. */
double kc_report_seconds(const struct kc_report *r, const char *name);
void kc_report_finish(struct kc_report *r);
/* Aligned table: stage, seconds, bytes, GB/s, then total, then CRIU's
 * own figures. */
void kc_report_print(const struct kc_report *r, FILE *f);
/* The --json document (json_object *, schema in the man page). */
void *kc_report_to_json(const struct kc_report *r);

/*
 * Live progress of a stage, on stderr: on a terminal one line
 * "<stage>  12.3 s  4.1 GB / 26.3 GB  16%  3.2 GB/s  ETA 7 s"; with
 * KC_PROGRESS_JSON one JSON object per line and second
 * ({"stage","seconds","bytes","total","percent","bytes_per_second",
 * "eta_seconds"}, the unknown ones null) for CI dashboards.  bytes_fn may
 * be NULL; it runs on the progress thread.  A signal that arrives while a
 * stage runs on is announced unless quiet.
 */
enum kc_progress_mode { KC_PROGRESS_NONE, KC_PROGRESS_TTY, KC_PROGRESS_JSON };
struct kc_progress;
struct kc_progress *kc_progress_start(const char *stage, uint64_t (*bytes_fn)(void *arg), void *arg);
/* The stage's byte total, when it is known (for %, ETA). */
void kc_progress_total(struct kc_progress *p, uint64_t total);
void kc_progress_stop(struct kc_progress *p);
/* Set by the CLI from --progress, isatty and -q. */
extern enum kc_progress_mode kc_progress_mode;
extern bool kc_progress_quiet;

#endif
