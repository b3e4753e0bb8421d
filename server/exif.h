/*
 * exif: what an image file says about itself: capture time, GPS position,
 * camera make and model, lens, orientation (issue 11 §1), read from the
 * EXIF block of a JPEG's APP1 segment (PNG's eXIf and WebP's EXIF chunks
 * hold the same TIFF structure and are read too) with libexif.
 *
 * Why libexif and not libvips: libvips hands EXIF fields over as strings
 * formatted for display ("Canon (Canon, ASCII, 6 components, 6 bytes)",
 * read with vips_image_get_string from Debian 12's libvips 8.14.1), which would have to
 * be parsed back, and only after a decode the worker does later; libexif
 * gives each entry's type, count and raw bytes, so every field is checked
 * as the specification defines it, from the header bytes alone, at ingest.
 *
 * Bounds: only the container's header structure is walked (at most
 * EXIF_MAX_SEGMENTS JPEG segments or chunks, stopping at the image data),
 * the EXIF block read is at most EXIF_READ_MAX bytes (a JPEG segment's
 * size field bounds it; of a PNG or WebP chunk, up to EXIF_MAX_BLOCK, the
 * first EXIF_READ_MAX bytes, which is all libexif reads anyway), libexif's
 * allocations for one file are capped at EXIF_MAX_ALLOC bytes, and a
 * string field longer than EXIF_MAX_STRING bytes is ignored. So one call costs at most a few hundred
 * KB and well under a millisecond of CPU (bench/exif measures the rate).
 *
 * Damaged or hostile input never fails the caller: each field that is
 * missing, of the wrong type or count, out of range or unreadable is left
 * unknown, and the reason is reported in exif_notes (and logged by the
 * caller's choice: exif_log_notes).
 *
 * Thread-safety: every call is independent (libexif's state is per call;
 * the allocation cap is per thread).
 */
#ifndef CLIPD_EXIF_H
#define CLIPD_EXIF_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define EXIF_MAX_SEGMENTS 64
#define EXIF_MAX_BLOCK (1 << 20)
#define EXIF_READ_MAX 65536
#define EXIF_MAX_ALLOC (4u << 20)
#define EXIF_MAX_STRING 256

/* Why fields were ignored: the first EXIF_MAX_NOTES reasons, and how many
 * there were. */
#define EXIF_MAX_NOTES 8
typedef struct exif_notes {
	int n;                              /* reasons in all (may exceed the array) */
	char why[EXIF_MAX_NOTES][160];      /* "GPSLatitude: 999 degrees, over 90" */
	int found;                          /* 1: the file has an EXIF block */
} exif_notes;

/* Reads the metadata of the image file data[0..len) (the whole file or at
 * least its header) into *out (zeroed first; release with
 * store_exif_clear). A file without EXIF gives an empty *out. notes may be
 * NULL. Returns 0, or -1 only when out of memory (then *out is empty). */
int exif_read_mem(const uint8_t *data, size_t len, store_exif *out, exif_notes *notes);

/* The same for the file at path (opened read-only, mapped, unmapped).
 * Returns 0, or -1 with errno when the file cannot be opened or mapped, or
 * on out of memory; *out is then empty. */
int exif_read_file(const char *path, store_exif *out, exif_notes *notes);

/* Logs each note as a warning that names the image (what: "image 12",
 * "upload of abcd..."), one line per reason. */
void exif_log_notes(const char *what, const exif_notes *notes);

#endif
