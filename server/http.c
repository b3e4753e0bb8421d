/*
 * http.c: libmicrohttpd glue, request bodies, limits, auth, replies.
 *
 * DESIGN: threads.
 * - libmicrohttpd runs one listening thread and one thread per connection
 *   (MHD_USE_THREAD_PER_CONNECTION), at most --max-connections of them, and
 *   closes connections idle for --timeout seconds (slow clients). A handler
 *   runs on its connection's thread and may block: on the store, on an
 *   encode pool context (encode_pool.c bounds concurrent encodes), or on ?wait=true.
 * - A http_req belongs to its connection's thread from the first call of
 *   on_request to on_completed; nothing else touches it.
 * - srv->mu guards nothing but the in-flight count's condition variable:
 *   http_stop waits on it for requests in flight to drain.
 * - Connection limits: --max-connections in all (lowered at start to what
 *   the descriptor limit allows), --max-connections-per-ip from one
 *   address (libmicrohttpd refuses the rest at accept), so one client's
 *   idle sockets cannot lock out another.
 * - Head deadline: the idle timeout restarts with every byte, so a client
 *   sending a header a byte at a time would hold its thread for ever. Each
 *   connection has a slot (srv->conns, under srv->conn_mu) with the time
 *   by which its request head (request line and headers) must be complete:
 *   --header-timeout after the connection opened or after its previous
 *   reply. The watchdog thread wakes twice a second and shuts down (the
 *   socket, not the descriptor) every connection past its deadline; its
 *   own thread then sees end of file and libmicrohttpd closes it. Slots are
 *   removed under conn_mu in the close notification, which libmicrohttpd
 *   calls before it closes the descriptor, so the watchdog never touches a
 *   descriptor that was reused.
 *
 * Bodies: the declared Content-Length and the running total are checked
 * against --max-body-mb. A body over the limit, or one sent to a request
 * that already failed (401, 404, ...), is read and discarded and the error
 * sent once it is all in: replying before the client has finished sending
 * makes the kernel reset the connection, and the client would never see the
 * status. Bodies far over the limit (DRAIN_MAX beyond it) get the reply
 * early and the connection closed instead.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "clock.h"
#include "http.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "router.h"
#include "space.h"

#define DRAIN_MAX ((uint64_t)64 << 20)
#define MAX_EXTRA_HEADERS 4
#define POST_BUFFER 65536
/* Parts of one multipart body. A bulk upload of more files than this is
 * split by the client; each part costs a small struct, its names and (for
 * files) a temporary file, so the count is bounded, not only the bytes. */
#define HTTP_MAX_PARTS 1000
/* First allocation of a part's in-memory data: most fields are a few bytes. */
#define PART_MIN_CAP 64

/* One open connection, for the head deadline (see DESIGN). */
struct conn_slot {
	MHD_socket fd;
	int64_t deadline_ms;        /* its head must be in by then; 0: it is */
	struct conn_slot *prev, *next;
};

struct http_server {
	app *a;
	struct MHD_Daemon *d;
	int port;
	atomic_int inflight;
	pthread_mutex_t mu;   /* see DESIGN */
	pthread_cond_t cv;

	pthread_mutex_t conn_mu;    /* guards conns and every slot's deadline */
	struct conn_slot *conns;
	pthread_t watchdog;
	int watchdog_started;
	int stopping;               /* under conn_mu: the watchdog ends */
	pthread_cond_t watchdog_cv;
	atomic_llong heads_cut;     /* connections closed for a late head */
};

enum body_mode { M_DISCARD, M_BUFFER, M_FORM, M_RAW };

struct http_req {
	http_server *srv;
	struct MHD_Connection *c;
	const route *rt;
	int64_t id;
	char method[16];
	char *url;
	int64_t t0;                 /* clock_ms() at the first call: the access log */
	double t_start;             /* clock_s() at the first call: the metrics */

	enum body_mode mode;
	uint64_t received;
	char *buf;                  /* M_BUFFER */
	size_t len, cap;
	size_t first_cap;           /* M_BUFFER: the declared length + 1, or 4096 */
	struct MHD_PostProcessor *pp;
	int nparts;
	http_part *parts, *last;    /* M_FORM */
	blob_writer *raw;           /* M_RAW */

	int have_err;               /* deferred error, sent when the body is in */
	api_err err;
	int replied, status;
	char *hname[MAX_EXTRA_HEADERS], *hval[MAX_EXTRA_HEADERS];
	int nheaders;
	space *sp;                  /* held from the first http_req_space to the end */
};

/* ---- accessors ----------------------------------------------------------- */

app *http_req_app(http_req *r)
{
	return r->srv->a;
}

space *http_req_space(http_req *r)
{
	if (!r->sp)
		r->sp = space_hold(r->srv->a);
	return r->sp;
}

const char *http_req_method(const http_req *r)
{
	return r->method;
}

int64_t http_req_id(const http_req *r)
{
	return r->id;
}

/* Query and header values are the client's bytes, decoded by libmicrohttpd
 * in its own (writable) connection memory: they are made valid UTF-8 in
 * place before any handler quotes them in JSON or stores them. */
const char *http_req_query(http_req *r, const char *key)
{
	const char *v = MHD_lookup_connection_value(r->c, MHD_GET_ARGUMENT_KIND, key);
	if (v)
		ju_utf8_mask((char *)v);
	return v;
}

const char *http_req_header(http_req *r, const char *name)
{
	const char *v = MHD_lookup_connection_value(r->c, MHD_HEADER_KIND, name);
	if (v)
		ju_utf8_mask((char *)v);
	return v;
}

int http_req_content_is(http_req *r, const char *prefix)
{
	const char *ct = http_req_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
	return ct && strncasecmp(ct, prefix, strlen(prefix)) == 0;
}

const char *http_req_body(const http_req *r, size_t *len)
{
	*len = r->len;
	return r->buf;
}

int http_req_json(http_req *r, json_t **out, api_err *err)
{
	*out = NULL;
	/* Only application/json: a form or text/plain body is what a foreign web
	 * page can send without a CORS preflight. */
	if (r->parts || r->raw || !http_req_content_is(r, "application/json"))
		return api_fail(err, API_EUNSUPPORTED, "this request needs a JSON body (Content-Type: application/json)");
	return ju_parse_object(r->buf, r->len, out, err);
}

http_part *http_req_parts(http_req *r)
{
	return r->parts;
}

http_part *http_req_part(http_req *r, const char *key)
{
	for (http_part *p = r->parts; p; p = p->next)
		if (p->key && !strcmp(p->key, key))
			return p;
	return NULL;
}

blob_writer *http_part_take(http_part *p)
{
	blob_writer *w = p->bw;
	p->bw = NULL;
	return w;
}

blob_writer *http_req_take_raw(http_req *r)
{
	blob_writer *w = r->raw;
	r->raw = NULL;
	return w;
}

/* ---- replies ------------------------------------------------------------- */

void http_add_header(http_req *r, const char *name, const char *value)
{
	if (r->nheaders == MAX_EXTRA_HEADERS)
		return;
	r->hname[r->nheaders] = strdup(name);
	r->hval[r->nheaders] = strdup(value);
	r->nheaders++;
}

static void send_response(http_req *r, int status, struct MHD_Response *resp, const char *ctype)
{
	if (r->replied) {
		log_error("%s %s: a second reply was dropped", r->method, r->url);
		if (resp)
			MHD_destroy_response(resp);
		return;
	}
	r->replied = 1;
	r->status = status;
	/* Counted when the reply is queued, before the client can read it: a
	 * scrape that follows a request always sees that request. */
	metrics_http_done(r->rt ? r->rt->pattern : NULL, r->method, status,
	                  clock_s() - r->t_start);
	if (!resp) {
		log_error("%s %s: cannot create a response", r->method, r->url);
		return;
	}
	if (ctype)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	for (int i = 0; i < r->nheaders; i++)
		if (r->hname[i] && r->hval[i])
			MHD_add_response_header(resp, r->hname[i], r->hval[i]);
	if (MHD_queue_response(r->c, (unsigned)status, resp) != MHD_YES)
		log_error("%s %s: the response could not be queued", r->method, r->url);
	MHD_destroy_response(resp);
}

void http_reply_json(http_req *r, int status, json_t *body)
{
	char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
	json_decref(body);
	if (!s) {
		/* Out of memory, or a handler built invalid JSON: still an error
		 * body a client can parse. */
		static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":"
		                          "\"internal server error (the reply could not be built)\"}}";
		log_error("%s %s: the reply could not be built", r->method, r->url);
		send_response(r, 500, MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom,
		                                                      MHD_RESPMEM_PERSISTENT),
		              "application/json");
		return;
	}
	size_t n = strlen(s);
	s[n] = 0;
	send_response(r, status, MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE),
	              "application/json");
}

void http_reply_error(http_req *r, const api_err *err)
{
	int status;
	json_t *j = api_err_json(err, &status);
	if (status == 503 && err->domain == ERR_API && err->code == API_EQUEUEFULL)
		http_add_header(r, "Retry-After", "5");
	if (status == 401)
		http_add_header(r, "WWW-Authenticate", "Bearer");
	log_debug("%s %s: %d %s", r->method, r->url, status, err->msg);
	http_reply_json(r, status, j);
}

void http_reply_fd(http_req *r, int fd, uint64_t size, const char *mime)
{
	send_response(r, 200, MHD_create_response_from_fd(size, fd), mime);
}

void http_reply_data(http_req *r, int status, void *data, size_t len, int take, const char *mime)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
	    len, data, take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp && take)
		free(data);
	send_response(r, status, resp, mime);
}

/* ---- bodies -------------------------------------------------------------- */

static void defer_error(http_req *r, const api_err *e)
{
	if (!r->have_err) {
		r->err = *e;
		r->have_err = 1;
	}
}

static void free_parts(http_req *r)
{
	http_part *p = r->parts;
	while (p) {
		http_part *next = p->next;
		free(p->key);
		free(p->filename);
		free(p->content_type);
		free(p->data);
		blob_writer_free(p->bw);
		free(p);
		p = next;
	}
	r->parts = r->last = NULL;
}

/* Appends n bytes to a NUL-terminated buffer that grows by doubling from
 * first_cap but never past limit + 1 bytes (the body limit: a buffer does
 * not reserve twice what it may hold). */
static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n,
                  size_t first_cap, size_t limit)
{
	if (*len + n + 1 > *cap) {
		size_t nc = *cap ? *cap : first_cap;
		while (nc < *len + n + 1)
			nc *= 2;
		if (nc > limit + 1 && *len + n + 1 <= limit + 1)
			nc = limit + 1;
		char *p = realloc(*buf, nc);
		if (!p)
			return -1;
		*buf = p;
		*cap = nc;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = 0;
	return 0;
}

static int same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
	http_req *r = cls;
	api_err e;
	(void)kind;
	(void)transfer_encoding;
	if (r->have_err)
		return MHD_YES;
	http_part *p = r->last;
	if (off == 0 && (!p || p->len > 0 || (p->bw && blob_writer_size(p->bw) > 0) ||
	                 !same(p->key, key) || !same(p->filename, filename))) {
		if (++r->nparts > HTTP_MAX_PARTS) {
			api_fail(&e, API_ETOOBIG, "the multipart body has more than %d parts: send fewer "
			         "files per request", HTTP_MAX_PARTS);
			defer_error(r, &e);
			return MHD_YES;
		}
		/* The previous file is complete: close its temporary file now, so
		 * that a request holds one open file however many parts it has. */
		if (p && p->bw && blob_writer_finish(p->bw, &e)) {
			defer_error(r, &e);
			return MHD_YES;
		}
		p = calloc(1, sizeof *p);
		if (!p || !(p->key = ju_utf8_dup(key ? key : "")) ||
		    (filename && !(p->filename = ju_utf8_dup(filename))) ||
		    (content_type && !(p->content_type = ju_utf8_dup(content_type)))) {
			if (p) {
				free(p->key);
				free(p->filename);
				free(p->content_type);
				free(p);
			}
			api_fail(&e, API_ENOMEM, "out of memory");
			defer_error(r, &e);
			return MHD_YES;
		}
		if (r->last)
			r->last->next = p;
		else
			r->parts = p;
		r->last = p;
		if (filename && r->rt->body == BODY_UPLOAD && blob_writer_new(r->srv->a->blobs, &p->bw, &e)) {
			defer_error(r, &e);
			return MHD_YES;
		}
	}
	if (size == 0)
		return MHD_YES;
	if (p->bw) {
		if (blob_writer_write(p->bw, data, size, &e))
			defer_error(r, &e);
	} else if (append(&p->data, &p->len, &p->cap, data, size, PART_MIN_CAP,
	                  (size_t)r->srv->a->cfg->max_body)) {
		api_fail(&e, API_ENOMEM, "out of memory");
		defer_error(r, &e);
	}
	return MHD_YES;
}

static int key_ok(http_req *r)
{
	const char *key = r->srv->a->cfg->api_key;
	if (!key)
		return 1;
	const char *h = http_req_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Bearer ", 7) != 0)
		return 0;
	h += 7;
	/* Constant time in the key's length: every byte is compared. */
	size_t kl = strlen(key), hl = strlen(h);
	unsigned char diff = kl != hl;
	for (size_t i = 0; i < kl; i++)
		diff |= (unsigned char)key[i] ^ (unsigned char)(i < hl ? h[i] : 0);
	return diff == 0;
}

/* The Host header names this daemon: absent (HTTP/1.0), an IP literal
 * (v4, or v6 in brackets), localhost, or one of --allow-host. A web page on
 * another name that resolves here (DNS rebinding) is refused; a user who
 * reaches the daemon by its LAN address keeps working. */
static int host_ok(http_req *r)
{
	const config *cfg = r->srv->a->cfg;
	const char *h = http_req_header(r, MHD_HTTP_HEADER_HOST);
	char name[256];
	if (!h)
		return 1;
	size_t n = strlen(h);
	if (n == 0 || n >= sizeof name)
		return 0;
	if (h[0] == '[') {
		const char *close = strchr(h, ']');
		struct in6_addr a6;
		if (!close || (close[1] && close[1] != ':'))
			return 0;
		snprintf(name, sizeof name, "%.*s", (int)(close - h - 1), h + 1);
		return inet_pton(AF_INET6, name, &a6) == 1;
	}
	const char *colon = strchr(h, ':');
	if (colon && strchr(colon + 1, ':'))
		return 0; /* a bare IPv6 address is not a valid Host */
	n = colon ? (size_t)(colon - h) : n;
	snprintf(name, sizeof name, "%.*s", (int)n, h);
	if (n > 1 && name[n - 1] == '.')
		name[--n] = 0; /* "localhost." is localhost */
	struct in_addr a4;
	if (inet_pton(AF_INET, name, &a4) == 1 || !strcasecmp(name, "localhost"))
		return 1;
	for (int i = 0; i < cfg->n_allow_hosts; i++)
		if (!strcasecmp(name, cfg->allow_hosts[i]))
			return 1;
	return 0;
}

/* A request other than GET/HEAD that carries an Origin comes from a web
 * page: only the daemon's own page (same scheme-less host:port as Host) and
 * the --allow-origin list may send it. No Origin: a script or curl. */
static int origin_ok(http_req *r)
{
	const config *cfg = r->srv->a->cfg;
	if (!strcmp(r->method, "GET") || !strcmp(r->method, "HEAD"))
		return 1;
	const char *o = http_req_header(r, "Origin");
	if (!o)
		return 1;
	for (int i = 0; i < cfg->n_allow_origins; i++)
		if (!strcasecmp(o, cfg->allow_origins[i]))
			return 1;
	const char *host = http_req_header(r, MHD_HTTP_HEADER_HOST);
	const char *rest = !strncasecmp(o, "http://", 7) ? o + 7 : !strncasecmp(o, "https://", 8) ? o + 8 : NULL;
	return rest && host && *rest && !strcasecmp(rest, host);
}

/* First call of a request: route, auth, declared length, body mode. */
static void begin(http_req *r, const char *url, const char *method)
{
	app *a = r->srv->a;
	api_err e;
	r->rt = router_match(method, url, &r->id, &e);
	if (!r->rt) {
		defer_error(r, &e);
		return;
	}
	/* Probes stay open whatever name they use: they answer nothing private. */
	int probe = !strcmp(r->rt->pattern, "/healthz") || !strcmp(r->rt->pattern, "/readyz");
	if (!probe && !host_ok(r)) {
		api_fail(&e, API_EHOST, "the Host header names neither an IP address, localhost, nor a "
		         "name given with --allow-host");
		defer_error(r, &e);
		return;
	}
	if (!origin_ok(r)) {
		api_fail(&e, API_EORIGIN, "requests from the web page at this Origin are not allowed "
		         "(only the daemon's own page and --allow-origin)");
		defer_error(r, &e);
		return;
	}
	if (atomic_load(&a->stopping) && strcmp(url, "/healthz") != 0) {
		api_fail(&e, API_EUNAVAIL, "the server is shutting down");
		defer_error(r, &e);
		return;
	}
	/* Health probes stay open: a load balancer has no key. */
	if ((r->rt->writes || (a->cfg->api_key_reads && !strncmp(url, "/v1/", 4))) && !key_ok(r)) {
		api_fail(&e, API_EUNAUTH, a->cfg->api_key && http_req_header(r, "Authorization")
		                              ? "wrong API key"
		                              : "this request needs an API key: Authorization: Bearer KEY");
		defer_error(r, &e);
		return;
	}
	const char *cl = http_req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl && strtoull(cl, NULL, 10) > (unsigned long long)a->cfg->max_body) {
		api_fail(&e, API_ETOOBIG, "the request body is over the limit of %lld MiB",
		         (long long)(a->cfg->max_body >> 20));
		defer_error(r, &e);
		return;
	}
	switch (r->rt->body) {
	case BODY_NONE:
		r->mode = M_DISCARD;
		break;
	case BODY_BUFFER:
	case BODY_UPLOAD:
		if (http_req_content_is(r, "multipart/form-data")) {
			r->mode = M_FORM;
			r->pp = MHD_create_post_processor(r->c, POST_BUFFER, on_part, r);
			if (!r->pp) {
				api_fail(&e, API_EBADREQ, "malformed multipart/form-data Content-Type (no boundary?)");
				defer_error(r, &e);
			}
		} else if (r->rt->body == BODY_UPLOAD &&
		           (http_req_content_is(r, "image/") ||
		            http_req_content_is(r, "application/octet-stream"))) {
			r->mode = M_RAW;
		} else if (http_req_header(r, MHD_HTTP_HEADER_CONTENT_TYPE) &&
		           !http_req_content_is(r, "application/json") &&
		           !http_req_content_is(r, "image/") &&
		           !http_req_content_is(r, "application/octet-stream")) {
			/* Refused before anything is buffered. */
			api_fail(&e, API_EUNSUPPORTED, "unsupported Content-Type: send application/json "
			         "(or multipart/form-data, or an image where the route takes one)");
			defer_error(r, &e);
		} else {
			r->mode = M_BUFFER;
			/* The declared length is reserved once, so a buffer never
			 * holds up to twice what it received. */
			uint64_t want = cl ? strtoull(cl, NULL, 10) : 0;
			r->first_cap = want > 0 ? (size_t)want + 1 : 4096;
		}
		break;
	}
}

static enum MHD_Result take_data(http_req *r, const char *data, size_t size)
{
	app *a = r->srv->a;
	api_err e;
	r->received += size;
	if (r->received > (uint64_t)a->cfg->max_body) {
		if (!r->have_err) {
			api_fail(&e, API_ETOOBIG, "the request body is over the limit of %lld MiB",
			         (long long)(a->cfg->max_body >> 20));
			defer_error(r, &e);
		}
		if (r->received > (uint64_t)a->cfg->max_body + DRAIN_MAX)
			return MHD_NO;
	}
	if (r->have_err) {
		/* Free what was received so far; keep draining. */
		r->mode = M_DISCARD;
		free_parts(r);
		blob_writer_free(r->raw);
		r->raw = NULL;
		free(r->buf);
		r->buf = NULL;
		r->len = r->cap = 0;
		return MHD_YES;
	}
	switch (r->mode) {
	case M_DISCARD:
		break;
	case M_BUFFER:
		if (append(&r->buf, &r->len, &r->cap, data, size, r->first_cap,
		           (size_t)a->cfg->max_body)) {
			api_fail(&e, API_ENOMEM, "out of memory");
			defer_error(r, &e);
		}
		break;
	case M_FORM:
		if (MHD_post_process(r->pp, data, size) != MHD_YES && !r->have_err) {
			api_fail(&e, API_EBADREQ, "malformed multipart/form-data body");
			defer_error(r, &e);
		}
		break;
	case M_RAW:
		if (!r->raw && blob_writer_new(a->blobs, &r->raw, &e))
			defer_error(r, &e);
		else if (blob_writer_write(r->raw, data, size, &e))
			defer_error(r, &e);
		break;
	}
	return MHD_YES;
}

/* ---- connections: the head deadline ----------------------------------- */

static struct conn_slot *slot_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

/* A head is now due within --header-timeout (when = 1), or has arrived. */
static void slot_expect_head(http_server *srv, struct MHD_Connection *c, int when)
{
	struct conn_slot *sl = slot_of(c);
	if (!sl)
		return;
	pthread_mutex_lock(&srv->conn_mu);
	sl->deadline_ms = when ? clock_ms() + (int64_t)srv->a->cfg->header_timeout_s * 1000 : 0;
	pthread_mutex_unlock(&srv->conn_mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
	http_server *srv = cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		struct conn_slot *sl = calloc(1, sizeof *sl);
		*socket_context = sl;
		if (!sl || !ci)
			return; /* no deadline for this one: the idle timeout still holds */
		sl->fd = ci->connect_fd;
		sl->deadline_ms = clock_ms() + (int64_t)srv->a->cfg->header_timeout_s * 1000;
		pthread_mutex_lock(&srv->conn_mu);
		sl->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = sl;
		srv->conns = sl;
		pthread_mutex_unlock(&srv->conn_mu);
		return;
	}
	struct conn_slot *sl = *socket_context;
	*socket_context = NULL;
	if (!sl)
		return;
	pthread_mutex_lock(&srv->conn_mu);
	if (sl->prev)
		sl->prev->next = sl->next;
	else if (srv->conns == sl)
		srv->conns = sl->next;
	if (sl->next)
		sl->next->prev = sl->prev;
	pthread_mutex_unlock(&srv->conn_mu);
	free(sl);
}

static void *watchdog_main(void *arg)
{
	http_server *srv = arg;
	pthread_mutex_lock(&srv->conn_mu);
	while (!srv->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 500 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&srv->watchdog_cv, &srv->conn_mu, &ts);
		int64_t now = clock_ms();
		for (struct conn_slot *sl = srv->conns; sl; sl = sl->next)
			if (sl->deadline_ms && now > sl->deadline_ms) {
				sl->deadline_ms = 0;
				shutdown(sl->fd, SHUT_RDWR);
				atomic_fetch_add(&srv->heads_cut, 1);
				log_debug("a connection sent no complete request head in %d s: closed",
				          srv->a->cfg->header_timeout_s);
			}
	}
	pthread_mutex_unlock(&srv->conn_mu);
	return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	http_server *srv = cls;
	http_req *r = *con_cls;
	(void)version;

	if (!r) {
		slot_expect_head(srv, c, 0);
		r = calloc(1, sizeof *r);
		if (!r)
			return MHD_NO;
		r->srv = srv;
		r->c = c;
		r->t0 = clock_ms();
		r->t_start = clock_s();
		snprintf(r->method, sizeof r->method, "%s", method);
		ju_utf8_fix(r->method, sizeof r->method);
		r->url = ju_utf8_dup(url);
		if (!r->url) {
			free(r);
			return MHD_NO;
		}
		*con_cls = r;
		atomic_fetch_add(&srv->inflight, 1);
		begin(r, url, method);
		const char *cl = http_req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (r->have_err && cl &&
		    strtoull(cl, NULL, 10) > (unsigned long long)srv->a->cfg->max_body + DRAIN_MAX) {
			http_reply_error(r, &r->err);
		}
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (r->replied)
			return MHD_YES;
		return take_data(r, upload_data, n);
	}
	if (r->replied)
		return MHD_YES;
	if (r->pp) {
		if (MHD_destroy_post_processor(r->pp) != MHD_YES && !r->have_err) {
			api_err e;
			api_fail(&e, API_EBADREQ, "malformed or truncated multipart/form-data body");
			defer_error(r, &e);
		}
		r->pp = NULL;
	}
	if (r->have_err) {
		http_reply_error(r, &r->err);
	} else {
		r->rt->fn(r);
		if (!r->replied) {
			api_err e;
			api_fail(&e, API_EINTERNAL, "%s %s: the handler sent no reply", r->method, r->url);
			http_reply_error(r, &e);
		}
	}
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	http_server *srv = cls;
	http_req *r = *con_cls;
	slot_expect_head(srv, c, 1);
	if (!r)
		return;
	*con_cls = NULL;
	if (!r->replied) /* the client went away before a reply: code 0 */
		metrics_http_done(r->rt ? r->rt->pattern : NULL, r->method, 0,
		                  clock_s() - r->t_start);
	if (log_enabled(LOG_LVL_DEBUG) || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
		log_msg(toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? LOG_LVL_DEBUG : LOG_LVL_INFO,
		        "%s %s %d %lld ms%s", r->method, r->url, r->status, (long long)(clock_ms() - r->t0),
		        toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? ""
		        : toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? " (timed out)"
		                                                        : " (connection closed)");
	space_release(srv->a, r->sp);
	if (r->pp)
		MHD_destroy_post_processor(r->pp);
	free_parts(r);
	blob_writer_free(r->raw);
	free(r->buf);
	free(r->url);
	for (int i = 0; i < r->nheaders; i++) {
		free(r->hname[i]);
		free(r->hval[i]);
	}
	free(r);
	pthread_mutex_lock(&srv->mu);
	atomic_fetch_sub(&srv->inflight, 1);
	pthread_cond_broadcast(&srv->cv);
	pthread_mutex_unlock(&srv->mu);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	msg[strcspn(msg, "\n")] = 0;
	log_warn("http: %s", msg);
}

int http_start(app *a, http_server **out, api_err *err)
{
	const config *cfg = a->cfg;
	http_server *s = calloc(1, sizeof *s);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
	                 MHD_USE_ITC | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
	*out = NULL;
	if (!s)
		return api_fail(err, API_ENOMEM, "out of memory");
	s->a = a;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (strchr(cfg->listen_host, ':')) {
		struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&ss;
		sa->sin6_family = AF_INET6;
		sa->sin6_port = htons((uint16_t)cfg->listen_port);
		inet_pton(AF_INET6, cfg->listen_host, &sa->sin6_addr);
		flags |= MHD_USE_IPv6;
	} else {
		struct sockaddr_in *sa = (struct sockaddr_in *)&ss;
		sa->sin_family = AF_INET;
		sa->sin_port = htons((uint16_t)cfg->listen_port);
		inet_pton(AF_INET, cfg->listen_host, &sa->sin_addr);
	}
	/* A connection may hold its socket, an upload's temporary file and a
	 * file being sent: two descriptors each on average, with room kept for
	 * the store, the index, the model and the watcher. */
	unsigned conns = (unsigned)cfg->max_conns;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		rlim_t fit = rl.rlim_cur > 512 ? (rl.rlim_cur - 256) / 2 : 128;
		if (conns > fit) {
			log_warn("--max-connections %u lowered to %u to fit the limit of %llu open files "
			         "(raise it with ulimit -n or LimitNOFILE=)",
			         conns, (unsigned)fit, (unsigned long long)rl.rlim_cur);
			conns = (unsigned)fit;
		}
	}
	unsigned per_ip = (unsigned)cfg->max_conns_per_ip < conns ? (unsigned)cfg->max_conns_per_ip : conns;
	pthread_mutex_init(&s->conn_mu, NULL);
	pthread_cond_init(&s->watchdog_cv, NULL);
	s->d = MHD_start_daemon(flags, (uint16_t)cfg->listen_port, NULL, NULL, on_request, s,
	                        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
	                        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	                        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->timeout_s,
	                        MHD_OPTION_CONNECTION_LIMIT, conns,
	                        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
	                        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
	                        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
	                        MHD_OPTION_END);
	if (s->d && pthread_create(&s->watchdog, NULL, watchdog_main, s) == 0)
		s->watchdog_started = 1;
	else if (s->d)
		log_warn("no head-deadline thread: slow request heads are bounded by --timeout only");
	if (!s->d) {
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->conn_mu);
		pthread_cond_destroy(&s->watchdog_cv);
		free(s);
		return api_fail(err, API_EIO, "cannot listen on %s (address in use or not available)",
		                cfg->listen);
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : cfg->listen_port;
	if (strchr(cfg->listen_host, ':'))
		log_info("listening on [%s]:%d", cfg->listen_host, s->port);
	else
		log_info("listening on %s:%d", cfg->listen_host, s->port);
	*out = s;
	return 0;
}

int http_port(const http_server *s)
{
	return s->port;
}

void http_stop(http_server *s, int grace_ms)
{
	if (!s)
		return;
	MHD_socket fd = MHD_quiesce_daemon(s->d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += grace_ms / 1000;
	pthread_mutex_lock(&s->mu);
	while (atomic_load(&s->inflight) > 0)
		if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) != 0)
			break;
	int left = atomic_load(&s->inflight);
	pthread_mutex_unlock(&s->mu);
	if (left > 0)
		log_warn("%d requests still running after %d ms: closing them", left, grace_ms);
	MHD_stop_daemon(s->d);
	if (s->watchdog_started) {
		pthread_mutex_lock(&s->conn_mu);
		s->stopping = 1;
		pthread_cond_signal(&s->watchdog_cv);
		pthread_mutex_unlock(&s->conn_mu);
		pthread_join(s->watchdog, NULL);
	}
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->conn_mu);
	pthread_cond_destroy(&s->watchdog_cv);
	free(s);
}
