/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc/cuda.h"
#include "kc/util.h"

/*
 * Accepts NVML's "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", the same
 * without "GPU-", and 32 bare hex digits (a CUuuid dump).  MIG UUIDs name
 * a slice, not a GPU the driver can remap, so they are refused.
 */
int kc_uuid_parse(const char *s, struct kc_uuid *out)
{
	static const int dash_at[] = {8, 13, 18, 23};
	struct kc_uuid u;

	if (!s)
		return -1;
	if (strncmp(s, "GPU-", 4) == 0)
		s += 4;
	size_t len = strlen(s);
	bool dashed;
	if (len == 36)
		dashed = true;
	else if (len == 32)
		dashed = false;
	else
		return -1;

	size_t pos = 0, d = 0;
	for (size_t i = 0; i < 16; i++) {
		int v[2];
		for (int k = 0; k < 2; k++) {
			if (dashed && d < 4 && (int)pos == dash_at[d]) {
				if (s[pos] != '-')
					return -1;
				pos++;
				d++;
			}
			v[k] = kc_hex_value(s[pos++]);
			if (v[k] < 0)
				return -1;
		}
		u.bytes[i] = (unsigned char)(v[0] << 4 | v[1]);
	}
	if (s[pos] != '\0')
		return -1;
	*out = u;
	return 0;
}

void kc_uuid_format(const struct kc_uuid *u, char buf[41])
{
	const unsigned char *b = u->bytes;
	snprintf(buf, 41,
		 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

/*
 * The kernel module lists its GPUs in /proc/driver/nvidia/gpus/<bus>/
 * information ("GPU UUID: \t GPU-..."): readable at once, with no driver
 * start-up, so restore can check a --gpu-map before it unpacks anything.
 * A GPU whose UUID the module could not read ("GPU-????...", or no line)
 * makes the list unusable: a short list would refuse a good map, so the
 * caller falls back to asking the driver.  No kc_error: there is nothing
 * to report, only a fallback to take.
 */
int kc_procfs_gpus(struct kc_uuid **out, size_t *n)
{
	const char *root = getenv("KCHECKPOINT_NVIDIA_PROCFS");
	if (!root || !*root)
		root = "/proc/driver/nvidia/gpus";
	*out = NULL;
	*n = 0;
	_cleanup_closedir_ DIR *d = opendir(root);
	if (!d)
		return -1;
	_cleanup_free_ struct kc_uuid *v = NULL;
	size_t k = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		_cleanup_free_ char *path = kc_xasprintf("%s/%s/information", root, e->d_name);
		_cleanup_fclose_ FILE *f = fopen(path, "re");
		char line[256];
		bool found = false;
		while (f && !found && fgets(line, sizeof(line), f)) {
			if (strncmp(line, "GPU UUID:", 9) != 0)
				continue;
			char *u = strstr(line, "GPU-");
			if (!u)
				break;
			u[strcspn(u, " \t\r\n")] = '\0';
			struct kc_uuid parsed;
			if (kc_uuid_parse(u, &parsed) < 0)
				break;
			v = kc_xrealloc(v, (k + 1) * sizeof(*v));
			v[k++] = parsed;
			found = true;
		}
		if (!found)
			return -1;
	}
	if (k == 0)
		return -1;
	*out = steal_ptr(v);
	*n = k;
	return 0;
}
