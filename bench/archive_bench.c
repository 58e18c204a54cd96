/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Archive benchmark: prints figures, asserts nothing about speed.
 *
 *   archive_bench gen DIR SIZE_MIB [several|one]   make an image dir
 *   archive_bench archive DIR OUT [zstd[:N]|none] [THREADS]
 *   archive_bench unpack ARCHIVE DEST
 *   archive_bench verify ARCHIVE
 *
 * Each timed step prints one line "step bytes_in bytes_out seconds GB/s
 * peak_rss_MB" (GB = 10^9 bytes of image); scripts/bench-archive.sh runs
 * the steps and the tar | zstd -T1 baseline and prints the table.
 *
 * The content imitates a GPU checkpoint 1 MiB at a time: a quarter zero
 * pages (never-touched allocations), a third random bytes (weights and KV
 * cache compress by a few percent at most, zstd stores them raw), the
 * rest repetitive records with varying fields (host heaps, tables, logs).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kc/archive.h"
#include "kc/util.h"

#define MIB ((size_t)1 << 20)

static uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: fast enough that generating never dominates */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static void fill_block(uint8_t *b, uint64_t block_no, uint64_t seed)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + block_no * 0xD1B54A32D192ED03ULL + 1;
	unsigned kind = (unsigned)(rng_next(&s) % 100);
	if (kind < 25) {
		memset(b, 0, MIB);
	} else if (kind < 60) {
		for (size_t i = 0; i < MIB; i += 8) {
			uint64_t v = rng_next(&s);
			memcpy(b + i, &v, 8);
		}
	} else {
		/* records: fixed layout, a counter, a small random field */
		size_t off = 0;
		uint64_t id = block_no * 4096;
		while (off < MIB) {
			char rec[96];
			int n = snprintf(rec, sizeof(rec), "{\"id\":%llu,\"state\":\"ready\",\"owner\":%u,\"flags\":%02x}\n",
					 (unsigned long long)id++, (unsigned)(rng_next(&s) % 64),
					 (unsigned)(rng_next(&s) % 4));
			size_t take = (size_t)n < MIB - off ? (size_t)n : MIB - off;
			memcpy(b + off, rec, take);
			off += take;
		}
	}
}

struct gen_file {
	char *path;
	uint64_t size;
	uint64_t seed;
};

struct gen_work {
	struct gen_file *files;
	size_t n;
	size_t next;
	pthread_mutex_t mu;
};

static void *gen_thread(void *arg)
{
	struct gen_work *w = arg;
	uint8_t *b = kc_xmalloc(MIB);
	for (;;) {
		pthread_mutex_lock(&w->mu);
		size_t i = w->next++;
		pthread_mutex_unlock(&w->mu);
		if (i >= w->n)
			break;
		struct gen_file *f = &w->files[i];
		int fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0) {
			perror(f->path);
			exit(1);
		}
		for (uint64_t off = 0, blk = 0; off < f->size; off += MIB, blk++) {
			fill_block(b, blk, f->seed);
			size_t n = f->size - off < MIB ? (size_t)(f->size - off) : MIB;
			if (write(fd, b, n) != (ssize_t)n) {
				perror(f->path);
				exit(1);
			}
		}
		close(fd);
	}
	free(b);
	return NULL;
}

/* Big pages files split the way several processes would, or one process. */
static int cmd_gen(const char *dir, uint64_t mib, const char *layout)
{
	struct kc_error *err = NULL;
	if (kc_mkdir_p(dir, 0700, &err) < 0) {
		fprintf(stderr, "%s\n", err->msg);
		return 1;
	}
	static const unsigned several[] = {40, 25, 15, 10, 5, 5};
	static const unsigned one[] = {100};
	bool single = layout && strcmp(layout, "one") == 0;
	const unsigned *share = single ? one : several;
	size_t n_pages = single ? 1 : KC_ARRAY_SIZE(several);
	struct gen_work w = {.mu = PTHREAD_MUTEX_INITIALIZER};
	size_t cap = n_pages + 64;
	w.files = kc_xcalloc(cap, sizeof(*w.files));
	uint64_t total = mib * MIB, small_total = 0;
	/* what CRIU writes besides pages: a few dozen small images */
	static const char *small[] = {"core", "mm", "pagemap", "fdinfo", "ids", "fs", "tty-info", "seccomp"};
	for (size_t i = 0; i < 56; i++) {
		uint64_t sz = 512 + (i * 7919) % (64 << 10);
		w.files[w.n++] = (struct gen_file){
			kc_xasprintf("%s/%s-%zu.img", dir, small[i % KC_ARRAY_SIZE(small)], 100 + i / 8), sz, 1000 + i};
		small_total += sz;
	}
	uint64_t pages_total = total > small_total ? total - small_total : MIB;
	for (size_t i = 0; i < n_pages; i++)
		w.files[w.n++] = (struct gen_file){kc_xasprintf("%s/pages-%zu.img", dir, i + 1),
						   pages_total / 100 * share[i] + (i == 0 ? pages_total % 100 : 0),
						   i + 1};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int nt = cpus > 1 ? (int)cpus : 1;
	/* big files first so the threads finish together */
	for (size_t i = 0; i < w.n / 2; i++) {
		struct gen_file t = w.files[i];
		w.files[i] = w.files[w.n - 1 - i];
		w.files[w.n - 1 - i] = t;
	}
	pthread_t *t = kc_xcalloc((size_t)nt, sizeof(*t));
	for (int i = 0; i < nt; i++)
		pthread_create(&t[i], NULL, gen_thread, &w);
	for (int i = 0; i < nt; i++)
		pthread_join(t[i], NULL);
	printf("gen %s: %zu files, %.2f GB, layout %s\n", dir, w.n, (double)total / 1e9, single ? "one" : "several");
	return 0;
}

static double peak_rss_mb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss / 1024.0;
}

static void report(const char *step, const struct kc_archive_stats *st)
{
	printf("%s %llu %llu %.3f %.2f %.1f\n", step, (unsigned long long)st->bytes_in,
	       (unsigned long long)st->bytes_out, st->seconds, (double)st->bytes_in / st->seconds / 1e9,
	       peak_rss_mb());
}

static void fake_manifest(struct kc_manifest *m)
{
	kc_manifest_init(m);
	m->tool_version = kc_xstrdup("bench");
	m->host = kc_xstrdup("bench");
	m->created = kc_xstrdup("2026-01-01T00:00:00Z");
	m->root_pid = 1;
	struct kc_manifest_proc *p = kc_manifest_add_proc(m);
	p->pid = 1;
	snprintf(p->comm, sizeof(p->comm), "bench");
}

int main(int argc, char **argv)
{
	struct kc_error *err = NULL;
	struct kc_archive_stats st = {0};
	struct kc_manifest m;
	if (argc >= 4 && strcmp(argv[1], "gen") == 0)
		return cmd_gen(argv[2], strtoull(argv[3], NULL, 10), argc > 4 ? argv[4] : NULL);
	if (argc >= 4 && strcmp(argv[1], "archive") == 0) {
		fake_manifest(&m);
		struct kc_archive_opts o = {.compression = argc > 4 ? argv[4] : NULL,
					    .threads = argc > 5 ? atoi(argv[5]) : 0};
		if (kc_archive_write(argv[2], &m, argv[3], &o, &st, &err) < 0)
			goto fail;
		report("archive", &st);
		return 0;
	}
	if (argc >= 4 && strcmp(argv[1], "unpack") == 0) {
		if (kc_archive_extract(argv[2], argv[3], &m, &st, &err) < 0)
			goto fail;
		report("unpack", &st);
		return 0;
	}
	if (argc >= 3 && strcmp(argv[1], "verify") == 0) {
		double t0 = kc_now();
		if (kc_archive_verify(argv[2], &m, &err) < 0)
			goto fail;
		st.seconds = kc_now() - t0;
		for (size_t i = 0; i < m.n_members; i++)
			st.bytes_in += m.members[i].size;
		report("verify", &st);
		return 0;
	}
	fprintf(stderr, "usage: archive_bench gen DIR SIZE_MIB [several|one]\n"
			"       archive_bench archive DIR OUT [zstd[:N]|none] [THREADS]\n"
			"       archive_bench unpack ARCHIVE DEST\n"
			"       archive_bench verify ARCHIVE\n");
	return 2;
fail:
	fprintf(stderr, "archive_bench: %s\n", err->msg);
	return err->exit_code ? err->exit_code : 1;
}
