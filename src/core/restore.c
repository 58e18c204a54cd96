/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <sys/stat.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "gpu_stage.h"
#include "kc/gpumap.h"
#include "kc/orchestrator.h"
#include "kc/prefetch.h"
#include "kc/proctree.h"
#include "kc/undo.h"
#include "kc/workdir.h"
#include "kc/thp.h"
#include "kc/archive.h"
#include "kc/util.h"
#include "orchestrator_int.h"

/*
 * After a dump the old pids can stay taken for a while (the kernel still
 * freeing a large address space, then a zombie whose parent has not
 * reaped it yet); CRIU needs them free, so wait, bounded.
 */
static int wait_pids_free(const struct kc_manifest *m, unsigned wait_ms, double *waited,
			  struct kc_error **err)
{
	double t0 = kc_now(), deadline = t0 + wait_ms / 1000.0;
	for (;;) {
		pid_t busy = 0;
		for (size_t i = 0; i < m->n_procs && !busy; i++)
			if (kc_pid_exists(m->procs[i].pid))
				busy = m->procs[i].pid;
		*waited = kc_now() - t0;
		if (!busy)
			return 0;
		if (kc_check_interrupted(err) < 0)
			return -1;
		if (kc_now() >= deadline) {
			char comm[64];
			kc_pid_comm(busy, comm, sizeof(comm));
			char st = kc_pid_state(busy);
			return kc_error_set(err, KC_EXIT_BUSY, EBUSY,
					    "pid %d is still taken by '%s' (state %c) after %u ms: restore needs the "
					    "dumped pids free (see --pid-wait)",
					    (int)busy, comm, st ? st : '?', wait_ms);
		}
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

struct discard_arg {
	const struct kc_criu *criu;
	pid_t root;
	uint64_t root_start; /* its tree is walked only while the pid is still it */
	/* the tree as CRIU left it, stopped: a failed fill kills the processes
	 * it fills, the root maybe among them, and the root's tree no longer
	 * reaches the others then (orphans keeping the image's pids) */
	size_t n;
	struct {
		pid_t pid;
		uint64_t start; /* the same process, not a later one with its pid */
	} t[];
};

/*
 * The runs kcheckpoint fills in the processes whose GPU it restores, for a
 * CRIU that advises MADV_HUGEPAGE on the VMAs they mostly cover
 * (patches/criu/0002): on a node whose THP mode is "madvise" the driver
 * then copies the GPU's memory back out of 2 MiB pages, 1.1 s sooner for
 * 26 GB on an H200 (docs/PERFORMANCE.md, runs 25-26), while the fill
 * itself takes 0.3 s longer there (and 1 s longer for 4 GiB on a 2-core
 * VM), so processes without a GPU are left as dumped.  The process keeps
 * that advice, as if it had asked for it.  NULL where there is nothing to
 * advise, the mode is another (always: huge already; never: no use) or
 * unreadable.
 */
static char *huge_runs_file(const char *dir, const struct kc_bulk_region *v, size_t n, const struct kc_gpu_set *gpu)
{
	char mode[16];
	if (!n || !gpu->n || kc_thp_get(mode, sizeof(mode), NULL) < 0 || strcmp(mode, "madvise") != 0)
		return NULL;
	char *path = kc_xasprintf("%s/kcheckpoint-huge.txt", dir);
	FILE *f = fopen(path, "we");
	if (!f) {
		free(path);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < gpu->n; j++)
			if (gpu->pids[j] == v[i].pid)
				fprintf(f, "%d %" PRIx64 " %" PRIx64 "\n", (int)v[i].pid, v[i].vaddr,
					v[i].vaddr + v[i].bytes);
	if (fclose(f) != 0) { /* an advice, not the restore: without it */
		unlink(path);
		free(path);
		return NULL;
	}
	return path;
}

/* The fill beside the GPU restore, once it is over: every byte is in and
 * checked, and from here on recover may run the tree. */
static int finish_fill(struct kc_uffd_fill **uf, struct kc_report *r, const struct kc_bulk_region *bulk, size_t n_bulk,
		       bool *fill_done, struct kc_error **err)
{
	if (!*uf)
		return 0;
	double s = 0, t0 = kc_now();
	uint64_t bytes = 0;
	struct kc_progress *pg = kc_progress_start("fill-wait", kc_uffd_fill_done, *uf);
	kc_progress_total(pg, kc_uffd_fill_total(*uf));
	int fr = kc_uffd_fill_finish(*uf, &s, &bytes, err);
	kc_progress_stop(pg);
	if (fr < 0)
		return -1;
	kc_report_add(r, "memory-fill", s, bytes);
	/* how much longer than the GPU restore the fill took */
	kc_report_add(r, "fill-wait", kc_now() - t0, 0);
	kc_uffd_fill_free(*uf);
	*uf = NULL;
	*fill_done = true;
	for (size_t i = 0; i < n_bulk; i++)
		kc_fillmark_clear(bulk[i].pid);
	return kc_check_interrupted(err);
}

/* A step that failed because the fill beside it failed (and killed the
 * processes): the fill's error is the one. */
static bool fill_failed_first(struct kc_uffd_fill **uf, struct kc_report *r, const struct kc_bulk_region *bulk,
			      size_t n_bulk, bool *fill_done, struct kc_error **err)
{
	if (!kc_uffd_fill_failed(*uf))
		return false;
	if (err) {
		kc_error_free(*err);
		*err = NULL;
	}
	finish_fill(uf, r, bulk, n_bulk, fill_done, err);
	return true;
}

static bool stopped_when_dumped(const struct kc_manifest *m, pid_t pid)
{
	for (size_t j = 0; j < m->n_procs; j++)
		if (m->procs[j].pid == pid)
			return m->procs[j].stopped;
	return false;
}

/* The tree CRIU left stopped runs, but for the processes stopped when
 * dumped, which stay (or are again, after a thread of theirs ran alone)
 * stopped. */
static void run_tree(const struct kc_manifest *m, const pid_t *tree, size_t n_tree)
{
	for (size_t i = 0; i < n_tree; i++)
		kill(tree[i], stopped_when_dumped(m, tree[i]) ? SIGSTOP : SIGCONT);
}

static int undo_discard(void *arg, struct kc_error **err)
{
	struct discard_arg *a = arg;
	if (a->criu->ops->discard)
		return a->criu->ops->discard(a->criu->h, a->root, err);
	_cleanup_free_ pid_t *pids = NULL;
	size_t n = 0;
	/* a root killed meanwhile (the OOM killer) and reaped (init, a
	 * subreaper) frees its pid for another process, whose tree is not ours */
	bool root_ours = a->root_start && kc_pid_starttime(a->root) == a->root_start;
	if (!root_ours || kc_proctree(a->root, &pids, &n, NULL) < 0) { /* the root is gone */
		free(steal_ptr(pids));
		n = 0;
	}
	pids = kc_xrealloc(pids, (n + a->n + 1) * sizeof(*pids));
	for (size_t i = 0; i < a->n; i++) {
		bool listed = false;
		for (size_t k = 0; k < n && !listed; k++)
			listed = pids[k] == a->t[i].pid;
		if (!listed && a->t[i].start && kc_pid_starttime(a->t[i].pid) == a->t[i].start)
			pids[n++] = a->t[i].pid;
	}
	return n ? kc_proctree_kill(pids, n, KC_KILL_EXITED, 10000, err) : 0;
}

static uint64_t pages_bytes(const struct kc_report *r, const char *dir)
{
	if (r->criu.have_restore && r->criu.pages_restored)
		return r->criu.pages_restored * (uint64_t)sysconf(_SC_PAGESIZE);
	return kc_dir_size(dir);
}

/* Waits for the driver (if it is still loading), then maps the image's GPUs onto this node's. */
static int plan_gpus(const struct kc_restore_opts *o, const struct kc_backends *b, const struct kc_manifest *m,
		     size_t n_cuda, struct kc_gpu_pair **pairs, size_t *n_pairs, struct kc_report *r,
		     struct kc_error **err)
{
	if (o->gpu_ready) {
		double t0 = kc_now();
		if (o->gpu_ready(o->gpu_ready_arg, err) < 0)
			return -1;
		double waited = kc_now() - t0;
		/* only shows when driver start-up outlasted what ran before */
		if (waited >= 0.001)
			kc_report_add(r, "gpu-init-wait", waited, 0);
	}
	if (!b->cuda)
		return kc_error_set(err, KC_EXIT_GPU, 0,
				    "the image holds %zu CUDA process(es) but no CUDA driver is loaded", n_cuda);
	_cleanup_free_ struct kc_uuid *local = NULL;
	size_t n_local = 0;
	if (b->cuda->ops->list_gpus)
		b->cuda->ops->list_gpus(b->cuda->h, &local, &n_local, NULL);
	return kc_gpu_map_plan(m, o->pairs, o->n_pairs, local, n_local, pairs, n_pairs, err);
}

/* A deleted-but-linked file of the dump lives on in a hard link on the
 * node that dumped it (criu --link-remap); elsewhere, or after a restore
 * that used it up, CRIU would fail on it after unpacking everything. */
int kc_restore_check_links(const struct kc_manifest *m, struct kc_error **err)
{
	for (char **l = m->link_remaps; l && *l; l++)
		if (access(*l, F_OK) < 0) {
			kc_error_set(err, KC_EXIT_IMAGE, ENOENT,
				     "the image needs '%s', a link CRIU made on '%s' for a deleted file that still "
				     "had another name, and it is not here",
				     *l, m->host ? m->host : "the dumping node");
			return kc_error_set_hint(err, "restore it on that node, once (a restore uses the link up)");
		}
	return 0;
}

int kc_restore_check_space(const struct kc_manifest *m, const char *dir, struct kc_error **err)
{
	/* memory members at the end go straight into the processes */
	if (kc_check_room(dir, kc_archive_unpacked_bytes(m), "unpacking", err) == 0)
		return 0;
	return kc_error_set_hint(err, "see --work-dir");
}

int kc_restore(const struct kc_restore_opts *o, const struct kc_backends *b, struct kc_manifest *m,
	       struct kc_report *r, pid_t *root_pid, struct kc_error **err)
{
	struct kc_undo undo = {0};
	int rc = -1;
	struct kc_gpu_set *to_restore = NULL, *to_unlock = NULL;
	struct kc_gpu_pair *pairs = NULL;
	size_t n_pairs = 0;
	_cleanup_strv_ char **extra = NULL; /* CRIU options */
	int *pid_locks = NULL;
	size_t n_locked = 0;
	_cleanup_free_ struct kc_bulk_region *bulk = NULL; /* memory CRIU leaves to us */
	size_t n_bulk = 0;
	bool fill_done = false; /* every process' memory is back */
	struct kc_uffd_fill *uf = NULL; /* that memory filled beside the GPU restore */
	_cleanup_free_ char *criu_dir = NULL; /* CRIU's log and stats, ours */
	_cleanup_free_ char *huge_runs = NULL; /* in it: the runs to advise huge */
	_cleanup_free_ pid_t *tree = NULL;      /* the restored tree, while CRIU left it stopped */
	size_t n_tree = 0;
	_cleanup_free_ struct kc_held_thread *held = NULL; /* restore threads run alone meanwhile */
	size_t n_held = 0;
	_cleanup_free_ pid_t *stopped = NULL; /* stopped when dumped, each with its mark */
	size_t n_stopped = 0;

	if (m->n_procs == 0 && kc_manifest_read(o->images_dir, m, err) < 0)
		return -1;
	/* the dumped pids are the ones CRIU brings back (not in a container's
	 * namespace): no other kcheckpoint may work on them meanwhile */
	if (!b->criu->ops->restored_pid) {
		_cleanup_free_ pid_t *dumped = kc_xcalloc(m->n_procs + 1, sizeof(pid_t));
		for (size_t i = 0; i < m->n_procs; i++)
			dumped[i] = m->procs[i].pid;
		if (kc_pids_lock(dumped, m->n_procs, &pid_locks, err) < 0)
			return -1;
		n_locked = m->n_procs;
	}

	if (!b->criu->ops->restored_pid && kc_restore_check_links(m, err) < 0)
		goto out;
	if (kc_criu_read_bulk(o->images_dir, &bulk, &n_bulk, err) < 0)
		goto out;
	/* format 2 promises memory outside CRIU's images: without its index
	 * it would come back as zeros */
	for (size_t i = 0; i < n_bulk; i++) {
		bool dumped = false;
		for (size_t j = 0; j < m->n_procs && !dumped; j++)
			dumped = m->procs[j].pid == bulk[i].pid;
		if (!dumped) {
			kc_error_set(err, KC_EXIT_IMAGE, 0,
				     "'" KC_BULK_INDEX "' names pid %d, which is not a process of the restored tree",
				     (int)bulk[i].pid);
			free(steal_ptr(bulk));
			n_bulk = 0; /* no marks were set for these */
			goto out;
		}
	}
	/* the file kcheckpoint read itself is its runs end to end (the index
	 * checked they touch): a run dropped at its end shows here */
	uint64_t read_total = 0;
	bool has_read = false;
	for (size_t i = 0; i < n_bulk; i++)
		if (!strcmp(bulk[i].file, KC_BULK_READ_NAME)) {
			read_total += bulk[i].bytes;
			has_read = true;
		}
	if (has_read) {
		int64_t size = -1;
		for (size_t i = 0; i < m->n_members; i++)
			if (!strcmp(m->members[i].path, KC_BULK_READ_NAME))
				size = (int64_t)m->members[i].size;
		struct stat st;
		_cleanup_free_ char *rp = kc_xasprintf("%s/" KC_BULK_READ_NAME, o->images_dir);
		if (size < 0 && stat(rp, &st) == 0)
			size = (int64_t)st.st_size;
		if (size >= 0 && (uint64_t)size != read_total) {
			kc_error_set(err, KC_EXIT_IMAGE, 0,
				     "'" KC_BULK_INDEX "' accounts for %" PRIu64 " of the %" PRId64 " bytes of '" KC_BULK_READ_NAME
				     "'", read_total, size);
			goto out;
		}
	}
	if (m->format >= KC_MANIFEST_FORMAT_BULK && !n_bulk) {
		kc_error_set(err, KC_EXIT_IMAGE, 0, "the image keeps memory outside CRIU's images, but '" KC_BULK_INDEX
						    "' is missing or empty");
		goto out;
	}
	if (o->archive && !n_bulk) {
		kc_error_set(err, KC_EXIT_IMAGE, 0, "the archive has memory members but no '" KC_BULK_INDEX "'");
		goto out;
	}
	if (n_bulk && b->criu->ops->restored_pid) {
		kc_error_set(err, KC_EXIT_IMAGE, 0, "a containerd image with memory outside CRIU's images");
		goto out;
	}

	to_restore = kc_gpu_set_new(b, m->n_procs);
	to_unlock = kc_gpu_set_new(b, m->n_procs);
	for (size_t i = 0; i < m->n_procs; i++) {
		const struct kc_manifest_proc *p = &m->procs[i];
		if (!p->cuda)
			continue;
		/* bring each process back to the state it had before the dump */
		if (p->cuda_state == KC_CUDA_RUNNING || p->cuda_state == KC_CUDA_LOCKED)
			to_restore->pids[to_restore->n++] = p->pid;
		if (p->cuda_state == KC_CUDA_RUNNING)
			to_unlock->pids[to_unlock->n++] = p->pid;
	}
	/*
	 * Planned before CRIU restores anything where that costs no overlap
	 * (the driver is loaded already), and where a map the user gave must
	 * be checked first: a typo must not cost a restore and a rollback.
	 * Unless the caller checked it without the driver, that waits for the
	 * driver here; otherwise planning follows CRIU, which driver start-up
	 * overlaps.
	 */
	bool planned = false;
	if (to_restore->n && (!o->gpu_ready || (o->n_pairs && !o->map_checked))) {
		if (plan_gpus(o, b, m, to_restore->n, &pairs, &n_pairs, r, err) < 0)
			goto out;
		planned = true;
	}
	/* an images dir's checksums (an archive's were checked as it was
	 * unpacked): CRIU's images now, the memory files while they fill */
	if (!o->images_private && m->n_members) {
		double t0 = kc_now();
		struct kc_progress *vp = kc_progress_start("verify", NULL, NULL);
		int vr = kc_images_verify(o->images_dir, m, o->fill_threads ? o->fill_threads : 1,
					  n_bulk ? kc_archive_is_bulk_member : NULL, err);
		kc_progress_stop(vp);
		if (vr < 0)
			goto out;
		kc_report_add(r, "verify", kc_now() - t0, 0);
	}
	double waited = 0;
	if (!b->criu->ops->restored_pid && wait_pids_free(m, o->pid_wait_ms, &waited, err) < 0)
		goto out;
	if (waited >= 0.001)
		kc_report_add(r, "pid-wait", waited, 0);

	struct kc_criu_opts copts = o->criu;
	copts.tcp_established = m->tcp_established;
	copts.tcp_close = m->tcp_close;
	copts.shell_job = m->shell_job;
	copts.file_locks = m->file_locks;
	copts.link_remap = m->link_remap;
	copts.leave_stopped = false;
	/* nothing of the tree may run before its large memory is back, nor
	 * before its GPUs are (a CRIU in a container runtime restores it its
	 * own way) */
	copts.restore_stopped = n_bulk > 0 || (!b->criu->ops->restored_pid && (to_restore->n || to_unlock->n));
	/* before CRIU: a kcheckpoint killed from here on leaves stopped
	 * processes whose memory is not all there, which recover must not run */
	for (size_t i = 0; i < n_bulk; i++)
		if (kc_fillmark_set(bulk[i].pid, err) < 0)
			goto out;
	/* the dump's own CRIU options, then this restore's */
	extra = kc_xcalloc(kc_strv_len(m->criu_extra) + kc_strv_len(o->criu.extra) + 1, sizeof(char *));
	size_t n_extra = 0;
	for (char **x = m->criu_extra; x && *x; x++)
		extra[n_extra++] = kc_xstrdup(*x);
	for (char *const *x = o->criu.extra; x && *x; x++)
		extra[n_extra++] = kc_xstrdup(*x);
	copts.extra = n_extra ? extra : NULL;
	/* CRIU's log, pidfile and stats: not into the user's images dir */
	if (!o->images_private && !b->criu->ops->restored_pid) {
		const char *tmp = getenv("TMPDIR");
		criu_dir = kc_xasprintf("%s/kcheckpoint-criu-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(criu_dir)) {
			kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create '%s'", criu_dir);
			free(steal_ptr(criu_dir));
			goto out;
		}
		copts.log_dir = criu_dir;
	}
	const char *stats_dir = criu_dir ? criu_dir : o->images_dir;
	/* never into a user's images dir (containerd restores with its own CRIU) */
	if (o->fill_huge && (criu_dir || o->images_private))
		huge_runs = huge_runs_file(stats_dir, bulk, n_bulk, to_restore);
	copts.huge_runs = huge_runs;
	/* beside the GPU restore, where there is one and each piece can be
	 * checked before the driver reads it (an archive fills as it unpacks) */
	if (o->fill_overlap && n_bulk && to_restore->n && !o->archive && !o->images_private && criu_dir &&
	    kc_uffd_fill_prepare(o->images_dir, criu_dir, m, bulk, n_bulk, o->fill_threads, &uf, err) < 0)
		goto out;
	copts.uffd_socket = kc_uffd_fill_socket(uf);
	copts.uffd_runs = kc_uffd_fill_runs(uf);
	pid_t root = 0;
	struct kc_progress *pg = kc_progress_start("criu-restore", NULL, NULL);
	struct kc_prefetch *pf = o->prefetch ? kc_prefetch_start(o->images_dir, 8) : NULL;
	double t0 = kc_now();
	int cr = b->criu->ops->restore(b->criu->h, &copts, o->images_dir, &root, err);
	double restore_s = kc_now() - t0;
	kc_prefetch_stop(pf);
	kc_progress_stop(pg);
	if (cr < 0)
		goto out;
	int tr = copts.restore_stopped ? kc_proctree(root, &tree, &n_tree, err) : 0;
	struct discard_arg *da = kc_xcalloc(1, sizeof(*da) + (n_tree + 1) * sizeof(da->t[0]));
	da->criu = b->criu;
	da->root = root;
	da->root_start = kc_pid_starttime(root);
	for (size_t i = 0; i < n_tree; i++)
		da->t[da->n++] = (typeof(da->t[0])){tree[i], kc_pid_starttime(tree[i])};
	kc_undo_push(&undo, "restored process", undo_discard, da);
	kc_criu_read_stats(stats_dir, &r->criu, NULL);
	r->criu.have_dump = false; /* the dump's figures are the manifest's business */
	kc_report_add(r, "criu-restore", restore_s, pages_bytes(r, o->images_dir));
	if (tr < 0 || kc_check_interrupted(err) < 0)
		goto rollback;
	/* run_tree stops these again; should this kcheckpoint be killed
	 * before, recover does */
	stopped = kc_xcalloc(n_tree + 1, sizeof(pid_t));
	if (n_tree)
		kc_stopmark_sweep();
	for (size_t i = 0; i < n_tree; i++)
		if (stopped_when_dumped(m, tree[i])) {
			if (kc_stopmark_set(tree[i], err) < 0)
				goto rollback;
			stopped[n_stopped++] = tree[i];
		}
	if (n_bulk) {
		for (size_t i = 0; i < n_bulk; i++)
			kc_fillmark_stamp(bulk[i].pid);
		/* the index may only name processes CRIU just restored */
		for (size_t i = 0; i < n_bulk; i++) {
			bool ours = false;
			for (size_t j = 0; j < n_tree && !ours; j++)
				ours = tree[j] == bulk[i].pid;
			if (!ours) {
				kc_error_set(err, KC_EXIT_IMAGE, 0,
					     "'" KC_BULK_INDEX "' names pid %d, which is not a process of the restored tree",
					     (int)bulk[i].pid);
				goto rollback;
			}
		}
		/* either way every byte is checked against its checksum before
		 * anything of the tree runs, the driver's restore thread too:
		 * its stack and the driver's own state are in these runs */
		uint64_t filled = 0;
		if (uf && !kc_uffd_fill_ready(uf)) {
			kc_uffd_fill_free(uf);
			uf = NULL;
		}
		if (uf) {
			/* the runs of file maps split out of CRIU's images first
			 * (never registered), then the memory we read: all but the
			 * driver's copy now, that one beside the GPU restore, its
			 * progress where it goes on alone (fill-wait) */
			if (kc_fill_check(bulk, n_bulk, err) < 0)
				goto rollback;
			_cleanup_free_ struct kc_bulk_region *rest = kc_xcalloc(n_bulk + 1, sizeof(*rest));
			size_t n_rest = 0;
			for (size_t i = 0; i < n_bulk; i++)
				if (strcmp(bulk[i].file, KC_BULK_READ_NAME))
					rest[n_rest++] = bulk[i];
			if (n_rest && kc_bulk_fill(o->images_dir, m, rest, n_rest, o->fill_threads, &filled, err) < 0)
				goto rollback;
			struct kc_progress *fp = kc_progress_start("memory-fill", kc_uffd_fill_done, uf);
			kc_progress_total(fp, kc_uffd_fill_total(uf));
			int sr = kc_uffd_fill_start(uf, err);
			kc_progress_stop(fp);
			if (sr < 0)
				goto rollback;
			kc_report_add(r, "fill-first", kc_uffd_fill_first_seconds(uf), 0);
			/* nothing of the driver's copy in the image: all of it is in */
			if (!kc_uffd_fill_pending(uf) && finish_fill(&uf, r, bulk, n_bulk, &fill_done, err) < 0)
				goto rollback;
		} else {
			t0 = kc_now();
			if (o->archive) {
				/* unpacking the rest of the archive is the fill */
				struct kc_fill_target *ft = NULL;
				if (kc_fill_target_open(bulk, n_bulk, &ft, err) < 0)
					goto rollback;
				struct kc_progress *fp = kc_progress_start("memory-fill", kc_fill_target_done, ft);
				kc_progress_total(fp, kc_bulk_regions_bytes(bulk, n_bulk));
				int fr = kc_archive_extract_rest(o->archive, kc_fill_target_write, ft, err);
				kc_progress_stop(fp);
				filled = kc_fill_target_done(ft);
				if (fr == 0)
					fr = kc_fill_target_check(ft, err);
				kc_fill_target_close(ft);
				if (fr < 0)
					goto rollback;
			} else if (kc_bulk_fill(o->images_dir, o->images_private ? NULL : m, bulk, n_bulk, o->fill_threads,
						&filled, err) < 0) {
				goto rollback;
			}
			kc_report_add(r, "memory-fill", kc_now() - t0, filled);
			fill_done = true;
			/* all of it is back: from here on recover may run the tree */
			for (size_t i = 0; i < n_bulk; i++)
				kc_fillmark_clear(bulk[i].pid);
		}
		if (kc_check_interrupted(err) < 0)
			goto rollback;
	}

	/* a CPU-only image needs no driver, whether or not it loaded */
	if (to_restore->n && !planned && plan_gpus(o, b, m, to_restore->n, &pairs, &n_pairs, r, err) < 0)
		goto rollback;
	if (b->criu->ops->restored_pid) {
		struct kc_gpu_set *sets[] = {to_restore, to_unlock};
		for (size_t k = 0; k < 2; k++)
			for (size_t i = 0; i < sets[k]->n; i++) {
				pid_t now = b->criu->ops->restored_pid(b->criu->h, sets[k]->pids[i]);
				if (now <= 0) {
					kc_error_set(err, KC_EXIT_GPU, 0, "CUDA process %d of the image is missing after restore",
						     (int)sets[k]->pids[i]);
					goto rollback;
				}
				sets[k]->pids[i] = now;
			}
	}
	/*
	 * CRIU left the tree stopped: it stays so until its GPUs are back, but
	 * for each CUDA process' restore thread, which the driver needs running
	 * (CRIU's CUDA plugin does the same): no thread of the program touches
	 * memory mapped to the GPU before it is there.  Where a thread cannot
	 * be held so (ptrace not allowed, no thread id from the driver), the
	 * tree runs now, as after a plain criu restore, and the GPU follows.
	 */
	if (n_tree && (to_restore->n || to_unlock->n)) {
		struct kc_error *why = NULL;
		t0 = kc_now();
		if (kc_hold_restore_threads(b, to_restore, to_unlock, &held, &n_held, &why) == 0) {
			kc_report_add(r, "hold-threads", kc_now() - t0, 0);
		} else if (fill_failed_first(&uf, r, bulk, n_bulk, &fill_done, err)) {
			kc_error_free(why);
			goto rollback;
		} else {
			if (!o->quiet)
				fprintf(stderr, "kcheckpoint: the tree runs during the GPU restore: %s\n",
					why ? why->msg : "no restore thread");
			kc_error_free(why);
			kc_release_threads(held, &n_held);
			/* nothing of the program runs before all of it is checked */
			if (finish_fill(&uf, r, bulk, n_bulk, &fill_done, err) < 0)
				goto rollback;
			/* all of it, the processes stopped when dumped too (their
			 * restore thread must run); those are stopped again after */
			kc_proctree_cont(tree, n_tree);
		}
	} else if (n_tree) { /* no GPU to restore */
		run_tree(m, tree, n_tree);
		n_tree = 0;
	}
	if (kc_check_interrupted(err) < 0)
		goto rollback;
	if (to_restore->n) {
		struct kc_progress *gp = kc_progress_start("gpu-restore", NULL, NULL);
		t0 = kc_now();
		/* the held restore threads kept running (a SIGSTOP meanwhile
		 * would leave the driver waiting for one) */
		struct kc_gpu_step gs = {.op = KC_GPU_RESTORE, .set = to_restore, .pairs = pairs, .n_pairs = n_pairs};
		int gr = kc_held_call(&held, &n_held, kc_gpu_step_call, &gs, err);
		kc_progress_stop(gp);
		kc_report_add(r, "gpu-restore", kc_now() - t0, m->vram_bytes);
		if (gr < 0 && fill_failed_first(&uf, r, bulk, n_bulk, &fill_done, err))
			goto rollback;
		if (gr < 0 || kc_check_interrupted(err) < 0) {
			kc_error_prefix(err, "GPU restore");
			goto rollback;
		}
		t0 = kc_now();
		gs = (struct kc_gpu_step){.op = KC_GPU_UNLOCK, .set = to_unlock};
		if (kc_held_call(&held, &n_held, kc_gpu_step_call, &gs, err) < 0) {
			if (!fill_failed_first(&uf, r, bulk, n_bulk, &fill_done, err))
				kc_error_prefix(err, "GPU unlock");
			goto rollback;
		}
		kc_report_add(r, "gpu-unlock", kc_now() - t0, 0);
	}
	if (finish_fill(&uf, r, bulk, n_bulk, &fill_done, err) < 0)
		goto rollback;
	if (n_tree) {
		kc_release_threads(held, &n_held);
		run_tree(m, tree, n_tree);
		n_tree = 0;
	}
	kc_undo_discard(&undo);
	*root_pid = root;
	r->root_pid = root;
	rc = 0;
	goto out;

rollback:
	/* a thread waiting on a page not filled then waits until it is killed */
	kc_uffd_fill_stop(uf);
	kc_release_threads(held, &n_held); /* detached before the tree is killed */
	kc_rollback(&undo, err);
out:
	kc_uffd_fill_free(uf);
	kc_release_threads(held, &n_held);
	for (size_t i = 0; i < n_stopped; i++)
		kc_stopmark_clear(stopped[i]);
	/* a pid whose fill did not finish and that is still stopped here (the
	 * rollback could not kill it) keeps its mark */
	for (size_t i = 0; i < n_bulk; i++) {
		char st = kc_pid_state(bulk[i].pid);
		if (fill_done || (st != 'T' && st != 't'))
			kc_fillmark_clear(bulk[i].pid);
	}
	/* kept where a CRIU failure's message names its log */
	if (criu_dir && !(rc < 0 && err && *err && (*err)->exit_code == KC_EXIT_CRIU))
		kc_rm_rf(criu_dir, NULL);
	kc_pids_unlock(pid_locks, n_locked);
	kc_undo_free(&undo);
	free(to_restore);
	free(to_unlock);
	free(pairs);
	return rc;
}

int kc_restore_check_gpu_map(const struct kc_gpu_pair *pairs, size_t n_pairs, bool *checked, struct kc_error **err)
{
	/* where the kernel module lists the node's GPUs, no driver is needed;
	 * else kc_restore waits for the driver to check it.
	 * CUDA_VISIBLE_DEVICES hides GPUs from the driver, not from the
	 * module: then only the driver's view counts. */
	*checked = false;
	_cleanup_free_ struct kc_uuid *node = NULL;
	size_t n_node = 0;
	if (!n_pairs || getenv("CUDA_VISIBLE_DEVICES") || kc_procfs_gpus(&node, &n_node) < 0)
		return 0;
	if (kc_gpu_map_check(pairs, n_pairs, node, n_node, err) < 0)
		return -1;
	*checked = true;
	return 0;
}

int kc_restore_image(const struct kc_restore_opts *opts, const char *image, const struct kc_backends *b,
		     struct kc_manifest *m, struct kc_report *r, pid_t *root_pid, struct kc_error **err)
{
	struct kc_restore_opts o = *opts;
	struct stat st;
	if (stat(image, &st) < 0)
		return kc_error_errno(err, KC_EXIT_NOENT, errno, "cannot open image '%s'", image);
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is neither an archive nor an images dir", image);
	if (S_ISDIR(st.st_mode) && (o.work_dir || o.keep_images))
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'--work-dir' and '--keep-images' are for archives; '%s' is a dir",
				    image);
	bool containerd = b->criu->ops->restored_pid != NULL;
	int rc = -1;
	struct kc_workdir wd = {0};
	struct kc_archive_reader *reader = NULL;
	struct kc_archive_stats as = {0}; /* the reader's, until it ends */
	char thp_old[16] = "";

	if (o.thp && kc_thp_set(o.thp, thp_old, sizeof(thp_old), err) < 0)
		goto out;
	/* a CRIU that is not there is found before gigabytes are unpacked */
	if (!containerd) {
		_cleanup_free_ char *ver = NULL;
		if (b->criu->ops->version(b->criu->h, &o.criu, &ver, err) < 0) {
			kc_error_prefix(err, "CRIU");
			goto out;
		}
	}
	if (S_ISREG(st.st_mode)) {
		/* a missing link remap and too little room are known from the
		 * manifest alone: refused before gigabytes are unpacked */
		struct kc_manifest pre;
		kc_manifest_init(&pre);
		uint64_t unpack_total = 0;
		int pr = kc_archive_read_manifest(image, &pre, err);
		if (pr == 0 && !containerd)
			pr = kc_restore_check_links(&pre, err);
		if (pr == 0)
			pr = kc_restore_check_space(&pre, kc_workdir_parent(o.work_dir), err);
		unpack_total = kc_archive_unpacked_bytes(&pre);
		kc_manifest_free(&pre);
		if (pr < 0)
			goto out;
		if (kc_workdir_create(&wd, o.work_dir, o.keep_images, o.quiet, err) < 0)
			goto out;
		/* up to the memory members, which fill the processes from the
		 * archive once CRIU restored them */
		struct kc_progress *up = kc_progress_start("unpack", kc_archive_stats_done, &as);
		kc_progress_total(up, unpack_total);
		int ur = kc_archive_extract_begin(image, wd.path, m, &as, &reader, err);
		kc_progress_stop(up);
		if (ur < 0)
			goto out;
		kc_report_add_io(r, "unpack", as.seconds, as.bytes_in, as.bytes_out);
		o.images_dir = wd.path;
		o.images_private = true;
		if (kc_archive_extract_pending(reader))
			o.archive = reader;
	} else {
		if (kc_manifest_read(image, m, err) < 0)
			goto out;
		o.images_dir = image;
	}
	rc = kc_restore(&o, b, m, r, root_pid, err);
out:
	kc_archive_extract_end(reader);
	kc_thp_put_back(thp_old);
	/* the log is kept where the error names it: a failure of CRIU */
	kc_workdir_finish(&wd, o.quiet,
			  rc != 0 && err && *err && (*err)->exit_code == KC_EXIT_CRIU ? "criu-restore.log" : NULL);
	return rc;
}
