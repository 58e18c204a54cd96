/* SPDX-License-Identifier: Apache-2.0 */
/* kc_gpu_map_plan: what pairs reach cuCheckpointProcessRestore. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "kc/gpumap.h"
#include "kc/util.h"

#define G(n) "GPU-0000000" #n "-0000-0000-0000-000000000000"

static struct kc_uuid U(const char *s)
{
	struct kc_uuid u;
	assert_int_equal(kc_uuid_parse(s, &u), 0);
	return u;
}

static struct kc_gpu_pair P(const char *a, const char *b)
{
	return (struct kc_gpu_pair){U(a), U(b)};
}

/* "G1>G2,G2>G1" with the digits of the GPU names, for compact asserts */
static void render(const struct kc_gpu_pair *v, size_t n, char *buf)
{
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		char a[41], b[41], one[16];
		kc_uuid_format(&v[i].old_uuid, a);
		kc_uuid_format(&v[i].new_uuid, b);
		snprintf(one, sizeof(one), "%s%c>%c", i ? "," : "", a[11], b[11]);
		strcat(buf, one);
	}
}

static void plan(char **node_gpus, const struct kc_gpu_pair *user, size_t n_user, const char *const *local,
		 size_t n_local, const char *want)
{
	struct kc_manifest m;
	kc_manifest_init(&m);
	m.node_gpus = node_gpus;
	struct kc_uuid loc[8];
	for (size_t i = 0; i < n_local; i++)
		loc[i] = U(local[i]);
	struct kc_gpu_pair *out = NULL;
	size_t n = 0;
	struct kc_error *err = NULL;
	int r = kc_gpu_map_plan(&m, user, n_user, loc, n_local, &out, &n, &err);
	if (r < 0) {
		assert_non_null(err);
		if (!strstr(err->msg, want))
			fail_msg("error '%s', want '%s'", err->msg, want);
		kc_error_free(err);
	} else {
		char buf[256];
		render(out, n, buf);
		assert_string_equal(buf, want);
	}
	free(out);
}

static void test_same_node_no_map(void **state)
{
	(void)state;
	char *node[] = {G(1), G(2), NULL};
	const char *local[] = {G(1), G(2)};
	plan(node, NULL, 0, local, 2, "");
}

/* what worked on the H200 x2: the one move, made a permutation */
static void test_partial_map_completed(void **state)
{
	(void)state;
	char *node[] = {G(1), G(2), NULL};
	const char *local[] = {G(1), G(2)};
	struct kc_gpu_pair u = P(G(1), G(2));
	plan(node, &u, 1, local, 2, "1>2,2>1");
}

static void test_unnamed_gpus_stay(void **state)
{
	(void)state;
	char *node[] = {G(1), G(2), G(3), G(4), NULL};
	const char *local[] = {G(1), G(2), G(3), G(4)};
	struct kc_gpu_pair u = P(G(1), G(3));
	plan(node, &u, 1, local, 4, "1>3,2>2,4>4,3>1");
}

static void test_full_map_kept(void **state)
{
	(void)state;
	char *node[] = {G(1), G(2), NULL};
	const char *local[] = {G(1), G(2)};
	struct kc_gpu_pair u[2] = {P(G(2), G(1)), P(G(1), G(2))};
	plan(node, u, 2, local, 2, "2>1,1>2");
}

static void test_other_node_automatic(void **state)
{
	(void)state;
	char *node[] = {G(1), G(2), NULL};
	const char *local[] = {G(5), G(6), G(7)};
	plan(node, NULL, 0, local, 3, "1>5,2>6");
}

static void test_other_node_too_few_gpus(void **state)
{
	(void)state;
	char *node[] = {G(1), G(2), NULL};
	const char *local[] = {G(5)};
	plan(node, NULL, 0, local, 1, "from a node with 2 GPUs, this one has 1");
}

static void test_bad_user_maps(void **state)
{
	(void)state;
	char *node[] = {G(1), G(2), NULL};
	const char *local[] = {G(1), G(2)};
	struct kc_gpu_pair twice[2] = {P(G(1), G(2)), P(G(2), G(2))};
	plan(node, twice, 2, local, 2, "names GPU '" G(2) "' twice");
	struct kc_gpu_pair away = P(G(1), G(9));
	plan(node, &away, 1, local, 2, "GPU '" G(9) "' is not on this node");
}

/* an old manifest without node_gpus: this node's GPUs stand in */
static void test_no_node_list(void **state)
{
	(void)state;
	const char *local[] = {G(1), G(2)};
	struct kc_gpu_pair u = P(G(2), G(1));
	plan(NULL, &u, 1, local, 2, "2>1,1>2");
	plan(NULL, NULL, 0, local, 2, "");
}

static void write_info(const char *dir, const char *bus, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, bus);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/%s/information", dir, bus);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* the kernel module's list: the UUID line of each GPU; a GPU without a
 * readable UUID spoils the list (-1: ask the driver), as does no GPU */
static void test_procfs_gpus(void **state)
{
	(void)state;
	char dir[] = "/tmp/kc-procfs-XXXXXX";
	assert_non_null(mkdtemp(dir));
	setenv("KCHECKPOINT_NVIDIA_PROCFS", dir, 1);
	struct kc_uuid *v = NULL;
	size_t n = 9;
	assert_int_equal(kc_procfs_gpus(&v, &n), -1);
	assert_int_equal(n, 0);
	write_info(dir, "0000:18:00.0", "Model: \t\t NVIDIA H200\nGPU UUID: \t " G(3) "\nBus Location: \t 0000:18:00.0\n");
	write_info(dir, "0000:2a:00.0", "Model: \t\t NVIDIA H200\nIRQ: \t\t 41\nGPU UUID: \t " G(4) "\n");
	assert_int_equal(kc_procfs_gpus(&v, &n), 0);
	assert_int_equal(n, 2);
	char a[41], b[41];
	kc_uuid_format(&v[0], a);
	kc_uuid_format(&v[1], b);
	assert_true((strcmp(a, G(3)) == 0 && strcmp(b, G(4)) == 0) || (strcmp(a, G(4)) == 0 && strcmp(b, G(3)) == 0));
	free(v);
	write_info(dir, "0000:3a:00.0", "Model: \t\t NVIDIA H200\nGPU UUID: \t GPU-\?\?\?\?\?\?\?\?-\?\?\?\?\n");
	assert_int_equal(kc_procfs_gpus(&v, &n), -1);
	assert_null(v);
	char path[512];
	snprintf(path, sizeof(path), "%s/0000:3a:00.0/information", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("Model: \t\t NVIDIA H200\n", f); /* no UUID line at all */
	fclose(f);
	assert_int_equal(kc_procfs_gpus(&v, &n), -1);
	setenv("KCHECKPOINT_NVIDIA_PROCFS", "/nonexistent", 1);
	assert_int_equal(kc_procfs_gpus(&v, &n), -1);
	unsetenv("KCHECKPOINT_NVIDIA_PROCFS");
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_node_no_map),   cmocka_unit_test(test_partial_map_completed),
		cmocka_unit_test(test_unnamed_gpus_stay),  cmocka_unit_test(test_full_map_kept),
		cmocka_unit_test(test_other_node_automatic), cmocka_unit_test(test_other_node_too_few_gpus),
		cmocka_unit_test(test_bad_user_maps),      cmocka_unit_test(test_no_node_list),
		cmocka_unit_test(test_procfs_gpus),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
