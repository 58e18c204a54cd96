/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "gpu_stage.h"
#include "kc/orchestrator.h"
#include "kc/proctree.h"
#include "kc/signals.h"
#include "kc/undo.h"
#include "kc/workdir.h"
#include "kc/thp.h"
#include "kc/util.h"
#include "kc/version.h"
#include "orchestrator_int.h"

/* held in an images dir while a dump writes it */
#define KC_DIR_LOCK ".kcheckpoint-lock"
/* what a failed dump leaves in its images dir */
#define KC_FAILED_LOG "criu-dump.log"

int kc_check_interrupted(struct kc_error **err)
{
	int sig = kc_signals_pending();
	if (!sig)
		return 0;
	return kc_error_set(err, KC_EXIT_INTERRUPTED, sig, "interrupted by %s", sigabbrev_np(sig) ? sigabbrev_np(sig) : "signal");
}

int kc_rollback(struct kc_undo *u, struct kc_error **err)
{
	struct kc_error *rb = NULL;
	if (kc_undo_run(u, &rb) == 0)
		return -1;
	/* the rollback failure matters more: the process may be left stopped or
	 * locked, and the user has to act */
	if (err && *err) {
		kc_error_set_hint(err, "%s", rb->msg);
		(*err)->exit_code = KC_EXIT_ROLLBACK;
		kc_error_free(rb);
		kc_error_set_hint(err, "run 'kcheckpoint recover'");
	} else {
		kc_error_propagate(err, rb);
		kc_error_set_hint(err, "run 'kcheckpoint recover'");
	}
	return -1;
}

void kc_fill_host_info(struct kc_manifest *m, const struct kc_backends *b)
{
	struct utsname u;
	char host[256] = "";
	char created[32];
	m->tool_version = kc_xstrdup(KC_VERSION);
	if (uname(&u) == 0)
		m->kernel = kc_xstrdup(u.release);
	gethostname(host, sizeof(host) - 1);
	m->host = kc_xstrdup(host);
	kc_utc_timestamp(created);
	m->created = kc_xstrdup(created);
	if (b->cuda) {
		int v = 0;
		if (b->cuda->ops->driver_version(b->cuda->h, &v, NULL) == 0)
			m->cuda_driver_version = v;
	}
	if (b->nvml) {
		char buf[80];
		if (b->nvml->ops->driver_version(b->nvml->h, buf, sizeof(buf), NULL) == 0)
			m->driver_version = kc_xstrdup(buf);
	}
	/* a restore elsewhere must map every one of them (see gpumap.h) */
	struct kc_uuid *gpus = NULL;
	size_t n = 0;
	if (b->cuda && b->cuda->ops->list_gpus && b->cuda->ops->list_gpus(b->cuda->h, &gpus, &n, NULL) == 0) {
		m->node_gpus = kc_xcalloc(n + 1, sizeof(char *));
		for (size_t i = 0; i < n; i++) {
			m->node_gpus[i] = kc_xmalloc(41);
			kc_uuid_format(&gpus[i], m->node_gpus[i]);
		}
		free(gpus);
	}
}

/* GPUs and VRAM per process, as NVML sees them; best effort. */
static void fill_gpu_usage(struct kc_manifest *m, const struct kc_backends *b)
{
	if (!b->nvml)
		return;
	struct kc_gpu_proc *gp = NULL;
	size_t n = 0;
	if (b->nvml->ops->list_procs(b->nvml->h, &gp, &n, NULL) < 0)
		return;
	for (size_t i = 0; i < m->n_procs; i++) {
		struct kc_manifest_proc *p = &m->procs[i];
		size_t ng = 0;
		for (size_t j = 0; j < n; j++) {
			if (gp[j].pid != p->pid)
				continue;
			p->gpus = kc_xrealloc(p->gpus, (ng + 2) * sizeof(char *));
			p->gpus[ng++] = kc_xstrdup(gp[j].uuid);
			p->gpus[ng] = NULL;
			p->vram_bytes += gp[j].used_bytes;
		}
		if (p->cuda)
			m->vram_bytes += p->vram_bytes;
	}
	free(gp);
}

/* The resident memory of a process, from /proc/<pid>/status; 0 unknown. */
static uint64_t rss_bytes(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char line[256];
	unsigned long long kb = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
			break;
	return (uint64_t)kb * 1024;
}

/*
 * An images dir gets about the tree's resident memory plus its VRAM (the
 * driver copies that into the process before CRIU dumps it): refuse before
 * anything is locked rather than fill the disk and roll back.  An archive
 * is compressed to an unknown size; running out there rolls back cleanly.
 */
static int check_room(const char *dir, const struct kc_manifest *m, struct kc_error **err)
{
	uint64_t need = m->vram_bytes;
	for (size_t i = 0; i < m->n_procs; i++)
		need += rss_bytes(m->procs[i].pid);
	if (kc_check_room(dir, need, "the dump (the tree's memory and VRAM, about)", err) == 0)
		return 0;
	return kc_error_set_hint(err, "nothing was dumped: use a larger disk, or an archive (-o), which is compressed");
}

/* Refuse before anything is locked: nothing to roll back yet. */
static int check_target(pid_t pid, struct kc_error **err)
{
	if (pid == 1)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "refusing to dump pid 1 (init)");
	for (pid_t p = getpid(); p > 1; p = kc_proc_ppid(p))
		if (p == pid)
			return kc_error_set(err, KC_EXIT_USAGE, 0,
					    "refusing to dump pid %d: it is kcheckpoint or one of its parents", (int)pid);
	if (!kc_pid_exists(pid))
		return kc_error_set(err, KC_EXIT_NOENT, ESRCH, "no process with pid %d", (int)pid);
	if (!kc_pid_alive(pid))
		return kc_error_set(err, KC_EXIT_NOENT, ESRCH, "pid %d is a zombie", (int)pid);
	if (kc_pid_is_kthread(pid))
		return kc_error_set(err, KC_EXIT_USAGE, 0, "pid %d is a kernel thread: nothing to checkpoint", (int)pid);
	/* CRIU must trace it itself; found out before anything is frozen */
	pid_t t = kc_pid_tracer(pid);
	if (t > 0) {
		char comm[64];
		kc_pid_comm(t, comm, sizeof(comm));
		return kc_error_set(err, KC_EXIT_BUSY, EBUSY, "pid %d is being traced by pid %d ('%s'): CRIU cannot dump it",
				    (int)pid, (int)t, comm);
	}
	return 0;
}

int kc_prepare_images_dir(const char *dir, struct kc_error **err)
{
	if (kc_mkdir_p(dir, 0700, err) < 0)
		return kc_error_prefix(err, "images dir");
	_cleanup_closedir_ DIR *d = opendir(dir);
	if (!d)
		return kc_error_errno(err, errno == EACCES ? KC_EXIT_PERM : KC_EXIT_FAILURE, errno,
				      "cannot open images dir '%s'", dir);
	struct dirent *de;
	while ((de = readdir(d))) {
		/* all a failed dump leaves: its log goes with the retry */
		if (!strcmp(de->d_name, KC_FAILED_LOG))
			continue;
		if (!strcmp(de->d_name, KC_DIR_LOCK))
			return kc_error_set(err, KC_EXIT_BUSY, EBUSY, "images dir '%s' is being written by another dump",
					    dir);
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			return kc_error_set(err, KC_EXIT_USAGE, ENOTEMPTY,
					    "images dir '%s' is not empty: refusing to mix images", dir);
	}
	_cleanup_free_ char *old_log = kc_xasprintf("%s/" KC_FAILED_LOG, dir);
	unlink(old_log);
	/* Find out now, not after the GPU is locked, that we cannot write; and
	 * keep the file until CRIU has written the images: a second dump into
	 * the same dir meanwhile finds it not empty (or fails to create it)
	 * instead of mixing its images with ours. */
	_cleanup_free_ char *lock = kc_xasprintf("%s/" KC_DIR_LOCK, dir);
	int fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST)
		return kc_error_set(err, KC_EXIT_BUSY, EEXIST, "images dir '%s' is being written by another dump", dir);
	if (fd < 0)
		return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE,
				      errno, "cannot write to images dir '%s'", dir);
	close(fd);
	return 0;
}

static void unlock_images_dir(const char *dir)
{
	_cleanup_free_ char *lock = kc_xasprintf("%s/" KC_DIR_LOCK, dir);
	unlink(lock);
}

static uint64_t dir_bytes(void *arg)
{
	return kc_dir_size(arg);
}

/* Points at kc_dump's own list, which is read again once CRIU has the
 * tree stopped: a child forked during the GPU stage is dumped (and left
 * stopped) by CRIU too, so it must be resumed or killed with the rest. */
struct restop_arg;
struct resume_arg {
	const struct kc_criu *criu;
	pid_t *const *pids;
	const size_t *n;
	bool tcp_locked; /* CRIU left connections locked (--tcp-established) */
	const struct restop_arg *stopped; /* stopped before the dump: not resumed */
};

static bool in_restop(const struct restop_arg *a, pid_t pid);

static int undo_resume(void *arg, struct kc_error **err)
{
	struct resume_arg *a = arg;
	/* while the tree is still stopped; a failure here must not keep it
	 * from running on, so it is reported after the resume */
	int rc = 0;
	if (a->tcp_locked && a->criu->ops->unlock_network &&
	    a->criu->ops->unlock_network(a->criu->h, *a->pids, *a->n, err) < 0)
		rc = -1;
	/* a process its user stopped stays so (a SIGCONT would also deliver
	 * what waits for it: a SIGTERM killed one, hostile test); its GPU
	 * comes back through its restore thread alone */
	_cleanup_free_ pid_t *run = kc_xcalloc(*a->n + 1, sizeof(pid_t));
	size_t k = 0;
	for (size_t i = 0; i < *a->n; i++)
		if (!in_restop(a->stopped, (*a->pids)[i]))
			run[k++] = (*a->pids)[i];
	if (a->criu->ops->resume)
		return a->criu->ops->resume(a->criu->h, run, k, err) < 0 ? -1 : rc;
	kc_proctree_cont(run, k);
	return rc;
}

/* CRIU's --link-remap hard links; a dump that is rolled back must not
 * leave them behind (the next dump's would collide with them). */
struct link_remap_arg {
	char **paths; /* the manifest's */
	bool keep;
};

static int undo_link_remaps(void *arg, struct kc_error **err)
{
	struct link_remap_arg *a = arg;
	for (char **p = a->paths; !a->keep && p && *p; p++)
		if (unlink(*p) < 0 && errno != ENOENT)
			return kc_error_errno(err, KC_EXIT_ROLLBACK, errno, "cannot remove '%s'", *p);
	return 0;
}

/* Processes stopped before the dump: a rollback (or --leave-running)
 * resumes the tree, for its GPU too, then stops these again; pushed first,
 * so it runs last.  Each has a stop mark meanwhile, for recover. */
struct restop_arg {
	size_t n;
	pid_t pids[];
};

static bool in_restop(const struct restop_arg *a, pid_t pid)
{
	for (size_t i = 0; a && i < a->n; i++)
		if (a->pids[i] == pid)
			return true;
	return false;
}

static int undo_restop(void *arg, struct kc_error **err)
{
	(void)err;
	struct restop_arg *a = arg;
	for (size_t i = 0; i < a->n; i++)
		kill(a->pids[i], SIGSTOP);
	return 0;
}

/* The threads of stopped CUDA processes, running through ptrace for the
 * GPU stage (kc_hold_all_threads); let go before "stop again" runs. */
struct all_hold {
	size_t n;
	struct kc_held_thread *h;
};

static int undo_all_hold(void *arg, struct kc_error **err)
{
	(void)err;
	struct all_hold *a = arg;
	kc_release_all_threads(&a->h, &a->n);
	free(a->h);
	a->h = NULL;
	return 0;
}

/* The GPU restore and unlock of a rollback or --leave-running.  A process
 * stopped before the dump is still stopped there (it is not resumed), and
 * the driver needs its restore thread running: that one runs alone
 * meanwhile, as in a restore.  Where all its threads already run held
 * (a rollback of the GPU stage) that hold is already what it needs. */
static int gpu_undo_step(struct kc_gpu_set *set, enum kc_gpu_op op, struct kc_error **err)
{
	_cleanup_free_ struct kc_gpu_set *stopped = kc_gpu_set_new(set->b, set->n);
	_cleanup_free_ struct kc_gpu_set *none = kc_gpu_set_new(set->b, 0);
	for (size_t i = 0; i < set->n; i++)
		if (kc_pid_state(set->pids[i]) == 'T')
			stopped->pids[stopped->n++] = set->pids[i];
	_cleanup_free_ struct kc_held_thread *held = NULL;
	size_t n_held = 0;
	struct kc_error *why = NULL;
	if (stopped->n && kc_hold_restore_threads(set->b, stopped, none, &held, &n_held, &why) < 0) {
		kc_error_free(why); /* then the driver answers for itself */
		kc_release_threads(held, &n_held);
	}
	struct kc_gpu_step gs = {.op = op, .set = set};
	int rc = kc_held_call(&held, &n_held, kc_gpu_step_call, &gs, err);
	kc_release_threads(held, &n_held);
	return rc;
}

static int undo_gpu_restore(void *arg, struct kc_error **err)
{
	return gpu_undo_step(arg, KC_GPU_RESTORE, err);
}

static int undo_gpu_unlock(void *arg, struct kc_error **err)
{
	return gpu_undo_step(arg, KC_GPU_UNLOCK, err);
}

static struct kc_manifest_proc *add_proc(struct kc_manifest *m, pid_t pid, pid_t ppid)
{
	struct kc_manifest_proc *p = kc_manifest_add_proc(m);
	p->pid = pid;
	p->ppid = ppid < 0 ? 0 : ppid;
	kc_pid_comm(pid, p->comm, sizeof(p->comm));
	p->stopped = kc_pid_state(pid) == 'T';
	return p;
}

/* The tree as CRIU stopped it; processes new since the GPU stage go
 * into the manifest (without CUDA: they were forked after the lock). */
static void relist_stopped_tree(pid_t root, struct kc_manifest *m, pid_t **pids, size_t *n)
{
	pid_t *now = NULL;
	size_t n_now = 0;
	if (kc_proctree(root, &now, &n_now, NULL) < 0)
		return;
	for (size_t i = 0; i < n_now; i++) {
		bool known = false;
		for (size_t j = 0; j < m->n_procs && !known; j++)
			known = m->procs[j].pid == now[i];
		if (!known) /* stopped by CRIU, not by anyone before */
			add_proc(m, now[i], kc_proc_ppid(now[i]))->stopped = false;
	}
	/* and a process that ended meanwhile is not in CRIU's images: a
	 * restore must not wait for it, nor restore its GPU state */
	size_t k = 0;
	for (size_t j = 0; j < m->n_procs; j++) {
		bool dumped = false;
		for (size_t i = 0; i < n_now && !dumped; i++)
			dumped = now[i] == m->procs[j].pid;
		if (dumped) {
			m->procs[k++] = m->procs[j];
		} else {
			if (m->procs[j].cuda)
				m->vram_bytes -= m->procs[j].vram_bytes;
			kc_strv_free(m->procs[j].gpus);
		}
	}
	m->n_procs = k;
	free(*pids);
	*pids = now;
	*n = n_now;
}

/* The archive of the images dir; bulk: memory to read from the stopped
 * tree into it (NULL: all of it is in the images dir). */
static int write_archive(const struct kc_dump_opts *o, struct kc_manifest *m, struct kc_bulk_source *bulk,
			 struct kc_report *r, struct kc_error **err)
{
	struct kc_archive_opts ao = o->archive_opts;
	struct kc_archive_stream bs = {.path = KC_BULK_READ_NAME, .size = kc_bulk_source_size(bulk),
				       .read = kc_bulk_source_read, .arg = bulk};
	if (bs.size) {
		ao.streams = &bs;
		ao.n_streams = 1;
	}
	/* "-": the manifest goes first yet holds every checksum, so the
	 * archive is made whole in the images dir (which it skips), then sent */
	bool to_stdout = !strcmp(o->archive, "-");
	_cleanup_free_ char *spool = to_stdout ? kc_xasprintf("%s/.kcheckpoint-stdout.tar", o->images_dir) : NULL;
	struct kc_archive_stats st = {0};
	struct kc_progress *ap = kc_progress_start("archive", kc_archive_stats_done, &st);
	kc_progress_total(ap, kc_dir_size(o->images_dir) + bs.size);
	int ar = kc_archive_write(o->images_dir, m, spool ? spool : o->archive, &ao, &st, err);
	kc_progress_stop(ap);
	if (ar < 0)
		return kc_error_prefix(err, "archive '%s'", o->archive);
	kc_report_add_io(r, "archive", st.seconds - st.sync_seconds, st.bytes_in, st.bytes_out);
	kc_report_add(r, "archive-sync", st.sync_seconds, 0);
	if (spool) {
		double t0 = kc_now();
		int sr = kc_copy_to_fd(spool, STDOUT_FILENO, err);
		unlink(spool);
		if (sr < 0)
			return kc_error_prefix(err, "archive to stdout");
		kc_report_add(r, "archive-send", kc_now() - t0, st.bytes_out);
	}
	return 0;
}

static int dump_steps(const struct kc_dump_opts *o, const struct kc_backends *b, struct kc_manifest *m,
		      struct kc_report *r, struct kc_error **err);

/* dump, whole: the work dir of an archive and the THP mode around the
 * steps below; CRIU's log stays in the work dir when CRIU failed. */
int kc_dump(const struct kc_dump_opts *opts, const struct kc_backends *b, struct kc_manifest *m,
	    struct kc_report *r, struct kc_error **err)
{
	struct kc_dump_opts o = *opts;
	struct kc_workdir wd = {0};
	char thp_old[16] = "";
	int rc = -1;
	if (o.archive && !o.images_dir) {
		if (kc_workdir_create(&wd, o.work_dir, o.keep_images, o.quiet, err) < 0)
			return -1;
		o.images_dir = wd.path;
	}
	if (!o.thp || kc_thp_set(o.thp, thp_old, sizeof(thp_old), err) == 0)
		rc = dump_steps(&o, b, m, r, err);
	kc_thp_put_back(thp_old);
	kc_workdir_finish(&wd, o.quiet, rc != 0 && err && *err && (*err)->exit_code == KC_EXIT_CRIU ? KC_FAILED_LOG : NULL);
	return rc;
}

static int dump_steps(const struct kc_dump_opts *o, const struct kc_backends *b, struct kc_manifest *m,
		      struct kc_report *r, struct kc_error **err)
{
	_cleanup_free_ pid_t *pids = NULL;
	_cleanup_free_ double *secs = NULL;
	size_t n = 0;
	struct kc_undo undo = {0};
	int rc = -1;
	int *pid_locks = NULL;
	struct kc_bulk_source *bulk = NULL; /* memory we read, not CRIU */
	struct kc_manifest_member bulk_sum = {0}; /* its checksum, taken as it was read */
	struct kc_gpu_backup *backup = NULL;      /* the maps before the GPU checkpoint */
	/* --leave-running -o: the tree resumes right after CRIU and the
	 * memory read, and the archive is written from the images while it
	 * runs (as podman's -R does), not while it stays stopped */
	bool archive_late = o->archive && o->leave_running;
	struct restop_arg *restop = NULL; /* owned by the undo stack once pushed */
	_cleanup_free_ pid_t *marked = NULL; /* their stop marks */
	size_t n_marked = 0;
	bool keep_marks = false;

	if (check_target(o->pid, err) < 0)
		return -1;
	if (o->pids) {
		pids = kc_xcalloc(o->n_pids + 1, sizeof(pid_t));
		pids[n++] = o->pid;
		for (size_t i = 0; i < o->n_pids; i++)
			if (o->pids[i] != o->pid)
				pids[n++] = o->pids[i];
	} else if (kc_proctree(o->pid, &pids, &n, err) < 0) {
		return -1;
	}

	kc_fill_host_info(m, b);
	m->root_pid = o->pid;
	m->tcp_established = o->criu.tcp_established;
	m->shell_job = o->criu.shell_job;
	m->file_locks = o->criu.file_locks;
	m->tcp_close = o->criu.tcp_close;
	m->link_remap = o->criu.link_remap;
	if (o->criu.extra) {
		m->criu_extra = kc_xcalloc(kc_strv_len(o->criu.extra) + 1, sizeof(char *));
		for (size_t i = 0; o->criu.extra[i]; i++)
			m->criu_extra[i] = kc_xstrdup(o->criu.extra[i]);
	}
	if (b->criu->ops->version(b->criu->h, &o->criu, &m->criu_version, err) < 0)
		return -1;
	/* one kcheckpoint at a time per process, before anything is touched */
	size_t n_locked = n;
	if (kc_pids_lock(pids, n_locked, &pid_locks, err) < 0)
		return -1;
	/* from here until CRIU has written it, the dir is ours */
	if (kc_prepare_images_dir(o->images_dir, err) < 0) {
		kc_pids_unlock(steal_ptr(pid_locks), n_locked);
		return -1;
	}
	bool dir_locked = true, images_complete = false;

	struct kc_gpu_set *to_lock = kc_gpu_set_new(b, n), *to_ckpt = kc_gpu_set_new(b, n);
	restop = kc_xcalloc(1, sizeof(*restop) + (n + 1) * sizeof(pid_t));
	marked = kc_xcalloc(n + 1, sizeof(pid_t));
	for (size_t i = 0; i < n; i++) {
		pid_t ppid = kc_proc_ppid(pids[i]);
		/* a child (or a container's exec'd process) that ended since we
		 * listed it is no longer ours to dump */
		if (ppid < 0 && i > 0)
			continue;
		/* signal masks a killed kcheckpoint left blocked: put back before
		 * anything, or CRIU would dump them so */
		kc_holdmark_undo(pids[i]);
		struct kc_manifest_proc *p = add_proc(m, pids[i], ppid);
		/* stopped: marked before the driver is asked anything, so that
		 * recover stops it again whenever this dump is killed */
		if (!p->stopped) {
			/* one an earlier, killed dump left: this dump is what
			 * recover may have to finish now, and it runs */
			kc_stopmark_clear(pids[i]);
		} else {
			if (kc_stopmark_set(pids[i], err) < 0)
				goto out;
			marked[n_marked++] = restop->pids[restop->n++] = pids[i];
		}
		if (!b->cuda)
			continue;
		enum kc_cuda_state st;
		struct kc_error *e = NULL;
		/* the driver answers through the restore thread alone */
		struct kc_held_thread held[1];
		size_t n_held = 0;
		if (kc_hold_if_stopped(b, pids[i], held, &n_held, err) < 0) {
			kc_error_prefix(err, "CUDA state of pid %d", (int)pids[i]);
			goto out;
		}
		struct kc_gpu_step gs = {.op = KC_GPU_STATE, .b = b, .pid = pids[i], .state = &st};
		struct kc_held_thread *hp = held; /* no thread is created: not realloc'ed */
		int sr = kc_held_call(&hp, &n_held, kc_gpu_step_call, &gs, &e);
		kc_release_threads(held, &n_held);
		if (sr < 0) {
			/* a child that exited since we listed it is no longer ours to dump */
			if (e->cause == KC_CUDA_ERROR_OPERATING_SYSTEM && i > 0) {
				kc_error_free(e);
				continue;
			}
			kc_error_propagate(err, e);
			kc_error_prefix(err, "CUDA state of pid %d", (int)pids[i]);
			goto out;
		}
		if (st == KC_CUDA_NONE)
			continue;
		if (st == KC_CUDA_FAILED) {
			kc_error_set(err, KC_EXIT_GPU, 0, "pid %d ('%s') is in CUDA state 'failed'", (int)pids[i],
				     p->comm);
			goto out;
		}
		p->cuda = true;
		p->cuda_state = st;
		if (st == KC_CUDA_RUNNING)
			to_lock->pids[to_lock->n++] = pids[i];
		if (st != KC_CUDA_CHECKPOINTED)
			to_ckpt->pids[to_ckpt->n++] = pids[i];
	}
	fill_gpu_usage(m, b);
	/* workers forked after CUDA init: fine with the plugin, anything else
	 * holding the GPU without CUDA is refused while nothing is frozen */
	if (kc_gpu_dev_preflight(m, o->criu.libdir != NULL, err) < 0 || kc_check_interrupted(err) < 0)
		goto out;
	if (!o->archive && check_room(o->images_dir, m, err) < 0)
		goto out;
	const struct restop_arg *restop_undo = restop; /* the undo stack's from here on */
	kc_undo_push(&undo, "stop again", undo_restop, steal_ptr(restop));
	/* a stopped CUDA process: its lock and checkpoint need all of it (run
	 * 37), so every thread runs through ptrace, signals blocked, the
	 * process staying stopped (no SIGCONT: no handler runs, a signal
	 * that waits stays waiting) */
	struct all_hold *ah = kc_xcalloc(1, sizeof(*ah));
	kc_undo_push(&undo, "let go of held threads", undo_all_hold, ah);
	for (size_t i = 0; i < m->n_procs; i++)
		if (m->procs[i].stopped && m->procs[i].cuda && kc_hold_all_threads(m->procs[i].pid, &ah->h, &ah->n, err) < 0) {
			kc_error_prefix(err, "run stopped pid %d for its GPU stage", (int)m->procs[i].pid);
			goto rollback;
		}

	/* GPU stage: lock all, then checkpoint all */
	secs = kc_xcalloc(n, sizeof(double));
	if (to_lock->n || to_ckpt->n) {
		struct kc_gpu_set *locked = NULL;
		double t0 = kc_now();
		struct kc_gpu_step gs = {
			.op = KC_GPU_LOCK, .set = to_lock, .timeout_ms = o->lock_timeout_ms, .secs = secs, .done = &locked};
		int lr = kc_held_call(&ah->h, &ah->n, kc_gpu_step_call, &gs, err);
		for (size_t i = 0; i < to_lock->n; i++)
			for (size_t j = 0; j < m->n_procs; j++)
				if (m->procs[j].pid == to_lock->pids[i])
					m->procs[j].lock_s = secs[i];
		kc_report_add(r, "gpu-lock", kc_now() - t0, 0);
		kc_undo_push(&undo, "gpu unlock", undo_gpu_unlock, locked);
		if (lr < 0 || kc_check_interrupted(err) < 0) {
			kc_error_prefix(err, "GPU lock");
			goto rollback;
		}

		struct kc_gpu_set *ckpt = NULL;
		/* where the driver puts its copy of the GPU's memory: what the
		 * checkpoint maps (a restore fills it beside the GPU restore) */
		backup = kc_gpu_backup_before(to_ckpt->pids, to_ckpt->n);
		struct kc_progress *pg = kc_progress_start("gpu-checkpoint", NULL, NULL);
		t0 = kc_now();
		gs = (struct kc_gpu_step){.op = KC_GPU_CHECKPOINT, .set = to_ckpt, .secs = secs, .done = &ckpt};
		int cr = kc_held_call(&ah->h, &ah->n, kc_gpu_step_call, &gs, err);
		kc_progress_stop(pg);
		for (size_t i = 0; i < to_ckpt->n; i++)
			for (size_t j = 0; j < m->n_procs; j++)
				if (m->procs[j].pid == to_ckpt->pids[i])
					m->procs[j].checkpoint_s = secs[i];
		kc_report_add(r, "gpu-checkpoint", kc_now() - t0, m->vram_bytes);
		kc_undo_push(&undo, "gpu restore", undo_gpu_restore, ckpt);
		if (cr < 0 || kc_check_interrupted(err) < 0) {
			kc_error_prefix(err, "GPU checkpoint");
			goto rollback;
		}
		if (kc_gpu_dev_after_checkpoint(m, err) < 0)
			goto rollback;
	}
	/* CRIU seizes every thread now */
	kc_release_all_threads(&ah->h, &ah->n);
	free(ah->h);
	ah->h = NULL;

	/* CPU stage; the tree stays stopped so we can still roll back */
	struct kc_criu_opts copts = o->criu;
	copts.leave_stopped = true;
	/* CRIU restores a shell job's tree detached and stopped only without
	 * its terminal: such a tree keeps all its memory in CRIU's images */
	copts.bulk_min = o->split_bulk && !o->criu.shell_job && o->fill_threads >= o->read_min_threads ? KC_BULK_MIN : 0;
	/* pushed first: a CRIU that dies by a signal cannot thaw what it stopped */
	struct resume_arg *ra = kc_xcalloc(1, sizeof(*ra));
	*ra = (struct resume_arg){
		.criu = b->criu, .pids = &pids, .n = &n, .tcp_locked = o->criu.tcp_established, .stopped = restop_undo};
	kc_undo_push(&undo, "resume", undo_resume, ra);
	struct kc_progress *pg = kc_progress_start("criu-dump", dir_bytes, (void *)o->images_dir);
	double t0 = kc_now();
	int dr = b->criu->ops->dump(b->criu->h, &copts, o->pid, o->images_dir, err);
	kc_progress_stop(pg);
	double dump_s = kc_now() - t0;
	if (dr < 0)
		goto rollback;
	if (!o->pids)
		relist_stopped_tree(o->pid, m, &pids, &n);
	struct link_remap_arg *lra = NULL;
	if (o->criu.link_remap) {
		if (kc_criu_link_remaps(o->images_dir, &m->link_remaps, err) < 0)
			goto rollback;
		lra = kc_xcalloc(1, sizeof(*lra));
		lra->paths = m->link_remaps;
		kc_undo_push(&undo, "remove link remaps", undo_link_remaps, lra);
	}

	kc_criu_read_stats(o->images_dir, &r->criu, NULL);
	uint64_t written = r->criu.have_dump ? r->criu.pages_written * (uint64_t)sysconf(_SC_PAGESIZE)
					     : kc_dir_size(o->images_dir);
	kc_report_add(r, "criu-dump", dump_s, written);
	if (kc_check_interrupted(err) < 0)
		goto rollback;
	if (copts.bulk_min) {
		t0 = kc_now();
		if (kc_bulk_source_open(o->images_dir, &bulk, err) < 0)
			goto rollback;
		uint64_t got = kc_bulk_source_size(bulk);
		/* for an archive the memory is read while the archive is written;
		 * a tree left running gets going before that, so it is read now */
		bool stream = o->archive && !archive_late;
		if (got && (stream ? kc_bulk_write_index(o->images_dir, bulk, err)
				   : kc_bulk_read(o->images_dir, bulk, o->fill_threads, bulk_sum.sha256, err)) < 0)
			goto rollback;
		if (got && !stream) {
			bulk_sum.path = KC_BULK_READ_NAME;
			bulk_sum.size = got;
		}
		if (got) {
			m->format = KC_MANIFEST_FORMAT_BULK;
			if (!stream)
				kc_report_add(r, "memory-read", kc_now() - t0, got);
		}
	}
	/* the tree still stopped, as the checkpoint left its maps */
	if (backup && kc_gpu_backup_write(backup, o->images_dir, err) < 0)
		goto rollback;
	if (o->split_bulk && !o->criu.shell_job) {
		uint64_t moved = 0;
		t0 = kc_now();
		if (kc_criu_split_bulk(o->images_dir, KC_BULK_MIN, &moved, err) < 0)
			goto rollback;
		if (moved) {
			m->format = KC_MANIFEST_FORMAT_BULK;
			kc_report_add(r, "bulk-split", kc_now() - t0, 0);
		}
	}

	/* CRIU's images hold the dir now; the archive must not carry the lock */
	unlock_images_dir(o->images_dir);
	dir_locked = false;
	memcpy(m->stages, r->stages, r->n_stages * sizeof(r->stages[0]));
	m->n_stages = r->n_stages;
	/* an images dir carries its checksums as an archive does (an
	 * archive's are taken as it is written) */
	if (!o->archive) {
		t0 = kc_now();
		struct kc_progress *cp = kc_progress_start("checksum", NULL, NULL);
		int cr = kc_images_checksum(o->images_dir, m, o->fill_threads ? o->fill_threads : 1, &bulk_sum,
					    bulk_sum.path ? 1 : 0, err);
		kc_progress_stop(cp);
		if (cr < 0)
			goto rollback;
		kc_report_add(r, "checksum", kc_now() - t0, 0);
	}
	t0 = kc_now();
	if (kc_manifest_write(m, o->images_dir, err) < 0)
		goto rollback;
	images_complete = true;
	kc_report_add(r, "manifest", kc_now() - t0, 0);

	/* once the archive is published the dump is committed: a signal
	 * from here on must not roll back a dump whose archive stays */
	if (o->archive && !archive_late && write_archive(o, m, bulk, r, err) < 0)
		goto rollback;
	if (o->post_dump && o->post_dump(o->post_dump_arg, o->images_dir, m, r, err) < 0)
		goto rollback;

	t0 = kc_now();
	if (o->leave_running) {
		/* the images stay restorable: they need the links */
		if (lra)
			lra->keep = true;
		if (kc_undo_run(&undo, err) < 0) {
			/* the images are complete, but the process may be left
			 * stopped or locked: say how to get it going */
			kc_error_prefix(err, "resume after dump");
			kc_error_set_hint(err, "run 'kcheckpoint recover' on pid %d", (int)o->pid);
			keep_marks = true;
			goto out;
		}
		kc_report_add(r, "resume", kc_now() - t0, 0);
		/* the tree runs on; the dump succeeds once its archive is out */
		if (archive_late && write_archive(o, m, NULL, r, err) < 0)
			goto out;
	} else {
		kc_undo_discard(&undo);
		int fr = b->criu->ops->finish ? b->criu->ops->finish(b->criu->h, pids, n, err)
					      : kc_proctree_kill(pids, n, KC_KILL_DYING, 10000, err);
		if (fr < 0) {
			/* the image is complete; the old tree is still stopped with
			 * its GPU state checkpointed */
			kc_error_prefix(err, "end the dumped process");
			kc_error_set_hint(err, "the image is complete; kill pid %d, or run 'kcheckpoint recover' on it",
					  (int)o->pid);
			keep_marks = true;
			goto out;
		}
		kc_report_add(r, "kill", kc_now() - t0, 0);
	}
	rc = 0;
	goto out;

rollback:
	kc_rollback(&undo, err);
	keep_marks = err && *err && (*err)->exit_code == KC_EXIT_ROLLBACK;
out:
	/* kept where the error says to run recover: it stops them again */
	for (size_t i = 0; !keep_marks && i < n_marked; i++)
		kc_stopmark_clear(marked[i]);
	/* half-written images help nobody and block a retry; CRIU's log,
	 * which the error may name, stays */
	if (rc < 0 && !images_complete)
		kc_dir_clear(o->images_dir, (const char *const[]){KC_FAILED_LOG, KC_DIR_LOCK, NULL});
	if (dir_locked)
		unlock_images_dir(o->images_dir);
	free(restop); /* NULL once the undo stack has it */
	kc_pids_unlock(pid_locks, n_locked);
	kc_bulk_source_free(bulk);
	kc_gpu_backup_free(backup);
	kc_undo_free(&undo);
	free(to_lock);
	free(to_ckpt);
	return rc;
}
