/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fill beside the GPU restore.  A restore's two long steps were one
 * after the other: the fill of the large memory runs (fresh memory, about
 * 3 s for 26 GB on 16 cores) and then the CUDA driver's copy of the GPU's
 * memory out of those runs (3.2-4.4 s).  Here the runs are registered with
 * a userfaultfd in each restored process (our CRIU, patches/criu/0003,
 * sends it over a socket), so the driver can start at once: a page it
 * reads before the fill got there waits for it instead of reading as zero
 * (docs/PERFORMANCE.md, run 33: the driver's restore does wait so).
 *
 * Every 1 MiB leaf of the memory file is copied into a buffer of the
 * filling thread, checked there against its digest from the image
 * (KC_BULK_LEAVES_NAME, whose own tree root must be the manifest's
 * checksum of the memory file), and only then copied into the process
 * (UFFDIO_COPY), so no byte reaches the driver unchecked, its own
 * thread's stack included.  Many threads fill ahead in address order; a
 * fault on a leaf nobody took is filled by the thread that reads it.
 * A leaf that fails its check, or a copy that fails, kills the processes
 * being filled: the driver waiting on their memory would wait forever, and
 * the restore is rolled back anyway.  The program's own threads stay
 * stopped until every leaf is in (kc_uffd_fill_finish).
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "archive_internal.h"
#include "bulk_uffd_int.h"
#include "kc/signals.h"
#include "kc/threads.h"
#include "kc/util.h"
#include "orchestrator_int.h"

/* Takes CRIU's userfaultfds as its tasks send them, during the restore
 * (CRIU registers nothing: their faults are served once kcheckpoint has
 * registered every process' memory, kc_uffd_fill_start). */
static void *acceptor(void *arg)
{
	struct kc_uffd_fill *f = arg;
	for (;;) {
		struct pollfd pf[2] = {{.fd = f->listen_fd, .events = POLLIN}, {.fd = f->stop_pipe[0], .events = POLLIN}};
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		if (pf[1].revents)
			return NULL;
		int c = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (c < 0) {
			if (errno == EINVAL) /* shut down: CRIU is done */
				return NULL;
			continue;
		}
		/* only a restored task of ours, as the kernel saw it connect
		 * (an abstract socket has no permissions: anyone may connect),
		 * and only what it sent at once: a peer never holds this up */
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		int pid = 0, ufd = -1;
		if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cred.uid != geteuid() ||
		    !kc_uffd_proc_of(f, cred.pid)) {
			close(c);
			continue;
		}
		struct pollfd in = {.fd = c, .events = POLLIN};
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = {.iov_base = &pid, .iov_len = sizeof(pid)};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
		ssize_t got = poll(&in, 1, 1000) == 1 ? recvmsg(c, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT) : -1;
		/* one descriptor counts; any other one sent is closed */
		for (struct cmsghdr *cm = got > 0 ? CMSG_FIRSTHDR(&msg) : NULL; cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t j = 0; j < k; j++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof(int));
				if (ufd < 0 && got == (ssize_t)sizeof(pid) && k == 1)
					ufd = fd;
				else
					close(fd);
			}
		}
		if (pid != cred.pid)
			pid = 0;
		close(c);
		struct uproc *p = ufd >= 0 && pid > 0 ? kc_uffd_proc_of(f, (pid_t)pid) : NULL;
		int none = -1;
		if (!p || !atomic_compare_exchange_strong(&p->fd, &none, ufd)) {
			if (ufd >= 0)
				close(ufd);
			continue; /* not one of ours, or a second one: the first counts */
		}
	}
}

static int cmp_offset(const void *a, const void *b)
{
	const struct kc_bulk_region *x = a, *y = b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_addr(const void *a, const void *b)
{
	const struct kc_bulk_region *x = *(const struct kc_bulk_region *const *)a;
	const struct kc_bulk_region *y = *(const struct kc_bulk_region *const *)b;
	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

/* The image's digests of each leaf, and their root against the manifest:
 * false (no error) where the image has none to go by. */
static int load_leaves(struct kc_uffd_fill *f, const char *images_dir, const struct kc_manifest *m,
		       struct kc_error **err)
{
	const char *sum = NULL;
	for (size_t i = 0; i < m->n_members; i++)
		if (!strcmp(m->members[i].path, KC_BULK_READ_NAME) && m->members[i].size == f->len)
			sum = m->members[i].sha256;
	bool listed = false;
	for (size_t i = 0; i < m->n_members; i++)
		listed |= !strcmp(m->members[i].path, KC_BULK_LEAVES_NAME);
	if (!sum || !listed)
		return 0;
	_cleanup_free_ char *path = kc_xasprintf("%s/" KC_BULK_LEAVES_NAME, images_dir);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	if (kc_read_file(path, &text, &len, err) < 0)
		return -1;
	f->n_leaves = (f->len + LEAF - 1) / LEAF;
	char hex[65];
	if (len == f->n_leaves * 32)
		kc_leaves_root((const uint8_t(*)[32])text, f->n_leaves, hex);
	if (len != f->n_leaves * 32 || strcmp(hex, sum))
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' does not match the checksum of '" KC_BULK_READ_NAME "'",
				    path);
	f->want = (uint8_t(*)[32])steal_ptr(text);
	return 1;
}

void kc_uffd_fill_free(struct kc_uffd_fill *f)
{
	if (!f)
		return;
	kc_uffd_fill_stop(f);
	for (size_t i = 0; i < f->n_procs; i++) {
		int fd = atomic_load(&f->procs[i].fd);
		if (fd >= 0)
			close(fd); /* the VMAs are plain memory again */
	}
	if (f->listen_fd >= 0)
		close(f->listen_fd);
	if (f->stop_pipe[0] >= 0) {
		close(f->stop_pipe[0]);
		close(f->stop_pipe[1]);
	}
	if (f->runs_path)
		unlink(f->runs_path);
	if (f->src_fd >= 0)
		close(f->src_fd);
	pthread_mutex_destroy(&f->why_lock);
	free(f->sock_path);
	free(f->runs_path);
	free(f->want);
	free((void *)f->state);
	free(f->first);
	free(f->first_list);
	free(f->v);
	free(f->by_addr);
	for (size_t i = 0; i < f->n_procs; i++) {
		free(f->procs[i].vmas);
		if (f->procs[i].mem_fd >= 0)
			close(f->procs[i].mem_fd);
	}
	free(f->procs);
	free(f->fillers);
	free(f);
}

void kc_uffd_fill_stop(struct kc_uffd_fill *f)
{
	if (!f)
		return;
	atomic_store(&f->stop, true);
	for (size_t i = 0; i < f->n_fillers; i++)
		pthread_join(f->fillers[i], NULL);
	f->n_fillers = 0;
	if (f->stop_pipe[1] >= 0 && (f->accepting || f->n_procs)) {
		ssize_t w = write(f->stop_pipe[1], "x", 1);
		(void)w;
	}
	if (f->accepting)
		pthread_join(f->acceptor, NULL);
	f->accepting = false;
	for (size_t i = 0; i < f->n_procs; i++)
		if (f->procs[i].serving) {
			pthread_join(f->procs[i].server, NULL);
			f->procs[i].serving = false;
		}
}

int kc_uffd_fill_prepare(const char *images_dir, const char *dir, const struct kc_manifest *m,
			 const struct kc_bulk_region *v, size_t n, unsigned threads, struct kc_uffd_fill **out,
			 struct kc_error **err)
{
	*out = NULL;
	/* the memory kcheckpoint read itself (private anonymous); what was
	 * split out of CRIU's own images (file maps' private pages, never
	 * registered) is filled as before */
	size_t n_read = 0;
	for (size_t i = 0; i < n; i++)
		n_read += !strcmp(v[i].file, KC_BULK_READ_NAME);
	if (!n_read)
		return 0;
	struct kc_uffd_fill *f = kc_xcalloc(1, sizeof(*f));
	f->listen_fd = -1;
	f->src_fd = -1;
	f->stop_pipe[0] = f->stop_pipe[1] = -1;
	pthread_mutex_init(&f->why_lock, NULL);
	f->threads = threads ? threads : 1;

	_cleanup_free_ char *path = kc_xasprintf("%s/" KC_BULK_READ_NAME, images_dir);
	/* O_NONBLOCK: a FIFO put in its place would wait for a writer */
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
		if (fd >= 0)
			close(fd);
		kc_uffd_fill_free(f);
		return 0; /* the plain fill says what is wrong with it */
	}
	f->len = (size_t)st.st_size;
	f->src_fd = fd;
	int lr = load_leaves(f, images_dir, m, err);
	if (lr <= 0) {
		kc_uffd_fill_free(f);
		return lr;
	}
	f->v = kc_xcalloc(n_read, sizeof(*f->v));
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].file, KC_BULK_READ_NAME))
			f->v[f->n++] = v[i];
	n = f->n;
	qsort(f->v, n, sizeof(*f->v), cmp_offset);
	f->by_addr = kc_xcalloc(n, sizeof(*f->by_addr));
	for (size_t i = 0; i < n; i++) {
		f->by_addr[i] = &f->v[i];
		if (f->v[i].offset > f->len || f->v[i].bytes > f->len - f->v[i].offset) {
			kc_uffd_fill_free(f);
			return 0; /* the plain fill's error */
		}
	}
	qsort(f->by_addr, n, sizeof(*f->by_addr), cmp_addr);
	f->procs = kc_xcalloc(n, sizeof(*f->procs));
	for (size_t i = 0; i < n; i++)
		if (!kc_uffd_proc_of(f, f->v[i].pid)) {
			f->procs[f->n_procs].pid = f->v[i].pid;
			atomic_init(&f->procs[f->n_procs].fd, -1);
			f->procs[f->n_procs].mem_fd = -1;
			f->n_procs++;
		}
	f->state = kc_xcalloc(f->n_leaves + 1, 1);
	/* the driver's copy of the GPU's memory, filled beside its restore;
	 * an image without that list (an older dump) is filled as before */
	_cleanup_free_ pid_t *bpid = NULL;
	_cleanup_free_ struct kc_range *bk = NULL;
	size_t n_bk = 0;
	bool listed = false;
	for (size_t i = 0; i < m->n_members; i++)
		listed |= !strcmp(m->members[i].path, KC_GPU_BACKUP_NAME);
	if (!listed || kc_gpu_backup_read(images_dir, &bpid, &bk, &n_bk) < 0) {
		kc_uffd_fill_free(f);
		return 0;
	}
	f->first = kc_xcalloc(f->n_leaves + 1, 1);
	for (size_t i = 0; i < n; i++) { /* each byte outside makes its leaf first */
		const struct kc_bulk_region *r = &f->v[i];
		uint64_t at = r->vaddr, end = r->vaddr + r->bytes;
		while (at < end) {
			uint64_t in_end = 0, next_in = end; /* a backup range holding at; the next one after it */
			for (size_t k = 0; k < n_bk; k++) {
				if (bpid[k] != r->pid)
					continue;
				if (bk[k].lo <= at && at < bk[k].hi && bk[k].hi > in_end)
					in_end = bk[k].hi;
				if (bk[k].lo > at && bk[k].lo < next_in)
					next_in = bk[k].lo;
			}
			if (in_end) {
				at = in_end < end ? in_end : end;
				continue;
			}
			uint64_t lo = r->offset + (at - r->vaddr), hi = r->offset + (next_in - r->vaddr);
			for (uint64_t l = lo / LEAF; l <= (hi - 1) / LEAF; l++)
				f->first[l] = 1;
			at = next_in;
		}
	}
	f->first_list = kc_xcalloc(f->n_leaves + 1, sizeof(size_t));
	for (size_t l = 0; l < f->n_leaves; l++)
		if (f->first[l])
			f->first_list[f->n_first++] = l;
	const char *stats = getenv("KCHECKPOINT_FILL_STATS");
	f->stats = stats && !strcmp(stats, "1");

	/* the runs, for CRIU to register their VMAs */
	f->runs_path = kc_xasprintf("%s/kcheckpoint-uffd-runs.txt", dir);
	FILE *rf = fopen(f->runs_path, "we");
	if (rf) {
		for (size_t i = 0; i < n; i++)
			fprintf(rf, "%d %" PRIx64 " %" PRIx64 "\n", (int)f->v[i].pid, f->v[i].vaddr,
				f->v[i].vaddr + f->v[i].bytes);
	}
	if (!rf || fclose(rf) != 0) {
		kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot write '%s'", f->runs_path);
		kc_uffd_fill_free(f);
		return -1;
	}
	/* abstract ("@" for CRIU): no path that a deep TMPDIR makes too long;
	 * who sends what is checked by the sender's credentials (acceptor) */
	uint64_t nonce = 0;
	if (getrandom(&nonce, sizeof(nonce), GRND_NONBLOCK) != (ssize_t)sizeof(nonce))
		nonce = (uint64_t)(kc_now() * 1e9);
	f->sock_path = kc_xasprintf("@kcheckpoint-uffd-%d-%016" PRIx64, (int)getpid(), nonce);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t slen = strlen(f->sock_path);
	memcpy(sun.sun_path + 1, f->sock_path + 1, slen - 1);
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + slen);
	f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sun, alen) < 0 ||
	    listen(f->listen_fd, 64) < 0 || pipe2(f->stop_pipe, O_CLOEXEC) < 0) {
		kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot listen on '%s'", f->sock_path);
		kc_uffd_fill_free(f);
		return -1;
	}
	if (kc_thread_start(&f->acceptor, acceptor, f) != 0) {
		kc_error_set(err, KC_EXIT_FAILURE, EAGAIN, "cannot start a thread");
		kc_uffd_fill_free(f);
		return -1;
	}
	f->accepting = true;
	*out = f;
	return 0;
}

const char *kc_uffd_fill_socket(const struct kc_uffd_fill *f)
{
	return f ? f->sock_path : NULL;
}

const char *kc_uffd_fill_runs(const struct kc_uffd_fill *f)
{
	return f ? f->runs_path : NULL;
}

uint64_t kc_uffd_fill_total(const struct kc_uffd_fill *f)
{
	return f ? f->len : 0;
}

uint64_t kc_uffd_fill_done(void *f)
{
	return atomic_load(&((struct kc_uffd_fill *)f)->done);
}

/* Registers each VMA of p that a run touches, whole (no split), as CRIU
 * left it: its holes are served as zero pages.  -1 with errno. */
struct reg_arg {
	struct kc_uffd_fill *f;
	struct uproc *p;
	int err; /* an errno, once one failed */
};

static int register_one(const struct kc_map *m, void *arg)
{
	struct reg_arg *a = arg;
	const struct kc_bulk_region *r = kc_uffd_run_from(a->f, a->p->pid, m->lo);
	if (!r || r->vaddr >= m->hi) /* no run touches it */
		return 0;
	struct uffdio_register reg = {.range = {.start = m->lo, .len = m->hi - m->lo}, .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(atomic_load(&a->p->fd), UFFDIO_REGISTER, &reg) < 0) {
		a->err = errno;
		return 1;
	}
	a->p->vmas = kc_xrealloc(a->p->vmas, (a->p->n_vmas + 1) * sizeof(*a->p->vmas));
	a->p->vmas[a->p->n_vmas++] = (struct kc_range){m->lo, m->hi};
	return 0;
}

static int register_vmas(struct kc_uffd_fill *f, struct uproc *p)
{
	struct reg_arg a = {f, p, 0};
	if (kc_pid_maps_each(p->pid, register_one, &a) < 0)
		return -1;
	errno = a.err;
	return a.err ? -1 : 0;
}

/*
 * The pages of p's runs that are there already, though nothing was filled:
 * the kernel wrote them while CRIU restored (a thread's rseq area, in the
 * TCB at the top of its stack).  A read of them would not wait for the
 * fill, so their leaves go in now, before the driver runs.  -1 with errno.
 */
static int fill_present(struct kc_uffd_fill *f, struct uproc *p, int pagemap, unsigned char *buf)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct kc_bulk_region *r = f->by_addr[i];
		if (r->pid != p->pid)
			continue;
		uint64_t at = r->vaddr, end = r->vaddr + r->bytes;
		while (at < end) {
			struct page_region v[64];
			struct pm_scan_arg a = {.size = sizeof(a), .start = at, .end = end, .vec = (uint64_t)(uintptr_t)v,
						.vec_len = 64, .category_mask = PAGE_IS_PRESENT,
						.return_mask = PAGE_IS_PRESENT};
			long got = ioctl(pagemap, PAGEMAP_SCAN, &a);
			if (got < 0)
				return -1;
			for (long k = 0; k < got; k++)
				for (uint64_t pg = v[k].start; pg < v[k].end; pg += PAGE) {
					size_t l = (size_t)((r->offset + (pg - r->vaddr)) / LEAF);
					/* a first leaf goes in before the driver runs anyway */
					if (!f->first[l] && kc_uffd_fill_leaf(f, l, buf) < 0)
						return -1;
					pg = r->vaddr + ((uint64_t)(l + 1) * LEAF - r->offset) - PAGE; /* next leaf */
				}
			if (a.walk_end <= at)
				break;
			at = a.walk_end;
		}
	}
	return 0;
}

/* The first failure, as the command's error. */
static int fill_error(struct kc_uffd_fill *f, struct kc_error **err)
{
	int e = atomic_load(&f->failed);
	if (e == EBADMSG) /* a damaged image */
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "%s", f->why);
	return kc_error_set(err, KC_EXIT_CRIU, e, "cannot fill the memory of the restored tree: %s",
			    f->why[0] ? f->why : strerror(e));
}

/* Whether this kernel has PAGEMAP_SCAN (6.7), which fill_present needs. */
static bool can_scan(void)
{
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		return false;
	static const char probe[PAGE] __attribute__((aligned(PAGE)));
	struct page_region v[1];
	struct pm_scan_arg a = {.size = sizeof(a), .start = (uint64_t)(uintptr_t)probe,
				.end = (uint64_t)(uintptr_t)probe + PAGE, .vec = (uint64_t)(uintptr_t)v, .vec_len = 1,
				.category_mask = PAGE_IS_PRESENT, .return_mask = PAGE_IS_PRESENT};
	bool ok = ioctl(pm, PAGEMAP_SCAN, &a) >= 0;
	close(pm);
	return ok;
}

static int run_fillers(struct kc_uffd_fill *f, unsigned n, void *(*fn)(void *))
{
	if (n > f->n_leaves)
		n = (unsigned)f->n_leaves;
	if (!n)
		n = 1;
	free(f->fillers);
	f->fillers = kc_xcalloc(n + 1, sizeof(pthread_t));
	f->n_fillers = 0;
	for (unsigned i = 0; i < n; i++) {
		if (kc_thread_start(&f->fillers[f->n_fillers], fn, f) != 0)
			break;
		f->n_fillers++;
	}
	if (!f->n_fillers) {
		kc_uffd_fail(f, EAGAIN, "cannot start a thread");
		return -1;
	}
	return 0;
}

bool kc_uffd_fill_ready(struct kc_uffd_fill *f)
{
	/* CRIU has returned: every task that had such VMAs sent its fd, and
	 * nothing more is taken */
	if (f->accepting) {
		shutdown(f->listen_fd, SHUT_RDWR);
		pthread_join(f->acceptor, NULL);
		f->accepting = false;
	}
	size_t got = 0;
	for (size_t i = 0; i < f->n_procs; i++)
		got += atomic_load(&f->procs[i].fd) >= 0;
	/* none or some: a CRIU without patches/criu/0003, a process whose
	 * VMAs it did not mark; a kernel before 6.7.  Nothing is registered
	 * yet: the plain fill is safe */
	return got == f->n_procs && can_scan();
}

int kc_uffd_fill_start(struct kc_uffd_fill *f, struct kc_error **err)
{
	for (size_t i = 0; i < f->n_procs; i++)
		if (atomic_load(&f->procs[i].fd) < 0) {
			kc_uffd_fail(f, ESRCH, "no userfaultfd came for pid %d", (int)f->procs[i].pid);
			return fill_error(f, err);
		}
	f->t0 = kc_now();
	/* CRIU left the tree stopped with every VMA in place: registered now,
	 * through the process' own userfaultfd; what is there already goes in
	 * first */
	_cleanup_free_ unsigned char *buf = kc_xmalloc(LEAF);
	for (size_t i = 0; i < f->n_procs; i++) {
		struct uproc *p = &f->procs[i];
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/mem", (int)p->pid);
		p->mem_fd = open(path, O_RDWR | O_CLOEXEC);
		if (p->mem_fd < 0 || register_vmas(f, p) < 0) {
			int e = errno;
			kc_uffd_fail(f, e, "cannot register the memory of pid %d: %s", (int)p->pid, strerror(e));
			return fill_error(f, err);
		}
	}
	/* a fault is served from here on; every process' memory is
	 * registered (a leaf may hold the runs of several) */
	for (size_t i = 0; i < f->n_procs; i++) {
		kc_uffd_start_server(f, &f->procs[i]);
		if (atomic_load(&f->failed))
			return fill_error(f, err);
	}
	/* what is there already first */
	for (size_t i = 0; i < f->n_procs; i++) {
		struct uproc *p = &f->procs[i];
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)p->pid);
		int pm = open(path, O_RDONLY | O_CLOEXEC);
		int rc = pm < 0 ? -1 : fill_present(f, p, pm, buf);
		int e = errno;
		if (pm >= 0)
			close(pm);
		if (rc < 0) {
			kc_uffd_fail(f, e, "cannot fill the memory already there in pid %d: %s", (int)p->pid, strerror(e));
			return fill_error(f, err);
		}
	}
	/* everything but the driver's copy, with every core, before the
	 * driver's thread runs any code */
	kc_run_pool(f->threads, f->n_first, kc_uffd_filler, f);
	f->first_s = kc_now() - f->t0;
	if (atomic_load(&f->failed))
		return fill_error(f, err);
	if (atomic_load(&f->stop) && kc_check_interrupted(err) < 0)
		return -1;
	/* the rest beside the GPU restore, a core left for the driver's copy
	 * (KCHECKPOINT_FILL_SERIAL=1, for benchmarks: all of it first) */
	const char *serial = getenv("KCHECKPOINT_FILL_SERIAL");
	bool all_now = serial && !strcmp(serial, "1");
	if (f->n_first == f->n_leaves) /* nothing of the driver's copy */
		return 0;
	if (run_fillers(f, all_now || f->threads <= 2 ? f->threads : f->threads - 1, kc_uffd_filler_rest) < 0)
		return fill_error(f, err);
	if (all_now) {
		for (size_t i = 0; i < f->n_fillers; i++)
			pthread_join(f->fillers[i], NULL);
		f->n_fillers = 0;
	}
	return 0;
}

bool kc_uffd_fill_pending(const struct kc_uffd_fill *f)
{
	return f && f->n_fillers > 0;
}

double kc_uffd_fill_first_seconds(const struct kc_uffd_fill *f)
{
	return f ? f->first_s : 0;
}

bool kc_uffd_fill_failed(const struct kc_uffd_fill *f)
{
	/* a process or a mapping gone is what a GPU step's failure does to
	 * the fill, not what the fill did to it */
	int e = f ? atomic_load(&((struct kc_uffd_fill *)f)->failed) : 0;
	return e && e != ESRCH && e != ENOENT;
}

int kc_uffd_fill_finish(struct kc_uffd_fill *f, double *seconds, uint64_t *bytes, struct kc_error **err)
{
	/* every leaf in, a fault's thread may fill the last one; the GPU is
	 * back, nothing waits on the fill now: ^C stops it at once */
	while (atomic_load(&f->leaves_done) < f->n_leaves && !atomic_load(&f->failed) && !atomic_load(&f->stop)) {
		if (kc_signals_pending())
			atomic_store(&f->stop, true);
		struct timespec ts = {0, 2000000L};
		nanosleep(&ts, NULL);
	}
	for (size_t i = 0; i < f->n_fillers; i++)
		pthread_join(f->fillers[i], NULL);
	f->n_fillers = 0;
	*seconds = kc_now() - f->t0;
	*bytes = atomic_load(&f->done);
	if (f->stats)
		fprintf(stderr, "kcheckpoint: fill stats: %zu of %zu leaves first (%.3f s); thread-seconds: read %.3f, "
				"checksum %.3f, copy in %.3f; %" PRIu64 " faults served\n",
			f->n_first, f->n_leaves, f->first_s, atomic_load(&f->ns_read) / 1e9,
			atomic_load(&f->ns_sum) / 1e9, atomic_load(&f->ns_copy) / 1e9, (uint64_t)atomic_load(&f->faults));
	if (atomic_load(&f->failed))
		return fill_error(f, err);
	if (atomic_load(&f->leaves_done) < f->n_leaves) { /* only a stop leaves one: ^C */
		if (kc_check_interrupted(err) < 0)
			return -1;
		return kc_error_set(err, KC_EXIT_FAILURE, EINTR, "the memory fill was stopped");
	}
	return 0;
}
