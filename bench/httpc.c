/*
 * bench/httpc.c: a keep-alive HTTP/1.1 client on plain sockets, just
 * enough for clipd: Content-Length and chunked responses, "Connection:
 * close", and one reconnect when the server dropped an idle connection.
 * Requests are built here (bs_request) or by the caller, whole
 * (bs_request_raw, for headers of its own and requests that lie).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "server_int.h"

struct bs_conn {
	int fd;          /* -1 when not connected */
	int port;
	char *in;        /* received bytes [0, in_len), consumed from in_off */
	size_t in_len, in_off, in_cap;
	char *req;       /* the request being sent */
	size_t req_cap;
	char *body;      /* the last response body, NUL-terminated */
	size_t body_len, body_cap;
	int retry_after; /* the last response had a Retry-After header */
	double timeout;  /* seconds per send or receive, 0: none */
};

static void set_timeout(int fd, double s)
{
	struct timeval tv = {(time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6)};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int conn_connect(bs_conn *c, char *msg, size_t msg_size)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bs_fail(msg, msg_size, "socket: %s", strerror(errno));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (c->timeout > 0)
		set_timeout(fd, c->timeout);
	while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		if (errno == EINTR && !bs_interrupted)
			continue;
		int e = errno;
		close(fd);
		return bs_fail(msg, msg_size, "connect to 127.0.0.1:%d: %s", c->port, strerror(e));
	}
	c->fd = fd;
	c->in_len = c->in_off = 0;
	return 0;
}

static void conn_drop(bs_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->in_len = c->in_off = 0;
}

bs_conn *bs_conn_open(int port, char *msg, size_t msg_size)
{
	bs_conn *c = calloc(1, sizeof *c);
	if (!c) {
		bs_fail(msg, msg_size, "out of memory");
		return NULL;
	}
	c->fd = -1;
	c->port = port;
	if (conn_connect(c, msg, msg_size)) {
		free(c);
		return NULL;
	}
	return c;
}

void bs_conn_set_timeout(bs_conn *c, double seconds)
{
	c->timeout = seconds;
	if (c->fd >= 0 && seconds > 0)
		set_timeout(c->fd, seconds);
}

int bs_conn_retry_after(const bs_conn *c)
{
	return c->retry_after;
}

void bs_conn_close(bs_conn *c)
{
	if (!c)
		return;
	conn_drop(c);
	free(c->in);
	free(c->req);
	free(c->body);
	free(c);
}

static int grow(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 4096;
	while (nc < need)
		nc *= 2;
	char *p = realloc(*buf, nc);
	if (!p)
		return -1;
	*buf = p;
	*cap = nc;
	return 0;
}

/* Receives more bytes. 1 on data, 0 on end of stream, -1 on error. */
static int fill(bs_conn *c)
{
	if (c->in_off > 0 && c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	if (grow(&c->in, &c->in_cap, c->in_len + 65536))
		return -1;
	for (;;) {
		ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n > 0) {
			c->in_len += (size_t)n;
			return 1;
		}
		if (n == 0)
			return 0;
		if (errno != EINTR || bs_interrupted)
			return -1;
	}
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR && !bs_interrupted)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The unread bytes up to and including the next CRLF, as a line without
 * it; NULL until a whole line is buffered. */
static char *next_line(bs_conn *c)
{
	char *start = c->in + c->in_off;
	char *end = memmem(start, c->in_len - c->in_off, "\r\n", 2);
	if (!end)
		return NULL;
	*end = '\0';
	c->in_off = (size_t)(end + 2 - c->in);
	return start;
}

/* Appends n unread bytes to the body, receiving as needed. */
static int take_body(bs_conn *c, size_t n)
{
	if (grow(&c->body, &c->body_cap, c->body_len + n + 1))
		return -1;
	while (n > 0) {
		if (c->in_off == c->in_len && fill(c) <= 0)
			return -1;
		size_t have = c->in_len - c->in_off;
		size_t k = have < n ? have : n;
		memcpy(c->body + c->body_len, c->in + c->in_off, k);
		c->body_len += k;
		c->in_off += k;
		n -= k;
	}
	return 0;
}

/* A line, receiving until one is complete. */
static char *read_line(bs_conn *c, int *eof_first)
{
	char *line;
	int first = c->in_off == c->in_len;
	while (!(line = next_line(c))) {
		int r = fill(c);
		if (r <= 0) {
			if (eof_first)
				*eof_first = first && r == 0;
			return NULL;
		}
		first = 0;
	}
	return line;
}

/* Reads one response. -2 when the server had closed the connection before
 * answering anything (a stale keep-alive connection: retry). */
static int read_response(bs_conn *c, int *status, int *keep, char *msg, size_t msg_size)
{
	int eof_first = 0;
	char *line = read_line(c, &eof_first);
	if (!line)
		return eof_first ? -2 : bs_fail(msg, msg_size, "connection lost before the status line");
	int minor = 1;
	if (sscanf(line, "HTTP/1.%d %d", &minor, status) != 2)
		return bs_fail(msg, msg_size, "bad status line");
	*keep = minor >= 1;
	c->retry_after = 0;
	long long clen = -1;
	int chunked = 0;
	while ((line = read_line(c, NULL)) && *line) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = '\0';
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		if (!strcasecmp(line, "Content-Length"))
			clen = atoll(v);
		else if (!strcasecmp(line, "Transfer-Encoding") && strcasestr(v, "chunked"))
			chunked = 1;
		else if (!strcasecmp(line, "Connection"))
			*keep = strcasestr(v, "close") ? 0 : strcasestr(v, "keep-alive") ? 1 : *keep;
		else if (!strcasecmp(line, "Retry-After"))
			c->retry_after = 1;
	}
	if (!line)
		return bs_fail(msg, msg_size, "connection lost in the headers");
	c->body_len = 0;
	if (chunked) {
		for (;;) {
			if (!(line = read_line(c, NULL)))
				return bs_fail(msg, msg_size, "connection lost in a chunk");
			size_t n = (size_t)strtoull(line, NULL, 16);
			if (n == 0)
				break;
			if (take_body(c, n) || !read_line(c, NULL))
				return bs_fail(msg, msg_size, "connection lost in a chunk");
		}
		while ((line = read_line(c, NULL)) && *line)
			; /* trailers */
	} else if (clen >= 0) {
		if (take_body(c, (size_t)clen))
			return bs_fail(msg, msg_size, "connection lost in the body");
	} else {
		/* Neither: the body runs to the end of the stream. */
		for (;;) {
			if (take_body(c, c->in_len - c->in_off))
				return bs_fail(msg, msg_size, "out of memory");
			int r = fill(c);
			if (r < 0)
				return bs_fail(msg, msg_size, "connection lost in the body");
			if (r == 0)
				break;
		}
		*keep = 0;
	}
	if (grow(&c->body, &c->body_cap, c->body_len + 1))
		return bs_fail(msg, msg_size, "out of memory");
	c->body[c->body_len] = '\0';
	return 0;
}

/* Sends req[0, total) and reads the response, reconnecting once when a
 * kept-alive connection turns out closed. */
static int exchange(bs_conn *c, const char *req, size_t total, int *status, const char **resp, size_t *resp_len,
                    char *msg, size_t msg_size)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		int fresh = c->fd < 0;
		if (fresh && conn_connect(c, msg, msg_size))
			return -1;
		int keep = 1;
		int rc = send_all(c->fd, req, total) ? -2
		                                        : read_response(c, status, &keep, msg, msg_size);
		if (rc == 0) {
			if (!keep)
				conn_drop(c);
			*resp = c->body;
			*resp_len = c->body_len;
			return 0;
		}
		conn_drop(c);
		if (rc == -2 && !fresh)
			continue; /* the server had closed an idle connection */
		if (rc == -2)
			return bs_fail(msg, msg_size, "the server closed the connection without answering");
		return -1;
	}
	return bs_fail(msg, msg_size, "the server closed the connection twice without answering");
}

int bs_request(bs_conn *c, const char *method, const char *path, const char *ctype,
               const char *body, size_t len, int *status, const char **resp, size_t *resp_len,
               char *msg, size_t msg_size)
{
	char head[1024];
	int hn = body ? snprintf(head, sizeof head,
	                         "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\n"
	                         "Content-Length: %zu\r\n\r\n",
	                         method, path, c->port, ctype ? ctype : "application/json", len)
	              : snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
	                         method, path, c->port);
	if (hn < 0 || (size_t)hn >= sizeof head)
		return bs_fail(msg, msg_size, "request line too long");
	size_t total = (size_t)hn + (body ? len : 0);
	if (grow(&c->req, &c->req_cap, total))
		return bs_fail(msg, msg_size, "out of memory");
	memcpy(c->req, head, (size_t)hn);
	if (body)
		memcpy(c->req + hn, body, len);
	return exchange(c, c->req, total, status, resp, resp_len, msg, msg_size);
}

int bs_request_raw(bs_conn *c, const char *req, size_t len, int *status, const char **resp,
                   size_t *resp_len, char *msg, size_t msg_size)
{
	return exchange(c, req, len, status, resp, resp_len, msg, msg_size);
}
