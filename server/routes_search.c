/* routes_search.c: GET and POST /v1/search, in every direction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jsonutil.h"
#include "log.h"
#include "routes.h"

#define MAX_K 1000
#define MAX_OFFSET 100000

struct search_args {
	const char *text;      /* NULL when the query is an image */
	int64_t k, offset;
	store_kind kind;
	double min_score;
	int has_min;
};

static int parse_args(json_t *o, struct search_args *s, api_err *err)
{
	const char *coll;
	int rc;
	if ((rc = ju_str(o, "text", 0, &s->text, err)) ||
	    (rc = ju_int(o, "k", 20, 1, MAX_K, &s->k, err)) ||
	    (rc = ju_int(o, "offset", 0, 0, MAX_OFFSET, &s->offset, err)) ||
	    (rc = ju_str(o, "collection", 0, &coll, err)) ||
	    (rc = ju_num(o, "min_score", -INFINITY, &s->min_score, &s->has_min, err)))
		return rc;
	if (!coll || !strcmp(coll, "images"))
		s->kind = STORE_IMAGE;
	else if (!strcmp(coll, "texts"))
		s->kind = STORE_TEXT;
	else
		return api_fail(err, API_EBADREQ, "field 'collection' must be \"images\" or \"texts\"");
	return 0;
}

/* Query parameters or form fields (strings) into a JSON object of the
 * types parse_args expects. */
static int params_object(http_req *r, int from_parts, json_t **out, api_err *err)
{
	static const char *const ints[] = {"k", "offset", "image_id"};
	static const char *const strs[] = {"text", "collection", "image_b64"};
	json_t *o = json_object();
	int rc = 0;
	*out = NULL;
	for (size_t i = 0; i < 6; i++) {
		const char *key = i < 3 ? ints[i] : strs[i - 3];
		const char *v;
		if (from_parts) {
			http_part *p = http_req_part(r, key);
			v = p && !p->bw ? (p->data ? p->data : "") : NULL;
		} else {
			v = http_req_query(r, key);
			if (!v && !strcmp(key, "text"))
				v = http_req_query(r, "q");
		}
		if (!v)
			continue;
		if (i < 3) {
			int64_t n;
			if ((rc = ju_parse_int_str(v, key, INT64_MIN, INT64_MAX, &n, err)))
				goto out;
			json_object_set_new(o, key, json_integer(n));
		} else {
			json_object_set_new(o, key, json_string(v));
		}
	}
	const char *ms = NULL;
	if (from_parts) {
		http_part *p = http_req_part(r, "min_score");
		ms = p && p->data ? p->data : NULL;
	} else {
		ms = http_req_query(r, "min_score");
	}
	if (ms) {
		char *end;
		double d = strtod(ms, &end);
		if (end == ms || *end || !isfinite(d)) {
			rc = api_fail(err, API_EBADREQ, "parameter 'min_score' must be a number");
			goto out;
		}
		json_object_set_new(o, "min_score", json_real(d));
	}
	*out = o;
	o = NULL;
out:
	json_decref(o);
	return rc;
}

static json_t *result_json(app *a, store_kind kind, int64_t id, float score, int *gone)
{
	store_err se;
	json_t *o = NULL;
	*gone = 0;
	if (kind == STORE_IMAGE) {
		store_image img;
		if (store_image_get(a->st, id, &img, &se) != STORE_OK) {
			*gone = 1;
			return NULL;
		}
		o = route_image_json(&img);
		store_image_clear(&img);
	} else {
		store_text t;
		if (store_text_get(a->st, id, &t, &se) != STORE_OK) {
			*gone = 1;
			return NULL;
		}
		o = route_text_json(&t);
		store_text_clear(&t);
	}
	json_object_set_new(o, "score", json_real(score));
	return o;
}

static void run_search(http_req *r, json_t *params, int json_body, int64_t t0)
{
	app *a = http_req_app(r);
	struct search_args s;
	api_err e;
	float *q = malloc((size_t)a->dim * sizeof *q);
	float *scores = NULL;
	int64_t *ids = NULL;
	json_t *results = NULL;
	int found = 0;

	if (!q) {
		api_fail(&e, API_ENOMEM, "out of memory");
		goto fail;
	}
	if (parse_args(params, &s, &e))
		goto fail;
	if (route_query_image(r, json_body ? params : NULL, q, &found, &e))
		goto fail;
	if (!found && !json_body && params && (json_object_get(params, "image_id") ||
	                                       json_object_get(params, "image_b64")))
		if (route_query_image(r, params, q, &found, &e))
			goto fail;
	if (found && s.text) {
		api_fail(&e, API_EBADREQ, "give either 'text' or an image, not both");
		goto fail;
	}
	if (!found && !s.text) {
		api_fail(&e, API_EBADREQ,
		         "missing query: give 'text', 'image_id' or 'image_b64' (or q= in the URL)");
		goto fail;
	}
	if (s.text && encoder_texts(a->enc, 1, &s.text, q, &e))
		goto fail;

	int n = (int)(s.k + s.offset);
	scores = malloc((size_t)n * sizeof *scores);
	ids = malloc((size_t)n * sizeof *ids);
	if (!scores || !ids) {
		api_fail(&e, API_ENOMEM, "out of memory");
		goto fail;
	}
	if (coll_search(a->coll, s.kind, q, n, scores, ids, &e))
		goto fail;
	results = json_array();
	int64_t skipped = 0;
	for (int i = 0; i < n && (int64_t)json_array_size(results) < s.k; i++) {
		if (ids[i] < 0 || (s.has_min && scores[i] < s.min_score))
			break;
		int gone;
		json_t *o = result_json(a, s.kind, ids[i], scores[i], &gone);
		if (gone)
			continue; /* deleted after the search saw it */
		if (skipped < s.offset) {
			skipped++;
			json_decref(o);
			continue;
		}
		json_array_append_new(results, o);
	}
	http_reply_json(r, 200,
	                json_pack("{s:o,s:s,s:I,s:I}", "results", results, "collection",
	                          s.kind == STORE_IMAGE ? "images" : "texts", "offset",
	                          (json_int_t)s.offset, "took_ms", (json_int_t)(route_now_ms() - t0)));
	results = NULL;
	goto out;
fail:
	http_reply_error(r, &e);
out:
	json_decref(results);
	free(q);
	free(scores);
	free(ids);
}

void route_search_get(http_req *r)
{
	int64_t t0 = route_now_ms();
	json_t *params;
	api_err e;
	if (params_object(r, 0, &params, &e)) {
		http_reply_error(r, &e);
		return;
	}
	run_search(r, params, 0, t0);
	json_decref(params);
}

void route_search_post(http_req *r)
{
	int64_t t0 = route_now_ms();
	json_t *params = NULL;
	api_err e;
	int json_body = !http_req_parts(r) && !http_req_content_is(r, "image/") &&
	                !http_req_content_is(r, "multipart/");
	int rc = json_body ? http_req_json(r, &params, &e)
	                   : params_object(r, http_req_parts(r) != NULL, &params, &e);
	if (rc) {
		http_reply_error(r, &e);
		return;
	}
	run_search(r, params, json_body, t0);
	json_decref(params);
}
