/*
 * Private to bench/server (server.c is the program and says what it
 * measures): the pieces it is made of, one file each.
 *   daemon.c    starting and stopping build/clipd on a loopback port
 *   httpc.c     a small keep-alive HTTP/1.1 client on plain sockets
 *   load.c      closed-loop load from N client threads, latency percentiles
 *   prebuild.c  filling a data directory's store with synthetic images and
 *               random embeddings through schema/store.h
 *   photos.c    writing distinct JPEG photos with libvips
 *   util.c      clock, temporary directories, child processes, paths
 * Errors: functions return 0 or -1 and write one message into msg.
 * Thread-safety: only httpc and load run on more than one thread; a
 * bs_conn belongs to one thread at a time.
 */
#ifndef CLIPD_BENCH_SERVER_INT_H
#define CLIPD_BENCH_SERVER_INT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- util.c -------------------------------------------------------------- */

/* Seconds on the monotonic clock. */
double bs_now(void);

/* Set by SIGINT/SIGTERM: long loops stop and the program cleans up. */
extern volatile sig_atomic_t bs_interrupted;
void bs_catch_signals(void);

/* Creates parent/clipd-bench-XXXXXX; the path is malloc'ed. NULL on failure. */
char *bs_mkdtemp(const char *parent, char *msg, size_t msg_size);

/* Removes path and everything under it (not following symlinks). */
int bs_rmtree(const char *path);

/* Runs argv[0] with argv (stdout and stderr to log_path when non-NULL, else
 * inherited) and waits. 0 when it exited with status 0. */
int bs_run(char *const argv[], const char *log_path, char *msg, size_t msg_size);

/* The directory two levels above this executable: build/ for
 * build/bench/server, where clipd and clip-mkmodel are. "." if unknown. */
void bs_build_dir(char *out, size_t size);

/* Sets msg and returns -1. */
int bs_fail(char *msg, size_t msg_size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- daemon.c ------------------------------------------------------------ */

typedef struct bs_daemon {
	pid_t pid;
	int port;
	long ready_ms;      /* the daemon's own "ready in N ms", -1 if not logged */
	char log_path[4096];
} bs_daemon;

/* Starts clipd with argv (argv[0] is the binary; --listen 127.0.0.1:0 and
 * the log level are added), its stderr into log_path, and waits up to
 * timeout_s for its "listening on 127.0.0.1:PORT" line and a 200 from
 * GET /readyz. The daemon gets SIGTERM if this process dies. */
int bs_daemon_start(char *const argv[], const char *log_path, double timeout_s, bs_daemon *d,
                    char *msg, size_t msg_size);

/* SIGTERM, then waits up to timeout_s (SIGKILL after that). 0 when it exited
 * with status 0. Does nothing for a daemon that was never started. */
int bs_daemon_stop(bs_daemon *d, double timeout_s, char *msg, size_t msg_size);

/* Copies the last lines of the daemon's log to stderr (after a failure). */
void bs_daemon_log_tail(const bs_daemon *d, int lines);

/* ---- httpc.c ------------------------------------------------------------- */

typedef struct bs_conn bs_conn;

/* Connects to 127.0.0.1:port (TCP_NODELAY). NULL on failure. */
bs_conn *bs_conn_open(int port, char *msg, size_t msg_size);
void bs_conn_close(bs_conn *c);

/* Sends one request (body may be NULL; ctype is used when body is given)
 * and reads the whole response, on the same connection when the server
 * keeps it open (reconnecting once if it had closed it). *status is the
 * HTTP status; the body is in *resp (NUL-terminated, owned by the
 * connection, valid until the next request) and *resp_len. */
int bs_request(bs_conn *c, const char *method, const char *path, const char *ctype,
               const char *body, size_t len, int *status, const char **resp, size_t *resp_len,
               char *msg, size_t msg_size);

/* As bs_request, for a request the caller wrote whole (request line,
 * headers, blank line and body: req[0, len), not copied): other headers, or
 * a Content-Length that is not the body's. */
int bs_request_raw(bs_conn *c, const char *req, size_t len, int *status, const char **resp,
                   size_t *resp_len, char *msg, size_t msg_size);

/* Every later send and receive on c (and its reconnections) fails after
 * `seconds` without progress: a hung server cannot hang the caller. */
void bs_conn_set_timeout(bs_conn *c, double seconds);

/* 1 when the last response carried a Retry-After header, else 0. */
int bs_conn_retry_after(const bs_conn *c);

/* ---- load.c -------------------------------------------------------------- */

typedef struct bs_load_result {
	int clients;
	long requests;      /* answered 200 inside the window */
	long errors;        /* other statuses and failed connections */
	double seconds;     /* the measured window */
	double qps;
	double mean_ms, p50_ms, p90_ms, p99_ms, max_ms;
	char first_error[256];
} bs_load_result;

/* Runs `clients` threads, each with its own keep-alive connection, sending
 * POST path with bodies[i % nbodies] (JSON) back to back for `seconds`
 * (each thread starts at a different body). Latency is from the first
 * byte sent to the last byte received. */
int bs_load_run(int port, const char *path, int clients, double seconds,
                const char *const *bodies, int nbodies, bs_load_result *out, char *msg,
                size_t msg_size);

/* ---- prebuild.c ---------------------------------------------------------- */

/* Adds n image rows (synthetic sha256, image/jpeg 640x480) with random
 * L2-normalised embeddings of dimension dim for model_id to the store at
 * db_path, batch rows per embedding transaction. Unless vecs_out is NULL,
 * *vecs_out receives the n vectors ([n][dim], malloc'ed) for an in-process
 * index measurement. *insert_s and *embed_s are the seconds spent in image
 * inserts and embedding writes. Progress goes to stderr. */
/* The capture times bs_prebuild gives: uniform over PREBUILD_DAYS days
 * from PREBUILD_EPOCH (2015-01-01T00:00:00, Unix seconds). */
#define PREBUILD_EPOCH 1420070400LL
#define PREBUILD_DAYS 3650

int bs_prebuild(const char *db_path, long n, int batch, const char *model_id, int dim,
                uint64_t seed, float **vecs_out, double *insert_s, double *embed_s, char *msg,
                size_t msg_size);

/* ---- photos.c ------------------------------------------------------------ */

/* Writes n distinct width x height JPEGs (quality 90) into dir as
 * photo-NNNNNN.jpg. With sources_dir, each is a crop of one of the images
 * found there, shifted and re-toned per photo; without, a smooth synthetic
 * scene with grain. *bytes is their total size. */
int bs_make_photos(const char *dir, int n, int width, int height, const char *sources_dir,
                   uint64_t seed, int64_t *bytes, char *msg, size_t msg_size);

/* ---- random numbers (shared by prebuild and photos) ---------------------- */

static inline uint64_t bs_splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double bs_uniform(uint64_t *s)
{
	return (double)(bs_splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
