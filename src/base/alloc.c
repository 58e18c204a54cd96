/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation and cleanup helpers: the bottom of src/base, needing nothing
 * else of the project (error.c builds its messages with them). */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kc/alloc.h"

void kc_freep(void *p)
{
	free(*(void **)p);
}

void kc_closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

void kc_fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

void kc_closedirp(void *d)
{
	DIR **dp = d;
	if (*dp)
		closedir(*dp);
}

void kc_strvfreep(char ***v)
{
	kc_strv_free(*v);
}

void *kc_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		abort();
	return p;
}

void *kc_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		abort();
	return p;
}

void *kc_xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		abort();
	return p;
}

char *kc_xstrdup(const char *s)
{
	char *p = strdup(s ? s : "");
	if (!p)
		abort();
	return p;
}

char *kc_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		abort();
	return s;
}

void kc_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

size_t kc_strv_len(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}
