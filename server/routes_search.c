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
#include "search_filter.h"
#include "routes.h"

#define MAX_K 1000
#define MAX_OFFSET 100000

/* A query text: the model reads 77 tokens, ~300-400 bytes of English and
 * under 1 KiB of any script; 4 KiB leaves room for markup and spacing. */
#define MAX_QUERY_TEXT_BYTES 4096

/* A search whose results are thinned after the ranking (a keyword or
 * hybrid search with a filter, or one image per duplicate group) reads
 * this many candidates per wanted result at first, and grows the window
 * until enough remain or every item was seen. */
#define FILTER_OVERFETCH 8
#define MAX_WINDOW 100000

/* Date sorts and facets work on the best `candidates` of the filtered
 * ranking (README: the relevance floor): this many unless given. */
#define DEFAULT_CANDIDATES 500
#define MAX_CANDIDATES 10000

enum search_sort { SORT_SCORE, SORT_TAKEN_DESC, SORT_TAKEN_ASC };

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
	search_filter filter;  /* its conditions (search_filter.h) */
	enum search_mode mode;
	enum search_sort sort;
	int64_t candidates;    /* date sorts and facets: the depth they read */
	int facet_year, facet_month;
	int64_t rrf_k;         /* hybrid: the k of reciprocal-rank fusion */
	int exclude_dups;      /* one image per near-duplicate group (duplicates.h) */
	double dup_threshold;
};

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
	const char *sort;
	json_t *facets;
	if ((rc = ju_str(o, "sort", 0, &sort, err)) ||
	    (rc = ju_int(o, "candidates", DEFAULT_CANDIDATES, 1, MAX_CANDIDATES, &s->candidates,
	                 err)))
		return rc;
	if (!sort || !strcmp(sort, "score"))
		s->sort = SORT_SCORE;
	else if (!strcmp(sort, "taken_desc"))
		s->sort = SORT_TAKEN_DESC;
	else if (!strcmp(sort, "taken_asc"))
		s->sort = SORT_TAKEN_ASC;
	else
		return api_fail(err, API_EBADREQ,
		                "field 'sort' must be \"score\", \"taken_desc\" or \"taken_asc\"");
	s->facet_year = s->facet_month = 0;
	if ((facets = json_object_get(o, "facets")) && !json_is_null(facets)) {
		size_t i;
		json_t *x;
		if (!json_is_array(facets))
			return api_fail(err, API_EBADREQ, "field 'facets' must be an array such as "
			                "[\"year\", \"month\"]");
		json_array_foreach(facets, i, x) {
			const char *f = json_string_value(x);
			if (f && !strcmp(f, "year"))
				s->facet_year = 1;
			else if (f && !strcmp(f, "month"))
				s->facet_month = 1;
			else
				return api_fail(err, API_EBADREQ,
				                "field 'facets': each must be \"year\" or \"month\"");
		}
	}
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
	if (s->kind != STORE_IMAGE && (s->sort != SORT_SCORE || s->facet_year || s->facet_month))
		return api_fail(err, API_EBADREQ,
		                "date sorts and facets apply to the images collection");
	/* Last: the only part that holds memory. */
	return search_filter_parse(o, s->kind, &s->filter, err);
}

/* Query parameters or form fields (strings) into a JSON object of the
 * types parse_args expects. */
static int params_object(http_req *r, int from_parts, json_t **out, api_err *err)
{
	static const char *const ints[] = {"k", "offset", "image_id", "rrf_k", "candidates"};
	static const char *const strs[] = {"text",        "collection",   "image_b64", "mode",
	                                   "taken_after", "taken_before", "camera",    "sort"};
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
	/* facets=year,month and near=lat,lon,km (URL only). */
	const char *fc = from_parts ? NULL : http_req_query(r, "facets");
	if (fc) {
		json_t *a = json_array();
		json_object_set_new(o, "facets", a);
		for (const char *p = fc; *p;) {
			size_t n = strcspn(p, ",");
			json_array_append_new(a, json_stringn(p, n));
			p += n + (p[n] == ',');
		}
	}
	const char *near = from_parts ? NULL : http_req_query(r, "near");
	if (near) {
		double v[3];
		int used = 0;
		if (sscanf(near, "%lf,%lf,%lf%n", &v[0], &v[1], &v[2], &used) != 3 || near[used] ||
		    !isfinite(v[0]) || !isfinite(v[1]) || !isfinite(v[2])) {
			rc = api_fail(err, API_EBADREQ, "parameter 'near' must be lat,lon,km");
			goto out;
		}
		json_object_set_new(o, "near", json_pack("{s:f,s:f,s:f}", "lat", v[0], "lon", v[1],
		                                         "km", v[2]));
	}
	*out = o;
	o = NULL;
out:
	json_decref(o);
	return rc;
}

/* The results ids[0..n) (scores and ranks alike) as JSON, skipping the
 * first offset that still exist and those deleted since the search saw
 * them; at most k. One store read for all of them. */
static int results_json(app *a, store_kind kind, const int64_t *ids, const float *scores,
                        const fused *ranks, int n, int64_t offset, int64_t k, json_t **out,
                        api_err *err)
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
	for (int i = 0; i < n && (int64_t)json_array_size(results) < k; i++) {
		int64_t found = kind == STORE_IMAGE ? imgs[i].id : txts[i].id;
		if (!found)
			continue; /* deleted after the search saw it */
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

static int allowed(const int64_t *allow, size_t n, int64_t id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (allow[mid] < id)
			lo = mid + 1;
		else if (allow[mid] > id)
			hi = mid;
		else
			return 1;
	}
	return 0;
}

/* What a ranking may hold: allow[nallow] when filtered (allow NULL: all). */
struct keep {
	const int64_t *allow;
	size_t nallow;
	int filtered;
};

/* The ranking at depth n: ids[0..*m) best first with their scores (and, for
 * keyword and hybrid searches, their ranks in each list), cut at min_score;
 * *more is 1 when a deeper read could find more. A filter is applied
 * inside the vector search, and to the keyword list before the fusion.
 * ids, scores and ranks hold 2n entries (a hybrid fuses two lists of n). */
static int ranking(app *a, space *sp, const struct search_args *s, const struct keep *kp,
                   const float *q, int64_t n, int64_t *ids, float *scores, fused *ranks, int *m,
                   int *more, api_err *e)
{
	int nv = 0, nk = 0;
	*m = 0;
	*more = 0;
	if (s->mode != MODE_KEYWORD) {
		if (kp->filtered ? coll_search_among(sp->coll, s->kind, q, (int)n, kp->allow, kp->nallow,
		                                     scores, ids, e)
		                 : coll_search(sp->coll, s->kind, q, (int)n, scores, ids, e))
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
		*more = *more || (rc == STORE_OK && nk == n);
		if (rc == STORE_OK && kp->filtered) {
			int o = 0;
			for (int i = 0; i < nk; i++)
				if (allowed(kp->allow, kp->nallow, kids[i])) {
					kids[o] = kids[i];
					ksc[o++] = ksc[i];
				}
			nk = o;
		}
		if (rc == STORE_OK && s->mode == MODE_KEYWORD)
			for (int i = 0; i < nk; i++)
				ranks[i] = (fused){.id = kids[i], .score = ksc[i], .keyword_rank = i + 1};
		free(ksc);
		if (rc != STORE_OK)
			return api_from_store(e, &se);
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

/* One image per near-duplicate group: drops, in ranking order, the images
 * of a group already listed. */
static int thin_duplicates(dup_pick *pick, int64_t *ids, float *scores, fused *ranks, int m)
{
	int o = 0;
	dups_pick_reset(pick);
	for (int i = 0; i < m; i++) {
		if (!dups_pick_keep(pick, ids[i]))
			continue;
		ids[o] = ids[i];
		scores[o] = scores[i];
		if (ranks)
			ranks[o] = ranks[i];
		o++;
	}
	return o;
}

/* Date order of the first m entries: by the camera's clock, newest or
 * oldest first, the undated after the dated; equal times (and the undated
 * among themselves) keep their ranking order. */
struct dated {
	int64_t ms;
	int has, pos;
	int desc;
};

static int cmp_dated(const void *pa, const void *pb)
{
	const struct dated *a = pa, *b = pb;
	if (a->has != b->has)
		return a->has ? -1 : 1;
	if (a->has && a->ms != b->ms)
		return (a->ms < b->ms) == !a->desc ? -1 : 1;
	return a->pos - b->pos;
}

static void run_search(http_req *r, json_t *params, int json_body, int64_t t0)
{
	app *a = http_req_app(r);
	space *sp = http_req_space(r);
	struct search_args s;
	api_err e;
	float *q = malloc((size_t)sp->dim * sizeof *q);
	float *scores = NULL;
	int64_t *ids = NULL, *allow = NULL, *taken = NULL;
	int *has = NULL;
	struct dated *order = NULL;
	fused *ranks = NULL;
	json_t *results = NULL, *facets = NULL;
	dup_pick *pick = NULL;
	struct keep kp = {0};
	int found = 0;

	memset(&s, 0, sizeof s);
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
	if (s.filter.any) {
		store_err se;
		if (store_filter_ids(a->st, s.kind, &s.filter.sf, &allow, &kp.nallow, &se) != STORE_OK) {
			api_from_store(&e, &se);
			goto fail;
		}
		kp.allow = allow;
		kp.filtered = 1;
	}

	/* Depth: the k + offset best (keyword and hybrid rankings read
	 * RANK_DEPTH at least); date sorts and facets the best `candidates`.
	 * A vector search applies its filter inside the index, so its depth
	 * is enough; a ranking thinned afterwards (the keyword list of a
	 * filtered search, duplicates) reads a wider window, widened until
	 * enough remain or every item was seen. */
	int dated = s.sort != SORT_SCORE || s.facet_year || s.facet_month;
	coll_stats cs;
	coll_get_stats(sp->coll, s.kind, &cs);
	int64_t want = s.k + s.offset, total = (int64_t)cs.count;
	if (s.sort != SORT_SCORE)
		want = s.candidates;
	else if (dated && s.candidates > want)
		want = s.candidates;
	int thinned = pick || (kp.filtered && s.mode != MODE_VECTOR);
	int64_t n = want;
	if (s.mode != MODE_VECTOR && n < RANK_DEPTH)
		n = RANK_DEPTH;
	if (thinned) {
		int64_t wide = want * FILTER_OVERFETCH < 256 ? 256 : want * FILTER_OVERFETCH;
		if (wide > n)
			n = wide;
		if (n > total)
			n = total > want ? total : want;
	}
	int m = 0;
	for (;;) {
		if (n > MAX_WINDOW)
			n = MAX_WINDOW;
		if (n < 1)
			n = 1;
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
		int more;
		if (ranking(a, sp, &s, &kp, q, n, ids, scores, ranks, &m, &more, &e))
			goto fail;
		if (pick)
			m = thin_duplicates(pick, ids, scores, ranks, m);
		if (!thinned || m >= want || !more || n >= total || n >= MAX_WINDOW)
			break;
		n *= 4;
		if (n > total)
			n = total;
	}

	/* The set date sorts and facets see: the best `candidates` of the
	 * ranking (after min_score, filters and duplicates). */
	int nc = dated ? (m < s.candidates ? m : (int)s.candidates) : 0;
	if (dated) {
		store_err se;
		taken = malloc(((size_t)nc + 1) * sizeof *taken);
		has = malloc(((size_t)nc + 1) * sizeof *has);
		if (!taken || !has) {
			api_fail(&e, API_ENOMEM, "out of memory");
			goto fail;
		}
		if (store_images_taken(a->st, ids, (size_t)nc, taken, has, &se) != STORE_OK) {
			api_from_store(&e, &se);
			goto fail;
		}
		if (s.facet_year || s.facet_month)
			facets = search_facets_json(taken, has, (size_t)nc, s.facet_year, s.facet_month);
	}
	if (s.sort != SORT_SCORE) {
		/* Reorder the candidates by date, then page through them. */
		if (!(order = malloc(((size_t)nc + 1) * sizeof *order))) {
			api_fail(&e, API_ENOMEM, "out of memory");
			goto fail;
		}
		for (int i = 0; i < nc; i++)
			order[i] = (struct dated){taken[i], has[i], i, s.sort == SORT_TAKEN_DESC};
		qsort(order, (size_t)nc, sizeof *order, cmp_dated);
		int64_t *oid = malloc(((size_t)nc + 1) * sizeof *oid);
		float *osc = malloc(((size_t)nc + 1) * sizeof *osc);
		fused *ork = ranks ? malloc(((size_t)nc + 1) * sizeof *ork) : NULL;
		if (!oid || !osc || (ranks && !ork)) {
			free(oid), free(osc), free(ork);
			api_fail(&e, API_ENOMEM, "out of memory");
			goto fail;
		}
		for (int i = 0; i < nc; i++) {
			oid[i] = ids[order[i].pos];
			osc[i] = scores[order[i].pos];
			if (ranks)
				ork[i] = ranks[order[i].pos];
		}
		free(ids), free(scores), free(ranks);
		ids = oid, scores = osc, ranks = ork;
		m = nc;
	}
	if (results_json(a, s.kind, ids, scores, ranks, m, s.offset, s.k, &results, &e))
		goto fail;
	static const char *const mode_names[] = {"vector", "keyword", "hybrid"};
	static const char *const sort_names[] = {"score", "taken_desc", "taken_asc"};
	json_t *body = json_pack("{s:o,s:s,s:s,s:s,s:I,s:I}", "results", results, "collection",
	                         s.kind == STORE_IMAGE ? "images" : "texts", "mode",
	                         mode_names[s.mode], "sort", sort_names[s.sort], "offset",
	                         (json_int_t)s.offset, "took_ms", (json_int_t)(clock_ms() - t0));
	results = NULL;
	if (kp.filtered)
		json_object_set_new(body, "filtered", json_integer((json_int_t)kp.nallow));
	if (dated)
		json_object_set_new(body, "candidates", json_integer(nc));
	if (facets) {
		json_object_set_new(body, "facets", facets);
		facets = NULL;
	}
	http_reply_json(r, 200, body);
	goto out;
fail:
	http_reply_error(r, &e);
out:
	json_decref(results);
	json_decref(facets);
	dups_pick_close(pick);
	search_filter_clear(&s.filter);
	free(q);
	free(scores);
	free(ids);
	free(ranks);
	free(allow);
	free(taken);
	free(has);
	free(order);
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
