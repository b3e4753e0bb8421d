/*
 * fuzz_daemon.c: the in-process daemon of the HTTP harnesses (see
 * fuzz_daemon.h). Start-up follows server/main.c step by step, without
 * the signal wait and the watcher (no --watch directory is given).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <glib.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "app.h"
#include "clock.h"
#include "space.h"
#include "config.h"
#include "fuzz_daemon.h"
#include "fuzz_util.h"
#include "http.h"
#include "log.h"
#include "routes.h"
#include "worker.h"

/* The longest a reply may take: the harness caps ?wait=true at 5 s. */
#define REPLY_TIMEOUT_MS 60000
#define HEALTH_EVERY 16
#define FD_EVERY 64
#define FD_SLACK 32

static struct {
	int started;
	char tmp[4096], data[4200], root[4200];
	config cfg;
	app a;
	http_server *http;
	int port;
	unsigned sent;
	int fd_base;
	int conn_base;         /* threads named MHD-connection that stay */
} d;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void stop_daemon(void)
{
	api_err ae;
	if (!d.started)
		return;
	atomic_store(&d.a.stopping, 1);
	http_stop(d.http, 5000);
	worker_pool_stop(d.a.workers);
	if (d.a.sp && d.a.sp->coll)
		coll_save(d.a.sp->coll, &ae);
	space_close(d.a.sp);
	blobs_close(d.a.blobs);
	store_close(d.a.st);
	pthread_mutex_destroy(&d.a.space_mu);
	pthread_cond_destroy(&d.a.space_cv);
	config_free(&d.cfg);
	nftw(d.tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	d.started = 0;
}

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "fuzz_daemon: %s: %s\n", what, msg);
	abort();
}

/* Threads of libmicrohttpd's connections still alive (it names them). */
static int connection_threads(void)
{
	int n = 0;
	char path[300], comm[32];
	DIR *dir = opendir("/proc/self/task");
	FUZZ_CHECK(dir != NULL);
	for (struct dirent *e; (e = readdir(dir));) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue; /* it has just exited */
		if (fgets(comm, sizeof comm, f) && !strncmp(comm, "MHD-connection", 14))
			n++;
		fclose(f);
	}
	closedir(dir);
	return n;
}

/* Until the connection threads of the last request have exited (at most
 * two seconds). A thread's own state (the model's oneDNN stream and
 * buffers, a GLib block) is freed by its thread-specific destructors as
 * it exits; LeakSanitizer, which libFuzzer runs after each input, stops
 * scanning a thread before those destructors have run, so a check in that
 * window reported the state as leaked (fuzz_http and fuzz_multipart, in
 * the 10-minute campaign; never on replay, and 6,000 connections each
 * encoding a query left the daemon's RSS flat). The base is how many
 * threads of that name stay (see below). */
static void wait_connection_threads(void)
{
	int n = 0;
	for (int i = 0; i < 1000; i++) {
		if ((n = connection_threads()) <= d.conn_base) {
			d.conn_base = n; /* a thread that stayed has gone */
			return;
		}
		usleep(2000);
	}
	/* Threads that stay carry the name too: a thread inherits its
	 * creator's, and OpenMP's pool (FAISS) and the model's helper thread
	 * start from whichever connection first needs them. From now on they
	 * are the base. */
	d.conn_base = n;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
		die("cannot write", path);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* One PNG chunk at p: length, type, data, CRC; returns its size. */
static size_t png_chunk(unsigned char *p, const char *type, const unsigned char *data, size_t n)
{
	put_be32(p, (uint32_t)n);
	memcpy(p + 4, type, 4);
	if (n)
		memcpy(p + 8, data, n);
	put_be32(p + 8 + n, (uint32_t)crc32(crc32(0, NULL, 0), p + 4, (uInt)(n + 4)));
	return 12 + n;
}

const unsigned char *fuzz_png(int w, int h, unsigned seed, size_t *len)
{
	static unsigned char png[65536];
	unsigned char raw[16384], z[16384 + 1024], ihdr[13];
	size_t nraw = 0;
	FUZZ_CHECK(w > 0 && h > 0 && (size_t)h * (1 + 3 * (size_t)w) <= sizeof raw);
	for (int y = 0; y < h; y++) {
		raw[nraw++] = 0;
		for (int x = 0; x < 3 * w; x++) {
			seed = seed * 1103515245u + 12345u;
			raw[nraw++] = (unsigned char)(seed >> 16);
		}
	}
	uLongf zlen = sizeof z;
	FUZZ_CHECK(compress(z, &zlen, raw, nraw) == Z_OK);
	put_be32(ihdr, (uint32_t)w);
	put_be32(ihdr + 4, (uint32_t)h);
	memcpy(ihdr + 8, "\x08\x02\x00\x00\x00", 5);
	size_t o = 8;
	memcpy(png, "\x89PNG\r\n\x1a\n", 8);
	o += png_chunk(png + o, "IHDR", ihdr, sizeof ihdr);
	o += png_chunk(png + o, "IDAT", z, zlen);
	o += png_chunk(png + o, "IEND", NULL, 0);
	*len = o;
	return png;
}

void fuzz_url_encode(char *dst, size_t size, const unsigned char *s, size_t n, const char *keep)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = strlen(dst);
	for (size_t i = 0; i < n && o + 4 < size; i++) {
		unsigned char c = s[i];
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    (c && strchr("._~-", c)) || (c && keep && strchr(keep, c))) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '%';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = 0;
}

/* ---- one exchange ---------------------------------------------------------- */

typedef struct reply {
	char *buf;          /* the whole response, NUL-terminated */
	size_t len;
	int status;
	const char *body;
	size_t body_len;
	char ctype[128];
} reply;

static void fail(const char *why, const char *req, size_t req_len, const reply *rp)
{
	fprintf(stderr, "fuzz_daemon: %s\n--- request (%zu bytes, first 2000) ---\n%.*s\n"
	                "--- reply (%zu bytes, first 2000) ---\n%.*s\n---\n",
	        why, req_len, (int)(req_len < 2000 ? req_len : 2000), req, rp ? rp->len : 0,
	        rp ? (int)(rp->len < 2000 ? rp->len : 2000) : 0, rp ? rp->buf : "");
	abort();
}

/* Sends req[len] on a new connection and reads until the server closes it. */
static void exchange(const char *req, size_t len, reply *rp)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d.port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FUZZ_CHECK(s >= 0);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
		fail("cannot connect to the daemon", req, len, NULL);
	size_t cap = 1 << 16;
	memset(rp, 0, sizeof *rp);
	rp->buf = malloc(cap);
	FUZZ_CHECK(rp->buf != NULL);
	size_t off = 0;
	int writing = 1;
	for (;;) {
		struct pollfd p = {.fd = s, .events = POLLIN | (writing ? POLLOUT : 0)};
		int n = poll(&p, 1, REPLY_TIMEOUT_MS);
		if (n == 0)
			fail("no complete reply within 60 s", req, len, rp);
		if (n < 0) {
			FUZZ_CHECK(errno == EINTR);
			continue;
		}
		if (writing && (p.revents & POLLOUT)) {
			ssize_t w = send(s, req + off, len - off, MSG_NOSIGNAL);
			if (w < 0 && errno != EINTR && errno != EAGAIN)
				writing = 0; /* the server may reply early and close */
			else if (w > 0 && (off += (size_t)w) == len)
				writing = 0;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			if (cap - rp->len < 4096) {
				cap *= 2;
				rp->buf = realloc(rp->buf, cap);
				FUZZ_CHECK(rp->buf != NULL);
			}
			ssize_t r = recv(s, rp->buf + rp->len, cap - rp->len - 1, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			rp->len += (size_t)r;
		}
	}
	close(s);
	rp->buf[rp->len] = 0;
}

/* Parses the status line and headers; 0 when the reply is complete. */
static int parse_reply(reply *rp)
{
	char *b = rp->buf;
	if (rp->len < 12 || (strncmp(b, "HTTP/1.1 ", 9) && strncmp(b, "HTTP/1.0 ", 9)))
		return -1;
	rp->status = atoi(b + 9);
	char *end = strstr(b, "\r\n\r\n");
	if (!end)
		return -1;
	rp->body = end + 4;
	rp->body_len = rp->len - (size_t)(rp->body - b);
	long long clen = -1;
	for (char *line = strstr(b, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
		if (!strncasecmp(line, "Content-Length:", 15))
			clen = atoll(line + 15);
		else if (!strncasecmp(line, "Content-Type:", 13))
			snprintf(rp->ctype, sizeof rp->ctype, "%.*s", (int)strcspn(line + 13, "\r"),
			         line + 13 + strspn(line + 13, " "));
	}
	return clen >= 0 && (size_t)clen == rp->body_len ? 0 : -1;
}

/* The reply's checks (see fuzz_daemon.h); returns the JSON body (a new
 * reference) or NULL for bytes. */
static json_t *check_reply(const char *req, size_t len, reply *rp, int binary_ok)
{
	if (parse_reply(rp) != 0)
		fail("not a complete HTTP response", req, len, rp);
	if (binary_ok && rp->status >= 200 && rp->status < 300 &&
	    strncmp(rp->ctype, "application/json", 16) != 0)
		return NULL;
	json_error_t je;
	json_t *j = json_loadb(rp->body, rp->body_len, 0, &je);
	if (!json_is_object(j))
		fail("the body is not a JSON object", req, len, rp);
	if (strncmp(rp->ctype, "application/json", 16) != 0)
		fail("JSON without Content-Type: application/json", req, len, rp);
	const char *code = NULL;
	if (rp->status >= 400) {
		json_t *e = json_object_get(j, "error");
		code = json_string_value(json_object_get(e, "code"));
		if (!code || !json_is_string(json_object_get(e, "message")))
			fail("an error without error.code and error.message", req, len, rp);
	}
	int deliberate = rp->status == 503 && code &&
	                 (!strcmp(code, "queue_full") || !strcmp(code, "unavailable") ||
	                  !strcmp(code, "busy"));
	if (rp->status >= 500 && !deliberate)
		fail("a 5xx reply", req, len, rp);
	if (rp->status < 200)
		fail("an informational status as the final reply", req, len, rp);
	return j;
}

static json_t *send_raw(const char *req, size_t len, int binary_ok, int *status)
{
	reply rp;
	exchange(req, len, &rp);
	json_t *j = check_reply(req, len, &rp, binary_ok);
	*status = rp.status;
	free(rp.buf);
	return j;
}

static void check_health(void)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
	reply rp;
	exchange(req, sizeof req - 1, &rp);
	if (parse_reply(&rp) != 0 || rp.status != 200)
		fail("the daemon no longer answers /healthz with 200", req, sizeof req - 1, &rp);
	free(rp.buf);
}

void fuzz_daemon_send(const char *head, const void *body, size_t body_len, int binary_ok)
{
	int status;
	json_decref(fuzz_daemon_send_json(head, body, body_len, binary_ok, &status));
}

json_t *fuzz_daemon_send_json(const char *head, const void *body, size_t body_len, int binary_ok,
                              int *status)
{
	size_t hl = strlen(head);
	char *req = malloc(hl + 128 + body_len);
	FUZZ_CHECK(req != NULL);
	int n = snprintf(req, hl + 128, "%s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
	                 head, body_len);
	if (body_len)
		memcpy(req + n, body, body_len);
	json_t *j = send_raw(req, (size_t)n + body_len, binary_ok, status);
	free(req);
	wait_connection_threads();
	d.sent++;
	if (d.sent % HEALTH_EVERY == 0)
		check_health();
	if (d.sent % FD_EVERY == 0) {
		/* Connection threads close their sockets just after the reply:
		 * let them, then compare with what was open after start-up. */
		int fds = fuzz_count_fds();
		for (int i = 0; i < 50 && fds > d.fd_base + FD_SLACK; i++) {
			usleep(20000);
			fds = fuzz_count_fds();
		}
		if (fds > d.fd_base + FD_SLACK) {
			fprintf(stderr, "fuzz_daemon: %d descriptors open, %d after start-up\n", fds,
			        d.fd_base);
			abort();
		}
	}
	return j;
}

/* ---- start-up ----------------------------------------------------------- */

/* An upload and two texts, so that ids 1 and 2 name something. */
static void seed_data(void)
{
	size_t n;
	const unsigned char *png = fuzz_png(8, 8, 1, &n);
	char head[256];
	snprintf(head, sizeof head,
	         "POST /v1/images?wait=true&filename=seed.png HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	         "Authorization: Bearer %s\r\nContent-Type: image/png", FUZZ_KEY);
	fuzz_daemon_send(head, png, n, 0);
	static const char texts[] = "{\"texts\": [\"a photo of a cat\", \"a red car\"]}";
	snprintf(head, sizeof head,
	         "POST /v1/texts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
	         "Content-Type: application/json", FUZZ_KEY);
	fuzz_daemon_send(head, texts, sizeof texts - 1, 0);
}

void fuzz_daemon_start(void)
{
	char model[4200], path[4300], msg[512];
	store_err se;
	api_err ae;
	if (d.started)
		return;
	signal(SIGPIPE, SIG_IGN);
	const char *tmpdir = getenv("TMPDIR");
	snprintf(d.tmp, sizeof d.tmp, "%s/clipd-fuzz-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (!mkdtemp(d.tmp))
		die("mkdtemp", strerror(errno));
	snprintf(d.data, sizeof d.data, "%s/data", d.tmp);
	snprintf(d.root, sizeof d.root, "%s/root", d.tmp);
	snprintf(model, sizeof model, "%s/tiny-clip-a", fuzz_reference());
	if (mkdir(d.root, 0755) != 0)
		die("mkdir", d.root);
	for (int i = 0; i < 2; i++) {
		size_t n;
		const unsigned char *png = fuzz_png(6 + i, 5, 7u + (unsigned)i, &n);
		snprintf(path, sizeof path, "%s/p%d.png", d.root, i);
		write_file(path, png, n);
	}

	char *argv[] = {"clipd", "--model", model, "--data", d.data, "--listen", "127.0.0.1:0",
	                "--allow-root", d.root, "--api-key", FUZZ_KEY, "--workers", "1",
	                "--encoders", "1", "--precision", "f32", "--log-level", "error", NULL};
	if (config_parse(&d.cfg, (int)(sizeof argv / sizeof *argv) - 1, argv, stdout, msg,
	                 sizeof msg) != 0)
		die("config", msg);
	d.cfg.wait_max_s = 5;
	log_set_level(d.cfg.log_level);

	memset(&d.a, 0, sizeof d.a);
	pthread_mutex_init(&d.a.space_mu, NULL);
	pthread_cond_init(&d.a.space_cv, NULL);
	d.a.cfg = &d.cfg;
	d.a.started_ms = clock_ms();
	atomic_init(&d.a.stopping, 0);
	const char *secrets[] = {d.cfg.data_dir, d.cfg.model_dir};
	api_err_set_secrets(secrets, 2);
	snprintf(path, sizeof path, "%s/index", d.cfg.data_dir);
	if (g_mkdir_with_parents(path, 0755) != 0)
		die("mkdir", path);
	snprintf(path, sizeof path, "%s/clipd.db", d.cfg.data_dir);
	if (store_open(path, 0, &d.a.st, &se) != STORE_OK)
		die("store", se.msg);
	if (space_load(d.cfg.model_dir, d.cfg.precision, &d.a.sp, &ae))
		die("model", ae.msg);
	d.a.limits.max_pixels = d.cfg.max_pixels;
	d.a.limits.fast_decode = d.cfg.fast_decode;
	slots_init(&d.a.decodes, d.cfg.max_decodes);
	char dim[16];
	snprintf(dim, sizeof dim, "%d", d.a.sp->dim);
	if (store_kv_set(d.a.st, "model.id", d.a.sp->model_id, &se) != STORE_OK ||
	    store_kv_set(d.a.st, "model.dir", d.a.sp->model_dir, &se) != STORE_OK ||
	    store_kv_set(d.a.st, "model.dim", dim, &se) != STORE_OK)
		die("store", se.msg);
	clip_set_threads(1);
	snprintf(path, sizeof path, "%s/index", d.cfg.data_dir);
	coll_index_opts io = {d.cfg.index_factory, (size_t)d.cfg.index_auto_at, d.cfg.index_nprobe,
	                      d.cfg.index_refine};
	if (space_open_index(d.a.sp, d.a.st, path, &io, &ae))
		die("indexes", ae.msg);
	snprintf(path, sizeof path, "%s/blobs", d.cfg.data_dir);
	if (blobs_open(path, &d.a.blobs, &ae))
		die("blobs", ae.msg);
	if (space_open_encoders(d.a.sp, d.cfg.encoders, d.cfg.batch, &ae))
		die("encoders", ae.msg);
	if (worker_pool_start(&d.a, d.a.sp, d.cfg.workers, d.cfg.batch, &d.a.workers, &ae))
		die("workers", ae.msg);
	if (http_start(&d.a, &d.http, &ae))
		die("http", ae.msg);
	d.port = http_port(d.http);
	d.started = 1;
	atexit(stop_daemon);
	seed_data();
	d.fd_base = fuzz_count_fds();
	d.conn_base = connection_threads();
}
