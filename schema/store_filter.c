/*
 * store_filter.c: the ids a search filter keeps (store_filter_ids) and the
 * capture times of a result set (store_images_taken).
 *
 * DESIGN: a filter is a few fixed statements, one per access path, so
 * that each is prepared once and SQLite plans it once: a capture-time
 * range reads the index of the camera's wall-clock time (migration 006),
 * or of the instant when the bounds carry a time zone; a place without a
 * time reads the latitude band of the gps index; anything else scans the
 * table; a date range alone reads only its index. Conditions that are absent are bound NULL and drop out
 * ("?n IS NULL OR ..."). The metadata filter is the request's JSON object
 * itself, matched with json_each in the same statement, key by key: a
 * value matches when its JSON type and value are the same (1 is not 1.0
 * nor true, as json_equal), an array of values when any of them does.
 * The great-circle distance of "near" is checked here on the rows of the
 * bounding box, which contains every point within the distance.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Each key of the filter ?8 has a value equal to one of the values that
 * VALUES (a subquery of the item's values named f.key, as rows of
 * json_each's type and atom) gives. */
#define META_MATCH(VALUES)                                                                         \
	"(?8 IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(?8) f WHERE NOT EXISTS ("              \
	"SELECT 1 FROM (" VALUES ") v WHERE CASE WHEN f.type = 'array' THEN EXISTS ("              \
	"SELECT 1 FROM json_each(f.value) a WHERE a.type = v.type AND a.atom IS v.atom) "         \
	"ELSE f.type = v.type AND f.atom IS v.atom END)))"

/* An image's "mime" is its column; other keys are its metadata's. */
#define IMAGE_VALUES                                                                               \
	"SELECT 'text' AS type, images.mime AS atom WHERE f.key = 'mime' UNION ALL "               \
	"SELECT type, atom FROM json_each(images.meta) m WHERE m.key = f.key AND f.key <> 'mime'"
#define TEXT_VALUES "SELECT type, atom FROM json_each(texts.meta) m WHERE m.key = f.key"

/* The camera ?7 (a LIKE pattern), the latitude band ?3..?4 and longitude
 * span ?5..?6 (which may pass +-180: then it wraps). */
#define IMAGE_TAIL                                                                                 \
	" AND (?7 IS NULL OR camera_make LIKE ?7 ESCAPE '\\' OR camera_model LIKE ?7 ESCAPE '\\'"  \
	" OR (camera_make || ' ' || camera_model) LIKE ?7 ESCAPE '\\')"                           \
	" AND (?3 IS NULL OR (gps_lat BETWEEN ?3 AND ?4 AND (gps_lon BETWEEN ?5 AND ?6"            \
	" OR gps_lon BETWEEN ?5 + 360 AND ?6 + 360 OR gps_lon BETWEEN ?5 - 360 AND ?6 - 360)))"    \
	" AND (?1 IS NULL OR taken_local_ms >= ?1) AND (?2 IS NULL OR taken_local_ms < ?2)"        \
	" AND (?9 IS NULL OR taken_ms >= ?9) AND (?10 IS NULL OR taken_ms < ?10)"                  \
	" AND " META_MATCH(IMAGE_VALUES)

static const char SQL_FILTER_BY_LOCAL[] =
	"SELECT id, gps_lat, gps_lon FROM images INDEXED BY images_by_local_time"
	" WHERE taken_local_ms IS NOT NULL AND taken_local_ms >= coalesce(?1, -9223372036854775807)"
	" AND taken_local_ms < coalesce(?2, 9223372036854775807)" IMAGE_TAIL;
static const char SQL_FILTER_BY_INSTANT[] =
	"SELECT id, gps_lat, gps_lon FROM images INDEXED BY images_by_taken"
	" WHERE taken_ms IS NOT NULL AND taken_ms >= coalesce(?9, -9223372036854775807)"
	" AND taken_ms < coalesce(?10, 9223372036854775807)" IMAGE_TAIL;
/* A date range alone (the timeline's case): the index holds all it reads. */
static const char SQL_FILTER_LOCAL_ONLY[] =
	"SELECT id, NULL, NULL FROM images INDEXED BY images_by_local_time"
	" WHERE taken_local_ms IS NOT NULL AND taken_local_ms >= coalesce(?1, -9223372036854775807)"
	" AND taken_local_ms < coalesce(?2, 9223372036854775807)";
static const char SQL_FILTER_INSTANT_ONLY[] =
	"SELECT id, NULL, NULL FROM images INDEXED BY images_by_taken"
	" WHERE taken_ms IS NOT NULL AND taken_ms >= coalesce(?9, -9223372036854775807)"
	" AND taken_ms < coalesce(?10, 9223372036854775807)";
static const char SQL_FILTER_BY_PLACE[] =
	"SELECT id, gps_lat, gps_lon FROM images INDEXED BY images_by_gps"
	" WHERE gps_lat IS NOT NULL AND gps_lat BETWEEN ?3 AND ?4" IMAGE_TAIL;
static const char SQL_FILTER_IMAGES[] =
	"SELECT id, gps_lat, gps_lon FROM images WHERE 1" IMAGE_TAIL;
static const char SQL_FILTER_TEXTS[] =
	"SELECT id, NULL, NULL FROM texts WHERE " META_MATCH(TEXT_VALUES);

static const char SQL_IMAGES_TAKEN[] =
	"SELECT id, taken_local_ms FROM images WHERE id IN (SELECT value FROM json_each(?1))";

/* The mean Earth radius (IUGG), km. */
#define EARTH_KM 6371.0088
#define DEG (M_PI / 180)

double store_km_between(double lat1, double lon1, double lat2, double lon2)
{
	double a = sin((lat2 - lat1) * DEG / 2), b = sin((lon2 - lon1) * DEG / 2);
	double h = a * a + cos(lat1 * DEG) * cos(lat2 * DEG) * b * b;
	return 2 * EARTH_KM * asin(sqrt(h > 1 ? 1 : h));
}

struct found {
	const store_filter *f;
	int64_t *ids;
	size_t n, cap;
	int sorted;
};

static int filter_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	struct found *fd = ctx;
	int64_t id = sqlite3_column_int64(st, 0);
	if (fd->f->has_near &&
	    store_km_between(fd->f->lat, fd->f->lon, sqlite3_column_double(st, 1),
	                     sqlite3_column_double(st, 2)) > fd->f->km)
		return 0;
	if (fd->n == fd->cap) {
		size_t cap = fd->cap ? 2 * fd->cap : 1024;
		int64_t *p = realloc(fd->ids, cap * sizeof *p);
		if (!p)
			return store_fail(err, STORE_ENOMEM, "out of memory");
		fd->ids = p;
		fd->cap = cap;
	}
	if (fd->n && id <= fd->ids[fd->n - 1])
		fd->sorted = 0;
	fd->ids[fd->n++] = id;
	return 0;
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Ascending order of distinct ids. Rows read through the time index come
 * in time order; store ids are dense, so a bitmap of them sorts in one
 * pass each way (a 50,000-id range: about 4 ms less than qsort). */
static void sort_ids(int64_t *ids, size_t n)
{
	int64_t max = 0;
	for (size_t i = 0; i < n; i++)
		if (ids[i] > max)
			max = ids[i];
	uint64_t *bits = (uint64_t)max / 8 <= 16 * n + (1u << 20)
	                         ? calloc((size_t)max / 64 + 1, sizeof *bits)
	                         : NULL;
	if (!bits) {
		qsort(ids, n, sizeof *ids, cmp_id);
		return;
	}
	for (size_t i = 0; i < n; i++)
		bits[ids[i] >> 6] |= 1ull << (ids[i] & 63);
	size_t o = 0;
	for (size_t w = 0; w <= (size_t)max / 64; w++)
		for (uint64_t b = bits[w]; b; b &= b - 1)
			ids[o++] = (int64_t)(w * 64 + (size_t)__builtin_ctzll(b));
	free(bits);
}

/* "%" + the text with LIKE's wildcards and the escape escaped + "%". */
static char *like_pattern(const char *s)
{
	size_t n = strlen(s);
	char *p = malloc(2 * n + 3), *o = p;
	if (!p)
		return NULL;
	*o++ = '%';
	for (; *s; s++) {
		if (*s == '%' || *s == '_' || *s == '\\')
			*o++ = '\\';
		*o++ = *s;
	}
	*o++ = '%';
	*o = 0;
	return p;
}

int store_filter_ids(store *s, store_kind kind, const store_filter *f, int64_t **ids, size_t *n,
                     store_err *err)
{
	STORE_ERR_DEFAULT(err);
	*ids = NULL;
	*n = 0;
	int images = kind == STORE_IMAGE;
	if (!images && (f->has_after || f->has_before || f->has_near || f->camera))
		return store_fail(err, STORE_EINVAL,
		                  "capture time, place and camera filters apply to images");
	if (f->has_near && !(f->km >= 0 && fabs(f->lat) <= 90 && fabs(f->lon) <= 180))
		return store_fail(err, STORE_EINVAL, "near: lat within +-90, lon within +-180, km >= 0");
	struct found fd = {.f = f, .sorted = 1};
	char *camera = f->camera ? like_pattern(f->camera) : NULL;
	if (f->camera && !camera)
		return store_fail(err, STORE_ENOMEM, "out of memory");
	store_query q = {
		.what = "selecting the items a filter keeps",
		.row = filter_row,
		.ctx = &fd,
	};
	int local = (f->has_after && !f->after_zoned) || (f->has_before && !f->before_zoned);
	int instant = (f->has_after && f->after_zoned) || (f->has_before && f->before_zoned);
	int time_only = !f->has_near && !f->camera && !f->meta_json && !(local && instant);
	q.sql = !images  ? SQL_FILTER_TEXTS
	        : time_only && local   ? SQL_FILTER_LOCAL_ONLY
	        : time_only && instant ? SQL_FILTER_INSTANT_ONLY
	        : local   ? SQL_FILTER_BY_LOCAL
	        : instant ? SQL_FILTER_BY_INSTANT
	        : f->has_near ? SQL_FILTER_BY_PLACE
	                      : SQL_FILTER_IMAGES;
	if (f->has_after)
		q.args[f->after_zoned ? 8 : 0] = BIND_INT(f->after_ms);
	if (f->has_before)
		q.args[f->before_zoned ? 9 : 1] = BIND_INT(f->before_ms);
	if (f->has_near) {
		/* The box around the circle: a latitude band of km / R radians,
		 * and the widest longitude span the circle reaches within it
		 * (all of them when the band holds a pole). */
		double dlat = f->km / EARTH_KM / DEG, lo = f->lat - dlat, hi = f->lat + dlat;
		double dlon = 360;
		if (lo > -90 && hi < 90) {
			double r = sin(f->km / EARTH_KM) / cos(f->lat * DEG);
			dlon = r >= 1 ? 360 : asin(r) / DEG;
		}
		/* A margin for rounding: the exact test follows. */
		dlat += 1e-9;
		dlon += 1e-9;
		q.args[2] = BIND_REAL(lo - 1e-9);
		q.args[3] = BIND_REAL(hi + 1e-9);
		q.args[4] = BIND_REAL(dlon >= 180 ? -540 : f->lon - dlon);
		q.args[5] = BIND_REAL(dlon >= 180 ? 540 : f->lon + dlon);
	}
	if (camera)
		q.args[6] = BIND_TEXT(camera);
	if (f->meta_json)
		q.args[7] = BIND_TEXT(f->meta_json);
	int rc = store_read(s, &q, err);
	free(camera);
	if (rc != STORE_OK) {
		free(fd.ids);
		return rc;
	}
	if (!fd.sorted)
		sort_ids(fd.ids, fd.n);
	*ids = fd.ids;
	*n = fd.n;
	return STORE_OK;
}

struct taken {
	const int64_t *ids;
	const size_t *order;   /* indexes of ids in ascending id order */
	size_t n;
	int64_t *ms;
	int *has;
};

static int cmp_order(const void *a, const void *b, void *ids)
{
	int64_t x = ((const int64_t *)ids)[*(const size_t *)a];
	int64_t y = ((const int64_t *)ids)[*(const size_t *)b];
	return (x > y) - (x < y);
}

static int taken_row(sqlite3_stmt *st, void *ctx, store_err *err)
{
	(void)err;
	struct taken *t = ctx;
	int64_t id = sqlite3_column_int64(st, 0);
	if (sqlite3_column_type(st, 1) == SQLITE_NULL)
		return 0;
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->ids[t->order[mid]] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* Every place that holds id (a caller may repeat one). */
	for (; lo < t->n && t->ids[t->order[lo]] == id; lo++) {
		t->ms[t->order[lo]] = sqlite3_column_int64(st, 1);
		t->has[t->order[lo]] = 1;
	}
	return 0;
}

int store_images_taken(store *s, const int64_t *ids, size_t n, int64_t *taken_ms, int *has,
                       store_err *err)
{
	STORE_ERR_DEFAULT(err);
	for (size_t i = 0; i < n; i++) {
		taken_ms[i] = 0;
		has[i] = 0;
	}
	if (n == 0)
		return STORE_OK;
	char *json = store_ids_json(ids, n);
	size_t *order = malloc(n * sizeof *order);
	if (!json || !order) {
		free(json);
		free(order);
		return store_fail(err, STORE_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, n, sizeof *order, cmp_order, (void *)ids);
	struct taken t = {ids, order, n, taken_ms, has};
	store_query q = {
		.sql = SQL_IMAGES_TAKEN,
		.what = "reading capture times",
		.args = {BIND_TEXT(json)},
		.row = taken_row,
		.ctx = &t,
	};
	int rc = store_read(s, &q, err);
	free(json);
	free(order);
	return rc;
}
