/* SPDX-License-Identifier: Apache-2.0 */
#ifndef KC_UTIL_H
#define KC_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "kc/error.h"

#include "kc/alloc.h"

/* CLOCK_MONOTONIC in seconds. */
double kc_now(void);
/* CLOCK_REALTIME as "2026-11-22T02:37:20Z". */
void kc_utc_timestamp(char buf[32]);

int kc_read_file(const char *path, char **out, size_t *len, struct kc_error **err);
/* Temporary file in the same dir, fsync, rename, fsync dir. */
int kc_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode,
			 struct kc_error **err);
/* The same without the fsyncs: readers see the old file or the whole new
 * one, but a crash may lose it (for files no more durable than their
 * neighbours). */
int kc_write_file_replace(const char *path, const void *buf, size_t len, mode_t mode, struct kc_error **err);
int kc_mkdir_p(const char *path, mode_t mode, struct kc_error **err);
/* A mark that recover reads, "<kind>-<id>" in kc_run_dir() (filling-PID,
 * held-TID, stopped-PID): its path; written with text (the dir made
 * first), replaced whole. */
char *kc_run_mark_path(const char *kind, pid_t id);
int kc_run_mark_write(const char *kind, pid_t id, const char *text, struct kc_error **err);
/* rm -rf; refuses "/" and empty paths. */
int kc_rm_rf(const char *path, struct kc_error **err);
/* The whole file to fd (a pipe: dump -o -), and fd to a new file
 * (restore -): -1 with the error on a short write or read. */
int kc_copy_to_fd(const char *path, int out, struct kc_error **err);
int kc_copy_from_fd(int in, const char *path, struct kc_error **err);
/* Room for need bytes in dir's filesystem, else KC_EXIT_IMAGE (ENOSPC):
 * "<what> needs <need> in '<dir>', which has <free> free".  0 when dir
 * cannot be looked at (its user will say why). */
int kc_check_room(const char *dir, uint64_t need, const char *what, struct kc_error **err);
/* Sum of st_size of regular files below path. */
uint64_t kc_dir_size(const char *path);

/* "1.50 GB" style, SI units, for the report. */
void kc_format_bytes(uint64_t bytes, char *buf, size_t len);

bool kc_pid_alive(pid_t pid); /* exists and is not a zombie */
bool kc_pid_exists(pid_t pid); /* /proc/<pid> exists, zombies included */
/* /proc/<pid>/comm without the newline; "?" when unreadable. */
void kc_pid_comm(pid_t pid, char *buf, size_t len);
/* Replaces bytes that are not UTF-8 (and control characters, if asked)
 * by '?', in place; true if it changed anything. */
bool kc_text_sanitize(char *s, bool controls);
/* All of buf, or -1 with errno (EIO for a call that made no progress);
 * EINTR is retried. */
int kc_write_all(int fd, const void *buf, size_t len);
int kc_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
int kc_pread_all(int fd, void *buf, size_t len, uint64_t off);
/* Removes everything in dir but the plain files named in keep (NULL-
 * terminated); returns how many of those it found. */
size_t kc_dir_clear(const char *dir, const char *const *keep);
/* kcheckpoint's state that must outlive a killed run, not a reboot:
 * $KCHECKPOINT_RUN_DIR, else /run/kcheckpoint. */
const char *kc_run_dir(void);
/* One kcheckpoint at a time per pid: an flock on <run dir>/pid-<pid>.lock,
 * dropped when the fd closes or the process dies.  KC_EXIT_BUSY if held.
 * kc_pids_lock takes them all or none; *fds for kc_pids_unlock. */
int kc_pid_lock(pid_t pid, struct kc_error **err);
int kc_pids_lock(const pid_t *pids, size_t n, int **fds, struct kc_error **err);
void kc_pids_unlock(int *fds, size_t n);
/* The pid tracing pid (TracerPid), 0 if none or unreadable. */
pid_t kc_pid_tracer(pid_t pid);
/* The process (thread group) of thread tid; -1 if gone. */
pid_t kc_tid_tgid(pid_t tid);
/* The tracer of any thread of pid (the first found), 0 if none. */
pid_t kc_pid_tracer_any(pid_t pid);
/* A kernel thread (PF_KTHREAD): nothing CRIU can dump. */
bool kc_pid_is_kthread(pid_t pid);
/* Calls fn for every open descriptor of pid: its number, its /proc link
 * (stat() it to reach the file) and what the link says ("socket:[42]",
 * "/dev/nvidia0").  Nothing for a pid that is gone. */
void kc_pid_each_fd(pid_t pid, void (*fn)(int fd, const char *link, const char *target, void *arg), void *arg);
/* State letter and parent from /proc/<pid>/stat (either may be NULL);
 * -1 if the process is gone. */
int kc_pid_stat(pid_t pid, char *state, pid_t *ppid);
/* Start time of pid (clock ticks after boot, /proc/<pid>/stat field 22),
 * 0 if gone: with the pid, it names one process, not a reused number. */
uint64_t kc_pid_starttime(pid_t pid);
/* Single state letter from /proc/<pid>/stat, 0 if gone. */
char kc_pid_state(pid_t pid);

/* One line of /proc/<pid>/maps: [lo, hi), "rw-p", the inode, and the path
 * or name ("" for none; a line longer than the buffer is cut there). */
struct kc_map {
	uint64_t lo, hi;
	char perms[5];
	unsigned long long ino;
	const char *name;
};
/* fn for each mapping of pid, in address order, until it returns
 * non-zero; -1 (errno) where the maps cannot be read. */
int kc_pid_maps_each(pid_t pid, int (*fn)(const struct kc_map *m, void *arg), void *arg);

/* 0-15 for a hex digit, -1 otherwise. */
int kc_hex_value(char c);

/* Parses a decimal pid > 0; -1 otherwise. */
pid_t kc_parse_pid(const char *s);

#endif
