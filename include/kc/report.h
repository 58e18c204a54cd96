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
 * One-line live progress on a terminal: "<stage>  12.3 s  4.1 GB".
 * Does nothing unless stderr is a tty and quiet is off.  bytes_fn may be
 * NULL; it runs on the progress thread.
 */
struct kc_progress;
struct kc_progress *kc_progress_start(const char *stage, uint64_t (*bytes_fn)(void *arg), void *arg);
void kc_progress_stop(struct kc_progress *p);
/* Global switch set by main from -q / isatty. */
extern bool kc_progress_enabled;

#endif
