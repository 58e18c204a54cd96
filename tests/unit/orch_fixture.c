/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The orchestrator tests' fixture.  kc_dump walks /proc, so the dumped
 * trees are real processes that pause(); the mock decides which of them
 * are "CUDA processes".
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "kc/error.h"
#include "kc/manifest.h"
#include "kc/orchestrator.h"
#include "kc/proctree.h"
#include "kc/report.h"
#include "kc/signals.h"
#include "kc/util.h"
#include "mock_backends.h"
#include "orch_fixture.h"



int setup(void **state)
{
	struct fx *f = kc_xcalloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/kc-test-orch-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	kc_mock_reset();
	kc_signals_reset();
	kc_mock_backends(&f->b, true, false);
	kc_manifest_init(&f->m);
	kc_report_init(&f->r, "dump");
	*state = f;
	return 0;
}

/* Only what is still ours: a reaped pid may already be someone else's. */
static bool our_descendant(pid_t pid)
{
	for (pid_t p = kc_proc_ppid(pid); p > 1; p = kc_proc_ppid(p))
		if (p == getpid())
			return true;
	return false;
}

int teardown(void **state)
{
	struct fx *f = *state;
	pid_t ours[16];
	size_t n = 0;
	for (size_t i = 0; i < f->n; i++)
		if (our_descendant(f->pids[i]))
			ours[n++] = f->pids[i];
	kc_mock_kill_and_reap(ours, n);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	struct kc_error *e = NULL;
	kc_rm_rf(f->dir, &e);
	kc_error_free(e);
	kc_manifest_free(&f->m);
	kc_error_free(f->err);
	kc_signals_reset();
	kc_mock_reset();
	free(f);
	return 0;
}

static void write_pid(int fd, pid_t pid)
{
	if (write(fd, &pid, sizeof(pid)) != sizeof(pid))
		_exit(1);
}

_Noreturn void idle(int fd)
{
	close(fd);
	for (;;)
		pause();
}

/*
 * A root that forks nkids children (the first of which forks a grandchild
 * when asked); all pause().  Returns once every fork is done, so /proc
 * shows the whole tree.  f->pids: root first, the rest in no set order.
 */
void spawn(struct fx *f, int nkids, bool grandkid)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t root = fork();
	assert_true(root >= 0);
	if (root == 0) {
		close(fds[0]);
		for (int i = 0; i < nkids; i++) {
			pid_t c = fork();
			if (c == 0) {
				if (i == 0 && grandkid) {
					pid_t g = fork();
					if (g == 0)
						idle(fds[1]);
					write_pid(fds[1], g);
				}
				idle(fds[1]);
			}
			write_pid(fds[1], c);
		}
		idle(fds[1]);
	}
	close(fds[1]);
	f->pids[f->n++] = root;
	for (int i = 0; i < nkids + (grandkid ? 1 : 0); i++) {
		pid_t p;
		assert_int_equal(read(fds[0], &p, sizeof(p)), sizeof(p));
		f->pids[f->n++] = p;
	}
	close(fds[0]);
}

/* Signals land asynchronously: wait (bounded) until pid is, or is no
 * longer, in state letter st. */
void wait_state(pid_t pid, char st, bool is)
{
	for (int i = 0; i < 5000; i++) {
		if ((kc_pid_state(pid) == st) == is)
			return;
		usleep(1000);
	}
	fail_msg("pid %d: state '%c', waited for %s'%c'", (int)pid, kc_pid_state(pid), is ? "" : "not ", st);
}

void all_cuda(struct fx *f, enum kc_cuda_state st)
{
	for (size_t i = 0; i < f->n; i++)
		kc_mock_set_state(f->pids[i], st);
}

struct kc_dump_opts dump_opts(const struct fx *f)
{
	return (struct kc_dump_opts){.pid = f->pids[0], .images_dir = f->dir, .lock_timeout_ms = 4321};
}

int dump(struct fx *f, const struct kc_dump_opts *o)
{
	return kc_dump(o, &f->b, &f->m, &f->r, &f->err);
}




void expect_state(pid_t pid, enum kc_cuda_state want)
{
	enum kc_cuda_state got = kc_mock_state(pid);
	if (got != want)
		fail_msg("pid %d is '%s', want '%s'", (int)pid, kc_cuda_state_name(got), kc_cuda_state_name(want));
}

void expect_stages(const struct kc_report *r, const char *const *names)
{
	size_t i = 0;
	for (; names[i]; i++) {
		if (i >= r->n_stages)
			fail_msg("stage %zu: want '%s', the report ends", i, names[i]);
		if (strcmp(r->stages[i].name, names[i]))
			fail_msg("stage %zu: want '%s', got '%s'", i, names[i], r->stages[i].name);
	}
	assert_int_equal(r->n_stages, i);
}

const struct kc_manifest_proc *mproc(const struct kc_manifest *m, pid_t pid)
{
	for (size_t i = 0; i < m->n_procs; i++)
		if (m->procs[i].pid == pid)
			return &m->procs[i];
	fail_msg("pid %d is not in the manifest", (int)pid);
	return NULL;
}


/* Stands for archiving: runs while the tree can still be rolled back. */
int post_dump(void *arg, const char *dir, struct kc_manifest *m, struct kc_report *r,
		     struct kc_error **err)
{
	struct post *p = arg;
	p->calls++;
	kc_mock_log_add("post-dump");
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, KC_MANIFEST_NAME);
	p->saw_manifest = access(path, F_OK) == 0;
	if (p->sig) {
		/* as kc_archive_write does: it checks before it publishes */
		kc_signals_raise_for_test(p->sig);
		return kc_error_set(err, KC_EXIT_INTERRUPTED, p->sig, "interrupted by %s", sigabbrev_np(p->sig));
	}
	if (p->sig_after)
		kc_signals_raise_for_test(p->sig_after);
	if (p->fail)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "cannot write archive 'x.tar': test");
	return 0;
}

pid_t fake_pid(int i)
{
	FILE *fp = fopen("/proc/sys/kernel/pid_max", "r");
	long max = 4194304;
	if (fp) {
		if (fscanf(fp, "%ld", &max) != 1)
			max = 4194304;
		fclose(fp);
	}
	pid_t p = (pid_t)(max + 100 + i);
	assert_false(kc_pid_exists(p));
	return p;
}

/* An image of n processes, each CUDA in the given state before the dump
 * (KC_CUDA_NONE: not CUDA); the mock holds them as a dump leaves them. */
void fake_image(struct fx *f, const enum kc_cuda_state *before, size_t n, pid_t *pids)
{
	f->m.root_pid = fake_pid(0);
	for (size_t i = 0; i < n; i++) {
		struct kc_manifest_proc *p = kc_manifest_add_proc(&f->m);
		pids[i] = p->pid = fake_pid((int)i);
		p->ppid = i ? pids[0] : 1;
		snprintf(p->comm, sizeof(p->comm), "worker%zu", i);
		p->cuda = before[i] != KC_CUDA_NONE;
		p->cuda_state = before[i];
		if (p->cuda)
			kc_mock_set_state(pids[i], KC_CUDA_CHECKPOINTED);
	}
	f->m.tcp_established = true;
	f->m.file_locks = true;
	/* what CRIU restores: a real process, so that restore can find its tree */
	if (!f->n)
		spawn(f, 0, false);
	kc_mock_set_restore_root(f->pids[0]);
}

int restore(struct fx *f, const struct kc_gpu_pair *pairs, size_t n_pairs, pid_t *root)
{
	/* quiet: the mock driver's restore threads (fake ids) are never held,
	 * and the notice that says so is not these tests' business */
	struct kc_restore_opts o = {.images_dir = f->dir, .pairs = pairs, .n_pairs = n_pairs, .pid_wait_ms = 30,
				    .quiet = true};
	o.criu.verbose = true;
	o.criu.leave_stopped = true; /* must be ignored */
	kc_report_init(&f->r, "restore");
	return kc_restore(&o, &f->b, &f->m, &f->r, root, &f->err);
}

