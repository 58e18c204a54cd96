/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_CLI_H
#define KC_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "kc/orchestrator.h"
#include "kc/error.h"

/* Commands, as bits, so one option can belong to several. */
enum {
	CMD_DUMP = 1 << 0,
	CMD_RESTORE = 1 << 1,
	CMD_STATE = 1 << 2,
	CMD_RECOVER = 1 << 3,
	CMD_CHECK = 1 << 4,
	CMD_INSPECT = 1 << 5,
	CMD_ALL = 0xff,
};

enum kc_opt_id {
	OPT_HELP = 1000,
	OPT_VERBOSE,
	OPT_QUIET,
	OPT_JSON,
	OPT_IMAGES_DIR,
	OPT_OUTPUT,
	OPT_WORK_DIR,
	OPT_KEEP_IMAGES,
	OPT_COMPRESS,
	OPT_THREADS,
	OPT_FILL_THREADS,
	OPT_NO_FILL_HUGE,
	OPT_NO_FILL_OVERLAP,
	OPT_LEAVE_RUNNING,
	OPT_LOCK_TIMEOUT,
	OPT_TCP_ESTABLISHED,
	OPT_TCP_CLOSE,
	OPT_CRIU_OPT,
	OPT_SHELL_JOB,
	OPT_FILE_LOCKS,
	OPT_CRIU,
	OPT_LIBCUDA,
	OPT_GPU_MAP,
	OPT_PID_WAIT,
	OPT_VERIFY,
	OPT_CONTAINERD,
	OPT_NAMESPACE,
	OPT_ADDRESS,
	OPT_RW_LAYER,
	OPT_THP,
	OPT_PROGRESS,
	OPT_IGNORE_ROOTFS,
};

struct kc_option {
	const char *name;     /* long name */
	int short_name;       /* 0 if none */
	const char *arg;      /* argument name, NULL for a flag */
	unsigned commands;    /* CMD_* bits */
	enum kc_opt_id id;
	const char *complete; /* completion hint: "file", "dir", "pid", or a word list */
	const char *help;
	/* how kc_cli_parse stores it (curl's way): a flag sets a bool, a
	 * string keeps optarg, a number is checked against 0..max and
	 * starts at def; OPT_CUSTOM ones are handled by name */
	enum kc_opt_type { KC_OPT_CUSTOM, KC_OPT_FLAG, KC_OPT_STR, KC_OPT_NUM } type;
	size_t field; /* offsetof(struct kc_args, ...) */
	long def, max;
};

/* What a command takes after its options (checked before it runs). */
enum kc_cmd_args {
	KC_ARGS_NONE,
	KC_ARGS_PID,	      /* one pid, parsed into kc_args.pid */
	KC_ARGS_PID_OR_CTR,   /* a pid, or nothing with --containerd */
	KC_ARGS_IMAGE,	      /* one archive or images dir */
};

struct kc_args;
/* A command: its name, arguments and privileges are checked by main from
 * this table (git's way), so run starts with what it was given. */
struct kc_command {
	const char *name;
	unsigned bit;
	const char *args;
	const char *summary;
	enum kc_cmd_args takes;
	bool root;
	int (*run)(const struct kc_args *a, struct kc_error **err);
};

extern const struct kc_option kc_options[];
extern const size_t kc_n_options;
extern const struct kc_command kc_commands[];
extern const size_t kc_n_commands;

/* Everything any command can be given; each command reads its part. */
struct kc_args {
	bool json, verbose, quiet, keep_images, leave_running, tcp_established, tcp_close, shell_job,
		file_locks, verify, no_fill_huge, no_fill_overlap;
	int rw_layer; /* 1 --with-rw-layer, -1 --ignore-rootfs, 0 neither */
	char *criu_opts[33]; /* --criu-opt, NULL-terminated */
	size_t n_criu_opts;
	const char *images_dir, *output, *work_dir, *compress, *criu, *libcuda, *gpu_map, *containerd,
		*ns, *address, *thp;
	long threads;
	long fill_threads; /* -1: all online CPUs */
	long lock_timeout_ms, pid_wait_ms;
	char **pos; /* positional arguments */
	int n_pos;
	pid_t pid; /* KC_ARGS_PID, KC_ARGS_PID_OR_CTR */
};

/* Options, arguments and privileges of cmd as its table entry says; *done
 * after --help.  Only main calls it. */
int kc_cli_prepare(const struct kc_command *cmd, int argc, char **argv, struct kc_args *a, bool *done,
		   struct kc_error **err);

/* getopt_long over the options of cmd; --help prints and sets *done. */
int kc_cli_parse(const struct kc_command *cmd, int argc, char **argv, struct kc_args *a, bool *done,
		 struct kc_error **err);
void kc_cli_usage(const struct kc_command *cmd, FILE *f);
const struct kc_command *kc_cli_find(const char *name);
/* Exactly n positional arguments, else KC_EXIT_USAGE. */
int kc_cli_want_args(const struct kc_command *cmd, const struct kc_args *a, int n, struct kc_error **err);

/* "OLD=NEW[,OLD=NEW...]" GPU UUID pairs. */
int kc_cli_parse_gpu_map(const char *s, struct kc_gpu_pair **pairs, size_t *n, struct kc_error **err);

int kc_require_root(struct kc_error **err);

struct kc_criu_opts;
/* The CRIU options the command line gives (the plugin unless containerd). */
void kc_cli_criu_opts(const struct kc_args *a, struct kc_criu_opts *o);

int kc_cmd_dump(const struct kc_args *a, struct kc_error **err);
int kc_cmd_restore(const struct kc_args *a, struct kc_error **err);
int kc_cmd_state(const struct kc_args *a, struct kc_error **err);
int kc_cmd_recover(const struct kc_args *a, struct kc_error **err);
int kc_cmd_check(const struct kc_args *a, struct kc_error **err);
int kc_cmd_inspect(const struct kc_args *a, struct kc_error **err);

struct kc_proc_state;
/* The per-process table of `state` and `recover`. */
void kc_cli_print_states(const struct kc_proc_state *s, size_t n, bool json);

/* Prints a json-c object on stdout and frees it. */
void kc_cli_print_json(void *obj);

#endif
