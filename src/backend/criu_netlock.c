/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Undoing CRIU's TCP lock when a dumped tree runs on.
 *
 * With --tcp-established, CRIU puts every established connection of the
 * tree into repair mode and drops its packets with a pair of iptables rules
 * (criu/netfilter.c: "-m mark ! --mark 0xC114 --source .. --sport ..
 * --destination .. --dport .. -j DROP" in INPUT and OUTPUT).  It undoes
 * both itself only when the dump fails or ends with --leave-running;
 * kcheckpoint dumps with --leave-stopped (so it can still roll back), so
 * when it lets the tree run on after all (a rollback, --leave-running) it
 * must do what CRIU's network_unlock() would: take the rules out and turn
 * repair mode off.  Connections stay intact: no packet was lost, only held
 * back, and the peer retransmits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kc/criu.h"
#include "kc/util.h"

#define SOCCR_MARK "0xC114" /* soccr/soccr.h */

extern char **environ;

/* iptables -w -t filter -D <chain> ... as CRIU inserted it; a rule that
 * is not there (CRIU's own unlock ran, or another lock method) is fine. */
static int drop_rule(int family, const char *chain, const char *src, int sport, const char *dst, int dport)
{
	char sp[16], dp[16];
	snprintf(sp, sizeof(sp), "%d", sport);
	snprintf(dp, sizeof(dp), "%d", dport);
	char *argv[] = {family == AF_INET6 ? "ip6tables" : "iptables", "-w", "-t", "filter", "-D", (char *)chain,
			"--protocol", "tcp", "-m", "mark", "!", "--mark", SOCCR_MARK, "--source", (char *)src,
			"--sport", sp, "--destination", (char *)dst, "--dport", dp, "-j", "DROP", NULL};
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -1;
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return 0;
}

static void addr_str(const struct sockaddr_storage *ss, char *buf, size_t len, int *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, buf, (socklen_t)len);
		*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const void *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, buf, (socklen_t)len);
		*port = ntohs(s4->sin_port);
	}
}

/* One descriptor of the stopped task, through a copy of it in ours. */
static int unlock_socket(int fd, struct kc_error **err)
{
	int type = 0, proto = 0, repair = 0;
	socklen_t l = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0 || type != SOCK_STREAM)
		return 0;
	l = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) < 0 || proto != IPPROTO_TCP)
		return 0;
	l = sizeof(repair);
	if (getsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &repair, &l) < 0 || !repair)
		return 0;

	struct sockaddr_storage me = {0}, peer = {0};
	socklen_t ml = sizeof(me), pl = sizeof(peer);
	if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0 && getpeername(fd, (struct sockaddr *)&peer, &pl) == 0) {
		char src[INET6_ADDRSTRLEN] = "", dst[INET6_ADDRSTRLEN] = "";
		int sport = 0, dport = 0;
		addr_str(&me, src, sizeof(src), &sport);
		addr_str(&peer, dst, sizeof(dst), &dport);
		int family = me.ss_family;
		/* v4-mapped addresses were locked as IPv4 */
		if (family == AF_INET6 && !strncmp(src, "::ffff:", 7) && !strncmp(dst, "::ffff:", 7)) {
			memmove(src, src + 7, strlen(src + 7) + 1);
			memmove(dst, dst + 7, strlen(dst + 7) + 1);
			family = AF_INET;
		}
		/* the same two rules CRIU inserted: packets to us, packets from us */
		drop_rule(family, "INPUT", dst, dport, src, sport);
		drop_rule(family, "OUTPUT", src, sport, dst, dport);
	}
	int off = 0;
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof(off)) < 0)
		return kc_error_errno(err, KC_EXIT_ROLLBACK, errno, "cannot take a TCP socket out of repair mode");
	return 0;
}

struct unlock_arg {
	int pidfd;
	pid_t pid;
	struct kc_error *err;
};

static void unlock_fd(int fd, const char *link, const char *target, void *arg)
{
	struct unlock_arg *a = arg;
	if (strncmp(target, "socket:", 7))
		return;
	int copy = (int)syscall(SYS_pidfd_getfd, a->pidfd, fd, 0);
	if (copy < 0)
		return;
	struct kc_error *e = NULL;
	if (unlock_socket(copy, &e) < 0) {
		kc_error_prefix(&e, "pid %d fd %d", (int)a->pid, fd);
		kc_error_propagate(&a->err, e);
	}
	close(copy);
}

int kc_criu_unlock_network(const pid_t *pids, size_t n, struct kc_error **err)
{
	struct unlock_arg a = {.err = NULL};
	for (size_t i = 0; i < n; i++) {
		a.pid = pids[i];
		a.pidfd = (int)syscall(SYS_pidfd_open, pids[i], 0);
		if (a.pidfd < 0)
			continue; /* gone: nothing of it to unlock */
		kc_pid_each_fd(pids[i], unlock_fd, &a);
		close(a.pidfd);
	}
	if (a.err) {
		kc_error_propagate(err, a.err);
		return -1;
	}
	return 0;
}
