/* SPDX-License-Identifier: Apache-2.0 */
/* See mock_backends.h.  Included once by each test that needs it. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/signals.h"
#include "kc/util.h"
#include "mock_backends.h"

struct mock_rule {
	enum kc_mock_op op;
	unsigned nth;
	pid_t pid;
	int cause; /* fail with this, or */
	int sig;   /* raise this */
	unsigned seen;
};

struct mock_proc {
	pid_t pid;
	enum kc_cuda_state st;
};

static struct {
	pthread_mutex_t lock;
	struct mock_proc procs[128];
	size_t n_procs;
	char **log;
	size_t n_log, cap_log;
	struct mock_rule rules[32];
	size_t n_rules;
	unsigned calls[KC_MOCK_N_OPS], in_flight[KC_MOCK_N_OPS], max_in_flight[KC_MOCK_N_OPS];
	unsigned sleep_ms[KC_MOCK_N_OPS];
	unsigned illegal;
	unsigned last_timeout_ms;
	size_t last_n_pairs;
	struct kc_gpu_pair last_pair;
	int driver_version;
	pid_t restore_root;
	char *dump_stats;
	bool finish_kills;
	struct kc_gpu_proc gpu_procs[32];
	size_t n_gpu_procs;
	struct kc_uuid gpus[8];
	size_t n_gpus;
	struct kc_mock_criu_calls criu;
} mk = {.lock = PTHREAD_MUTEX_INITIALIZER, .driver_version = 13000};

static const char *const op_names[KC_MOCK_N_OPS] = {
	[KC_MOCK_LOCK] = "lock",
	[KC_MOCK_CHECKPOINT] = "checkpoint",
	[KC_MOCK_RESTORE] = "restore",
	[KC_MOCK_UNLOCK] = "unlock",
	[KC_MOCK_GET_STATE] = "get state",
	[KC_MOCK_GET_RESTORE_TID] = "get restore tid",
	[KC_MOCK_DRIVER_VERSION] = "driver version",
	[KC_MOCK_CRIU_VERSION] = "criu-version",
	[KC_MOCK_CRIU_CHECK] = "criu-check",
	[KC_MOCK_CRIU_DUMP] = "criu-dump",
	[KC_MOCK_CRIU_RESTORE] = "criu-restore",
	[KC_MOCK_CRIU_FINISH] = "criu-finish",
	[KC_MOCK_CRIU_RESUME] = "criu-resume",
	[KC_MOCK_CRIU_DISCARD] = "criu-discard",
};

/* ---- bookkeeping (mk.lock held) ---- */

static void log_add_locked(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void log_add_locked(const char *fmt, va_list ap)
{
	if (mk.n_log == mk.cap_log) {
		mk.cap_log = mk.cap_log ? mk.cap_log * 2 : 32;
		mk.log = kc_xrealloc(mk.log, mk.cap_log * sizeof(char *));
	}
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	mk.log[mk.n_log++] = s;
}

static void log_locked(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_locked(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_add_locked(fmt, ap);
	va_end(ap);
}

static struct mock_proc *find_proc(pid_t pid)
{
	for (size_t i = 0; i < mk.n_procs; i++)
		if (mk.procs[i].pid == pid)
			return &mk.procs[i];
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * Counts the call, sleeps if asked (without the lock, so that parallel
 * calls really overlap), applies the rules.  Returns the cause to fail
 * with, 0 for none.  Pair with leave().
 */
static int enter(enum kc_mock_op op, pid_t pid)
{
	int cause = 0, sig = 0;
	mk.calls[op]++;
	for (size_t i = 0; i < mk.n_rules; i++) {
		struct mock_rule *r = &mk.rules[i];
		if (r->op != op || (r->pid && r->pid != pid))
			continue;
		r->seen++;
		if (r->nth && r->seen != r->nth)
			continue;
		if (r->sig)
			sig = r->sig;
		else if (!cause)
			cause = r->cause;
	}
	if (++mk.in_flight[op] > mk.max_in_flight[op])
		mk.max_in_flight[op] = mk.in_flight[op];
	if (mk.sleep_ms[op]) {
		unsigned ms = mk.sleep_ms[op];
		pthread_mutex_unlock(&mk.lock);
		sleep_ms(ms);
		pthread_mutex_lock(&mk.lock);
	}
	/* the signal arrives while the step is under way */
	if (sig)
		kc_signals_raise_for_test(sig);
	return cause;
}

static void leave(enum kc_mock_op op)
{
	mk.in_flight[op]--;
}

/* As src/backend/cuda.c words and classifies driver errors. */
static int cuda_error(enum kc_mock_op op, int cause, struct kc_error **err)
{
	char buf[32];
	int exit_code = KC_EXIT_GPU;
	if (op == KC_MOCK_LOCK && cause == KC_CUDA_ERROR_NOT_READY)
		exit_code = KC_EXIT_BUSY;
	else if (cause == KC_CUDA_ERROR_OPERATING_SYSTEM)
		exit_code = KC_EXIT_NOENT;
	return kc_error_set(err, exit_code, cause, "%s: %s (%d)", op_names[op], kc_cuda_result_name(cause, buf),
			    cause);
}

/* ---- CUDA ---- */

static int cuda_step(enum kc_mock_op op, pid_t pid, enum kc_cuda_state from, enum kc_cuda_state to,
		     struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	int cause = enter(op, pid);
	struct mock_proc *p = find_proc(pid);
	if (!cause && (!p || p->st == KC_CUDA_NONE)) {
		cause = KC_CUDA_ERROR_NOT_INITIALIZED;
		mk.illegal++;
	} else if (!cause && p->st != from) {
		cause = KC_CUDA_ERROR_ILLEGAL_STATE;
		mk.illegal++;
	}
	if (cause) {
		log_locked("%s %d failed", op_names[op], (int)pid);
	} else {
		p->st = to;
		log_locked("%s %d", op_names[op], (int)pid);
	}
	leave(op);
	pthread_mutex_unlock(&mk.lock);
	return cause ? cuda_error(op, cause, err) : 0;
}

static int mock_driver_version(void *h, int *version, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	int cause = enter(KC_MOCK_DRIVER_VERSION, 0);
	*version = mk.driver_version;
	leave(KC_MOCK_DRIVER_VERSION);
	pthread_mutex_unlock(&mk.lock);
	return cause ? cuda_error(KC_MOCK_DRIVER_VERSION, cause, err) : 0;
}

static int mock_get_state(void *h, pid_t pid, enum kc_cuda_state *state, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	int cause = enter(KC_MOCK_GET_STATE, pid);
	struct mock_proc *p = find_proc(pid);
	if (!cause)
		*state = p ? p->st : KC_CUDA_NONE;
	leave(KC_MOCK_GET_STATE);
	pthread_mutex_unlock(&mk.lock);
	return cause ? cuda_error(KC_MOCK_GET_STATE, cause, err) : 0;
}

static int mock_get_restore_tid(void *h, pid_t pid, int *tid, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	int cause = enter(KC_MOCK_GET_RESTORE_TID, pid);
	struct mock_proc *p = find_proc(pid);
	if (!cause && (!p || p->st == KC_CUDA_NONE))
		cause = KC_CUDA_ERROR_NOT_INITIALIZED;
	if (!cause)
		*tid = KC_MOCK_RESTORE_TID(pid);
	leave(KC_MOCK_GET_RESTORE_TID);
	pthread_mutex_unlock(&mk.lock);
	return cause ? cuda_error(KC_MOCK_GET_RESTORE_TID, cause, err) : 0;
}

static int mock_lock(void *h, pid_t pid, unsigned timeout_ms, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	mk.last_timeout_ms = timeout_ms;
	pthread_mutex_unlock(&mk.lock);
	return cuda_step(KC_MOCK_LOCK, pid, KC_CUDA_RUNNING, KC_CUDA_LOCKED, err);
}

static int mock_checkpoint(void *h, pid_t pid, struct kc_error **err)
{
	return cuda_step(KC_MOCK_CHECKPOINT, pid, KC_CUDA_LOCKED, KC_CUDA_CHECKPOINTED, err);
}

static int mock_restore(void *h, pid_t pid, const struct kc_gpu_pair *pairs, size_t n_pairs,
			struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	mk.last_n_pairs = n_pairs;
	if (n_pairs)
		mk.last_pair = pairs[0];
	pthread_mutex_unlock(&mk.lock);
	return cuda_step(KC_MOCK_RESTORE, pid, KC_CUDA_CHECKPOINTED, KC_CUDA_LOCKED, err);
}

static int mock_unlock(void *h, pid_t pid, struct kc_error **err)
{
	return cuda_step(KC_MOCK_UNLOCK, pid, KC_CUDA_LOCKED, KC_CUDA_RUNNING, err);
}

static void mock_cuda_close(void *h)
{
}

static int mock_list_gpus(void *h, struct kc_uuid **uuids, size_t *n, struct kc_error **err)
{
	*uuids = kc_xcalloc(mk.n_gpus + 1, sizeof(**uuids));
	memcpy(*uuids, mk.gpus, mk.n_gpus * sizeof(**uuids));
	*n = mk.n_gpus;
	return 0;
}

static const struct kc_cuda_ops mock_cuda_ops = {
	.driver_version = mock_driver_version,
	.get_state = mock_get_state,
	.get_restore_tid = mock_get_restore_tid,
	.lock = mock_lock,
	.checkpoint = mock_checkpoint,
	.restore = mock_restore,
	.unlock = mock_unlock,
	.list_gpus = mock_list_gpus,
	.close = mock_cuda_close,
};

/* ---- NVML ---- */

static int mock_nvml_driver_version(void *h, char *buf, size_t len, struct kc_error **err)
{
	snprintf(buf, len, "580.65.06");
	return 0;
}

static int mock_nvml_list_gpus(void *h, struct kc_gpu_info **gpus, size_t *n, struct kc_error **err)
{
	*gpus = kc_xcalloc(1, sizeof(**gpus));
	snprintf((*gpus)[0].uuid, sizeof((*gpus)[0].uuid), "GPU-00000000-0000-0000-0000-000000000001");
	snprintf((*gpus)[0].name, sizeof((*gpus)[0].name), "Mock H100");
	*n = 1;
	return 0;
}

static int mock_nvml_list_procs(void *h, struct kc_gpu_proc **procs, size_t *n, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	*n = mk.n_gpu_procs;
	*procs = kc_xcalloc(*n ? *n : 1, sizeof(**procs));
	memcpy(*procs, mk.gpu_procs, *n * sizeof(**procs));
	pthread_mutex_unlock(&mk.lock);
	return 0;
}

static void mock_nvml_close(void *h)
{
}

static const struct kc_nvml_ops mock_nvml_ops = {
	.driver_version = mock_nvml_driver_version,
	.list_gpus = mock_nvml_list_gpus,
	.list_procs = mock_nvml_list_procs,
	.close = mock_nvml_close,
};

/* ---- CRIU ---- */

static int criu_error(enum kc_mock_op op, int cause, struct kc_error **err)
{
	return kc_error_set(err, KC_EXIT_CRIU, cause, "%s failed (mock, cause %d)", op_names[op], cause);
}

/* The common shape: count, log "<name>" or "<name> failed". */
static int criu_call(enum kc_mock_op op, pid_t pid, struct kc_error **err)
{
	int cause = enter(op, pid);
	log_locked("%s%s", op_names[op], cause ? " failed" : "");
	leave(op);
	return cause;
}

static int mock_criu_version(void *h, const struct kc_criu_opts *o, char **version, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	int cause = enter(KC_MOCK_CRIU_VERSION, 0);
	leave(KC_MOCK_CRIU_VERSION);
	pthread_mutex_unlock(&mk.lock);
	if (cause)
		return criu_error(KC_MOCK_CRIU_VERSION, cause, err);
	*version = kc_xstrdup("4.1.1");
	return 0;
}

static int mock_criu_check(void *h, const struct kc_criu_opts *o, char **output, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	int cause = enter(KC_MOCK_CRIU_CHECK, 0);
	leave(KC_MOCK_CRIU_CHECK);
	pthread_mutex_unlock(&mk.lock);
	if (cause)
		return criu_error(KC_MOCK_CRIU_CHECK, cause, err);
	*output = kc_xstrdup("Looks good.\n");
	return 0;
}

static int put_file(const char *dir, const char *name, const void *buf, size_t len, struct kc_error **err)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, name);
	return kc_write_file_atomic(path, buf, len, 0600, err);
}

static int mock_criu_dump(void *h, const struct kc_criu_opts *o, pid_t pid, const char *images_dir,
			  struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	mk.criu.dump_pid = pid;
	mk.criu.dump_opts = *o;
	snprintf(mk.criu.dump_dir, sizeof(mk.criu.dump_dir), "%s", images_dir);
	int cause = criu_call(KC_MOCK_CRIU_DUMP, pid, err);
	_cleanup_free_ char *stats = mk.dump_stats ? kc_xstrdup(mk.dump_stats) : NULL;
	pthread_mutex_unlock(&mk.lock);
	if (cause)
		return criu_error(KC_MOCK_CRIU_DUMP, cause, err);

	/* something for the report to measure, and CRIU's own figures */
	static const char pages[8192] = {1};
	if (put_file(images_dir, "pages-1.img", pages, sizeof(pages), err) < 0)
		return -1;
	if (stats) {
		_cleanup_free_ char *buf = NULL;
		size_t len;
		if (kc_read_file(stats, &buf, &len, err) < 0 || put_file(images_dir, "stats-dump", buf, len, err) < 0)
			return -1;
	}
	return 0;
}

static int mock_criu_restore(void *h, const struct kc_criu_opts *o, const char *images_dir, pid_t *root_pid,
			     struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	mk.criu.restore_opts = *o;
	snprintf(mk.criu.restore_dir, sizeof(mk.criu.restore_dir), "%s", images_dir);
	int cause = criu_call(KC_MOCK_CRIU_RESTORE, 0, err);
	if (!cause)
		*root_pid = mk.restore_root;
	pthread_mutex_unlock(&mk.lock);
	return cause ? criu_error(KC_MOCK_CRIU_RESTORE, cause, err) : 0;
}

static void copy_pids(pid_t *dst, size_t *n_dst, const pid_t *src, size_t n)
{
	*n_dst = n < 64 ? n : 64;
	memcpy(dst, src, *n_dst * sizeof(pid_t));
}

/* SIGKILL and reap; grandchildren reach us once their parent died
 * (the tests make themselves a child subreaper). */
void kc_mock_kill_and_reap(const pid_t *pids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (size_t i = 0; i < n; i++)
		for (int tries = 0; tries < 5000 && kc_pid_exists(pids[i]); tries++)
			if (waitpid(pids[i], NULL, WNOHANG) <= 0)
				sleep_ms(1);
}

static int mock_criu_finish(void *h, const pid_t *pids, size_t n, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	copy_pids(mk.criu.finish_pids, &mk.criu.n_finish, pids, n);
	int cause = criu_call(KC_MOCK_CRIU_FINISH, pids[0], err);
	bool kills = mk.finish_kills;
	pthread_mutex_unlock(&mk.lock);
	if (cause)
		return criu_error(KC_MOCK_CRIU_FINISH, cause, err);
	if (kills)
		kc_mock_kill_and_reap(pids, n);
	return 0;
}

static int mock_criu_resume(void *h, const pid_t *pids, size_t n, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	copy_pids(mk.criu.resume_pids, &mk.criu.n_resume, pids, n);
	int cause = criu_call(KC_MOCK_CRIU_RESUME, pids[0], err);
	pthread_mutex_unlock(&mk.lock);
	return cause ? criu_error(KC_MOCK_CRIU_RESUME, cause, err) : 0;
}

static int mock_criu_discard(void *h, pid_t root_pid, struct kc_error **err)
{
	pthread_mutex_lock(&mk.lock);
	mk.criu.discard_root = root_pid;
	int cause = criu_call(KC_MOCK_CRIU_DISCARD, root_pid, err);
	pthread_mutex_unlock(&mk.lock);
	return cause ? criu_error(KC_MOCK_CRIU_DISCARD, cause, err) : 0;
}

static const struct kc_criu_ops mock_criu_ops = {
	.version = mock_criu_version,
	.check = mock_criu_check,
	.dump = mock_criu_dump,
	.restore = mock_criu_restore,
	.finish = mock_criu_finish,
	.resume = mock_criu_resume,
	.discard = mock_criu_discard,
};

static struct kc_cuda mock_cuda = {.ops = &mock_cuda_ops, .h = &mk};
static struct kc_nvml mock_nvml = {.ops = &mock_nvml_ops, .h = &mk};
static struct kc_criu mock_criu = {.ops = &mock_criu_ops, .h = &mk};

/* ---- the API ---- */

void kc_mock_reset(void)
{
	pthread_mutex_lock(&mk.lock);
	for (size_t i = 0; i < mk.n_log; i++)
		free(mk.log[i]);
	free(mk.log);
	free(mk.dump_stats);
	/* everything but the lock, which is the first member */
	memset((char *)&mk + sizeof(mk.lock), 0, sizeof(mk) - sizeof(mk.lock));
	mk.driver_version = 13000;
	pthread_mutex_unlock(&mk.lock);
}

void kc_mock_backends(struct kc_backends *b, bool cuda, bool nvml)
{
	b->cuda = cuda ? &mock_cuda : NULL;
	b->nvml = nvml ? &mock_nvml : NULL;
	b->criu = &mock_criu;
}

void kc_mock_set_state(pid_t pid, enum kc_cuda_state st)
{
	pthread_mutex_lock(&mk.lock);
	struct mock_proc *p = find_proc(pid);
	if (!p) {
		assert_true(mk.n_procs < KC_ARRAY_SIZE(mk.procs));
		p = &mk.procs[mk.n_procs++];
		p->pid = pid;
	}
	p->st = st;
	pthread_mutex_unlock(&mk.lock);
}

enum kc_cuda_state kc_mock_state(pid_t pid)
{
	pthread_mutex_lock(&mk.lock);
	struct mock_proc *p = find_proc(pid);
	enum kc_cuda_state st = p ? p->st : KC_CUDA_NONE;
	pthread_mutex_unlock(&mk.lock);
	return st;
}

unsigned kc_mock_illegal(void)
{
	pthread_mutex_lock(&mk.lock);
	unsigned n = mk.illegal;
	pthread_mutex_unlock(&mk.lock);
	return n;
}

static void add_rule(struct mock_rule r)
{
	pthread_mutex_lock(&mk.lock);
	assert_true(mk.n_rules < KC_ARRAY_SIZE(mk.rules));
	mk.rules[mk.n_rules++] = r;
	pthread_mutex_unlock(&mk.lock);
}

void kc_mock_fail(enum kc_mock_op op, unsigned nth, pid_t pid, int cause)
{
	assert_int_not_equal(cause, 0);
	add_rule((struct mock_rule){.op = op, .nth = nth, .pid = pid, .cause = cause});
}

void kc_mock_raise(enum kc_mock_op op, unsigned nth, pid_t pid, int sig)
{
	add_rule((struct mock_rule){.op = op, .nth = nth, .pid = pid, .sig = sig});
}

void kc_mock_sleep(enum kc_mock_op op, unsigned ms)
{
	pthread_mutex_lock(&mk.lock);
	mk.sleep_ms[op] = ms;
	pthread_mutex_unlock(&mk.lock);
}

unsigned kc_mock_calls(enum kc_mock_op op)
{
	pthread_mutex_lock(&mk.lock);
	unsigned n = mk.calls[op];
	pthread_mutex_unlock(&mk.lock);
	return n;
}

unsigned kc_mock_max_in_flight(enum kc_mock_op op)
{
	pthread_mutex_lock(&mk.lock);
	unsigned n = mk.max_in_flight[op];
	pthread_mutex_unlock(&mk.lock);
	return n;
}

unsigned kc_mock_last_timeout_ms(void)
{
	return mk.last_timeout_ms;
}

size_t kc_mock_last_pairs(struct kc_gpu_pair *first)
{
	if (first)
		*first = mk.last_pair;
	return mk.last_n_pairs;
}

void kc_mock_set_driver_version(int version)
{
	mk.driver_version = version;
}

void kc_mock_set_gpus(const struct kc_uuid *uuids, size_t n)
{
	assert_true(n <= KC_ARRAY_SIZE(mk.gpus));
	memcpy(mk.gpus, uuids, n * sizeof(*uuids));
	mk.n_gpus = n;
}

void kc_mock_set_restore_root(pid_t root)
{
	mk.restore_root = root;
}

void kc_mock_set_dump_stats(const char *path)
{
	free(mk.dump_stats);
	mk.dump_stats = path ? kc_xstrdup(path) : NULL;
}

void kc_mock_set_finish_kills(bool on)
{
	mk.finish_kills = on;
}

void kc_mock_add_gpu_proc(pid_t pid, const char *uuid, uint64_t used_bytes)
{
	assert_true(mk.n_gpu_procs < KC_ARRAY_SIZE(mk.gpu_procs));
	struct kc_gpu_proc *g = &mk.gpu_procs[mk.n_gpu_procs++];
	g->pid = pid;
	snprintf(g->uuid, sizeof(g->uuid), "%s", uuid);
	g->used_bytes = used_bytes;
}

const struct kc_mock_criu_calls *kc_mock_criu_calls(void)
{
	return &mk.criu;
}

void kc_mock_log_add(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	pthread_mutex_lock(&mk.lock);
	log_add_locked(fmt, ap);
	pthread_mutex_unlock(&mk.lock);
	va_end(ap);
}

size_t kc_mock_log_len(void)
{
	return mk.n_log;
}

const char *kc_mock_log_at(size_t i)
{
	return i < mk.n_log ? mk.log[i] : NULL;
}

size_t kc_mock_log_count(const char *prefix)
{
	size_t n = 0;
	pthread_mutex_lock(&mk.lock);
	for (size_t i = 0; i < mk.n_log; i++)
		if (strncmp(mk.log[i], prefix, strlen(prefix)) == 0)
			n++;
	pthread_mutex_unlock(&mk.lock);
	return n;
}

char *kc_mock_log_string(void)
{
	pthread_mutex_lock(&mk.lock);
	char *s = kc_xstrdup("");
	for (size_t i = 0; i < mk.n_log; i++) {
		char *t = kc_xasprintf("%s%s%s", s, i ? "; " : "", mk.log[i]);
		free(s);
		s = t;
	}
	pthread_mutex_unlock(&mk.lock);
	return s;
}

static char *trim(char *s)
{
	while (*s == ' ')
		s++;
	size_t n = strlen(s);
	while (n && s[n - 1] == ' ')
		s[--n] = '\0';
	return s;
}

/* Matches the next group against log[*pos..]; a group is one stage. */
static bool match_group(char *group, size_t *pos)
{
	char *entries[64];
	size_t k = 0;
	char *save = NULL;
	for (char *e = strtok_r(group, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
		if (k == KC_ARRAY_SIZE(entries))
			return false;
		entries[k++] = trim(e);
	}
	if (*pos + k > mk.n_log)
		return false;
	bool used[64] = {false};
	for (size_t i = 0; i < k; i++) {
		size_t j = 0;
		while (j < k && (used[j] || strcmp(mk.log[*pos + j], entries[i]) != 0))
			j++;
		if (j == k)
			return false;
		used[j] = true;
	}
	*pos += k;
	return true;
}

void kc_mock_log_reset(void)
{
	pthread_mutex_lock(&mk.lock);
	for (size_t i = 0; i < mk.n_log; i++)
		free(mk.log[i]);
	mk.n_log = 0;
	pthread_mutex_unlock(&mk.lock);
}

void kc_mock_assert_log_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	char *want = NULL;
	va_start(ap, fmt);
	if (vasprintf(&want, fmt, ap) < 0)
		abort();
	va_end(ap);
	_cleanup_free_ char *groups = kc_xstrdup(want);
	size_t pos = 0;
	bool ok = true;
	char *save = NULL;
	for (char *g = strtok_r(groups, "|", &save); g && ok; g = strtok_r(NULL, "|", &save))
		ok = match_group(g, &pos);
	ok = ok && pos == mk.n_log;
	if (!ok) {
		_cleanup_free_ char *got = kc_mock_log_string();
		print_error("mock log mismatch\n  want: %s\n  got:  %s\n", want, got);
		free(want);
		_fail(file, line);
	}
	free(want);
}
