/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kc/error.h"
#include "kc/alloc.h"

/* fmt is the caller's literal, checked where kc_error_set is called */
__attribute__((format(printf, 5, 0))) static int error_vset(struct kc_error **err, int exit_code, int cause,
							    const char *suffix, const char *fmt, va_list ap)
{
	if (!err || *err)
		return -1;
	char *msg = NULL;
	if (vasprintf(&msg, fmt, ap) < 0)
		abort();
	if (suffix) {
		char *full = kc_xasprintf("%s: %s", msg, suffix);
		free(msg);
		msg = full;
	}
	struct kc_error *e = kc_xcalloc(1, sizeof(*e));
	e->exit_code = exit_code;
	e->cause = cause;
	e->msg = msg;
	*err = e;
	return -1;
}

int kc_error_set(struct kc_error **err, int exit_code, int cause, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_vset(err, exit_code, cause, NULL, fmt, ap);
	va_end(ap);
	return -1;
}

int kc_error_errno(struct kc_error **err, int exit_code, int errno_value, const char *fmt, ...)
{
	va_list ap;
	char buf[128];
	const char *s = strerror_r(errno_value, buf, sizeof(buf));
	char lower[128];
	/* strerror says "No such file"; git style wants lowercase */
	snprintf(lower, sizeof(lower), "%s", s);
	if (lower[0] >= 'A' && lower[0] <= 'Z' && !(lower[1] >= 'A' && lower[1] <= 'Z'))
		lower[0] = (char)(lower[0] - 'A' + 'a');
	va_start(ap, fmt);
	error_vset(err, exit_code, errno_value, lower, fmt, ap);
	va_end(ap);
	return -1;
}

__attribute__((format(printf, 1, 0))) static char *vformat(const char *fmt, va_list ap)
{
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	return s;
}

int kc_error_prefix(struct kc_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	char *prefix = vformat(fmt, ap);
	va_end(ap);
	char *full = kc_xasprintf("%s: %s", prefix, (*err)->msg);
	free(prefix);
	free((*err)->msg);
	(*err)->msg = full;
	return -1;
}

int kc_error_set_hint(struct kc_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	char *hint = vformat(fmt, ap);
	va_end(ap);
	if (!strstr((*err)->msg, hint)) {
		char *full = kc_xasprintf("%s; %s", (*err)->msg, hint);
		free((*err)->msg);
		(*err)->msg = full;
	}
	free(hint);
	return -1;
}

void kc_error_propagate(struct kc_error **dst, struct kc_error *src)
{
	if (!src)
		return;
	if (dst && !*dst)
		*dst = src;
	else
		kc_error_free(src);
}

void kc_error_free(struct kc_error *e)
{
	if (!e)
		return;
	free(e->msg);
	free(e);
}

void kc_error_freep(struct kc_error **e)
{
	kc_error_free(*e);
	*e = NULL;
}

int kc_error_append(struct kc_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	char *more = vformat(fmt, ap);
	va_end(ap);
	char *full = kc_xasprintf("%s; %s", (*err)->msg, more);
	free(more);
	free((*err)->msg);
	(*err)->msg = full;
	return -1;
}
