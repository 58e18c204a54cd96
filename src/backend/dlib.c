/* SPDX-License-Identifier: Apache-2.0 */
/* Loading the NVIDIA libraries at run time, shared by cuda.c and nvml.c. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "dlib.h"

/* dlerror() repeats the name we asked for; keep only what it adds. */
static const char *dl_reason(const char *name)
{
	const char *e = dlerror();
	if (!e)
		return "unknown error";
	size_t n = strlen(name);
	if (strncmp(e, name, n) == 0 && e[n] == ':' && e[n + 1] == ' ')
		return e + n + 2;
	return e;
}

void *kc_dl_open(const char *path, const char *env, const char *dflt, const char **name,
		 struct kc_error **err)
{
	const char *n = path && *path ? path : getenv(env);
	if (!n || !*n)
		n = dflt;
	*name = n;
	void *dl = dlopen(n, RTLD_NOW | RTLD_LOCAL);
	if (!dl)
		kc_error_set(err, KC_EXIT_NOENT, 0, "cannot load '%s': %s", n, dl_reason(n));
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
