/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The manual flow's GPU step, for the benchmark: what NVIDIA's
 * cuda-checkpoint binary does, with the same driver calls and nothing
 * else, so kcheckpoint can be compared with "cuda-checkpoint + criu".
 *
 *   cuda_ckpt --toggle --pid N     lock + checkpoint, or restore + unlock
 *   cuda_ckpt --get-state --pid N
 *   cuda_ckpt --op lock|checkpoint|restore|unlock|restore-tid --pid N
 *                                  that one call alone (probes of the driver)
 *
 * Prints the seconds each call took.  No dependency beyond libdl.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*init_fn)(unsigned);
typedef int (*state_fn)(int, int *);
typedef int (*op_fn)(int, void *);

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *sym(void *lib, const char *name)
{
	void *p = dlsym(lib, name);
	if (!p) {
		fprintf(stderr, "cuda_ckpt: no '%s' in libcuda\n", name);
		exit(1);
	}
	return p;
}

static void call(op_fn fn, const char *name, int pid, void *args)
{
	double t0 = now();
	int r = fn(pid, args);
	printf("%s %.3f\n", name, now() - t0);
	if (r) {
		fprintf(stderr, "cuda_ckpt: %s(%d) failed: %d\n", name, pid, r);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	int pid = 0, toggle = 0;
	const char *op = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--pid") == 0 && i + 1 < argc)
			pid = atoi(argv[++i]);
		else if (strcmp(argv[i], "--op") == 0 && i + 1 < argc)
			op = argv[++i];
		else if (strcmp(argv[i], "--toggle") == 0)
			toggle = 1;
		else if (strcmp(argv[i], "--get-state") != 0) {
			fprintf(stderr, "usage: cuda_ckpt --toggle|--get-state|--op OP --pid N\n");
			return 2;
		}
	}
	if (pid <= 0) {
		fprintf(stderr, "usage: cuda_ckpt --toggle|--get-state --pid N\n");
		return 2;
	}
	void *lib = dlopen("libcuda.so.1", RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "cuda_ckpt: %s\n", dlerror());
		return 1;
	}
	double t0 = now();
	if (((init_fn)sym(lib, "cuInit"))(0)) {
		fprintf(stderr, "cuda_ckpt: cuInit failed\n");
		return 1;
	}
	printf("init %.3f\n", now() - t0);
	if (op) {
		unsigned long long args[8] = {0};
		if (strcmp(op, "restore-tid") == 0) {
			int tid = 0;
			t0 = now();
			int r = ((state_fn)sym(lib, "cuCheckpointProcessGetRestoreThreadId"))(pid, &tid);
			printf("restore-tid %.3f: result %d, tid %d\n", now() - t0, r, tid);
			return r ? 1 : 0;
		}
		const char *fn = strcmp(op, "lock") == 0	 ? "cuCheckpointProcessLock"
				 : strcmp(op, "checkpoint") == 0 ? "cuCheckpointProcessCheckpoint"
				 : strcmp(op, "restore") == 0	 ? "cuCheckpointProcessRestore"
				 : strcmp(op, "unlock") == 0	 ? "cuCheckpointProcessUnlock"
								 : NULL;
		if (!fn) {
			fprintf(stderr, "cuda_ckpt: unknown op '%s'\n", op);
			return 2;
		}
		call((op_fn)sym(lib, fn), op, pid, strcmp(op, "lock") == 0 ? args : NULL);
		return 0;
	}
	int state = -1;
	if (((state_fn)sym(lib, "cuCheckpointProcessGetState"))(pid, &state)) {
		fprintf(stderr, "cuda_ckpt: get state of %d failed\n", pid);
		return 1;
	}
	if (!toggle) {
		printf("state %d\n", state);
		return 0;
	}
	/* lock args: timeoutMs 0 = wait as long as it takes, as cuda-checkpoint does */
	unsigned long long lock_args[8] = {0};
	if (state == 0) {
		call((op_fn)sym(lib, "cuCheckpointProcessLock"), "lock", pid, lock_args);
		call((op_fn)sym(lib, "cuCheckpointProcessCheckpoint"), "checkpoint", pid, NULL);
	} else if (state == 2) {
		call((op_fn)sym(lib, "cuCheckpointProcessRestore"), "restore", pid, NULL);
		call((op_fn)sym(lib, "cuCheckpointProcessUnlock"), "unlock", pid, NULL);
	} else {
		fprintf(stderr, "cuda_ckpt: pid %d is in state %d, cannot toggle\n", pid, state);
		return 1;
	}
	return 0;
}
