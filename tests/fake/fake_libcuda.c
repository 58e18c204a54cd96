/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A stand-in libcuda.so.1 for hosts without a GPU: the checkpoint API of
 * the real driver as a state machine kept in files, so that the tool, its
 * tests and the test workloads (separate processes) all see one state.
 * docs/FAKE_LIBCUDA.md describes the files and variables.
 *
 * It deliberately does not include src/backend/cuda_abi.h: argument
 * layouts are checked at raw byte offsets taken from the driver's headers,
 * so a wrong declaration in the tool shows up as a failed call here.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;

enum {
	CUDA_SUCCESS = 0,
	CUDA_ERROR_INVALID_VALUE = 1,
	CUDA_ERROR_NOT_INITIALIZED = 3,
	CUDA_ERROR_OPERATING_SYSTEM = 304,
	CUDA_ERROR_ILLEGAL_STATE = 401,
	CUDA_ERROR_NOT_READY = 600,
	CUDA_ERROR_UNKNOWN = 999,
};

enum {
	STATE_RUNNING = 0,
	STATE_LOCKED = 1,
	STATE_CHECKPOINTED = 2,
	STATE_FAILED = 3,
};

enum op {
	OP_INIT,
	OP_GET_STATE,
	OP_LOCK,
	OP_CHECKPOINT,
	OP_RESTORE,
	OP_UNLOCK,
	OP_RESTORE_TID,
};

static const char *const op_names[] = {
	[OP_INIT] = "init",
	[OP_GET_STATE] = "get_state",
	[OP_LOCK] = "lock",
	[OP_CHECKPOINT] = "checkpoint",
	[OP_RESTORE] = "restore",
	[OP_UNLOCK] = "unlock",
	[OP_RESTORE_TID] = "restore_tid",
};

#define DEFAULT_GPU "GPU-00000000-0000-0000-0000-000000000001"
#define DEFAULT_VERSION 13000
#define MAX_GPUS 16

static int initialized; /* like the driver: process-wide, set by cuInit */

static const char *state_dir(void)
{
	const char *d = getenv("KC_FAKE_CUDA_DIR");
	return d && *d ? d : NULL;
}

static int driver_version(void)
{
	const char *v = getenv("KC_FAKE_CUDA_VERSION");
	return v && *v ? atoi(v) : DEFAULT_VERSION;
}

/* ---- small file helpers (no libc stdio buffering across processes) ---- */

static void log_call(enum op op, int pid, CUresult r)
{
	const char *dir = state_dir();
	char path[4096], line[128];
	if (!dir || op == OP_INIT)
		return;
	snprintf(path, sizeof(path), "%s/calls.log", dir);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	int n = snprintf(line, sizeof(line), "%s %d %d\n", op_names[op], pid, r);
	/* one write() of O_APPEND: lines from parallel callers never mix */
	if (write(fd, line, (size_t)n) < 0) {
		/* nothing to do: the log is best effort */
	}
	close(fd);
}

static int read_text(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	int e = errno;
	close(fd);
	if (n < 0) {
		errno = e;
		return -1;
	}
	buf[n] = '\0';
	return 0;
}

static int write_atomic(const char *dir, const char *name, const char *text)
{
	char tmp[4096], path[4096];
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", dir, name, (int)gettid());
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	size_t len = strlen(text);
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) < 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int lock_file(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/.lock.%s", dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			close(fd);
			return -1;
		}
	}
	return fd;
}

static void unlock_file(int fd)
{
	if (fd >= 0)
		close(fd); /* drops the flock */
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Bumps $DIR/.count.<name> under its own flock; returns the new value. */
static long bump_counter(const char *dir, const char *name)
{
	char path[4096], buf[32];
	snprintf(path, sizeof(path), "%s/.count.%s", dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
		;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	long v = strtol(buf, NULL, 10) + 1;
	int len = snprintf(buf, sizeof(buf), "%ld\n", v);
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len)
		v = -1;
	close(fd);
	return v;
}

/* ---- processes ---- */

/*
 * Thread group of pid, or -1 when there is no such task or only a zombie
 * is left.  The driver accepts any thread id of a CUDA process (CRIU's
 * plugin asks for the state of the restore thread).
 */
static int task_tgid(int pid)
{
	char path[64], buf[2048];
	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (read_text(path, buf, sizeof(buf)) < 0)
		return -1;
	const char *s = strstr(buf, "\nState:");
	if (s) {
		s += 7;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == 'Z' || *s == 'X')
			return -1;
	}
	const char *t = strstr(buf, "\nTgid:");
	return t ? atoi(t + 6) : pid;
}

/* The driver's restore thread is a helper thread; the fake names the
 * lowest-numbered thread other than the leader, else the leader. */
static int restore_thread(int tgid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", tgid);
	DIR *d = opendir(path);
	if (!d)
		return tgid;
	int best = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		int tid = atoi(de->d_name);
		if (tid > 0 && tid != tgid && (best == 0 || tid < best))
			best = tid;
	}
	closedir(d);
	return best ? best : tgid;
}

/* Whether thread tid of tgid is stopped (group-stop 'T'; a ptrace-stop 't'
 * is as unable to serve). */
static bool thread_stopped(int tgid, int tid)
{
	char path[96], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", tgid, tid);
	if (read_text(path, buf, sizeof(buf)) < 0)
		return false;
	const char *p = strrchr(buf, ')');
	return p && (p[2] == 'T' || p[2] == 't');
}

static bool any_thread_stopped(int tgid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", tgid);
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool stopped = false;
	struct dirent *de;
	while (!stopped && (de = readdir(d)))
		stopped = atoi(de->d_name) > 0 && thread_stopped(tgid, atoi(de->d_name));
	closedir(d);
	return stopped;
}

/* Field 22 of /proc/<pid>/stat; 0 if it cannot be read. */
static unsigned long long start_time(int tgid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", tgid);
	if (read_text(path, buf, sizeof(buf)) < 0)
		return 0;
	const char *p = strrchr(buf, ')'); /* the name may hold spaces */
	unsigned long long v = 0;
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (p)
		v = strtoull(p + 1, NULL, 10);
	return v;
}

/* The name of a process' state file: KC_FAKE_CUDA_ID from its environment
 * (it survives a restore under another pid, as the driver's state does),
 * else its tgid. */
static void state_key(int tgid, char *out, size_t len)
{
	char path[64], buf[8192];
	snprintf(out, len, "%d", tgid);
	snprintf(path, sizeof(path), "/proc/%d/environ", tgid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (char *p = buf; p < buf + n; p += strlen(p) + 1)
		if (strncmp(p, "KC_FAKE_CUDA_ID=", 16) == 0 && p[16]) {
			snprintf(out, len, "%s", p + 16);
			return;
		}
}

/* ---- configuration from the environment ---- */

/* KC_FAKE_CUDA_FAIL="op:result[:nth][:pid],..."; 0 or the injected result. */
static CUresult injected(enum op op, int pid, long n_all, long n_pid)
{
	const char *env = getenv("KC_FAKE_CUDA_FAIL");
	if (!env || !*env)
		return 0;
	char *copy = strdup(env), *save = NULL;
	CUresult r = 0;
	if (!copy)
		return 0;
	for (char *rule = strtok_r(copy, ",", &save); rule && !r; rule = strtok_r(NULL, ",", &save)) {
		char *f[4] = {NULL, NULL, NULL, NULL};
		int nf = 0;
		for (char *p = rule; nf < 4; nf++) {
			f[nf] = p;
			p = strchr(p, ':');
			if (!p) {
				nf++;
				break;
			}
			*p++ = '\0';
		}
		if (nf < 2 || strcmp(f[0], op_names[op]) != 0)
			continue;
		long nth = nf > 2 && *f[2] ? strtol(f[2], NULL, 10) : 0;
		long rpid = nf > 3 && *f[3] ? strtol(f[3], NULL, 10) : 0;
		if (rpid && rpid != pid)
			continue;
		if (nth && nth != (rpid ? n_pid : n_all))
			continue;
		r = (CUresult)strtol(f[1], NULL, 10);
	}
	free(copy);
	return r;
}

/* KC_FAKE_CUDA_DELAY_MS="op:ms,..." */
static long delay_for(enum op op)
{
	const char *env = getenv("KC_FAKE_CUDA_DELAY_MS");
	size_t len = strlen(op_names[op]);
	for (const char *p = env; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		if (strncmp(p, op_names[op], len) == 0 && p[len] == ':')
			return strtol(p + len + 1, NULL, 10);
	}
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* "GPU-xxxxxxxx-xxxx-..." -> 16 bytes; dashes anywhere are skipped. */
static int parse_uuid(const char *s, size_t len, unsigned char out[16])
{
	if (len >= 4 && strncmp(s, "GPU-", 4) == 0) {
		s += 4;
		len -= 4;
	}
	int n = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '-')
			continue;
		if (i + 1 >= len || n == 16 || hexval(s[i]) < 0 || hexval(s[i + 1]) < 0)
			return -1;
		out[n++] = (unsigned char)(hexval(s[i]) << 4 | hexval(s[i + 1]));
		i++;
	}
	return n == 16 ? 0 : -1;
}

static void format_uuid(const unsigned char b[16], char out[41])
{
	snprintf(out, 41,
		 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

/* The GPUs of this "machine": KC_FAKE_CUDA_GPU, comma separated. */
static int machine_gpus(unsigned char gpus[MAX_GPUS][16])
{
	const char *env = getenv("KC_FAKE_CUDA_GPU");
	if (!env || !*env)
		env = DEFAULT_GPU;
	int n = 0;
	for (const char *p = env; p && *p && n < MAX_GPUS;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (parse_uuid(p, len, gpus[n]) == 0)
			n++;
		p = end ? end + 1 : NULL;
	}
	return n;
}

/* The GPU a process sits on: $DIR/<tgid>.gpu, else the machine's first. */
static int process_gpu(const char *dir, int tgid, unsigned char out[16])
{
	char path[4096], buf[128];
	snprintf(path, sizeof(path), "%s/%d.gpu", dir, tgid);
	if (read_text(path, buf, sizeof(buf)) == 0) {
		buf[strcspn(buf, "\n")] = '\0';
		return parse_uuid(buf, strlen(buf), out);
	}
	unsigned char gpus[MAX_GPUS][16];
	if (machine_gpus(gpus) < 1)
		return -1;
	memcpy(out, gpus[0], 16);
	return 0;
}

static int set_process_gpu(const char *dir, int tgid, const unsigned char uuid[16])
{
	char name[32], text[48];
	format_uuid(uuid, text);
	strcat(text, "\n");
	snprintf(name, sizeof(name), "%d.gpu", tgid);
	return write_atomic(dir, name, text);
}

/* The node's GPUs when the process was checkpointed: $DIR/<tgid>.gpus,
 * one UUID a line; pairs on restore must cover exactly these. */
static int save_node_gpus(const char *dir, int tgid)
{
	unsigned char gpus[MAX_GPUS][16];
	char name[32], text[MAX_GPUS * 42 + 1] = "", one[48];
	int n = machine_gpus(gpus);
	for (int i = 0; i < n; i++) {
		format_uuid(gpus[i], one);
		strcat(one, "\n");
		strcat(text, one);
	}
	snprintf(name, sizeof(name), "%d.gpus", tgid);
	return write_atomic(dir, name, text);
}

static int node_gpus_at_checkpoint(const char *dir, int tgid, unsigned char gpus[MAX_GPUS][16])
{
	char path[4096], buf[MAX_GPUS * 42 + 1];
	snprintf(path, sizeof(path), "%s/%d.gpus", dir, tgid);
	if (read_text(path, buf, sizeof(buf)) < 0)
		return machine_gpus(gpus);
	int n = 0;
	for (char *line = strtok(buf, "\n"); line && n < MAX_GPUS; line = strtok(NULL, "\n"))
		if (parse_uuid(line, strlen(line), gpus[n]) == 0)
			n++;
	return n;
}

static bool all_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * Restore arguments at the byte offsets of the driver's headers: 64 bytes;
 * before 13.0 all reserved; from 13.0 gpuPairs at 0, gpuPairsCount at 8,
 * zeros from 12 on (13.0's char[44] + cuuint64_t, 13.3's char[52], and a
 * NULL customStorageInfo_out at 16 in later headers all read so).
 */
static CUresult check_restore_args(const void *args, const unsigned char **pairs, unsigned *count)
{
	const unsigned char *a = args;
	*pairs = NULL;
	*count = 0;
	if (!a)
		return CUDA_SUCCESS;
	if (driver_version() < 13000)
		return all_zero(a, 64) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
	memcpy(pairs, a, sizeof(*pairs));
	memcpy(count, a + 8, sizeof(*count));
	if (!all_zero(a + 12, 64 - 12))
		return CUDA_ERROR_INVALID_VALUE;
	if ((*pairs == NULL) != (*count == 0))
		return CUDA_ERROR_INVALID_VALUE;
	return CUDA_SUCCESS;
}

/* ---- the state machine ---- */

struct call {
	enum op op;
	int pid;
	bool bad_args; /* reserved fields not zeroed */
	unsigned lock_timeout_ms;
	const void *restore_args;
	int *tid_out;
	int *state_out;
};

/*
 * The host copy of a process' GPU memory, as the real driver keeps it in
 * the process: a workload that says where it is ("<tgid>.backup" in the
 * state dir: start and length, hex) has 4 KiB of every MiB of it read at
 * checkpoint and again at restore, through process_vm_readv, which waits
 * for a page behind a userfaultfd as the driver's own read does (run 33).
 * 0 with *sum, 1 for a process without one, -1 where it cannot be read.
 */
static int backup_sum(const char *dir, int tgid, unsigned long long *sum)
{
	char path[4096], buf[64];
	unsigned long start = 0, len = 0;
	snprintf(path, sizeof(path), "%s/%d.backup", dir, tgid);
	if (read_text(path, buf, sizeof(buf)) < 0 || sscanf(buf, "%lx %lx", &start, &len) != 2 || !len)
		return 1;
	unsigned long long h = 0xcbf29ce484222325ULL;
	static __thread unsigned char page[4096];
	for (unsigned long off = 0; off < len; off += 1ul << 20) {
		size_t n = len - off < sizeof(page) ? len - off : sizeof(page);
		struct iovec local = {page, n}, remote = {(void *)(start + off), n};
		if (process_vm_readv(tgid, &local, 1, &remote, 1, 0) != (ssize_t)n)
			return -1;
		for (size_t i = 0; i < n; i++)
			h = (h ^ page[i]) * 0x100000001b3ULL;
	}
	*sum = h;
	return 0;
}

/*
 * Checks the call against the state and, when apply, carries it out (the
 * caller writes new_state).  Sleeping for KC_FAKE_CUDA_DELAY_MS happens
 * between a check and the apply, outside the lock (see run_call).
 */
static CUresult transition(const char *dir, int tgid, int state, struct call *c, int *new_state,
			  bool apply)
{
	unsigned char old_gpu[16], gpus[MAX_GPUS][16];

	*new_state = state;
	if (state < STATE_RUNNING || state > STATE_FAILED)
		return CUDA_ERROR_UNKNOWN;

	switch (c->op) {
	case OP_GET_STATE:
		*c->state_out = state;
		return CUDA_SUCCESS;
	case OP_RESTORE_TID:
		*c->tid_out = restore_thread(tgid);
		return CUDA_SUCCESS;
	case OP_LOCK:
		if (state != STATE_RUNNING)
			return CUDA_ERROR_ILLEGAL_STATE;
		*new_state = STATE_LOCKED;
		return CUDA_SUCCESS;
	case OP_CHECKPOINT:
		if (state != STATE_LOCKED)
			return CUDA_ERROR_ILLEGAL_STATE;
		/* remember the GPU the memory came from, for restore */
		if (process_gpu(dir, tgid, old_gpu) < 0)
			return CUDA_ERROR_UNKNOWN;
		if (apply && (set_process_gpu(dir, tgid, old_gpu) < 0 || save_node_gpus(dir, tgid) < 0))
			return CUDA_ERROR_UNKNOWN;
		if (apply) {
			unsigned long long sum;
			char name[64], text[32], path[4096];
			/* a workload that keeps its copy where the driver does,
			 * mapped by the checkpoint (cpu_workload --backup-mb) */
			snprintf(path, sizeof(path), "%s/%d.backup-wanted", dir, tgid);
			if (access(path, F_OK) == 0) {
				snprintf(name, sizeof(name), "%d.ckpt", tgid);
				if (write_atomic(dir, name, "\n") < 0)
					return CUDA_ERROR_UNKNOWN;
				snprintf(path, sizeof(path), "%s/%d.ckpt", dir, tgid);
				for (int i = 0; access(path, F_OK) == 0; i++) {
					if (i > 5000 || task_tgid(tgid) < 0)
						return CUDA_ERROR_UNKNOWN;
					sleep_ms(2);
				}
			}
			int b = backup_sum(dir, tgid, &sum);
			if (b < 0)
				return CUDA_ERROR_UNKNOWN;
			snprintf(name, sizeof(name), "%d.backup-sum", tgid);
			snprintf(text, sizeof(text), "%016llx\n", sum);
			if (b == 0 && write_atomic(dir, name, text) < 0)
				return CUDA_ERROR_UNKNOWN;
		}
		*new_state = STATE_CHECKPOINTED;
		return CUDA_SUCCESS;
	case OP_RESTORE: {
		const unsigned char *pairs;
		unsigned count;
		if (state != STATE_CHECKPOINTED)
			return CUDA_ERROR_ILLEGAL_STATE;
		CUresult r = check_restore_args(c->restore_args, &pairs, &count);
		if (r)
			return r;
		if (process_gpu(dir, tgid, old_gpu) < 0)
			return CUDA_ERROR_UNKNOWN;
		/* the copy it restores from: what the checkpoint left there, or
		 * the kcheckpoint that filled it is wrong (a real driver would
		 * restore whatever it found; this one says so) */
		char sname[4096], saved[32];
		snprintf(sname, sizeof(sname), "%s/%d.backup-sum", dir, tgid);
		if (!apply && read_text(sname, saved, sizeof(saved)) == 0) {
			unsigned long long sum = 0;
			char now[32];
			int b = backup_sum(dir, tgid, &sum);
			snprintf(now, sizeof(now), "%016llx\n", sum);
			if (b != 0 || strcmp(now, saved)) {
				fprintf(stderr, "fake libcuda: pid %d: the memory restore reads is not what checkpoint left\n",
					tgid);
				return CUDA_ERROR_UNKNOWN;
			}
		}
		int n_gpus = machine_gpus(gpus);
		unsigned char was[MAX_GPUS][16];
		int n_was = node_gpus_at_checkpoint(dir, tgid, was);
		const unsigned char *target = old_gpu;
		/*
		 * As seen on an H200 x2 node: pairs must cover all the GPUs the
		 * node had at checkpoint.  One pair GPU0->GPU1 alone gave 1; the
		 * same move as GPU0->GPU1,GPU1->GPU0 worked.
		 */
		if (count && count != (unsigned)n_was)
			return CUDA_ERROR_INVALID_VALUE;
		for (unsigned i = 0; i < count; i++) {
			const unsigned char *old_uuid = pairs + i * 32, *new_uuid = pairs + i * 32 + 16;
			bool old_ok = false, new_ok = false;
			for (int g = 0; g < n_was; g++)
				old_ok = old_ok || memcmp(old_uuid, was[g], 16) == 0;
			for (int g = 0; g < n_gpus; g++)
				new_ok = new_ok || memcmp(new_uuid, gpus[g], 16) == 0;
			for (unsigned j = 0; j < i; j++)
				if (memcmp(old_uuid, pairs + j * 32, 16) == 0 ||
				    memcmp(new_uuid, pairs + j * 32 + 16, 16) == 0)
					return CUDA_ERROR_INVALID_VALUE;
			if (!old_ok || !new_ok)
				return CUDA_ERROR_INVALID_VALUE;
			if (memcmp(old_uuid, old_gpu, 16) == 0)
				target = new_uuid;
		}
		bool present = false;
		for (int i = 0; i < n_gpus; i++)
			present = present || memcmp(gpus[i], target, 16) == 0;
		if (!present)
			return CUDA_ERROR_INVALID_VALUE;
		if (apply && set_process_gpu(dir, tgid, target) < 0)
			return CUDA_ERROR_UNKNOWN;
		if (apply) { /* the copy is freed once the GPU has it back */
			char name[64], path[4096];
			snprintf(path, sizeof(path), "%s/%d.backup-wanted", dir, tgid);
			snprintf(name, sizeof(name), "%d.done", tgid);
			if (access(path, F_OK) == 0 && write_atomic(dir, name, "\n") < 0)
				return CUDA_ERROR_UNKNOWN;
		}
		*new_state = STATE_LOCKED;
		return CUDA_SUCCESS;
	}
	case OP_UNLOCK:
		if (state != STATE_LOCKED)
			return CUDA_ERROR_ILLEGAL_STATE;
		*new_state = STATE_RUNNING;
		return CUDA_SUCCESS;
	case OP_INIT:
		break;
	}
	return CUDA_ERROR_UNKNOWN;
}

/*
 * Under the process' lock: reads its state into *state, runs the
 * transition and, when apply, writes the new state.  expect >= 0 demands
 * that the state is still what the first check saw.
 */
static CUresult locked_step(const char *dir, int tgid, struct call *c, int expect, int *state,
			    int *new_state, bool apply)
{
	char name[32], path[4096], buf[64];
	CUresult r;

	/* a lock file of its own: the state file is replaced by rename() */
	state_key(tgid, name, sizeof(name));
	int lfd = lock_file(dir, name);
	if (lfd < 0)
		return CUDA_ERROR_UNKNOWN;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (read_text(path, buf, sizeof(buf)) < 0) {
		r = errno == ENOENT ? CUDA_ERROR_NOT_INITIALIZED : CUDA_ERROR_UNKNOWN;
		unlock_file(lfd);
		return r;
	}
	char *end;
	*state = (int)strtol(buf, &end, 10);
	if (end == buf)
		*state = -1;
	/* the driver's state lives in the process' memory: a process CRIU
	 * made from an image (another start time than the one that wrote the
	 * state) is in the state it was dumped in, which CRIU only allows
	 * CHECKPOINTED; a state without a start time (a workload's own
	 * "echo 0") is the live process' */
	unsigned long long stamp = strtoull(end, NULL, 10), now = start_time(tgid);
	if (stamp && now && stamp != now)
		*state = STATE_CHECKPOINTED;
	if (expect >= 0 && *state != expect) {
		unlock_file(lfd);
		return CUDA_ERROR_ILLEGAL_STATE;
	}
	r = transition(dir, tgid, *state, c, new_state, apply);
	if (r == CUDA_SUCCESS && apply && *new_state != *state) {
		snprintf(buf, sizeof(buf), "%d %llu\n", *new_state, now);
		if (write_atomic(dir, name, buf) < 0)
			r = CUDA_ERROR_UNKNOWN;
	}
	unlock_file(lfd);
	return r;
}

static bool is_cuda_process(const char *dir, int tgid)
{
	char name[32], path[4096];
	state_key(tgid, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

static CUresult run_call(struct call *c)
{
	const char *dir = state_dir();
	char name[32];

	if (!dir)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!__atomic_load_n(&initialized, __ATOMIC_ACQUIRE)) {
		log_call(c->op, c->pid, CUDA_ERROR_NOT_INITIALIZED);
		return CUDA_ERROR_NOT_INITIALIZED;
	}

	if (c->bad_args) {
		log_call(c->op, c->pid, CUDA_ERROR_INVALID_VALUE);
		return CUDA_ERROR_INVALID_VALUE;
	}

	snprintf(name, sizeof(name), "%s", op_names[c->op]);
	long n_all = bump_counter(dir, name);
	snprintf(name, sizeof(name), "%s.%d", op_names[c->op], c->pid);
	long n_pid = bump_counter(dir, name);
	CUresult r = injected(c->op, c->pid, n_all, n_pid);
	if (r) {
		log_call(c->op, c->pid, r);
		return r;
	}

	int tgid = task_tgid(c->pid);
	if (tgid < 0) {
		log_call(c->op, c->pid, CUDA_ERROR_OPERATING_SYSTEM);
		return CUDA_ERROR_OPERATING_SYSTEM;
	}

	/*
	 * The driver asks the process' restore thread for everything but its
	 * id, and waits for its answer as long as it takes: on driver 580 a
	 * get_state, lock or restore of a SIGSTOPped CUDA process never
	 * returned, and one whose caller was killed meanwhile changed nothing
	 * (run 36, docs/FAKE_LIBCUDA.md).  A lock or checkpoint needs more:
	 * with the restore thread running alone, the rest of the process
	 * stopped, a dump's lock or checkpoint never returned either, that
	 * thread waiting on a futex (run 37).  A process without CUDA is
	 * answered at once, stopped or not.
	 */
	if (c->op != OP_RESTORE_TID && is_cuda_process(dir, tgid))
		for (;;) {
			bool whole = c->op == OP_LOCK || c->op == OP_CHECKPOINT;
			if (whole ? !any_thread_stopped(tgid) : !thread_stopped(tgid, restore_thread(tgid)))
				break;
			if (task_tgid(tgid) < 0) {
				log_call(c->op, c->pid, CUDA_ERROR_OPERATING_SYSTEM);
				return CUDA_ERROR_OPERATING_SYSTEM;
			}
			sleep_ms(5);
		}

	/*
	 * Check, sleep unlocked, then re-check and apply.  No lock is held
	 * while "working": a fork() of the caller in that time would share the
	 * flock()ed file description and keep it locked as long as the child
	 * lives.  A state changed meanwhile by a racing call is ILLEGAL_STATE.
	 */
	int state, new_state;
	long delay = delay_for(c->op);
	if (c->op == OP_GET_STATE || c->op == OP_RESTORE_TID) {
		sleep_ms(delay);
		/* a process gone meanwhile has no state to answer with */
		r = delay > 0 && task_tgid(c->pid) < 0 ? CUDA_ERROR_OPERATING_SYSTEM
						       : locked_step(dir, tgid, c, -1, &state, &new_state, true);
	} else {
		r = locked_step(dir, tgid, c, -1, &state, &new_state, false);
		if (r == CUDA_SUCCESS && c->op == OP_LOCK && c->lock_timeout_ms &&
		    delay > (long)c->lock_timeout_ms) {
			/* the driver gives up and leaves the process running */
			sleep_ms(c->lock_timeout_ms);
			r = CUDA_ERROR_NOT_READY;
		} else if (r == CUDA_SUCCESS) {
			sleep_ms(delay);
			r = locked_step(dir, tgid, c, state, &state, &new_state, true);
		}
	}
	log_call(c->op, c->pid, r);
	return r;
}

/* ---- the exported driver API ---- */

#define FAKE_API __attribute__((visibility("default")))

FAKE_API CUresult cuInit(unsigned int flags)
{
	const char *dir = state_dir();
	if (!dir)
		return CUDA_ERROR_NOT_INITIALIZED;
	if (flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	/* driver start-up, which restore overlaps with CRIU */
	long delay = delay_for(OP_INIT);
	if (delay > 0)
		usleep((useconds_t)delay * 1000);
	CUresult r = injected(OP_INIT, 0, bump_counter(dir, "init"), 0);
	if (r)
		return r;
	__atomic_store_n(&initialized, 1, __ATOMIC_RELEASE);
	return CUDA_SUCCESS;
}

FAKE_API CUresult cuDriverGetVersion(int *version)
{
	if (!state_dir())
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!version)
		return CUDA_ERROR_INVALID_VALUE;
	*version = driver_version();
	return CUDA_SUCCESS;
}

/* The device list, as the driver enumerates it: KC_FAKE_CUDA_GPU in order. */
FAKE_API CUresult cuDeviceGetCount(int *count)
{
	unsigned char gpus[MAX_GPUS][16];
	if (!state_dir() || !__atomic_load_n(&initialized, __ATOMIC_ACQUIRE))
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!count)
		return CUDA_ERROR_INVALID_VALUE;
	*count = machine_gpus(gpus);
	return CUDA_SUCCESS;
}

FAKE_API CUresult cuDeviceGet(int *device, int ordinal)
{
	unsigned char gpus[MAX_GPUS][16];
	if (!state_dir() || !__atomic_load_n(&initialized, __ATOMIC_ACQUIRE))
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!device || ordinal < 0 || ordinal >= machine_gpus(gpus))
		return CUDA_ERROR_INVALID_VALUE;
	*device = ordinal;
	return CUDA_SUCCESS;
}

FAKE_API CUresult cuDeviceGetUuid_v2(unsigned char uuid[16], int device)
{
	unsigned char gpus[MAX_GPUS][16];
	if (!state_dir() || !__atomic_load_n(&initialized, __ATOMIC_ACQUIRE))
		return CUDA_ERROR_NOT_INITIALIZED;
	if (!uuid || device < 0 || device >= machine_gpus(gpus))
		return CUDA_ERROR_INVALID_VALUE;
	memcpy(uuid, gpus[device], 16);
	return CUDA_SUCCESS;
}

FAKE_API CUresult cuGetErrorName(CUresult error, const char **name)
{
	static const struct {
		CUresult r;
		const char *name;
	} names[] = {
		{CUDA_SUCCESS, "CUDA_SUCCESS"},
		{CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
		{CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
		{CUDA_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM"},
		{CUDA_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE"},
		{CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY"},
		{CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN"},
	};
	if (!name)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (names[i].r == error) {
			*name = names[i].name;
			return CUDA_SUCCESS;
		}
	}
	*name = NULL;
	return CUDA_ERROR_INVALID_VALUE;
}

FAKE_API CUresult cuCheckpointProcessGetState(int pid, int *state)
{
	if (!state)
		return CUDA_ERROR_INVALID_VALUE;
	struct call c = {.op = OP_GET_STATE, .pid = pid, .state_out = state};
	return run_call(&c);
}

FAKE_API CUresult cuCheckpointProcessGetRestoreThreadId(int pid, int *tid)
{
	if (!tid)
		return CUDA_ERROR_INVALID_VALUE;
	struct call c = {.op = OP_RESTORE_TID, .pid = pid, .tid_out = tid};
	return run_call(&c);
}

/* CUcheckpointLockArgs: timeoutMs at 0, reserved0 at 4, reserved1[7] at 8. */
FAKE_API CUresult cuCheckpointProcessLock(int pid, const void *args)
{
	struct call c = {.op = OP_LOCK, .pid = pid};
	if (args) {
		memcpy(&c.lock_timeout_ms, args, sizeof(unsigned));
		c.bad_args = !all_zero((const unsigned char *)args + 4, 60);
	}
	return run_call(&c);
}

/* CUcheckpointCheckpointArgs: cuuint64_t reserved[8], must be zero. */
FAKE_API CUresult cuCheckpointProcessCheckpoint(int pid, const void *args)
{
	struct call c = {.op = OP_CHECKPOINT, .pid = pid, .bad_args = args && !all_zero(args, 64)};
	return run_call(&c);
}

FAKE_API CUresult cuCheckpointProcessRestore(int pid, const void *args)
{
	struct call c = {.op = OP_RESTORE, .pid = pid, .restore_args = args};
	return run_call(&c);
}

/* CUcheckpointUnlockArgs: cuuint64_t reserved[8], must be zero. */
FAKE_API CUresult cuCheckpointProcessUnlock(int pid, const void *args)
{
	struct call c = {.op = OP_UNLOCK, .pid = pid, .bad_args = args && !all_zero(args, 64)};
	return run_call(&c);
}
