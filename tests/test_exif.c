/*
 * test_exif: server/exif.c on real files. JPEGs written by libvips and
 * tagged by exiftool at test time (Debian's libimage-exiftool-perl):
 * capture times with offsets east and west, without one, only
 * DateTimeDigitized, none; GPS in all four hemispheres against the decimal
 * degrees given to exiftool; make, model, lens, orientation; missing
 * fields; a 60 KB Make. Then EXIF blocks built byte by byte here, for what
 * exiftool refuses to write: 999 degrees, minutes past 60, a zero
 * denominator, the wrong type and count, an offset past the end, control
 * characters and bytes that are not UTF-8, a 100 KB Make in a PNG eXIf
 * chunk, a truncated segment, and every prefix of a tagged file. Each
 * damaged field is ignored with a note that names it, and the others are
 * still read.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "exif.h"
#include "tap.h"

static char tmp[256];

static char *path_of(const char *name)
{
	return g_build_filename(tmp, name, NULL);
}

static int notes_mention(const exif_notes *n, const char *what)
{
	int k = n->n < EXIF_MAX_NOTES ? n->n : EXIF_MAX_NOTES;
	for (int i = 0; i < k; i++)
		if (strstr(n->why[i], what))
			return 1;
	return 0;
}

static void dump_notes(const exif_notes *n)
{
	int k = n->n < EXIF_MAX_NOTES ? n->n : EXIF_MAX_NOTES;
	for (int i = 0; i < k; i++)
		printf("#   note: %s\n", n->why[i]);
}

/* ---- files tagged by exiftool -------------------------------------------- */

/* Copies the base JPEG to name and runs exiftool on it with args (NULL
 * terminated). The path (g_free) or NULL. */
static char *tagged(const char *name, const char *const *args)
{
	char *base = path_of("base.jpg"), *dst = path_of(name), *body = NULL;
	gsize len;
	if (!g_file_get_contents(base, &body, &len, NULL) ||
	    !g_file_set_contents(dst, body, (gssize)len, NULL)) {
		g_free(base);
		g_free(body);
		g_free(dst);
		return NULL;
	}
	g_free(base);
	g_free(body);
	const char *argv[32] = {"exiftool", "-q", "-q", "-overwrite_original"};
	int k = 4;
	for (int i = 0; args[i] && k < 30; i++)
		argv[k++] = args[i];
	argv[k++] = dst;
	argv[k] = NULL;
	int status = -1;
	char *err = NULL;
	if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
	                  NULL, NULL, NULL, &err, &status, NULL) ||
	    !g_spawn_check_wait_status(status, NULL)) {
		printf("# exiftool failed on %s: %s\n", name, err ? err : "(not run)");
		g_free(err);
		g_free(dst);
		return NULL;
	}
	g_free(err);
	return dst;
}

static int read_tagged(const char *name, const char *const *args, store_exif *e, exif_notes *n)
{
	char *p = tagged(name, args);
	if (!p)
		return -1;
	int rc = exif_read_file(p, e, n);
	g_free(p);
	return rc;
}

static void t_offset_east(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-DateTimeOriginal=2021:07:04 18:30:00", "-OffsetTimeOriginal=+02:00",
	                   "-DateTimeDigitized=2001:01:01 00:00:00", NULL};
	REQUIRE(read_tagged("east.jpg", a, &e, &n) == 0);
	CHECK(n.found);
	REQUIRE(e.has_taken && e.taken);
	CHECKF(strcmp(e.taken, "2021-07-04T18:30:00+02:00") == 0, "taken %s", e.taken);
	/* Python: datetime.fromisoformat('2021-07-04T18:30:00+02:00').timestamp() */
	CHECKF(e.taken_ms == 1625416200000LL, "taken_ms %lld", (long long)e.taken_ms);
	CHECK(n.n == 0);
	store_exif_clear(&e);
}

static void t_offset_west(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-DateTimeOriginal=2020:02:29 23:59:59", "-OffsetTimeOriginal=-05:30", NULL};
	REQUIRE(read_tagged("west.jpg", a, &e, &n) == 0);
	REQUIRE(e.has_taken && e.taken);
	CHECKF(strcmp(e.taken, "2020-02-29T23:59:59-05:30") == 0, "taken %s", e.taken);
	CHECKF(e.taken_ms == 1583040599000LL, "taken_ms %lld", (long long)e.taken_ms);
	store_exif_clear(&e);
}

static void t_no_offset(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-DateTimeOriginal=1999:12:31 23:59:59", NULL};
	REQUIRE(read_tagged("nooff.jpg", a, &e, &n) == 0);
	REQUIRE(e.has_taken && e.taken);
	CHECKF(strcmp(e.taken, "1999-12-31T23:59:59") == 0, "taken %s", e.taken);
	/* Read as UTC. */
	CHECKF(e.taken_ms == 946684799000LL, "taken_ms %lld", (long long)e.taken_ms);
	CHECK(n.n == 0);
	store_exif_clear(&e);
}

static void t_only_digitized(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-CreateDate=2016:10:12 08:05:03", "-OffsetTimeDigitized=+09:00",
	                   "-OffsetTimeOriginal=+01:00", NULL};
	REQUIRE(read_tagged("digit.jpg", a, &e, &n) == 0);
	REQUIRE(e.has_taken && e.taken);
	/* Digitized's own offset, never Original's. */
	CHECKF(strcmp(e.taken, "2016-10-12T08:05:03+09:00") == 0, "taken %s", e.taken);
	CHECKF(e.taken_ms == 1476227103000LL, "taken_ms %lld", (long long)e.taken_ms);
	store_exif_clear(&e);
}

static void t_invalid_original_falls_back(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-DateTimeOriginal#=2021:13:45 25:00:00", "-CreateDate=2016:10:12 08:05:03",
	                   NULL};
	REQUIRE(read_tagged("badorig.jpg", a, &e, &n) == 0);
	REQUIRE(e.has_taken && e.taken);
	CHECKF(strcmp(e.taken, "2016-10-12T08:05:03") == 0, "taken %s", e.taken);
	CHECK(notes_mention(&n, "DateTimeOriginal"));
	store_exif_clear(&e);
}

static void t_bad_offset_dropped(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-DateTimeOriginal=2021:07:04 18:30:00", "-OffsetTimeOriginal#=+2:00", NULL};
	REQUIRE(read_tagged("badoff.jpg", a, &e, &n) == 0);
	REQUIRE(e.has_taken && e.taken);
	CHECKF(strcmp(e.taken, "2021-07-04T18:30:00") == 0, "taken %s", e.taken);
	CHECK(notes_mention(&n, "OffsetTimeOriginal"));
	store_exif_clear(&e);
}

static void t_none(void)
{
	store_exif e;
	exif_notes n;
	char *p = path_of("base.jpg");
	REQUIRE(exif_read_file(p, &e, &n) == 0);
	g_free(p);
	CHECK(!e.has_taken && !e.taken && !e.has_gps && !e.camera_make && !e.camera_model && !e.lens &&
	      e.orientation == 0);
	CHECK(n.n == 0);
	store_exif_clear(&e);
}

static void gps_case(const char *name, const char *lat, const char *latref, const char *lon,
                     const char *lonref, double want_lat, double want_lon)
{
	store_exif e;
	exif_notes n;
	char a1[64], a2[64], a3[64], a4[64];
	snprintf(a1, sizeof a1, "-GPSLatitude=%s", lat);
	snprintf(a2, sizeof a2, "-GPSLatitudeRef=%s", latref);
	snprintf(a3, sizeof a3, "-GPSLongitude=%s", lon);
	snprintf(a4, sizeof a4, "-GPSLongitudeRef=%s", lonref);
	const char *a[] = {a1, a2, a3, a4, NULL};
	REQUIRE(read_tagged(name, a, &e, &n) == 0);
	CHECKF(e.has_gps, "%s: no position", name);
	/* exiftool stores seconds as a rational: a tenth of a metre is plenty. */
	CHECKF(fabs(e.gps_lat - want_lat) < 1e-6 && fabs(e.gps_lon - want_lon) < 1e-6,
	       "%s: %.8f %.8f, want %.8f %.8f", name, e.gps_lat, e.gps_lon, want_lat, want_lon);
	CHECK(n.n == 0);
	dump_notes(&n);
	store_exif_clear(&e);
}

static void t_gps_hemispheres(void)
{
	gps_case("ne.jpg", "48.8584", "N", "2.2945", "E", 48.8584, 2.2945);
	gps_case("nw.jpg", "40.6892", "N", "74.0445", "W", 40.6892, -74.0445);
	gps_case("se.jpg", "33.8568", "S", "151.2153", "E", -33.8568, 151.2153);
	gps_case("sw.jpg", "22.9519", "S", "43.2105", "W", -22.9519, -43.2105);
}

static void t_camera(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-Make=Canon", "-Model=Canon EOS 5D Mark IV ",
	                   "-LensModel=EF24-70mm f/2.8L II USM", "-Orientation#=6", NULL};
	REQUIRE(read_tagged("camera.jpg", a, &e, &n) == 0);
	CHECK(e.camera_make && strcmp(e.camera_make, "Canon") == 0);
	/* Trailing blanks go. */
	CHECK(e.camera_model && strcmp(e.camera_model, "Canon EOS 5D Mark IV") == 0);
	CHECK(e.lens && strcmp(e.lens, "EF24-70mm f/2.8L II USM") == 0);
	CHECK(e.orientation == 6);
	CHECK(!e.has_taken && !e.has_gps);
	store_exif_clear(&e);
}

static void t_missing_longitude(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-GPSLatitude=48.8584", "-GPSLatitudeRef=N", "-Make=Nikon", NULL};
	REQUIRE(read_tagged("halfgps.jpg", a, &e, &n) == 0);
	CHECK(!e.has_gps);
	CHECK(notes_mention(&n, "only the latitude"));
	CHECK(e.camera_make && strcmp(e.camera_make, "Nikon") == 0);
	store_exif_clear(&e);
}

static void t_missing_ref(void)
{
	store_exif e;
	exif_notes n;
	const char *a[] = {"-GPSLatitude=48.8584", "-GPSLongitude=2.2945", "-GPSLongitudeRef=E", NULL};
	REQUIRE(read_tagged("noref.jpg", a, &e, &n) == 0);
	CHECK(!e.has_gps);
	CHECK(notes_mention(&n, "GPSLatitudeRef"));
	store_exif_clear(&e);
}

static void t_long_make_jpeg(void)
{
	store_exif e;
	exif_notes n;
	char *big = path_of("make60k.txt");
	char *s = g_malloc(60001);
	memset(s, 'M', 60000);
	s[60000] = 0;
	CHECK(g_file_set_contents(big, s, 60000, NULL));
	g_free(s);
	char arg[300];
	snprintf(arg, sizeof arg, "-Make<=%s", big);
	const char *a[] = {arg, "-Model=X100V", NULL};
	REQUIRE(read_tagged("make60k.jpg", a, &e, &n) == 0);
	g_free(big);
	CHECK(!e.camera_make);
	CHECK(notes_mention(&n, "Make: 60000 bytes"));
	CHECK(e.camera_model && strcmp(e.camera_model, "X100V") == 0);
	store_exif_clear(&e);
}

/* ---- EXIF blocks built byte by byte -------------------------------------- */

typedef struct ent {
	uint16_t tag, type;
	uint32_t count;
	const void *val;     /* count * size of type bytes */
	uint32_t force_off;  /* non-zero: this offset instead of the data's */
} ent;

typedef struct bytes {
	uint8_t *b;
	size_t n, cap;
} bytes;

static void put(bytes *x, const void *p, size_t n)
{
	if (x->n + n > x->cap) {
		x->cap = (x->n + n) * 2;
		x->b = realloc(x->b, x->cap);
	}
	memcpy(x->b + x->n, p, n);
	x->n += n;
}

static void put16(bytes *x, unsigned v)
{
	uint8_t b[2] = {v & 0xff, v >> 8};
	put(x, b, 2);
}

static void put32(bytes *x, uint32_t v)
{
	uint8_t b[4] = {v & 0xff, v >> 8 & 0xff, v >> 16 & 0xff, v >> 24};
	put(x, b, 4);
}

static void set32(bytes *x, size_t at, uint32_t v)
{
	x->b[at] = v & 0xff;
	x->b[at + 1] = v >> 8 & 0xff;
	x->b[at + 2] = v >> 16 & 0xff;
	x->b[at + 3] = v >> 24;
}

static size_t type_size(uint16_t t)
{
	return t == 3 ? 2 : t == 4 ? 4 : t == 5 ? 8 : 1;
}

/* One IFD at the end of x, its values after it; where[i] (optional)
 * receives where entry i's value/offset field is. Returns the IFD's
 * offset. */
static size_t ifd(bytes *x, const ent *e, int n, size_t *where)
{
	size_t at = x->n;
	put16(x, (unsigned)n);
	size_t fields = x->n;
	for (int i = 0; i < n; i++) {
		put16(x, e[i].tag);
		put16(x, e[i].type);
		put32(x, e[i].count);
		put32(x, 0);
	}
	put32(x, 0);
	for (int i = 0; i < n; i++) {
		size_t len = type_size(e[i].type) * e[i].count, field = fields + 12 * (size_t)i + 8;
		if (where)
			where[i] = field;
		if (len <= 4) {
			memcpy(x->b + field, e[i].val, len);
		} else {
			set32(x, field, e[i].force_off ? e[i].force_off : (uint32_t)(x->n - 6));
			put(x, e[i].val, len);
			if (len & 1)
				put(x, "", 1);
		}
	}
	return at;
}

/* "Exif\0\0" + a little-endian TIFF: IFD0 (with pointers to the EXIF and
 * GPS IFDs when given). Offsets count from the TIFF header (byte 6). */
static bytes block(const ent *i0, int n0, const ent *ex, int ne, const ent *gps, int ng)
{
	bytes x = {0};
	put(&x, "Exif\0\0II*\0", 10);
	put32(&x, 8);
	ent all[16];
	int k = 0;
	for (int i = 0; i < n0; i++)
		all[k++] = i0[i];
	uint32_t zero = 0;
	int exif_at = -1, gps_at = -1;
	if (ne)
		exif_at = k, all[k++] = (ent){0x8769, 4, 1, &zero, 0};
	if (ng)
		gps_at = k, all[k++] = (ent){0x8825, 4, 1, &zero, 0};
	size_t where[16];
	ifd(&x, all, k, where);
	if (ne) {
		size_t at = ifd(&x, ex, ne, NULL);
		set32(&x, where[exif_at], (uint32_t)(at - 6));
	}
	if (ng) {
		size_t at = ifd(&x, gps, ng, NULL);
		set32(&x, where[gps_at], (uint32_t)(at - 6));
	}
	return x;
}

static uint8_t *base_jpeg;
static size_t base_jpeg_len;

/* The base JPEG with blk as its APP1 segment right after SOI; app1_len
 * non-zero claims that length instead of the true one. */
static bytes jpeg_with(const bytes *blk, unsigned app1_len)
{
	bytes j = {0};
	put(&j, "\xff\xd8\xff\xe1", 4);
	unsigned l = app1_len ? app1_len : (unsigned)blk->n + 2;
	uint8_t be[2] = {l >> 8, l & 0xff};
	put(&j, be, 2);
	put(&j, blk->b, blk->n);
	put(&j, base_jpeg + 2, base_jpeg_len - 2);
	return j;
}

static void rational(uint8_t *p, uint32_t num, uint32_t den)
{
	for (int i = 0; i < 4; i++) {
		p[i] = num >> (8 * i) & 0xff;
		p[4 + i] = den >> (8 * i) & 0xff;
	}
}

static void read_jpeg_block(const bytes *blk, store_exif *e, exif_notes *n)
{
	bytes j = jpeg_with(blk, 0);
	CHECK(exif_read_mem(j.b, j.n, e, n) == 0);
	free(j.b);
}

static const char DTO[] = "2021:07:04 18:30:00";

static void t_gps_999_degrees(void)
{
	uint8_t lat[24], lon[24];
	rational(lat, 999, 1), rational(lat + 8, 0, 1), rational(lat + 16, 0, 1);
	rational(lon, 2, 1), rational(lon + 8, 17, 1), rational(lon + 16, 40, 1);
	ent gps[] = {{1, 2, 2, "N", 0}, {2, 5, 3, lat, 0}, {3, 2, 2, "E", 0}, {4, 5, 3, lon, 0}};
	ent i0[] = {{0x010f, 2, 6, "Canon", 0}};
	ent ex[] = {{0x9003, 2, 20, DTO, 0}};
	bytes b = block(i0, 1, ex, 1, gps, 4);
	store_exif e;
	exif_notes n;
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECK(!e.has_gps);
	CHECK(notes_mention(&n, "GPSLatitude: 999 degrees"));
	dump_notes(&n);
	/* The rest is read. */
	CHECK(e.camera_make && strcmp(e.camera_make, "Canon") == 0);
	CHECK(e.has_taken && e.taken && strcmp(e.taken, "2021-07-04T18:30:00") == 0);
	store_exif_clear(&e);
}

static void t_gps_bad_parts(void)
{
	uint8_t lat[24], lon[24];
	/* 75 minutes; a zero denominator. */
	rational(lat, 10, 1), rational(lat + 8, 75, 1), rational(lat + 16, 0, 1);
	rational(lon, 2, 0), rational(lon + 8, 0, 1), rational(lon + 16, 0, 1);
	ent gps[] = {{1, 2, 2, "N", 0}, {2, 5, 3, lat, 0}, {3, 2, 2, "X", 0}, {4, 5, 3, lon, 0}};
	bytes b = block(NULL, 0, NULL, 0, gps, 4);
	store_exif e;
	exif_notes n;
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECK(!e.has_gps);
	CHECK(notes_mention(&n, "75 minutes"));
	CHECK(notes_mention(&n, "neither E nor W"));
	store_exif_clear(&e);

	rational(lon, 2, 0);
	ent gps2[] = {{1, 2, 2, "S", 0}, {2, 5, 2, lat, 0}, {3, 2, 2, "E", 0}, {4, 5, 3, lon, 0}};
	b = block(NULL, 0, NULL, 0, gps2, 4);
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECK(!e.has_gps);
	CHECK(notes_mention(&n, "GPSLatitude: 2 values, not 3"));
	CHECK(notes_mention(&n, "zero denominator"));
	dump_notes(&n);
	store_exif_clear(&e);

	/* 179 deg 56' 60" W, as exiftool writes 179.95 (rounded seconds):
	 * 179.95, not refused. */
	rational(lat, 16, 1), rational(lat + 8, 51, 1), rational(lat + 16, 0, 1);
	rational(lon, 179, 1), rational(lon + 8, 56, 1), rational(lon + 16, 60, 1);
	ent gps3[] = {{1, 2, 2, "S", 0}, {2, 5, 3, lat, 0}, {3, 2, 2, "W", 0}, {4, 5, 3, lon, 0}};
	b = block(NULL, 0, NULL, 0, gps3, 4);
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECKF(e.has_gps && fabs(e.gps_lat + 16.85) < 1e-9 && fabs(e.gps_lon + 179.95) < 1e-9,
	       "60 seconds: has_gps %d, %.6f %.6f", e.has_gps, e.gps_lat, e.gps_lon);
	store_exif_clear(&e);
}

static void t_wrong_types(void)
{
	/* Orientation as ASCII, Make as a SHORT, Orientation 9 elsewhere. */
	uint16_t sh = 7;
	ent i0[] = {{0x0112, 2, 2, "6", 0}, {0x010f, 3, 1, &sh, 0}, {0x0110, 2, 5, "GR3x", 0}};
	bytes b = block(i0, 3, NULL, 0, NULL, 0);
	store_exif e;
	exif_notes n;
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECK(e.orientation == 0);
	CHECK(!e.camera_make);
	CHECK(notes_mention(&n, "Orientation: of type"));
	CHECK(notes_mention(&n, "Make: of type"));
	CHECK(e.camera_model && strcmp(e.camera_model, "GR3x") == 0);
	dump_notes(&n);
	store_exif_clear(&e);

	uint16_t nine = 9;
	ent i1[] = {{0x0112, 3, 1, &nine, 0}};
	b = block(i1, 1, NULL, 0, NULL, 0);
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECK(e.orientation == 0);
	CHECK(notes_mention(&n, "Orientation: 9"));
	store_exif_clear(&e);
}

static void t_bad_strings(void)
{
	ent i0[] = {{0x010f, 2, 6, "Ca\x01on", 0}, {0x0110, 2, 4, "\xff\xfe\xfd", 0}};
	ent ex[] = {{0xa434, 2, 4, "   ", 0}};
	bytes b = block(i0, 2, ex, 1, NULL, 0);
	store_exif e;
	exif_notes n;
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECK(!e.camera_make && !e.camera_model && !e.lens);
	CHECK(notes_mention(&n, "Make: holds control characters"));
	CHECK(notes_mention(&n, "Model: not UTF-8"));
	store_exif_clear(&e);
}

static void t_offset_past_end(void)
{
	/* DateTimeOriginal's value said to be 4 GB in; Make is fine. */
	ent i0[] = {{0x010f, 2, 5, "Sony", 0}};
	ent ex[] = {{0x9003, 2, 20, DTO, 0xfffff000u}};
	bytes b = block(i0, 1, ex, 1, NULL, 0);
	store_exif e;
	exif_notes n;
	read_jpeg_block(&b, &e, &n);
	free(b.b);
	CHECK(!e.has_taken);
	CHECK(notes_mention(&n, "past end"));
	CHECK(e.camera_make && strcmp(e.camera_make, "Sony") == 0);
	dump_notes(&n);
	store_exif_clear(&e);
}

static void t_truncated_segment(void)
{
	ent i0[] = {{0x010f, 2, 6, "Canon", 0}};
	ent ex[] = {{0x9003, 2, 20, DTO, 0}};
	bytes b = block(i0, 1, ex, 1, NULL, 0);
	/* The segment claims more than the file holds. */
	bytes j = jpeg_with(&b, 0);
	store_exif e;
	exif_notes n;
	size_t cut = 4 + 2 + b.n / 2;
	j.b[4] = 0xff, j.b[5] = 0xf0;
	CHECK(exif_read_mem(j.b, cut, &e, &n) == 0);
	CHECK(!e.camera_make && !e.has_taken);
	CHECK(notes_mention(&n, "truncated"));
	store_exif_clear(&e);
	/* The TIFF cut inside its segment (the length says so): what can be
	 * read is, the rest is not invented. */
	bytes half = {0};
	put(&half, b.b, b.n - 10);
	bytes j2 = jpeg_with(&half, 0);
	CHECK(exif_read_mem(j2.b, j2.n, &e, &n) == 0);
	CHECK(!e.has_taken);
	CHECK(notes_mention(&n, "past end"));
	CHECK(e.camera_make && strcmp(e.camera_make, "Canon") == 0);
	dump_notes(&n);
	store_exif_clear(&e);
	/* Every prefix of a whole file: no read past the end (ASan in the
	 * sanitized run), never a failure. */
	int bad = 0;
	for (size_t k = 0; k <= j.n && k < 4096; k++) {
		if (exif_read_mem(j.b, k, &e, &n) != 0)
			bad++;
		store_exif_clear(&e);
	}
	CHECK(bad == 0);
	free(j.b), free(j2.b), free(half.b), free(b.b);
}

static void t_png_100k_make(void)
{
	char *make = malloc(100001);
	memset(make, 'A', 100000);
	make[100000] = 0;
	ent i0[] = {{0x010f, 2, 100001, make, 0}, {0x0110, 2, 3, "Z9", 0}};
	ent ex[] = {{0x9003, 2, 20, DTO, 0}, {0x9011, 2, 7, "+01:00", 0}};
	bytes b = block(i0, 2, ex, 2, NULL, 0);
	free(make);
	/* PNG: signature, IHDR, eXIf (the bare TIFF, no "Exif" header), IEND.
	 * CRCs are not checked by the reader. */
	bytes p = {0};
	put(&p, "\x89PNG\r\n\x1a\n", 8);
	put(&p, "\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01\x08\x00\0\0\0\0\0\0\0", 25);
	uint32_t len = (uint32_t)(b.n - 6);
	uint8_t be[4] = {len >> 24, len >> 16 & 0xff, len >> 8 & 0xff, len & 0xff};
	put(&p, be, 4);
	put(&p, "eXIf", 4);
	put(&p, b.b + 6, b.n - 6);
	put(&p, "\0\0\0\0\0\0\0\0IEND\0\0\0\0", 16);
	store_exif e;
	exif_notes n;
	CHECK(exif_read_mem(p.b, p.n, &e, &n) == 0);
	CHECK(n.found);
	/* Only the first 64 KB are read: Make's value lies past them, and so
	 * does the EXIF IFD written after it; Model, held in its entry, is
	 * read. */
	CHECK(!e.camera_make);
	CHECK(notes_mention(&n, "only the first 65536 are read"));
	CHECK(notes_mention(&n, "past end"));
	CHECK(e.camera_model && strcmp(e.camera_model, "Z9") == 0);
	CHECK(!e.taken);
	dump_notes(&n);
	store_exif_clear(&e);
	free(p.b), free(b.b);
}

static void t_webp_chunk(void)
{
	ent i0[] = {{0x0110, 2, 6, "Pixel", 0}};
	bytes b = block(i0, 1, NULL, 0, NULL, 0);
	bytes w = {0};
	put(&w, "RIFF\0\0\0\0WEBPVP8X", 16);
	put(&w, "\x0a\0\0\0\x08\0\0\0\0\0\0\0\0\0", 14);
	put(&w, "EXIF", 4);
	put32(&w, (uint32_t)b.n);
	put(&w, b.b, b.n);
	if (b.n & 1)
		put(&w, "", 1);
	store_exif e;
	exif_notes n;
	CHECK(exif_read_mem(w.b, w.n, &e, &n) == 0);
	CHECK(e.camera_model && strcmp(e.camera_model, "Pixel") == 0);
	store_exif_clear(&e);
	free(w.b), free(b.b);
}

static int make_base(void)
{
	VipsImage *im = NULL;
	void *buf = NULL;
	size_t len = 0;
	if (vips_black(&im, 32, 24, "bands", 3, NULL))
		return -1;
	int rc = vips_jpegsave_buffer(im, &buf, &len, "strip", TRUE, NULL);
	g_object_unref(im);
	if (rc)
		return -1;
	char *p = path_of("base.jpg");
	int ok = g_file_set_contents(p, buf, (gssize)len, NULL);
	g_free(p);
	base_jpeg = g_memdup2(buf, len);
	base_jpeg_len = len;
	g_free(buf);
	return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	(void)argc;
	if (VIPS_INIT(argv[0]))
		return 1;
	snprintf(tmp, sizeof tmp, "%s/clipd-test-exif-XXXXXX", g_get_tmp_dir());
	if (!g_mkdtemp(tmp) || make_base()) {
		printf("Bail out! cannot write the base JPEG in a temporary directory\n");
		return 1;
	}
	char *et = g_find_program_in_path("exiftool");
	if (!et) {
		printf("Bail out! exiftool is missing (Debian's libimage-exiftool-perl, "
		       "deploy/setup.sh installs it)\n");
		return 1;
	}
	g_free(et);
	TAP_RUN(t_offset_east);
	TAP_RUN(t_offset_west);
	TAP_RUN(t_no_offset);
	TAP_RUN(t_only_digitized);
	TAP_RUN(t_invalid_original_falls_back);
	TAP_RUN(t_bad_offset_dropped);
	TAP_RUN(t_none);
	TAP_RUN(t_gps_hemispheres);
	TAP_RUN(t_camera);
	TAP_RUN(t_missing_longitude);
	TAP_RUN(t_missing_ref);
	TAP_RUN(t_long_make_jpeg);
	TAP_RUN(t_gps_999_degrees);
	TAP_RUN(t_gps_bad_parts);
	TAP_RUN(t_wrong_types);
	TAP_RUN(t_bad_strings);
	TAP_RUN(t_offset_past_end);
	TAP_RUN(t_truncated_segment);
	TAP_RUN(t_png_100k_make);
	TAP_RUN(t_webp_chunk);
	/* The temporary files go. */
	GDir *d = g_dir_open(tmp, 0, NULL);
	const char *f;
	while (d && (f = g_dir_read_name(d))) {
		char *p = path_of(f);
		g_unlink(p);
		g_free(p);
	}
	if (d)
		g_dir_close(d);
	g_rmdir(tmp);
	g_free(base_jpeg);
	return tap_done();
}
