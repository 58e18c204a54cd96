/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Large runs of private memory, taken out of CRIU's page images so that
 * kcheckpoint fills them itself with every core (issue: CRIU restores
 * memory with one thread, ~2 GB/s, where 16 threads reach 9-11 GB/s).
 *
 * CRIU's images: pagemap-<pid>.img is IMG_COMMON magic, PAGEMAP magic,
 * then size-prefixed entries: a PagemapHead (pages_id 1) and PagemapEntry
 * (vaddr 1, compat_nr_pages 2, in_parent 3, flags 4, nr_pages 5) in
 * address order.  pages-<pages_id>.img holds, back to back, the pages of
 * every entry flagged PE_PRESENT, in that order; CRIU reads it front to
 * back, so an entry can leave the pagemap only if its pages leave the
 * pages image with it.
 *
 * The split, after CRIU dumped: for a pagemap with runs of at least
 * min_bytes (present, not in a parent image), the pages image
 * becomes kcheckpoint-bulk-<pages_id>.img as it is (a rename, no copy)
 * when those runs are most of it, or they are copied out of it when not;
 * a new pages image gets the pages of the other entries (copied);
 * the pagemap loses the big entries; kcheckpoint-bulk.txt says where each
 * big run lives.  CRIU then restores those ranges as empty memory of the
 * right mapping, and kcheckpoint fills them while the tree is stopped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "criu_pb.h"
#include "kc/criu.h"
#include "kc/util.h"

#define PAGEMAP_MAGIC 0x56084025u
#define PE_PARENT (1u << 0)
#define PE_LAZY (1u << 1)
#define PE_PRESENT (1u << 2)

struct entry {
	const unsigned char *raw; /* size prefix included */
	size_t raw_len;
	uint64_t vaddr, bytes, offset; /* offset in the pages image, if present */
	bool present, bulk;
};

static int parse_entry(struct pb b, uint64_t page, struct entry *e)
{
	struct pb_field f = {0};
	uint64_t compat = 0, nr = 0, flags = 0;
	bool have_flags = false, in_parent = false, have_nr = false;
	int r;
	while ((r = pb_next(&b, &f)) > 0) {
		if (f.wire != WIRE_VARINT)
			continue;
		switch (f.num) {
		case 1: e->vaddr = f.value; break;
		case 2: compat = f.value; break;
		case 3: in_parent = f.value; break;
		case 4: flags = f.value; have_flags = true; break;
		case 5: nr = f.value; have_nr = true; break;
		default: break;
		}
	}
	if (r < 0)
		return -1;
	e->bytes = (have_nr ? nr : compat) * page;
	/* images older than the flags field: present unless in the parent */
	e->present = have_flags ? (flags & PE_PRESENT) != 0 : !in_parent;
	/* PE_LAZY marks what a lazy restore could fetch later (private
	 * anonymous pages); restores without --lazy-pages read it like the rest */
	e->bulk = e->present && !(flags & PE_PARENT) && !in_parent;
	return 0;
}

static int copy_range(int in, uint64_t off, int out, uint64_t len)
{
	loff_t o = (loff_t)off;
	while (len) {
		ssize_t c = copy_file_range(in, &o, out, NULL, len, 0);
		if (c < 0 && errno == EINTR)
			continue;
		if (c <= 0)
			return -1;
		len -= (uint64_t)c;
	}
	return 0;
}

/* One pagemap-<pid>.img. */
static int split_one(int dirfd, const char *name, pid_t pid, uint64_t min_bytes, FILE *index, uint64_t *moved,
		     struct kc_error **err)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open '%s'", name);
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < 8) {
		close(fd);
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", name);
	}
	len = (size_t)st.st_size;
	buf = kc_xmalloc(len);
	ssize_t got = pread(fd, buf, len, 0);
	close(fd);
	const unsigned char *p = (const unsigned char *)buf;
	if (got != (ssize_t)len || le32(p) != IMG_COMMON_MAGIC || le32(p + 4) != PAGEMAP_MAGIC)
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is not a CRIU pagemap image", name);

	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	size_t n = 0, cap = 64, head_len = 0;
	_cleanup_free_ struct entry *e = kc_xmalloc(cap * sizeof(*e));
	uint64_t pages_id = 0, off = 0;
	bool any = false;
	for (size_t at = 8; at < len;) {
		if (len - at < 4 || le32(p + at) > len - at - 4)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' is truncated", name);
		uint32_t size = le32(p + at);
		struct pb b = {p + at + 4, p + at + 4 + size};
		if (at == 8) { /* PagemapHead */
			struct pb_field f = {0};
			int r;
			while ((r = pb_next(&b, &f)) > 0)
				if (f.num == 1 && f.wire == WIRE_VARINT)
					pages_id = f.value;
			if (r < 0)
				return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has a malformed head", name);
			head_len = 4 + size;
			at += head_len;
			continue;
		}
		if (n == cap)
			e = kc_xrealloc(e, (cap *= 2) * sizeof(*e));
		struct entry *x = &e[n++];
		memset(x, 0, sizeof(*x));
		x->raw = p + at;
		x->raw_len = 4 + size;
		if (parse_entry(b, page, x) < 0)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' has a malformed entry", name);
		x->offset = off;
		if (x->present)
			off += x->bytes;
		at += x->raw_len;
	}
	/* CRIU cuts its entries at its pipes' size (often well under 1 MiB):
	 * runs of entries that follow each other in memory and in the pages
	 * image are what counts */
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		uint64_t run = e[i].bytes;
		while (e[i].bulk && j < n && e[j].bulk && e[j].vaddr == e[j - 1].vaddr + e[j - 1].bytes &&
		       e[j].offset == e[j - 1].offset + e[j - 1].bytes)
			run += e[j++].bytes;
		for (size_t k = i; k < j; k++) {
			e[k].bulk = e[k].bulk && run >= min_bytes;
			any |= e[k].bulk;
		}
		i = j;
	}
	if (!any)
		return 0;

	char pages[64], bulk[64], newpages[80], newmap[300];
	snprintf(pages, sizeof(pages), "pages-%" PRIu64 ".img", pages_id);
	snprintf(bulk, sizeof(bulk), "kcheckpoint-bulk-%" PRIu64 ".img", pages_id);
	snprintf(newpages, sizeof(newpages), "%s.kc-new", pages);
	snprintf(newmap, sizeof(newmap), "%.200s.kc-new", name);
	int in = openat(dirfd, pages, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open '%s'", pages);
	if (fstat(in, &st) < 0 || (uint64_t)st.st_size != off) {
		close(in);
		return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s' holds %lld bytes, its pagemap says %" PRIu64, pages,
				    (long long)st.st_size, off);
	}
	/* Mostly large runs: the pages image becomes the bulk file by a rename
	 * and only the rest is copied.  Mostly small pages: the large runs are
	 * copied out instead, so the image does not hold the rest twice. */
	uint64_t bulk_total = 0;
	for (size_t i = 0; i < n; i++)
		bulk_total += e[i].bulk ? e[i].bytes : 0;
	bool copy_out = bulk_total * 2 < off;
	int outb = copy_out ? openat(dirfd, bulk, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
	uint64_t bulk_off = 0;
	int outp = openat(dirfd, newpages, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int outm = openat(dirfd, newmap, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int rc = outp < 0 || outm < 0 || (copy_out && outb < 0) ? -1 : 0;
	if (rc == 0)
		rc = kc_write_all(outm, p, 8 + head_len);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		if (e[i].bulk) {
			/* one line for the whole run */
			size_t j = i;
			uint64_t run = 0;
			while (j < n && e[j].bulk && (j == i || (e[j].vaddr == e[j - 1].vaddr + e[j - 1].bytes &&
								  e[j].offset == e[j - 1].offset + e[j - 1].bytes)))
				run += e[j++].bytes;
			uint64_t at = e[i].offset;
			if (copy_out) {
				rc = copy_range(in, e[i].offset, outb, run);
				at = bulk_off;
				bulk_off += run;
			}
			fprintf(index, "%d %" PRIx64 " %" PRIu64 " %s %" PRIu64 "\n", (int)pid, e[i].vaddr, run, bulk,
				at);
			*moved += run;
			i = j - 1;
			continue;
		}
		rc = kc_write_all(outm, e[i].raw, e[i].raw_len);
		if (rc == 0 && e[i].present)
			rc = copy_range(in, e[i].offset, outp, e[i].bytes);
	}
	int e_no = errno;
	close(in);
	if (outp >= 0 && close(outp) < 0 && rc == 0)
		rc = -1;
	if (outm >= 0 && close(outm) < 0 && rc == 0)
		rc = -1;
	if (outb >= 0 && close(outb) < 0 && rc == 0)
		rc = -1;
	if (rc == 0 && !copy_out && renameat(dirfd, pages, dirfd, bulk) < 0)
		rc = -1;
	if (rc == 0 && (renameat(dirfd, newpages, dirfd, pages) < 0 || renameat(dirfd, newmap, dirfd, name) < 0))
		rc = -1;
	if (rc < 0) {
		unlinkat(dirfd, newpages, 0);
		unlinkat(dirfd, newmap, 0);
		if (copy_out && outb >= 0)
			unlinkat(dirfd, bulk, 0);
		return kc_error_errno(err, KC_EXIT_IMAGE, errno ? errno : e_no, "cannot split '%s'", pages);
	}
	return 0;
}

int kc_criu_split_bulk(const char *images_dir, uint64_t min_bytes, uint64_t *moved, struct kc_error **err)
{
	*moved = 0;
	_cleanup_closedir_ DIR *d = opendir(images_dir);
	if (!d)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot open images dir '%s'", images_dir);
	_cleanup_free_ char *index_path = kc_xasprintf("%s/" KC_BULK_INDEX, images_dir);
	/* after the reader's lines, if any (src/core/bulk_read.c) */
	FILE *index = fopen(index_path, "ae");
	if (!index)
		return kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot create '%s'", index_path);
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d))) {
		int pid;
		char tail[8];
		/* pagemap-<pid>.img; not pagemap-shmem-*, which CRIU restores apart */
		if (sscanf(de->d_name, "pagemap-%d%7s", &pid, tail) != 2 || strcmp(tail, ".img") || pid <= 0)
			continue;
		rc = split_one(dirfd(d), de->d_name, (pid_t)pid, min_bytes, index, moved, err);
	}
	if (fclose(index) != 0 && rc == 0)
		rc = kc_error_errno(err, KC_EXIT_IMAGE, errno, "cannot write '%s'", index_path);
	struct stat st;
	if (rc == 0 && stat(index_path, &st) == 0 && st.st_size == 0)
		unlink(index_path); /* nothing large: a plain CRIU image */
	return rc;
}

static int cmp_file_off(const void *a, const void *b)
{
	const struct kc_bulk_region *x = *(const struct kc_bulk_region *const *)a, *y = *(const struct kc_bulk_region *const *)b;
	int c = strcmp(x->file, y->file);
	return c ? c : x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_pid_vaddr(const void *a, const void *b)
{
	const struct kc_bulk_region *x = *(const struct kc_bulk_region *const *)a, *y = *(const struct kc_bulk_region *const *)b;
	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

/*
 * Each byte of a bulk file fills at most one place, and each place of a
 * process is filled once: overlapping runs would restore one run's bytes
 * where another's belong.  The file kcheckpoint read itself is its runs
 * end to end, so a run missing from its index shows too.  (The index is
 * checksummed with the rest; this catches a damaged or hand-made one that
 * still parses.)
 */
static int check_index(const char *path, const struct kc_bulk_region *v, size_t n, struct kc_error **err)
{
	_cleanup_free_ const struct kc_bulk_region **s = kc_xcalloc(n + 1, sizeof(*s));
	for (size_t i = 0; i < n; i++)
		s[i] = &v[i];
	qsort(s, n, sizeof(*s), cmp_file_off);
	uint64_t next = 0; /* where the runs of a read file have got to */
	for (size_t i = 0; i < n; i++) {
		bool same = i && !strcmp(s[i - 1]->file, s[i]->file);
		if (same && s[i - 1]->offset + s[i - 1]->bytes > s[i]->offset)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s': runs overlap in '%s' at offset %" PRIu64, path,
					    s[i]->file, s[i]->offset);
		if (!strcmp(s[i]->file, "kcheckpoint-bulk-read.img")) {
			if (!same)
				next = 0;
			if (s[i]->offset != next)
				return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s': no run covers offset %" PRIu64 " of '%s'",
						    path, next, s[i]->file);
			next += s[i]->bytes;
		}
	}
	qsort(s, n, sizeof(*s), cmp_pid_vaddr);
	for (size_t i = 1; i < n; i++)
		if (s[i - 1]->pid == s[i]->pid && s[i - 1]->vaddr + s[i - 1]->bytes > s[i]->vaddr)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s': runs overlap in pid %d at 0x%" PRIx64, path,
					    (int)s[i]->pid, s[i]->vaddr);
	return 0;
}

int kc_criu_read_bulk(const char *images_dir, struct kc_bulk_region **out, size_t *n, struct kc_error **err)
{
	*out = NULL;
	*n = 0;
	_cleanup_free_ char *path = kc_xasprintf("%s/" KC_BULK_INDEX, images_dir);
	_cleanup_free_ char *text = NULL;
	_cleanup_error_ struct kc_error *rerr = NULL;
	if (kc_read_file(path, &text, NULL, &rerr) < 0) {
		if (rerr->cause == ENOENT)
			return 0;
		kc_error_propagate(err, steal_ptr(rerr));
		return -1;
	}
	size_t cap = 16, k = 0;
	_cleanup_free_ struct kc_bulk_region *v = kc_xmalloc(cap * sizeof(*v));
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		struct kc_bulk_region r = {0};
		int pid, used = 0;
		if (sscanf(l, "%d %" SCNx64 " %" SCNu64 " %63s %" SCNu64 "%n", &pid, &r.vaddr, &r.bytes, r.file,
			   &r.offset, &used) != 5 ||
		    l[used] || pid <= 0 || strncmp(r.file, "kcheckpoint-bulk-", 17) || strchr(r.file, '/') || !r.bytes ||
		    r.vaddr % page || r.bytes % page || r.vaddr + r.bytes < r.vaddr)
			return kc_error_set(err, KC_EXIT_IMAGE, 0, "'%s': bad line '%s'", path, l);
		r.pid = (pid_t)pid;
		if (k == cap)
			v = kc_xrealloc(v, (cap *= 2) * sizeof(*v));
		v[k++] = r;
	}
	if (check_index(path, v, k, err) < 0)
		return -1;
	*out = steal_ptr(v);
	*n = k;
	return 0;
}
