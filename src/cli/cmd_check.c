/* SPDX-License-Identifier: Apache-2.0 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kc/check.h"
#include "cli.h"
#include "kc/util.h"

struct checks {
	json_object *items;
	bool json;
	int failed, warned;
};

static void item(void *arg, const char *status, const char *name, const char *detail)
{
	struct checks *c = arg;
	if (strcmp(status, "fail") == 0)
		c->failed++;
	else if (strcmp(status, "warn") == 0)
		c->warned++;
	if (c->json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "item", json_object_new_string(name));
		json_object_object_add(o, "status", json_object_new_string(status));
		json_object_object_add(o, "detail", json_object_new_string(detail));
		json_object_array_add(c->items, o);
	} else {
		printf("%-4s  %-12s %s\n", status, name, detail);
	}
}

int kc_cmd_check(const struct kc_args *ap, struct kc_error **err)
{
	const struct kc_args a = *ap;
	struct checks c = {.json = a.json, .items = a.json ? json_object_new_array() : NULL};
	struct kc_check_opts co = {.criu = a.criu, .libcuda = a.libcuda, .images_dir = a.images_dir};
	kc_check_run(&co, item, &c);
	if (a.json) {
		json_object *o = json_object_new_object();
		json_object_object_add(o, "checks", c.items);
		json_object_object_add(o, "failed", json_object_new_int(c.failed));
		json_object_object_add(o, "warnings", json_object_new_int(c.warned));
		kc_cli_print_json(o);
	}
	if (c.failed)
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "%d check%s failed", c.failed, c.failed == 1 ? "" : "s");
	return 0;
}
