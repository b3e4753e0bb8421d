/*
 * fingerprint.c: a cheap identity for a CLIP checkpoint directory
 * (clip_fingerprint in clip.h), so that a data directory embedded with one
 * model is never searched with another, and a shard embedded elsewhere
 * (clip-embed --shard) is never imported into another model's space.
 * SHA-256 over the config (the files clip_checkpoint_files names), the
 * safetensors header (its 8-byte length and JSON, which names every tensor
 * with its dtype, shape and offsets) and the weight file's size: a few
 * kilobytes read, not the weights. Two checkpoints that differ only in
 * weight values with identical headers would collide; real checkpoints
 * differ in config or layout, and retrained ones are published under new
 * names.
 */
#include <errno.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip.h"
#include "clip_int.h"

/* A safetensors header larger than this is not a checkpoint we load. */
#define MAX_HEADER (100u << 20)

static int hash_file_part(GChecksum *sum, const char *path, uint64_t max, int safetensors,
                          clip_err *err)
{
	FILE *f = fopen(path, "rb");
	int rc = 0;
	unsigned char buf[65536];
	if (!f)
		return clip_fail(err, CLIP_EIO, "cannot open the model file %s: %s", path, strerror(errno));
	if (safetensors) {
		unsigned char len8[8];
		struct stat st;
		if (fread(len8, 1, 8, f) != 8 || fstat(fileno(f), &st) != 0) {
			rc = clip_fail(err, CLIP_EIO, "cannot read the header of %s", path);
			goto out;
		}
		uint64_t n = 0;
		for (int i = 7; i >= 0; i--)
			n = n << 8 | len8[i];
		if (n > MAX_HEADER || n + 8 > (uint64_t)st.st_size) {
			rc = clip_fail(err, CLIP_EIO, "%s has a damaged header", path);
			goto out;
		}
		g_checksum_update(sum, len8, 8);
		char size[32];
		snprintf(size, sizeof size, "|%lld|", (long long)st.st_size);
		g_checksum_update(sum, (const guchar *)size, (gssize)strlen(size));
		max = n;
	}
	uint64_t left = max;
	while (left > 0) {
		size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
		size_t got = fread(buf, 1, want, f);
		if (got == 0)
			break;
		g_checksum_update(sum, buf, (gssize)got);
		left -= got;
	}
	if (ferror(f))
		rc = clip_fail(err, CLIP_EIO, "cannot read %s", path);
out:
	fclose(f);
	return rc;
}

int clip_fingerprint(const char *dir, char *id, size_t id_size, clip_err *err)
{
	const char *config, *weights;
	int rc;
	/* The files the model loaded: the layout's (clip.h). */
	if ((rc = clip_checkpoint_files(dir, &config, &weights, err)) != CLIP_OK)
		return rc;
	GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, config);
	if ((rc = hash_file_part(sum, path, UINT64_MAX, 0, err)))
		goto out;
	snprintf(path, sizeof path, "%s/%s", dir, weights);
	if ((rc = hash_file_part(sum, path, 0, 1, err)))
		goto out;
	snprintf(id, id_size, "clip-%.16s", g_checksum_get_string(sum));
out:
	g_checksum_free(sum);
	return rc;
}
