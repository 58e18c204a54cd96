/* SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kc/report.h"
#include "kc/signals.h"
#include "kc/threads.h"
#include "kc/util.h"

enum kc_progress_mode kc_progress_mode;
bool kc_progress_quiet;

void kc_report_init(struct kc_report *r, const char *command)
{
	memset(r, 0, sizeof(*r));
	r->command = command;
	r->started = kc_now();
}

void kc_report_add(struct kc_report *r, const char *name, double seconds, uint64_t bytes)
{
	if (r->n_stages == KC_REPORT_MAX_STAGES)
		return;
	struct kc_stage *s = &r->stages[r->n_stages++];
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->seconds = seconds;
	s->bytes = bytes;
}

void kc_report_add_io(struct kc_report *r, const char *name, double seconds, uint64_t bytes_in,
		      uint64_t bytes_out)
{
	kc_report_add(r, name, seconds, bytes_in);
	if (r->n_stages)
		r->stages[r->n_stages - 1].bytes_out = bytes_out;
}

double kc_report_seconds(const struct kc_report *r, const char *name)
{
	for (size_t i = 0; i < r->n_stages; i++)
		if (strcmp(r->stages[i].name, name) == 0)
			return r->stages[i].seconds;
	return -1;
}

void kc_report_finish(struct kc_report *r)
{
	r->total_s = kc_now() - r->started;
}

static void print_row(FILE *f, const struct kc_stage *s)
{
	char b[32] = "-", rate[32] = "-", out[32] = "";
	if (s->bytes) {
		kc_format_bytes(s->bytes, b, sizeof(b));
		if (s->seconds > 0)
			snprintf(rate, sizeof(rate), "%.2f", (double)s->bytes / s->seconds / 1e9);
	}
	if (s->bytes_out)
		kc_format_bytes(s->bytes_out, out, sizeof(out));
	fprintf(f, "  %-16s %9.3f %12s %8s %12s\n", s->name, s->seconds, b, rate, out);
}

void kc_report_print(const struct kc_report *r, FILE *f)
{
	fprintf(f, "  %-16s %9s %12s %8s %12s\n", "stage", "seconds", "bytes", "GB/s", "archive");
	double sum = 0;
	for (size_t i = 0; i < r->n_stages; i++) {
		print_row(f, &r->stages[i]);
		sum += r->stages[i].seconds;
	}
	/* the total is wall time: it also counts what no stage covers */
	fprintf(f, "  %-16s %9.3f\n", "total", r->total_s > 0 ? r->total_s : sum);
	const struct kc_criu_stats *c = &r->criu;
	if (c->have_dump)
		fprintf(f, "  criu: freezing %.3f s, frozen %.3f s, memdump %.3f s, memwrite %.3f s, "
			   "pages scanned %llu, written %llu\n",
			c->freezing_s, c->frozen_s, c->memdump_s, c->memwrite_s,
			(unsigned long long)c->pages_scanned, (unsigned long long)c->pages_written);
	if (c->have_restore)
		fprintf(f, "  criu: forking %.3f s, restore %.3f s, pages restored %llu\n", c->forking_s,
			c->restore_s, (unsigned long long)c->pages_restored);
}

struct kc_progress {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	char stage[32];
	double started;
	uint64_t (*bytes_fn)(void *arg);
	void *arg;
	uint64_t total; /* 0: unknown */
	enum kc_progress_mode mode;
	bool noticed;  /* the interruption was announced */
	double last_json;
};

static void put_json_line(struct kc_progress *p, double el, bool have, uint64_t bytes, double rate)
{
	char pct[32] = "null", eta[32] = "null", rt[32] = "null", tot[32] = "null", by[32] = "null";
	if (have) {
		snprintf(by, sizeof(by), "%llu", (unsigned long long)bytes);
		snprintf(rt, sizeof(rt), "%.0f", rate);
	}
	if (have && p->total) {
		snprintf(tot, sizeof(tot), "%llu", (unsigned long long)p->total);
		snprintf(pct, sizeof(pct), "%.1f", 100.0 * (double)bytes / (double)p->total);
		if (rate > 0 && bytes <= p->total)
			snprintf(eta, sizeof(eta), "%.1f", (double)(p->total - bytes) / rate);
	}
	fprintf(stderr,
		"{\"schema_version\":1,\"stage\":\"%s\",\"seconds\":%.1f,\"bytes\":%s,\"total\":%s,\"percent\":%s,"
		"\"bytes_per_second\":%s,\"eta_seconds\":%s}\n",
		p->stage, el, by, tot, pct, rt, eta);
}

static void put_tty_line(struct kc_progress *p, double el, bool have, uint64_t bytes, double rate)
{
	char line[160];
	int n = snprintf(line, sizeof(line), "%s  %.1f s", p->stage, el);
	if (have && n > 0 && (size_t)n < sizeof(line)) {
		char b[32], t[32], r[32];
		kc_format_bytes(bytes, b, sizeof(b));
		kc_format_bytes((uint64_t)rate, r, sizeof(r));
		if (p->total) {
			kc_format_bytes(p->total, t, sizeof(t));
			double left = rate > 0 && bytes <= p->total ? (double)(p->total - bytes) / rate : -1;
			n += snprintf(line + n, sizeof(line) - (size_t)n, "  %s / %s  %.0f%%  %s/s", b, t,
				      100.0 * (double)bytes / (double)p->total, r);
			if (left >= 0 && (size_t)n < sizeof(line))
				snprintf(line + n, sizeof(line) - (size_t)n, "  ETA %.0f s", left);
		} else {
			snprintf(line + n, sizeof(line) - (size_t)n, "  %s  %s/s", b, r);
		}
	}
	fprintf(stderr, "\r\033[K%s", line);
}

static void *progress_main(void *p_)
{
	struct kc_progress *p = p_;
	pthread_mutex_lock(&p->lock);
	while (!p->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cond, &p->lock, &ts);
		if (p->stop)
			break;
		double el = kc_now() - p->started;
		/* a signal is acted on between stages: say so while one runs
		 * on (CRIU cannot be stopped halfway without harm to the tree) */
		int sig = kc_signals_pending();
		if (sig && !p->noticed && !kc_progress_quiet) {
			p->noticed = true;
			fprintf(stderr, "%skcheckpoint: %s received: rolling back as soon as %s allows\n",
				p->mode == KC_PROGRESS_TTY ? "\r\033[K" : "", strsignal(sig), p->stage);
			fflush(stderr);
		}
		/* stay quiet for short stages: no flicker, no noise */
		if (p->mode == KC_PROGRESS_NONE || el < 1.0)
			continue;
		if (p->mode == KC_PROGRESS_JSON && el - p->last_json < 1.0)
			continue;
		bool have = p->bytes_fn != NULL;
		uint64_t bytes = have ? p->bytes_fn(p->arg) : 0;
		double rate = el > 0 ? (double)bytes / el : 0;
		if (p->mode == KC_PROGRESS_JSON) {
			p->last_json = el;
			put_json_line(p, el, have, bytes, rate);
		} else {
			put_tty_line(p, el, have, bytes, rate);
		}
		fflush(stderr);
	}
	pthread_mutex_unlock(&p->lock);
	if (p->mode == KC_PROGRESS_TTY && kc_now() - p->started >= 1.0) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
	}
	return NULL;
}

void kc_progress_total(struct kc_progress *p, uint64_t total)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->total = total;
	pthread_mutex_unlock(&p->lock);
}

/*
 * Test seam for the fault-injection walk (tests/integration/test_fault_walk.py):
 * KCHECKPOINT_TEST_PAUSE=<stage> stops at the start of that stage, after
 * creating KCHECKPOINT_TEST_PAUSE_FILE, until a signal comes or the file
 * is removed (30 s at most), so a test can signal or SIGKILL kcheckpoint
 * in a known stage, or look at the processes there.
 */
static void test_pause(const char *stage)
{
	const char *at = getenv("KCHECKPOINT_TEST_PAUSE");
	if (!at || strcmp(at, stage) != 0)
		return;
	const char *file = getenv("KCHECKPOINT_TEST_PAUSE_FILE");
	if (file) {
		FILE *f = fopen(file, "we");
		if (f)
			fclose(f);
	}
	/* removing the file lets it go on */
	for (int i = 0; i < 3000 && !kc_signals_pending() && (!file || access(file, F_OK) == 0); i++) {
		struct timespec ts = {0, 10000000L};
		nanosleep(&ts, NULL);
	}
}

struct kc_progress *kc_progress_start(const char *stage, uint64_t (*bytes_fn)(void *arg), void *arg)
{
	test_pause(stage);
	struct kc_progress *p = kc_xcalloc(1, sizeof(*p));
	p->mode = kc_progress_quiet ? KC_PROGRESS_NONE : kc_progress_mode;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	snprintf(p->stage, sizeof(p->stage), "%s", stage);
	p->started = kc_now();
	p->bytes_fn = bytes_fn;
	p->arg = arg;
	if (kc_thread_start(&p->thread, progress_main, p) != 0) {
		free(p);
		return NULL;
	}
	return p;
}

void kc_progress_stop(struct kc_progress *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}

#include <json-c/json.h>

void *kc_report_to_json(const struct kc_report *r)
{
	json_object *o = json_object_new_object();
	json_object_object_add(o, "command", json_object_new_string(r->command ? r->command : ""));
	json_object *stages = json_object_new_array();
	for (size_t i = 0; i < r->n_stages; i++) {
		const struct kc_stage *s = &r->stages[i];
		json_object *so = json_object_new_object();
		json_object_object_add(so, "stage", json_object_new_string(s->name));
		json_object_object_add(so, "seconds", json_object_new_double(s->seconds));
		json_object_object_add(so, "bytes", json_object_new_uint64(s->bytes));
		if (s->bytes_out)
			json_object_object_add(so, "bytes_out", json_object_new_uint64(s->bytes_out));
		json_object_object_add(so, "gb_per_s", s->bytes && s->seconds > 0
							       ? json_object_new_double((double)s->bytes / s->seconds / 1e9)
							       : json_object_new_null());
		json_object_array_add(stages, so);
	}
	json_object_object_add(o, "stages", stages);
	json_object_object_add(o, "total_seconds", json_object_new_double(r->total_s));
	if (r->root_pid)
		json_object_object_add(o, "root_pid", json_object_new_int(r->root_pid));
	const struct kc_criu_stats *c = &r->criu;
	if (c->have_dump || c->have_restore) {
		json_object *co = json_object_new_object();
		if (c->have_dump) {
			json_object_object_add(co, "freezing_seconds", json_object_new_double(c->freezing_s));
			json_object_object_add(co, "frozen_seconds", json_object_new_double(c->frozen_s));
			json_object_object_add(co, "memdump_seconds", json_object_new_double(c->memdump_s));
			json_object_object_add(co, "memwrite_seconds", json_object_new_double(c->memwrite_s));
			json_object_object_add(co, "pages_scanned", json_object_new_uint64(c->pages_scanned));
			json_object_object_add(co, "pages_written", json_object_new_uint64(c->pages_written));
		}
		if (c->have_restore) {
			json_object_object_add(co, "forking_seconds", json_object_new_double(c->forking_s));
			json_object_object_add(co, "restore_seconds", json_object_new_double(c->restore_s));
			json_object_object_add(co, "pages_restored", json_object_new_uint64(c->pages_restored));
		}
		json_object_object_add(o, "criu", co);
	}
	return o;
}
