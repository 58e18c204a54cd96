/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CPU stage: runs the criu binary.
 *
 * We fork/exec criu instead of linking libcriu (or talking RPC to a
 * `criu swrk` we would have to ship) because:
 *  - the user picks the binary with --criu / $KCHECKPOINT_CRIU, e.g. a
 *    build that matches their kernel, and nothing has to be rebuilt;
 *  - any CRIU >= 4.1 already on the node works: the command line is
 *    CRIU's most stable interface, libcriu's ABI and RPC protos are not
 *    something we want to be coupled to;
 *  - CRIU's logs land next to the images (criu-dump.log, criu-restore.log)
 *    where a bug report will pick them up;
 *  - CRIU runs with all its privileges and quirks in its own process, so a
 *    crash there cannot take down the tool that has to roll back.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kc/criu.h"
#include "kc/util.h"
#include "kc/version.h"

/* Enough for `criu check` chatter; CRIU's real logs go to files. */
#define OUTPUT_MAX (1024 * 1024)

extern char **environ;

struct argv_builder {
	char **v;
	size_t n, cap;
};

static void argv_add(struct argv_builder *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void argv_add(struct argv_builder *a, const char *fmt, ...)
{
	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 16;
		a->v = kc_xrealloc(a->v, a->cap * sizeof(*a->v));
	}
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&a->v[a->n], fmt, ap) < 0)
		abort();
	va_end(ap);
	a->v[++a->n] = NULL;
}

static const char *criu_path(const struct kc_criu_opts *o)
{
	if (o && o->criu_path && *o->criu_path)
		return o->criu_path;
	const char *env = getenv("KCHECKPOINT_CRIU");
	if (env && *env)
		return env;
	return "criu";
}

const char *kc_criu_plugin_dir(void)
{
	static char dir[PATH_MAX];
	const char *env = getenv("KCHECKPOINT_CRIU_LIBDIR");
	if (env) {
		/* a dir without our plugin is no plugin dir: trees that need it
		 * are then refused before anything is frozen */
		char probe[PATH_MAX];
		if (!*env || snprintf(probe, sizeof(probe), "%s/" KC_CRIU_PLUGIN_NAME, env) >= (int)sizeof(probe) ||
		    access(probe, R_OK) < 0 || !realpath(env, dir))
			return NULL;
		return dir;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	/* installed or bundled, then a build tree */
	const char *rel[] = {KC_CRIU_LIBDIR_REL, "criu-plugins"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(rel); i++) {
		char probe[PATH_MAX];
		if (snprintf(probe, sizeof(probe), "%s/%s/" KC_CRIU_PLUGIN_NAME, exe, rel[i]) >= (int)sizeof(probe))
			continue;
		if (access(probe, R_OK) == 0 && realpath(probe, dir)) {
			*strrchr(dir, '/') = '\0';
			return dir;
		}
	}
	return NULL;
}

static void add_common_flags(struct argv_builder *a, const struct kc_criu_opts *o)
{
	if (o->tcp_established)
		argv_add(a, "--tcp-established");
	if (o->tcp_close)
		argv_add(a, "--tcp-close");
	if (o->shell_job)
		argv_add(a, "--shell-job");
	if (o->file_locks)
		argv_add(a, "--file-locks");
	if (o->link_remap)
		argv_add(a, "--link-remap");
	if (o->libdir) {
		argv_add(a, "--libdir");
		argv_add(a, "%s", o->libdir);
	}
	for (char *const *x = o->extra; x && *x; x++)
		argv_add(a, "%s", *x);
}

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* CRIU's "(00.028777) " timing prefix says nothing to a user. */
static char *strip_timestamp(char *s)
{
	if (*s != '(')
		return s;
	char *p = s + 1;
	while ((*p >= '0' && *p <= '9') || *p == '.')
		p++;
	if (*p != ')' || p == s + 1)
		return s;
	return trim(p + 1);
}

/* "Dumping FAILED." repeats what our own message already says; CRIU
 * logs its failure to raise RLIMIT_NOFILE in every run, also the good
 * ones (it carries on with the limit it has). */
static bool is_boilerplate(const char *line)
{
	size_t n = strlen(line);
	return (n >= 7 && !strcmp(line + n - 7, "FAILED.")) || strstr(line, "rlimit: Can't setup RLIMIT_NOFILE");
}

static char *text_tail(char *text, int max_lines)
{
	if (max_lines <= 0)
		return NULL;
	size_t n_lines = 0, cap = 64;
	_cleanup_free_ char **lines = kc_xmalloc(cap * sizeof(*lines));
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		l = strip_timestamp(trim(l));
		if (!*l)
			continue;
		if (n_lines == cap) {
			cap *= 2;
			lines = kc_xrealloc(lines, cap * sizeof(*lines));
		}
		lines[n_lines++] = l;
	}

	size_t n_errors = 0;
	for (size_t i = 0; i < n_lines; i++)
		if (strstr(lines[i], "Error") && !is_boilerplate(lines[i]))
			lines[n_errors++] = lines[i];
	if (n_errors)
		n_lines = n_errors;
	if (!n_lines)
		return NULL;

	size_t first = n_lines > (size_t)max_lines ? n_lines - (size_t)max_lines : 0;
	size_t len = 1;
	for (size_t i = first; i < n_lines; i++)
		len += strlen(lines[i]) + 2;
	char *out = kc_xmalloc(len);
	char *p = out;
	for (size_t i = first; i < n_lines; i++) {
		if (i > first) {
			memcpy(p, "; ", 2);
			p += 2;
		}
		size_t l = strlen(lines[i]);
		memcpy(p, lines[i], l);
		p += l;
	}
	*p = '\0';
	return out;
}

char *kc_criu_log_tail(const char *log_path, int max_lines)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_error_ struct kc_error *err = NULL;
	if (kc_read_file(log_path, &text, NULL, &err) < 0)
		return NULL;
	return text_tail(text, max_lines);
}

static int spawn_error(struct kc_error **err, int e, const char *path)
{
	int code = e == ENOENT ? KC_EXIT_NOENT : e == EACCES || e == EPERM ? KC_EXIT_PERM : KC_EXIT_CRIU;
	return kc_error_errno(err, code, e, "cannot run '%s'", path);
}

/*
 * CRIU's environment: ours, without the variables our CRIU patches read
 * (one inherited from a shell would have CRIU leave memory out that this
 * kcheckpoint does not read: an image silently without it), plus vars
 * (a NULL-terminated list, taken; NULL for none).
 */
static char **criu_env(char **vars)
{
	static const char *const ours[] = {"KCHECKPOINT_BULK_MIN=", "KCHECKPOINT_BULK_HUGE=", "KCHECKPOINT_BULK_UFFD=",
					   "KCHECKPOINT_BULK_RUNS="};
	size_t n = kc_strv_len(environ), k = 0;
	char **envp = kc_xcalloc(n + kc_strv_len(vars) + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		bool drop = false;
		for (size_t j = 0; j < KC_ARRAY_SIZE(ours) && !drop; j++)
			drop = strncmp(environ[i], ours[j], strlen(ours[j])) == 0;
		if (!drop)
			envp[k++] = kc_xstrdup(environ[i]);
	}
	for (size_t i = 0; vars && vars[i]; i++)
		envp[k++] = vars[i];
	free(vars);
	return envp;
}

/*
 * Runs criu with stdout and stderr captured into *output (may be NULL) and
 * its wait status in *wstatus.
 *
 * CRIU gets its own process group so that a ^C on the terminal reaches
 * only us: interrupting CRIU halfway through a dump or restore would leave
 * a tree we cannot reason about, while we can roll back cleanly once it
 * returns.  The exception is keep_stdin, for a --shell-job restore: CRIU
 * hands its stdin terminal to the restored tree and makes its parent's
 * group the terminal's foreground group, which only works from our own,
 * foreground, group.  vars: see criu_env.
 */
static int run_criu(char **argv, char **vars, bool keep_stdin, char **output, int *wstatus, struct kc_error **err)
{
	_cleanup_strv_ char **envp = criu_env(vars);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create pipe");
	_cleanup_close_ int rd = p[0];
	_cleanup_close_ int wr = p[1];

	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_init(&fa);
	if (!keep_stdin)
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, wr, 1);
	posix_spawn_file_actions_adddup2(&fa, wr, 2);
	/* Our other descriptors (archives, sockets of other backends) must
	 * not end up in CRIU, which would otherwise carry them along. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);

	/* The tool may block or catch signals for its own handling; CRIU must
	 * start with a clean slate. */
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	sigdelset(&all, SIGKILL);
	sigdelset(&all, SIGSTOP);
	posix_spawnattr_init(&attr);
	short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
	if (!keep_stdin)
		flags |= POSIX_SPAWN_SETPGROUP;
	posix_spawnattr_setflags(&attr, flags);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);

	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r != 0)
		return spawn_error(err, r, argv[0]);
	close(steal_fd(wr));

	/*
	 * Read until EOF, but do not trust EOF alone: whatever CRIU forks
	 * (the restored tree, briefly) starts with its descriptors, so we
	 * also stop once CRIU itself has exited and the pipe is drained.
	 */
	size_t len = 0, cap = 4096;
	_cleanup_free_ char *buf = kc_xmalloc(cap + 1);
	bool exited = false, eof = false;
	int status = 0;
	while (!eof) {
		struct pollfd pfd = { .fd = rd, .events = POLLIN };
		int n = poll(&pfd, 1, exited ? 0 : 100);
		if (n < 0 && errno != EINTR)
			break;
		if (n > 0) {
			if (len == cap && cap < OUTPUT_MAX) {
				cap *= 2;
				buf = kc_xrealloc(buf, cap + 1);
			}
			char sink[4096];
			char *dst = len < cap ? buf + len : sink;
			size_t room = len < cap ? cap - len : sizeof(sink);
			ssize_t got = read(rd, dst, room);
			if (got < 0 && errno != EINTR && errno != EAGAIN)
				eof = true;
			else if (got == 0)
				eof = true;
			else if (got > 0 && dst == buf + len)
				len += (size_t)got;
			continue;
		}
		if (exited)
			break;
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			exited = true;
		else if (w < 0 && errno != EINTR)
			return kc_error_errno(err, KC_EXIT_CRIU, errno, "cannot wait for '%s'", argv[0]);
	}
	while (!exited) {
		pid_t w = waitpid(pid, &status, 0);
		if (w == pid)
			exited = true;
		else if (w < 0 && errno != EINTR)
			return kc_error_errno(err, KC_EXIT_CRIU, errno, "cannot wait for '%s'", argv[0]);
	}
	buf[len] = '\0';
	*wstatus = status;
	if (output)
		*output = steal_ptr(buf);
	return 0;
}

static int criu_failed_status(struct kc_error **err, const char *what, int status, const char *why);

/*
 * Turns a failed wait status into "criu <what> failed (exit 1): <why>",
 * where why is what kc_criu_explain makes of the log, else its last error
 * lines; the log's path and the fixing option go into the hint.
 */
static int criu_failed(struct kc_error **err, const char *what, int status, const char *log_path,
		       char *output)
{
	_cleanup_free_ char *why = NULL, *fix = NULL, *text = NULL;
	_cleanup_error_ struct kc_error *rerr = NULL;
	if (log_path && kc_read_file(log_path, &text, NULL, &rerr) == 0)
		why = kc_criu_explain(text, &fix);
	/* CRIU refused its command line (before any log): getopt's line, not
	 * the usage text after it */
	const char *bad = output ? strstr(output, ": unrecognized option '") : NULL;
	if (!bad && output)
		bad = strstr(output, "' requires an argument");
	if (!why && bad) {
		const char *start = bad;
		while (start > output && start[-1] != '\n')
			start--;
		why = kc_xasprintf("%.*s", (int)strcspn(start, "\n"), start);
		fix = kc_xstrdup("CRIU did not take its command line: check --criu-opt");
	}
	if (!why && log_path)
		why = kc_criu_log_tail(log_path, 3);
	if (!why && output)
		why = text_tail(output, 3);
	int rc = criu_failed_status(err, what, status, why);
	if (fix)
		kc_error_set_hint(err, "%s", fix);
	if (log_path && access(log_path, F_OK) == 0)
		kc_error_set_hint(err, "CRIU's log: '%s'", log_path);
	return rc;
}

static int criu_failed_status(struct kc_error **err, const char *what, int status, const char *why)
{
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		const char *name = sigabbrev_np(sig);
		return kc_error_set(err, KC_EXIT_CRIU, 128 + sig, "criu %s was killed by SIG%s%s%s", what,
				    name ? name : "?", why ? ": " : "", why ? why : "");
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	return kc_error_set(err, KC_EXIT_CRIU, code, "criu %s failed (exit %d)%s%s", what, code,
			    why ? ": " : "", why ? why : "");
}

static bool succeeded(int status)
{
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int criu_version(void *h, const struct kc_criu_opts *o, char **version, struct kc_error **err)
{
	struct argv_builder a = { 0 };
	_cleanup_strv_ char **argv = NULL;
	argv_add(&a, "%s", criu_path(o));
	argv_add(&a, "--version");
	argv = a.v;

	_cleanup_free_ char *out = NULL;
	int status;
	if (run_criu(argv, NULL, false, &out, &status, err) < 0)
		return -1;
	if (!succeeded(status))
		return criu_failed(err, "--version", status, NULL, out);

	/* "Version: 4.1.1\nGitID: v4.1.1\n" */
	char *save = NULL;
	for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		l = trim(l);
		if (strncmp(l, "Version:", 8))
			continue;
		char *v = trim(l + 8);
		v[strcspn(v, " \t")] = '\0';
		if (!*v)
			break;
		*version = kc_xstrdup(v);
		return 0;
	}
	return kc_error_set(err, KC_EXIT_CRIU, 0, "cannot parse the output of '%s --version'", argv[0]);
}

static int criu_check(void *h, const struct kc_criu_opts *o, char **output, struct kc_error **err)
{
	struct argv_builder a = { 0 };
	_cleanup_strv_ char **argv = NULL;
	argv_add(&a, "%s", criu_path(o));
	argv_add(&a, "check");
	argv = a.v;

	_cleanup_free_ char *out = NULL;
	int status;
	if (run_criu(argv, NULL, false, &out, &status, err) < 0)
		return -1;
	if (!succeeded(status)) {
		_cleanup_free_ char *copy = kc_xstrdup(out);
		criu_failed(err, "check", status, NULL, copy);
	}
	/* Also on failure: what CRIU found lacking is the point of `check`. */
	*output = steal_ptr(out);
	return err && *err ? -1 : 0;
}

static int criu_dump(void *h, const struct kc_criu_opts *o, pid_t pid, const char *images_dir,
		     struct kc_error **err)
{
	_cleanup_free_ char *dir = realpath(images_dir, NULL);
	if (!dir)
		return kc_error_errno(err, errno == ENOENT ? KC_EXIT_NOENT : KC_EXIT_IMAGE, errno,
				      "cannot open images dir '%s'", images_dir);

	/* Stats go to <dir>/stats-dump without asking; -v4 because the log
	 * is the only record of what CRIU did when a restore fails later. */
	struct argv_builder a = { 0 };
	_cleanup_strv_ char **argv = NULL;
	argv_add(&a, "%s", criu_path(o));
	argv_add(&a, "dump");
	argv_add(&a, "-t");
	argv_add(&a, "%d", (int)pid);
	argv_add(&a, "-D");
	argv_add(&a, "%s", dir);
	argv_add(&a, "-o");
	argv_add(&a, "criu-dump.log");
	argv_add(&a, "-v4");
	add_common_flags(&a, o);
	if (o->leave_stopped)
		argv_add(&a, "--leave-stopped");
	argv = a.v;

	/* our CRIU (patches/criu/0001-*) leaves large anonymous memory to us;
	 * any other CRIU ignores the variable and dumps it all */
	char **vars = kc_xcalloc(2, sizeof(char *));
	if (o->bulk_min)
		vars[0] = kc_xasprintf("KCHECKPOINT_BULK_MIN=%llu", (unsigned long long)o->bulk_min);
	_cleanup_free_ char *out = NULL;
	_cleanup_free_ char *log = kc_xasprintf("%s/criu-dump.log", dir);
	int status;
	if (run_criu(argv, vars, false, &out, &status, err) < 0)
		return -1;
	if (!succeeded(status))
		return criu_failed(err, "dump", status, log, out);
	return 0;
}

static int read_pidfile(const char *path, pid_t *pid, struct kc_error **err)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_error_ struct kc_error *rerr = NULL;
	if (kc_read_file(path, &text, NULL, &rerr) < 0)
		return kc_error_set(err, KC_EXIT_CRIU, rerr->cause, "criu restore left no pid: %s", rerr->msg);
	text[strcspn(text, " \t\r\n")] = '\0';
	pid_t p = kc_parse_pid(text);
	if (p <= 0)
		return kc_error_set(err, KC_EXIT_CRIU, 0, "bad pid '%s' in '%s'", text, path);
	*pid = p;
	return 0;
}

static int criu_restore(void *h, const struct kc_criu_opts *o, const char *images_dir, pid_t *root_pid,
			struct kc_error **err)
{
	_cleanup_free_ char *dir = realpath(images_dir, NULL);
	if (!dir)
		return kc_error_errno(err, errno == ENOENT ? KC_EXIT_NOENT : KC_EXIT_IMAGE, errno,
				      "cannot open images dir '%s'", images_dir);
	/* the log, pidfile and stats go to log_dir: the images may be read-only */
	_cleanup_free_ char *wdir = o->log_dir ? realpath(o->log_dir, NULL) : kc_xstrdup(dir);
	if (!wdir)
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot open '%s'", o->log_dir);
	_cleanup_free_ char *pidfile = kc_xasprintf("%s/restore.pid", wdir);
	/* CRIU opens the pidfile with O_EXCL: a previous restore's would fail
	 * this one after the tree is already back. */
	if (unlink(pidfile) < 0 && errno != ENOENT)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot remove '%s'", pidfile);

	/* -d: the tree is reparented away from us once CRIU exits, so it does
	 * not die with kcheckpoint nor linger as our zombie.  leave_stopped is
	 * a dump-side flag: a caller reusing its dump options must not end up
	 * with a restored tree that silently never runs. */
	struct argv_builder a = { 0 };
	_cleanup_strv_ char **argv = NULL;
	argv_add(&a, "%s", criu_path(o));
	argv_add(&a, "restore");
	argv_add(&a, "-D");
	argv_add(&a, "%s", dir);
	argv_add(&a, "-W");
	argv_add(&a, "%s", wdir);
	argv_add(&a, "-o");
	argv_add(&a, "criu-restore.log");
	argv_add(&a, "-v4");
	argv_add(&a, "-d");
	argv_add(&a, "--pidfile");
	argv_add(&a, "%s", pidfile);
	if (o->restore_stopped)
		argv_add(&a, "--leave-stopped");
	add_common_flags(&a, o);
	argv = a.v;

	/* our CRIU (patches/criu/0002-*) advises huge pages where we fill,
	 * and (0003-*) hands us a userfaultfd for them; any other CRIU ignores
	 * the variables */
	char **vars = kc_xcalloc(4, sizeof(char *));
	size_t nv = 0;
	if (o->huge_runs)
		vars[nv++] = kc_xasprintf("KCHECKPOINT_BULK_HUGE=%s", o->huge_runs);
	if (o->uffd_socket && o->uffd_runs) {
		vars[nv++] = kc_xasprintf("KCHECKPOINT_BULK_UFFD=%s", o->uffd_socket);
		vars[nv++] = kc_xasprintf("KCHECKPOINT_BULK_RUNS=%s", o->uffd_runs);
	}
	_cleanup_free_ char *out = NULL;
	_cleanup_free_ char *log = kc_xasprintf("%s/criu-restore.log", wdir);
	int status;
	if (run_criu(argv, vars, o->shell_job, &out, &status, err) < 0)
		return -1;
	if (!succeeded(status))
		return criu_failed(err, "restore", status, log, out);
	return read_pidfile(pidfile, root_pid, err);
}

/* The child of probe_inet: its own session (CRIU wants the session and
 * group inside the tree), no terminal, one listening socket. */
static _Noreturn void inet_child(int ready)
{
	setsid();
	int null = open("/dev/null", O_RDWR);
	for (int fd = 0; fd < 3; fd++)
		dup2(null, fd);
	if (null > 2)
		close(null);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (s < 0 || bind(s, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(s, 1) < 0)
		_exit(1);
	(void)!write(ready, "x", 1);
	close(ready);
	for (;;)
		pause();
}

static int criu_probe_inet(void *h, const struct kc_criu_opts *o, struct kc_error **err)
{
	char tmpl[] = "/tmp/kcheckpoint-probe-XXXXXX";
	if (!mkdtemp(tmpl))
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create a probe dir");
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		rmdir(tmpl);
		return kc_error_errno(err, KC_EXIT_FAILURE, errno, "cannot create pipe");
	}
	pid_t child = fork();
	if (child == 0) {
		close(p[0]);
		/* nothing of ours may go along into the dump */
		if (p[1] != 10 && dup2(p[1], 10) < 0)
			_exit(1);
		for (int fd = 3; fd < 10; fd++)
			close(fd);
		closefrom(11);
		inet_child(10);
	}
	close(p[1]);
	char c;
	bool ok = child > 0 && read(p[0], &c, 1) == 1;
	close(p[0]);
	int rc = 0;
	if (!ok) {
		rc = kc_error_set(err, KC_EXIT_FAILURE, 0, "cannot start a process with a TCP socket to dump");
	} else {
		struct kc_criu_opts po = {.criu_path = o ? o->criu_path : NULL};
		struct argv_builder a = {0};
		_cleanup_strv_ char **argv = NULL;
		argv_add(&a, "%s", criu_path(&po));
		argv_add(&a, "dump");
		argv_add(&a, "-t");
		argv_add(&a, "%d", (int)child);
		argv_add(&a, "-D");
		argv_add(&a, "%s", tmpl);
		argv_add(&a, "-o");
		argv_add(&a, "probe.log");
		argv_add(&a, "-v4");
		argv_add(&a, "--leave-running");
		argv = a.v;
		int status;
		_cleanup_free_ char *out = NULL;
		_cleanup_free_ char *log = kc_xasprintf("%s/probe.log", tmpl);
		if (run_criu(argv, NULL, false, &out, &status, err) < 0)
			rc = -1;
		else if (!succeeded(status))
			rc = criu_failed(err, "dump of a listening TCP socket", status, log, out);
	}
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	if (rc == 0) /* else the message names its log */
		kc_rm_rf(tmpl, NULL);
	return rc;
}

static int criu_unlock_network(void *h, const pid_t *pids, size_t n, struct kc_error **err)
{
	return kc_criu_unlock_network(pids, n, err);
}

static const struct kc_criu_ops criu_ops = {
	.version = criu_version,
	.unlock_network = criu_unlock_network,
	.check = criu_check,
	.probe_inet = criu_probe_inet,
	.dump = criu_dump,
	.restore = criu_restore,
};

void kc_criu_init(struct kc_criu *out)
{
	out->ops = &criu_ops;
	out->h = NULL;
}
