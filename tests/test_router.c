/*
 * test_router: server/router.c's matcher on its own, without a socket:
 * every route of the table reached by its method and path (with an {id}),
 * HEAD served by the GET route, 404 for a path no route has and 405 for a
 * path that exists under other methods, ids that are not positive
 * integers, the one trailing slash that is tolerated, percent-encoding
 * (libmicrohttpd decodes the URL before the router sees it, so the router
 * compares bytes and decodes nothing), and overlong or non-UTF-8 paths,
 * whose error message must stay within api_err's buffer and valid UTF-8.
 * The handlers are the daemon's own: the test links its objects and
 * checks that each route points at the right function.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"
#include "routes.h"
#include "tap.h"

/* One route of server/router.c as the test expects it. */
static const struct want {
	const char *method;
	const char *path;      /* a request path; {id} routes get a concrete id */
	const char *pattern;
	route_fn fn;
	route_body body;
	int writes;
	int64_t id;            /* the id the path carries, 0 for none */
} want[] = {
	{"GET", "/healthz", "/healthz", route_healthz, BODY_NONE, 0, 0},
	{"GET", "/readyz", "/readyz", route_readyz, BODY_NONE, 0, 0},
	{"GET", "/v1/stats", "/v1/stats", route_stats, BODY_NONE, 0, 0},
	{"GET", "/metrics", "/metrics", route_metrics, BODY_NONE, 0, 0},
	{"GET", "/openapi.json", "/openapi.json", route_openapi, BODY_NONE, 0, 0},
	{"GET", "/v1/search", "/v1/search", route_search_get, BODY_NONE, 0, 0},
	{"POST", "/v1/search", "/v1/search", route_search_post, BODY_BUFFER, 0, 0},
	{"POST", "/v1/images", "/v1/images", route_image_upload, BODY_UPLOAD, 1, 0},
	{"GET", "/v1/images/7", "/v1/images/{id}", route_image_get, BODY_NONE, 0, 7},
	{"PATCH", "/v1/images/12", "/v1/images/{id}", route_image_patch, BODY_BUFFER, 1, 12},
	{"DELETE", "/v1/images/3", "/v1/images/{id}", route_image_delete, BODY_NONE, 1, 3},
	{"GET", "/v1/images/42/file", "/v1/images/{id}/file", route_image_file, BODY_NONE, 0, 42},
	{"GET", "/v1/images/9/thumbnail", "/v1/images/{id}/thumbnail", route_image_thumbnail,
	 BODY_NONE, 0, 9},
	{"POST", "/v1/ingest", "/v1/ingest", route_ingest, BODY_UPLOAD, 1, 0},
	{"GET", "/v1/jobs", "/v1/jobs", route_jobs_list, BODY_NONE, 0, 0},
	{"GET", "/v1/jobs/100", "/v1/jobs/{id}", route_job_get, BODY_NONE, 0, 100},
	{"POST", "/v1/texts", "/v1/texts", route_texts_add, BODY_BUFFER, 1, 0},
	{"GET", "/v1/texts/5", "/v1/texts/{id}", route_text_get, BODY_NONE, 0, 5},
	{"DELETE", "/v1/texts/6", "/v1/texts/{id}", route_text_delete, BODY_NONE, 1, 6},
	{"POST", "/v1/classify", "/v1/classify", route_classify, BODY_BUFFER, 0, 0},
	{"POST", "/v1/embed", "/v1/embed", route_embed, BODY_BUFFER, 0, 0},
	{"GET", "/", "/", route_web_index, BODY_NONE, 0, 0},
	{"GET", "/web/app.js", "/web/app.js", route_web_app_js, BODY_NONE, 0, 0},
	{"GET", "/web/style.css", "/web/style.css", route_web_style_css, BODY_NONE, 0, 0},
};
#define NWANT (sizeof want / sizeof *want)

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                      "OPTIONS", "TRACE"};
#define NMETHODS (sizeof methods / sizeof *methods)

/* Whether want[] has a route of method on pattern. */
static int has_route(const char *method, const char *pattern)
{
	for (size_t i = 0; i < NWANT; i++)
		if (!strcmp(want[i].method, method) && !strcmp(want[i].pattern, pattern))
			return 1;
	return 0;
}

/* The route of method and path, or NULL; *err and *id as router_match. */
static const route *m(const char *method, const char *path, int64_t *id, api_err *err)
{
	memset(err, 0, sizeof *err);
	*id = -1;
	return router_match(method, path, id, err);
}

/* Whether the status of err is status, with code string name. */
static int is_status(const api_err *err, int status, const char *name)
{
	const char *got = NULL;
	return err->domain == ERR_API && api_err_status(err, &got) == status && got &&
	       !strcmp(got, name);
}

/* Every route: its method and path reach it, with its handler, body mode,
 * write flag and id. */
static void t_every_route(void)
{
	for (size_t i = 0; i < NWANT; i++) {
		const struct want *w = &want[i];
		int64_t id;
		api_err err;
		const route *r = m(w->method, w->path, &id, &err);
		CHECKF(r, "%s %s: no route (%s)", w->method, w->path, err.msg);
		if (!r)
			continue;
		CHECKF(!strcmp(r->method, w->method) && !strcmp(r->pattern, w->pattern),
		       "%s %s: matched %s %s", w->method, w->path, r->method, r->pattern);
		CHECKF(r->fn == w->fn, "%s %s: the wrong handler", w->method, w->path);
		CHECKF(r->body == w->body, "%s %s: body mode %d, expected %d", w->method, w->path,
		       r->body, w->body);
		CHECKF(r->writes == w->writes, "%s %s: writes %d, expected %d", w->method, w->path,
		       r->writes, w->writes);
		CHECKF(id == w->id, "%s %s: id %lld, expected %lld", w->method, w->path, (long long)id,
		       (long long)w->id);
	}
}

/* HEAD is GET without a body: every GET route answers it, no other. */
static void t_head_is_get(void)
{
	for (size_t i = 0; i < NWANT; i++) {
		int64_t id;
		api_err err;
		const route *r = m("HEAD", want[i].path, &id, &err);
		int has_get = has_route("GET", want[i].pattern);
		if (has_get)
			CHECKF(r && !strcmp(r->method, "GET") && !strcmp(r->pattern, want[i].pattern) &&
			       id == want[i].id, "HEAD %s: not the GET route", want[i].path);
		else
			CHECKF(!r && is_status(&err, 405, "method_not_allowed"),
			       "HEAD %s: expected 405 (%s)", want[i].path, err.msg);
	}
}

/* A path that exists answers 405 to each method it has no route for,
 * naming the method; the route's own methods are served. */
static void t_405_other_methods(void)
{
	for (size_t i = 0; i < NWANT; i++) {
		for (size_t k = 0; k < NMETHODS; k++) {
			const char *meth = methods[k];
			int64_t id;
			api_err err;
			const route *r = m(meth, want[i].path, &id, &err);
			int served = has_route(meth, want[i].pattern) ||
			             (!strcmp(meth, "HEAD") && has_route("GET", want[i].pattern));
			if (served) {
				CHECKF(r != NULL, "%s %s: not served (%s)", meth, want[i].path, err.msg);
				continue;
			}
			char expect[64];
			snprintf(expect, sizeof expect, "method %s is not allowed", meth);
			CHECKF(!r && is_status(&err, 405, "method_not_allowed") && strstr(err.msg, expect),
			       "%s %s: expected 405 naming the method, got %s (%s)", meth, want[i].path,
			       r ? "a route" : "an error", err.msg);
			CHECKF(id == 0, "%s %s: id %lld on a refusal", meth, want[i].path, (long long)id);
		}
	}
	/* Methods are case-sensitive, as HTTP says. */
	int64_t id;
	api_err err;
	CHECK(!m("get", "/v1/stats", &id, &err) && is_status(&err, 405, "method_not_allowed"));
	CHECK(!m("", "/v1/stats", &id, &err) && is_status(&err, 405, "method_not_allowed"));
}

/* Paths no route has: 404 naming the method and the path, whatever the
 * method. */
static void t_404_unknown_paths(void)
{
	static const char *const paths[] = {
		"", "v1/stats", "/v1", "/v1/", "/v1/stat", "/v1/statsx", "/v1/stats/x", "/V1/STATS",
		"/healthz/x", "/v1/images/7/fil", "/v1/images/7/file/x", "/v1/images/7/thumbnails",
		"/v1/image/7", "/v1/jobs/1/x", "/v1/texts/1/file", "/web", "/web/", "/web/app.jsx",
		"/web/other.js", "/index.html", "/openapi", "/metrics.txt", " /v1/stats", "/v1/stats ",
		"/v1/stats?x=1", "/v1/stats#x", "/./v1/stats", "/v1/../v1/stats", "/v1//stats",
	};
	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
		for (size_t k = 0; k < NMETHODS; k++) {
			int64_t id;
			api_err err;
			const route *r = m(methods[k], paths[i], &id, &err);
			char expect[300];
			snprintf(expect, sizeof expect, "no such route: %s %s", methods[k], paths[i]);
			CHECKF(!r && is_status(&err, 404, "not_found") && !strcmp(err.msg, expect),
			       "%s '%s': expected 404 \"%s\", got %s \"%s\"", methods[k], paths[i], expect,
			       r ? r->pattern : "error", err.msg);
			CHECKF(id == 0, "%s '%s': id %lld on a refusal", methods[k], paths[i],
			       (long long)id);
		}
	}
}

/* {id} is a positive decimal integer without a sign or leading zeros that
 * fits an int64: anything else is no such path (404). (An empty id is the
 * collection's path with a trailing slash: see t_trailing_slash.) */
static void t_ids(void)
{
	static const char *const bad[] = {
		"0", "00", "01", "007", "-1", "+1", " 1", "1 ", "1a", "a1", "x", "1.0", "1e3",
		"0x10", "\xef\xbc\x91" /* a fullwidth 1 */, "9223372036854775808", "18446744073709551616",
		"99999999999999999999999999999999999999",
	};
	char path[128];
	int64_t id;
	api_err err;
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		static const char *const fmt[] = {"/v1/images/%s", "/v1/images/%s/file",
		                                  "/v1/jobs/%s", "/v1/texts/%s"};
		for (size_t f = 0; f < sizeof fmt / sizeof *fmt; f++) {
			snprintf(path, sizeof path, fmt[f], bad[i]);
			const route *r = m("GET", path, &id, &err);
			CHECKF(!r && is_status(&err, 404, "not_found"), "GET %s: expected 404, got %s",
			       path, r ? r->pattern : err.msg);
		}
	}
	static const struct {
		const char *s;
		int64_t v;
	} good[] = {
		{"1", 1}, {"9", 9}, {"10", 10}, {"123456789", 123456789},
		{"2147483648", 2147483648LL}, {"9223372036854775799", 9223372036854775799LL},
		{"9223372036854775800", 9223372036854775800LL}, {"9223372036854775807", INT64_MAX},
	};
	for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
		snprintf(path, sizeof path, "/v1/images/%s/thumbnail", good[i].s);
		const route *r = m("GET", path, &id, &err);
		CHECKF(r && r->fn == route_image_thumbnail && id == good[i].v,
		       "GET %s: id %lld, expected %lld", path, (long long)id, (long long)good[i].v);
		snprintf(path, sizeof path, "/v1/texts/%s", good[i].s);
		r = m("DELETE", path, &id, &err);
		CHECKF(r && r->fn == route_text_delete && id == good[i].v,
		       "DELETE %s: id %lld, expected %lld", path, (long long)id, (long long)good[i].v);
	}
	/* A refused method on an id path keeps no id. */
	CHECK(!m("POST", "/v1/images/5", &id, &err) && id == 0 &&
	      is_status(&err, 405, "method_not_allowed"));
}

/* One trailing slash is tolerated, on every route; two are not, nor is a
 * slash inside a segment's place. */
static void t_trailing_slash(void)
{
	char path[128];
	for (size_t i = 0; i < NWANT; i++) {
		int64_t id;
		api_err err;
		if (!strcmp(want[i].path, "/"))
			continue;
		snprintf(path, sizeof path, "%s/", want[i].path);
		const route *r = m(want[i].method, path, &id, &err);
		CHECKF(r && r->fn == want[i].fn && id == want[i].id, "%s %s: not the route of %s",
		       want[i].method, path, want[i].pattern);
		snprintf(path, sizeof path, "%s//", want[i].path);
		r = m(want[i].method, path, &id, &err);
		CHECKF(!r && is_status(&err, 404, "not_found"), "%s %s: expected 404", want[i].method,
		       path);
	}
	int64_t id;
	api_err err;
	/* "/" plus its one tolerated slash. */
	const route *r = m("GET", "//", &id, &err);
	CHECK(r && r->fn == route_web_index);
	CHECK(!m("GET", "///", &id, &err) && is_status(&err, 404, "not_found"));
	CHECK(!m("GET", "/v1/images//file", &id, &err) && is_status(&err, 404, "not_found"));
	CHECK(!m("GET", "/v1/images/7//file", &id, &err) && is_status(&err, 404, "not_found"));
}

/* libmicrohttpd decodes %XX before routing: the router itself compares
 * the bytes it gets, so an encoded path does not reach a route (and a
 * decoded one does). */
static void t_percent_encoding(void)
{
	static const char *const encoded[] = {
		"/v1/%73tats", "/v1%2Fstats", "/v1/stats%2F", "/v1/images/%31", "/v1/images/1%2Ffile",
		"/v1/images/%2B1", "%2Fhealthz", "/v1/stats%00", "/v1/stats%20",
	};
	for (size_t i = 0; i < sizeof encoded / sizeof *encoded; i++) {
		int64_t id;
		api_err err;
		const route *r = m("GET", encoded[i], &id, &err);
		CHECKF(!r && is_status(&err, 404, "not_found") && strstr(err.msg, encoded[i]),
		       "GET %s: expected 404 quoting the path, got %s", encoded[i],
		       r ? r->pattern : err.msg);
	}
	/* What a client's %31 turns into after decoding. */
	int64_t id;
	api_err err;
	const route *r = m("GET", "/v1/images/1", &id, &err);
	CHECK(r && r->fn == route_image_get && id == 1);
}

/* Overlong and non-UTF-8 paths: still 404, the message cut within the
 * buffer at a character boundary and valid UTF-8 for the JSON reply. */
static void t_overlong_and_bad_bytes(void)
{
	size_t n = 1 << 20;
	char *path = malloc(n + 1);
	REQUIRE(path);
	path[0] = '/';
	memset(path + 1, 'a', n - 1);
	path[n] = 0;
	int64_t id;
	api_err err;
	const route *r = m("GET", path, &id, &err);
	CHECK(!r && is_status(&err, 404, "not_found"));
	CHECK(strlen(err.msg) < sizeof err.msg && !strncmp(err.msg, "no such route: GET /aaa", 23));

	/* An id of a million digits: no overflow, 404. */
	memcpy(path, "/v1/images/", 11);
	memset(path + 11, '9', n - 11);
	r = m("GET", path, &id, &err);
	CHECK(!r && is_status(&err, 404, "not_found") && id == 0);
	/* A long path that otherwise matches: the digits of a huge id then "/file". */
	memcpy(path + n - 5, "/file", 5);
	r = m("GET", path, &id, &err);
	CHECK(!r && is_status(&err, 404, "not_found"));

	/* Multi-byte characters at the cut: the message ends on a whole one. */
	memcpy(path, "/", 1);
	for (size_t i = 1; i + 3 <= n; i += 3)
		memcpy(path + i, "\xe2\x82\xac", 3); /* U+20AC */
	path[1 + (n - 1) / 3 * 3] = 0;
	r = m("GET", path, &id, &err);
	size_t len = strlen(err.msg);
	CHECK(!r && is_status(&err, 404, "not_found") && len < sizeof err.msg);
	CHECKF(len > 0 && ((unsigned char)err.msg[len - 1] == 0xac),
	       "the message does not end on a whole character: last byte 0x%02x",
	       len ? (unsigned char)err.msg[len - 1] : 0);
	free(path);

	/* Bytes that are not UTF-8: each becomes U+FFFD in the message. */
	r = m("GET", "/v1/\x93\x9e/\xff", &id, &err);
	CHECK(!r && is_status(&err, 404, "not_found"));
	CHECKF(!strcmp(err.msg, "no such route: GET /v1/\xef\xbf\xbd\xef\xbf\xbd/\xef\xbf\xbd"),
	       "message '%s'", err.msg);
	r = m("PUT\xc3", "/v1/stats", &id, &err);
	CHECK(!r && is_status(&err, 405, "method_not_allowed"));
	CHECKF(!strcmp(err.msg, "method PUT\xef\xbf\xbd is not allowed on this route"), "message '%s'",
	       err.msg);
}

int main(void)
{
	TAP_RUN(t_every_route);
	TAP_RUN(t_head_is_get);
	TAP_RUN(t_405_other_methods);
	TAP_RUN(t_404_unknown_paths);
	TAP_RUN(t_ids);
	TAP_RUN(t_trailing_slash);
	TAP_RUN(t_percent_encoding);
	TAP_RUN(t_overlong_and_bad_bytes);
	return tap_done();
}
