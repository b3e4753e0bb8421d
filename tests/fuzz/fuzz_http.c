/*
 * fuzz_http: every route of the real HTTP layer, in-process (fuzz_daemon),
 * with any query string and body. The input is
 *   byte 0   the route (table below; the last entry takes its method and
 *            path from the input too)
 *   byte 1   bits 0-2 the Content-Type, bits 3-4 the API key (3: none,
 *            2: a wrong one, else the right one)
 *   byte 2   the {id} of the path, 1..8
 *   then     the query string and the body, separated by "\n--\n"; without
 *            the separator all of it is the body (the query for routes
 *            without a body).
 * The query is percent-encoded as sent ('=' and '&' kept, so fields stay
 * fields; every other byte, %FF among them, arrives decoded as itself).
 * fuzz_daemon checks each reply.
 */
#include <stdint.h>

#include "fuzz_daemon.h"
#include "fuzz_util.h"

#define QUERY_MAX 4000

enum { F_QUERY = 1, F_BODY = 2, F_BINARY = 4, F_ANY = 8 };

static const struct route {
	const char *method, *path;
	int flags;
} routes[] = {
	{"GET", "/v1/search", F_QUERY},
	{"POST", "/v1/search", F_BODY},
	{"POST", "/v1/images", F_BODY},
	{"GET", "/v1/images/{id}", F_QUERY},
	{"PATCH", "/v1/images/{id}", F_BODY},
	{"DELETE", "/v1/images/{id}", F_QUERY},
	{"GET", "/v1/images/{id}/file", F_QUERY | F_BINARY},
	{"GET", "/v1/images/{id}/thumbnail", F_QUERY | F_BINARY},
	{"POST", "/v1/ingest", F_BODY},
	{"GET", "/v1/jobs", F_QUERY},
	{"GET", "/v1/jobs/{id}", F_QUERY},
	{"POST", "/v1/texts", F_BODY},
	{"GET", "/v1/texts/{id}", F_QUERY},
	{"DELETE", "/v1/texts/{id}", F_QUERY},
	{"POST", "/v1/classify", F_BODY},
	{"POST", "/v1/embed", F_BODY},
	{"GET", "/v1/stats", F_QUERY},
	{"GET", "/readyz", F_QUERY},
	{NULL, NULL, F_ANY | F_BODY | F_BINARY},
};
#define NROUTES (sizeof routes / sizeof *routes)

static const char *const ctypes[8] = {
	"application/json", "application/json", "application/json",
	"application/json; charset=utf-8", NULL, "text/plain", "image/png",
	"application/octet-stream",
};

static const char *const methods[] = {"GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS", "GET"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_daemon_start();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static char target[3 * QUERY_MAX + 256], head[sizeof target + 512];
	if (len < 3)
		return 0;
	const struct route *rt = &routes[data[0] % NROUTES];
	const char *ctype = ctypes[data[1] & 7];
	int key = (data[1] >> 3) & 3;
	int id = 1 + data[2] % 8;
	const uint8_t *rest = data + 3, *body;
	size_t rlen = len - 3, qlen, blen;
	fuzz_split(rest, rlen, "\n--\n", &qlen, &body, &blen);
	if (!body) {
		if (rt->flags & F_BODY) {
			body = rest;
			blen = rlen;
			qlen = 0;
		} else {
			blen = 0;
		}
	}
	if (qlen > QUERY_MAX)
		qlen = QUERY_MAX;

	const char *method = rt->method;
	target[0] = 0;
	if (rt->flags & F_ANY) {
		/* Method and path from the query part: its first byte picks the
		 * method, the rest up to '?' is the path. */
		method = methods[(qlen ? rest[0] : 0) % (sizeof methods / sizeof *methods)];
		const uint8_t *p = qlen ? rest + 1 : rest;
		size_t n = qlen ? qlen - 1 : 0;
		const uint8_t *q = memchr(p, '?', n);
		size_t plen = q ? (size_t)(q - p) : n;
		strcat(target, "/");
		fuzz_url_encode(target, sizeof target, p, plen, "/");
		if (q) {
			strcat(target, "?");
			fuzz_url_encode(target, sizeof target, q + 1, n - plen - 1, "=&");
		}
	} else {
		const char *brace = strstr(rt->path, "{id}");
		if (brace)
			snprintf(target, sizeof target, "%.*s%d%s", (int)(brace - rt->path), rt->path, id,
			         brace + 4);
		else
			snprintf(target, sizeof target, "%s", rt->path);
		if (qlen) {
			strcat(target, "?");
			fuzz_url_encode(target, sizeof target, rest, qlen, "=&");
		}
	}
	int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1", method, target);
	if (ctype)
		n += snprintf(head + n, sizeof head - (size_t)n, "\r\nContent-Type: %s", ctype);
	if (key != 3)
		snprintf(head + n, sizeof head - (size_t)n, "\r\nAuthorization: Bearer %s",
		         key == 2 ? "not-the-key" : FUZZ_KEY);
	fuzz_daemon_send(head, body, blen, rt->flags & F_BINARY);
	return 0;
}
