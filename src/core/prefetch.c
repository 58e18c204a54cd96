/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kc/prefetch.h"
#include "kc/threads.h"
#include "kc/util.h"

#define CHUNK (8u << 20)

struct chunk {
	int fd;
	off_t off;
	size_t len;
};

struct kc_prefetch {
	pthread_t *threads;
	int n_threads;
	struct chunk *chunks;
	size_t n_chunks;
	int *fds;
	size_t n_fds;
	atomic_size_t next;
	atomic_bool stop;
	atomic_uint_fast64_t bytes;
};

static void *worker(void *arg)
{
	struct kc_prefetch *p = arg;
	char *buf = malloc(CHUNK);
	if (!buf)
		return NULL;
	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->n_chunks || atomic_load(&p->stop))
			break;
		struct chunk *c = &p->chunks[i];
		/* a real read, not readahead(2): it is what fills the cache for
		 * certain, whatever the device's readahead limits */
		ssize_t r = pread(c->fd, buf, c->len, c->off);
		if (r > 0)
			atomic_fetch_add(&p->bytes, (uint64_t)r);
	}
	free(buf);
	return NULL;
}

struct kc_prefetch *kc_prefetch_start(const char *dir, int threads)
{
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return NULL;
	struct kc_prefetch *p = kc_xcalloc(1, sizeof(*p));
	size_t cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		/* page contents are the bulk; the small images CRIU reads first */
		if (strncmp(de->d_name, "pages-", 6) != 0)
			continue;
		int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0)
			continue;
		if (fstat(fd, &st) < 0 || st.st_size == 0) {
			close(fd);
			continue;
		}
		p->fds = kc_xrealloc(p->fds, (p->n_fds + 1) * sizeof(int));
		p->fds[p->n_fds++] = fd;
		for (off_t off = 0; off < st.st_size; off += CHUNK) {
			if (p->n_chunks == cap) {
				cap = cap ? cap * 2 : 64;
				p->chunks = kc_xrealloc(p->chunks, cap * sizeof(*p->chunks));
			}
			size_t len = (size_t)(st.st_size - off) < CHUNK ? (size_t)(st.st_size - off) : CHUNK;
			p->chunks[p->n_chunks++] = (struct chunk){fd, off, len};
		}
	}
	if (threads <= 0)
		threads = 8;
	p->threads = kc_xcalloc((size_t)threads, sizeof(pthread_t));
	for (int i = 0; i < threads; i++)
		if (kc_thread_start(&p->threads[p->n_threads], worker, p) == 0)
			p->n_threads++;
	return p;
}

uint64_t kc_prefetch_stop(struct kc_prefetch *p)
{
	if (!p)
		return 0;
	atomic_store(&p->stop, true);
	for (int i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	for (size_t i = 0; i < p->n_fds; i++)
		close(p->fds[i]);
	uint64_t bytes = atomic_load(&p->bytes);
	free(p->threads);
	free(p->chunks);
	free(p->fds);
	free(p);
	return bytes;
}
