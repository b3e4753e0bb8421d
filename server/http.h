/*
 * http: the HTTP front of the daemon on libmicrohttpd. It owns the listening
 * socket and the connection threads, receives request bodies within the
 * size limit (buffered in memory, or for upload routes streamed straight
 * into the blob store), checks the API key, dispatches to the route
 * handlers, and sends their replies. Every error reply goes through
 * http_reply_error (and so through errors.c's one table).
 *
 * Before any handler runs, a request is refused (with the error sent once
 * its body is in) when its Host names neither an IP address, localhost nor
 * an --allow-host name (403 host_not_allowed), when it is a write from a
 * foreign web page (Origin not the daemon's own nor --allow-origin: 403
 * origin_not_allowed), when a buffering route gets a Content-Type other than
 * JSON, multipart or an image (415), and when the body passes --max-body-mb
 * or, multipart, HTTP_MAX_PARTS parts (413). Client bytes that reach a
 * handler (URL, query and header values, part names) are valid UTF-8.
 *
 * Threading (see the DESIGN comment in http.c): one thread per connection,
 * at most --max-connections and --max-connections-per-ip of them, and a
 * watchdog thread that closes connections whose request head is late; a
 * request's handler runs on its connection's thread and may block.
 */
#ifndef CLIPD_HTTP_H
#define CLIPD_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "blobs.h"
#include "errors.h"

typedef struct http_server http_server;
typedef struct http_req http_req;

/* Starts listening on cfg->listen and logs "listening on HOST:PORT". */
int http_start(app *a, http_server **out, api_err *err);

/* The bound port (useful with port 0). */
int http_port(const http_server *s);

/* Stops accepting, waits up to grace_ms for requests in flight to finish,
 * then closes every connection and frees the server. Accepts NULL. */
void http_stop(http_server *s, int grace_ms);

/* ---- inside a handler ---------------------------------------------------- */

app *http_req_app(http_req *r);
/* The served model (space.h), held for the rest of the request: a request
 * that began before a switch of models finishes on the old one. */
space *http_req_space(http_req *r);
const char *http_req_method(const http_req *r);
/* The {id} of the route pattern; 0 when the route has none. */
int64_t http_req_id(const http_req *r);
/* A query parameter (decoded), NULL when absent. */
const char *http_req_query(http_req *r, const char *key);
const char *http_req_header(http_req *r, const char *name);
/* Whether the Content-Type starts with prefix (case-insensitive). */
int http_req_content_is(http_req *r, const char *prefix);
/* The buffered body (JSON or a raw body of a buffering route); NULL, 0 when
 * none. NUL-terminated for convenience. */
const char *http_req_body(const http_req *r, size_t *len);
/* Parses the buffered body as a JSON object (400 when it is not one). */
int http_req_json(http_req *r, json_t **out, api_err *err);

/* One part of a multipart/form-data body, in arrival order. On upload
 * routes a part with a filename is streamed into bw (data is NULL);
 * other parts are in data[len] (NUL-terminated). */
typedef struct http_part {
	char *key;
	char *filename;       /* NULL when the part had none */
	char *content_type;
	char *data;
	size_t len, cap;
	blob_writer *bw;
	struct http_part *next;
} http_part;

/* The parts of a multipart body, NULL when none. */
http_part *http_req_parts(http_req *r);
/* First part with this key, NULL when none. */
http_part *http_req_part(http_req *r, const char *key);
/* Takes the blob writer out of a part (the request no longer frees it). */
blob_writer *http_part_take(http_part *p);
/* Upload routes: the raw body (image/... or application/octet-stream)
 * streamed into a blob writer; the caller takes it. NULL when none. */
blob_writer *http_req_take_raw(http_req *r);

/* ---- replies: a handler sends exactly one ------------------------------- */

/* Sends body (stolen) as JSON with status. */
void http_reply_json(http_req *r, int status, json_t *body);
/* Sends the error JSON with the status errors.c maps it to. */
void http_reply_error(http_req *r, const api_err *err);
/* Sends size bytes of fd (taken, closed by the server) with mime. */
void http_reply_fd(http_req *r, int fd, uint64_t size, const char *mime);
/* Sends len bytes of data with status and mime. With take, data is
 * malloc'ed and the server frees it; without, data must outlive the reply
 * (a constant). */
void http_reply_data(http_req *r, int status, void *data, size_t len, int take, const char *mime);
/* Adds a header to the reply about to be sent. */
void http_add_header(http_req *r, const char *name, const char *value);

#endif
