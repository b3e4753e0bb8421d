/*
 * image_formats.c: the one list of image formats clipd accepts. The
 * model's decoder (preprocess.c) and the thumbnailer (server/thumbs.c)
 * check the libvips loader against it; the upload sniffer (server/sniff.c)
 * checks the format its magic bytes name; error messages list its labels.
 *
 * A format of the list counts only where this libvips can load it: it has
 * the loader, and the loader is not blocked. The model blocks the loaders
 * libvips flags untrusted (preprocess.c, clip_images_init). Debian 12's
 * libvips (8.14.1) flags jxlload so, and there JPEG XL is refused at
 * upload, with the other formats named, rather than accepted and then
 * failed by the decoder.
 * That is decided once, after libvips starts (pthread_once); thread-safe.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <vips/vips.h>

#include "clip.h"
#include "preprocess_int.h"

/* Photographic formats only. libvips also reads matrices, CSV, PDF, FITS,
 * Radiance, its own format..., which a text or document file can pass for
 * (a text file "2 2\n1 2\n3 4" is a matrix). name is the libvips loader's
 * nickname up to "load" (jpegload, jpegload_source); label is for people.
 * heifload reads AVIF too. */
static const struct {
	const char *name, *label;
} formats[] = {
	{"jpeg", "JPEG"}, {"png", "PNG"},        {"webp", "WebP"},   {"gif", "GIF"},
	{"tiff", "TIFF"}, {"heif", "HEIF/AVIF"}, {"jxl", "JPEG XL"},
};
#define NFORMATS (sizeof formats / sizeof formats[0])

static pthread_once_t usable_once = PTHREAD_ONCE_INIT;
static int usable[NFORMATS]; /* written once inside pthread_once, read after it */

/* Whether libvips has the format's source loader and it is not blocked. */
static void usable_init(void)
{
	if (clip_images_init(NULL) != CLIP_OK)
		return;
	for (size_t i = 0; i < NFORMATS; i++) {
		char nick[32];
		snprintf(nick, sizeof nick, "%sload_source", formats[i].name);
		GType t = vips_type_find("VipsOperation", nick);
		if (!t)
			continue;
		VipsOperationClass *c = g_type_class_ref(t);
		usable[i] = !(c->flags & VIPS_OPERATION_BLOCKED);
		g_type_class_unref(c);
	}
}

int clip_image_format_accepted(const char *nickname)
{
	if (!nickname)
		return 0;
	pthread_once(&usable_once, usable_init);
	const char *end = strstr(nickname, "load");
	size_t len = end ? (size_t)(end - nickname) : strlen(nickname);
	for (size_t i = 0; i < NFORMATS; i++)
		if (strlen(formats[i].name) == len && !memcmp(nickname, formats[i].name, len))
			return usable[i];
	return 0;
}

size_t clip_image_formats_text(char *buf, size_t n)
{
	size_t used = 0, left = 0, shown = 0;
	pthread_once(&usable_once, usable_init);
	for (size_t i = 0; i < NFORMATS; i++)
		left += usable[i];
	if (n)
		buf[0] = '\0';
	for (size_t i = 0; i < NFORMATS; i++) {
		if (!usable[i])
			continue;
		shown++;
		const char *sep = shown == 1 ? "" : shown == left ? " or " : ", ";
		int k = snprintf(used < n ? buf + used : NULL, used < n ? n - used : 0, "%s%s", sep,
		                 formats[i].label);
		used += k > 0 ? (size_t)k : 0;
	}
	return used;
}
