/* search_filter.c: a search's conditions, checked, for the store. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "search_filter.h"

/* A filter is evaluated by SQLite for every row it reads, so its size is
 * bounded: a few fields, each with a list of accepted values such as
 * albums or tags, short ones. */
#define MAX_FILTER_KEYS 16
#define MAX_FILTER_VALUES 64
#define MAX_FILTER_KEY_BYTES 256
#define MAX_FILTER_VALUE_BYTES 1024
#define MAX_CAMERA_BYTES 256

/* "filter": an object; each key names a field of the item's metadata
 * ("meta"), or "mime" for images; each value is the required value, or an
 * array of accepted values. Every key must match. */
static int check_value(const char *key, json_t *x, api_err *err)
{
	if (json_is_object(x) || json_is_array(x))
		return api_fail(err, API_EBADREQ,
		                "filter '%s': values must be strings, numbers, booleans or null", key);
	if (json_is_string(x) && json_string_length(x) > MAX_FILTER_VALUE_BYTES)
		return api_fail(err, API_EBADREQ,
		                "filter '%s': a value is %zu bytes long, at most %d are allowed", key,
		                json_string_length(x), MAX_FILTER_VALUE_BYTES);
	if (json_is_string(x) && strlen(json_string_value(x)) != json_string_length(x))
		return api_fail(err, API_EBADREQ, "filter '%s': a value contains a NUL character", key);
	return 0;
}

static int check_meta(json_t *f, api_err *err)
{
	const char *key;
	json_t *v;
	int rc;
	if (!json_is_object(f))
		return api_fail(err, API_EBADREQ, "field 'filter' must be an object of field: value");
	if (json_object_size(f) > MAX_FILTER_KEYS)
		return api_fail(err, API_EBADREQ, "field 'filter' has %zu fields, at most %d are allowed",
		                json_object_size(f), MAX_FILTER_KEYS);
	json_object_foreach(f, key, v) {
		if (strlen(key) > MAX_FILTER_KEY_BYTES)
			return api_fail(err, API_EBADREQ,
			                "field 'filter': a field name is %zu bytes long, at most %d are allowed",
			                strlen(key), MAX_FILTER_KEY_BYTES);
		if (json_is_object(v))
			return api_fail(err, API_EBADREQ, "filter '%s': a value or an array of values expected",
			                key);
		if (!json_is_array(v)) {
			if ((rc = check_value(key, v, err)))
				return rc;
			continue;
		}
		size_t i;
		json_t *x;
		if (json_array_size(v) == 0)
			return api_fail(err, API_EBADREQ, "filter '%s': the array of values is empty", key);
		if (json_array_size(v) > MAX_FILTER_VALUES)
			return api_fail(err, API_EBADREQ,
			                "filter '%s': %zu values, at most %d are allowed", key,
			                json_array_size(v), MAX_FILTER_VALUES);
		json_array_foreach(v, i, x) if ((rc = check_value(key, x, err))) return rc;
	}
	return 0;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar: the
 * days of the whole years since year 0 (a March-first year, so that the
 * leap day ends it), of the whole months since March, and d. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;                                   /* 0..399 */
	int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* 0..365 */
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* 0..146096 */
	return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
	static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : dm[m - 1];
}

/* n digits at *p into *out; advances p. */
static int digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*p)[i];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

int search_iso_ms(const char *s, int64_t *ms, int *zoned)
{
	int y, mo = 1, d = 1, h = 0, mi = 0, sec = 0, frac = 0;
	const char *p = s;
	*zoned = 0;
	if (digits(&p, 4, &y) || y < 1)
		return -1;
	if (*p == '-') {
		p++;
		if (digits(&p, 2, &mo) || mo < 1 || mo > 12)
			return -1;
		if (*p == '-') {
			p++;
			if (digits(&p, 2, &d) || d < 1 || d > days_in_month(y, mo))
				return -1;
			if (*p == 'T' || *p == ' ') {
				p++;
				if (digits(&p, 2, &h) || h > 23 || *p++ != ':' || digits(&p, 2, &mi) ||
				    mi > 59)
					return -1;
				if (*p == ':') {
					p++;
					if (digits(&p, 2, &sec) || sec > 59)
						return -1;
					if (*p == '.' || *p == ',') {
						p++;
						int scale = 100, nd = 0;
						while (*p >= '0' && *p <= '9') {
							frac += (*p - '0') * scale;
							scale /= 10;
							p++;
							nd++;
						}
						if (nd == 0)
							return -1;
					}
				}
				if (*p == 'Z') {
					p++;
					*zoned = 1;
				} else if (*p == '+' || *p == '-') {
					int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
					if (digits(&p, 2, &oh) || oh > 23)
						return -1;
					if (*p == ':')
						p++;
					if (*p && (digits(&p, 2, &om) || om > 59))
						return -1;
					*zoned = 1;
					mi -= sign * om;
					h -= sign * oh;
				}
			}
		}
	}
	if (*p)
		return -1;
	*ms = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (int64_t)sec * 1000 + frac;
	return 0;
}

static int parse_time(json_t *o, const char *key, int *has, int64_t *ms, int *zoned,
                      api_err *err)
{
	const char *v;
	int rc = ju_str(o, key, 0, &v, err);
	if (rc || !v)
		return rc;
	if (search_iso_ms(v, ms, zoned))
		return api_fail(err, API_EBADREQ,
		                "field '%s' must be an ISO 8601 date or date-time such as 2021-07-04 "
		                "or 2021-07-04T18:30:00+02:00, not \"%.64s\"",
		                key, v);
	*has = 1;
	return 0;
}

static int parse_near(json_t *o, store_filter *sf, api_err *err)
{
	json_t *n = json_object_get(o, "near");
	if (!n || json_is_null(n))
		return 0;
	static const char *const keys[] = {"lat", "lon", "km"};
	double v[3];
	if (!json_is_object(n))
		return api_fail(err, API_EBADREQ, "field 'near' must be {\"lat\": .., \"lon\": .., \"km\": ..}");
	for (int i = 0; i < 3; i++) {
		json_t *x = json_object_get(n, keys[i]);
		if (!json_is_number(x))
			return api_fail(err, API_EBADREQ, "field 'near': '%s' must be a number", keys[i]);
		v[i] = json_number_value(x);
	}
	if (json_object_size(n) != 3)
		return api_fail(err, API_EBADREQ, "field 'near' takes only lat, lon and km");
	if (!(fabs(v[0]) <= 90))
		return api_fail(err, API_EBADREQ, "field 'near': lat must be between -90 and 90");
	if (!(fabs(v[1]) <= 180))
		return api_fail(err, API_EBADREQ, "field 'near': lon must be between -180 and 180");
	if (!(v[2] >= 0 && v[2] <= 40075))
		return api_fail(err, API_EBADREQ, "field 'near': km must be between 0 and 40075");
	sf->has_near = 1;
	sf->lat = v[0];
	sf->lon = v[1];
	sf->km = v[2];
	return 0;
}

int search_filter_parse(json_t *o, store_kind kind, search_filter *f, api_err *err)
{
	store_filter *sf = &f->sf;
	const char *camera;
	int rc;
	memset(f, 0, sizeof *f);
	json_t *meta = json_object_get(o, "filter");
	if (meta && !json_is_null(meta)) {
		if ((rc = check_meta(meta, err)))
			return rc;
		if (json_object_size(meta) &&
		    !(f->meta_json = json_dumps(meta, JSON_COMPACT | JSON_ENCODE_ANY)))
			return api_fail(err, API_ENOMEM, "out of memory");
		sf->meta_json = f->meta_json;
	}
	if ((rc = parse_time(o, "taken_after", &sf->has_after, &sf->after_ms, &sf->after_zoned,
	                     err)) ||
	    (rc = parse_time(o, "taken_before", &sf->has_before, &sf->before_ms, &sf->before_zoned,
	                     err)) ||
	    (rc = parse_near(o, sf, err)) || (rc = ju_str(o, "camera", 0, &camera, err)))
		goto fail;
	if (camera) {
		if (strlen(camera) > MAX_CAMERA_BYTES) {
			rc = api_fail(err, API_EBADREQ, "field 'camera' is %zu bytes long, at most %d",
			              strlen(camera), MAX_CAMERA_BYTES);
			goto fail;
		}
		if (!(f->camera = strdup(camera))) {
			rc = api_fail(err, API_ENOMEM, "out of memory");
			goto fail;
		}
		sf->camera = f->camera;
	}
	if (kind != STORE_IMAGE && (sf->has_after || sf->has_before || sf->has_near || sf->camera)) {
		rc = api_fail(err, API_EBADREQ,
		              "'taken_after', 'taken_before', 'near' and 'camera' apply to the images "
		              "collection");
		goto fail;
	}
	f->any = sf->meta_json || sf->has_after || sf->has_before || sf->has_near || sf->camera;
	return 0;
fail:
	search_filter_clear(f);
	return rc;
}

void search_filter_clear(search_filter *f)
{
	free(f->meta_json);
	free(f->camera);
	memset(f, 0, sizeof *f);
}

/* Buckets of one facet: keys ("2021", "2021-07") with counts, ascending. */
struct bucket {
	char key[24];
	int64_t n;
};

static int cmp_bucket(const void *a, const void *b)
{
	return strcmp(((const struct bucket *)a)->key, ((const struct bucket *)b)->key);
}

static json_t *facet(const int64_t *ms, const int *has, size_t n, int month)
{
	struct bucket *b = malloc((n ? n : 1) * sizeof *b);
	json_t *out = json_array();
	if (!b || !out) {
		free(b);
		json_decref(out);
		return NULL;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (!has[i])
			continue;
		/* The civil date of a day count (the inverse of days_from_civil). */
		int64_t z = (ms[i] >= 0 ? ms[i] : ms[i] - 86399999) / 86400000 + 719468;
		int64_t era = (z >= 0 ? z : z - 146096) / 146097, doe = z - era * 146097;
		int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
		int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
		int mo = (int)(mp < 10 ? mp + 3 : mp - 9);
		int64_t y = yoe + era * 400 + (mo <= 2);
		if (month)
			snprintf(b[m].key, sizeof b[m].key, "%04d-%02d", (int)(y % 10000), mo);
		else
			snprintf(b[m].key, sizeof b[m].key, "%04d", (int)(y % 10000));
		b[m++].n = 1;
	}
	qsort(b, m, sizeof *b, cmp_bucket);
	for (size_t i = 0; i < m;) {
		size_t j = i;
		while (j < m && !strcmp(b[j].key, b[i].key))
			j++;
		json_array_append_new(out, json_pack("{s:s,s:I}", "value", b[i].key, "count",
		                                     (json_int_t)(j - i)));
		i = j;
	}
	free(b);
	return out;
}

json_t *search_facets_json(const int64_t *ms, const int *has, size_t n, int year, int month)
{
	json_t *o = json_object();
	size_t undated = 0;
	for (size_t i = 0; i < n; i++)
		undated += !has[i];
	if (year)
		json_object_set_new(o, "year", facet(ms, has, n, 0));
	if (month)
		json_object_set_new(o, "month", facet(ms, has, n, 1));
	json_object_set_new(o, "undated", json_integer((json_int_t)undated));
	json_object_set_new(o, "total", json_integer((json_int_t)n));
	return o;
}
