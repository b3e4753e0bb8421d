/* fingerprint.c: model identity from config and safetensors header. */
#include <errno.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clip.h"
#include "fingerprint.h"

/* A safetensors header larger than this is not a checkpoint we load. */
#define MAX_HEADER (100u << 20)

static int hash_file_part(GChecksum *sum, const char *path, uint64_t max, int safetensors,
                          api_err *err)
{
	FILE *f = fopen(path, "rb");
	int rc = 0;
	unsigned char buf[65536];
	if (!f)
		return api_fail(err, API_EIO, "cannot open the model file %s: %s", path, strerror(errno));
	if (safetensors) {
		unsigned char len8[8];
		struct stat st;
		if (fread(len8, 1, 8, f) != 8 || fstat(fileno(f), &st) != 0) {
			rc = api_fail(err, API_EIO, "cannot read the header of %s", path);
			goto out;
		}
		uint64_t n = 0;
		for (int i = 7; i >= 0; i--)
			n = n << 8 | len8[i];
		if (n > MAX_HEADER || n + 8 > (uint64_t)st.st_size) {
			rc = api_fail(err, API_EIO, "%s has a damaged header", path);
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
		rc = api_fail(err, API_EIO, "cannot read %s", path);
out:
	fclose(f);
	return rc;
}

int fingerprint_model(const char *dir, char *id, size_t id_size, api_err *err)
{
	const char *config, *weights;
	clip_err ce;
	/* The files the model loaded: the layout's (clip.h). */
	if (clip_checkpoint_files(dir, &config, &weights, &ce) != CLIP_OK)
		return api_fail(err, API_EIO, "%s", ce.msg);
	GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
	char path[4096];
	int rc;
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
