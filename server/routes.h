/*
 * routes: the request handlers, one file per area (routes_*.c), and the
 * helpers they share (routes_common.c, query_image.c). Each
 * handler validates its request, does the work through the app's handles
 * and sends exactly one reply. Thread-safe: handlers run on connection
 * threads concurrently.
 */
#ifndef CLIPD_ROUTES_H
#define CLIPD_ROUTES_H

#include <jansson.h>

#include "http.h"

/* routes_health.c */
void route_healthz(http_req *r);
void route_readyz(http_req *r);

/* routes_stats.c */
void route_stats(http_req *r);
void route_metrics(http_req *r);

/* routes_openapi.c */
void route_openapi(http_req *r);

/* routes_search.c */
void route_search_get(http_req *r);
void route_search_post(http_req *r);

/* routes_duplicates.c */
void route_duplicates(http_req *r);

/* routes_images.c */
void route_image_upload(http_req *r);
void route_image_get(http_req *r);
void route_image_patch(http_req *r);
void route_image_delete(http_req *r);
void route_image_file(http_req *r);
void route_image_thumbnail(http_req *r);

/* routes_ingest.c */
void route_ingest(http_req *r);
/* POST /v1/import: shards written by clip-embed --shard (docs/SHARDS.md). */
void route_import(http_req *r);

/* routes_jobs.c */
void route_job_get(http_req *r);
void route_jobs_list(http_req *r);

/* routes_texts.c */
void route_texts_add(http_req *r);
void route_text_get(http_req *r);
void route_text_delete(http_req *r);

/* routes_classify.c */
void route_classify(http_req *r);
void route_embed(http_req *r);

/* routes_web.c: the demo page (web/) */
void route_web_index(http_req *r);
void route_web_app_js(http_req *r);
void route_web_style_css(http_req *r);

/* query_image.c */

/* The query's image embedding from a JSON request: "image_id" (its stored
 * embedding; 409 when not indexed yet) or "image_b64" (decoded and encoded
 * now); or, when the request body is multipart with an "image" part or a
 * raw image body, that image. *found is 0 when the request names no image.
 * vec has dim floats. */
int route_query_image(http_req *r, json_t *body, float *vec, int *found, api_err *err);

/* Shared helpers (routes_common.c). */

/* JSON of an image's metadata: id, sha256, filename, mime, width, height,
 * bytes, meta (parsed), status, error, created_ms, updated_ms,
 * thumbnail_url. */
json_t *route_image_json(const store_image *img);
json_t *route_text_json(const store_text *t);
/* A stored file name as clients see it: a server file's path under its
 * root as stored; an absolute path (a row from before paths were stored
 * that way) cut to its last component, so that no client sees the
 * server's directories. */
const char *route_shown_name(const char *name);
json_t *route_job_json(const store_job *j);
const char *route_status_name(store_status s);

#endif
