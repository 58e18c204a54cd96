/* SPDX-License-Identifier: Apache-2.0 */
/* Loading the NVIDIA libraries at run time, shared by cuda.c and nvml.c. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlib.h"

/* dlerror() repeats the name we asked for; keep only what it adds,
 * lowercased like the rest of our messages. */
static void dl_reason(const char *name, char *buf, size_t len)
{
	const char *e = dlerror();
	if (!e)
		e = "unknown error";
	size_t n = strlen(name);
	if (strncmp(e, name, n) == 0 && e[n] == ':' && e[n + 1] == ' ')
		e += n + 2;
	snprintf(buf, len, "%s", e);
	for (char *p = buf; *p && *p != ':'; p++)
		if (*p >= 'A' && *p <= 'Z' && !(p[1] >= 'A' && p[1] <= 'Z'))
			*p = (char)(*p - 'A' + 'a');
	/* "...: No such file" after the colon as well */
	for (char *p = strstr(buf, ": "); p; p = strstr(p + 2, ": "))
		if (p[2] >= 'A' && p[2] <= 'Z' && !(p[3] >= 'A' && p[3] <= 'Z'))
			p[2] = (char)(p[2] - 'A' + 'a');
}

void *kc_dl_open(const char *path, const char *env, const char *dflt, const char **name,
		 struct kc_error **err)
{
	const char *n = path && *path ? path : getenv(env);
	if (!n || !*n)
		n = dflt;
	*name = n;
	void *dl = dlopen(n, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		char why[512];
		dl_reason(n, why, sizeof(why));
		kc_error_set(err, KC_EXIT_NOENT, 0, "cannot load '%s': %s", n, why);
	}
	return dl;
}

int kc_dl_resolve(void *dl, const struct kc_dl_sym *syms, size_t n, void *table)
{
	for (size_t i = 0; i < n; i++) {
		void *sym = dlsym(dl, syms[i].name);
		if (!sym && !syms[i].optional)
			return (int)i;
		/* POSIX guarantees data and function pointers convert */
		memcpy((char *)table + syms[i].offset, &sym, sizeof(sym));
	}
	return -1;
}
