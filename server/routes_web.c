/* routes_web.c: the demo page (web/), compiled in by embed_file: GET /
 * (index.html), GET /web/app.js and GET /web/style.css. Every reply carries
 * a Content-Security-Policy that allows only this origin (plus data: and
 * blob: images for a dropped picture's preview), and "no-cache" with an
 * ETag, so a browser revalidates and gets a 304 until the binary changes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "routes.h"

/* Generated from web/ (tools/embed_file.c). */
extern const char clipd_web_index_html[];
extern const size_t clipd_web_index_html_len;
extern const char clipd_web_app_js[];
extern const size_t clipd_web_app_js_len;
extern const char clipd_web_style_css[];
extern const size_t clipd_web_style_css_len;

#define WEB_CSP                                                                                 \
	"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; " \
	"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "      \
	"form-action 'self'"

static void serve(http_req *r, const char *data, size_t len, const char *mime)
{
	/* At most four extra headers (http.c). FNV-1a over the bytes: the ETag changes exactly when the file does. */
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)data[i];
		h *= 1099511628211ULL;
	}
	char etag[32];
	snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)h);

	http_add_header(r, "Cache-Control", "no-cache");
	http_add_header(r, "ETag", etag);
	http_add_header(r, "Content-Security-Policy", WEB_CSP);
	http_add_header(r, "X-Content-Type-Options", "nosniff");
	const char *inm = http_req_header(r, "If-None-Match");
	if (inm && (strstr(inm, etag) || !strcmp(inm, "*"))) {
		http_reply_data(r, 304, "", 0, 0, NULL);
		return;
	}
	http_reply_data(r, 200, (void *)data, len, 0, mime);
}

void route_web_index(http_req *r)
{
	serve(r, clipd_web_index_html, clipd_web_index_html_len, "text/html; charset=utf-8");
}

void route_web_app_js(http_req *r)
{
	serve(r, clipd_web_app_js, clipd_web_app_js_len, "text/javascript; charset=utf-8");
}

void route_web_style_css(http_req *r)
{
	serve(r, clipd_web_style_css, clipd_web_style_css_len, "text/css; charset=utf-8");
}
