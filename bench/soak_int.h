/*
 * Private to bench/soak (soak.c is the program and says what it does):
 *   soak.c       options, the phases of a run, the report and the verdict
 *   soak_mix.c   the traffic: request kinds, their requests, what each
 *                expects, and the client threads that send them
 *   soak_proc.c  a process's RSS, descriptors and threads from /proc, and
 *                the pid that listens on a loopback port
 *   soak_png.c   small distinct PNGs
 * It also uses bench/server's daemon.c, httpc.c and util.c (server_int.h).
 * Errors: functions return 0 or -1 and write one message into msg.
 * Thread-safety: soak_client_main runs on many threads; each writes only
 * its own soak_stats, and the shared soak_mix is read-only but for its
 * id pool (mutex) and counters (atomics). Everything else runs on one
 * thread.
 */
#ifndef CLIPD_BENCH_SOAK_INT_H
#define CLIPD_BENCH_SOAK_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- soak_png.c ---------------------------------------------------------- */

/* A w x h RGB PNG of seeded noise over a seeded gradient (distinct seeds
 * give distinct files); *out is malloc'ed. -1 when out of memory. */
int soak_png(int w, int h, uint64_t seed, unsigned char **out, size_t *len);

/* ---- soak_proc.c --------------------------------------------------------- */

typedef struct soak_proc {
	long rss_kb;   /* VmRSS, -1 if unreadable (the process is gone) */
	long anon_kb;  /* RssAnon: the heap and stacks, without mapped files */
	int fds;       /* entries of /proc/PID/fd, -1 if unreadable */
	int threads;   /* Threads, -1 if unreadable */
} soak_proc;

/* Reads the three figures of pid. 0, or -1 when the process is gone. */
int soak_proc_read(pid_t pid, soak_proc *out);

/* The pid whose open sockets include the one listening on
 * 127.0.0.1:port (from /proc/net/tcp and /proc/PID/fd: only processes
 * of our own user are visible). -1 when none is found. */
pid_t soak_proc_listener(int port);

/* ---- soak_mix.c ---------------------------------------------------------- */

enum soak_kind {
	SK_SEARCH_POST,   /* POST /v1/search {"text"} */
	SK_SEARCH_GET,    /* GET /v1/search?q= */
	SK_SEARCH_B64,    /* POST /v1/search {"image_b64"} */
	SK_SEARCH_FORM,   /* POST /v1/search multipart, part "image" */
	SK_UPLOAD,        /* POST /v1/images multipart with meta */
	SK_UPLOAD_RAW,    /* POST /v1/images raw image/png */
	SK_BULK,          /* POST /v1/ingest multipart of several images */
	SK_UPLOAD_BROKEN, /* POST /v1/images, a PNG cut short after its header:
	                   * accepted, fails in the worker */
	SK_DELETE,        /* DELETE /v1/images/{id} of one we uploaded */
	SK_STATS,         /* GET /v1/stats */
	SK_BAD_JSON,      /* hostile: malformed or mistyped JSON */
	SK_BAD_FORM,      /* hostile: multipart that is not */
	SK_BIG_DECLARED,  /* hostile: Content-Length far over the limit, no body */
	SK_BIG_BODY,      /* hostile: a body just over the limit, sent whole */
	SK_TRUNC_SEARCH,  /* hostile: half a PNG as image_b64 */
	SK_TRUNC_FORM,    /* hostile: the first 20 bytes of a PNG, multipart search */
	SK_NOT_IMAGE,     /* hostile: text uploaded as image/png */
	SK_NKINDS
};

typedef struct soak_kind_info {
	const char *name;
	const char *request;   /* what is sent, for the report */
	int weight;            /* per 1000 requests */
	int hostile;           /* must be answered 4xx */
	int expect;            /* the status it must get */
} soak_kind_info;

extern const soak_kind_info soak_kinds[SK_NKINDS];

#define SOAK_NSTATUS 600   /* statuses 100..599; [0]: no answer */
#define SOAK_SNIPPET 240

/* The first answer of a kind that was not what it expects. */
typedef struct soak_bad {
	int seen;
	double t;              /* seconds since the load began */
	int status;            /* 0: no answer */
	char request[256];     /* method, path, body size */
	char reply[SOAK_SNIPPET];
} soak_bad;

/* What one client thread saw. */
typedef struct soak_stats {
	long count[SK_NKINDS][SOAK_NSTATUS];
	long deliberate[SK_NKINDS];   /* 503 with Retry-After (also in count) */
	long unexpected[SK_NKINDS];   /* neither the expected status nor a
	                               * deliberate 503, or a malformed body */
	double *lat[SK_NKINDS];       /* seconds, answered after warm-up */
	size_t nlat[SK_NKINDS], cap[SK_NKINDS];
	soak_bad bad[SK_NKINDS];
} soak_stats;

#define SOAK_POOL 65536

/* The traffic, shared by the client threads. */
typedef struct soak_mix {
	int port;
	const char *auth;        /* the Authorization header value, or NULL */
	int64_t max_body;        /* the daemon's --max-body-mb, in bytes */
	double request_timeout;  /* seconds per send or receive */
	uint64_t nonce;          /* makes this run's images unlike any earlier run's */
	double t0, t_warm, t_end;
	int bulk_files;

	atomic_uint_fast64_t next_image;
	atomic_long done, unexpected;
	atomic_int stop;         /* set when the daemon is gone: clients end now */

	pthread_mutex_t mu;      /* guards the pool: ids we may delete */
	int64_t pool[SOAK_POOL];
	size_t pool_head, pool_len;
	long pool_dropped;
} soak_mix;

/* Sets up the shared state (times are left to the caller). */
void soak_mix_init(soak_mix *m, int port, const char *auth, int64_t max_body, double timeout,
                   uint64_t nonce, int bulk_files);
void soak_mix_destroy(soak_mix *m);

typedef struct soak_client {
	pthread_t th;
	int id;
	soak_mix *mix;
	soak_stats st;
	int only;                /* >= 0: send only this kind, once (the priming pass) */
} soak_client;

/* A client thread: one keep-alive connection, requests drawn by weight
 * until mix->t_end (or once, with `only`). */
void *soak_client_main(void *arg);

/* Frees the latencies of st. */
void soak_stats_free(soak_stats *st);

/* Adds src into dst (latencies appended). -1 when out of memory. */
int soak_stats_merge(soak_stats *dst, const soak_stats *src);

#endif
