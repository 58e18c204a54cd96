/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Archives (src/core/archive*.c, sha256.c) on real files: round trips
 * byte-compared with the source, checksums against a separate reference,
 * archives read back by libarchive's own zstd reader, and malicious
 * archives built with libarchive's writer, each of which must be refused
 * with its message while nothing appears outside a fresh private dir.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <cmocka.h>
#include <sched.h>

#include "../../src/core/archive_internal.h"
#include "kc/archive.h"
#include "kc/signals.h"
#include "kc/util.h"

#define MIB (1u << 20)

struct fx {
	char root[64];
	char img[128];
};

/* ---- helpers ------------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len)
{
	struct kc_error *err = NULL;
	_cleanup_free_ char *dir = kc_xstrdup(path);
	*strrchr(dir, '/') = '\0';
	assert_int_equal(kc_mkdir_p(dir, 0700, &err), 0);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static uint8_t *read_all(const char *path, size_t *len)
{
	char *buf = NULL;
	struct kc_error *err = NULL;
	if (kc_read_file(path, &buf, len, &err) < 0) {
		kc_error_free(err);
		return NULL;
	}
	return (uint8_t *)buf;
}

/* Zeros, noise and records, like the pages of a real process. */
static uint8_t *mixed(size_t len, unsigned seed)
{
	uint8_t *b = kc_xmalloc(len);
	uint64_t s = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		size_t blk = (i / 4096 + seed) % 3;
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		b[i] = blk == 0 ? 0 : blk == 1 ? (uint8_t)(s >> 56) : (uint8_t)("record "[i % 7] + (i / 512) % 3);
	}
	return b;
}

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pathf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	assert_true(vasprintf(&s, fmt, ap) >= 0);
	va_end(ap);
	return s;
}

static const char *long_name =
	"sub/a-directory-with-a-rather-long-name-to-need-the-ustar-prefix-field/"
	"and-a-file-name-that-is-long-as-well-core-4242.img";

static char *very_long_name(void)
{
	char *s = kc_xmalloc(400);
	strcpy(s, "deep/");
	/* no split into ustar's prefix and name fits: a pax header says it */
	for (int i = 0; i < 3; i++)
		strcat(s, i ? "/segment-without-any-slash-in-it-for-a-hundred-and-ten-characters-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
			    : "segment-without-any-slash-in-it-for-a-hundred-and-ten-characters-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	strcat(s, ".img");
	return s;
}

/* Files of the shapes CRIU writes, and the leaf and tar edge cases. */
static void make_image(const char *dir)
{
	struct { const char *name; size_t len; } files[] = {
		{"pages-1.img", 3 * MIB + 123},   /* four leaves, the last short */
		{"pages-2.img", 2 * MIB},         /* leaf aligned */
		{"core-1.img", 5000},
		{"empty.img", 0},
		{"sub/dir/mm-1.img", 70000},
		{"criu-dump.log", 513},
	};
	for (size_t i = 0; i < KC_ARRAY_SIZE(files); i++) {
		_cleanup_free_ uint8_t *d = mixed(files[i].len, (unsigned)i + 1);
		_cleanup_free_ char *p = pathf("%s/%s", dir, files[i].name);
		write_file(p, d, files[i].len);
	}
	_cleanup_free_ char *ln = pathf("%s/%s", dir, long_name);
	write_file(ln, "long", 4);
	_cleanup_free_ char *vl = very_long_name();
	_cleanup_free_ char *vlp = pathf("%s/%s", dir, vl);
	write_file(vlp, "very long", 9);
	/* a stale manifest in the dir: the archive carries the one passed in */
	_cleanup_free_ char *stale = pathf("%s/%s", dir, KC_MANIFEST_NAME);
	write_file(stale, "{}", 2);
}

static void fill_manifest(struct kc_manifest *m)
{
	kc_manifest_init(m);
	m->tool_version = kc_xstrdup("0.1.0");
	m->host = kc_xstrdup("node-1");
	m->created = kc_xstrdup("2026-11-22T00:00:00Z");
	m->root_pid = 4242;
	struct kc_manifest_proc *p = kc_manifest_add_proc(m);
	p->pid = 4242;
	snprintf(p->comm, sizeof(p->comm), "server");
}

/* Reference tree hash: whole levels at a time, unlike the streaming code. */
static void ref_treehash(const uint8_t *d, size_t len, char hex[65])
{
	size_t n = len ? (len + MIB - 1) / MIB : 0;
	uint8_t (*h)[32] = kc_xcalloc(n ? n : 1, 32);
	for (size_t i = 0; i < n; i++)
		kc_sha256(d + i * MIB, i + 1 < n ? MIB : len - i * MIB, h[i]);
	if (n == 0)
		kc_sha256("", 0, h[0]), n = 1;
	while (n > 1) {
		size_t k = 0;
		for (size_t i = 0; i < n; i += 2, k++) {
			if (i + 1 < n) {
				uint8_t both[64];
				memcpy(both, h[i], 32);
				memcpy(both + 32, h[i + 1], 32);
				kc_sha256(both, 64, h[k]);
			} else {
				memmove(h[k], h[i], 32);
			}
		}
		n = k;
	}
	kc_hex(h[0], 32, hex);
	free(h);
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return (size_t)-1;
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static bool exists(const char *p)
{
	struct stat st;
	return lstat(p, &st) == 0;
}

/* Every member of m under src and dst is identical, checksums included. */
static void assert_same_tree(const struct kc_manifest *m, const char *src, const char *dst)
{
	for (size_t i = 0; i < m->n_members; i++) {
		_cleanup_free_ char *a = pathf("%s/%s", src, m->members[i].path);
		_cleanup_free_ char *b = pathf("%s/%s", dst, m->members[i].path);
		size_t la, lb;
		_cleanup_free_ uint8_t *da = read_all(a, &la);
		_cleanup_free_ uint8_t *db = read_all(b, &lb);
		assert_non_null(da);
		assert_non_null(db);
		assert_int_equal(la, lb);
		assert_int_equal(la, m->members[i].size);
		assert_memory_equal(da, db, la);
		char hex[65];
		ref_treehash(da, la, hex);
		assert_string_equal(hex, m->members[i].sha256);
	}
}

static int setup(void **state)
{
	struct fx *f = kc_xcalloc(1, sizeof(*f));
	snprintf(f->root, sizeof(f->root), "/tmp/kc-test-archive.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->img, sizeof(f->img), "%s/img", f->root);
	make_image(f->img);
	kc_signals_reset();
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	kc_rm_rf(f->root, NULL);
	free(f);
	kc_signals_reset();
	return 0;
}

static void write_ok(struct fx *f, const char *name, const char *compression, int threads, struct kc_manifest *m)
{
	struct kc_error *err = NULL;
	fill_manifest(m);
	struct kc_archive_opts o = {.compression = compression, .threads = threads};
	struct kc_archive_stats st = {0};
	_cleanup_free_ char *out = pathf("%s/%s", f->root, name);
	int r = kc_archive_write(f->img, m, out, &o, &st, &err);
	if (r < 0)
		fail_msg("write: %s", err->msg);
	struct stat sb;
	assert_int_equal(stat(out, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(st.bytes_out, (uint64_t)sb.st_size);
	assert_true(st.bytes_in > 5 * MIB);
	uint64_t sum = 0;
	for (size_t i = 0; i < m->n_members; i++)
		sum += m->members[i].size;
	assert_int_equal(__atomic_load_n(&st.done, __ATOMIC_RELAXED), sum);
	assert_true(st.bytes_in > sum); /* the manifest counts too */
}

/* An error of this exit code whose message holds every one of the words. */
static void assert_err(struct kc_error *err, int code, const char *w1, const char *w2)
{
	assert_non_null(err);
	if (err->exit_code != code || !strstr(err->msg, w1) || (w2 && !strstr(err->msg, w2)))
		fail_msg("got exit %d '%s', want exit %d with '%s' and '%s'", err->exit_code, err->msg, code, w1,
			 w2 ? w2 : "");
}

/* ---- hashing --------------------------------------------------------------- */

static void test_sha256_vectors(void **state)
{
	(void)state;
	static const struct { const char *in; const char *hex; } v[] = {
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	};
	for (int portable = 0; portable < 2; portable++) {
		kc_sha256_force_portable(portable);
		for (size_t i = 0; i < KC_ARRAY_SIZE(v); i++) {
			uint8_t d[32];
			char hex[65];
			kc_sha256(v[i].in, strlen(v[i].in), d);
			kc_hex(d, 32, hex);
			assert_string_equal(hex, v[i].hex);
		}
		/* a million 'a', fed in odd pieces */
		struct kc_sha256 c;
		kc_sha256_init(&c);
		char a[997];
		memset(a, 'a', sizeof(a));
		size_t left = 1000000;
		while (left) {
			size_t n = left < sizeof(a) ? left : sizeof(a);
			kc_sha256_update(&c, a, n);
			left -= n;
		}
		uint8_t d[32];
		char hex[65];
		kc_sha256_final(&c, d);
		kc_hex(d, 32, hex);
		assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	}
	/* the accelerated and portable code agree on every length near a block */
	_cleanup_free_ uint8_t *buf = mixed(4096, 7);
	for (size_t len = 0; len < 300; len++) {
		uint8_t x[32], y[32];
		kc_sha256_force_portable(false);
		kc_sha256(buf + len % 5, len, x);
		kc_sha256_force_portable(true);
		kc_sha256(buf + len % 5, len, y);
		assert_memory_equal(x, y, 32);
	}
	kc_sha256_force_portable(false);
}

/* Two messages hashed side by side give what each gives alone, whatever
 * the lengths, the pieces and the part of a block already buffered. */
static void test_sha256_two_at_once(void **state)
{
	(void)state;
	_cleanup_free_ uint8_t *buf = mixed(3 * 65536 + 64, 11);
	for (int portable = 0; portable < 2; portable++) {
		kc_sha256_force_portable(portable);
		for (size_t len = 0; len < 1200; len += len < 200 ? 1 : 61) {
			for (size_t skew = 0; skew < 3; skew++) {
				/* skew: bytes fed to a, b or neither before, so one
				 * of them holds part of a block */
				struct kc_sha256 a, b;
				kc_sha256_init(&a);
				kc_sha256_init(&b);
				if (skew == 1)
					kc_sha256_update(&a, buf, 7);
				if (skew == 2)
					kc_sha256_update(&b, buf, 64 + 5);
				const uint8_t *pa = buf + 100 + len % 3, *pb = buf + 70000 + len % 5;
				/* in pieces of 3 blocks and a bit, and the rest */
				size_t piece = 200, done = 0;
				while (done < len) {
					size_t n = len - done < piece ? len - done : piece;
					kc_sha256_update2(&a, pa + done, &b, pb + done, n);
					done += n;
				}
				uint8_t x[32], y[32], wx[32], wy[32];
				kc_sha256_final(&a, x);
				kc_sha256_final(&b, y);
				struct kc_sha256 c;
				kc_sha256_init(&c);
				if (skew == 1)
					kc_sha256_update(&c, buf, 7);
				kc_sha256_update(&c, pa, len);
				kc_sha256_final(&c, wx);
				kc_sha256_init(&c);
				if (skew == 2)
					kc_sha256_update(&c, buf, 64 + 5);
				kc_sha256_update(&c, pb, len);
				kc_sha256_final(&c, wy);
				assert_memory_equal(x, wx, 32);
				assert_memory_equal(y, wy, 32);
			}
		}
		/* leaves: pairs, then an odd one, the last one short */
		for (size_t len = 0; len <= 3 * 65536 + 64; len += 65536 / 2 + 17) {
			uint8_t got[8][32], want[32];
			kc_sha256_leaves(buf, len, 65536, got);
			for (size_t i = 0; i * 65536 < len; i++) {
				size_t n = len - i * 65536 < 65536 ? len - i * 65536 : 65536;
				kc_sha256(buf + i * 65536, n, want);
				assert_memory_equal(got[i], want, 32);
			}
		}
	}
	kc_sha256_force_portable(false);
}

static void test_treehash_matches_reference(void **state)
{
	(void)state;
	/* every shape of tree up to 17 leaves, plus a short last leaf */
	_cleanup_free_ uint8_t *d = mixed(17 * MIB + 5, 3);
	size_t lens[] = {0, 1, MIB, MIB + 1, 2 * MIB, 3 * MIB, 4 * MIB, 5 * MIB - 7, 6 * MIB, 7 * MIB,
			 8 * MIB, 9 * MIB + 1, 16 * MIB, 17 * MIB + 5};
	for (size_t i = 0; i < KC_ARRAY_SIZE(lens); i++) {
		struct kc_treehash t;
		kc_treehash_init(&t);
		for (size_t off = 0; off < lens[i]; off += MIB) {
			uint8_t h[32];
			kc_sha256(d + off, lens[i] - off < MIB ? lens[i] - off : MIB, h);
			kc_treehash_add(&t, h);
		}
		char got[65], want[65];
		kc_treehash_final(&t, got);
		ref_treehash(d, lens[i], want);
		assert_string_equal(got, want);
	}
	/* up to one leaf it is the plain SHA-256, as sha256sum prints it */
	char hex[65];
	ref_treehash((const uint8_t *)"abc", 3, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* ---- round trips -------------------------------------------------------------- */

static void roundtrip(struct fx *f, const char *compression, int threads, const char *want_compression)
{
	struct kc_manifest m, back, head;
	struct kc_error *err = NULL;
	write_ok(f, "a.tar.zst", compression, threads, &m);
	assert_string_equal(m.compression, want_compression);
	assert_int_equal(m.n_members, 8); /* the stale kcheckpoint.json is not one */
	for (size_t i = 0; i + 1 < m.n_members; i++)
		assert_true(strcmp(m.members[i].path, m.members[i + 1].path) < 0);

	_cleanup_free_ char *arc = pathf("%s/a.tar.zst", f->root);
	_cleanup_free_ char *dest = pathf("%s/new/dest", f->root);
	struct kc_archive_stats st = {0};
	if (kc_archive_extract(arc, dest, &back, &st, &err) < 0)
		fail_msg("extract: %s", err->msg);
	assert_same_tree(&m, f->img, dest);
	assert_int_equal(back.n_members, m.n_members);
	for (size_t i = 0; i < m.n_members; i++) {
		assert_string_equal(back.members[i].path, m.members[i].path);
		assert_string_equal(back.members[i].sha256, m.members[i].sha256);
	}
	assert_string_equal(back.host, "node-1");
	struct stat sb;
	assert_int_equal(stat(dest, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_int_equal(st.bytes_out, (uint64_t)(stat(arc, &sb), sb.st_size));

	/* the extracted dir is an image dir: its manifest is the archive's */
	struct kc_manifest fromdir;
	if (kc_manifest_read(dest, &fromdir, &err) < 0)
		fail_msg("manifest_read: %s", err->msg);
	assert_int_equal(fromdir.n_members, m.n_members);
	kc_manifest_free(&fromdir);

	if (kc_archive_read_manifest(arc, &head, &err) < 0)
		fail_msg("read_manifest: %s", err->msg);
	assert_string_equal(head.members[0].sha256, m.members[0].sha256);
	assert_string_equal(head.compression, want_compression);
	struct kc_manifest ver;
	if (kc_archive_verify(arc, &ver, &err) < 0)
		fail_msg("verify: %s", err->msg);
	kc_manifest_free(&ver);
	kc_manifest_free(&head);
	kc_manifest_free(&back);
	kc_manifest_free(&m);
}

static void test_roundtrip_zstd_default(void **state)
{
	roundtrip(*state, NULL, 0, "zstd:1");
}

static void test_roundtrip_zstd_level_threads(void **state)
{
	roundtrip(*state, "zstd:5", 3, "zstd:5");
}

static void test_roundtrip_one_thread(void **state)
{
	roundtrip(*state, "zstd", 1, "zstd:1");
}

static void test_roundtrip_none(void **state)
{
	roundtrip(*state, "none", 0, "none");
}

/* Standard readers see an ordinary .tar.zst with the manifest first. */
static void read_with_libarchive(struct fx *f, const char *name)
{
	struct kc_manifest m;
	write_ok(f, name, strstr(name, "zst") ? "zstd" : "none", 2, &m);
	_cleanup_free_ char *arc = pathf("%s/%s", f->root, name);
	struct archive *a = archive_read_new();
	archive_read_support_format_tar(a);
	archive_read_support_filter_zstd(a);
	assert_int_equal(archive_read_open_filename(a, arc, 65536), ARCHIVE_OK);
	struct archive_entry *e;
	size_t n = 0;
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		const char *p = archive_entry_pathname(e);
		if (n++ == 0) {
			assert_string_equal(p, KC_MANIFEST_NAME);
			continue;
		}
		assert_string_equal(p, m.members[n - 2].path);
		size_t len = (size_t)archive_entry_size(e);
		_cleanup_free_ uint8_t *d = kc_xmalloc(len + 1);
		assert_int_equal(archive_read_data(a, d, len + 1), (la_ssize_t)len);
		char hex[65];
		ref_treehash(d, len, hex);
		assert_string_equal(hex, m.members[n - 2].sha256);
	}
	assert_int_equal(n, m.n_members + 1);
	assert_int_equal(archive_read_free(a), ARCHIVE_OK);
	kc_manifest_free(&m);
}

static void test_standard_readers(void **state)
{
	read_with_libarchive(*state, "std.tar.zst");
	read_with_libarchive(*state, "std.tar");
}

/* ---- building hostile archives ---------------------------------------------- */

struct ent {
	const char *name;
	unsigned type; /* AE_IF* */
	const char *data;
	const char *link; /* symlink target or hard link name */
};

static char *manifest_for(const struct ent *list, size_t n)
{
	struct kc_manifest m;
	fill_manifest(&m);
	m.compression = kc_xstrdup("none");
	for (size_t i = 0; i < n; i++) {
		char hex[65];
		ref_treehash((const uint8_t *)list[i].data, strlen(list[i].data), hex);
		kc_manifest_add_member(&m, list[i].name, strlen(list[i].data), hex);
	}
	char *s = kc_manifest_to_string(&m);
	kc_manifest_free(&m);
	return s;
}

static void add_entry(struct archive *a, const char *name, unsigned type, const char *data, const char *link)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, 0600);
	if (type == AE_IFLNK)
		archive_entry_set_symlink(e, link);
	else if (link)
		archive_entry_set_hardlink(e, link);
	if (type == AE_IFCHR)
		archive_entry_set_rdev(e, makedev(1, 3));
	size_t len = type == AE_IFREG && data && !link ? strlen(data) : 0;
	archive_entry_set_size(e, (la_int64_t)len);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	if (len)
		assert_int_equal(archive_write_data(a, data, len), (la_ssize_t)len);
	archive_entry_free(e);
}

enum { MANIFEST_FIRST, MANIFEST_SECOND, NO_MANIFEST };

/* listed go into the manifest; entries into the tar, in order. */
static char *build(struct fx *f, const char *name, const struct ent *listed, size_t n_listed,
		   const struct ent *entries, size_t n_entries, int where, int filter)
{
	char *path = pathf("%s/%s", f->root, name);
	_cleanup_free_ char *json = manifest_for(listed, n_listed);
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (filter == 1)
		archive_write_add_filter_zstd(a);
	else if (filter == 2)
		archive_write_add_filter_gzip(a);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	if (where == MANIFEST_FIRST)
		add_entry(a, KC_MANIFEST_NAME, AE_IFREG, json, NULL);
	for (size_t i = 0; i < n_entries; i++) {
		add_entry(a, entries[i].name, entries[i].type ? entries[i].type : AE_IFREG, entries[i].data,
			  entries[i].link);
		if (i == 0 && where == MANIFEST_SECOND)
			add_entry(a, KC_MANIFEST_NAME, AE_IFREG, json, NULL);
	}
	assert_int_equal(archive_write_free(a), ARCHIVE_OK);
	return path;
}

/* Issue 11, item 11: a tree deeper than PATH_MAX (an archive's member may
 * nest that deep) is removed whole, through descriptors, with symbolic
 * links removed and not followed. */
static void test_rm_rf_any_depth(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *top = pathf("%s/deep", f->root);
	_cleanup_free_ char *outside = pathf("%s/outside", f->root);
	assert_int_equal(mkdir(top, 0700), 0);
	assert_int_equal(mkdir(outside, 0700), 0);
	_cleanup_free_ char *keep = pathf("%s/keep", outside);
	int kfd = open(keep, O_WRONLY | O_CREAT, 0600);
	assert_true(kfd >= 0);
	close(kfd);
	int fd = open(top, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	for (int i = 0; i < 2040; i++) {
		assert_int_equal(mkdirat(fd, "dddd", 0700), 0);
		if (i % 500 == 0) {
			int ff = openat(fd, "file", O_WRONLY | O_CREAT, 0600);
			assert_true(ff >= 0);
			close(ff);
			assert_int_equal(symlinkat(outside, fd, "link"), 0);
		}
		int c = openat(fd, "dddd", O_RDONLY | O_DIRECTORY);
		assert_true(c >= 0);
		close(fd);
		fd = c;
	}
	close(fd);
	struct kc_error *err = NULL;
	assert_int_equal(kc_rm_rf(top, &err), 0);
	assert_null(err);
	assert_false(exists(top));
	assert_true(exists(keep)); /* not through the links */
}

/* Extraction must fail with the words, leave no dest and nothing beside. */
static void refused(struct fx *f, const char *arc, int code, const char *w1, const char *w2)
{
	struct kc_error *err = NULL;
	struct kc_manifest m;
	_cleanup_free_ char *box = pathf("%s/box", f->root);
	_cleanup_free_ char *dest = pathf("%s/box/dest", f->root);
	kc_rm_rf(box, NULL);
	assert_int_equal(mkdir(box, 0700), 0);
	size_t root_n = count_entries(f->root), img_n = count_entries(f->img);
	assert_int_equal(kc_archive_extract(arc, dest, &m, NULL, &err), -1);
	assert_err(err, code, w1, w2);
	kc_error_free(err);
	err = NULL;
	assert_false(exists(dest));
	assert_int_equal(count_entries(box), 0);
	assert_int_equal(count_entries(f->root), root_n);
	assert_int_equal(count_entries(f->img), img_n);

	/* the same into an existing empty dir: it stays, empty */
	assert_int_equal(mkdir(dest, 0700), 0);
	assert_int_equal(kc_archive_extract(arc, dest, &m, NULL, &err), -1);
	assert_err(err, code, w1, w2);
	kc_error_free(err);
	assert_int_equal(count_entries(dest), 0);
	kc_rm_rf(box, NULL);
}

static const struct ent good[] = {
	{"core-1.img", 0, "core data", NULL},
	{"pages-1.img", 0, "page data page data", NULL},
};

static void test_foreign_writer_accepted(void **state)
{
	/* what the rules allow is accepted from any tar writer, zstd or not */
	struct fx *f = *state;
	for (int filter = 0; filter < 2; filter++) {
		_cleanup_free_ char *arc = build(f, "ok.tar", good, 2, good, 2, MANIFEST_FIRST, filter);
		_cleanup_free_ char *dest = pathf("%s/ok", f->root);
		struct kc_error *err = NULL;
		struct kc_manifest m;
		if (kc_archive_extract(arc, dest, &m, NULL, &err) < 0)
			fail_msg("extract: %s", err->msg);
		_cleanup_free_ char *p = pathf("%s/pages-1.img", dest);
		size_t len;
		_cleanup_free_ uint8_t *d = read_all(p, &len);
		assert_int_equal(len, strlen(good[1].data));
		assert_memory_equal(d, good[1].data, len);
		kc_manifest_free(&m);
		kc_rm_rf(dest, NULL);
		unlink(arc);
	}
}

static void test_path_traversal_refused(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *abs = pathf("%s/evil-abs", f->root);
	const struct ent cases[][3] = {
		{good[0], {"../evil", 0, "x", NULL}},
		{good[0], {"sub/../../evil", 0, "x", NULL}},
		{good[0], {abs, 0, "x", NULL}},
	};
	const char *why[] = {"'..' in path", "'..' in path", "absolute path"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(cases); i++) {
		_cleanup_free_ char *arc = build(f, "t.tar", good, 1, cases[i], 2, MANIFEST_FIRST, 0);
		refused(f, arc, KC_EXIT_IMAGE, "unsafe member", why[i]);
		_cleanup_free_ char *evil = pathf("%s/evil", f->root);
		assert_false(exists(evil));
		assert_false(exists(abs));
		unlink(arc);
	}
	/* a manifest that lists such a name is refused before any member */
	const struct ent bad_listed[] = {{"../evil", 0, "x", NULL}};
	_cleanup_free_ char *arc = build(f, "t.tar", bad_listed, 1, bad_listed, 1, MANIFEST_FIRST, 0);
	refused(f, arc, KC_EXIT_IMAGE, "bad manifest", "'..' in path");
	unlink(arc);
}

static void test_links_and_devices_refused(void **state)
{
	struct fx *f = *state;
	const struct ent cases[][2] = {
		{good[0], {"link", AE_IFLNK, NULL, "/etc"}},
		{good[0], {"pages-1.img", AE_IFLNK, NULL, "/etc/passwd"}},
		{good[0], {"pages-1.img", AE_IFREG, NULL, "core-1.img"}},
		{good[0], {"null", AE_IFCHR, NULL, NULL}},
		{good[0], {"fifo", AE_IFIFO, NULL, NULL}},
	};
	const char *why[] = {"symbolic link", "symbolic link", "hard link", "device", "fifo"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(cases); i++) {
		_cleanup_free_ char *arc = build(f, "l.tar", good, 2, cases[i], 2, MANIFEST_FIRST, 0);
		refused(f, arc, KC_EXIT_IMAGE, "unsafe member", why[i]);
		unlink(arc);
	}
}

static void test_duplicate_and_extra_refused(void **state)
{
	struct fx *f = *state;
	const struct ent dup[] = {good[0], good[1], good[0]};
	_cleanup_free_ char *a1 = build(f, "d.tar", good, 2, dup, 3, MANIFEST_FIRST, 0);
	refused(f, a1, KC_EXIT_IMAGE, "duplicate member 'core-1.img'", NULL);
	unlink(a1);

	const struct ent dup_manifest[] = {good[0], {KC_MANIFEST_NAME, 0, "{}", NULL}, good[1]};
	_cleanup_free_ char *a2 = build(f, "d.tar", good, 2, dup_manifest, 3, MANIFEST_FIRST, 0);
	refused(f, a2, KC_EXIT_IMAGE, "duplicate member 'kcheckpoint.json'", NULL);
	unlink(a2);

	const struct ent extra[] = {good[0], good[1], {"extra.img", 0, "surprise", NULL}};
	_cleanup_free_ char *a3 = build(f, "e.tar", good, 2, extra, 3, MANIFEST_FIRST, 0);
	refused(f, a3, KC_EXIT_IMAGE, "member 'extra.img'", "is not in the manifest");
	unlink(a3);

	const struct ent dir[] = {good[0], {"somedir", AE_IFDIR, NULL, NULL}, good[1]};
	_cleanup_free_ char *a4 = build(f, "e.tar", good, 2, dir, 3, MANIFEST_FIRST, 0);
	refused(f, a4, KC_EXIT_IMAGE, "member 'somedir'", "is not in the manifest");
	unlink(a4);

	_cleanup_free_ char *a5 = build(f, "m.tar", good, 2, good, 1, MANIFEST_FIRST, 0);
	refused(f, a5, KC_EXIT_IMAGE, "member 'pages-1.img' is missing", NULL);
	unlink(a5);

	const struct ent other_size[] = {good[0], {"pages-1.img", 0, "page data page dat", NULL}};
	_cleanup_free_ char *a6 = build(f, "s.tar", good, 2, other_size, 2, MANIFEST_FIRST, 0);
	refused(f, a6, KC_EXIT_IMAGE, "member 'pages-1.img'", "has size 18, the manifest says 19");
	unlink(a6);

	const struct ent other_data[] = {good[0], {"pages-1.img", 0, "page data PAGE data", NULL}};
	_cleanup_free_ char *a7 = build(f, "c.tar", good, 2, other_data, 2, MANIFEST_FIRST, 0);
	refused(f, a7, KC_EXIT_IMAGE, "checksum mismatch for member 'pages-1.img'", NULL);
	unlink(a7);
}

static void test_manifest_missing_or_not_first(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *a1 = build(f, "n.tar", good, 2, good, 2, NO_MANIFEST, 0);
	refused(f, a1, KC_EXIT_IMAGE, "not a kcheckpoint archive", "first member is 'core-1.img', not 'kcheckpoint.json'");
	unlink(a1);
	_cleanup_free_ char *a2 = build(f, "n.tar", good, 2, good, 2, MANIFEST_SECOND, 1);
	refused(f, a2, KC_EXIT_IMAGE, "not a kcheckpoint archive", "first member is 'core-1.img'");
	unlink(a2);

	/* a manifest that is not one */
	struct archive *a = archive_write_new();
	_cleanup_free_ char *a3 = pathf("%s/j.tar", f->root);
	archive_write_set_format_pax_restricted(a);
	assert_int_equal(archive_write_open_filename(a, a3), ARCHIVE_OK);
	add_entry(a, KC_MANIFEST_NAME, AE_IFREG, "{\"tool\":", NULL);
	archive_write_free(a);
	refused(f, a3, KC_EXIT_IMAGE, "bad manifest in", "not valid JSON");
	unlink(a3);
}

static void test_wrong_format_refused(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *junk = pathf("%s/junk.tar.zst", f->root);
	_cleanup_free_ uint8_t *noise = mixed(100000, 9);
	write_file(junk, noise + 4096, 20000); /* the noise part */
	refused(f, junk, KC_EXIT_IMAGE, "is not a kcheckpoint archive", NULL);
	write_file(junk, "", 0);
	refused(f, junk, KC_EXIT_IMAGE, "is not a kcheckpoint archive", NULL);
	/* a zstd frame with garbage inside */
	write_file(junk, "\x28\xb5\x2f\xfd\x00\x58\xff\xff\xff\xff\xff\xff", 12);
	refused(f, junk, KC_EXIT_IMAGE, "is not a kcheckpoint archive", NULL);
	unlink(junk);
	_cleanup_free_ char *gz = build(f, "g.tar.gz", good, 2, good, 2, MANIFEST_FIRST, 2);
	refused(f, gz, KC_EXIT_IMAGE, "is not a kcheckpoint archive", NULL);
	unlink(gz);

	struct kc_error *err = NULL;
	struct kc_manifest m;
	_cleanup_free_ char *nope = pathf("%s/nope.tar.zst", f->root);
	assert_int_equal(kc_archive_read_manifest(nope, &m, &err), -1);
	assert_err(err, KC_EXIT_NOENT, "cannot open", "no such file or directory");
	kc_error_free(err);
	err = NULL;
	assert_int_equal(kc_archive_verify(f->img, &m, &err), -1);
	assert_err(err, KC_EXIT_IMAGE, "is not a kcheckpoint archive", NULL);
	kc_error_free(err);
}

static void copy_prefix(const char *from, const char *to, size_t len)
{
	size_t n;
	_cleanup_free_ uint8_t *d = read_all(from, &n);
	assert_true(len <= n);
	write_file(to, d, len);
}

static void test_truncated_refused(void **state)
{
	struct fx *f = *state;
	for (int z = 0; z < 2; z++) {
		struct kc_manifest m;
		const char *name = z ? "t.tar.zst" : "t.tar";
		write_ok(f, name, z ? "zstd" : "none", 2, &m);
		kc_manifest_free(&m);
		_cleanup_free_ char *arc = pathf("%s/%s", f->root, name);
		_cleanup_free_ char *cut = pathf("%s/cut", f->root);
		struct stat sb;
		assert_int_equal(stat(arc, &sb), 0);
		size_t size = (size_t)sb.st_size;
		size_t at[] = {size / 10, size / 3, size / 2, size - 10000, size - 1};
		rename(arc, cut);
		for (size_t i = 0; i < KC_ARRAY_SIZE(at); i++) {
			copy_prefix(cut, arc, at[i]);
			refused(f, arc, KC_EXIT_IMAGE, "is truncated", NULL);
		}
		unlink(cut);
		unlink(arc);
	}
}

static void flip_byte(const char *path, size_t at)
{
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)at), 1);
	b ^= 0x20;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)at), 1);
	close(fd);
}

/* Offset of the first byte of member data in a plain tar, -1 if absent. */
static ssize_t find_in_file(const char *path, const void *needle, size_t n)
{
	size_t len;
	_cleanup_free_ uint8_t *d = read_all(path, &len);
	void *p = memmem(d, len, needle, n);
	return p ? (uint8_t *)p - d : -1;
}

static void test_corrupted_byte_refused(void **state)
{
	struct fx *f = *state;
	struct kc_manifest m;
	struct kc_error *err = NULL;
	/* plain tar: the checksum catches it and names the member */
	write_ok(f, "c.tar", "none", 2, &m);
	kc_manifest_free(&m); /* the reads below fill it again */
	_cleanup_free_ char *arc = pathf("%s/c.tar", f->root);
	_cleanup_free_ char *core = pathf("%s/core-1.img", f->img);
	size_t len;
	_cleanup_free_ uint8_t *cd = read_all(core, &len);
	ssize_t off = find_in_file(arc, cd + 4200, 64); /* a noise block */
	assert_true(off > 0);
	flip_byte(arc, (size_t)off);
	refused(f, arc, KC_EXIT_IMAGE, "checksum mismatch for member 'core-1.img'", NULL);
	assert_int_equal(kc_archive_verify(arc, &m, &err), -1);
	assert_err(err, KC_EXIT_IMAGE, "checksum mismatch for member 'core-1.img'", NULL);
	kc_error_free(err);
	err = NULL;
	/* verify goes on and names every bad member */
	_cleanup_free_ char *pages = pathf("%s/pages-2.img", f->img);
	_cleanup_free_ uint8_t *pd = read_all(pages, &len);
	off = find_in_file(arc, pd + MIB + 4096 + 17, 64);
	assert_true(off > 0);
	flip_byte(arc, (size_t)off);
	assert_int_equal(kc_archive_verify(arc, &m, &err), -1);
	assert_err(err, KC_EXIT_IMAGE, "checksum mismatch for members 'core-1.img', 'pages-2.img'", NULL);
	kc_error_free(err);
	err = NULL;
	kc_manifest_free(&m);
	unlink(arc);

	/* zstd: a flipped byte anywhere in the data is refused */
	write_ok(f, "c.tar.zst", "zstd", 2, &m);
	kc_manifest_free(&m);
	_cleanup_free_ char *zarc = pathf("%s/c.tar.zst", f->root);
	struct stat sb;
	assert_int_equal(stat(zarc, &sb), 0);
	size_t at[] = {(size_t)sb.st_size / 3, (size_t)sb.st_size / 2, (size_t)sb.st_size - 200};
	for (size_t i = 0; i < KC_ARRAY_SIZE(at); i++) {
		flip_byte(zarc, at[i]);
		refused(f, zarc, KC_EXIT_IMAGE, "c.tar.zst'", NULL);
		assert_int_equal(kc_archive_verify(zarc, &m, &err), -1);
		assert_err(err, KC_EXIT_IMAGE, "c.tar.zst'", NULL);
		kc_error_free(err);
		err = NULL;
		flip_byte(zarc, at[i]);
	}
	assert_int_equal(kc_archive_verify(zarc, &m, &err), 0); /* flipped back: fine again */
	kc_manifest_free(&m);
	unlink(zarc);
}

static void test_dest_must_be_empty(void **state)
{
	struct fx *f = *state;
	struct kc_manifest m;
	struct kc_error *err = NULL;
	write_ok(f, "a.tar.zst", NULL, 0, &m);
	kc_manifest_free(&m);
	_cleanup_free_ char *arc = pathf("%s/a.tar.zst", f->root);
	_cleanup_free_ char *dest = pathf("%s/full", f->root);
	_cleanup_free_ char *mine = pathf("%s/full/mine", f->root);
	write_file(mine, "keep", 4);
	assert_int_equal(kc_archive_extract(arc, dest, &m, NULL, &err), -1);
	assert_err(err, KC_EXIT_FAILURE, "directory not empty", NULL);
	kc_error_free(err);
	assert_int_equal(count_entries(dest), 1);
	assert_true(exists(mine));
}

/* ---- writing failures --------------------------------------------------------- */

static void assert_write_fails(struct fx *f, const char *img, int code, const char *w1, const char *w2)
{
	struct kc_manifest m;
	struct kc_error *err = NULL;
	fill_manifest(&m);
	_cleanup_free_ char *out = pathf("%s/out/x.tar.zst", f->root);
	_cleanup_free_ char *outdir = pathf("%s/out", f->root);
	kc_mkdir_p(outdir, 0700, NULL);
	write_file(out, "old archive", 11);
	struct kc_archive_opts o = {0};
	assert_int_equal(kc_archive_write(img, &m, out, &o, NULL, &err), -1);
	assert_err(err, code, w1, w2);
	kc_error_free(err);
	/* the old file is untouched and no temporary is left */
	size_t len;
	_cleanup_free_ uint8_t *d = read_all(out, &len);
	assert_int_equal(len, 11);
	assert_memory_equal(d, "old archive", 11);
	assert_int_equal(count_entries(outdir), 1);
	kc_manifest_free(&m);
}

static void test_write_refuses_bad_image_dir(void **state)
{
	struct fx *f = *state;
	_cleanup_free_ char *missing = pathf("%s/missing", f->root);
	assert_write_fails(f, missing, KC_EXIT_NOENT, "cannot open", "no such file or directory");

	_cleanup_free_ char *fifo = pathf("%s/sub/fifo", f->img);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_write_fails(f, f->img, KC_EXIT_IMAGE, "sub/fifo", "not a regular file");
	unlink(fifo);

	_cleanup_free_ char *link = pathf("%s/link.img", f->img);
	assert_int_equal(symlink("/etc/passwd", link), 0);
	assert_write_fails(f, f->img, KC_EXIT_IMAGE, "link.img", "not a regular file");
	unlink(link);

	struct kc_error *err = NULL;
	struct kc_manifest m;
	fill_manifest(&m);
	_cleanup_free_ char *nodir = pathf("%s/no/such/dir/x.tar.zst", f->root);
	assert_int_equal(kc_archive_write(f->img, &m, nodir, NULL, NULL, &err), -1);
	assert_err(err, KC_EXIT_NOENT, "cannot create", NULL);
	kc_error_free(err);
	err = NULL;
	struct kc_archive_opts bad = {.compression = "lz4"};
	assert_int_equal(kc_archive_write(f->img, &m, nodir, &bad, NULL, &err), -1);
	assert_err(err, KC_EXIT_USAGE, "invalid compression 'lz4'", NULL);
	kc_error_free(err);
	kc_manifest_free(&m);
}

/* A file that appeared under the name while the dump ran (another dump to
 * the same -o, say) is never replaced: the publish fails, busy. */
static void test_write_never_replaces(void **state)
{
	struct fx *f = *state;
	struct kc_manifest m;
	struct kc_error *err = NULL;
	fill_manifest(&m);
	_cleanup_free_ char *out = pathf("%s/r.tar.zst", f->root);
	write_file(out, "old", 3);
	assert_int_equal(kc_archive_write(f->img, &m, out, NULL, NULL, &err), -1);
	assert_err(err, KC_EXIT_BUSY, "appeared while this dump ran", NULL);
	kc_error_free(err);
	kc_manifest_free(&m);
	_cleanup_free_ char *text = NULL;
	assert_int_equal(kc_read_file(out, &text, NULL, NULL), 0);
	assert_string_equal(text, "old");
	assert_int_equal(count_entries(f->root), 2); /* no temporary left */
}

static void test_interrupted(void **state)
{
	struct fx *f = *state;
	struct kc_manifest m;
	struct kc_error *err = NULL;
	write_ok(f, "i.tar.zst", NULL, 0, &m);
	kc_manifest_free(&m);
	kc_signals_raise_for_test(SIGINT);
	assert_write_fails(f, f->img, KC_EXIT_INTERRUPTED, "interrupted", NULL);
	_cleanup_free_ char *arc = pathf("%s/i.tar.zst", f->root);
	_cleanup_free_ char *dest = pathf("%s/i", f->root);
	assert_int_equal(kc_archive_extract(arc, dest, &m, NULL, &err), -1);
	assert_err(err, KC_EXIT_INTERRUPTED, "interrupted", NULL);
	kc_error_free(err);
	assert_false(exists(dest));
	kc_signals_reset();
}

/*
 * Disk full, for real: a 2 MiB tmpfs in a private mount namespace (a child
 * process, so the test's own namespace is untouched).  Reported as skipped
 * where mounting is not allowed.
 */
static int disk_full_child(struct fx *f, const char *mnt)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", mnt, "tmpfs", 0, "size=2m") < 0)
		return 77;
	struct kc_manifest m;
	struct kc_error *err = NULL;
	fill_manifest(&m);
	_cleanup_free_ char *out = pathf("%s/x.tar", mnt);
	struct kc_archive_opts o = {.compression = "none"};
	if (kc_archive_write(f->img, &m, out, &o, NULL, &err) == 0)
		return 1;
	if (err->exit_code != KC_EXIT_IMAGE || !strstr(err->msg, "cannot write") ||
	    !strstr(err->msg, "no space left on device")) {
		fprintf(stderr, "write: exit %d '%s'\n", err->exit_code, err->msg);
		return 2;
	}
	if (count_entries(mnt) != 0)
		return 3;
	/* and unpacking into it */
	kc_error_free(err);
	err = NULL;
	kc_manifest_free(&m);
	_cleanup_free_ char *arc = pathf("%s/a.tar.zst", f->root);
	_cleanup_free_ char *dest = pathf("%s/dest", mnt);
	if (kc_archive_extract(arc, dest, &m, NULL, &err) == 0)
		return 4;
	if (err->exit_code != KC_EXIT_IMAGE || !strstr(err->msg, "no space left on device")) {
		fprintf(stderr, "extract: exit %d '%s'\n", err->exit_code, err->msg);
		return 5;
	}
	return count_entries(mnt) == 0 ? 0 : 6;
}

static void test_disk_full(void **state)
{
	struct fx *f = *state;
	struct kc_manifest m;
	write_ok(f, "a.tar.zst", NULL, 0, &m);
	kc_manifest_free(&m);
	_cleanup_free_ char *mnt = pathf("%s/small", f->root);
	assert_int_equal(mkdir(mnt, 0700), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(disk_full_child(f, mnt));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_member_path_rules(void **state)
{
	(void)state;
	const char *ok[] = {"a", "core-1.img", "a/b/c", "a..b", ".hidden", "a/.b"};
	const char *bad[] = {"", "/a", "a//b", "a/", "..", "../a", "a/..", "a/../b", ".", "./a", "a/./b", "a\nb", "a\x1b[2J"};
	for (size_t i = 0; i < KC_ARRAY_SIZE(ok); i++)
		assert_null(kc_archive_path_problem(ok[i]));
	for (size_t i = 0; i < KC_ARRAY_SIZE(bad); i++)
		assert_non_null(kc_archive_path_problem(bad[i]));
	int level;
	assert_int_equal(kc_archive_parse_compression("zstd:19", &level, NULL), 0);
	assert_int_equal(level, 19);
	assert_int_equal(kc_archive_parse_compression("none", &level, NULL), 0);
	assert_int_equal(level, 0);
	assert_int_equal(kc_archive_parse_compression(NULL, &level, NULL), 0);
	assert_int_equal(level, KC_ARCHIVE_DEFAULT_LEVEL);
	assert_int_equal(kc_archive_parse_compression("zstd:0", &level, NULL), -1);
	assert_int_equal(kc_archive_parse_compression("zstd:", &level, NULL), -1);
	assert_int_equal(kc_archive_parse_compression("zstd:3x", &level, NULL), -1);
	assert_true(kc_archive_is_file("/proc/self/status"));
	assert_false(kc_archive_is_file("/tmp"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_sha256_two_at_once),
		cmocka_unit_test(test_treehash_matches_reference),
		cmocka_unit_test(test_member_path_rules),
		cmocka_unit_test_setup_teardown(test_roundtrip_zstd_default, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_zstd_level_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_one_thread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_standard_readers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_writer_accepted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_path_traversal_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_links_and_devices_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_and_extra_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_manifest_missing_or_not_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_format_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupted_byte_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dest_must_be_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_refuses_bad_image_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_never_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_interrupted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rm_rf_any_depth, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
