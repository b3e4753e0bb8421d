/*
 * resample.c: PIL's resampler (ImagingResample on 8-bit images),
 * reimplemented so that preprocessing lands within a fraction of a grey
 * level of the reference (libvips' resizers use other kernels and pixel
 * centres). See resample_int.h for the rules.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"
#include "preprocess_int.h"
#include "resample_int.h"

/* Pillow's fixed point for 8-bit resampling: 8 bits of result, 2 bits of
 * headroom for the filter's negative lobes and overshoot. */
#define PRECISION_BITS (32 - 8 - 2)

static double bicubic(double x)
{
	const double a = -0.5;
	if (x < 0.0)
		x = -x;
	if (x < 1.0)
		return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
	if (x < 2.0)
		return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
	return 0.0;
}

/* PIL's triangle filter (BILINEAR), support 1. */
static double bilinear(double x)
{
	if (x < 0.0)
		x = -x;
	return x < 1.0 ? 1.0 - x : 0.0;
}

static double filter_support(img_filter f)
{
	return f == IMG_BILINEAR ? 1.0 : 2.0;
}

static double filter_eval(img_filter f, double x)
{
	return f == IMG_BILINEAR ? bilinear(x) : bicubic(x);
}

static inline uint8_t clip8(int32_t v)
{
	if (v < 0)
		return 0;
	v >>= PRECISION_BITS;
	return v > 255 ? 255 : (uint8_t)v;
}

/* Taps per output pixel of a 1-D resize from in_size to out_size. */
static int taps_ksize(img_filter f, int in_size, int out_size)
{
	double fs = (double)in_size / out_size;
	if (fs < 1.0)
		fs = 1.0;
	return (int)ceil(filter_support(f) * fs) * 2 + 1;
}

/* The taps of outputs first .. first+n-1 of a 1-D resize from in_size to
 * out_size: bounds[i][0] is the first input index, bounds[i][1] the number
 * of taps, k[i][ksize] the fixed-point weights. wk: ksize doubles of
 * scratch. */
static void taps_fill(img_filter f, int in_size, int out_size, int first, int n, int ksize,
                      int *bounds, int32_t *k, double *wk)
{
	double scale = (double)in_size / out_size;
	double fs = scale < 1.0 ? 1.0 : scale;
	double support = filter_support(f) * fs;
	double ss = 1.0 / fs;

	for (int i = 0; i < n; i++) {
		double center = (first + i + 0.5) * scale;
		/* (int) truncates toward zero, as in Pillow; clamped after. */
		int xmin = (int)(center - support + 0.5);
		int xmax = (int)(center + support + 0.5);
		double ww = 0.0;
		int32_t *kr = k + (size_t)i * ksize;
		int x;

		if (xmin < 0)
			xmin = 0;
		if (xmax > in_size)
			xmax = in_size;
		xmax -= xmin;
		for (x = 0; x < xmax; x++) {
			wk[x] = filter_eval(f, (x + xmin - center + 0.5) * ss);
			ww += wk[x];
		}
		for (x = 0; x < xmax; x++) {
			double w = ww != 0.0 ? wk[x] / ww : wk[x];
			w *= (double)(1 << PRECISION_BITS);
			kr[x] = (int32_t)(w < 0 ? w - 0.5 : w + 0.5);
		}
		for (; x < ksize; x++)
			kr[x] = 0;
		bounds[2 * i] = xmin;
		bounds[2 * i + 1] = xmax;
	}
}

static size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

int img_resample_window(const img_view *v, img_filter f, int dw, int dh, int x0, int y0, int cw,
                        int ch, uint8_t *dst)
{
	int sw = v->sw, sh = v->sh, nb = v->nb;
	int need_h = dw != sw, need_v = dh != sh;
	/* Rows can be read in place only when they are packed. */
	int gather = need_h || v->xs != nb;
	int kh = need_h ? taps_ksize(f, sw, dw) : 0;
	int kv = need_v ? taps_ksize(f, sh, dh) : 0;
	size_t row = (size_t)cw * nb;
	size_t off_bh, off_kh, off_bv, off_kv, off_acc, total;
	char *block;
	double *wk;
	int *bh, *bv;
	int32_t *kkh, *kkv, *acc;
	uint8_t *tmp = NULL;
	const uint8_t *mid; /* rows mid_row0.. of the horizontally resized window */
	ptrdiff_t mid_stride;
	int mid_row0, r0 = y0, r1 = y0 + ch;

	/* Scratch weights, both passes' taps and the row accumulators. */
	off_bh = align8(sizeof(double) * (size_t)(kh > kv ? kh : kv));
	off_kh = off_bh + align8(sizeof(int) * 2 * (size_t)cw);
	off_bv = off_kh + align8(sizeof(int32_t) * (size_t)cw * kh);
	off_kv = off_bv + align8(sizeof(int) * 2 * (size_t)ch);
	off_acc = off_kv + align8(sizeof(int32_t) * (size_t)ch * kv);
	total = off_acc + align8(sizeof(int32_t) * row);
	block = malloc(total);
	if (!block)
		return -1;
	wk = (double *)block;
	bh = (int *)(block + off_bh);
	kkh = (int32_t *)(block + off_kh);
	bv = (int *)(block + off_bv);
	kkv = (int32_t *)(block + off_kv);
	acc = (int32_t *)(block + off_acc);

	if (need_v) {
		taps_fill(f, sh, dh, y0, ch, kv, bv, kkv, wk);
		/* The source rows the vertical pass reads. */
		r0 = bv[0];
		r1 = 0;
		for (int i = 0; i < ch; i++) {
			if (bv[2 * i] < r0)
				r0 = bv[2 * i];
			if (bv[2 * i] + bv[2 * i + 1] > r1)
				r1 = bv[2 * i] + bv[2 * i + 1];
		}
	}

	/* Horizontal pass over those rows, window columns only; the result is
	 * 8-bit, as in PIL. Without a horizontal resize, a copy of the
	 * window's columns when the rows are not packed. */
	if (gather) {
		tmp = malloc(row * (size_t)(r1 - r0));
		if (!tmp) {
			free(block);
			return -1;
		}
		if (need_h)
			taps_fill(f, sw, dw, x0, cw, kh, bh, kkh, wk);
		for (int r = r0; r < r1; r++) {
			const uint8_t *srow = v->org + (ptrdiff_t)r * v->ys;
			uint8_t *trow = tmp + (size_t)(r - r0) * row;
			if (!need_h) {
				const uint8_t *p = srow + (ptrdiff_t)x0 * v->xs;
				for (int xx = 0; xx < cw; xx++, p += v->xs)
					memcpy(trow + (size_t)xx * nb, p, (size_t)nb);
				continue;
			}
			for (int xx = 0; xx < cw; xx++) {
				const int32_t *k = kkh + (size_t)xx * kh;
				const uint8_t *p = srow + (ptrdiff_t)bh[2 * xx] * v->xs;
				int n = bh[2 * xx + 1];
				int32_t s[4];
				for (int b = 0; b < 4; b++)
					s[b] = 1 << (PRECISION_BITS - 1);
				for (int x = 0; x < n; x++, p += v->xs)
					for (int b = 0; b < nb; b++)
						s[b] += p[b] * k[x];
				for (int b = 0; b < nb; b++)
					trow[(size_t)xx * nb + b] = clip8(s[b]);
			}
		}
		mid = tmp;
		mid_stride = (ptrdiff_t)row;
		mid_row0 = r0;
	} else {
		mid = v->org + (ptrdiff_t)x0 * nb;
		mid_stride = v->ys;
		mid_row0 = 0;
	}

	/* Vertical pass, one output row at a time. */
	for (int yy = 0; yy < ch; yy++) {
		uint8_t *drow = dst + (size_t)yy * row;
		const int32_t *k = kkv + (size_t)yy * kv;
		int ymin, n;

		if (!need_v) {
			memcpy(drow, mid + (ptrdiff_t)(y0 + yy - mid_row0) * mid_stride, row);
			continue;
		}
		ymin = bv[2 * yy];
		n = bv[2 * yy + 1];
		for (size_t i = 0; i < row; i++)
			acc[i] = 1 << (PRECISION_BITS - 1);
		for (int y = 0; y < n; y++) {
			const uint8_t *mrow = mid + (ptrdiff_t)(ymin + y - mid_row0) * mid_stride;
			int32_t w = k[y];
			for (size_t i = 0; i < row; i++)
				acc[i] += mrow[i] * w;
		}
		for (size_t i = 0; i < row; i++)
			drow[i] = clip8(acc[i]);
	}
	free(tmp);
	free(block);
	return 0;
}

int img_resample_u8(const uint8_t *src, int sw, int sh, int bands, uint8_t *dst, int dw, int dh)
{
	img_view v = {src, bands, (ptrdiff_t)sw * bands, sw, sh, bands};
	if (!src || !dst || sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0 || bands < 1 || bands > 4)
		return CLIP_EINVAL;
	if (img_resample_window(&v, IMG_BICUBIC, dw, dh, 0, 0, dw, dh, dst))
		return CLIP_ENOMEM;
	return CLIP_OK;
}

/* PIL's RGBA -> RGBa: c * a / 255, rounded the way its MULDIV255 does. */
void img_premultiply(uint8_t *px, size_t n, int nb)
{
	for (size_t i = 0; i < n; i++, px += nb) {
		unsigned a = px[nb - 1];
		for (int c = 0; c < nb - 1; c++) {
			unsigned t = px[c] * a + 128;
			px[c] = (uint8_t)(((t >> 8) + t) >> 8);
		}
	}
}

/* PIL's RGBa -> RGBA: 255 * c / a, truncated and clipped; a of 0 or 255
 * leaves the colour as it is. */
void img_unpremultiply(uint8_t *px, size_t n, int nb)
{
	for (size_t i = 0; i < n; i++, px += nb) {
		unsigned a = px[nb - 1];
		if (a == 0 || a == 255)
			continue;
		for (int c = 0; c < nb - 1; c++) {
			unsigned v = 255u * px[c] / a;
			px[c] = (uint8_t)(v > 255 ? 255 : v);
		}
	}
}

