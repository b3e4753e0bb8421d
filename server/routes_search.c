/* routes_search.c: GET and POST /v1/search, in every direction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "clock.h"
#include "duplicates.h"
#include "fusion.h"
#include "jsonutil.h"
#include "log.h"
#include "query_terms.h"
#include "routes.h"

#define MAX_K 1000
#define MAX_OFFSET 100000

/* A query text: the model reads 77 tokens, ~300-400 bytes of English and
 * under 1 KiB of any script; 4 KiB leaves room for markup and spacing. */
#define MAX_QUERY_TEXT_BYTES 4096

/* A filter is checked against every candidate (up to MAX_WINDOW of them),
 * so its size is bounded: a few fields, each with a list of accepted values
 * such as albums or tags, short ones. */
#define MAX_FILTER_KEYS 16
#define MAX_FILTER_VALUES 64
#define MAX_FILTER_KEY_BYTES 256
#define MAX_FILTER_VALUE_BYTES 1024

/* A filtered search fetches this many candidates per wanted result at
 * first, and grows the window until enough match or the index is read. */
#define FILTER_OVERFETCH 8
#define MAX_WINDOW 100000

/* Keyword and hybrid searches read each ranking to this depth at least
 * (k + offset when deeper), and deeper while a filter leaves too few. */
#define RANK_DEPTH 100

enum search_mode { MODE_VECTOR, MODE_KEYWORD, MODE_HYBRID };

struct search_args {
	const char *text;      /* NULL when the query is an image */
	int64_t k, offset;
	store_kind kind;
	double min_score;
	int has_min;
	json_t *filter;        /* borrowed from the request; NULL: none */
	enum search_mode mode;
	int64_t rrf_k;         /* hybrid: the k of reciprocal-rank fusion */
	int exclude_dups;      /* one image per near-duplicate group (duplicates.h) */
	double dup_threshold;
};

/* A filter is an object: each key names a field of the item's metadata
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
	return 0;
}

static int check_filter(json_t *f, api_err *err)
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

static int value_ok(json_t *want, json_t *got)
{
	if (!got)
		return 0;
	if (!json_is_array(want))
		return json_equal(want, got);
	size_t i;
	json_t *x;
	json_array_foreach(want, i, x) if (json_equal(x, got)) return 1;
	return 0;
}

static int matches(json_t *filter, const char *meta_text, const char *mime)
{
	if (!filter)
		return 1;
	json_t *meta = meta_text ? json_loads(meta_text, 0, NULL) : NULL;
	const char *key;
	json_t *want;
	int ok = 1;
	json_object_foreach(filter, key, want) {
		json_t *got = NULL, *tmp = NULL;
		if (!strcmp(key, "mime"))
			got = tmp = mime ? json_string(mime) : NULL;
		else
			got = meta ? json_object_get(meta, key) : NULL;
		ok = value_ok(want, got);
		json_decref(tmp);
		if (!ok)
			break;
	}
	json_decref(meta);
	return ok;
}

static int parse_args(json_t *o, struct search_args *s, api_err *err)
{
	const char *coll, *mode;
	int rc;
	if ((rc = ju_str(o, "text", 0, &s->text, err)) ||
	    (rc = ju_str(o, "mode", 0, &mode, err)) ||
	    (rc = ju_int(o, "rrf_k", 60, 1, 100000, &s->rrf_k, err)) ||
	    (rc = ju_int(o, "k", 20, 1, MAX_K, &s->k, err)) ||
	    (rc = ju_int(o, "offset", 0, 0, MAX_OFFSET, &s->offset, err)) ||
	    (rc = ju_str(o, "collection", 0, &coll, err)) ||
	    (rc = ju_num(o, "min_score", -INFINITY, &s->min_score, &s->has_min, err)) ||
	    (rc = ju_bool(o, "exclude_duplicates", 0, &s->exclude_dups, err)) ||
	    (rc = ju_num(o, "duplicate_threshold", DUPS_DEFAULT_THRESHOLD, &s->dup_threshold, NULL,
	                 err)) ||
	    (rc = dups_check_threshold(s->dup_threshold, "duplicate_threshold", err)))
		return rc;
	if (s->text && strlen(s->text) > MAX_QUERY_TEXT_BYTES)
		return api_fail(err, API_EBADREQ,
		                "the query text ('text' or q=) is %zu bytes long, at most %d are allowed",
		                strlen(s->text), MAX_QUERY_TEXT_BYTES);
	s->filter = json_object_get(o, "filter");
	if (s->filter && json_is_null(s->filter))
		s->filter = NULL;
	if (s->filter && (rc = check_filter(s->filter, err)))
		return rc;
	if (!mode || !strcmp(mode, "vector"))
		s->mode = MODE_VECTOR;
	else if (!strcmp(mode, "keyword"))
		s->mode = MODE_KEYWORD;
	else if (!strcmp(mode, "hybrid"))
		s->mode = MODE_HYBRID;
	else
		return api_fail(err, API_EBADREQ,
		                "field 'mode' must be \"vector\", \"keyword\" or \"hybrid\"");
	if (!coll || !strcmp(coll, "images"))
		s->kind = STORE_IMAGE;
	else if (!strcmp(coll, "texts"))
		s->kind = STORE_TEXT;
	else
		return api_fail(err, API_EBADREQ, "field 'collection' must be \"images\" or \"texts\"");
	if (s->exclude_dups && s->kind != STORE_IMAGE)
		return api_fail(err, API_EBADREQ, "'exclude_duplicates' applies to the images collection");
	return 0;
}

/* Query parameters or form fields (strings) into a JSON object of the
 * types parse_args expects. */
static int params_object(http_req *r, int from_parts, json_t **out, api_err *err)
{
	static const char *const ints[] = {"k", "offset", "image_id", "rrf_k"};
	static const char *const strs[] = {"text", "collection", "image_b64", "mode"};
	enum { NINTS = sizeof ints / sizeof ints[0], NSTRS = sizeof strs / sizeof strs[0] };
	json_t *o = json_object();
	int rc = 0;
	*out = NULL;
	for (size_t i = 0; i < NINTS + NSTRS; i++) {
		const char *key = i < NINTS ? ints[i] : strs[i - NINTS];
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
		if (i < NINTS) {
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

/* The results ids[0..n) (scores alike) as JSON, skipping the first offset
 * that still exist and those deleted since the search saw them; at most k.
 * One store read for all of them. */
static int results_json(app *a, store_kind kind, const int64_t *ids, const float *scores,
                        const fused *ranks, int n, int64_t offset, int64_t k, json_t *filter,
                        dup_pick *pick, json_t **out, api_err *err)
{
	store_err se;
	store_image *imgs = NULL;
	store_text *txts = NULL;
	*out = NULL;
	if (n > 0) {
		if (kind == STORE_IMAGE) {
			if (!(imgs = calloc((size_t)n, sizeof *imgs)))
				return api_fail(err, API_ENOMEM, "out of memory");
			if (store_images_get_many(a->st, ids, (size_t)n, imgs, &se) != STORE_OK) {
				free(imgs);
				return api_from_store(err, &se);
			}
		} else {
			if (!(txts = calloc((size_t)n, sizeof *txts)))
				return api_fail(err, API_ENOMEM, "out of memory");
			if (store_texts_get_many(a->st, ids, (size_t)n, txts, &se) != STORE_OK) {
				free(txts);
				return api_from_store(err, &se);
			}
		}
	}
	json_t *results = json_array();
	int64_t skipped = 0;
	if (pick)
		dups_pick_reset(pick);
	for (int i = 0; i < n && (int64_t)json_array_size(results) < k; i++) {
		int64_t found = kind == STORE_IMAGE ? imgs[i].id : txts[i].id;
		if (!found)
			continue; /* deleted after the search saw it */
		if (!matches(filter, kind == STORE_IMAGE ? imgs[i].meta : txts[i].meta,
		             kind == STORE_IMAGE ? imgs[i].mime : NULL))
			continue;
		if (pick && !dups_pick_keep(pick, ids[i]))
			continue; /* a better-ranked image of its group is listed */
		if (skipped < offset) {
			skipped++;
			continue;
		}
		json_t *o = kind == STORE_IMAGE ? route_image_json(&imgs[i]) : route_text_json(&txts[i]);
		json_object_set_new(o, "score", json_real(scores[i]));
		if (ranks) {
			json_object_set_new(o, "vector_rank", ranks[i].vector_rank
			                                          ? json_integer(ranks[i].vector_rank)
			                                          : json_null());
			json_object_set_new(o, "keyword_rank", ranks[i].keyword_rank
			                                           ? json_integer(ranks[i].keyword_rank)
			                                           : json_null());
		}
		json_array_append_new(results, o);
	}
	for (int i = 0; i < n; i++) {
		if (imgs)
			store_image_clear(&imgs[i]);
		if (txts)
			store_text_clear(&txts[i]);
	}
	free(imgs);
	free(txts);
	*out = results;
	return 0;
}

/* The ranking at depth n: ids[0..*m) best first with their scores (and, for
 * keyword and hybrid searches, their ranks in each list), cut at min_score;
 * *more is 1 when a deeper read could find more. ids, scores and ranks hold
 * 2n entries (a hybrid fuses two lists of n). */
static int ranking(app *a, space *sp, const struct search_args *s, const float *q, int64_t n,
                   int64_t *ids, float *scores, fused *ranks, int *m, int *more, api_err *e)
{
	int nv = 0, nk = 0;
	*m = 0;
	*more = 0;
	if (s->mode != MODE_KEYWORD) {
		if (coll_search(sp->coll, s->kind, q, (int)n, scores, ids, e))
			return -1;
		/* The index pads with -1. */
		while (nv < n && ids[nv] >= 0)
			nv++;
		*more = nv == n;
	}
	if (s->mode == MODE_VECTOR) {
		*m = nv;
	} else {
		int64_t *kids = ids + (s->mode == MODE_HYBRID ? n : 0);
		double *ksc = malloc((size_t)n * sizeof *ksc);
		store_err se;
		if (!ksc)
			return api_fail(e, API_ENOMEM, "out of memory");
		int rc = store_keyword_search(a->st, s->kind, s->text, (int)n, kids, ksc, &nk, &se);
		if (rc == STORE_OK && s->mode == MODE_KEYWORD)
			for (int i = 0; i < nk; i++)
				ranks[i] = (fused){.id = kids[i], .score = ksc[i], .keyword_rank = i + 1};
		free(ksc);
		if (rc != STORE_OK)
			return api_from_store(e, &se);
		*more = *more || nk == n;
		if (s->mode == MODE_HYBRID)
			fusion_rrf(ids, nv, kids, nk, (int)s->rrf_k, ranks, m);
		else
			*m = nk;
		for (int i = 0; i < *m; i++) {
			ids[i] = ranks[i].id;
			scores[i] = (float)ranks[i].score;
		}
	}
	/* Best first, so min_score keeps a prefix. */
	if (s->has_min)
		for (int i = 0; i < *m; i++)
			if (scores[i] < s->min_score) {
				*m = i;
				*more = 0;
				break;
			}
	return 0;
}

static void run_search(http_req *r, json_t *params, int json_body, int64_t t0)
{
	app *a = http_req_app(r);
	space *sp = http_req_space(r);
	struct search_args s;
	api_err e;
	float *q = malloc((size_t)sp->dim * sizeof *q);
	float *scores = NULL;
	int64_t *ids = NULL;
	fused *ranks = NULL;
	json_t *results = NULL;
	dup_pick *pick = NULL;
	int found = 0;

	if (!q) {
		api_fail(&e, API_ENOMEM, "out of memory");
		goto fail;
	}
	if (parse_args(params, &s, &e))
		goto fail;
	/* Refused before an image is decoded and encoded for nothing. */
	if (s.mode != MODE_VECTOR &&
	    (json_object_get(params, "image_id") || json_object_get(params, "image_b64") ||
	     http_req_part(r, "image") || http_req_content_is(r, "image/"))) {
		api_fail(&e, API_EBADREQ, "mode '%s' searches by words: give 'text' (or q=), not an image",
		         s.mode == MODE_KEYWORD ? "keyword" : "hybrid");
		goto fail;
	}
	if (json_body && route_query_terms(r, params, q, &found, &e))
		goto fail;
	if (!found && route_query_image(r, json_body ? params : NULL, q, &found, &e))
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
	if (found && s.mode != MODE_VECTOR) {
		api_fail(&e, API_EBADREQ, "mode '%s' searches by words: give 'text' (or q=), not an image",
		         s.mode == MODE_KEYWORD ? "keyword" : "hybrid");
		goto fail;
	}
	if (s.text && s.mode != MODE_KEYWORD && encode_pool_texts(sp->enc, 1, &s.text, q, &e))
		goto fail;
	if (s.exclude_dups && dups_pick_open(a, sp, s.dup_threshold, &pick, &e))
		goto fail;

	/* Without a filter the k + offset best are enough (keyword and hybrid
	 * rankings read RANK_DEPTH at least). With one, read a wider window and
	 * widen it until enough match or every item was seen. */
	coll_stats cs;
	coll_get_stats(sp->coll, s.kind, &cs);
	int64_t want = s.k + s.offset, total = (int64_t)cs.count;
	int64_t n = want;
	if (s.mode != MODE_VECTOR && n < RANK_DEPTH)
		n = RANK_DEPTH;
	if (s.filter || pick) {
		int64_t wide = want * FILTER_OVERFETCH < 256 ? 256 : want * FILTER_OVERFETCH;
		if (wide > n)
			n = wide;
		if (n > total)
			n = total > want ? total : want;
	}
	for (;;) {
		if (n > MAX_WINDOW)
			n = MAX_WINDOW;
		free(scores);
		free(ids);
		free(ranks);
		scores = malloc(2 * (size_t)n * sizeof *scores);
		ids = malloc(2 * (size_t)n * sizeof *ids);
		ranks = s.mode != MODE_VECTOR ? malloc(2 * (size_t)n * sizeof *ranks) : NULL;
		if (!scores || !ids || (s.mode != MODE_VECTOR && !ranks)) {
			api_fail(&e, API_ENOMEM, "out of memory");
			goto fail;
		}
		int m, more;
		if (ranking(a, sp, &s, q, n, ids, scores, ranks, &m, &more, &e))
			goto fail;
		json_decref(results);
		if (results_json(a, s.kind, ids, scores, ranks, m, s.offset, s.k, s.filter, pick,
		                 &results, &e))
			goto fail;
		if ((!s.filter && !pick) || (int64_t)json_array_size(results) >= s.k || !more || n >= total ||
		    n >= MAX_WINDOW)
			break;
		n *= 4;
		if (n > total)
			n = total;
	}
	static const char *const mode_names[] = {"vector", "keyword", "hybrid"};
	http_reply_json(r, 200,
	                json_pack("{s:o,s:s,s:s,s:I,s:I}", "results", results, "collection",
	                          s.kind == STORE_IMAGE ? "images" : "texts", "mode",
	                          mode_names[s.mode], "offset", (json_int_t)s.offset, "took_ms",
	                          (json_int_t)(clock_ms() - t0)));
	results = NULL;
	goto out;
fail:
	http_reply_error(r, &e);
out:
	json_decref(results);
	dups_pick_close(pick);
	free(q);
	free(scores);
	free(ids);
	free(ranks);
}

void route_search_get(http_req *r)
{
	int64_t t0 = clock_ms();
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
	int64_t t0 = clock_ms();
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
