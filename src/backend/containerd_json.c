/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd.json: what restore needs to recreate a dumped container.
 * Readable where it can be (spec as JSON, labels), base64 for protobuf
 * blobs that only containerd interprets (runtime options, extensions).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "containerd_int.h"
#include "kc/containerd.h"
#include "kc/util.h"

/* ---- base64 --------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *kc_ctrd_base64_encode(const uint8_t *data, size_t len)
{
	char *out = kc_xmalloc((len + 2) / 3 * 4 + 1);
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)data[i + 1] << 8;
		if (i + 2 < len)
			v |= data[i + 2];
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
		out[o++] = i + 2 < len ? b64[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static int b64val(char c)
{
	const char *p = c ? strchr(b64, c) : NULL;
	return p ? (int)(p - b64) : -1;
}

int kc_ctrd_base64_decode(const char *s, uint8_t **out, size_t *len)
{
	size_t n = strlen(s);
	if (n % 4)
		return -1;
	uint8_t *buf = kc_xmalloc(n / 4 * 3 + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			if (s[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad || (v[k] = b64val(s[i + k])) < 0) {
				free(buf);
				return -1;
			}
		}
		uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		buf[o++] = (uint8_t)(x >> 16);
		if (pad < 2)
			buf[o++] = (uint8_t)(x >> 8);
		if (pad < 1)
			buf[o++] = (uint8_t)x;
	}
	*out = buf;
	*len = o;
	return 0;
}

/* ---- writing -------------------------------------------------------- */

static json_object *jstr(const char *s)
{
	return json_object_new_string(s ? s : "");
}

static json_object *any_json(const Kc__Types__Any *a)
{
	if (!a)
		return NULL;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "type_url", jstr(a->type_url));
	_cleanup_free_ char *v = kc_ctrd_base64_encode(a->value.data, a->value.len);
	json_object_object_add(o, "value", jstr(v));
	return o;
}

char *kc_ctrd_saved_json(const struct kc_ctrd_dumpinfo *d)
{
	const Kc__Containers__Container *ct = d->container;
	json_object *o = json_object_new_object();
	json_object_object_add(o, "format", json_object_new_int(KC_CTRD_JSON_FORMAT));
	json_object_object_add(o, "id", jstr(ct->id));
	json_object_object_add(o, "namespace", jstr(d->ns));
	json_object_object_add(o, "containerd_version", jstr(d->containerd_version));
	json_object_object_add(o, "image", jstr(ct->image));

	json_object *labels = json_object_new_object();
	for (size_t i = 0; i < ct->n_labels; i++)
		json_object_object_add(labels, ct->labels[i]->key, jstr(ct->labels[i]->value));
	json_object_object_add(o, "labels", labels);

	json_object *rt = json_object_new_object();
	json_object_object_add(rt, "name", jstr(ct->runtime ? ct->runtime->name : NULL));
	json_object_object_add(rt, "options", ct->runtime ? any_json(ct->runtime->options) : NULL);
	json_object_object_add(o, "runtime", rt);

	json_object *spec = json_object_new_object();
	if (ct->spec) {
		json_object_object_add(spec, "type_url", jstr(ct->spec->type_url));
		json_tokener *tok = json_tokener_new();
		json_object *sj = json_tokener_parse_ex(tok, (const char *)ct->spec->value.data,
							(int)ct->spec->value.len);
		bool whole = sj && json_tokener_get_error(tok) == json_tokener_success &&
			     json_tokener_get_parse_end(tok) == ct->spec->value.len;
		json_tokener_free(tok);
		if (whole) {
			json_object_object_add(spec, "json", sj);
		} else {
			json_object_put(sj);
			_cleanup_free_ char *v =
				kc_ctrd_base64_encode(ct->spec->value.data, ct->spec->value.len);
			json_object_object_add(spec, "base64", jstr(v));
		}
	}
	json_object_object_add(o, "spec", spec);

	json_object_object_add(o, "snapshotter", jstr(ct->snapshotter));
	json_object_object_add(o, "snapshot_key", jstr(ct->snapshot_key));
	json_object_object_add(o, "snapshot_parent", jstr(d->snapshot_parent));
	json_object_object_add(o, "sandbox", jstr(ct->sandbox));

	json_object *ext = json_object_new_object();
	for (size_t i = 0; i < ct->n_extensions; i++)
		json_object_object_add(ext, ct->extensions[i]->key, any_json(ct->extensions[i]->value));
	json_object_object_add(o, "extensions", ext);

	json_object *task = json_object_new_object();
	if (d->task) {
		json_object_object_add(task, "pid", json_object_new_int((int)d->task->pid));
		json_object_object_add(task, "stdout", jstr(d->task->stdout));
		json_object_object_add(task, "stderr", jstr(d->task->stderr));
		json_object_object_add(task, "terminal", json_object_new_boolean(d->task->terminal));
	}
	json_object_object_add(o, "task", task);

	json_object *procs = json_object_new_array();
	for (size_t i = 0; i < d->n_procs; i++) {
		json_object *p = json_object_new_object();
		json_object_object_add(p, "pid", json_object_new_int(d->procs[i].pid));
		json_object_object_add(p, "ns_pid", json_object_new_int(d->procs[i].ns_pid));
		json_object_array_add(procs, p);
	}
	json_object_object_add(o, "processes", procs);

	if (d->rw && d->rw->file) {
		json_object *rw = json_object_new_object();
		json_object_object_add(rw, "file", jstr(d->rw->file));
		json_object_object_add(rw, "media_type", jstr(d->rw->media_type));
		json_object_object_add(rw, "digest", jstr(d->rw->digest));
		json_object_object_add(rw, "size", json_object_new_int64(d->rw->size));
		json_object_object_add(o, "rw_layer", rw);
	}

	char *s = kc_xstrdup(json_object_to_json_string_ext(
		o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

int kc_ctrd_saved_write(const struct kc_ctrd_dumpinfo *d, const char *dir, struct kc_error **err)
{
	_cleanup_free_ char *text = kc_ctrd_saved_json(d);
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, KC_CONTAINERD_JSON);
	_cleanup_free_ char *with_nl = kc_xasprintf("%s\n", text);
	return kc_write_file_atomic(path, with_nl, strlen(with_nl), 0600, err);
}

/* ---- reading -------------------------------------------------------- */

void kc_ctrd_saved_free(struct kc_ctrd_saved *s)
{
	if (!s)
		return;
	free(s->id);
	free(s->ns);
	free(s->image);
	free(s->snapshotter);
	free(s->snapshot_key);
	free(s->snapshot_parent);
	free(s->runtime_name);
	if (s->runtime_options) {
		free(s->runtime_options->type_url);
		free(s->runtime_options->value.data);
		free(s->runtime_options);
	}
	free(s->spec_type_url);
	free(s->spec);
	free(s->sandbox);
	for (size_t i = 0; i < s->n_labels; i++) {
		free(s->labels[i]->key);
		free(s->labels[i]->value);
		free(s->labels[i]);
	}
	free(s->labels);
	for (size_t i = 0; i < s->n_extensions; i++) {
		Kc__Containers__Container__ExtensionsEntry *e = s->extensions[i];
		free(e->key);
		if (e->value) {
			free(e->value->type_url);
			free(e->value->value.data);
			free(e->value);
		}
		free(e);
	}
	free(s->extensions);
	free(s->task_stdout);
	free(s->task_stderr);
	free(s->procs);
	kc_ctrd_rw_clear(&s->rw);
	free(s);
}

static int bad(struct kc_error **err, const char *what)
{
	return kc_error_set(err, KC_EXIT_IMAGE, 0, "malformed %s: %s", KC_CONTAINERD_JSON, what);
}

/* Optional string member; NULL-safe. -1 when present with the wrong type. */
static int get_str(json_object *o, const char *key, char **out)
{
	json_object *v;
	*out = NULL;
	if (!o || !json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return -1;
	*out = kc_xstrdup(json_object_get_string(v));
	return 0;
}

static int get_any(json_object *o, Kc__Types__Any **out)
{
	*out = NULL;
	if (!o || json_object_is_type(o, json_type_null))
		return 0;
	if (!json_object_is_type(o, json_type_object))
		return -1;
	_cleanup_free_ char *url = NULL, *val = NULL;
	if (get_str(o, "type_url", &url) < 0 || get_str(o, "value", &val) < 0 || !url)
		return -1;
	Kc__Types__Any *a = kc_xcalloc(1, sizeof(*a));
	kc__types__any__init(a);
	if (val && kc_ctrd_base64_decode(val, &a->value.data, &a->value.len) < 0) {
		free(a);
		return -1;
	}
	a->type_url = steal_ptr(url);
	*out = a;
	return 0;
}

int kc_ctrd_saved_parse(const char *json, size_t len, struct kc_ctrd_saved **out,
			struct kc_error **err)
{
	json_tokener *tok = json_tokener_new();
	json_object *root = json_tokener_parse_ex(tok, json, (int)len);
	bool ok = root && json_tokener_get_error(tok) == json_tokener_success;
	json_tokener_free(tok);
	if (!ok || !json_object_is_type(root, json_type_object)) {
		json_object_put(root);
		return bad(err, "not a JSON object");
	}

	struct kc_ctrd_saved *s = kc_xcalloc(1, sizeof(*s));
	json_object *v, *rt = NULL, *spec = NULL;
	int rc = -1;

	if (!json_object_object_get_ex(root, "format", &v) || !json_object_is_type(v, json_type_int)) {
		bad(err, "no format");
		goto out;
	}
	s->format = json_object_get_int(v);
	if (s->format != KC_CTRD_JSON_FORMAT) {
		kc_error_set(err, KC_EXIT_IMAGE, 0, "%s has format %d; this kcheckpoint reads %d",
			     KC_CONTAINERD_JSON, s->format, KC_CTRD_JSON_FORMAT);
		goto out;
	}
	if (get_str(root, "id", &s->id) < 0 || !s->id || get_str(root, "namespace", &s->ns) < 0 ||
	    get_str(root, "image", &s->image) < 0 || get_str(root, "snapshotter", &s->snapshotter) < 0 ||
	    get_str(root, "snapshot_key", &s->snapshot_key) < 0 ||
	    get_str(root, "snapshot_parent", &s->snapshot_parent) < 0 ||
	    get_str(root, "sandbox", &s->sandbox) < 0) {
		bad(err, "bad container fields");
		goto out;
	}
	if (s->snapshot_key && *s->snapshot_key && (!s->snapshotter || !*s->snapshotter)) {
		bad(err, "snapshot without snapshotter");
		goto out;
	}

	if (!json_object_object_get_ex(root, "runtime", &rt) ||
	    !json_object_is_type(rt, json_type_object) || get_str(rt, "name", &s->runtime_name) < 0 ||
	    !s->runtime_name) {
		bad(err, "no runtime");
		goto out;
	}
	if (json_object_object_get_ex(rt, "options", &v) && get_any(v, &s->runtime_options) < 0) {
		bad(err, "bad runtime options");
		goto out;
	}

	if (!json_object_object_get_ex(root, "spec", &spec) ||
	    !json_object_is_type(spec, json_type_object) ||
	    get_str(spec, "type_url", &s->spec_type_url) < 0 || !s->spec_type_url) {
		bad(err, "no spec");
		goto out;
	}
	if (json_object_object_get_ex(spec, "json", &v)) {
		s->spec = kc_xstrdup(json_object_to_json_string_ext(
			v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	} else {
		_cleanup_free_ char *b = NULL;
		uint8_t *raw = NULL;
		size_t rlen = 0;
		if (get_str(spec, "base64", &b) < 0 || !b ||
		    kc_ctrd_base64_decode(b, &raw, &rlen) < 0) {
			bad(err, "bad spec");
			goto out;
		}
		s->spec = kc_xrealloc(raw, rlen + 1);
		s->spec[rlen] = '\0';
	}

	if (json_object_object_get_ex(root, "labels", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_object)) {
			bad(err, "bad labels");
			goto out;
		}
		s->labels = kc_xcalloc((size_t)json_object_object_length(v) + 1, sizeof(*s->labels));
		json_object_object_foreach(v, key, val)
		{
			if (!json_object_is_type(val, json_type_string)) {
				bad(err, "bad label");
				goto out;
			}
			Kc__Containers__Container__LabelsEntry *e = kc_xcalloc(1, sizeof(*e));
			kc__containers__container__labels_entry__init(e);
			e->key = kc_xstrdup(key);
			e->value = kc_xstrdup(json_object_get_string(val));
			s->labels[s->n_labels++] = e;
		}
	}

	if (json_object_object_get_ex(root, "extensions", &v) &&
	    !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_object)) {
			bad(err, "bad extensions");
			goto out;
		}
		s->extensions =
			kc_xcalloc((size_t)json_object_object_length(v) + 1, sizeof(*s->extensions));
		json_object_object_foreach(v, key, val)
		{
			Kc__Types__Any *a = NULL;
			if (get_any(val, &a) < 0 || !a) {
				bad(err, "bad extension");
				goto out;
			}
			Kc__Containers__Container__ExtensionsEntry *e = kc_xcalloc(1, sizeof(*e));
			kc__containers__container__extensions_entry__init(e);
			e->key = kc_xstrdup(key);
			e->value = a;
			s->extensions[s->n_extensions++] = e;
		}
	}

	json_object *task;
	if (json_object_object_get_ex(root, "task", &task) && json_object_is_type(task, json_type_object)) {
		if (get_str(task, "stdout", &s->task_stdout) < 0 ||
		    get_str(task, "stderr", &s->task_stderr) < 0) {
			bad(err, "bad task");
			goto out;
		}
		if (json_object_object_get_ex(task, "pid", &v) && json_object_is_type(v, json_type_int))
			s->task_pid = json_object_get_int(v);
	}

	if (json_object_object_get_ex(root, "processes", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_array)) {
			bad(err, "bad processes");
			goto out;
		}
		size_t n = json_object_array_length(v);
		s->procs = kc_xcalloc(n + 1, sizeof(*s->procs));
		for (size_t i = 0; i < n; i++) {
			json_object *p = json_object_array_get_idx(v, i), *pid, *nspid;
			if (!json_object_is_type(p, json_type_object) ||
			    !json_object_object_get_ex(p, "pid", &pid) ||
			    !json_object_object_get_ex(p, "ns_pid", &nspid) ||
			    !json_object_is_type(pid, json_type_int) ||
			    !json_object_is_type(nspid, json_type_int)) {
				bad(err, "bad process entry");
				goto out;
			}
			s->procs[s->n_procs].pid = json_object_get_int(pid);
			s->procs[s->n_procs++].ns_pid = json_object_get_int(nspid);
		}
	}

	json_object *rw;
	if (json_object_object_get_ex(root, "rw_layer", &rw) && !json_object_is_type(rw, json_type_null)) {
		if (!json_object_is_type(rw, json_type_object) || get_str(rw, "file", &s->rw.file) < 0 ||
		    get_str(rw, "media_type", &s->rw.media_type) < 0 ||
		    get_str(rw, "digest", &s->rw.digest) < 0 || !s->rw.file || !s->rw.digest ||
		    !s->rw.media_type || !json_object_object_get_ex(rw, "size", &v) ||
		    !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
		    strchr(s->rw.file, '/') || s->rw.file[0] == '.' || !s->rw.file[0]) {
			bad(err, "bad rw_layer");
			goto out;
		}
		s->rw.size = json_object_get_int64(v);
	}

	*out = s;
	s = NULL;
	rc = 0;
out:
	kc_ctrd_saved_free(s);
	json_object_put(root);
	return rc;
}

int kc_ctrd_saved_read(const char *dir, struct kc_ctrd_saved **out, struct kc_error **err)
{
	_cleanup_free_ char *path = kc_xasprintf("%s/%s", dir, KC_CONTAINERD_JSON);
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	struct kc_error *e = NULL;
	if (kc_read_file(path, &text, &len, &e) < 0) {
		bool missing = e->cause == ENOENT;
		if (missing) {
			kc_error_free(e);
			return kc_error_set(err, KC_EXIT_IMAGE, ENOENT,
					    "'%s' has no %s: it was not dumped with --containerd", dir,
					    KC_CONTAINERD_JSON);
		}
		kc_error_propagate(err, e);
		(*err)->exit_code = KC_EXIT_IMAGE;
		return -1;
	}
	return kc_ctrd_saved_parse(text, len, out, err);
}

/* ---- the spec for a new id ----------------------------------------- */

char *kc_ctrd_spec_for(const struct kc_ctrd_saved *s, const char *new_id)
{
	if (!s->id || strcmp(s->id, new_id) == 0)
		return kc_xstrdup(s->spec);
	json_object *root = json_tokener_parse(s->spec);
	json_object *linux_, *cg;
	if (!root || !json_object_object_get_ex(root, "linux", &linux_) ||
	    !json_object_object_get_ex(linux_, "cgroupsPath", &cg) ||
	    !json_object_is_type(cg, json_type_string)) {
		json_object_put(root);
		return kc_xstrdup(s->spec);
	}
	const char *path = json_object_get_string(cg);
	size_t pl = strlen(path), il = strlen(s->id);
	if (pl > il && strcmp(path + pl - il, s->id) == 0 &&
	    (path[pl - il - 1] == '/' || path[pl - il - 1] == ':')) {
		_cleanup_free_ char *np = kc_xasprintf("%.*s%s", (int)(pl - il), path, new_id);
		json_object_object_add(linux_, "cgroupsPath", json_object_new_string(np));
	}
	char *out = kc_xstrdup(json_object_to_json_string_ext(
		root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
	return out;
}
