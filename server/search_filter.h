/*
 * search_filter: what a search request keeps (its "filter" on metadata,
 * "taken_after" / "taken_before", "near", "camera"), checked and turned
 * into the store's filter; and the date facets of a result set.
 *
 * Ownership: a search_filter owns its strings until search_filter_clear.
 */
#ifndef CLIPD_SEARCH_FILTER_H
#define CLIPD_SEARCH_FILTER_H

#include <jansson.h>
#include <stdint.h>

#include "errors.h"
#include "store.h"

typedef struct search_filter {
	store_filter sf;
	int any;            /* 1 when the request gave some condition */
	char *meta_json;    /* "filter" as compact JSON, or NULL */
	char *camera;
} search_filter;

/* Reads the conditions of request o for collection kind. A 400 for a
 * malformed one, with a message naming the field. */
int search_filter_parse(json_t *o, store_kind kind, search_filter *f, api_err *err);
void search_filter_clear(search_filter *f);

/* An ISO 8601 date or date-time ("2021", "2021-07", "2021-07-04",
 * "2021-07-04T18:30", "...:00", "...:00.250", each optionally with "Z" or
 * "+02:00"; a space may stand for the T) as milliseconds since
 * 1970-01-01T00:00:00 of its own clock, minus its offset when it has one:
 * *zoned says whether it had. -1 when it is not one. */
int search_iso_ms(const char *s, int64_t *ms, int *zoned);

/* The counts of has[i] times ms[i] (a wall clock read as UTC) per year
 * ({"value": "2021", "count": 3}, ascending) and per month ("2021-07"), as
 * {"year": [...], "month": [...], "undated": n} with the buckets asked for. */
json_t *search_facets_json(const int64_t *ms, const int *has, size_t n, int year, int month);

#endif
