/*
 * thumbs: JPEG thumbnails of stored images, made with libvips from the
 * original in the blob store and cached on disk as
 * DATA/thumbs/<sha256>-<size>.jpg (written to a temporary file, fsynced,
 * renamed into place). A thumbnail depends only on the content and the
 * size, so a cached one never goes stale; it is removed with its image.
 *
 * The image is turned upright by its EXIF orientation, fitted inside a
 * size x size square (never enlarged), converted to 8-bit sRGB (or grey)
 * with any alpha flattened onto white, and saved without metadata.
 *
 * Sizes are snapped to a fixed set (THUMBS_SIZES), so one image has at
 * most that many cached files. The cache is bounded by --thumb-cache-mb:
 * past it, the oldest thumbnails (by when they were made) are removed.
 *
 * Thread-safe. At most a few thumbnails are made at once (see the DESIGN
 * comment in thumbs.c); a request beyond that waits its turn for at most
 * --thumb-wait-ms, then gets a 503 with Retry-After.
 */
#ifndef CLIPD_THUMBS_H
#define CLIPD_THUMBS_H

#include <stdint.h>

#include "app.h"
#include "errors.h"

#define THUMBS_MIN_SIZE 16
#define THUMBS_MAX_SIZE 1024
#define THUMBS_DEFAULT_SIZE 256

/* The sizes a thumbnail is made in, smallest first. */
#define THUMBS_SIZES {16, 32, 64, 128, 256, 512, 1024}

/* Parses a "size" query parameter: NULL is the default; a decimal integer
 * is clamped to [THUMBS_MIN_SIZE, THUMBS_MAX_SIZE] and rounded down to the
 * nearest of THUMBS_SIZES (so the thumbnail still fits in size x size, and
 * one image has at most 7 cached files); anything else is a 400. */
int thumbs_parse_size(const char *s, int *size, api_err *err);

/* Opens the thumbnail of the image with content hash sha (hex) at size (a
 * size thumbs_parse_size gave), making and caching it first when needed.
 * On success *fd is an open descriptor of the JPEG (the caller closes it),
 * *bytes its length and *cached whether it was already on disk. Errors: 404
 * when the original is gone, 413 over --max-pixels, 422 when it does not
 * decode, 503 (queue_full, Retry-After) when no maker was free within
 * --thumb-wait-ms, 500 on the file system. */
int thumbs_open(app *a, const char *sha, int size, int *fd, uint64_t *bytes, int *cached,
                api_err *err);

/* Removes every cached size of one content hash; missing files are not an
 * error. Call after the image's row and blob are gone. */
void thumbs_remove(app *a, const char *sha);

#endif
