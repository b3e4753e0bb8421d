/*
 * fuzz_exif: the EXIF reader (server/exif.c, exif_read_mem) on any bytes:
 * a JPEG, PNG or WebP container around a TIFF structure, libexif below.
 * It reads only the len bytes it is given, never fails but for memory, and
 * what it returns is in range: a capture time of the documented forms, a
 * position within +-90/+-180, strings of at most EXIF_MAX_STRING bytes of
 * UTF-8 without control characters, an orientation of 0..8.
 */
#include <glib.h>
#include <stdint.h>

#include "exif.h"
#include "fuzz_util.h"

static void check_string(const char *s)
{
	if (!s)
		return;
	size_t n = strlen(s);
	FUZZ_CHECK(n > 0 && n <= EXIF_MAX_STRING);
	FUZZ_CHECK(g_utf8_validate(s, (gssize)n, NULL));
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char)s[i] >= 0x20 && s[i] != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	store_exif e;
	exif_notes n;
	int rc = exif_read_mem(data, len, &e, &n);
	FUZZ_CHECK(rc == 0 || rc == -1);
	FUZZ_CHECK(n.n >= 0);
	if (rc == 0) {
		FUZZ_CHECK(e.has_taken == (e.taken != NULL));
		if (e.taken)
			FUZZ_CHECK(strlen(e.taken) == 19 || strlen(e.taken) == 25);
		if (e.has_gps)
			FUZZ_CHECK(e.gps_lat >= -90 && e.gps_lat <= 90 && e.gps_lon >= -180 &&
			           e.gps_lon <= 180);
		FUZZ_CHECK(e.orientation >= 0 && e.orientation <= 8);
		check_string(e.camera_make);
		check_string(e.camera_model);
		check_string(e.lens);
	}
	store_exif_clear(&e);
	return 0;
}
