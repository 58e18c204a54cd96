/* SPDX-License-Identifier: Apache-2.0 */
#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kc/report.h"
#include "kc/signals.h"
#include "kc/util.h"
#include "kc/version.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: kcheckpoint [--version] [--help] <command> [options] [args]\n\ncommands:\n");
	for (size_t i = 0; i < kc_n_commands; i++)
		fprintf(f, "  %-9s %s\n", kc_commands[i].name, kc_commands[i].summary);
	fprintf(f, "\nSee 'kcheckpoint <command> --help' and kcheckpoint(1).\n");
}

/*
 * The shell completions ask the binary, so they always match this table:
 *   kcheckpoint __complete            -> commands
 *   kcheckpoint __complete CMD        -> "--long[=]\thint" lines
 */
static int complete(int argc, char **argv)
{
	if (argc < 3) {
		for (size_t i = 0; i < kc_n_commands; i++)
			printf("%s\n", kc_commands[i].name);
		return 0;
	}
	const struct kc_command *cmd = kc_cli_find(argv[2]);
	if (!cmd)
		return KC_EXIT_USAGE;
	for (size_t i = 0; i < kc_n_options; i++) {
		const struct kc_option *o = &kc_options[i];
		if (!(o->commands & cmd->bit))
			continue;
		printf("--%s\t%s\t%s\n", o->name, o->arg ? (o->complete ? o->complete : "arg") : "flag", o->help);
		if (o->short_name)
			printf("-%c\t%s\t%s\n", o->short_name, o->arg ? (o->complete ? o->complete : "arg") : "flag",
			       o->help);
	}
	return 0;
}

/* A command that printed its JSON document already has said its piece. */
static bool json_printed;

/* Paths and names from the system can be any bytes; JSON must be UTF-8. */
static void sanitize_json(json_object *o)
{
	switch (json_object_get_type(o)) {
	case json_type_string: {
		char *copy = kc_xstrdup(json_object_get_string(o));
		if (kc_text_sanitize(copy, false)) /* json-c escapes controls itself */
			json_object_set_string(o, copy);
		free(copy);
		break;
	}
	case json_type_array:
		for (size_t i = 0; i < json_object_array_length(o); i++)
			sanitize_json(json_object_array_get_idx(o, i));
		break;
	case json_type_object: {
		json_object_object_foreach(o, key, val)
		{
			(void)key;
			sanitize_json(val);
		}
		break;
	}
	default:
		break;
	}
}

/* Every JSON document says which shape it has (the man page's JSON
 * OUTPUT): a script can refuse one it does not know. */
#define KC_JSON_SCHEMA_VERSION 1

void kc_cli_print_json(void *obj)
{
	json_printed = true;
	sanitize_json(obj);
	if (json_object_is_type(obj, json_type_object) && !json_object_object_get_ex(obj, "schema_version", NULL)) {
		/* first, where a reader looks */
		json_object *o = json_object_new_object();
		json_object_object_add(o, "schema_version", json_object_new_int(KC_JSON_SCHEMA_VERSION));
		json_object_object_foreach(obj, k, v)
			json_object_object_add(o, k, json_object_get(v));
		json_object_put(obj);
		obj = o;
	}
	fputs(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE), stdout);
	fputc('\n', stdout);
	fflush(stdout);
	json_object_put(obj);
}

static bool wants_json(int argc, char **argv)
{
	for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--json"))
			return true;
	return false;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return KC_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("kcheckpoint %s\n", KC_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "__complete") == 0)
		return complete(argc, argv);
	const struct kc_command *cmd = kc_cli_find(argv[1]);
	if (!cmd) {
		fprintf(stderr, "kcheckpoint: '%s' is not a command (see 'kcheckpoint --help')\n", argv[1]);
		return KC_EXIT_USAGE;
	}
	kc_signals_install();
	/* a closed stdout (`... --json | head -c0`) must not kill us before
	 * the cleanup: work dir, THP mode */
	signal(SIGPIPE, SIG_IGN);
	kc_progress_mode = isatty(STDERR_FILENO) ? KC_PROGRESS_TTY : KC_PROGRESS_NONE;
	_cleanup_error_ struct kc_error *err = NULL;
	struct kc_args a;
	bool done = false;
	int r = kc_cli_prepare(cmd, argc - 1, argv + 1, &a, &done, &err);
	if (r == 0 && !done)
		r = cmd->run(&a, &err);
	if (r < 0) {
		int code = err ? err->exit_code : KC_EXIT_FAILURE;
		/* a script that asked for --json gets the failure as JSON too */
		if (wants_json(argc, argv) && !json_printed) {
			json_object *e = json_object_new_object();
			json_object_object_add(e, "command", json_object_new_string(cmd->name));
			json_object_object_add(e, "message", json_object_new_string(err ? err->msg : "failed"));
			json_object_object_add(e, "exit_code", json_object_new_int(code));
			json_object *o = json_object_new_object();
			json_object_object_add(o, "error", e);
			kc_cli_print_json(o);
		}
		fflush(stdout);
		fprintf(stderr, "kcheckpoint: %s\n", err ? err->msg : "failed");
		return code;
	}
	return 0;
}
