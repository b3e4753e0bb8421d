/*
 * query_terms.c: a search's weighted terms (query_terms.h) checked, each
 * embedded (texts in one encode, images through route_query_image) and
 * combined into one unit vector.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "query_terms.h"
#include "routes.h"

/* A weighted sum shorter than this fraction of the sum of |weights| has
 * no direction left to search in: the terms cancel. Identical terms of
 * opposite weights sum to zero (up to float rounding, about 1e-7 per
 * component); two unit vectors u - v fall under it only when
 * |u - v| = sqrt(2 - 2 cos) <= 2e-4, that is cos >= 1 - 2e-8. */
#define CANCEL_FRACTION 1e-4

enum term_kind { TERM_TEXT, TERM_IMAGE };

struct term {
	enum term_kind kind;
	const char *text;  /* TERM_TEXT; borrowed from the request */
	json_t *obj;       /* the term itself (TERM_IMAGE reads it) */
	double weight;
};

static int term_fail(api_err *err, size_t i, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int term_fail(api_err *err, size_t i, const char *fmt, ...)
{
	char what[sizeof err->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return api_fail(err, API_EBADREQ, "query[%zu]: %s", i, what);
}

static int present(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return v && !json_is_null(v);
}

/* One term object into t; *images counts its image_b64. */
static int parse_term(json_t *o, size_t i, struct term *t, int *images, api_err *err)
{
	static const char *const sources[] = {"text", "image_id", "image_b64"};
	const char *key;
	json_t *v;
	int n = 0;

	if (!json_is_object(o))
		return term_fail(err, i, "a term is an object such as {\"text\": \"a dog\", \"weight\": 2}");
	json_object_foreach(o, key, v) {
		if (strcmp(key, "text") && strcmp(key, "image_id") && strcmp(key, "image_b64") &&
		    strcmp(key, "weight"))
			return term_fail(err, i, "unknown field '%.64s': a term has one of 'text', "
			                 "'image_id' or 'image_b64', and an optional 'weight'", key);
	}
	for (size_t s = 0; s < 3; s++)
		n += present(o, sources[s]);
	if (n != 1)
		return term_fail(err, i, "give exactly one of 'text', 'image_id' or 'image_b64' (%s)",
		                 n ? "several given" : "none given");
	t->obj = o;
	t->text = NULL;
	if (present(o, "text")) {
		v = json_object_get(o, "text");
		if (!json_is_string(v))
			return term_fail(err, i, "'text' must be a string");
		if (json_string_length(v) > QUERY_MAX_TEXT_BYTES)
			return term_fail(err, i, "'text' is %zu bytes long, at most %d are allowed",
			                 json_string_length(v), QUERY_MAX_TEXT_BYTES);
		t->kind = TERM_TEXT;
		t->text = json_string_value(v);
	} else if (present(o, "image_id")) {
		v = json_object_get(o, "image_id");
		if (!json_is_integer(v) || json_integer_value(v) < 1)
			return term_fail(err, i, "'image_id' must be an integer of at least 1");
		t->kind = TERM_IMAGE;
	} else {
		if (!json_is_string(json_object_get(o, "image_b64")))
			return term_fail(err, i, "'image_b64' must be a base64 string");
		t->kind = TERM_IMAGE;
		++*images;
	}
	t->weight = 1;
	if (present(o, "weight")) {
		v = json_object_get(o, "weight");
		if (!json_is_number(v))
			return term_fail(err, i, "'weight' must be a number");
		t->weight = json_number_value(v);
		if (!isfinite(t->weight) || fabs(t->weight) > QUERY_MAX_WEIGHT)
			return term_fail(err, i, "'weight' is %g: it must be between -%d and %d", t->weight,
			                 QUERY_MAX_WEIGHT, QUERY_MAX_WEIGHT);
		if (t->weight == 0)
			return term_fail(err, i, "'weight' is 0, which adds nothing: leave the term out");
	}
	return 0;
}

/* Every term of the array q into terms[] (allocated by the caller). */
static int parse_terms(json_t *q, struct term *terms, api_err *err)
{
	size_t i;
	json_t *o;
	int images = 0, rc;
	json_array_foreach(q, i, o) {
		if ((rc = parse_term(o, i, &terms[i], &images, err)))
			return rc;
	}
	if (images > QUERY_MAX_IMAGE_TERMS)
		return api_fail(err, API_EBADREQ,
		                "field 'query' has %d image_b64 terms, at most %d are allowed (each is an "
		                "image decode)", images, QUERY_MAX_IMAGE_TERMS);
	return 0;
}

/* acc += weight * v / |v| */
static void add_term(double *acc, const float *v, int dim, double weight)
{
	double n2 = 0;
	for (int k = 0; k < dim; k++)
		n2 += (double)v[k] * v[k];
	if (n2 <= 0)
		return;
	double s = weight / sqrt(n2);
	for (int k = 0; k < dim; k++)
		acc[k] += s * v[k];
}

int route_query_terms(http_req *r, json_t *body, float *vec, int *found, api_err *err)
{
	space *sp = http_req_space(r);
	json_t *q = json_object_get(body, "query");
	struct term *terms = NULL;
	const char **texts = NULL;
	float *tv = NULL, *iv = NULL;
	double *acc = NULL;
	size_t n, nt = 0;
	int rc = 0;

	*found = 0;
	if (!q || json_is_null(q))
		return 0;
	*found = 1;
	if (present(body, "text") || present(body, "image_id") || present(body, "image_b64"))
		return api_fail(err, API_EBADREQ,
		                "give either 'query' or 'text', 'image_id', 'image_b64', not both");
	/* Checked here, not after the terms were encoded: keyword and hybrid
	 * searches read the words of 'text' (routes_search.c). */
	json_t *mode = json_object_get(body, "mode");
	if (json_is_string(mode) && strcmp(json_string_value(mode), "vector"))
		return api_fail(err, API_EBADREQ,
		                "'query' is a vector search: mode '%.32s' searches by words, give 'text'",
		                json_string_value(mode));
	if (!json_is_array(q))
		return api_fail(err, API_EBADREQ, "field 'query' must be an array of terms such as "
		                "{\"text\": \"a dog\", \"weight\": 2}");
	n = json_array_size(q);
	if (n == 0)
		return api_fail(err, API_EBADREQ, "field 'query' is empty: give at least one term");
	if (n > QUERY_MAX_TERMS)
		return api_fail(err, API_EBADREQ, "field 'query' has %zu terms, at most %d are allowed",
		                n, QUERY_MAX_TERMS);

	terms = calloc(n, sizeof *terms);
	texts = calloc(n, sizeof *texts);
	tv = malloc(n * (size_t)sp->dim * sizeof *tv);
	iv = malloc((size_t)sp->dim * sizeof *iv);
	acc = calloc((size_t)sp->dim, sizeof *acc);
	if (!terms || !texts || !tv || !iv || !acc) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = parse_terms(q, terms, err)))
		goto out;

	/* Every text in one encode call; then the images, one at a time. */
	for (size_t i = 0; i < n; i++)
		if (terms[i].kind == TERM_TEXT)
			texts[nt++] = terms[i].text;
	if (nt && (rc = encode_pool_texts(sp->enc, nt, texts, tv, err)))
		goto out;
	for (size_t i = 0, j = 0; i < n; i++) {
		if (terms[i].kind == TERM_TEXT) {
			add_term(acc, tv + j++ * (size_t)sp->dim, sp->dim, terms[i].weight);
			continue;
		}
		int got;
		if ((rc = route_query_image(r, terms[i].obj, iv, &got, err))) {
			char msg[sizeof err->msg];
			snprintf(msg, sizeof msg, "query[%zu]: %.*s", i, (int)sizeof msg - 32, err->msg);
			memcpy(err->msg, msg, sizeof msg);
			goto out;
		}
		add_term(acc, iv, sp->dim, terms[i].weight);
	}

	double len2 = 0, wsum = 0;
	for (int k = 0; k < sp->dim; k++)
		len2 += acc[k] * acc[k];
	for (size_t i = 0; i < n; i++)
		wsum += fabs(terms[i].weight);
	if (sqrt(len2) <= CANCEL_FRACTION * wsum) {
		rc = api_fail(err, API_EBADREQ,
		              "the query's terms cancel out: their weighted sum is the zero vector");
		goto out;
	}
	for (int k = 0; k < sp->dim; k++)
		vec[k] = (float)(acc[k] / sqrt(len2));
out:
	free(terms);
	free(texts);
	free(tv);
	free(iv);
	free(acc);
	return rc;
}
