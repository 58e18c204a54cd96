/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CPU workload every integration test checkpoints.
 *
 *   cpu_workload [--mb N] [--seed S] --status FILE [--cuda-dir DIR] [--children K] [--helper-thread 0|1]
 *                [--spawn-ms MS] [--backup-mb N]
 *
 * Fills N MB with a pattern derived from S and ticks a counter about every
 * 10 ms.  On SIGUSR1 it re-verifies the whole pattern and rewrites FILE with
 *
 *   counter=<n> checksum=<hex64> ok=<0|1> pid=<pid>
 *
 * (also once at start-up, when ready).  A test that sees the counter move on
 * and ok=1 with an unchanged checksum after a restore knows CRIU brought the
 * memory and the registers back.
 *
 * It keeps no descriptors open besides 0, 1 and 2 between status writes, so
 * CRIU can dump it without --ext-unix-sk or file remapping.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* A zero state would make xorshift emit zeros forever. */
static uint64_t seed_state(uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
	return s ? s : 1;
}

struct workload {
	uint64_t *buf;
	size_t words;
	uint64_t seed;
	uint64_t counter;
	const char *status;
};

static void fill(struct workload *w)
{
	uint64_t s = seed_state(w->seed);
	for (size_t i = 0; i < w->words; i++)
		w->buf[i] = xorshift64(&s);
}

/* Checksum of what memory holds now, and whether it still equals the pattern. */
static bool verify(const struct workload *w, uint64_t *checksum)
{
	uint64_t s = seed_state(w->seed);
	uint64_t h = 0xcbf29ce484222325ULL;
	bool ok = true;
	for (size_t i = 0; i < w->words; i++) {
		uint64_t v = w->buf[i];
		if (v != xorshift64(&s))
			ok = false;
		h = (h ^ v) * 0x100000001b3ULL;
	}
	*checksum = h;
	return ok;
}

/*
 * Written to a temporary name and renamed so a test polling the file never
 * reads it half-written; nothing stays open afterwards.
 */
static void write_status(const struct workload *w)
{
	uint64_t sum;
	bool ok = verify(w, &sum);
	char line[160], tmp[4096];
	int n = snprintf(line, sizeof(line), "counter=%" PRIu64 " checksum=%016" PRIx64 " ok=%d pid=%d\n",
			 w->counter, sum, ok ? 1 : 0, (int)getpid());
	snprintf(tmp, sizeof(tmp), "%s.tmp", w->status);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "cpu_workload: cannot open '%s': %s\n", tmp, strerror(errno));
		return;
	}
	ssize_t r = write(fd, line, (size_t)n);
	close(fd);
	if (r != n || rename(tmp, w->status) < 0)
		fprintf(stderr, "cpu_workload: cannot write '%s': %s\n", w->status, strerror(errno));
}

/* --backup-mb (backup_thread) */
static unsigned long long backup_mb;
static const char *backup_dir;

/*
 * A CUDA process for the fake driver: its state file, and where its
 * pattern lives ("<pid>.backup": start and length, hex), which the fake
 * reads as the real driver reads its host copy of the GPU's memory: at
 * checkpoint, and again at restore, where it must find the same bytes.
 */
static int mark_cuda(const char *dir, const struct workload *w)
{
	char path[4096];
	if (w->words && !backup_mb) {
		char line[64];
		int n = snprintf(line, sizeof(line), "%lx %zx\n", (unsigned long)(uintptr_t)w->buf,
				 w->words * sizeof(uint64_t));
		snprintf(path, sizeof(path), "%s/%d.backup", dir, (int)getpid());
		int bfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (bfd < 0 || write(bfd, line, (size_t)n) != n) {
			fprintf(stderr, "cpu_workload: cannot write '%s': %s\n", path, strerror(errno));
			if (bfd >= 0)
				close(bfd);
			return -1;
		}
		close(bfd);
	}
	snprintf(path, sizeof(path), "%s/%d", dir, (int)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "cpu_workload: cannot create '%s': %s\n", path, strerror(errno));
		return -1;
	}
	ssize_t r = write(fd, "0\n", 2);
	close(fd);
	return r == 2 ? 0 : -1;
}

static void run_loop(struct workload *w, pid_t *children, int n_children, pid_t parent)
{
	const struct timespec tick = { 0, 10 * 1000 * 1000 };
	for (;;) {
		nanosleep(&tick, NULL);
		w->counter++;
		if (got_usr1) {
			got_usr1 = 0;
			for (int i = 0; i < n_children; i++)
				kill(children[i], SIGUSR1);
			write_status(w);
		}
		if (n_children > 0)
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
		/* A child outliving its parent would be a stray in the next test;
		 * after a restore the parent keeps its pid, so this still holds. */
		if (parent > 0 && getppid() != parent)
			_exit(0);
	}
}

/* Idles as the CUDA driver's restore thread does; the fake driver takes a
 * process' lowest-numbered thread other than the leader for that one. */
static void *idle_thread(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* --spawn-ms: a thread that creates another idle one every MS ms (64 at
 * most), so threads appear whenever the program runs, a dump of it
 * stopped included; they keep the signal mask they got at creation. */
static long spawn_ms;

static void *spawner_thread(void *arg)
{
	(void)arg;
	struct timespec ts = {spawn_ms / 1000, (spawn_ms % 1000) * 1000000L};
	for (int n = 0; n < 64; n++) {
		nanosleep(&ts, NULL);
		pthread_t t;
		if (pthread_create(&t, NULL, idle_thread, NULL) == 0)
			pthread_detach(t);
	}
	return NULL;
}

/*
 * --backup-mb N (with --cuda-dir): the CUDA driver's host copy of the
 * GPU's memory, as the real driver makes it: mapped by the checkpoint
 * (the fake creates "<pid>.ckpt" and waits for it to go) and filled with
 * a pattern, freed after the restore ("<pid>.done"); "<pid>.backup" says
 * where it is, for the fake to read at checkpoint and again at restore.
 */
static void *backup_thread(void *arg)
{
	(void)arg;
	char ckpt[4096], done[4096], where[4096];
	snprintf(ckpt, sizeof(ckpt), "%s/%d.ckpt", backup_dir, (int)getpid());
	snprintf(done, sizeof(done), "%s/%d.done", backup_dir, (int)getpid());
	snprintf(where, sizeof(where), "%s/%d.backup", backup_dir, (int)getpid());
	size_t len = (size_t)backup_mb << 20;
	uint64_t *p = NULL;
	const struct timespec tick = {0, 2 * 1000 * 1000};
	for (;;) {
		nanosleep(&tick, NULL);
		if (!p && access(ckpt, F_OK) == 0) {
			p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				_exit(3);
			uint64_t s = seed_state(0xbac0);
			for (size_t i = 0; i < len / sizeof(uint64_t); i++)
				p[i] = xorshift64(&s);
			char line[64];
			int n = snprintf(line, sizeof(line), "%lx %zx\n", (unsigned long)(uintptr_t)p, len);
			int fd = open(where, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (fd < 0 || write(fd, line, (size_t)n) != n)
				_exit(3);
			close(fd);
			unlink(ckpt);
		}
		/* "<pid>.backup" stays: the image still has the copy there */
		if (p && access(done, F_OK) == 0) {
			munmap(p, len);
			p = NULL;
			unlink(done);
		}
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: cpu_workload [--mb N] [--seed S] --status FILE [--cuda-dir DIR] [--children K]"
			" [--helper-thread 0|1] [--spawn-ms MS] [--backup-mb N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned long long mb = 256;
	struct workload w = { .seed = 1 };
	const char *cuda_dir = NULL;
	int n_children = 0;
	bool helper = false; /* a second, idle thread: the fake driver's restore thread */

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (i + 1 >= argc)
			usage();
		const char *v = argv[++i];
		char *end;
		errno = 0;
		if (!strcmp(a, "--mb")) {
			mb = strtoull(v, &end, 10);
			if (errno || *end || mb > (1ULL << 20))
				usage();
		} else if (!strcmp(a, "--seed")) {
			w.seed = strtoull(v, &end, 0);
			if (errno || *end)
				usage();
		} else if (!strcmp(a, "--status")) {
			w.status = v;
		} else if (!strcmp(a, "--cuda-dir")) {
			cuda_dir = v;
		} else if (!strcmp(a, "--helper-thread")) {
			helper = !strcmp(v, "1");
		} else if (!strcmp(a, "--backup-mb")) {
			errno = 0;
			backup_mb = strtoull(v, &end, 10);
			if (errno || *end || !backup_mb || backup_mb > 1 << 20)
				usage();
		} else if (!strcmp(a, "--spawn-ms")) {
			spawn_ms = strtol(v, &end, 10);
			if (errno || *end || spawn_ms <= 0 || spawn_ms > 10000)
				usage();
		} else if (!strcmp(a, "--children")) {
			long k = strtol(v, &end, 10);
			if (errno || *end || k < 0 || k > 64)
				usage();
			n_children = (int)k;
		} else {
			usage();
		}
	}
	if (!w.status)
		usage();

	/* Whatever the launcher leaked (a harness pipe, say) would be one more
	 * thing for CRIU to dump and for restore to find missing. */
	close_range(3, ~0U, 0);

	struct sigaction sa = { .sa_handler = on_usr1 };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		return 1;

	w.words = (size_t)(mb << 20) / sizeof(uint64_t);
	if (w.words) {
		w.buf = mmap(NULL, w.words * sizeof(uint64_t), PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (w.buf == MAP_FAILED) {
			fprintf(stderr, "cpu_workload: cannot allocate %llu MB: %s\n", mb, strerror(errno));
			return 1;
		}
	}
	fill(&w);

	/* Children share the pattern copy-on-write, which also exercises
	 * CRIU's COW page handling on restore. */
	pid_t children[64];
	pid_t self = getpid();
	/* The parent's ready line must mean the whole tree is ready: each
	 * child closes its end of this pipe once its own line is written. */
	int ready[2] = { -1, -1 };
	if (n_children > 0 && pipe2(ready, O_CLOEXEC) < 0) {
		fprintf(stderr, "cpu_workload: cannot create pipe: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < n_children; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			fprintf(stderr, "cpu_workload: cannot fork: %s\n", strerror(errno));
			return 1;
		}
		if (pid == 0) {
			close(ready[0]);
			char *status = NULL;
			if (asprintf(&status, "%s.%d", w.status, i) < 0)
				_exit(1);
			w.status = status;
			if (cuda_dir && mark_cuda(cuda_dir, &w) < 0)
				_exit(1);
			write_status(&w);
			close(ready[1]);
			run_loop(&w, NULL, 0, self);
		}
		children[i] = pid;
	}
	if (n_children > 0) {
		char c;
		close(ready[1]);
		while (read(ready[0], &c, 1) < 0 && errno == EINTR)
			;
		close(ready[0]);
	}

	pthread_t t;
	if (helper && pthread_create(&t, NULL, idle_thread, NULL) != 0)
		return 1;
	if (spawn_ms && pthread_create(&t, NULL, spawner_thread, NULL) != 0)
		return 1;
	if (backup_mb && cuda_dir) {
		backup_dir = cuda_dir;
		char wanted[4096];
		snprintf(wanted, sizeof(wanted), "%s/%d.backup-wanted", cuda_dir, (int)getpid());
		int fd = open(wanted, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || pthread_create(&t, NULL, backup_thread, NULL) != 0)
			return 1;
		close(fd);
	}
	if (cuda_dir && mark_cuda(cuda_dir, &w) < 0)
		return 1;
	write_status(&w);
	run_loop(&w, children, n_children, 0);
	return 0;
}
