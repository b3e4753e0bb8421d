/*
 * bench/soak_mix.c: the soak's traffic. Each client thread draws the
 * kind of its next request by weight (soak_kinds), builds it whole, sends
 * it on its own keep-alive connection and classifies the answer: the
 * status the kind expects (any 4xx with an error JSON for a hostile
 * kind), a deliberate 503 (with Retry-After), or unexpected. Images are
 * small distinct PNGs; the ids of accepted uploads go into a pool from
 * which deletes take the oldest, so the collection stays about the same
 * size over a long run.
 *
 * DESIGN: threads. A client thread owns its connection, its buffers and
 * its soak_stats. The soak_mix is shared: its settings are read-only
 * while clients run, next_image/done/unexpected are atomics, and the id
 * pool is guarded by mix->mu (held only to push or pop one id).
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_int.h"
#include "soak_int.h"

#define IMG_W 48
#define IMG_H 40
#define K 10
#define BIG_DECLARED "1099511627776" /* 1 TiB */
#define BUF_KEEP ((size_t)1 << 20)    /* buffers grown past this are freed after use */

const soak_kind_info soak_kinds[SK_NKINDS] = {
	[SK_SEARCH_POST] = {"search-post", "POST /v1/search {\"text\", \"k\": 10}", 240, 0, 200},
	[SK_SEARCH_GET] = {"search-get", "GET /v1/search?q=...&k=10", 130, 0, 200},
	[SK_SEARCH_B64] = {"search-b64", "POST /v1/search {\"image_b64\": a PNG, \"k\": 10}", 100, 0,
	                   200},
	[SK_SEARCH_FORM] = {"search-form", "POST /v1/search multipart: image, k", 60, 0, 200},
	[SK_UPLOAD] = {"upload", "POST /v1/images multipart: image, meta", 60, 0, 202},
	[SK_UPLOAD_RAW] = {"upload-raw", "POST /v1/images?filename= raw image/png", 20, 0, 202},
	[SK_BULK] = {"bulk", "POST /v1/ingest multipart of --bulk PNGs", 40, 0, 202},
	[SK_UPLOAD_BROKEN] = {"upload-broken", "POST /v1/images a PNG cut after its header", 10, 0,
	                      202},
	[SK_DELETE] = {"delete", "DELETE /v1/images/{id}, ours, oldest first", 260, 0, 200},
	[SK_STATS] = {"stats", "GET /v1/stats", 50, 0, 200},
	[SK_BAD_JSON] = {"bad-json", "POST /v1/search malformed or mistyped JSON", 8, 1, 400},
	[SK_BAD_FORM] = {"bad-form", "POST /v1/ingest multipart type, body not multipart", 4, 1, 400},
	[SK_BIG_DECLARED] = {"big-declared", "POST /v1/images Content-Length 1 TiB, no body", 4, 1,
	                     413},
	[SK_BIG_BODY] = {"big-body", "POST /v1/search body of max-body + 64 KiB", 2, 1, 413},
	[SK_TRUNC_SEARCH] = {"trunc-search", "POST /v1/search image_b64 of half a PNG", 4, 1, 422},
	[SK_TRUNC_FORM] = {"trunc-form", "POST /v1/search multipart: the first 20 bytes of a PNG", 4,
	                   1, 422},
	[SK_NOT_IMAGE] = {"not-image", "POST /v1/images raw image/png that is text", 4, 1, 415},
};

static const char *const texts[] = {
	"a dog on a beach", "a photo of a cat", "a red car in the street", "snowy mountains",
	"two people riding bicycles", "a bowl of fruit", "an astronaut in space", "a cup of coffee",
	"a city at night", "a horse in a field", "a plate of pasta", "a lighthouse by the sea",
	"children playing football", "an old wooden door", "a sailing boat", "a rocket launch",
};
#define NTEXTS ((int)(sizeof texts / sizeof texts[0]))

/* Each malformed or mistyped in its own way; every one is a 400. */
static const char *const bad_json[] = {
	"{\"text\": \"a cat\", \"k\": ",
	"[\"a cat\"]",
	"{\"text\": 5}",
	"{\"text\": \"a cat\", \"k\": 0}",
	"{\"text\": \"\xff\xfe\"}",
	"{}",
	"{\"text\": \"a cat\", \"filter\": 3}",
	"not json at all",
};
#define NBAD ((int)(sizeof bad_json / sizeof bad_json[0]))

/* ---- buffers --------------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
	int oom;
};

static void buf_add(struct buf *b, const void *data, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		while (nc < b->len + n + 1)
			nc *= 2;
		char *p = realloc(b->p, nc);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = nc;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof tmp) {
		b->oom = 1;
		return;
	}
	buf_add(b, tmp, (size_t)n);
}

static void buf_reset(struct buf *b)
{
	if (b->cap > BUF_KEEP) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
	b->len = 0;
	b->oom = 0;
}

static void b64(struct buf *b, const unsigned char *s, size_t n)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) |
		             (i + 2 < n ? s[i + 2] : 0);
		char q[4] = {tab[v >> 18 & 63], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=',
		             i + 2 < n ? tab[v & 63] : '='};
		buf_add(b, q, 4);
	}
}

/* ---- one client ------------------------------------------------------------ */

struct client_state {
	soak_client *cl;
	soak_mix *m;
	uint64_t rng;
	char boundary[48];
	struct buf body, req;
	char desc[128];        /* method and path of the request, for a report */
	int64_t deleting;      /* the id a DELETE is for */
};

/* A new distinct PNG (*png malloc'ed). */
static int new_png(struct client_state *s, unsigned char **png, size_t *len)
{
	uint64_t n = atomic_fetch_add(&s->m->next_image, 1);
	uint64_t seed = s->m->nonce ^ (n * 0x9e3779b97f4a7c15ull);
	return soak_png(IMG_W, IMG_H, seed, png, len);
}

static void part_field(struct client_state *s, const char *name, const char *value)
{
	buf_printf(&s->body, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n",
	           s->boundary, name, value);
}

static void part_file(struct client_state *s, const char *name, const char *filename,
                      const unsigned char *data, size_t len)
{
	buf_printf(&s->body,
	           "--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
	           "Content-Type: image/png\r\n\r\n",
	           s->boundary, name, filename);
	buf_add(&s->body, data, len);
	buf_add(&s->body, "\r\n", 2);
}

static void part_end(struct client_state *s)
{
	buf_printf(&s->body, "--%s--\r\n", s->boundary);
}

/* The request line and headers into s->req, then s->body. ctype NULL:
 * no body. clen NULL: the body's own length. */
static void finish(struct client_state *s, const char *method, const char *path,
                   const char *ctype, const char *clen)
{
	snprintf(s->desc, sizeof s->desc, "%s %s", method, path);
	buf_printf(&s->req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", method, path, s->m->port);
	if (s->m->auth)
		buf_printf(&s->req, "Authorization: %s\r\n", s->m->auth);
	if (ctype) {
		buf_printf(&s->req, "Content-Type: %s\r\n", ctype);
		if (clen)
			buf_printf(&s->req, "Content-Length: %s\r\n", clen);
		else
			buf_printf(&s->req, "Content-Length: %zu\r\n", s->body.len);
	}
	buf_add(&s->req, "\r\n", 2);
	if (ctype && !clen)
		buf_add(&s->req, s->body.p ? s->body.p : "", s->body.len);
}

static int pool_pop(soak_mix *m, int64_t *id)
{
	int ok = 0;
	pthread_mutex_lock(&m->mu);
	if (m->pool_len > 0) {
		*id = m->pool[m->pool_head];
		m->pool_head = (m->pool_head + 1) % SOAK_POOL;
		m->pool_len--;
		ok = 1;
	}
	pthread_mutex_unlock(&m->mu);
	return ok;
}

static void pool_push(soak_mix *m, int64_t id)
{
	pthread_mutex_lock(&m->mu);
	if (m->pool_len == SOAK_POOL) { /* forget the oldest: it stays in the store */
		m->pool_head = (m->pool_head + 1) % SOAK_POOL;
		m->pool_len--;
		m->pool_dropped++;
	}
	m->pool[(m->pool_head + m->pool_len) % SOAK_POOL] = id;
	m->pool_len++;
	pthread_mutex_unlock(&m->mu);
}

static int draw(struct client_state *s)
{
	int r = (int)(bs_splitmix(&s->rng) % 1000);
	for (int k = 0; k < SK_NKINDS; k++) {
		if (r < soak_kinds[k].weight)
			return k;
		r -= soak_kinds[k].weight;
	}
	return SK_STATS;
}

/* Builds the request of kind *kind (a DELETE with nothing to delete
 * becomes a stats request). -1 when out of memory. */
static int build(struct client_state *s, int *kind)
{
	unsigned char *png = NULL;
	size_t plen = 0;
	char path[192], *esc = NULL;
	const char *text = texts[bs_splitmix(&s->rng) % NTEXTS];
	buf_reset(&s->body);
	buf_reset(&s->req);
	snprintf(s->boundary, sizeof s->boundary, "soak-%016llx",
	         (unsigned long long)bs_splitmix(&s->rng));
	if (*kind == SK_DELETE && !pool_pop(s->m, &s->deleting))
		*kind = SK_STATS;
	switch (*kind) {
	case SK_SEARCH_POST: {
		json_t *j = json_pack("{s:s,s:i}", "text", text, "k", K);
		esc = json_dumps(j, JSON_COMPACT);
		json_decref(j);
		if (!esc)
			return -1;
		buf_add(&s->body, esc, strlen(esc));
		finish(s, "POST", "/v1/search", "application/json", NULL);
		break;
	}
	case SK_SEARCH_GET: {
		char q[128];
		size_t o = 0;
		for (const char *p = text; *p && o + 1 < sizeof q; p++)
			q[o++] = *p == ' ' ? '+' : *p;
		q[o] = '\0';
		snprintf(path, sizeof path, "/v1/search?q=%s&k=%d", q, K);
		finish(s, "GET", path, NULL, NULL);
		break;
	}
	case SK_SEARCH_B64:
	case SK_TRUNC_SEARCH:
		if (new_png(s, &png, &plen))
			return -1;
		buf_add(&s->body, "{\"k\": 10, \"image_b64\": \"", 24);
		b64(&s->body, png, *kind == SK_TRUNC_SEARCH ? plen / 2 : plen);
		buf_add(&s->body, "\"}", 2);
		finish(s, "POST", "/v1/search", "application/json", NULL);
		break;
	case SK_SEARCH_FORM:
	case SK_TRUNC_FORM:
		if (new_png(s, &png, &plen))
			return -1;
		part_field(s, "k", "10");
		part_file(s, "image", "query.png", png, *kind == SK_TRUNC_FORM ? 20 : plen);
		part_end(s);
		goto multipart;
	case SK_UPLOAD: {
		char meta[96];
		if (new_png(s, &png, &plen))
			return -1;
		snprintf(meta, sizeof meta, "{\"soak\": true, \"client\": %d}", s->cl->id);
		part_file(s, "image", "soak.png", png, plen);
		part_field(s, "meta", meta);
		part_end(s);
		snprintf(path, sizeof path, "/v1/images");
		goto multipart;
	}
	case SK_UPLOAD_RAW:
	case SK_UPLOAD_BROKEN:
		if (new_png(s, &png, &plen))
			return -1;
		/* Broken: cut in the middle of the pixel data, after the header
		 * (33 bytes: signature and IHDR), so it is accepted, and distinct
		 * as the noise is. Decoding fails in the worker. */
		buf_add(&s->body, png, *kind == SK_UPLOAD_RAW ? plen : 33 + (plen - 33) / 2);
		finish(s, "POST", "/v1/images?filename=soak.png", "image/png", NULL);
		break;
	case SK_NOT_IMAGE:
		buf_printf(&s->body, "this is text, not a PNG (%llu)\n",
		           (unsigned long long)bs_splitmix(&s->rng));
		finish(s, "POST", "/v1/images?filename=text.png", "image/png", NULL);
		break;
	case SK_BULK:
		for (int i = 0; i < s->m->bulk_files; i++) {
			char name[32];
			free(png);
			if (new_png(s, &png, &plen))
				return -1;
			snprintf(name, sizeof name, "bulk-%d.png", i);
			part_file(s, "file", name, png, plen);
		}
		part_end(s);
		snprintf(path, sizeof path, "/v1/ingest");
		goto multipart;
	case SK_DELETE:
		snprintf(path, sizeof path, "/v1/images/%lld", (long long)s->deleting);
		finish(s, "DELETE", path, NULL, NULL);
		break;
	case SK_STATS:
		finish(s, "GET", "/v1/stats", NULL, NULL);
		break;
	case SK_BAD_JSON: {
		const char *b = bad_json[bs_splitmix(&s->rng) % NBAD];
		buf_add(&s->body, b, strlen(b));
		finish(s, "POST", "/v1/search", "application/json", NULL);
		break;
	}
	case SK_BAD_FORM:
		buf_printf(&s->body, "this is not multipart, and there is no --%s-- in it\r\n", "boundary");
		snprintf(path, sizeof path, "/v1/ingest");
		goto multipart;
	case SK_BIG_DECLARED:
		finish(s, "POST", "/v1/images", "image/png", BIG_DECLARED);
		break;
	case SK_BIG_BODY: {
		size_t n = (size_t)s->m->max_body + 65536;
		buf_add(&s->body, "{\"text\": \"", 10);
		while (s->body.len < n - 2 && !s->body.oom) {
			char chunk[4096];
			size_t k = n - 2 - s->body.len < sizeof chunk ? n - 2 - s->body.len : sizeof chunk;
			memset(chunk, 'a', k);
			buf_add(&s->body, chunk, k);
		}
		buf_add(&s->body, "\"}", 2);
		finish(s, "POST", "/v1/search", "application/json", NULL);
		break;
	}
	}
	free(png);
	free(esc);
	return s->req.oom || s->body.oom ? -1 : 0;
multipart: {
	char ctype[96];
	snprintf(ctype, sizeof ctype, "multipart/form-data; boundary=%s", s->boundary);
	if (*kind == SK_SEARCH_FORM || *kind == SK_TRUNC_FORM)
		snprintf(path, sizeof path, "/v1/search");
	finish(s, "POST", path, ctype, NULL);
	free(png);
	return s->req.oom || s->body.oom ? -1 : 0;
}
}

/* Is the body what a reply of this status should carry? For 2xx, the
 * kind's JSON; else clipd's error object. *j is the parsed body. */
static int body_ok(int kind, int status, const char *body, size_t len, json_t **j)
{
	*j = json_loadb(body, len, 0, NULL);
	if (!json_is_object(*j))
		return 0;
	if (status >= 300) {
		json_t *e = json_object_get(*j, "error");
		return json_is_string(json_object_get(e, "code")) &&
		       json_is_string(json_object_get(e, "message"));
	}
	switch (kind) {
	case SK_SEARCH_POST:
	case SK_SEARCH_GET:
	case SK_SEARCH_B64:
	case SK_SEARCH_FORM:
		return json_is_array(json_object_get(*j, "results"));
	case SK_UPLOAD:
	case SK_UPLOAD_RAW:
	case SK_UPLOAD_BROKEN:
		return json_integer_value(json_object_get(*j, "id")) > 0;
	case SK_BULK:
		return json_is_array(json_object_get(*j, "items"));
	case SK_DELETE:
		return json_is_true(json_object_get(*j, "deleted"));
	case SK_STATS:
		return json_is_object(json_object_get(*j, "images"));
	}
	return 1;
}

/* The ids a 2xx made deletable; 0 when the answer is inconsistent (a bulk
 * that did not take every file). */
static int take_ids(soak_mix *m, int kind, json_t *j)
{
	if (kind == SK_UPLOAD || kind == SK_UPLOAD_RAW || kind == SK_UPLOAD_BROKEN) {
		if (json_is_true(json_object_get(j, "duplicate")))
			return 0;
		pool_push(m, json_integer_value(json_object_get(j, "id")));
	} else if (kind == SK_BULK) {
		size_t i;
		json_t *it;
		if (json_integer_value(json_object_get(j, "accepted")) != m->bulk_files)
			return 0;
		json_array_foreach(json_object_get(j, "items"), i, it) {
			const char *st = json_string_value(json_object_get(it, "status"));
			if (st && !strcmp(st, "pending"))
				pool_push(m, json_integer_value(json_object_get(it, "id")));
		}
	}
	return 1;
}

/* Printable, one line. */
static void snippet(char *dst, size_t size, const char *src, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 1 < size; i++) {
		unsigned char ch = (unsigned char)src[i];
		dst[o++] = ch >= 32 && ch < 127 ? (char)ch : '.';
	}
	dst[o] = '\0';
}

static void note_bad(struct client_state *s, int kind, double t, int status, const char *reply,
                     size_t len)
{
	soak_stats *st = &s->cl->st;
	st->unexpected[kind]++;
	atomic_fetch_add(&s->m->unexpected, 1);
	soak_bad *b = &st->bad[kind];
	if (b->seen)
		return;
	b->seen = 1;
	b->t = t - s->m->t0;
	b->status = status;
	char shown[64] = "";
	if (s->body.len && s->body.len <= 48)
		snippet(shown, sizeof shown, s->body.p, s->body.len);
	snprintf(b->request, sizeof b->request, "%s, %zu body bytes%s%s", s->desc, s->body.len,
	         shown[0] ? ": " : "", shown);
	snippet(b->reply, sizeof b->reply, reply ? reply : "", reply ? len : 0);
}

static void add_latency(soak_stats *st, int kind, double sec)
{
	if (st->nlat[kind] == st->cap[kind]) {
		size_t nc = st->cap[kind] ? st->cap[kind] * 2 : 256;
		double *p = realloc(st->lat[kind], nc * sizeof *p);
		if (!p)
			return;
		st->lat[kind] = p;
		st->cap[kind] = nc;
	}
	st->lat[kind][st->nlat[kind]++] = sec;
}

static void pause_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

void *soak_client_main(void *arg)
{
	soak_client *cl = arg;
	struct client_state s = {.cl = cl, .m = cl->mix};
	soak_mix *m = cl->mix;
	soak_stats *st = &cl->st;
	bs_conn *c = NULL;
	char msg[256];
	s.rng = m->nonce ^ ((uint64_t)(cl->id + 1) * 0xd1b54a32d192ed03ull);
	for (int once = 0; !bs_interrupted && !atomic_load(&m->stop); once++) {
		if (cl->only >= 0 ? once > 0 : bs_now() >= m->t_end)
			break;
		int kind = cl->only >= 0 ? cl->only : draw(&s);
		if (build(&s, &kind)) {
			note_bad(&s, kind, bs_now(), 0, "soak: out of memory", 19);
			break;
		}
		double t0 = bs_now();
		int status = 0, rc = -1;
		const char *reply = NULL;
		size_t rlen = 0;
		if (!c && (c = bs_conn_open(m->port, msg, sizeof msg)))
			bs_conn_set_timeout(c, m->request_timeout);
		if (c)
			rc = bs_request_raw(c, s.req.p, s.req.len, &status, &reply, &rlen, msg, sizeof msg);
		double t1 = bs_now();
		atomic_fetch_add(&m->done, 1);
		if (rc) {
			st->count[kind][0]++;
			note_bad(&s, kind, t1, 0, msg, strlen(msg));
			if (kind == SK_DELETE)
				pool_push(m, s.deleting); /* may still be there */
			/* Never spin on a daemon that does not answer. */
			pause_s(c ? 0.01 : 0.1);
			continue;
		}
		st->count[kind][status > 0 && status < SOAK_NSTATUS ? status : 0]++;
		if (t0 >= m->t_warm)
			add_latency(st, kind, t1 - t0);
		json_t *j = NULL;
		int good = body_ok(kind, status, reply, rlen, &j);
		if (status == 503 && bs_conn_retry_after(c) && good) {
			st->deliberate[kind]++;
		} else if (soak_kinds[kind].hostile ? status < 400 || status > 499
		                                    : status != soak_kinds[kind].expect) {
			note_bad(&s, kind, t1, status, reply, rlen);
		} else if (!good) {
			note_bad(&s, kind, t1, status, reply, rlen);
		} else if (status < 300 && !take_ids(m, kind, j)) {
			note_bad(&s, kind, t1, status, reply, rlen);
		}
		json_decref(j);
	}
	bs_conn_close(c);
	free(s.body.p);
	free(s.req.p);
	return NULL;
}

/* ---- shared state and results -------------------------------------------- */

void soak_mix_init(soak_mix *m, int port, const char *auth, int64_t max_body, double timeout,
                   uint64_t nonce, int bulk_files)
{
	memset(m, 0, sizeof *m);
	m->port = port;
	m->auth = auth;
	m->max_body = max_body;
	m->request_timeout = timeout;
	m->nonce = nonce;
	m->bulk_files = bulk_files;
	m->t_warm = m->t_end = 1e300;
	atomic_init(&m->next_image, 0);
	atomic_init(&m->done, 0);
	atomic_init(&m->unexpected, 0);
	atomic_init(&m->stop, 0);
	pthread_mutex_init(&m->mu, NULL);
}

void soak_mix_destroy(soak_mix *m)
{
	pthread_mutex_destroy(&m->mu);
}

void soak_stats_free(soak_stats *st)
{
	for (int k = 0; k < SK_NKINDS; k++) {
		free(st->lat[k]);
		st->lat[k] = NULL;
		st->nlat[k] = st->cap[k] = 0;
	}
}

int soak_stats_merge(soak_stats *dst, const soak_stats *src)
{
	for (int k = 0; k < SK_NKINDS; k++) {
		for (int s = 0; s < SOAK_NSTATUS; s++)
			dst->count[k][s] += src->count[k][s];
		dst->deliberate[k] += src->deliberate[k];
		dst->unexpected[k] += src->unexpected[k];
		if (src->bad[k].seen && (!dst->bad[k].seen || src->bad[k].t < dst->bad[k].t))
			dst->bad[k] = src->bad[k];
		if (!src->nlat[k])
			continue;
		size_t n = dst->nlat[k] + src->nlat[k];
		if (n > dst->cap[k]) {
			double *p = realloc(dst->lat[k], n * sizeof *p);
			if (!p)
				return -1;
			dst->lat[k] = p;
			dst->cap[k] = n;
		}
		memcpy(dst->lat[k] + dst->nlat[k], src->lat[k], src->nlat[k] * sizeof *src->lat[k]);
		dst->nlat[k] = n;
	}
	return 0;
}
