/*
 * preprocess_int.h: image decoding and preprocessing, private to the model
 * module (clip.c wraps it as clip_preprocess_file / clip_preprocess_buffer).
 *
 * An image is decoded with libvips and turned into the CLIP input tensor
 * exactly as the reference does it (open_clip or transformers on PIL): EXIF
 * orientation applied, 8-bit sRGB, a resize with PIL's own resampler
 * (resample.c) of the shortest side to `size` and a centre crop (CLIP), or
 * straight to size x size (SigLIP), alpha dropped, grayscale replicated,
 * then (x / 255 - mean) / std per channel.
 *
 * Ownership: every buffer is the caller's; nothing returned needs freeing.
 * Thread-safety: all functions are safe to call from any thread at once.
 * libvips is initialised once, on first use, by clip_images_init (clip.h).
 */
#ifndef CLIPD_PREPROCESS_INT_H
#define CLIPD_PREPROCESS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"

/* Default for img_opts.max_pixels (and clip_image_limits.max_pixels = 0). */
#define IMG_DEFAULT_MAX_PIXELS ((int64_t)100 * 1000 * 1000)

/* How the image becomes S x S. */
typedef enum img_fit {
	IMG_FIT_CROP = 0,    /* CLIP: the short side to S, then the centre S x S */
	IMG_FIT_SQUASH,      /* SigLIP: straight to S x S, the aspect ratio not kept */
} img_fit;

typedef struct img_opts {
	int size;            /* output side S in pixels (224) */
	img_fit fit;
	int filter;          /* img_filter (resample_int.h); 0: bicubic */
	int alpha_dropped;   /* non-zero: alpha is dropped before the resize
	                      * (load_image's convert("RGB"), SigLIP); 0: the resize
	                      * runs on premultiplied alpha, as PIL resizes RGBA
	                      * (open_clip's transform, which converts after) */
	float mean[3];       /* per channel, on the 0..1 scale */
	float std[3];
	int64_t max_pixels;  /* decoded width * height refused above this; <= 0: the default */
	int shrink_min_side; /* > 0: a JPEG whose short side is at least twice this is
	                      * decoded shrunk on load (libjpeg's DCT scaling by 2, 4
	                      * or 8, the largest that keeps the short side >= this),
	                      * then preprocessed as usual; 0: always the full decode */
	int max_scans;       /* a JPEG of more scans is refused; <= 0: CLIP_DEFAULT_MAX_SCANS */
	int timeout_ms;      /* the decode is cut off after this; <= 0: the default
	                      * (clip_vips.h) */
} img_opts;

/* clip_image_limits.fast_decode: the short side a shrunk JPEG keeps, in
 * multiples of the model's input side (see preprocess.c for the
 * measurement behind it). */
#define IMG_FAST_DECODE_MARGIN 3

/* Decodes the image file at path and writes the preprocessed tensor into
 * out[3][o->size][o->size] (CHW, normalised). *width, *height (each may be
 * NULL) receive the decoded size after EXIF orientation. The decode is
 * guarded (clip_vips.h): a JPEG's scans are counted first, and the whole
 * decode has o->timeout_ms.
 * Errors: CLIP_EIO (cannot open or read the file), CLIP_EIMAGE (not an image
 * libvips can read, or a damaged or truncated one, or a side of 0),
 * CLIP_ETOOBIG (over o->max_pixels, checked from the header before any pixel
 * is decoded, or an aspect ratio whose resized long side overflows),
 * CLIP_ELIMIT (a JPEG of more than o->max_scans scans, or a decode that
 * ran past o->timeout_ms; the message names the limit),
 * CLIP_ENOMEM, CLIP_EINVAL (bad arguments). out is undefined on failure. */
int img_preprocess_file(const char *path, const img_opts *o, float *out, int *width,
                        int *height, clip_err *err);

/* The same for an encoded image held in memory (data[len], not retained). */
int img_preprocess_buffer(const void *data, size_t len, const img_opts *o, float *out,
                          int *width, int *height, clip_err *err);

/* PIL's bicubic resampler (ImagingResample on 8-bit images): resizes src
 * (sw x sh pixels, `bands` interleaved 8-bit channels, 1..4, rows packed)
 * into dst (dw x dh, same layout), horizontal pass first with an 8-bit
 * intermediate, antialiased when shrinking. Channels are filtered
 * independently (no alpha premultiplication). Exposed for tests.
 * CLIP_OK, CLIP_EINVAL for bad sizes, CLIP_ENOMEM. */
int img_resample_u8(const uint8_t *src, int sw, int sh, int bands, uint8_t *dst, int dw, int dh);

#endif
