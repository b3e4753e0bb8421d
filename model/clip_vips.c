/*
 * clip_vips.c: the decode guard (clip_vips.h): a JPEG scan count from the
 * raw bytes, and a deadline enforced through the guard's source and
 * libvips' eval signals.
 *
 * The source is a VipsSourceCustom over our own backing (a buffer, or a
 * duplicate of the caller's descriptor read with pread), so every read
 * libvips makes passes through read_cb, which refuses once the deadline
 * has passed. A custom source is never mapped by libvips, so this holds
 * for loaders that would otherwise take a memory source in one piece.
 *
 * The scan count walks the JPEG's marker segments the way libjpeg's
 * marker reader does: bytes before a marker are skipped, 0xFF fill bytes
 * are skipped, RSTn and TEM have no length, every other marker has a
 * 2-byte length; after an SOS header the entropy-coded data runs to the
 * next 0xFF that is not followed by 0x00 (a stuffed byte) or an RSTn.
 * The walk stops at EOI, at the end of the data, or at a marker length
 * below 2 (libjpeg stops with an error there itself).
 *
 * DESIGN: threads. A guard is used by one thread. libvips may emit eval
 * from whichever thread runs a sink's progress: on_eval reads the clock
 * and the guard's constant fields, and sets `expired` (atomic) and the
 * image's kill flag, which libvips reads from its own threads by design.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clip_int.h"
#include "clip_vips.h"

#define MAX_WATCHED 4
/* Bytes read at a time for the scan count of a file. */
#define SCAN_CHUNK ((size_t)64 << 10)

struct clip_guard {
	const uint8_t *data;   /* buffer backing, or NULL */
	size_t len;            /* its length */
	int fd;                /* file backing (our duplicate), or -1 */
	int64_t pos;           /* read position of the source */
	int64_t size;          /* bytes in the backing; -1: unknown (fd) */
	VipsSource *src;       /* a VipsSourceCustom over the backing */
	int max_scans;
	int timeout_ms;
	int64_t deadline_ns;   /* CLOCK_MONOTONIC */
	atomic_int expired;    /* the deadline was seen to pass */
	VipsImage *watched[MAX_WATCHED];
	gulong handler[MAX_WATCHED];
	int nwatched;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int clip_guard_expired(clip_guard *g)
{
	if (atomic_load(&g->expired))
		return 1;
	if (now_ns() < g->deadline_ns)
		return 0;
	atomic_store(&g->expired, 1);
	return 1;
}

int clip_guard_timeout_error(const clip_guard *g, clip_err *err)
{
	if (g->timeout_ms % 1000 == 0)
		return clip_fail(err, CLIP_ELIMIT,
		                 "image took longer to decode than the limit of %d s", g->timeout_ms / 1000);
	return clip_fail(err, CLIP_ELIMIT, "image took longer to decode than the limit of %d ms",
	                 g->timeout_ms);
}

/* ---- the source ---- */

static gint64 read_cb(VipsSourceCustom *sc, void *buf, gint64 n, clip_guard *g)
{
	(void)sc;
	if (n <= 0)
		return 0;
	if (clip_guard_expired(g))
		return -1; /* libvips: a read error, the load fails */
	if (g->fd < 0) {
		if (g->pos >= (int64_t)g->len)
			return 0;
		if (n > (int64_t)g->len - g->pos)
			n = (int64_t)g->len - g->pos;
		memcpy(buf, g->data + g->pos, (size_t)n);
		g->pos += n;
		return n;
	}
	for (;;) {
		ssize_t r = pread(g->fd, buf, (size_t)n, (off_t)g->pos);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		g->pos += r;
		return r;
	}
}

static gint64 seek_cb(VipsSourceCustom *sc, gint64 off, int whence, clip_guard *g)
{
	int64_t base;
	(void)sc;
	if (whence == SEEK_SET) {
		base = 0;
	} else if (whence == SEEK_CUR) {
		base = g->pos;
	} else if (whence == SEEK_END) {
		if (g->size < 0) {
			off_t end = lseek(g->fd, 0, SEEK_END);
			if (end < 0)
				return -1;
			g->size = end;
		}
		base = g->size;
	} else {
		return -1;
	}
	if (off < -base)
		return -1;
	g->pos = base + off;
	return g->pos;
}

static int guard_new(const clip_image_limits *lim, clip_guard **out, clip_err *err)
{
	clip_guard *g = calloc(1, sizeof *g);
	VipsSourceCustom *sc;

	*out = NULL;
	if (!g)
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	g->fd = -1;
	g->size = -1;
	g->max_scans = lim && lim->max_scans > 0 ? lim->max_scans : CLIP_DEFAULT_MAX_SCANS;
	g->timeout_ms = lim && lim->decode_timeout_ms > 0 ? lim->decode_timeout_ms
	                                                  : CLIP_DEFAULT_DECODE_TIMEOUT_MS;
	g->deadline_ns = now_ns() + (int64_t)g->timeout_ms * 1000000;
	sc = vips_source_custom_new();
	if (!sc) {
		vips_error_clear();
		free(g);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	g_signal_connect(sc, "read", G_CALLBACK(read_cb), g);
	g_signal_connect(sc, "seek", G_CALLBACK(seek_cb), g);
	g->src = VIPS_SOURCE(sc);
	*out = g;
	return CLIP_OK;
}

int clip_guard_open_buffer(const void *data, size_t len, const clip_image_limits *lim,
                           clip_guard **out, clip_err *err)
{
	int rc = guard_new(lim, out, err);
	if (rc)
		return rc;
	(*out)->data = data;
	(*out)->len = len;
	(*out)->size = (int64_t)len;
	return CLIP_OK;
}

int clip_guard_open_fd(int fd, const clip_image_limits *lim, clip_guard **out, clip_err *err)
{
	char ebuf[128];
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	int rc;

	*out = NULL;
	if (dup_fd < 0)
		return clip_fail(err, CLIP_EIO, "cannot read the image file: %s",
		                 strerror_r(errno, ebuf, sizeof ebuf));
	if ((rc = guard_new(lim, out, err))) {
		close(dup_fd);
		return rc;
	}
	(*out)->fd = dup_fd;
	return CLIP_OK;
}

VipsSource *clip_guard_source(clip_guard *g)
{
	return g->src;
}

/* ---- eval ---- */

static void on_eval(VipsImage *im, VipsProgress *p, clip_guard *g)
{
	if (!clip_guard_expired(g))
		return;
	/* p->im is the image being computed (a loader's own, when im only
	 * relays its signals): that is the one its sink checks. */
	if (p && p->im)
		vips_image_set_kill(p->im, TRUE);
	vips_image_set_kill(im, TRUE);
}

void clip_guard_watch(clip_guard *g, VipsImage *im)
{
	if (!im || g->nwatched == MAX_WATCHED)
		return;
	vips_image_set_progress(im, TRUE);
	g->handler[g->nwatched] = g_signal_connect(im, "eval", G_CALLBACK(on_eval), g);
	g_object_ref(im);
	g->watched[g->nwatched++] = im;
}

void clip_guard_close(clip_guard *g)
{
	if (!g)
		return;
	for (int i = 0; i < g->nwatched; i++) {
		g_signal_handler_disconnect(g->watched[i], g->handler[i]);
		g_object_unref(g->watched[i]);
	}
	if (g->src) {
		/* The source may outlive us in a libvips object: no more
		 * callbacks into a freed guard. */
		g_signal_handlers_disconnect_by_data(g->src, g);
		g_object_unref(g->src);
	}
	if (g->fd >= 0)
		close(g->fd);
	free(g);
}

/* ---- the JPEG scan count ---- */

enum walk_state {
	W_SOI0, W_SOI1,      /* FF D8 */
	W_SKIP,              /* before a marker: look for FF */
	W_FF,                /* after FF outside entropy-coded data */
	W_LEN0, W_LEN1,      /* a segment's length */
	W_BODY,              /* skipping a segment's body */
	W_ECS,               /* entropy-coded data */
	W_ECS_FF,            /* FF inside it */
	W_DONE,
};

typedef struct walker {
	enum walk_state st;
	int marker;          /* of the segment being read */
	unsigned seglen;
	size_t left;         /* body bytes still to skip */
	int scans;
	int not_jpeg;
} walker;

/* A marker byte m after FF. */
static void walk_marker(walker *w, int m)
{
	if (m == 0xd9) {
		w->st = W_DONE;
	} else if (m == 0x01 || (m >= 0xd0 && m <= 0xd8)) {
		w->st = W_SKIP; /* no length (a stray SOI is skipped too) */
	} else {
		w->marker = m;
		w->st = W_LEN0;
	}
}

/* Feeds p[n] to the walk; stops early once over `limit` scans or done. */
static void walk(walker *w, const uint8_t *p, size_t n, int limit)
{
	const uint8_t *end = p + n;
	while (p < end && w->st != W_DONE && w->scans <= limit) {
		switch (w->st) {
		case W_SOI0:
		case W_SOI1:
			if (*p++ != (w->st == W_SOI0 ? 0xff : 0xd8)) {
				w->not_jpeg = 1;
				w->st = W_DONE;
			} else {
				w->st = w->st == W_SOI0 ? W_SOI1 : W_SKIP;
			}
			break;
		case W_SKIP:
		case W_ECS: {
			const uint8_t *ff = memchr(p, 0xff, (size_t)(end - p));
			if (!ff)
				return;
			p = ff + 1;
			w->st = w->st == W_SKIP ? W_FF : W_ECS_FF;
			break;
		}
		case W_FF: {
			int m = *p++;
			if (m == 0xff)
				break;
			if (m == 0x00)
				w->st = W_SKIP;
			else
				walk_marker(w, m);
			break;
		}
		case W_ECS_FF: {
			int m = *p++;
			if (m == 0xff)
				break;
			if (m == 0x00 || (m >= 0xd0 && m <= 0xd7))
				w->st = W_ECS;
			else
				walk_marker(w, m);
			break;
		}
		case W_LEN0:
			w->seglen = (unsigned)*p++ << 8;
			w->st = W_LEN1;
			break;
		case W_LEN1:
			w->seglen |= *p++;
			if (w->seglen < 2) {
				w->st = W_DONE;
				break;
			}
			if (w->marker == 0xda)
				w->scans++;
			w->left = w->seglen - 2;
			w->st = W_BODY;
			break;
		case W_BODY: {
			size_t k = (size_t)(end - p) < w->left ? (size_t)(end - p) : w->left;
			p += k;
			w->left -= k;
			if (w->left == 0)
				w->st = w->marker == 0xda ? W_ECS : W_SKIP;
			break;
		}
		case W_DONE:
			break;
		}
	}
}

int clip_guard_check_scans(clip_guard *g, clip_err *err)
{
	walker w = {.st = W_SOI0};
	char ebuf[128];

	if (g->fd < 0) {
		walk(&w, g->data, g->len, g->max_scans);
	} else {
		uint8_t *buf = malloc(SCAN_CHUNK);
		off_t off = 0;
		if (!buf)
			return clip_fail(err, CLIP_ENOMEM, "out of memory");
		while (w.st != W_DONE && w.scans <= g->max_scans) {
			ssize_t r = pread(g->fd, buf, SCAN_CHUNK, off);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				free(buf);
				return clip_fail(err, CLIP_EIO, "cannot read the image file: %s",
				                 strerror_r(errno, ebuf, sizeof ebuf));
			}
			if (r == 0)
				break;
			walk(&w, buf, (size_t)r, g->max_scans);
			off += r;
		}
		free(buf);
	}
	if (!w.not_jpeg && w.scans > g->max_scans)
		return clip_fail(err, CLIP_ELIMIT, "progressive JPEG has more than %d scans (the limit)",
		                 g->max_scans);
	return CLIP_OK;
}
