/* routes_duplicates.c: GET /v1/duplicates, near-duplicate groups a page at a time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "clock.h"
#include "duplicates.h"
#include "jsonutil.h"
#include "routes.h"

#define DEFAULT_LIMIT 20
#define MAX_LIMIT 100
#define MAX_OFFSET 1000000000
/* Images listed per group; "size" tells how many it has. */
#define MAX_GROUP_ITEMS 100

static int parse_threshold(const char *s, double *out, api_err *err)
{
	char *end;
	if (!s) {
		*out = DUPS_DEFAULT_THRESHOLD;
		return 0;
	}
	*out = strtod(s, &end);
	if (end == s || *end)
		return api_fail(err, API_EBADREQ, "'threshold' must be a number from %g to 1",
		                DUPS_MIN_THRESHOLD);
	return dups_check_threshold(*out, "threshold", err);
}

/* Group i as {"size", "items": [image, ...]}: its images that still exist,
 * at most MAX_GROUP_ITEMS, oldest first. */
static int group_json(app *a, const vidx_groups *g, size_t i, json_t **out, api_err *err)
{
	const int64_t *ids;
	size_t n = vidx_groups_members(g, i, &ids), shown = n < MAX_GROUP_ITEMS ? n : MAX_GROUP_ITEMS;
	store_image imgs[MAX_GROUP_ITEMS];
	store_err se;
	*out = NULL;
	if (store_images_get_many(a->st, ids, shown, imgs, &se) != STORE_OK)
		return api_from_store(err, &se);
	json_t *items = json_array();
	for (size_t j = 0; j < shown; j++) {
		if (imgs[j].id) /* else deleted since the grouping was computed */
			json_array_append_new(items, route_image_json(&imgs[j]));
		store_image_clear(&imgs[j]);
	}
	*out = json_pack("{s:I,s:o,s:b}", "size", (json_int_t)n, "items", items, "items_truncated",
	                 n > shown);
	return 0;
}

void route_duplicates(http_req *r)
{
	int64_t t0 = clock_ms();
	app *a = http_req_app(r);
	space *sp = http_req_space(r);
	const char *q;
	double t;
	int64_t limit = DEFAULT_LIMIT, offset = 0;
	dup_groups *d = NULL;
	json_t *groups = NULL;
	api_err e;

	if (parse_threshold(http_req_query(r, "threshold"), &t, &e) ||
	    ((q = http_req_query(r, "limit")) && ju_parse_int_str(q, "limit", 1, MAX_LIMIT, &limit, &e)) ||
	    ((q = http_req_query(r, "offset")) &&
	     ju_parse_int_str(q, "offset", 0, MAX_OFFSET, &offset, &e)))
		goto fail;
	if (dups_get(a, sp, t, &d, &e))
		goto fail;
	const vidx_groups *g = dups_groups(d);
	size_t total = vidx_groups_count(g);
	groups = json_array();
	for (size_t i = (size_t)offset; i < total && i < (size_t)(offset + limit); i++) {
		json_t *o;
		if (group_json(a, g, i, &o, &e))
			goto fail;
		json_array_append_new(groups, o);
	}
	http_reply_json(r, 200,
	                json_pack("{s:o,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "groups", groups,
	                          "threshold", t, "total_groups", (json_int_t)total, "grouped_images",
	                          (json_int_t)vidx_groups_grouped(g), "images",
	                          (json_int_t)dups_images(d), "offset", (json_int_t)offset, "limit",
	                          (json_int_t)limit, "compute_ms", (json_int_t)dups_compute_ms(d),
	                          "took_ms", (json_int_t)(clock_ms() - t0)));
	groups = NULL;
	goto out;
fail:
	http_reply_error(r, &e);
out:
	json_decref(groups);
	dups_release(d);
}
