/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kc/thp.h"
#include "kc/util.h"

/* Tests point this at a file of their own. */
static const char *thp_path(void)
{
	const char *p = getenv("KCHECKPOINT_THP_PATH");
	return p && *p ? p : "/sys/kernel/mm/transparent_hugepage/enabled";
}

int kc_thp_get(char *mode, size_t len, struct kc_error **err)
{
	_cleanup_free_ char *s = NULL;
	if (kc_read_file(thp_path(), &s, NULL, err) < 0)
		return kc_error_prefix(err, "transparent huge pages");
	/* "always [madvise] never": the bracketed one is in force; a plain
	 * word (a test's stand-in file after a write) is the mode itself */
	char *l = strchr(s, '['), *r = l ? strchr(l, ']') : NULL;
	if (!l) {
		l = s - 1;
		r = s + strcspn(s, " \n");
	}
	if (!r || r == l + 1 || (size_t)(r - l - 1) >= len)
		return kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot parse '%s'", thp_path());
	memcpy(mode, l + 1, (size_t)(r - l - 1));
	mode[r - l - 1] = '\0';
	return 0;
}

static int thp_write(const char *mode, struct kc_error **err)
{
	_cleanup_close_ int fd = open(thp_path(), O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return kc_error_errno(err, errno == EACCES || errno == EROFS ? KC_EXIT_PERM : KC_EXIT_FAILURE, errno,
				      "cannot open '%s'", thp_path());
	if (write(fd, mode, strlen(mode)) < 0)
		return kc_error_errno(err, errno == EINVAL ? KC_EXIT_USAGE : KC_EXIT_FAILURE, errno,
				      "cannot set transparent huge pages to '%s'", mode);
	return 0;
}

int kc_thp_set(const char *mode, char *old, size_t len, struct kc_error **err)
{
	old[0] = '\0';
	if (strcmp(mode, "always") && strcmp(mode, "madvise") && strcmp(mode, "never"))
		return kc_error_set(err, KC_EXIT_USAGE, 0, "'--thp %s': want always, madvise or never", mode);
	char cur[16];
	if (kc_thp_get(cur, sizeof(cur), err) < 0)
		return -1;
	if (strcmp(cur, mode) == 0)
		return 0;
	if (thp_write(mode, err) < 0)
		return -1;
	snprintf(old, len, "%s", cur);
	return 0;
}

void kc_thp_put_back(char *old)
{
	if (old && old[0])
		thp_write(old, NULL);
	if (old)
		old[0] = '\0';
}
