/* exif.c: the EXIF block found in an image's container, read field by field
 * with libexif (see exif.h for the choice and the bounds). */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <libexif/exif-data.h>
#include <libexif/exif-log.h>
#include <libexif/exif-mem.h>
#include <libexif/exif-utils.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exif.h"
#include "log.h"

static void note(exif_notes *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(exif_notes *n, const char *fmt, ...)
{
	if (!n)
		return;
	if (n->n < EXIF_MAX_NOTES) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(n->why[n->n], sizeof n->why[0], fmt, ap);
		va_end(ap);
	}
	n->n++;
}

/* ---- the EXIF block in its container ------------------------------------ */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static const uint8_t EXIF_HEADER[6] = {'E', 'x', 'i', 'f', 0, 0};

/* A JPEG's first APP1 segment that starts with "Exif\0\0": its payload
 * (header included) in *blk. Walks the segments before the first scan
 * (SOS), at most EXIF_MAX_SEGMENTS of them; every length is checked
 * against the data. */
static int jpeg_block(const uint8_t *d, size_t len, const uint8_t **blk, size_t *n,
                      exif_notes *notes)
{
	size_t p = 2;
	for (int seg = 0; seg < EXIF_MAX_SEGMENTS; seg++) {
		while (p < len && d[p] == 0xff && p + 1 < len && d[p + 1] == 0xff)
			p++; /* fill bytes */
		if (p + 4 > len || d[p] != 0xff)
			return 0;
		uint8_t m = d[p + 1];
		if (m == 0xda || m == 0xd9)
			return 0; /* the image data: metadata comes before it */
		if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) {
			p += 2; /* markers without a length */
			continue;
		}
		size_t sl = (size_t)d[p + 2] << 8 | d[p + 3];
		if (sl < 2 || p + 2 + sl > len) {
			if (m == 0xe1)
				note(notes, "EXIF segment: %zu bytes announced, %zu present (truncated)",
				     sl, len - p - 2);
			return 0;
		}
		if (m == 0xe1 && sl - 2 >= sizeof EXIF_HEADER &&
		    memcmp(d + p + 4, EXIF_HEADER, sizeof EXIF_HEADER) == 0) {
			*blk = d + p + 4;
			*n = sl - 2;
			return 1;
		}
		p += 2 + sl;
	}
	return 0;
}

/* PNG's eXIf chunk (a TIFF structure without the "Exif" header), among
 * the chunks before the image data (IDAT). */
static int png_block(const uint8_t *d, size_t len, const uint8_t **blk, size_t *n,
                     exif_notes *notes)
{
	size_t p = 8;
	for (int c = 0; c < EXIF_MAX_SEGMENTS && p + 12 <= len; c++) {
		uint32_t cl = be32(d + p);
		const uint8_t *type = d + p + 4;
		if (memcmp(type, "IDAT", 4) == 0 || memcmp(type, "IEND", 4) == 0)
			return 0;
		if (cl > len - p - 12) {
			if (memcmp(type, "eXIf", 4) == 0)
				note(notes, "EXIF chunk: %u bytes announced, past the end of the file", cl);
			return 0;
		}
		if (memcmp(type, "eXIf", 4) == 0) {
			if (cl > EXIF_MAX_BLOCK) {
				note(notes, "EXIF chunk: %u bytes, over the limit of %d", cl, EXIF_MAX_BLOCK);
				return 0;
			}
			*blk = d + p + 8;
			*n = cl;
			return 1;
		}
		p += 12 + (size_t)cl;
	}
	return 0;
}

/* WebP's EXIF chunk in its RIFF container (with or without the "Exif"
 * header, as writers differ). */
static int webp_block(const uint8_t *d, size_t len, const uint8_t **blk, size_t *n,
                      exif_notes *notes)
{
	size_t p = 12;
	for (int c = 0; c < EXIF_MAX_SEGMENTS && p + 8 <= len; c++) {
		uint32_t cl = le32(d + p + 4);
		const uint8_t *type = d + p;
		if (cl > len - p - 8) {
			if (memcmp(type, "EXIF", 4) == 0)
				note(notes, "EXIF chunk: %u bytes announced, past the end of the file", cl);
			return 0;
		}
		if (memcmp(type, "EXIF", 4) == 0) {
			if (cl > EXIF_MAX_BLOCK) {
				note(notes, "EXIF chunk: %u bytes, over the limit of %d", cl, EXIF_MAX_BLOCK);
				return 0;
			}
			*blk = d + p + 8;
			*n = cl;
			return 1;
		}
		p += 8 + (size_t)cl + (cl & 1);
	}
	return 0;
}

/* ---- libexif under a per-thread allocation cap ---------------------------
 * ExifMem's functions take no context, so the budget of the call in
 * progress is a thread-local. Each block carries its size in front. */

static __thread size_t mem_left;

typedef union mem_head {
	size_t size;
	max_align_t align;
} mem_head;

static void *cap_alloc(ExifLong s)
{
	if (s == 0 || s > mem_left)
		return NULL;
	mem_head *h = calloc(1, sizeof *h + s);
	if (!h)
		return NULL;
	h->size = s;
	mem_left -= s;
	return h + 1;
}

static void cap_free(void *p)
{
	if (!p)
		return;
	mem_head *h = (mem_head *)p - 1;
	mem_left += h->size;
	free(h);
}

static void *cap_realloc(void *p, ExifLong s)
{
	if (!p)
		return cap_alloc(s);
	mem_head *h = (mem_head *)p - 1;
	size_t old = h->size;
	if (s > old && s - old > mem_left)
		return NULL;
	mem_head *nh = realloc(h, sizeof *nh + s);
	if (!nh)
		return NULL;
	mem_left = mem_left + old - s;
	nh->size = s;
	return nh + 1;
}

/* libexif's complaints about the block (corrupt data, out of memory) as
 * notes; its debug chatter is dropped. */
static void on_exif_log(ExifLog *log, ExifLogCode code, const char *domain, const char *fmt,
                        va_list ap, void *data)
{
	(void)log;
	char msg[128];
	vsnprintf(msg, sizeof msg, fmt, ap);
	/* An entry whose value lies past the block's end is dropped with a
	 * debug line only; it is a damaged field all the same. */
	if (code != EXIF_LOG_CODE_CORRUPT_DATA && code != EXIF_LOG_CODE_NO_MEMORY &&
	    !(code == EXIF_LOG_CODE_DEBUG && strstr(msg, "past end")))
		return;
	note(data, "EXIF block damaged (%s): %s", domain ? domain : "libexif", msg);
}

/* ---- the fields ----------------------------------------------------------- */

static ExifEntry *entry(ExifData *ed, ExifIfd ifd, ExifTag tag)
{
	return ed->ifd[ifd] ? exif_content_get_entry(ed->ifd[ifd], tag) : NULL;
}

/* An entry that holds count values of format f (count 0: any), whose size
 * agrees. Notes why not. */
static int entry_ok(ExifEntry *e, const char *name, ExifFormat f, unsigned long count,
                    exif_notes *n)
{
	if (e->format != f) {
		note(n, "%s: of type %s, not %s", name, exif_format_get_name(e->format) ?
		     exif_format_get_name(e->format) : "unknown", exif_format_get_name(f));
		return 0;
	}
	if (count && e->components != count) {
		note(n, "%s: %lu values, not %lu", name, e->components, count);
		return 0;
	}
	if (!e->data || e->size != e->components * exif_format_get_size(f)) {
		note(n, "%s: its size does not match its count", name);
		return 0;
	}
	return 1;
}

/* An ASCII field into buf (size bytes, at least EXIF_MAX_STRING + 1): cut
 * at its first NUL, trailing blanks dropped. 1 when it holds text. A field
 * over EXIF_MAX_STRING bytes, with control characters or not UTF-8 is
 * ignored with a note. */
static int ascii_field(ExifEntry *e, const char *name, char *buf, size_t size, exif_notes *n)
{
	if (!entry_ok(e, name, EXIF_FORMAT_ASCII, 0, n))
		return 0;
	size_t len = strnlen((const char *)e->data, e->size);
	if (len > EXIF_MAX_STRING || len >= size) {
		note(n, "%s: %zu bytes, over the limit of %d", name, len, EXIF_MAX_STRING);
		return 0;
	}
	memcpy(buf, e->data, len);
	buf[len] = 0;
	while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		buf[--len] = 0;
	size_t lead = strspn(buf, " \t");
	memmove(buf, buf + lead, len - lead + 1);
	len -= lead;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) {
			note(n, "%s: holds control characters", name);
			return 0;
		}
	if (!g_utf8_validate(buf, (gssize)len, NULL)) {
		note(n, "%s: not UTF-8 text", name);
		return 0;
	}
	return len > 0;
}

static char *string_field(ExifData *ed, ExifIfd ifd, ExifTag tag, const char *name,
                          exif_notes *n, int *oom)
{
	char buf[EXIF_MAX_STRING + 1];
	ExifEntry *e = entry(ed, ifd, tag);
	if (!e || !ascii_field(e, name, buf, sizeof buf, n))
		return NULL;
	char *s = strdup(buf);
	if (!s)
		*oom = 1;
	return s;
}

static int digits(const char *s, int k, int *v)
{
	*v = 0;
	for (int i = 0; i < k; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		*v = *v * 10 + (s[i] - '0');
	}
	return 1;
}

static int leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int y, int m, int d)
{
	static const int before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
	int64_t yy = y - 1;
	int64_t days = yy * 365 + yy / 4 - yy / 100 + yy / 400; /* to y-01-01 from 0001-01-01 */
	days += before[m - 1] + (m > 2 && leap(y)) + d - 1;
	return days - 719162; /* 0001-01-01 to 1970-01-01 */
}

struct wall {
	int y, mo, d, h, mi, s;
};

/* "YYYY:MM:DD HH:MM:SS", the EXIF date form. */
static int parse_datetime(const char *t, struct wall *w, const char *name, exif_notes *n)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (strlen(t) != 19 || t[4] != ':' || t[7] != ':' || t[10] != ' ' || t[13] != ':' ||
	    t[16] != ':' || !digits(t, 4, &w->y) || !digits(t + 5, 2, &w->mo) ||
	    !digits(t + 8, 2, &w->d) || !digits(t + 11, 2, &w->h) || !digits(t + 14, 2, &w->mi) ||
	    !digits(t + 17, 2, &w->s)) {
		note(n, "%s: '%.40s' is not YYYY:MM:DD HH:MM:SS", name, t);
		return 0;
	}
	if (w->y == 0 && w->mo == 0 && w->d == 0) {
		note(n, "%s: all zeros (unknown)", name);
		return 0;
	}
	if (w->y < 1 || w->mo < 1 || w->mo > 12 || w->d < 1 ||
	    w->d > mdays[w->mo - 1] + (w->mo == 2 && leap(w->y)) || w->h > 23 || w->mi > 59 ||
	    w->s > 59) {
		note(n, "%s: '%s' is not a valid date and time", name, t);
		return 0;
	}
	return 1;
}

/* "+HH:MM" or "-HH:MM" (the form EXIF 2.31 gives OffsetTime*; blanks mean
 * unknown): minutes east of UTC. */
static int parse_offset(const char *t, int *minutes, const char *name, exif_notes *n)
{
	int h, m;
	if (strlen(t) != 6 || (t[0] != '+' && t[0] != '-') || t[3] != ':' || !digits(t + 1, 2, &h) ||
	    !digits(t + 4, 2, &m) || h > 23 || m > 59) {
		note(n, "%s: '%.40s' is not +HH:MM or -HH:MM", name, t);
		return 0;
	}
	*minutes = (t[0] == '-' ? -1 : 1) * (h * 60 + m);
	return 1;
}

/* The capture time from one pair of tags (DateTimeOriginal and
 * OffsetTimeOriginal, or the Digitized pair). 1 when set. */
static int taken_from(ExifData *ed, ExifTag dt_tag, ExifTag off_tag, const char *dt_name,
                      const char *off_name, store_exif *out, exif_notes *n, int *oom)
{
	char dt[EXIF_MAX_STRING + 1], off[EXIF_MAX_STRING + 1];
	struct wall w;
	ExifEntry *e = entry(ed, EXIF_IFD_EXIF, dt_tag);
	if (!e || !ascii_field(e, dt_name, dt, sizeof dt, n) || !parse_datetime(dt, &w, dt_name, n))
		return 0;
	int minutes = 0, has_off = 0;
	ExifEntry *o = entry(ed, EXIF_IFD_EXIF, off_tag);
	if (o && ascii_field(o, off_name, off, sizeof off, n))
		has_off = parse_offset(off, &minutes, off_name, n);
	char buf[40];
	int k = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d", w.y, w.mo, w.d, w.h, w.mi,
	                 w.s);
	if (has_off)
		snprintf(buf + k, sizeof buf - (size_t)k, "%s", off);
	if (!(out->taken = strdup(buf))) {
		*oom = 1;
		return 0;
	}
	out->has_taken = 1;
	out->taken_ms = ((days_from_civil(w.y, w.mo, w.d) * 86400 + w.h * 3600 + w.mi * 60 + w.s) -
	                 (int64_t)minutes * 60) * 1000;
	return 1;
}

/* One GPS coordinate: its ref ('N'/'S' or 'E'/'W') and its three
 * rationals (degrees, minutes, seconds) into signed decimal degrees. */
static int gps_coord(ExifData *ed, ExifByteOrder bo, ExifTag tag, ExifTag ref_tag,
                     const char *name, const char *ref_name, char pos, char neg, double max,
                     double *out, exif_notes *n)
{
	char ref[EXIF_MAX_STRING + 1];
	ExifEntry *e = entry(ed, EXIF_IFD_GPS, tag), *r = entry(ed, EXIF_IFD_GPS, ref_tag);
	if (!e && !r)
		return 0;
	if (!e) {
		note(n, "%s: missing (%s is there)", name, ref_name);
		return 0;
	}
	if (!r) {
		note(n, "%s: missing, so the sign of %s is unknown", ref_name, name);
		return 0;
	}
	if (!ascii_field(r, ref_name, ref, sizeof ref, n))
		return 0;
	if (strlen(ref) != 1 || (ref[0] != pos && ref[0] != neg)) {
		note(n, "%s: '%.20s' is neither %c nor %c", ref_name, ref, pos, neg);
		return 0;
	}
	if (!entry_ok(e, name, EXIF_FORMAT_RATIONAL, 3, n))
		return 0;
	double v[3];
	for (int i = 0; i < 3; i++) {
		ExifRational q = exif_get_rational(e->data + 8 * i, bo);
		if (q.denominator == 0) {
			note(n, "%s: a zero denominator", name);
			return 0;
		}
		v[i] = (double)q.numerator / q.denominator;
	}
	/* Exactly 60 is allowed: writers that round write 179.95 degrees as
	 * 179 deg 56' 60" (exiftool 12.57 does), which means 179 deg 57'. */
	if (v[1] > 60 || v[2] > 60) {
		note(n, "%s: %g minutes %g seconds (each must be at most 60)", name, v[1], v[2]);
		return 0;
	}
	double deg = v[0] + v[1] / 60 + v[2] / 3600;
	if (deg > max) {
		note(n, "%s: %g degrees, over %g", name, deg, max);
		return 0;
	}
	*out = ref[0] == neg ? -deg : deg;
	return 1;
}

static void read_fields(ExifData *ed, store_exif *out, exif_notes *n, int *oom)
{
	ExifByteOrder bo = exif_data_get_byte_order(ed);
	if (!taken_from(ed, EXIF_TAG_DATE_TIME_ORIGINAL, EXIF_TAG_OFFSET_TIME_ORIGINAL,
	                "DateTimeOriginal", "OffsetTimeOriginal", out, n, oom) &&
	    !*oom)
		taken_from(ed, EXIF_TAG_DATE_TIME_DIGITIZED, EXIF_TAG_OFFSET_TIME_DIGITIZED,
		           "DateTimeDigitized", "OffsetTimeDigitized", out, n, oom);

	double lat, lon;
	int has_lat = gps_coord(ed, bo, EXIF_TAG_GPS_LATITUDE, EXIF_TAG_GPS_LATITUDE_REF,
	                        "GPSLatitude", "GPSLatitudeRef", 'N', 'S', 90, &lat, n);
	int has_lon = gps_coord(ed, bo, EXIF_TAG_GPS_LONGITUDE, EXIF_TAG_GPS_LONGITUDE_REF,
	                        "GPSLongitude", "GPSLongitudeRef", 'E', 'W', 180, &lon, n);
	if (has_lat && has_lon) {
		out->has_gps = 1;
		out->gps_lat = lat;
		out->gps_lon = lon;
	} else if (has_lat != has_lon) {
		note(n, "GPS: only the %s is readable, so the position is ignored",
		     has_lat ? "latitude" : "longitude");
	}

	out->camera_make = string_field(ed, EXIF_IFD_0, EXIF_TAG_MAKE, "Make", n, oom);
	out->camera_model = string_field(ed, EXIF_IFD_0, EXIF_TAG_MODEL, "Model", n, oom);
	out->lens = string_field(ed, EXIF_IFD_EXIF, EXIF_TAG_LENS_MODEL, "LensModel", n, oom);

	ExifEntry *o = entry(ed, EXIF_IFD_0, EXIF_TAG_ORIENTATION);
	if (o && entry_ok(o, "Orientation", EXIF_FORMAT_SHORT, 1, n)) {
		ExifShort v = exif_get_short(o->data, bo);
		if (v >= 1 && v <= 8)
			out->orientation = v;
		else
			note(n, "Orientation: %u, not 1..8", v);
	}
}

int exif_read_mem(const uint8_t *data, size_t len, store_exif *out, exif_notes *notes)
{
	static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	const uint8_t *blk = NULL;
	size_t n = 0;
	int got = 0, oom = 0, framed = 1;
	memset(out, 0, sizeof *out);
	if (notes)
		memset(notes, 0, sizeof *notes);
	if (len >= 4 && data[0] == 0xff && data[1] == 0xd8)
		got = jpeg_block(data, len, &blk, &n, notes);
	else if (len >= 8 && memcmp(data, PNG_SIG, 8) == 0)
		got = png_block(data, len, &blk, &n, notes), framed = 0;
	else if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
		got = webp_block(data, len, &blk, &n, notes), framed = 0;
	if (!got)
		return 0;
	if (notes)
		notes->found = 1;

	/* libexif takes the block with its "Exif\0\0" header; PNG and WebP
	 * may carry the bare TIFF structure. libexif 0.6.24 reads the first
	 * 65528 bytes after that header (a JPEG segment's worth; its log says
	 * "past end of buffer (... > 65528)" for entries beyond), so of a larger
	 * PNG or WebP block no more is read. */
	size_t head = !framed && !(n >= 6 && memcmp(blk, EXIF_HEADER, 6) == 0) ? 6 : 0;
	if (n + head > EXIF_READ_MAX) {
		note(notes, "EXIF block: %zu bytes, only the first %d are read", n + head,
		     EXIF_READ_MAX);
		n = EXIF_READ_MAX - head;
	}
	uint8_t *copy = NULL;
	if (head) {
		if (!(copy = malloc(n + 6)))
			return -1;
		memcpy(copy, EXIF_HEADER, 6);
		memcpy(copy + 6, blk, n);
		blk = copy;
		n += 6;
	}
	mem_left = EXIF_MAX_ALLOC;
	ExifMem *mem = exif_mem_new(cap_alloc, cap_realloc, cap_free);
	ExifLog *log = mem ? exif_log_new_mem(mem) : NULL;
	ExifData *ed = log ? exif_data_new_mem(mem) : NULL;
	if (!ed) {
		oom = 1;
		goto out;
	}
	exif_log_set_func(log, on_exif_log, notes);
	exif_data_log(ed, log);
	/* Read what is there: no entries added or converted to fit the
	 * specification (libexif's default would invent mandatory tags). */
	exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
	exif_data_load_data(ed, blk, (unsigned int)n);
	read_fields(ed, out, notes, &oom);
out:
	if (ed)
		exif_data_unref(ed);
	if (log)
		exif_log_unref(log);
	if (mem)
		exif_mem_unref(mem);
	free(copy);
	if (oom) {
		store_exif_clear(out);
		return -1;
	}
	return 0;
}

int exif_read_file(const char *path, store_exif *out, exif_notes *notes)
{
	memset(out, 0, sizeof *out);
	if (notes)
		memset(notes, 0, sizeof *notes);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if (st.st_size == 0) {
		close(fd);
		return 0;
	}
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	int e = errno;
	close(fd);
	if (p == MAP_FAILED) {
		errno = e;
		return -1;
	}
	/* Only the header's pages are touched. */
	int rc = exif_read_mem(p, (size_t)st.st_size, out, notes);
	munmap(p, (size_t)st.st_size);
	if (rc)
		errno = ENOMEM;
	return rc;
}

void exif_log_notes(const char *what, const exif_notes *notes)
{
	int k = notes->n < EXIF_MAX_NOTES ? notes->n : EXIF_MAX_NOTES;
	for (int i = 0; i < k; i++)
		log_warn("%s: EXIF field ignored: %s", what, notes->why[i]);
	if (notes->n > k)
		log_warn("%s: %d more EXIF fields ignored", what, notes->n - k);
}
