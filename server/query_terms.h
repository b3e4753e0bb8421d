/*
 * query_terms: a search query given as weighted terms (issue 11 §3),
 * "query": [{"text": "a dog", "weight": 2}, {"image_id": 17},
 * {"image_b64": "..."}, {"text": "grass", "weight": -1}]. Each term is
 * embedded, scaled to unit length, multiplied by its weight (default 1),
 * the terms summed and the sum scaled to unit length: that is the query
 * vector the search then runs with, in whichever collection it names.
 *
 * Bounds (README "Security", server/openapi.json): at most
 * QUERY_MAX_TERMS terms, of which at most QUERY_MAX_IMAGE_TERMS are
 * image_b64 (each is an image decode, holding a --max-decodes slot one at
 * a time; their bytes are within the request's body limit); texts of at
 * most QUERY_MAX_TEXT_BYTES, all encoded in one encode_pool_texts call;
 * weights finite, non-zero, within +-QUERY_MAX_WEIGHT. Every term is
 * checked before anything is encoded. Work per request: at most 16 text
 * encodes, 4 decodes, 16 store reads; memory (terms + 2) x dim floats.
 *
 * Thread-safe: called on connection threads concurrently.
 */
#ifndef CLIPD_QUERY_TERMS_H
#define CLIPD_QUERY_TERMS_H

#include <jansson.h>

#include "errors.h"
#include "http.h"

#define QUERY_MAX_TERMS 16
#define QUERY_MAX_IMAGE_TERMS 4
#define QUERY_MAX_WEIGHT 100
/* The same bound as a single query 'text' (routes_search.c). */
#define QUERY_MAX_TEXT_BYTES 4096

/* When body has a "query" field (not null), its terms' combined vector
 * into vec[dim] and *found = 1; otherwise *found = 0 and vec untouched.
 * 400 for a malformed term (the message names it, "query[2]: ..."), for
 * 'query' beside 'text', 'image_id' or 'image_b64' or with a "mode" other
 * than "vector", and when the weighted
 * terms cancel out (their sum is the zero vector); an image term's errors
 * are route_query_image's (404 unknown image_id, 409 not indexed, 413,
 * 415, 422, 503), named by the term's position. */
int route_query_terms(http_req *r, json_t *body, float *vec, int *found, api_err *err);

#endif
