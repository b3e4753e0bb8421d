/*
 * clip_vips: bounds on the work of one libvips decode of an untrusted
 * image, for the model's own preprocessing and for any other module that
 * decodes uploads with libvips (the server's thumbnails).
 *
 * A decode is bounded by the pixel count from the header (checked by the
 * caller) and, here, by two more limits (clip_image_limits):
 * - scans: a progressive JPEG can repeat scans at will, each a full pass
 *   over every block of the image for a few bytes of input (a 385 KB,
 *   8192x8192 file of 2,000 scans took 9 s of a core). The scans are
 *   counted from the raw bytes, before any pixel is decoded, by a walk of
 *   the JPEG's markers (SOS segments, skipping entropy-coded data);
 * - time: a deadline from the guard's creation. Every read of the guard's
 *   source fails once it has passed, which stops loaders that decode as
 *   they read (libjpeg absorbs a progressive file's scans in one call,
 *   reading 4 KB at a time, so nothing else can interrupt it), and the
 *   eval signal of a watched image kills the libvips computation that
 *   signalled it (vips_image_set_progress, "eval", vips_image_set_kill),
 *   which stops loaders that load to memory first. A caller that pulls
 *   pixels itself also checks clip_guard_expired between strips.
 *
 * Ownership: the guard owns its source and holds a reference to each
 * watched image until clip_guard_close; the caller owns the guard.
 * Thread-safety: a guard is used by one thread (libvips may call its eval
 * handler from its own threads: that only reads the clock and sets a flag).
 * libvips must be started (clip_preprocess_* starts it on first use).
 */
#ifndef CLIPD_CLIP_VIPS_H
#define CLIPD_CLIP_VIPS_H

#include <stddef.h>

#include <vips/vips.h>

#include "clip.h"

typedef struct clip_guard clip_guard;

/* A guard over the encoded image data[len] (not copied: it must outlive
 * the guard), with the scan and time limits of lim (NULL: the defaults).
 * The deadline starts now. CLIP_OK, or CLIP_ENOMEM; *out is NULL on
 * failure. */
int clip_guard_open_buffer(const void *data, size_t len, const clip_image_limits *lim,
                           clip_guard **out, clip_err *err);

/* The same over the regular file open on fd (duplicated: the caller keeps
 * and closes fd). CLIP_EIO when it cannot be duplicated. */
int clip_guard_open_fd(int fd, const clip_image_limits *lim, clip_guard **out, clip_err *err);

/* The source to load the image from, owned by the guard: seekable, and
 * every read fails once the deadline has passed. */
VipsSource *clip_guard_source(clip_guard *g);

/* When the data is a JPEG (starts with SOI): counts its scans from the raw
 * bytes and returns CLIP_ELIMIT, with a message naming the limit, when
 * there are more than the limit. CLIP_OK otherwise (any other format, or
 * a JPEG whose markers stop early: the decoder reports that itself);
 * CLIP_EIO when the file cannot be read. */
int clip_guard_check_scans(clip_guard *g, clip_err *err);

/* Turns on im's eval signals: a computation of im (or of what im loads)
 * that signals after the deadline is killed. Keeps a reference to im. */
void clip_guard_watch(clip_guard *g, VipsImage *im);

/* Non-zero once the deadline has passed (the clock is read now). */
int clip_guard_expired(clip_guard *g);

/* Fills err with CLIP_ELIMIT and a message naming the time limit;
 * returns CLIP_ELIMIT. */
int clip_guard_timeout_error(const clip_guard *g, clip_err *err);

/* Releases the guard, its source and its watched images. NULL is a no-op. */
void clip_guard_close(clip_guard *g);

#endif
