/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reading side of an archive's threads: one feeder reads the file and
 * hands whole zstd frames (the size hints, archive_internal.h) to the
 * pool, or, in a regular file, only their hints: each worker then reads
 * its own frame; frames without a hint it decodes itself.  libarchive, on
 * the caller's thread, takes the decoded tar in order (kc_ar_la_read).
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <zstd.h>

#include "archive_read_int.h"
#include "kc/archive.h"
#include "kc/signals.h"
#include "kc/util.h"

/* ---- the decompressor thread ------------------------------------------------- */

static bool is_zstd(const uint8_t *p, size_t n)
{
	if (n < 4)
		return false;
	uint32_t magic = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	return magic == ZSTD_MAGICNUMBER || (magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

static void dfail(struct rctx *c, enum derr_kind k, const char *detail)
{
	pthread_mutex_lock(&c->mu);
	if (c->dkind == D_OK) {
		c->dkind = k;
		c->ddetail = kc_xstrdup(detail);
		/* zstd says "Restored data doesn't match checksum": our style is lowercase */
		if (c->ddetail[0] >= 'A' && c->ddetail[0] <= 'Z' && !(c->ddetail[1] >= 'A' && c->ddetail[1] <= 'Z'))
			c->ddetail[0] = (char)(c->ddetail[0] - 'A' + 'a');
	}
	c->deof = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static ssize_t read_some(struct rctx *c, uint8_t *buf, size_t cap)
{
	for (;;) {
		ssize_t r = read(c->fd, buf, cap);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			char msg[128];
			snprintf(msg, sizeof(msg), "%s", strerror(errno));
			if (msg[0] >= 'A' && msg[0] <= 'Z' && !(msg[1] >= 'A' && msg[1] <= 'Z'))
				msg[0] = (char)(msg[0] - 'A' + 'a');
			dfail(c, D_IO, msg);
			return -1;
		}
		c->archive_bytes += (uint64_t)r;
		return r;
	}
}

struct inbuf {
	uint8_t *b;
	size_t pos, len;
	bool eof;
};

/* At least `need` unread bytes in ib unless the input ends first. */
static int in_fill(struct rctx *c, struct inbuf *ib, size_t need)
{
	while (ib->len - ib->pos < need && !ib->eof) {
		if (ib->pos) {
			memmove(ib->b, ib->b + ib->pos, ib->len - ib->pos);
			ib->len -= ib->pos;
			ib->pos = 0;
		}
		ssize_t r = read_some(c, ib->b + ib->len, IBUF - ib->len);
		if (r < 0)
			return -1;
		ib->eof = r == 0;
		ib->len += (size_t)r;
	}
	return 0;
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The next free item in order; NULL once told to stop. */
static struct ritem *feeder_item(struct rctx *c)
{
	pthread_mutex_lock(&c->mu);
	while (c->dprod - c->dcons >= ITEMS && !c->dstop)
		pthread_cond_wait(&c->cv, &c->mu);
	bool stop = c->dstop;
	pthread_mutex_unlock(&c->mu);
	if (stop)
		return NULL;
	struct ritem *it = &c->items[c->dprod % ITEMS];
	it->pending = false;
	it->out_len = 0;
	it->in_len = 0;
	it->zerr = 0;
	it->from_file = false;
	it->ioerr = 0;
	return it;
}

static void feeder_publish(struct rctx *c)
{
	pthread_mutex_lock(&c->mu);
	c->dprod++;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static void decomp_job(struct kc_ar_job *j)
{
	struct ritem *it = (struct ritem *)j;
	struct rctx *c = it->c;
	pthread_mutex_lock(&c->mu);
	ZSTD_DCtx *d = c->n_dctx_free ? c->dctx_free[--c->n_dctx_free] : NULL;
	pthread_mutex_unlock(&c->mu);
	if (!d && !(d = ZSTD_createDCtx()))
		abort();
	it->ioerr = 0;
	if (it->from_file) {
		ssize_t got = 0;
		while ((size_t)got < it->in_len) {
			ssize_t r = pread(c->fd, it->in + got, it->in_len - (size_t)got, (off_t)(it->file_off + (uint64_t)got));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				it->ioerr = r < 0 ? errno : -1;
				break;
			}
			got += r;
		}
	}
	size_t n = it->ioerr ? 0 : ZSTD_decompressDCtx(d, it->out, OUT_CAP, it->in, it->in_len);
	pthread_mutex_lock(&c->mu);
	c->dctx_free[c->n_dctx_free++] = d;
	pthread_mutex_unlock(&c->mu);
	it->zerr = !it->ioerr && ZSTD_isError(n) ? n : 0;
	it->out_len = it->ioerr || ZSTD_isError(n) ? 0 : n;
}

/*
 * From the hint at file offset pos on: while hinted frames follow, only
 * their hints are read here and each worker reads its own frame with
 * pread, so no single thread copies the archive.  Returns the offset of
 * the first thing that is not a hinted frame (or the end); the file
 * position is set there and ib emptied for the caller to go on.
 */
static int feed_seekable(struct rctx *c, struct inbuf *ib, struct ritem **cur, uint64_t pos)
{
	for (;;) {
		uint8_t h[12];
		ssize_t r;
		do
			r = pread(c->fd, h, sizeof(h), (off_t)pos);
		while (r < 0 && errno == EINTR);
		if (r != (ssize_t)sizeof(h) || get_le32(h) != KC_ZSTD_HINT_MAGIC || get_le32(h + 4) != 4)
			break;
		size_t csize = get_le32(h + 8);
		if (csize == 0 || csize > IN_CAP) {
			dfail(c, D_CORRUPT, "bad frame size");
			return -1;
		}
		if (*cur && (*cur)->out_len) {
			feeder_publish(c);
			*cur = NULL;
		}
		struct ritem *it = *cur ? *cur : feeder_item(c);
		*cur = NULL;
		if (!it)
			return -1;
		it->from_file = true;
		it->file_off = pos + 12;
		it->in_len = csize;
		it->pending = true;
		kc_ar_pool_submit(&c->pool, &it->job, decomp_job);
		feeder_publish(c);
		pos += 12 + csize;
	}
	if (lseek(c->fd, (off_t)pos, SEEK_SET) < 0) {
		dfail(c, D_IO, strerror(errno));
		return -1;
	}
	c->archive_bytes = pos;
	ib->pos = ib->len = 0;
	ib->eof = false;
	return 0;
}

/* A frame with a size hint: read it whole, a worker decodes it. */
static int feed_hinted(struct rctx *c, struct inbuf *ib, struct ritem **cur, size_t csize)
{
	struct ritem *it = *cur ? *cur : feeder_item(c);
	*cur = NULL;
	if (!it)
		return -1;
	size_t have = ib->len - ib->pos < csize ? ib->len - ib->pos : csize;
	memcpy(it->in, ib->b + ib->pos, have);
	ib->pos += have;
	while (have < csize) {
		ssize_t r = read_some(c, it->in + have, csize - have);
		if (r < 0)
			return -1;
		if (r == 0) {
			dfail(c, D_TRUNCATED, "");
			return -1;
		}
		have += (size_t)r;
	}
	it->in_len = csize;
	it->pending = true;
	kc_ar_pool_submit(&c->pool, &it->job, decomp_job);
	feeder_publish(c);
	return 0;
}

/* Any other frame (the manifest's, padding, someone else's): decode here. */
static int feed_stream(struct rctx *c, ZSTD_DCtx *d, struct inbuf *ib, struct ritem **cur)
{
	for (;;) {
		if (!*cur && !(*cur = feeder_item(c)))
			return -1;
		if (ib->pos == ib->len && in_fill(c, ib, 1) < 0)
			return -1;
		ZSTD_inBuffer in = {ib->b, ib->len, ib->pos};
		ZSTD_outBuffer out = {(*cur)->out, OUT_CAP, (*cur)->out_len};
		size_t r = ZSTD_decompressStream(d, &out, &in);
		if (ZSTD_isError(r)) {
			dfail(c, D_CORRUPT, ZSTD_getErrorName(r));
			return -1;
		}
		bool progress = in.pos != ib->pos || out.pos != (*cur)->out_len;
		ib->pos = in.pos;
		(*cur)->out_len = out.pos;
		if ((*cur)->out_len == OUT_CAP) {
			feeder_publish(c);
			*cur = NULL;
		}
		if (r == 0)
			return 0;
		if (!progress && ib->pos == ib->len && ib->eof) {
			dfail(c, D_TRUNCATED, "");
			return -1;
		}
	}
}

static void feed_zstd(struct rctx *c, struct inbuf *ib)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	if (!d)
		abort();
	ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, WINDOW_LOG_MAX);
	struct ritem *cur = NULL;
	for (;;) {
		if (in_fill(c, ib, 12) < 0)
			break;
		if (ib->pos == ib->len) {
			if (cur && cur->out_len)
				feeder_publish(c);
			pthread_mutex_lock(&c->mu);
			c->deof = true;
			pthread_cond_broadcast(&c->cv);
			pthread_mutex_unlock(&c->mu);
			break;
		}
		const uint8_t *h = ib->b + ib->pos;
		if (ib->len - ib->pos >= 12 && get_le32(h) == KC_ZSTD_HINT_MAGIC && get_le32(h + 4) == 4) {
			size_t csize = get_le32(h + 8);
			if (csize == 0 || csize > IN_CAP) {
				dfail(c, D_CORRUPT, "bad frame size");
				break;
			}
			if (c->seekable) {
				if (feed_seekable(c, ib, &cur, c->archive_bytes - (ib->len - ib->pos)) < 0)
					break;
				continue;
			}
			ib->pos += 12;
			if (cur && cur->out_len) {
				feeder_publish(c);
				cur = NULL;
			}
			if (feed_hinted(c, ib, &cur, csize) < 0)
				break;
		} else if (feed_stream(c, d, ib, &cur) < 0) {
			break;
		}
	}
	ZSTD_freeDCtx(d);
}

static void feed_plain(struct rctx *c, struct inbuf *ib)
{
	for (;;) {
		struct ritem *it = feeder_item(c);
		if (!it)
			return;
		size_t len = ib->len - ib->pos;
		memcpy(it->out, ib->b + ib->pos, len);
		ib->pos = ib->len;
		while (len < OUT_CAP && !ib->eof) {
			ssize_t r = read_some(c, it->out + len, OUT_CAP - len);
			if (r < 0)
				return;
			ib->eof = r == 0;
			len += (size_t)r;
		}
		it->out_len = len;
		pthread_mutex_lock(&c->mu);
		if (len)
			c->dprod++;
		if (ib->eof)
			c->deof = true;
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mu);
		if (ib->eof)
			return;
	}
}

void *kc_ar_feeder_main(void *arg)
{
	struct rctx *c = arg;
	struct inbuf ib = {.b = kc_xmalloc(IBUF)};
	if (in_fill(c, &ib, 4) == 0) {
		c->zstd = is_zstd(ib.b, ib.len);
		if (c->zstd)
			feed_zstd(c, &ib);
		else
			feed_plain(c, &ib);
	}
	free(ib.b);
	return NULL;
}

/* Tracks whether the stream ends in tar's end-of-archive blocks, reading
 * at most 1 KiB of each buffer. */
static void note_tail(struct rctx *c, const uint8_t *p, size_t n)
{
	c->tar_bytes += n;
	size_t look = n < 1024 ? n : 1024, z = 0;
	while (z < look && p[n - 1 - z] == 0)
		z++;
	if (z == n)
		z = c->zero_tail + n;
	c->zero_tail = z < 1024 ? z : 1024;
}

la_ssize_t kc_ar_la_read(struct archive *a, void *ud, const void **buf)
{
	struct rctx *c = ud;
	for (;;) {
		pthread_mutex_lock(&c->mu);
		if (c->handed) {
			c->dcons++;
			c->handed = false;
			pthread_cond_broadcast(&c->cv);
		}
		while (c->dprod == c->dcons && !c->deof)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->dprod == c->dcons) {
			bool failed = c->dkind != D_OK;
			pthread_mutex_unlock(&c->mu);
			if (failed) {
				archive_set_error(a, EIO, "kcheckpoint: input failed");
				return -1;
			}
			return 0;
		}
		struct ritem *it = &c->items[c->dcons % ITEMS];
		c->handed = true;
		pthread_mutex_unlock(&c->mu);
		if (it->pending) {
			kc_ar_pool_wait(&c->pool, &it->job);
			it->pending = false;
			if (it->ioerr) {
				if (it->ioerr < 0)
					dfail(c, D_TRUNCATED, "");
				else
					dfail(c, D_IO, strerror(it->ioerr));
				archive_set_error(a, EIO, "kcheckpoint: input failed");
				return -1;
			}
			if (it->zerr) {
				dfail(c, D_CORRUPT, ZSTD_getErrorName(it->zerr));
				archive_set_error(a, EIO, "kcheckpoint: input failed");
				return -1;
			}
		}
		if (it->out_len) {
			note_tail(c, it->out, it->out_len);
			*buf = it->out;
			return (la_ssize_t)it->out_len;
		}
	}
}

void kc_ar_stop_decompressor(struct rctx *c)
{
	if (!c->dthread_started)
		return;
	pthread_mutex_lock(&c->mu);
	c->dstop = true;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->dthread, NULL);
	c->dthread_started = false;
}

