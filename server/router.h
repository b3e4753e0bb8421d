/*
 * router: the table of routes (method, path pattern, handler, how the body
 * is received). Patterns are literal segments and "{id}", a positive
 * integer. Thread-safe (the table is constant).
 */
#ifndef CLIPD_ROUTER_H
#define CLIPD_ROUTER_H

#include <stdint.h>

#include "errors.h"
#include "http.h"

typedef void (*route_fn)(http_req *r);

typedef enum route_body {
	BODY_NONE,     /* a body is read and ignored */
	BODY_BUFFER,   /* buffered in memory (JSON, raw image, in-memory multipart) */
	BODY_UPLOAD,   /* files streamed into the blob store; JSON buffered */
} route_body;

typedef struct route {
	const char *method;
	const char *pattern;
	route_fn fn;
	route_body body;
	int writes;        /* changes data: needs the API key when one is set */
} route;

/* Finds the route of method and path (query string excluded). NULL with a
 * 404 (no such path) or 405 (path exists, other methods) in err. */
const route *router_match(const char *method, const char *path, int64_t *id, api_err *err);

#endif
