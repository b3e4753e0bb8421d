/* router.c: the route table and matching. */
#include <stdlib.h>
#include <string.h>

#include "router.h"
#include "routes.h"

/* Search, classify and embed are POSTs that only read: they are open
 * unless --api-key-reads is set. Every route here is described in
 * server/openapi.json; tests/e2e reads this table (one route per line, in
 * this form) and fails when the two differ. */
static const route routes[] = {
	{"GET", "/healthz", route_healthz, BODY_NONE, 0},
	{"GET", "/readyz", route_readyz, BODY_NONE, 0},
	{"GET", "/v1/stats", route_stats, BODY_NONE, 0},
	{"GET", "/metrics", route_metrics, BODY_NONE, 0},
	{"GET", "/openapi.json", route_openapi, BODY_NONE, 0},
	{"GET", "/v1/search", route_search_get, BODY_NONE, 0},
	{"POST", "/v1/search", route_search_post, BODY_BUFFER, 0},
	{"GET", "/v1/duplicates", route_duplicates, BODY_NONE, 0},
	{"POST", "/v1/images", route_image_upload, BODY_UPLOAD, 1},
	{"GET", "/v1/images/{id}", route_image_get, BODY_NONE, 0},
	{"PATCH", "/v1/images/{id}", route_image_patch, BODY_BUFFER, 1},
	{"DELETE", "/v1/images/{id}", route_image_delete, BODY_NONE, 1},
	{"GET", "/v1/images/{id}/file", route_image_file, BODY_NONE, 0},
	{"GET", "/v1/images/{id}/thumbnail", route_image_thumbnail, BODY_NONE, 0},
	{"POST", "/v1/ingest", route_ingest, BODY_UPLOAD, 1},
	{"POST", "/v1/import", route_import, BODY_BUFFER, 1},
	{"GET", "/v1/jobs", route_jobs_list, BODY_NONE, 0},
	{"GET", "/v1/jobs/{id}", route_job_get, BODY_NONE, 0},
	{"POST", "/v1/texts", route_texts_add, BODY_BUFFER, 1},
	{"GET", "/v1/texts/{id}", route_text_get, BODY_NONE, 0},
	{"DELETE", "/v1/texts/{id}", route_text_delete, BODY_NONE, 1},
	{"POST", "/v1/classify", route_classify, BODY_BUFFER, 0},
	{"POST", "/v1/embed", route_embed, BODY_BUFFER, 0},
	{"GET", "/", route_web_index, BODY_NONE, 0},
	{"GET", "/web/app.js", route_web_app_js, BODY_NONE, 0},
	{"GET", "/web/style.css", route_web_style_css, BODY_NONE, 0},
};

/* Matches path against pattern; *id receives the {id} segment. */
static int match(const char *pattern, const char *path, int64_t *id)
{
	const char *p = pattern, *s = path;
	while (*p && *s) {
		if (!strncmp(p, "{id}", 4)) {
			if (*s < '1' || *s > '9')
				return 0;
			int64_t v = 0;
			while (*s >= '0' && *s <= '9') {
				int d = *s++ - '0';
				if (v > (INT64_MAX - d) / 10)
					return 0; /* past INT64_MAX */
				v = v * 10 + d;
			}
			*id = v;
			p += 4;
			continue;
		}
		if (*p++ != *s++)
			return 0;
	}
	if (*s == '/' && s[1] == 0) /* tolerate one trailing slash */
		s++;
	return *p == 0 && *s == 0;
}

const route *router_match(const char *method, const char *path, int64_t *id, api_err *err)
{
	int path_seen = 0;
	*id = 0;
	for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
		int64_t v = 0;
		if (!match(routes[i].pattern, path, &v))
			continue;
		path_seen = 1;
		/* HEAD is GET without the body, which libmicrohttpd drops. */
		if (!strcmp(routes[i].method, method) ||
		    (!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
			*id = v;
			return &routes[i];
		}
	}
	if (path_seen)
		api_fail(err, API_EMETHOD, "method %s is not allowed on this route", method);
	else
		api_fail(err, API_ENOTFOUND, "no such route: %s %s", method, path);
	return NULL;
}
