/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_GPU_DEVICE_H
#define KC_GPU_DEVICE_H

/*
 * Which files are GPU devices, for kcheckpoint and for its CRIU plugin
 * (a separate shared object that links nothing of ours, hence static
 * functions in a header): character devices whose major /proc/devices
 * names "nvidia*" (nvidia-frontend, nvidia-uvm, nvidia-caps, ...), and
 * any device listed in KCHECKPOINT_GPU_DEVICES=[b|c]MAJ:MIN[,...], which
 * stands in for them in tests on machines without a GPU.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static inline bool kc_gpu_device_listed(const struct stat *st)
{
	const char *env = getenv("KCHECKPOINT_GPU_DEVICES");
	if (!env || !*env)
		return false;
	while (*env) {
		char kind = 'c';
		if (*env == 'b' || *env == 'c')
			kind = *env++;
		unsigned maj, min;
		if (sscanf(env, "%u:%u", &maj, &min) == 2) {
			bool type_ok = kind == 'b' ? S_ISBLK(st->st_mode) : S_ISCHR(st->st_mode);
			if (type_ok && major(st->st_rdev) == maj && minor(st->st_rdev) == min)
				return true;
		}
		const char *comma = strchr(env, ',');
		if (!comma)
			break;
		env = comma + 1;
	}
	return false;
}

/* KCHECKPOINT_GPU_DEVICES is unset, or every entry is [b|c]MAJ:MIN; else
 * *bad points at the first entry that is not. */
static inline bool kc_gpu_devices_env_ok(const char **bad)
{
	const char *p = getenv("KCHECKPOINT_GPU_DEVICES");
	if (!p)
		return true;
	for (;;) {
		const char *tok = p;
		if (*p == 'b' || *p == 'c')
			p++;
		size_t maj = strspn(p, "0123456789");
		bool ok = maj > 0 && maj < 8 && p[maj] == ':';
		size_t min = ok ? strspn(p + maj + 1, "0123456789") : 0;
		ok = ok && min > 0 && min < 8;
		p += ok ? maj + 1 + min : 0;
		if (!ok || (*p != ',' && *p != '\0')) {
			*bad = tok;
			return false;
		}
		if (*p == '\0')
			return true;
		p++;
	}
}

/* The "Character devices:" section of /proc/devices. */
static inline bool kc_gpu_device_major(unsigned maj)
{
	FILE *f = fopen("/proc/devices", "re");
	if (!f)
		return false;
	char line[256];
	bool in_chr = false, found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "Character devices:", 18)) {
			in_chr = true;
			continue;
		}
		if (!strncmp(line, "Block devices:", 14))
			break;
		unsigned m;
		char name[64];
		if (in_chr && sscanf(line, "%u %63s", &m, name) == 2 && m == maj && !strncmp(name, "nvidia", 6))
			found = true;
	}
	fclose(f);
	return found;
}

static inline bool kc_is_gpu_device(const struct stat *st)
{
	if (kc_gpu_device_listed(st))
		return true;
	return S_ISCHR(st->st_mode) && kc_gpu_device_major(major(st->st_rdev));
}

#endif
