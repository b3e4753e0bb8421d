/*
 * resample_int.h: PIL's 8-bit resampler (resample.c), private to the model
 * module. Rules, as Pillow's ImagingResample has them:
 * - separable, horizontal pass first; the intermediate is 8-bit;
 * - the filter (bicubic a = -0.5, support 2; or bilinear, the triangle of
 *   support 1) widened by the scale factor when shrinking (antialiasing);
 *   source pixel centres at (i + 0.5) * scale;
 * - weights normalised per output pixel, then fixed point with 22 fractional
 *   bits, rounded half away from zero; each sum starts at 0.5 and the result
 *   is floored and clipped to 0..255;
 * - a pass is skipped when that dimension keeps its size.
 * Channels are filtered independently; PIL's premultiplied alpha is the
 * caller's (img_premultiply). Thread-safe; every buffer is the caller's.
 */
#ifndef CLIPD_RESAMPLE_INT_H
#define CLIPD_RESAMPLE_INT_H

#include <stddef.h>
#include <stdint.h>

/* PIL's filter numbers: Image.BILINEAR = 2, Image.BICUBIC = 3. */
typedef enum img_filter { IMG_BILINEAR = 2, IMG_BICUBIC = 3 } img_filter;

/* An sw x sh image of nb interleaved bands seen through strides: pixel
 * (x, y) is at org + x * xs + y * ys. A packed buffer is xs = nb,
 * ys = sw * nb; an EXIF orientation is other strides over the same bytes
 * (view_oriented), so the image is never turned in memory. */
typedef struct img_view {
	const uint8_t *org;
	ptrdiff_t xs, ys;  /* bytes */
	int sw, sh, nb;
} img_view;

/* Resizes the image of v to dw x dh with filter f as PIL does, but computes
 * only the window [x0, x0+cw) x [y0, y0+ch) of the result, into
 * dst[ch][cw][nb]. Equal to cropping PIL's full output: every output pixel
 * depends only on its own position; and, for a view, equal to resizing the
 * turned image itself, since the same source values meet the same weights
 * in the same order. 0, or -1 when out of memory. */
int img_resample_window(const img_view *v, img_filter f, int dw, int dh, int x0, int y0, int cw,
                        int ch, uint8_t *dst);

/* PIL's RGBA -> RGBa (c * a / 255, rounded as its MULDIV255) and back
 * (255 * c / a, truncated, clipped; a of 0 or 255 unchanged), over n
 * pixels of nb bands, alpha last. */
void img_premultiply(uint8_t *px, size_t n, int nb);
void img_unpremultiply(uint8_t *px, size_t n, int nb);

#endif
