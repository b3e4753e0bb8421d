/*
 * config: the daemon's settings. Every flag --foo-bar is also the
 * environment variable CLIPD_FOO_BAR and the line "foo-bar = value" of the
 * config file named by --config / CLIPD_CONFIG. Precedence: command line >
 * environment > config file > defaults. Errors name where the bad value came
 * from ("--workers", "CLIPD_WORKERS", "FILE:LINE: workers").
 * Not thread-safe; filled once in main before any thread starts and
 * read-only afterwards.
 */
#ifndef CLIPD_CONFIG_H
#define CLIPD_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "clip.h"

typedef struct config {
	char *model_dir;
	char *old_model_dir;   /* --old-model: NULL to use the recorded one */
	char *data_dir;
	char *listen;          /* "host:port" as given */
	char listen_host[64];  /* numeric address */
	int listen_port;       /* 0: any free port */
	char *api_key;         /* NULL: no auth; never empty */
	int api_key_reads;     /* the key guards reads too */
	int workers;           /* background encode threads */
	int batch;             /* images per encoder batch */
	int encoders;          /* request-time encoder contexts */
	char *index_factory;   /* "auto" unless given */
	int64_t index_auto_at; /* --index-auto-threshold; 0: the index's own */
	int index_nprobe;      /* --index-nprobe; 0: the kind's default */
	int index_refine;      /* --index-refine; -1: the default */
	clip_precision precision;
	char **allow_roots;    /* realpath'd, n_allow_roots of them */
	char **allow_roots_given; /* [n_allow_roots] as given, made absolute: a
	                           * client may name a root by either path */
	int n_allow_roots;
	char **watch_dirs;     /* --watch: realpath'd, n_watch_dirs of them */
	int n_watch_dirs;
	int rescan_s;          /* full rescan of the watch dirs every rescan_s seconds */
	int64_t max_body;      /* bytes */
	int64_t max_pixels;
	int fast_decode;       /* JPEG shrink-on-load (clip_image_limits.fast_decode) */
	int64_t max_queue;     /* pending items before 503 */
	int timeout_s;         /* connection idle timeout */
	int header_timeout_s;  /* deadline for a complete request head */
	int max_conns;
	int max_conns_per_ip;
	char **allow_hosts;    /* --allow-host names, lower-case, n_allow_hosts of them */
	int n_allow_hosts;
	char **allow_origins;  /* --allow-origin origins, lower-case */
	int n_allow_origins;
	int wait_max_s;        /* longest ?wait=true */
	int64_t thumb_cache_bytes; /* DATA/thumbs past this: oldest removed */
	int thumb_wait_ms;     /* longest wait for a thumbnail maker, then 503 */
	int max_decodes;       /* request-time image decodes at once */
	int decode_wait_ms;    /* longest wait for one of them, then 503 */
	int migration_pause_ms; /* after each migration batch (migrate.c) */
	int log_level;
} config;

/* Parses argv, the environment and the config file into *cfg (strings
 * owned by cfg, released by config_free). Returns 0 to run, 1 when --help
 * was printed to out, -1 on a usage error (message written to msg); call
 * config_free in every case. */
int config_parse(config *cfg, int argc, char **argv, FILE *out, char *msg, size_t msg_size);

void config_free(config *cfg);

#endif
