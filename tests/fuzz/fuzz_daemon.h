/*
 * fuzz_daemon: the real clipd server started inside a libFuzzer harness,
 * once per process, as server/main.c starts it (store, model, indexes,
 * blobs, encoders, workers, the HTTP layer on 127.0.0.1, port 0), with
 * the reference kit's tiny model ($CLIPD_REFERENCE/tiny-clip-a), a new
 * data directory and an --allow-root directory holding two small PNGs,
 * both under $TMPDIR and removed at exit. The API key is FUZZ_KEY.
 *
 * fuzz_daemon_send sends one request over a new loopback connection and
 * checks the reply as a client would have to rely on it: a complete HTTP
 * response, a JSON body (an object; errors {"error": {"code", "message"}})
 * unless the request was for bytes, a status below 500 except a deliberate
 * 503, and a daemon that still answers /healthz with no descriptors
 * leaking. Any violation prints the exchange and aborts, so libFuzzer
 * keeps the input.
 *
 * Not thread-safe: one harness thread sends.
 */
#ifndef CLIPD_FUZZ_DAEMON_H
#define CLIPD_FUZZ_DAEMON_H

#include <jansson.h>
#include <stddef.h>

#define FUZZ_KEY "fuzz-key"

/* Starts the daemon (first call only); aborts when it cannot start. */
void fuzz_daemon_start(void);

/* Sends head (the request line and headers, without the blank line and
 * without Content-Length, which is added for body) and body. binary_ok:
 * a 2xx reply may be something other than JSON (files, thumbnails). */
void fuzz_daemon_send(const char *head, const void *body, size_t body_len, int binary_ok);

/* The same, returning the reply's JSON body (a new reference; NULL for a
 * reply that is not JSON) and its status in *status, for checks of what
 * a route answers. */
json_t *fuzz_daemon_send_json(const char *head, const void *body, size_t body_len, int binary_ok,
                              int *status);

/* Appends to dst (NUL-terminated, size bytes) the n bytes of s with every
 * byte outside [A-Za-z0-9._~-] and keep percent-encoded. */
void fuzz_url_encode(char *dst, size_t size, const unsigned char *s, size_t n, const char *keep);

/* A small valid PNG (w x h, seeded noise) in a static buffer; *len gets
 * its size. */
const unsigned char *fuzz_png(int w, int h, unsigned seed, size_t *len);

#endif
