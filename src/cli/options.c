/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The single table of commands and options.  getopt_long, --help, the
 * completion helper (`kcheckpoint __complete`) and the man page test all
 * read it, and each row says where the option goes in struct kc_args, its
 * default and its range (FLAG, STR, NUM; the few others are handled by
 * name in kc_cli_parse), so adding an option here is the whole job (plus
 * the man page, which the test then demands).
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kc/backends.h"
#include "kc/report.h"
#include "kc/util.h"

#define D CMD_DUMP
#define R CMD_RESTORE
/* where each option goes in struct kc_args, and its default and range */
#define FLAG(f) .type = KC_OPT_FLAG, .field = offsetof(struct kc_args, f)
#define STR(f) .type = KC_OPT_STR, .field = offsetof(struct kc_args, f)
#define NUM(f, d, m) .type = KC_OPT_NUM, .field = offsetof(struct kc_args, f), .def = (d), .max = (m)

const struct kc_option kc_options[] = {
	{"images-dir", 'D', "DIR", D, OPT_IMAGES_DIR, "dir", "write the CRIU images to DIR (kept, no archive)", STR(images_dir)},
	{"images-dir", 'D', "DIR", CMD_CHECK, OPT_IMAGES_DIR, "dir", "where images will go: its free space is checked", STR(images_dir)},
	{"output", 'o', "FILE", D, OPT_OUTPUT, "file",
	 "archive to write (default kcheckpoint-<pid>-<UTC time>.tar.zst)", STR(output)},
	{"work-dir", 0, "DIR", D | R, OPT_WORK_DIR, "dir",
	 "private dir for the images while archiving/unpacking (default under $TMPDIR)", STR(work_dir)},
	{"keep-images", 0, NULL, D | R, OPT_KEEP_IMAGES, NULL, "do not remove the work dir at the end", FLAG(keep_images)},
	{"compress", 0, "SPEC", D, OPT_COMPRESS, "zstd zstd:1 zstd:3 zstd:9 none",
	 "archive compression: zstd[:LEVEL] (default) or none", STR(compress)},
	{"threads", 0, "N", D, OPT_THREADS, NULL, "compression threads (default: all CPUs)", NUM(threads, 0, 1024)},
	{"fill-threads", 0, "N", D | R, OPT_FILL_THREADS, NULL,
	 "threads that restore large memory (default: all CPUs; dump: 0 leaves it all to CRIU)", NUM(fill_threads, -1, 1024)},
	{"no-fill-huge", 0, NULL, R, OPT_NO_FILL_HUGE, NULL,
	 "do not advise huge pages on the memory restore fills (default: advised where THP is 'madvise')",
	 FLAG(no_fill_huge)},
	{"no-fill-overlap", 0, NULL, R, OPT_NO_FILL_OVERLAP, NULL,
	 "fill large memory before the GPU restore starts (default: beside it, from an images dir)",
	 FLAG(no_fill_overlap)},
	{"leave-running", 0, NULL, D, OPT_LEAVE_RUNNING, NULL,
	 "let the process run on after the dump (GPU restored and unlocked)", FLAG(leave_running)},
	{"lock-timeout", 0, "MS", D, OPT_LOCK_TIMEOUT, NULL,
	 "wait at most MS for the GPU lock (default 10000, 0 waits forever)", NUM(lock_timeout_ms, 10000, 3600000)},
	{"tcp-established", 0, NULL, D, OPT_TCP_ESTABLISHED, NULL, "dump established TCP connections", FLAG(tcp_established)},
	{"tcp-close", 0, NULL, D, OPT_TCP_CLOSE, NULL,
	 "restore established TCP connections closed (servers whose clients reconnect)", FLAG(tcp_close)},
	{"criu-opt", 0, "OPT", D | R, OPT_CRIU_OPT, NULL,
	 "pass OPT to CRIU as it is (repeatable; dump's are kept for restore)", .type = KC_OPT_CUSTOM},
	{"shell-job", 0, NULL, D, OPT_SHELL_JOB, NULL, "the process was started from a shell (has a tty)", FLAG(shell_job)},
	{"file-locks", 0, NULL, D, OPT_FILE_LOCKS, NULL, "dump file locks", FLAG(file_locks)},
	{"criu", 0, "PATH", D | R | CMD_CHECK, OPT_CRIU, "file", "criu binary (default $KCHECKPOINT_CRIU, else criu in PATH)", STR(criu)},
	{"libcuda", 0, "PATH", D | R | CMD_STATE | CMD_RECOVER | CMD_CHECK, OPT_LIBCUDA, "file",
	 "CUDA driver library (default $KCHECKPOINT_LIBCUDA, else libcuda.so.1)", STR(libcuda)},
	{"gpu-map", 0, "OLD=NEW[,...]", R, OPT_GPU_MAP, NULL, "restore onto other GPUs, by UUID", STR(gpu_map)},
	{"pid-wait", 0, "MS", R, OPT_PID_WAIT, NULL,
	 "wait at most MS for the dumped pids to be free (default 10000)", NUM(pid_wait_ms, 10000, 3600000)},
	{"containerd", 0, "ID", D | R, OPT_CONTAINERD, NULL,
	 "act on containerd container ID instead of a pid (restore: the id to create)", STR(containerd)},
	{"namespace", 0, "NS", D | R, OPT_NAMESPACE, NULL, "containerd namespace (default k8s.io)", STR(ns)},
	{"address", 0, "SOCKET", D | R, OPT_ADDRESS, "file",
	 "containerd socket (default /run/containerd/containerd.sock)", STR(address)},
	{"ignore-rootfs", 0, NULL, D, OPT_IGNORE_ROOTFS, NULL,
	 "containerd: leave the container's rw layer (files it wrote) out of the image", .type = KC_OPT_CUSTOM},
	{"with-rw-layer", 0, NULL, D, OPT_RW_LAYER, NULL,
	 "containerd: the rw layer is required (it is included by default when there is one)", .type = KC_OPT_CUSTOM},
	{"thp", 0, "MODE", D | R, OPT_THP, "always madvise never",
	 "transparent huge pages mode while this runs (put back after)", STR(thp)},
	{"verify", 0, NULL, CMD_INSPECT, OPT_VERIFY, NULL, "check every member's checksum", FLAG(verify)},
	{"json", 0, NULL, CMD_ALL, OPT_JSON, NULL, "print one JSON document on stdout", FLAG(json)},
	{"verbose", 'v', NULL, CMD_ALL, OPT_VERBOSE, NULL, "say more (why there is no GPU stage, say)", FLAG(verbose)},
	{"progress", 0, "WHEN", D | R | CMD_INSPECT, OPT_PROGRESS, "auto tty json none",
	 "live progress on stderr: auto (on a terminal, the default), tty, json (a JSON line a second), none", .type = KC_OPT_CUSTOM},
	{"quiet", 'q', NULL, CMD_ALL, OPT_QUIET, NULL, "nothing on stderr but errors (no report, no progress)", FLAG(quiet)},
	{"help", 'h', NULL, CMD_ALL, OPT_HELP, NULL, "show this help", .type = KC_OPT_CUSTOM},
};
const size_t kc_n_options = KC_ARRAY_SIZE(kc_options);

const struct kc_command kc_commands[] = {
	{"dump", CMD_DUMP, "<pid>", "checkpoint a process tree (GPU, then CRIU) into an archive or dir",
	 KC_ARGS_PID_OR_CTR, true, kc_cmd_dump},
	{"restore", CMD_RESTORE, "<image>", "restore from an archive or images dir (CRIU, then GPU)", KC_ARGS_IMAGE,
	 true, kc_cmd_restore},
	{"state", CMD_STATE, "<pid>", "show the CUDA state of each process of the tree", KC_ARGS_PID, true,
	 kc_cmd_state},
	{"recover", CMD_RECOVER, "<pid>", "bring LOCKED or CHECKPOINTED processes back to RUNNING", KC_ARGS_PID, true,
	 kc_cmd_recover},
	{"check", CMD_CHECK, "", "preflight: root, CRIU, driver, GPUs, huge pages, free space", KC_ARGS_NONE, false,
	 kc_cmd_check},
	{"inspect", CMD_INSPECT, "<image>", "show what an archive or images dir holds", KC_ARGS_IMAGE, false,
	 kc_cmd_inspect},
};
const size_t kc_n_commands = KC_ARRAY_SIZE(kc_commands);

const struct kc_command *kc_cli_find(const char *name)
{
	for (size_t i = 0; i < kc_n_commands; i++)
		if (strcmp(kc_commands[i].name, name) == 0)
			return &kc_commands[i];
	return NULL;
}

void kc_cli_usage(const struct kc_command *cmd, FILE *f)
{
	fprintf(f, "usage: kcheckpoint %s [options] %s\n\n%s\n\noptions:\n", cmd->name, cmd->args, cmd->summary);
	for (size_t i = 0; i < kc_n_options; i++) {
		const struct kc_option *o = &kc_options[i];
		if (!(o->commands & cmd->bit))
			continue;
		char left[64];
		if (o->short_name)
			snprintf(left, sizeof(left), "-%c, --%s%s%s", o->short_name, o->name, o->arg ? " " : "",
				 o->arg ? o->arg : "");
		else
			snprintf(left, sizeof(left), "    --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
		fprintf(f, "  %-28s %s\n", left, o->help);
	}
}

/* CRIU options that kcheckpoint sets from its own options or its steps
 * (where the images go, who is dumped, the log, what happens to the tree,
 * the plugin): through --criu-opt they would take the tool's bearings. */
static const struct {
	const char *name; /* long form; a short form is matched by its letter */
	char short_name;
	const char *ours; /* kcheckpoint's own option for it, if any */
} reserved_criu_opts[] = {
	{"--images-dir", 'D', "--images-dir"},	{"--work-dir", 'W', "--work-dir"},
	{"--tree", 't', NULL},			{"--log-file", 'o', NULL},
	{"--verbosity", 'v', NULL},		{"--leave-running", 'R', "--leave-running"},
	{"--leave-stopped", 's', NULL},		{"--restore-detached", 'd', NULL},
	{"--pidfile", 0, NULL},			{"--libdir", 'L', "KCHECKPOINT_CRIU_LIBDIR"},
	{"--tcp-established", 0, "--tcp-established"}, {"--tcp-close", 0, "--tcp-close"},
	{"--shell-job", 'j', "--shell-job"},	{"--file-locks", 'l', "--file-locks"},
	{"--link-remap", 0, NULL},		{"--restore-sibling", 'S', NULL},
};

static bool criu_opt_reserved(const char *opt, unsigned long *which)
{
	for (size_t i = 0; i < KC_ARRAY_SIZE(reserved_criu_opts); i++) {
		size_t n = strlen(reserved_criu_opts[i].name);
		bool hit = !strncmp(opt, reserved_criu_opts[i].name, n) && (opt[n] == '\0' || opt[n] == '=');
		if (!hit && opt[1] != '-' && reserved_criu_opts[i].short_name)
			hit = opt[1] == reserved_criu_opts[i].short_name;
		if (hit) {
			*which = i;
			return true;
		}
	}
	return false;
}

static int parse_uint(const char *opt, const char *s, unsigned long max, unsigned long *out, struct kc_error **err)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || errno || s[0] == '-' || v > max)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "option '--%s' wants a number up to %lu, not '%s'", opt, max, s);
	*out = v;
	return 0;
}

int kc_cli_parse(const struct kc_command *cmd, int argc, char **argv, struct kc_args *a, bool *done,
		 struct kc_error **err)
{
	struct option longopts[KC_ARRAY_SIZE(kc_options) + 1];
	/* leading ':' so a missing argument is told apart from an unknown option */
	char shortopts[64] = ":";
	size_t nl = 0, ns = 1;
	for (size_t i = 0; i < kc_n_options; i++) {
		const struct kc_option *o = &kc_options[i];
		if (!(o->commands & cmd->bit))
			continue;
		longopts[nl++] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, (int)o->id};
		if (o->short_name) {
			shortopts[ns++] = (char)o->short_name;
			if (o->arg)
				shortopts[ns++] = ':';
		}
	}
	shortopts[ns] = '\0';
	longopts[nl] = (struct option){0};

	memset(a, 0, sizeof(*a));
	for (size_t i = 0; i < kc_n_options; i++)
		if (kc_options[i].type == KC_OPT_NUM)
			*(long *)((char *)a + kc_options[i].field) = kc_options[i].def;
	*done = false;
	optind = 1;
	opterr = 0;
	for (;;) {
		int li = -1;
		int c = getopt_long(argc, argv, shortopts, longopts, &li);
		if (c == -1)
			break;
		/* map short options onto the table ids */
		for (size_t i = 0; c < OPT_HELP && i < kc_n_options; i++)
			if (kc_options[i].short_name == c && (kc_options[i].commands & cmd->bit))
				c = (int)kc_options[i].id;
		unsigned long v = 0;
		const struct kc_option *o = NULL;
		for (size_t i = 0; i < kc_n_options && !o; i++)
			if ((int)kc_options[i].id == c && (kc_options[i].commands & cmd->bit))
				o = &kc_options[i];
		if (o && o->type != KC_OPT_CUSTOM) {
			char *at = (char *)a + o->field;
			if (o->type == KC_OPT_FLAG) {
				*(bool *)at = true;
			} else if (o->type == KC_OPT_STR) {
				*(const char **)at = optarg;
			} else {
				if (parse_uint(o->name, optarg, (unsigned long)o->max, &v, err) < 0)
					return -1;
				*(long *)at = (long)v;
			}
			continue;
		}
		switch (c) {
		case OPT_HELP:
			kc_cli_usage(cmd, stdout);
			*done = true;
			return 0;
		case OPT_CRIU_OPT:
			if (optarg[0] != '-')
				return kc_error_set(err, KC_EXIT_USAGE, 0,
						    "'--criu-opt' takes a CRIU option such as '--ext-unix-sk', not '%s'", optarg);
			if (criu_opt_reserved(optarg, &v))
				return kc_error_set(err, KC_EXIT_USAGE, 0,
						    "'--criu-opt %s': kcheckpoint sets that CRIU option itself%s%s", optarg,
						    reserved_criu_opts[v].ours ? "; use " : "",
						    reserved_criu_opts[v].ours ? reserved_criu_opts[v].ours : "");
			if (a->n_criu_opts + 1 >= KC_ARRAY_SIZE(a->criu_opts))
				return kc_error_set(err, KC_EXIT_USAGE, 0, "too many '--criu-opt' (at most %zu)",
						    KC_ARRAY_SIZE(a->criu_opts) - 1);
			a->criu_opts[a->n_criu_opts++] = optarg;
			break;
		case OPT_RW_LAYER: a->rw_layer = 1; break;
		case OPT_IGNORE_ROOTFS: a->rw_layer = -1; break;
		case OPT_PROGRESS:
			if (!strcmp(optarg, "tty"))
				kc_progress_mode = KC_PROGRESS_TTY;
			else if (!strcmp(optarg, "json"))
				kc_progress_mode = KC_PROGRESS_JSON;
			else if (!strcmp(optarg, "none"))
				kc_progress_mode = KC_PROGRESS_NONE;
			else if (strcmp(optarg, "auto"))
				return kc_error_set(err, KC_EXIT_USAGE, 0,
						    "'--progress' is auto, tty, json or none, not '%s'", optarg);
			break;
		case ':':
			return kc_error_set(err, KC_EXIT_USAGE, 0, "option '%s' needs an argument", argv[optind - 1]);
		default:
			return kc_error_set(err, KC_EXIT_USAGE, 0, "unknown option '%s' for '%s' (see 'kcheckpoint %s --help')",
					    argv[optind - 1], cmd->name, cmd->name);
		}
	}
	a->pos = argv + optind;
	a->n_pos = argc - optind;
	kc_progress_quiet = a->quiet;
	return 0;
}

int kc_cli_prepare(const struct kc_command *cmd, int argc, char **argv, struct kc_args *a, bool *done,
		   struct kc_error **err)
{
	if (kc_cli_parse(cmd, argc, argv, a, done, err) < 0 || *done)
		return *done ? 0 : -1;
	int n = cmd->takes == KC_ARGS_NONE || (cmd->takes == KC_ARGS_PID_OR_CTR && a->containerd) ? 0 : 1;
	if (kc_cli_want_args(cmd, a, n, err) < 0)
		return -1;
	if (n && (cmd->takes == KC_ARGS_PID || cmd->takes == KC_ARGS_PID_OR_CTR) &&
	    (a->pid = kc_parse_pid(a->pos[0])) < 0)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'%s' is not a pid", a->pos[0]);
	if (cmd->root)
		return kc_require_root(err);
	return 0;
}

int kc_cli_want_args(const struct kc_command *cmd, const struct kc_args *a, int n, struct kc_error **err)
{
	if (a->n_pos < n)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'%s' needs %s (see 'kcheckpoint %s --help')", cmd->name,
				    cmd->args, cmd->name);
	if (a->n_pos > n)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'%s' takes %s%s, not '%s'", cmd->name,
				    n ? "only " : "no arguments", n ? cmd->args : "", a->pos[n]);
	return 0;
}

int kc_cli_parse_gpu_map(const char *s, struct kc_gpu_pair **pairs, size_t *n, struct kc_error **err)
{
	_cleanup_free_ char *copy = kc_xstrdup(s);
	_cleanup_free_ struct kc_gpu_pair *v = NULL;
	size_t k = 0;
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq)
			return kc_error_set(err, KC_EXIT_USAGE, 0, "'--gpu-map' entry '%s' is not OLD=NEW", tok);
		*eq = '\0';
		v = kc_xrealloc(v, (k + 1) * sizeof(*v));
		if (kc_uuid_parse(tok, &v[k].old_uuid) < 0)
			return kc_error_set(err, KC_EXIT_USAGE, 0, "'--gpu-map': '%s' is not a GPU UUID", tok);
		if (kc_uuid_parse(eq + 1, &v[k].new_uuid) < 0)
			return kc_error_set(err, KC_EXIT_USAGE, 0, "'--gpu-map': '%s' is not a GPU UUID", eq + 1);
		k++;
	}
	if (!k)
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'--gpu-map' is empty");
	*pairs = steal_ptr(v);
	*n = k;
	return 0;
}

int kc_require_root(struct kc_error **err)
{
	if (geteuid() != 0)
		return kc_error_set(err, KC_EXIT_PERM, EPERM, "must run as root (CRIU and the CUDA checkpoint API need it)");
	return 0;
}

void kc_cli_criu_opts(const struct kc_args *a, struct kc_criu_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->criu_path = a->criu;
	o->tcp_established = a->tcp_established;
	o->tcp_close = a->tcp_close;
	o->shell_job = a->shell_job;
	o->link_remap = !a->containerd; /* containerd's CRIU has its own settings */
	o->extra = a->n_criu_opts ? a->criu_opts : NULL;
	/* containerd runs its own CRIU, which loads no plugin of ours */
	o->libdir = a->containerd ? NULL : kc_backends_plugin_dir();
	o->file_locks = a->file_locks;
	o->verbose = a->verbose;
}
