/* SPDX-License-Identifier: Apache-2.0 */
/* What archive_write.c and archive_read.c share: names, threads, I/O. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "archive_internal.h"
#include "kc/archive.h"
#include "kc/threads.h"
#include "kc/util.h"

int kc_archive_parse_compression(const char *spec, int *level, struct kc_error **err)
{
	if (!spec || strcmp(spec, "zstd") == 0) {
		*level = KC_ARCHIVE_DEFAULT_LEVEL;
		return 0;
	}
	if (strcmp(spec, "none") == 0) {
		*level = 0;
		return 0;
	}
	if (strncmp(spec, "zstd:", 5) == 0 && spec[5]) {
		char *end;
		errno = 0;
		long v = strtol(spec + 5, &end, 10);
		if (!errno && !*end && v >= 1 && v <= 19) {
			*level = (int)v;
			return 0;
		}
	}
	return kc_error_set(err, KC_EXIT_USAGE, 0, "invalid compression '%s': want zstd, zstd:LEVEL (1-19) or none",
			    spec);
}

bool kc_archive_is_bulk_member(const char *path)
{
	size_t n = strlen(path);
	return strncmp(path, "kcheckpoint-bulk-", 17) == 0 && !strchr(path, '/') && n > 21 &&
	       strcmp(path + n - 4, ".img") == 0;
}

uint64_t kc_archive_stats_done(void *st)
{
	return __atomic_load_n(&((struct kc_archive_stats *)st)->done, __ATOMIC_RELAXED);
}

uint64_t kc_archive_unpacked_bytes(const struct kc_manifest *m)
{
	bool streamed = kc_archive_bulk_last(m);
	uint64_t n = 0;
	for (size_t i = 0; i < m->n_members; i++)
		if (!streamed || !kc_archive_is_bulk_member(m->members[i].path))
			n += m->members[i].size;
	return n;
}

bool kc_archive_bulk_last(const struct kc_manifest *m)
{
	bool seen = false;
	for (size_t i = 0; i < m->n_members; i++) {
		bool b = kc_archive_is_bulk_member(m->members[i].path);
		if (seen && !b)
			return false;
		seen |= b;
	}
	return true;
}

bool kc_archive_is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

const char *kc_archive_path_problem(const char *path)
{
	if (!path || !*path)
		return "empty name";
	if (path[0] == '/')
		return "absolute path";
	if (strlen(path) > 4096)
		return "name too long";
	for (const unsigned char *c = (const unsigned char *)path; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return "control character in name";
	const char *p = path;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return "'..' in path";
		if (len == 0)
			return "empty path component";
		if (len == 1 && p[0] == '.')
			return "'.' in path";
		if (!slash)
			return NULL;
		p = slash + 1;
	}
}

int kc_archive_online_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}


static void *pool_main(void *arg)
{
	struct kc_ar_pool *p = arg;
	pthread_setname_np(pthread_self(), "kc-archive"); /* for top -H and bench/thread_sampler.py */
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->cv_work, &p->mu);
		if (!p->head)
			break;
		struct kc_ar_job *j = p->head;
		p->head = j->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);
		j->fn(j);
		pthread_mutex_lock(&p->mu);
		j->done = true;
		pthread_cond_broadcast(&p->cv_done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int kc_ar_pool_start(struct kc_ar_pool *p, int n, struct kc_error **err)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv_work, NULL);
	pthread_cond_init(&p->cv_done, NULL);
	p->threads = kc_xcalloc((size_t)n, sizeof(*p->threads));
	for (int i = 0; i < n; i++) {
		int r = kc_thread_start(&p->threads[i], pool_main, p);
		if (r) {
			kc_ar_pool_stop(p);
			return kc_error_errno(err, KC_EXIT_FAILURE, r, "cannot start a worker thread");
		}
		p->n++;
	}
	return 0;
}

void kc_ar_pool_submit(struct kc_ar_pool *p, struct kc_ar_job *j, kc_ar_job_fn fn)
{
	j->fn = fn;
	j->next = NULL;
	j->done = false;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
	pthread_cond_signal(&p->cv_work);
	pthread_mutex_unlock(&p->mu);
}

void kc_ar_pool_wait(struct kc_ar_pool *p, struct kc_ar_job *j)
{
	pthread_mutex_lock(&p->mu);
	while (!j->done)
		pthread_cond_wait(&p->cv_done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

/* Runs what is queued, then joins: callers own the jobs' memory. */
void kc_ar_pool_stop(struct kc_ar_pool *p)
{
	if (!p->threads)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv_work);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->n; i++)
		pthread_join(p->threads[i], NULL);
	free(p->threads);
	p->threads = NULL;
	pthread_cond_destroy(&p->cv_work);
	pthread_cond_destroy(&p->cv_done);
	pthread_mutex_destroy(&p->mu);
}

int kc_ar_errno_exit(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return KC_EXIT_NOENT;
	case EACCES:
	case EPERM:
	case EROFS:
		return KC_EXIT_PERM;
	case ENOSPC:
	case EDQUOT:
		/* as every other "no room" of an image (free-space checks) */
		return KC_EXIT_IMAGE;
	default:
		return KC_EXIT_FAILURE;
	}
}
