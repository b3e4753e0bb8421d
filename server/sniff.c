/* sniff.c: magic bytes and header sizes. Which formats are accepted is the
 * model's list (clip_image_format_accepted); this file only recognises
 * them. */
#include <string.h>

#include "clip.h"
#include "sniff.h"

static unsigned be16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static unsigned le16(const uint8_t *p)
{
	return (unsigned)p[1] << 8 | p[0];
}

static uint32_t le24(const uint8_t *p)
{
	return (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Walks JPEG marker segments up to the first start-of-frame. */
static void jpeg_size(const uint8_t *b, size_t len, sniff_info *info)
{
	size_t i = 2;
	while (i + 4 <= len) {
		if (b[i] != 0xFF)
			return;
		uint8_t m = b[i + 1];
		if (m == 0xFF) { /* fill byte */
			i++;
			continue;
		}
		if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
			i += 2;
			continue;
		}
		if (m == 0xD9 || m == 0xDA) /* end of image, start of scan: no frame header */
			return;
		unsigned seg = be16(b + i + 2);
		if (seg < 2)
			return;
		if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
			if (i + 9 <= len) {
				info->height = (int)be16(b + i + 5);
				info->width = (int)be16(b + i + 7);
			}
			return;
		}
		i += 2 + seg;
	}
}

static void webp_size(const uint8_t *b, size_t len, sniff_info *info)
{
	if (len < 30)
		return;
	if (!memcmp(b + 12, "VP8 ", 4)) {
		info->width = (int)(le16(b + 26) & 0x3fff);
		info->height = (int)(le16(b + 28) & 0x3fff);
	} else if (!memcmp(b + 12, "VP8L", 4) && b[20] == 0x2f) {
		info->width = 1 + (int)(b[21] | (b[22] & 0x3f) << 8);
		info->height = 1 + (int)((b[22] >> 6) | b[23] << 2 | (b[24] & 0x0f) << 10);
	} else if (!memcmp(b + 12, "VP8X", 4)) {
		info->width = 1 + (int)le24(b + 24);
		info->height = 1 + (int)le24(b + 27);
	}
}

/* JPEG XL (ISO/IEC 18181): a bare codestream starts FF 0A; the ISO BMFF
 * container starts with its 12-byte signature box, size 12, type "JXL ",
 * content 0D 0A 87 0A. These are the two signatures libjxl's decoder
 * recognises (lib/jxl/decode.cc, ReadSignature, in github.com/libjxl/libjxl;
 * the box is the JPEG XL Signature box of ISO/IEC 18181-2). The size is
 * left unknown: the codestream's SizeHeader is bit-packed, and in the
 * container it may follow other boxes or be split over several, so the
 * decoder's header check applies the pixel limit instead. */
static int is_jxl(const uint8_t *b, size_t len)
{
	static const uint8_t box[12] = {0x00, 0x00, 0x00, 0x0C, 'J', 'X', 'L', ' ',
	                                0x0D, 0x0A, 0x87, 0x0A};
	return (len >= 2 && b[0] == 0xFF && b[1] == 0x0A) || (len >= 12 && !memcmp(b, box, 12));
}

int sniff_image(const uint8_t *b, size_t len, sniff_info *info)
{
	const char *format = NULL;
	memset(info, 0, sizeof *info);
	if (len >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) {
		format = "png";
		info->mime = "image/png";
		if (len >= 24 && !memcmp(b + 12, "IHDR", 4)) {
			uint32_t w = be32(b + 16), h = be32(b + 20);
			/* PNG limits sides to 2^31-1; clamp so the product stays sane. */
			info->width = w > 0x7fffffff ? 0x7fffffff : (int)w;
			info->height = h > 0x7fffffff ? 0x7fffffff : (int)h;
		}
	} else if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
		format = "jpeg";
		info->mime = "image/jpeg";
		jpeg_size(b, len, info);
	} else if (len >= 10 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) {
		format = "gif";
		info->mime = "image/gif";
		info->width = (int)le16(b + 6);
		info->height = (int)le16(b + 8);
	} else if (len >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) {
		format = "webp";
		info->mime = "image/webp";
		webp_size(b, len, info);
	} else if (len >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4))) {
		format = "tiff";
		info->mime = "image/tiff";
	} else if (is_jxl(b, len)) {
		format = "jxl";
		info->mime = "image/jxl";
	} else if (len >= 12 && !memcmp(b + 4, "ftyp", 4)) {
		static const char *const heif[] = {"heic", "heix", "heim", "heis", "hevc", "hevx",
		                                   "mif1", "msf1"};
		for (size_t i = 0; i < sizeof heif / sizeof *heif; i++)
			if (!memcmp(b + 8, heif[i], 4))
				info->mime = "image/heif";
		if (!memcmp(b + 8, "avif", 4) || !memcmp(b + 8, "avis", 4))
			info->mime = "image/avif";
		if (info->mime)
			format = "heif"; /* libvips' heifload reads both */
	}
	info->format = format;
	if (!clip_image_format_accepted(format)) {
		info->mime = NULL;
		info->width = info->height = 0;
	}
	return info->mime != NULL;
}
