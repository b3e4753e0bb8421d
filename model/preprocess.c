/*
 * preprocess.c: image decoding (libvips) and the models' preprocessing.
 *
 * The reference is open_clip's transform on PIL: Resize(S, BICUBIC) of the
 * shortest side, CenterCrop(S), convert('RGB'), ToTensor, Normalize; for
 * SigLIP (IMG_FIT_SQUASH) transformers' load_image and SiglipImageProcessor:
 * convert('RGB'), then a resize straight to S x S with the filter the
 * preprocessor config names, rescale, normalise. To land within a fraction
 * of a grey level of it, the resize is PIL's own algorithm (resample.c).
 * - CLIP: RGBA and LA images are resized with premultiplied alpha (PIL's
 *   Image.resize converts to RGBa / La and back), then alpha is dropped;
 *   SigLIP drops alpha first.
 * - CLIP's resized size: the short side becomes S, the long side
 *   int(S * long / short); crop offsets are round((len - S) / 2) with
 *   Python's half-to-even rounding. Only the S x S window that survives the
 *   crop is ever computed, so an extreme aspect ratio (50000 x 1) costs no
 *   more memory than the decoded image.
 *
 * Decoding: libvips loads from the source of a decode guard (clip_vips.h)
 * with sequential access and fail_on=error, so a truncated file is an
 * error; only the formats of clip_image_format_accepted (clip.h) are
 * decoded. A JPEG's scans are counted from its bytes first (o->max_scans),
 * and the whole decode runs under the guard's deadline (o->timeout_ms).
 * Width and height are checked against the pixel limit from the header,
 * before any pixel is decoded. With o->shrink_min_side (clipd
 * --fast-decode) a large JPEG is then reopened shrunk on load
 * (jpeg_shrink); the size reported stays the file's. Then 8-bit sRGB (or
 * 8-bit grey, replicated to RGB at the end), and the first 3 colour bands
 * plus alpha. 16-bit images keep their high
 * byte, as PIL does for 16-bit RGB (PIL clips 16-bit grey to 255 instead,
 * which is not reproduced). Pixels are pulled through a VipsRegion in the
 * calling thread, top to bottom, into one buffer of ours, as stored. EXIF
 * orientation (as vips_autorot applies it; PIL itself ignores it) is not a
 * turned copy: the resampler reads that buffer through strides that turn
 * it (img_view), which gives the same bytes as resizing a turned copy, at
 * the memory of one decoded image rather than three.
 *
 * Not reproduced either: PIL resizes palette ("P") and 1-bit images with
 * nearest neighbour (libvips hands them over as RGB or grey, resized here
 * bicubic), and keeps an RGB PNG's tRNS colour key out of the resize (libvips
 * turns it into an alpha band, so it is premultiplied here).
 *
 * DESIGN: threads. Every call is independent and allocates its own buffers.
 * The only process-wide state is libvips itself, started once under
 * pthread_once. libvips' error buffer is process-wide too: messages here are
 * our own, and the buffer is cleared after a failure so that it does not
 * grow; its text is never passed on.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "clip_int.h"
#include "clip_vips.h"
#include "preprocess_int.h"
#include "resample_int.h"

/* Rows pulled from libvips per request (about 1 MB per strip). */
#define STRIP_BYTES ((size_t)1 << 20)

/* ---- libvips start-up ---- */

static pthread_once_t img_once = PTHREAD_ONCE_INIT;
static int img_init_failed; /* written once inside pthread_once, read after it */

static void drop_log(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer user)
{
	(void)domain;
	(void)level;
	(void)msg;
	(void)user;
}

static void img_init_once(void)
{
	if (VIPS_INIT("clipd")) {
		img_init_failed = 1;
		vips_error_clear();
		return;
	}
	/* The cache keys loads by file name or buffer address: a file
	 * rewritten in place, or a reused buffer, would get the old pixels. */
	vips_cache_set_max(0);
	/* Keep to the loaders libvips considers safe for untrusted input. */
	vips_block_untrusted_set(TRUE);
	/* libvips reports decoder warnings (libpng's "iCCP: ...", truncated
	 * tiles) on stderr through GLib; library code must not print, and each
	 * failure already comes back as a clip_err. This is what libvips'
	 * own VIPS_WARNING environment variable does. */
	g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, drop_log, NULL);
}

int clip_images_init(clip_err *err)
{
	pthread_once(&img_once, img_init_once);
	if (img_init_failed)
		return clip_fail(err, CLIP_EIO, "libvips could not be initialised");
	return CLIP_OK;
}

/* ---- geometry ---- */

typedef struct img_plan {
	int rw, rh;       /* resized size */
	int left, top;    /* crop offset in the resized image */
} img_plan;

/* Python's round(d / 2) for d >= 0: halves go to the even neighbour. */
static int half_round_even(int d)
{
	int q = d / 2;
	if ((d & 1) && (q & 1))
		q++;
	return q;
}

/* torchvision Resize(int) then CenterCrop, or (IMG_FIT_SQUASH) a resize
 * to size x size. -1 when the resized long side would not fit an int. */
static int plan_make(int w, int h, int size, img_fit fit, img_plan *p)
{
	if (fit == IMG_FIT_SQUASH) {
		*p = (img_plan){size, size, 0, 0};
		return 0;
	}
	int shorter = w <= h ? w : h, longer = w <= h ? h : w;
	/* Python: int(size * long / short), a correctly rounded double
	 * division of two exact integers, then truncation. */
	double nl = (double)((int64_t)size * longer) / (double)shorter;
	int new_long;

	if (nl >= (double)INT32_MAX)
		return -1;
	new_long = (int)nl;
	p->rw = w <= h ? size : new_long;
	p->rh = w <= h ? new_long : size;
	p->left = half_round_even(p->rw - size);
	p->top = half_round_even(p->rh - size);
	return 0;
}

/* ---- decoding ---- */

/* Copies every pixel of im (8-bit) into dst, top to bottom, in the calling
 * thread. 0, or -1 when libvips fails (damaged or truncated data) or the
 * guard's deadline passes (checked before every strip). */
static int read_pixels(VipsImage *im, uint8_t *dst, clip_guard *g)
{
	size_t line = VIPS_IMAGE_SIZEOF_LINE(im);
	int strip = (int)(STRIP_BYTES / line);
	VipsRegion *reg;
	int rc = 0;

	if (strip < 1)
		strip = 1;
	reg = vips_region_new(im);
	if (!reg)
		return -1;
	for (int y = 0; y < im->Ysize; y += strip) {
		VipsRect r = {0, y, im->Xsize, im->Ysize - y < strip ? im->Ysize - y : strip};
		if (clip_guard_expired(g) || vips_region_prepare(reg, &r)) {
			rc = -1;
			break;
		}
		for (int i = 0; i < r.height; i++)
			memcpy(dst + (size_t)(y + i) * line, VIPS_REGION_ADDR(reg, 0, y + i), line);
	}
	g_object_unref(reg);
	return rc;
}

/* The view of the packed pixels px[h][w][nb] turned by EXIF orientation
 * `orient` (1..8) as vips_autorot turns an image: 2 flips, 3 turns 180
 * degrees, 4 turns 180 and flips, 5 turns 90 clockwise and flips, 6 turns
 * 90, 7 turns 270 and flips, 8 turns 270 (a flip is left-right, after the
 * turn). 5 to 8 swap the sides. */
static img_view view_oriented(const uint8_t *px, int w, int h, int nb, int orient)
{
	ptrdiff_t px1 = nb, row = (ptrdiff_t)w * nb;
	ptrdiff_t last_col = (ptrdiff_t)(w - 1) * px1, last_row = (ptrdiff_t)(h - 1) * row;
	img_view v = {px, px1, row, w, h, nb};

	switch (orient) {
	case 2: /* (x, y) <- (w-1-x, y) */
		v.org = px + last_col, v.xs = -px1;
		break;
	case 3: /* (w-1-x, h-1-y) */
		v.org = px + last_row + last_col, v.xs = -px1, v.ys = -row;
		break;
	case 4: /* (x, h-1-y) */
		v.org = px + last_row, v.ys = -row;
		break;
	case 5: /* (y, x) */
		v.xs = row, v.ys = px1;
		break;
	case 6: /* (y, h-1-x) */
		v.org = px + last_row, v.xs = -row, v.ys = px1;
		break;
	case 7: /* (w-1-y, h-1-x) */
		v.org = px + last_row + last_col, v.xs = -row, v.ys = -px1;
		break;
	case 8: /* (w-1-y, x) */
		v.org = px + last_col, v.xs = row, v.ys = -px1;
		break;
	default:
		break;
	}
	if (orient >= 5) {
		v.sw = h;
		v.sh = w;
	}
	return v;
}

/* The decoded 8-bit pixels px[h][w][nb] (nb: 1 grey, 2 grey + alpha,
 * 3 RGB, 4 RGBA; modified in place), as turned by EXIF orientation
 * `orient`, to the normalised CHW tensor. p is planned on the turned
 * size. */
static int finish(uint8_t *px, int w, int h, int nb, int orient, const img_plan *p,
                  const img_opts *o, float *out, clip_err *err)
{
	int s = o->size;
	size_t plane = (size_t)s * s;
	int alpha = (nb == 2 || nb == 4) && !o->alpha_dropped;
	img_view v = view_oriented(px, w, h, nb, orient);
	int resized = p->rw != v.sw || p->rh != v.sh;
	uint8_t *crop = malloc(plane * nb);

	if (!crop)
		return clip_fail(err, CLIP_ENOMEM, "out of memory preprocessing a %dx%d image", w, h);
	/* PIL leaves a same-size resize alone, alpha untouched. */
	if (alpha && resized)
		img_premultiply(px, (size_t)w * h, nb);
	img_filter f = o->filter ? (img_filter)o->filter : IMG_BICUBIC;
	if (img_resample_window(&v, f, p->rw, p->rh, p->left, p->top, s, s, crop)) {
		free(crop);
		return clip_fail(err, CLIP_ENOMEM, "out of memory resizing a %dx%d image", w, h);
	}
	if (alpha && resized)
		img_unpremultiply(crop, plane, nb);
	/* ToTensor then Normalize, in float32 as torchvision does. */
	for (int c = 0; c < 3; c++) {
		int band = nb >= 3 ? c : 0;
		float *oc = out + (size_t)c * plane;
		for (size_t i = 0; i < plane; i++)
			oc[i] = ((float)crop[i * nb + band] / 255.0f - o->mean[c]) / o->std[c];
	}
	free(crop);
	return CLIP_OK;
}

/* Whether the loader class libvips picked reads one of the accepted
 * formats (clip_image_format_accepted); name receives the format's short
 * name ("svg" for svgload_source). */
static int format_allowed(const char *loader, char *name, size_t n)
{
	const char *nick = vips_nickname_find(g_type_from_name(loader));
	const char *end;
	size_t len;

	if (!nick)
		nick = "unknown";
	end = strstr(nick, "load");
	len = end ? (size_t)(end - nick) : strlen(nick);
	snprintf(name, n, "%.*s", (int)len, nick);
	return clip_image_format_accepted(nick);
}

/* The shrink-on-load factor for an image of format fmt whose short side is
 * `shorter`: the largest of libjpeg's 8, 4, 2 that keeps the decoded short
 * side (rounded up, as libjpeg does) >= min_side; 1 for a full decode.
 *
 * Why a margin of IMG_FAST_DECODE_MARGIN (3) input sides: libjpeg's scaled
 * IDCT is a cruder low-pass than PIL's antialiased bicubic (1/8 keeps only
 * each block's DC term, a box filter on the block grid), and the fewer
 * pixels are left for the bicubic resize that follows, the more of that
 * shows. Measured with bench/decode on photo-like JPEGs (README): at 1/2
 * and 1/4 with this margin the input tensor stays within 0.31-0.45 grey
 * levels (mean absolute) of the exact path's, inside the 0.5 the exact
 * path itself is held to against PIL; 1/8 with a margin of 2 measured
 * 0.82 and twice the embedding error for about 20% less time. */
static int jpeg_shrink(const char *fmt, int shorter, int min_side)
{
	if (min_side <= 0 || strcmp(fmt, "jpeg") != 0)
		return 1;
	for (int s = 8; s > 1; s /= 2)
		if ((shorter + s - 1) / s >= min_side)
			return s;
	return 1;
}

/* A libvips failure: the guard's deadline when it has passed (a read or
 * a computation was cut off), else the data's fault, as `what` says. */
static int vips_failed(clip_guard *g, clip_err *err, const char *what)
{
	if (clip_guard_expired(g))
		return clip_guard_timeout_error(g, err);
	return clip_fail(err, CLIP_EIMAGE, "%s", what);
}

/* Decodes the image of the guard's source and preprocesses it. */
static int decode_source(clip_guard *g, const img_opts *o, float *out, int *width, int *height,
                         clip_err *err)
{
	VipsSource *src = clip_guard_source(g);
	VipsImage *in = NULL, *rgb = NULL, *shifted = NULL, *u8 = NULL, *bands = NULL;
	VipsInterpretation interp;
	uint8_t *px = NULL;
	int64_t max_pixels = o->max_pixels > 0 ? o->max_pixels : IMG_DEFAULT_MAX_PIXELS;
	int w, h, fw, fh, ow, oh, orient, nb, colour, alpha, grey, shrink;
	img_plan plan;
	const char *loader;
	char fmt[32];
	int rc;

	loader = vips_foreign_find_load_source(src);
	if (!loader) {
		rc = vips_failed(g, err, "not an image libvips can read");
		goto out;
	}
	if (!format_allowed(loader, fmt, sizeof fmt)) {
		rc = clip_fail(err, CLIP_EIMAGE, "unsupported image format (%s)", fmt);
		goto out;
	}
	/* Scans from the raw bytes, before libjpeg sees any of them. */
	if (strcmp(fmt, "jpeg") == 0 && (rc = clip_guard_check_scans(g, err)))
		goto out;
	in = vips_image_new_from_source(src, "", "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
	                                VIPS_FAIL_ON_ERROR, NULL);
	if (!in) {
		rc = vips_failed(g, err, "damaged image: its header cannot be read");
		goto out;
	}

	/* Refuse bombs from the header alone. */
	w = vips_image_get_width(in);
	h = vips_image_get_height(in);
	if (w <= 0 || h <= 0) {
		rc = clip_fail(err, CLIP_EIMAGE, "image has a side of 0 (%dx%d)", w, h);
		goto out;
	}
	if ((int64_t)w * h > max_pixels) {
		rc = clip_fail(err, CLIP_ETOOBIG, "image is %dx%d (%lld pixels), over the limit of %lld",
		              w, h, (long long)w * h, (long long)max_pixels);
		goto out;
	}
	orient = vips_image_get_orientation(in);
	/* The image's own size, reported whatever is decoded. */
	fw = orient >= 5 ? h : w;
	fh = orient >= 5 ? w : h;
	if ((shrink = jpeg_shrink(fmt, w < h ? w : h, o->shrink_min_side)) > 1) {
		g_object_unref(in);
		in = NULL;
		if (vips_jpegload_source(src, &in, "shrink", shrink, "access", VIPS_ACCESS_SEQUENTIAL,
		                         "fail_on", VIPS_FAIL_ON_ERROR, NULL)) {
			rc = vips_failed(g, err, "damaged image: its header cannot be read");
			goto out;
		}
		w = vips_image_get_width(in);
		h = vips_image_get_height(in);
	}
	/* A loader that loads to memory first signals its progress on in. */
	clip_guard_watch(g, in);
	ow = orient >= 5 ? h : w;
	oh = orient >= 5 ? w : h;
	if (plan_make(ow, oh, o->size, o->fit, &plan)) {
		rc = clip_fail(err, CLIP_ETOOBIG,
		              "image is %dx%d: too elongated to resize its short side to %d", ow, oh,
		              o->size);
		goto out;
	}

	/* 8-bit sRGB, or 8-bit grey (replicated to RGB in finish). */
	interp = vips_image_guess_interpretation(in);
	grey = interp == VIPS_INTERPRETATION_B_W || interp == VIPS_INTERPRETATION_GREY16;
	/* 16-bit grey goes through the 16-bit branch below: libvips'
	 * GREY16 -> B_W rounds v / 257 while its RGB16 -> sRGB keeps the high
	 * byte; the high byte everywhere is consistent, and what PIL does for
	 * 16-bit RGB. */
	if (vips_colourspace_issupported(in) && !(grey && in->BandFmt == VIPS_FORMAT_USHORT)) {
		if (vips_colourspace(in, &rgb,
		                     grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB, NULL)) {
			rc = clip_fail(err, CLIP_EIMAGE, "image colourspace cannot be converted to sRGB");
			goto out;
		}
	} else {
		rgb = in;
		g_object_ref(rgb);
	}
	if (rgb->BandFmt == VIPS_FORMAT_UCHAR) {
		u8 = rgb;
		g_object_ref(u8);
	} else if (rgb->BandFmt == VIPS_FORMAT_USHORT) {
		if (vips_rshift_const1(rgb, &shifted, 8, NULL) ||
		    vips_cast_uchar(shifted, &u8, NULL)) {
			rc = clip_fail(err, CLIP_EIMAGE, "16-bit image cannot be converted to 8 bits");
			goto out;
		}
	} else if (vips_cast_uchar(rgb, &u8, NULL)) {
		rc = clip_fail(err, CLIP_EIMAGE, "image cannot be converted to 8 bits");
		goto out;
	}

	/* Colour bands (3, or 1 for grey) and alpha, the band after them:
	 * after the conversion above a second or fourth band is alpha. */
	colour = u8->Bands >= 3 ? 3 : 1;
	alpha = u8->Bands > colour;
	nb = colour + alpha;
	if (nb < u8->Bands) {
		if (vips_extract_band(u8, &bands, 0, "n", nb, NULL)) {
			rc = clip_fail(err, CLIP_EIMAGE, "image bands cannot be extracted");
			goto out;
		}
	} else {
		bands = u8;
		g_object_ref(bands);
	}
	if (bands->Xsize != w || bands->Ysize != h || bands->Bands != nb) {
		rc = clip_fail(err, CLIP_EIMAGE, "image decodes to %dx%d, not the %dx%d of its header",
		              bands->Xsize, bands->Ysize, w, h);
		goto out;
	}

	/* Decoded as stored, in one buffer; the EXIF orientation is applied
	 * by reading it turned (finish), never as a turned copy. */
	px = malloc((size_t)w * h * nb);
	if (!px) {
		rc = clip_fail(err, CLIP_ENOMEM, "out of memory decoding a %dx%d image", w, h);
		goto out;
	}
	if (read_pixels(bands, px, g)) {
		rc = vips_failed(g, err, "damaged or truncated image");
		goto out;
	}
	rc = finish(px, w, h, nb, orient, &plan, o, out, err);
	if (rc == CLIP_OK) {
		if (width)
			*width = fw;
		if (height)
			*height = fh;
	}

out:
	if (rc != CLIP_OK)
		vips_error_clear();
	free(px);
	if (bands)
		g_object_unref(bands);
	if (u8)
		g_object_unref(u8);
	if (shifted)
		g_object_unref(shifted);
	if (rgb)
		g_object_unref(rgb);
	if (in)
		g_object_unref(in);
	return rc;
}

/* The guard limits of o. */
static clip_image_limits guard_limits(const img_opts *o)
{
	clip_image_limits lim = {0};
	lim.max_scans = o->max_scans;
	lim.decode_timeout_ms = o->timeout_ms;
	return lim;
}

static int check_opts(const img_opts *o, const float *out, clip_err *err)
{
	if (!o || !out)
		return clip_fail(err, CLIP_EINVAL, "preprocess: options and output are required");
	/* The bound keeps size * size * taps arithmetic far from overflow. */
	if (o->size <= 0 || o->size > 4096)
		return clip_fail(err, CLIP_EINVAL, "preprocess: image size %d is out of range", o->size);
	for (int c = 0; c < 3; c++)
		if (!(o->std[c] != 0.0f))
			return clip_fail(err, CLIP_EINVAL, "preprocess: std[%d] is 0", c);
	return CLIP_OK;
}

int img_preprocess_file(const char *path, const img_opts *o, float *out, int *width,
                        int *height, clip_err *err)
{
	clip_image_limits lim;
	clip_guard *g = NULL;
	struct stat st;
	char ebuf[128];
	int fd = -1;
	int rc;

	if ((rc = check_opts(o, out, err)))
		return rc;
	if (!path)
		return clip_fail(err, CLIP_EINVAL, "preprocess: no path");
	if ((rc = clip_images_init(err)))
		return rc;

	/* Our own open: a clear I/O error, and no "[options]" parsing of the
	 * name as vips_image_new_from_file would do. */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = clip_fail(err, CLIP_EIO, "cannot open the image file: %s",
		              strerror_r(errno, ebuf, sizeof ebuf));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		rc = clip_fail(err, CLIP_EIO, "cannot read the image file: %s",
		              strerror_r(errno, ebuf, sizeof ebuf));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = clip_fail(err, CLIP_EIO, "the image path is not a regular file");
		goto out;
	}
	/* The guard reads its own duplicate of the descriptor. */
	lim = guard_limits(o);
	if ((rc = clip_guard_open_fd(fd, &lim, &g, err)))
		goto out;
	rc = decode_source(g, o, out, width, height, err);

out:
	clip_guard_close(g);
	if (fd >= 0)
		close(fd);
	return rc;
}

int img_preprocess_buffer(const void *data, size_t len, const img_opts *o, float *out,
                          int *width, int *height, clip_err *err)
{
	clip_image_limits lim;
	clip_guard *g;
	int rc;

	if ((rc = check_opts(o, out, err)))
		return rc;
	if (!data && len)
		return clip_fail(err, CLIP_EINVAL, "preprocess: no data");
	if (len == 0)
		return clip_fail(err, CLIP_EIMAGE, "empty image data");
	if ((rc = clip_images_init(err)))
		return rc;

	lim = guard_limits(o);
	if ((rc = clip_guard_open_buffer(data, len, &lim, &g, err)))
		return rc;
	rc = decode_source(g, o, out, width, height, err);
	clip_guard_close(g);
	return rc;
}
