/*
 * embed_shard: clip-embed's --list/--shard mode (embed_shard.c), which
 * writes one shard of a list of images for POST /v1/import
 * (docs/SHARDS.md).
 */
#ifndef CLIP_EMBED_SHARD_H
#define CLIP_EMBED_SHARD_H

#include <stdint.h>

#include "clip.h"

struct shard_args {
	const char *model, *list, *out;
	clip_options opts;
	int shard, nshards;   /* shard I of N, 0 <= I < N */
	int batch;
	int64_t max_bytes;    /* an image file larger than this is a failed item */
};

/* Parses "I/N" (0 <= I < N <= 99999). Returns 0, or -1. */
int embed_shard_parse(const char *spec, int *shard, int *nshards);

/* Writes the shard, or finds it complete. Returns the exit status: 0 done
 * (written or already complete), 1 failed (nothing written), 2 usage. */
int embed_shard_run(const struct shard_args *a);

#endif
