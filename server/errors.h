/*
 * errors: the server's error value and the one table that turns an error of
 * any module (store, index, model, the server itself) into an HTTP status
 * and a stable code string for clients.
 *
 * An api_err carries the module (domain), that module's code and one
 * message written where the error was detected. Server functions return 0
 * on success and non-zero on failure with *err filled.
 */
#ifndef CLIPD_ERRORS_H
#define CLIPD_ERRORS_H

#include <jansson.h>

#include "clip.h"
#include "index.h"
#include "store.h"

typedef enum api_domain {
	ERR_API = 0,   /* the server's own codes below */
	ERR_STORE,     /* store_code */
	ERR_CLIP,      /* clip_code */
	ERR_VIDX,      /* vidx_code */
} api_domain;

typedef enum api_code {
	API_OK = 0,
	API_EBADREQ,       /* 400: malformed JSON, bad or missing field */
	API_EUNAUTH,       /* 401: missing or wrong API key */
	API_EFORBIDDEN,    /* 403: path outside the allowed roots */
	API_EHOST,         /* 403: a Host name not allowed (DNS rebinding) */
	API_EORIGIN,       /* 403: a write from a foreign web page */
	API_ENOTFOUND,     /* 404: no such route or id */
	API_EMETHOD,       /* 405 */
	API_ECONFLICT,     /* 409: e.g. an image that is not indexed yet */
	API_ETOOBIG,       /* 413: body or image over a limit */
	API_EUNSUPPORTED,  /* 415: not an image, or an unsupported Content-Type */
	API_EUNDECODABLE,  /* 422: looks like an image but does not decode */
	API_EQUEUEFULL,    /* 503 with Retry-After */
	API_EUNAVAIL,      /* 503: shutting down */
	API_ETIMEOUT,      /* 504: waited too long (e.g. ?wait=true) */
	API_EINTERNAL,     /* 500 */
	API_EIO,           /* 500: file system */
	API_ENOMEM,        /* 500 */
} api_code;

typedef struct api_err {
	api_domain domain;
	int code;
	char msg[256];
} api_err;

/* Fills err (when non-NULL) with a server error; returns code. */
int api_fail(api_err *err, api_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Wrap a module's error unchanged (its message is kept); return non-zero. */
int api_from_store(api_err *err, const store_err *se);
int api_from_clip(api_err *err, const clip_err *ce);
int api_from_vidx(api_err *err, const vidx_err *ve);

/* The HTTP status of an error, and its code string ("bad_request", ...). */
int api_err_status(const api_err *err, const char **name);

/* Strings the error JSON must never show (the data and model directories):
 * each occurrence is replaced by "<dir>". Set once at start-up. */
void api_err_set_secrets(const char *const *strings, int n);

/* The body {"error": {"code", "message"}} for err; *status receives the HTTP
 * status. Server errors (5xx but 503) get a generic message and are logged in
 * full instead; other messages are scrubbed of the secret strings. Returns a
 * new reference, NULL when out of memory. */
json_t *api_err_json(const api_err *err, int *status);

#endif
