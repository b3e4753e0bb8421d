/*
 * sniff: what kind of image a buffer holds, from its magic bytes, and the
 * pixel size its header states where that is cheap to read (PNG, GIF,
 * JPEG, WebP). Nothing is decoded. Thread-safe, no allocation.
 */
#ifndef CLIPD_SNIFF_H
#define CLIPD_SNIFF_H

#include <stddef.h>
#include <stdint.h>

typedef struct sniff_info {
	const char *mime;   /* "image/png", ...; NULL when not an image we accept */
	int width, height;  /* from the header; 0 when unknown or not reached */
} sniff_info;

/* Fills *info from the first len bytes of a file. Returns 1 for an accepted
 * image type (JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF), else 0. */
int sniff_image(const uint8_t *buf, size_t len, sniff_info *info);

#endif
