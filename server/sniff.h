/*
 * sniff: what kind of image a buffer holds, from its magic bytes, and the
 * pixel size its header states where that is cheap to read (PNG, GIF,
 * JPEG, WebP). Nothing is decoded. Only the formats the model accepts
 * (clip_image_format_accepted, model/clip.h) count as images. Thread-safe;
 * no allocation of its own.
 */
#ifndef CLIPD_SNIFF_H
#define CLIPD_SNIFF_H

#include <stddef.h>
#include <stdint.h>

typedef struct sniff_info {
	const char *mime;   /* "image/png", ...; NULL when not an image we accept */
	const char *format; /* the format the magic bytes name, as the model's
	                     * list spells it ("png", "jxl"), even when this
	                     * build does not accept it; NULL when none */
	int width, height;  /* from the header; 0 when unknown or not reached */
} sniff_info;

/* Fills *info from the first len bytes of a file. Returns 1 for an accepted
 * image type (clip_image_formats_text lists them), else 0 with mime NULL
 * and width and height 0. A TIFF, HEIF/AVIF or JPEG XL has width and
 * height 0: the decoder checks their pixel count from the full header.
 * Starts libvips on first use (clip_image_format_accepted). */
int sniff_image(const uint8_t *buf, size_t len, sniff_info *info);

#endif
