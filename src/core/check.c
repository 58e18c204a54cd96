/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `kcheckpoint check`: what this node has (root, CRIU and whether it can
 * dump a server on this kernel, the plugin, the driver, NVML and the GPUs,
 * THP, free space), one item at a time to the caller, which prints them.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "kc/check.h"
#include "kc/criu.h"
#include "kc/cuda.h"
#include "kc/nvml.h"
#include "kc/util.h"

struct out {
	kc_check_item_fn fn;
	void *arg;
};

static void item(struct out *c, const char *status, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void item(struct out *c, const char *status, const char *name, const char *fmt, ...)
{
	va_list ap;
	char detail[512];
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	c->fn(c->arg, status, name, detail);
}

static void check_criu(struct out *c, const struct kc_check_opts *a)
{
	struct kc_criu criu;
	kc_criu_init(&criu);
	struct kc_criu_opts o = {.criu_path = a->criu};
	_cleanup_free_ char *ver = NULL;
	_cleanup_error_ struct kc_error *e = NULL;
	if (criu.ops->version(criu.h, &o, &ver, &e) < 0) {
		item(c, "fail", "criu", "%s", e->msg);
		return;
	}
	int major = 0, minor = 0;
	sscanf(ver, "%d.%d", &major, &minor);
	if (major < 4 || (major == 4 && minor < 1))
		item(c, "fail", "criu", "version %s: 4.1 or newer is needed (scripts/build-criu.sh builds one)", ver);
	else
		item(c, "ok", "criu", "version %s", ver);
	_cleanup_free_ char *out = NULL;
	if (criu.ops->check(criu.h, &o, &out, &e) < 0)
		item(c, "fail", "criu check", "%s", e->msg);
	else if (!out || !*out || strstr(out, "Looks good"))
		item(c, "ok", "criu check", "looks good"); /* past any warnings it printed first */
	else
		item(c, "ok", "criu check", "%s", strtok(out, "\n"));
	kc_error_freep(&e);
	/* `criu check` passes where 4.1 still cannot dump any server */
	if (geteuid() != 0)
		item(c, "warn", "criu inet", "not root: cannot try a dump of a TCP socket");
	else if (criu.ops->probe_inet(criu.h, &o, &e) < 0)
		item(c, "fail", "criu inet", "%s", e->msg);
	else
		item(c, "ok", "criu inet", "dumps a listening TCP socket on this kernel");
	const char *plugin = kc_criu_plugin_dir();
	if (plugin)
		item(c, "ok", "criu plugin", "'%s/%s' (workers forked after CUDA init)", plugin, KC_CRIU_PLUGIN_NAME);
	else if (getenv("KCHECKPOINT_CRIU_LIBDIR") && *getenv("KCHECKPOINT_CRIU_LIBDIR"))
		item(c, "fail", "criu plugin", "KCHECKPOINT_CRIU_LIBDIR='%s' holds no readable %s",
		     getenv("KCHECKPOINT_CRIU_LIBDIR"), KC_CRIU_PLUGIN_NAME);
	else
		item(c, "warn", "criu plugin",
		     "%s not found (KCHECKPOINT_CRIU_LIBDIR): trees with workers forked after CUDA init are refused",
		     KC_CRIU_PLUGIN_NAME);
}

static void check_gpu(struct out *c, const struct kc_check_opts *a)
{
	struct kc_cuda cuda;
	_cleanup_error_ struct kc_error *e = NULL;
	if (kc_cuda_open(a->libcuda, &cuda, &e) < 0) {
		item(c, e->exit_code == KC_EXIT_NOENT ? "warn" : "fail", "libcuda", "%s%s", e->msg,
		     e->exit_code == KC_EXIT_NOENT ? " (no GPU stage: CPU-only dumps)" : "");
	} else {
		int v = 0;
		cuda.ops->driver_version(cuda.h, &v, NULL);
		item(c, "ok", "libcuda", "'%s', CUDA driver %d.%d, all %zu checkpoint symbols", cuda.lib_path, v / 1000,
		     (v % 1000) / 10, kc_strv_len((char *const *)kc_cuda_checkpoint_symbols));
		kc_cuda_close(&cuda);
	}
	struct kc_nvml nvml;
	kc_error_freep(&e);
	if (kc_nvml_open(NULL, &nvml, &e) < 0) {
		item(c, "warn", "nvml", "%s (no GPU names, UUIDs or VRAM figures)", e->msg);
		return;
	}
	char drv[80] = "?";
	nvml.ops->driver_version(nvml.h, drv, sizeof(drv), NULL);
	item(c, "ok", "nvml", "driver %s", drv);
	_cleanup_free_ struct kc_gpu_info *g = NULL;
	size_t n = 0;
	if (nvml.ops->list_gpus(nvml.h, &g, &n, &e) < 0) {
		item(c, "fail", "gpus", "%s", e->msg);
	} else {
		for (size_t i = 0; i < n; i++) {
			char name[16], total[32];
			snprintf(name, sizeof(name), "gpu %u", g[i].index);
			kc_format_bytes(g[i].mem_total, total, sizeof(total));
			item(c, g[i].persistence == 0 ? "warn" : "ok", name, "%s %s, %s, persistence mode %s", g[i].name,
			     g[i].uuid, total,
			     g[i].persistence == 1 ? "on" : g[i].persistence == 0 ? "off (driver re-inits slowly)" : "unknown");
		}
		if (!n)
			item(c, "warn", "gpus", "NVML sees no GPU");
	}
	kc_nvml_close(&nvml);
}

static void check_thp(struct out *c)
{
	_cleanup_free_ char *s = NULL;
	if (kc_read_file("/sys/kernel/mm/transparent_hugepage/enabled", &s, NULL, NULL) < 0) {
		item(c, "warn", "huge pages", "cannot read transparent_hugepage/enabled");
		return;
	}
	const char *mode = strstr(s, "[always]") ? "always" : strstr(s, "[madvise]") ? "madvise" : "never";
	if (strcmp(mode, "always") == 0)
		item(c, "ok", "huge pages", "transparent huge pages: always");
	else
		item(c, "warn", "huge pages",
		     "transparent huge pages: %s ('always' made every stage 1.5-2x faster on an H200 node)", mode);
}

static void check_space(struct out *c, const struct kc_check_opts *a)
{
	const char *dir = a->images_dir ? a->images_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	struct statvfs sv;
	if (statvfs(dir, &sv) < 0) {
		item(c, a->images_dir ? "fail" : "warn", "free space", "cannot stat '%s'", dir);
		return;
	}
	uint64_t avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
	char b[32], r[32];
	kc_format_bytes(avail, b, sizeof(b));
	kc_format_bytes(ram, r, sizeof(r));
	/* an image is as large as the process' memory plus its VRAM */
	item(c, avail < ram / 4 ? "warn" : "ok", "free space", "%s free in '%s' (host RAM %s)", b, dir, r);
}

void kc_check_run(const struct kc_check_opts *o, kc_check_item_fn fn, void *arg)
{
	struct out c = {fn, arg};
	if (geteuid() == 0)
		item(&c, "ok", "root", "running as root");
	else
		item(&c, "fail", "root", "not root: dump and restore need root");
	check_criu(&c, o);
	check_gpu(&c, o);
	check_thp(&c);
	check_space(&c, o);
}
