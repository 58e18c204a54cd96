/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kc/manifest.h"
#include "kc/util.h"

void kc_manifest_init(struct kc_manifest *m)
{
	memset(m, 0, sizeof(*m));
	m->format = KC_MANIFEST_FORMAT_PLAIN;
}

void kc_manifest_free(struct kc_manifest *m)
{
	free(m->tool_version);
	free(m->kernel);
	free(m->driver_version);
	free(m->criu_version);
	free(m->host);
	free(m->created);
	for (size_t i = 0; i < m->n_procs; i++)
		kc_strv_free(m->procs[i].gpus);
	free(m->procs);
	for (size_t i = 0; i < m->n_members; i++)
		free(m->members[i].path);
	free(m->members);
	free(m->compression);
	kc_strv_free(m->node_gpus);
	kc_strv_free(m->criu_extra);
	kc_strv_free(m->link_remaps);
	if (m->containerd)
		json_object_put(m->containerd);
	kc_manifest_init(m);
}

struct kc_manifest_proc *kc_manifest_add_proc(struct kc_manifest *m)
{
	m->procs = kc_xrealloc(m->procs, (m->n_procs + 1) * sizeof(*m->procs));
	struct kc_manifest_proc *p = &m->procs[m->n_procs++];
	memset(p, 0, sizeof(*p));
	p->cuda_state = KC_CUDA_NONE;
	return p;
}

void kc_manifest_add_member(struct kc_manifest *m, const char *path, uint64_t size, const char *sha256)
{
	m->members = kc_xrealloc(m->members, (m->n_members + 1) * sizeof(*m->members));
	struct kc_manifest_member *mb = &m->members[m->n_members++];
	mb->path = kc_xstrdup(path);
	mb->size = size;
	snprintf(mb->sha256, sizeof(mb->sha256), "%s", sha256 ? sha256 : "");
}

static void add_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v ? json_object_new_string(v) : json_object_new_null());
}

/* An array of strings; empty for NULL. */
static void add_strv(json_object *o, const char *key, char *const *v)
{
	json_object *arr = json_object_new_array();
	for (char *const *x = v; x && *x; x++)
		json_object_array_add(arr, json_object_new_string(*x));
	json_object_object_add(o, key, arr);
}

char *kc_manifest_to_string(const struct kc_manifest *m)
{
	json_object *root = json_object_new_object();
	add_str(root, "tool", "kcheckpoint");
	json_object_object_add(root, "format", json_object_new_int(m->format));

	json_object *ver = json_object_new_object();
	add_str(ver, "kcheckpoint", m->tool_version);
	add_str(ver, "kernel", m->kernel);
	add_str(ver, "driver", m->driver_version);
	json_object_object_add(ver, "cuda_driver", json_object_new_int(m->cuda_driver_version));
	add_str(ver, "criu", m->criu_version);
	json_object_object_add(root, "versions", ver);

	add_str(root, "host", m->host);
	add_str(root, "created", m->created);
	json_object_object_add(root, "root_pid", json_object_new_int(m->root_pid));
	json_object_object_add(root, "vram_bytes", json_object_new_uint64(m->vram_bytes));
	json_object *ng = json_object_new_array();
	for (char **g = m->node_gpus; g && *g; g++)
		json_object_array_add(ng, json_object_new_string(*g));
	json_object_object_add(root, "node_gpus", ng);

	json_object *procs = json_object_new_array();
	for (size_t i = 0; i < m->n_procs; i++) {
		const struct kc_manifest_proc *p = &m->procs[i];
		json_object *po = json_object_new_object();
		json_object_object_add(po, "pid", json_object_new_int(p->pid));
		json_object_object_add(po, "ppid", json_object_new_int(p->ppid));
		add_str(po, "comm", p->comm);
		json_object_object_add(po, "cuda", json_object_new_boolean(p->cuda));
		if (p->forked_after_cuda)
			json_object_object_add(po, "forked_after_cuda", json_object_new_boolean(true));
		if (p->stopped)
			json_object_object_add(po, "stopped", json_object_new_boolean(true));
		add_str(po, "cuda_state", p->cuda ? kc_cuda_state_name(p->cuda_state) : NULL);
		json_object *gpus = json_object_new_array();
		for (char **g = p->gpus; g && *g; g++)
			json_object_array_add(gpus, json_object_new_string(*g));
		json_object_object_add(po, "gpus", gpus);
		json_object_object_add(po, "vram_bytes", json_object_new_uint64(p->vram_bytes));
		json_object_object_add(po, "lock_seconds", json_object_new_double(p->lock_s));
		json_object_object_add(po, "checkpoint_seconds", json_object_new_double(p->checkpoint_s));
		json_object_array_add(procs, po);
	}
	json_object_object_add(root, "processes", procs);

	json_object *co = json_object_new_object();
	json_object_object_add(co, "tcp_established", json_object_new_boolean(m->tcp_established));
	json_object_object_add(co, "shell_job", json_object_new_boolean(m->shell_job));
	json_object_object_add(co, "file_locks", json_object_new_boolean(m->file_locks));
	json_object_object_add(co, "tcp_close", json_object_new_boolean(m->tcp_close));
	json_object_object_add(co, "link_remap", json_object_new_boolean(m->link_remap));
	add_strv(co, "extra", m->criu_extra);
	json_object_object_add(root, "criu_options", co);
	add_strv(root, "link_remaps", m->link_remaps);

	json_object *stages = json_object_new_array();
	for (size_t i = 0; i < m->n_stages; i++) {
		json_object *so = json_object_new_object();
		add_str(so, "stage", m->stages[i].name);
		json_object_object_add(so, "seconds", json_object_new_double(m->stages[i].seconds));
		json_object_object_add(so, "bytes", json_object_new_uint64(m->stages[i].bytes));
		json_object_array_add(stages, so);
	}
	json_object_object_add(root, "stages", stages);

	if (m->compression)
		add_str(root, "compression", m->compression);
	if (m->n_members) {
		json_object *members = json_object_new_array();
		for (size_t i = 0; i < m->n_members; i++) {
			json_object *mo = json_object_new_object();
			add_str(mo, "path", m->members[i].path);
			json_object_object_add(mo, "size", json_object_new_uint64(m->members[i].size));
			add_str(mo, "sha256_tree", m->members[i].sha256);
			json_object_array_add(members, mo);
		}
		json_object_object_add(root, "members", members);
	}
	if (m->containerd)
		json_object_object_add(root, "containerd", json_object_get(m->containerd));

	char *s = kc_xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
								  JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
	return s;
}

/* Field readers: each returns -1 with a message naming the field. */
static int get_field(json_object *o, const char *key, json_type want, bool optional, json_object **out,
		     struct kc_error **err)
{
	json_object *v = NULL;
	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
		*out = NULL;
		if (optional)
			return 0;
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "field '%s' is missing", key);
	}
	bool ok = json_object_is_type(v, want) ||
		  (want == json_type_double && json_object_is_type(v, json_type_int));
	if (!ok)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "field '%s' has the wrong type", key);
	*out = v;
	return 0;
}

static int get_str(json_object *o, const char *key, bool optional, char **out, struct kc_error **err)
{
	json_object *v = NULL;
	if (get_field(o, key, json_type_string, optional, &v, err) < 0)
		return -1;
	*out = v ? kc_xstrdup(json_object_get_string(v)) : NULL;
	return 0;
}

static int get_int(json_object *o, const char *key, bool optional, long long lo, long long hi, long long *out,
		   struct kc_error **err)
{
	json_object *v = NULL;
	if (get_field(o, key, json_type_int, optional, &v, err) < 0)
		return -1;
	if (!v) {
		*out = 0;
		return 0;
	}
	errno = 0;
	int64_t x = json_object_get_int64(v);
	if (errno || x < lo || x > hi)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "field '%s' is out of range", key);
	*out = x;
	return 0;
}

static int get_u64(json_object *o, const char *key, bool optional, uint64_t *out, struct kc_error **err)
{
	json_object *v = NULL;
	if (get_field(o, key, json_type_int, optional, &v, err) < 0)
		return -1;
	if (v && json_object_get_int64(v) < 0)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "field '%s' is negative", key);
	*out = v ? json_object_get_uint64(v) : 0;
	return 0;
}

static int get_double(json_object *o, const char *key, bool optional, double *out, struct kc_error **err)
{
	json_object *v = NULL;
	if (get_field(o, key, json_type_double, optional, &v, err) < 0)
		return -1;
	*out = v ? json_object_get_double(v) : 0.0;
	return 0;
}

static int get_bool(json_object *o, const char *key, bool optional, bool *out, struct kc_error **err)
{
	json_object *v = NULL;
	if (get_field(o, key, json_type_boolean, optional, &v, err) < 0)
		return -1;
	*out = v ? json_object_get_boolean(v) : false;
	return 0;
}

static enum kc_cuda_state state_from_name(const char *s)
{
	for (int st = KC_CUDA_RUNNING; st <= KC_CUDA_FAILED; st++)
		if (s && strcmp(s, kc_cuda_state_name(st)) == 0)
			return st;
	return KC_CUDA_NONE;
}

/* An optional array of strings, as a NULL-terminated vector. */
static int get_strv(json_object *o, const char *key, char ***out, struct kc_error **err)
{
	json_object *arr;
	if (get_field(o, key, json_type_array, true, &arr, err) < 0)
		return -1;
	size_t n = arr ? json_object_array_length(arr) : 0;
	*out = kc_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		json_object *g = json_object_array_get_idx(arr, i);
		if (!json_object_is_type(g, json_type_string))
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "field '%s' holds a non-string", key);
		(*out)[i] = kc_xstrdup(json_object_get_string(g));
	}
	return 0;
}

static int parse_proc(json_object *po, struct kc_manifest *m, struct kc_error **err)
{
	if (!json_object_is_type(po, json_type_object))
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "a process entry is not an object");
	struct kc_manifest_proc *p = kc_manifest_add_proc(m);
	long long v = 0;
	if (get_int(po, "pid", false, 1, INT_MAX, &v, err) < 0)
		return -1;
	p->pid = (pid_t)v;
	if (get_int(po, "ppid", true, 0, INT_MAX, &v, err) < 0)
		return -1;
	p->ppid = (pid_t)v;
	json_object *c;
	if (get_field(po, "comm", json_type_string, true, &c, err) < 0)
		return -1;
	snprintf(p->comm, sizeof(p->comm), "%s", c ? json_object_get_string(c) : "?");
	if (get_bool(po, "cuda", false, &p->cuda, err) < 0 ||
	    get_bool(po, "forked_after_cuda", true, &p->forked_after_cuda, err) < 0 ||
	    get_bool(po, "stopped", true, &p->stopped, err) < 0)
		return -1;
	json_object *st;
	if (get_field(po, "cuda_state", json_type_string, true, &st, err) < 0)
		return -1;
	p->cuda_state = st ? state_from_name(json_object_get_string(st)) : KC_CUDA_NONE;
	if (p->cuda && p->cuda_state == KC_CUDA_NONE)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "field 'cuda_state' of pid %d is not a CUDA state",
				    (int)p->pid);
	if (get_strv(po, "gpus", &p->gpus, err) < 0)
		return -1;
	if (get_u64(po, "vram_bytes", true, &p->vram_bytes, err) < 0 ||
	    get_double(po, "lock_seconds", true, &p->lock_s, err) < 0 ||
	    get_double(po, "checkpoint_seconds", true, &p->checkpoint_s, err) < 0)
		return -1;
	return 0;
}

static int parse_root(json_object *root, struct kc_manifest *m, struct kc_error **err)
{
	if (!json_object_is_type(root, json_type_object))
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "not a JSON object");
	char *tool = NULL;
	if (get_str(root, "tool", false, &tool, err) < 0)
		return -1;
	bool ours = strcmp(tool, "kcheckpoint") == 0;
	free(tool);
	if (!ours)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "written by another tool");
	long long v = 0;
	if (get_int(root, "format", false, 1, INT_MAX, &v, err) < 0)
		return -1;
	if (v > KC_MANIFEST_FORMAT)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "format %lld is newer than this kcheckpoint (%d)", v,
				    KC_MANIFEST_FORMAT);
	m->format = (int)v;

	json_object *ver;
	if (get_field(root, "versions", json_type_object, false, &ver, err) < 0)
		return -1;
	if (get_str(ver, "kcheckpoint", true, &m->tool_version, err) < 0 ||
	    get_str(ver, "kernel", true, &m->kernel, err) < 0 ||
	    get_str(ver, "driver", true, &m->driver_version, err) < 0 ||
	    get_str(ver, "criu", true, &m->criu_version, err) < 0)
		return -1;
	if (get_int(ver, "cuda_driver", true, 0, INT_MAX, &v, err) < 0)
		return -1;
	m->cuda_driver_version = (int)v;

	if (get_str(root, "host", true, &m->host, err) < 0 || get_str(root, "created", true, &m->created, err) < 0)
		return -1;
	if (get_int(root, "root_pid", false, 1, INT_MAX, &v, err) < 0)
		return -1;
	m->root_pid = (pid_t)v;
	if (get_u64(root, "vram_bytes", true, &m->vram_bytes, err) < 0 ||
	    get_strv(root, "node_gpus", &m->node_gpus, err) < 0)
		return -1;

	json_object *procs;
	if (get_field(root, "processes", json_type_array, false, &procs, err) < 0)
		return -1;
	size_t n = json_object_array_length(procs);
	if (n == 0)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "field 'processes' is empty");
	for (size_t i = 0; i < n; i++)
		if (parse_proc(json_object_array_get_idx(procs, i), m, err) < 0)
			return -1;

	json_object *co;
	if (get_field(root, "criu_options", json_type_object, true, &co, err) < 0)
		return -1;
	if (co && (get_bool(co, "tcp_established", true, &m->tcp_established, err) < 0 ||
		   get_bool(co, "shell_job", true, &m->shell_job, err) < 0 ||
		   get_bool(co, "file_locks", true, &m->file_locks, err) < 0 ||
		   get_bool(co, "tcp_close", true, &m->tcp_close, err) < 0 ||
		   get_bool(co, "link_remap", true, &m->link_remap, err) < 0 ||
		   get_strv(co, "extra", &m->criu_extra, err) < 0))
		return -1;
	if (get_strv(root, "link_remaps", &m->link_remaps, err) < 0)
		return -1;
	for (char **l = m->link_remaps; l && *l; l++)
		if ((*l)[0] != '/' || strstr(*l, "/../") || strstr(*l, "/./"))
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "field 'link_remaps' holds '%s', not a plain absolute path",
					    *l);

	json_object *stages;
	if (get_field(root, "stages", json_type_array, true, &stages, err) < 0)
		return -1;
	size_t ns = stages ? json_object_array_length(stages) : 0;
	for (size_t i = 0; i < ns && m->n_stages < KC_REPORT_MAX_STAGES; i++) {
		json_object *so = json_object_array_get_idx(stages, i);
		if (!json_object_is_type(so, json_type_object))
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "a stage entry is not an object");
		struct kc_stage *s = &m->stages[m->n_stages++];
		json_object *name;
		if (get_field(so, "stage", json_type_string, false, &name, err) < 0 ||
		    get_double(so, "seconds", false, &s->seconds, err) < 0 ||
		    get_u64(so, "bytes", true, &s->bytes, err) < 0)
			return -1;
		snprintf(s->name, sizeof(s->name), "%s", json_object_get_string(name));
	}

	if (get_str(root, "compression", true, &m->compression, err) < 0)
		return -1;
	json_object *members;
	if (get_field(root, "members", json_type_array, true, &members, err) < 0)
		return -1;
	size_t nm = members ? json_object_array_length(members) : 0;
	for (size_t i = 0; i < nm; i++) {
		json_object *mo = json_object_array_get_idx(members, i);
		if (!json_object_is_type(mo, json_type_object))
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "a member entry is not an object");
		_cleanup_free_ char *path = NULL, *sha = NULL;
		uint64_t size;
		if (get_str(mo, "path", false, &path, err) < 0 || get_u64(mo, "size", false, &size, err) < 0 ||
		    get_str(mo, "sha256_tree", false, &sha, err) < 0)
			return -1;
		if (strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "member '%s' has a malformed sha256_tree", path);
		kc_manifest_add_member(m, path, size, sha);
	}
	json_object *ctrd;
	if (get_field(root, "containerd", json_type_object, true, &ctrd, err) < 0)
		return -1;
	if (ctrd)
		m->containerd = json_object_get(ctrd);
	return 0;
}

int kc_manifest_parse(const char *json, size_t len, struct kc_manifest *m, struct kc_error **err)
{
	kc_manifest_init(m);
	if (len > INT_MAX)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "manifest is too large");
	json_tokener *tok = json_tokener_new();
	json_object *root = json_tokener_parse_ex(tok, json, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t consumed = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!root || jerr != json_tokener_success) {
		if (root)
			json_object_put(root);
		kc_error_set(err, KC_EXIT_IMAGE, 0, "not valid JSON: %s",
			     json_tokener_error_desc(jerr == json_tokener_success ? json_tokener_continue : jerr));
		return kc_error_prefix(err, "malformed manifest");
	}
	while (consumed < len && strchr(" \t\r\n", json[consumed]))
		consumed++;
	int r = 0;
	if (consumed != len)
		r = kc_error_set(err, KC_EXIT_IMAGE, 0, "manifest has trailing data");
	else
		r = parse_root(root, m, err);
	json_object_put(root);
	if (r < 0) {
		kc_manifest_free(m);
		return kc_error_prefix(err, "malformed manifest");
	}
	return 0;
}

int kc_manifest_write(const struct kc_manifest *m, const char *dir, struct kc_error **err)
{
	_cleanup_free_ char *s = kc_manifest_to_string(m);
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, KC_MANIFEST_NAME);
	size_t len = strlen(s);
	s[len] = '\n'; /* replaces the NUL: write len + 1 bytes */
	/* no fsync: the images beside it are in the page cache too (as CRIU
	 * leaves them), and with gigabytes of them dirty an fsync here took
	 * 0.5-1.1 s of a 24 GiB dump on the H200 (runs 19-22); an archive is
	 * what goes to the disk before the dumped tree is ended */
	return kc_write_file_replace(path, s, len + 1, 0600, err);
}

int kc_manifest_read(const char *dir, struct kc_manifest *m, struct kc_error **err)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, KC_MANIFEST_NAME);
	_cleanup_free_ char *buf = NULL;
	size_t len;
	kc_manifest_init(m);
	struct kc_error *e = NULL;
	if (kc_read_file(path, &buf, &len, &e) < 0) {
		if (e->exit_code == KC_EXIT_NOENT) {
			kc_error_free(e);
			return kc_error_set(err, KC_EXIT_IMAGE, ENOENT,
					    "'%s' is not a kcheckpoint image: no '%s' in it", dir, KC_MANIFEST_NAME);
		}
		kc_error_propagate(err, e);
		return -1;
	}
	if (kc_manifest_parse(buf, len, m, err) < 0)
		return kc_error_prefix(err, "'%s'", path);
	return 0;
}
