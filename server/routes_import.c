/*
 * routes_import.c: POST /v1/import, shards embedded elsewhere (clip-embed
 * --shard on a cluster) loaded into the store and the index. The format
 * and the promises are docs/SHARDS.md.
 *
 * Two passes over descriptors opened beneath an --allow-root (safepath.h:
 * no link followed, regular files only). The first checks every shard
 * whole: the manifest, the model, each file's size and SHA-256, every line
 * of items.jsonl and every vector; one bad shard refuses the request
 * before anything is stored. The second imports item by item, checking
 * each line and vector again as it reads them (the files may change
 * between the passes; what is stored is only ever a checked unit vector
 * for a file whose content was hashed on the way into the blob store).
 * Memory is bounded by the request, not by the shard: one line, one
 * vector and one read buffer at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "ingest.h"
#include "jsonutil.h"
#include "log.h"
#include "routes.h"
#include "safepath.h"
#include "space.h"

#define MAX_SHARDS 4096            /* per request */
#define MANIFEST_MAX (64 << 10)
#define LINE_MAX_BYTES (16 << 10)  /* one line of items.jsonl */
#define MAX_DIM 8192
#define IMPORT_LIMIT 100000        /* items read from files per request */
#define SYNC_EVERY 256             /* imported items between index syncs */
#define UNIT_TOL 1e-3              /* |norm - 1| allowed for a stored vector */

enum { F_EMB, F_ITEMS, F_FAILED, NFILES };
static const char *const FILE_NAMES[NFILES] = {"embeddings.f32", "items.jsonl", "failed.jsonl"};

struct shard {
	char name[SP_PATH_MAX];
	int dirfd;
	int64_t count, embed_failed;
	int64_t bytes[NFILES];
	char sha[NFILES][65];
	int64_t imported, present, changed, failed;
};

/* A sequential reader of one file, hashing what it reads. */
struct rd {
	int fd;
	GChecksum *sum;
	size_t pos, len;
	int64_t total;
	unsigned char buf[1 << 16];
};

struct import {
	app *a;
	space *sp;
	ingest_ctx ic;
	struct shard *shards;
	size_t n;
	int64_t limit, handled;   /* items that needed a file read */
	int more;                 /* stopped at the limit: items are left */
	int unsynced;             /* imported since the last index sync */
	float *vec;
	char *line;
	api_err fatal;
	int failed;
};

static int rd_open(struct rd *r, int dirfd, const char *name, struct stat *st, api_err *err)
{
	r->pos = r->len = 0;
	r->total = 0;
	r->sum = NULL;
	if (sp_open(dirfd, name, SP_FILE, &r->fd, st, err))
		return -1;
	r->sum = g_checksum_new(G_CHECKSUM_SHA256);
	return 0;
}

static void rd_close(struct rd *r)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = -1;
	if (r->sum)
		g_checksum_free(r->sum);
	r->sum = NULL;
}

/* 1 data buffered, 0 end of file, -1 read error (errno). */
static int rd_fill(struct rd *r)
{
	if (r->pos < r->len)
		return 1;
	for (;;) {
		ssize_t n = read(r->fd, r->buf, sizeof r->buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		r->pos = 0;
		r->len = (size_t)n;
		r->total += n;
		if (n > 0)
			g_checksum_update(r->sum, r->buf, n);
		return n > 0;
	}
}

/* Reads exactly n bytes: 0, 1 short (end of file first), -1 error. */
static int rd_exact(struct rd *r, void *out, size_t n)
{
	unsigned char *o = out;
	while (n > 0) {
		int f = rd_fill(r);
		if (f <= 0)
			return f < 0 ? -1 : 1;
		size_t k = r->len - r->pos < n ? r->len - r->pos : n;
		memcpy(o, r->buf + r->pos, k);
		r->pos += k;
		o += k;
		n -= k;
	}
	return 0;
}

/* One line without its LF into out (max bytes with the NUL): 1 a line,
 * 0 end of file, -1 error, -2 longer than max, -3 a last line without LF. */
static int rd_line(struct rd *r, char *out, size_t max, size_t *len)
{
	size_t n = 0;
	for (;;) {
		int f = rd_fill(r);
		if (f < 0)
			return -1;
		if (f == 0)
			return n ? -3 : 0;
		unsigned char *start = r->buf + r->pos, *nl = memchr(start, '\n', r->len - r->pos);
		size_t k = nl ? (size_t)(nl - start) : r->len - r->pos;
		if (n + k + 1 > max)
			return -2;
		memcpy(out + n, start, k);
		n += k;
		r->pos += k + (nl != NULL);
		if (nl) {
			out[n] = 0;
			*len = n;
			return 1;
		}
	}
}

/* Reads to the end and compares size and hash with the manifest's. */
static int rd_finish(struct rd *r, const struct shard *s, int which, api_err *err)
{
	int f;
	r->pos = r->len;
	while ((f = rd_fill(r)) > 0)
		r->pos = r->len;
	if (f < 0)
		return api_fail(err, API_EIO, "%s: cannot read %s: %s", s->name, FILE_NAMES[which],
		                strerror(errno));
	if (r->total != s->bytes[which])
		return api_fail(err, API_EBADREQ, "%s: %s has %lld bytes; its manifest says %lld",
		                s->name, FILE_NAMES[which], (long long)r->total,
		                (long long)s->bytes[which]);
	if (strcmp(g_checksum_get_string(r->sum), s->sha[which]) != 0)
		return api_fail(err, API_EBADREQ,
		                "%s: %s does not have the SHA-256 its manifest gives: the shard is damaged "
		                "or was changed after it was written",
		                s->name, FILE_NAMES[which]);
	return 0;
}

/* NULL when v is a unit vector of finite values, else what is wrong. */
static const char *vec_problem(const float *v, int dim)
{
	double n2 = 0;
	for (int i = 0; i < dim; i++) {
		if (!isfinite(v[i]))
			return "holds a value that is not a finite number";
		n2 += (double)v[i] * v[i];
	}
	if (fabs(sqrt(n2) - 1.0) > UNIT_TOL)
		return "is not of unit length (the shard holds L2-normalised embeddings)";
	return NULL;
}

/* One item line: its path and content hash, pointing into the parsed
 * object *owner (release with json_decref). NULL path and why on error. */
static int parse_item(const char *line, size_t len, json_t **owner, const char **path,
                      const char **sha, const char **why)
{
	json_error_t je;
	*owner = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
	json_t *p = *owner ? json_object_get(*owner, "path") : NULL;
	json_t *h = *owner ? json_object_get(*owner, "sha256") : NULL;
	*why = NULL;
	if (!*owner)
		*why = "is not JSON";
	else if (!json_is_object(*owner))
		*why = "is not a JSON object";
	else if (!json_is_string(p) || json_string_length(p) == 0 ||
	         json_string_length(p) != strlen(json_string_value(p)))
		*why = "has no \"path\" string (or one with a NUL)";
	else if (json_string_length(p) >= SP_PATH_MAX)
		*why = "has a \"path\" longer than the longest path clipd opens";
	else if (!json_is_string(h) || !store_sha256_valid(json_string_value(h)))
		*why = "has no \"sha256\" of 64 lower-case hex digits";
	if (*why) {
		json_decref(*owner);
		*owner = NULL;
		return -1;
	}
	*path = json_string_value(p);
	*sha = json_string_value(h);
	return 0;
}

/* Reads and checks the manifest of s against the served model. */
static int read_manifest(struct import *im, struct shard *s, api_err *err)
{
	struct rd *r = malloc(sizeof *r);
	struct stat st;
	json_t *m = NULL;
	int rc;
	if (!r)
		return api_fail(err, API_ENOMEM, "out of memory");
	r->fd = -1;
	api_err e;
	if (rd_open(r, s->dirfd, "manifest.json", &st, &e)) {
		rc = api_fail(err, e.code, "%s: manifest.json: %s", s->name, e.msg);
		goto out;
	}
	if (st.st_size > MANIFEST_MAX) {
		rc = api_fail(err, API_EBADREQ, "%s: manifest.json has %lld bytes, over %d", s->name,
		              (long long)st.st_size, MANIFEST_MAX);
		goto out;
	}
	char *text = malloc(MANIFEST_MAX + 1);
	if (!text) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	int got = rd_exact(r, text, (size_t)st.st_size);
	json_error_t je;
	if (got == 0)
		m = json_loadb(text, (size_t)st.st_size, JSON_REJECT_DUPLICATES, &je);
	free(text);
	if (got != 0) {
		rc = api_fail(err, API_EIO, "%s: cannot read manifest.json", s->name);
		goto out;
	}
	if (!json_is_object(m)) {
		rc = api_fail(err, API_EBADREQ, "%s: manifest.json is not a JSON object", s->name);
		goto out;
	}
	const char *format = json_string_value(json_object_get(m, "format"));
	const char *model = json_string_value(json_object_get(m, "model"));
	json_t *version = json_object_get(m, "version"), *dim = json_object_get(m, "dim");
	json_t *count = json_object_get(m, "count"), *files = json_object_get(m, "files");
	json_t *failed = json_object_get(m, "failed");
	if (!format || strcmp(format, "clipd-shard") != 0) {
		rc = api_fail(err, API_EBADREQ, "%s: manifest.json: \"format\" is not \"clipd-shard\"",
		              s->name);
		goto out;
	}
	if (!json_is_integer(version) || json_integer_value(version) != 1) {
		rc = api_fail(err, API_EBADREQ,
		              "%s: manifest.json: \"version\" must be 1 (this clipd reads version 1)",
		              s->name);
		goto out;
	}
	if (!model || !json_is_integer(dim) || !json_is_integer(count) ||
	    json_integer_value(count) < 0 || json_integer_value(dim) < 1 ||
	    json_integer_value(dim) > MAX_DIM || !json_is_object(files)) {
		rc = api_fail(err, API_EBADREQ,
		              "%s: manifest.json needs \"model\" (a string), \"dim\" (1..%d), "
		              "\"count\" (>= 0) and \"files\"",
		              s->name, MAX_DIM);
		goto out;
	}
	if (strcmp(model, im->sp->model_id) != 0 || json_integer_value(dim) != im->sp->dim) {
		rc = api_fail(err, API_ECONFLICT,
		              "%s was embedded with model %.64s (dim %lld); this daemon serves %s (dim %d): "
		              "embed it again with the served model",
		              s->name, model, (long long)json_integer_value(dim), im->sp->model_id,
		              im->sp->dim);
		goto out;
	}
	s->count = json_integer_value(count);
	s->embed_failed = json_is_integer(failed) ? json_integer_value(failed) : 0;
	for (int i = 0; i < NFILES; i++) {
		json_t *f = json_object_get(files, FILE_NAMES[i]);
		json_t *b = json_object_get(f, "bytes");
		const char *h = json_string_value(json_object_get(f, "sha256"));
		if (!json_is_integer(b) || json_integer_value(b) < 0 || !store_sha256_valid(h)) {
			rc = api_fail(err, API_EBADREQ,
			              "%s: manifest.json: files.\"%s\" needs \"bytes\" and \"sha256\"",
			              s->name, FILE_NAMES[i]);
			goto out;
		}
		s->bytes[i] = json_integer_value(b);
		memcpy(s->sha[i], h, 65);
	}
	int64_t want = s->count * im->sp->dim * (int64_t)sizeof(float);
	if (s->count > INT64_MAX / 4 / MAX_DIM || s->bytes[F_EMB] != want) {
		rc = api_fail(err, API_EBADREQ,
		              "%s: manifest.json: embeddings.f32 of %lld bytes cannot hold %lld vectors "
		              "of %d floats",
		              s->name, (long long)s->bytes[F_EMB], (long long)s->count, im->sp->dim);
		goto out;
	}
	rc = 0;
out:
	json_decref(m);
	rd_close(r);
	free(r);
	return rc;
}

/* The first pass over one shard: every file, line and vector. */
static int verify_shard(struct import *im, struct shard *s, api_err *err)
{
	struct rd *emb = malloc(sizeof *emb), *items = malloc(sizeof *items);
	api_err e;
	int rc = 0;
	if (!emb || !items) {
		free(emb);
		free(items);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	emb->fd = items->fd = -1;
	emb->sum = items->sum = NULL;
	if ((rc = read_manifest(im, s, err)))
		goto out;
	int dim = im->sp->dim;
	if (rd_open(emb, s->dirfd, FILE_NAMES[F_EMB], NULL, &e) ||
	    rd_open(items, s->dirfd, FILE_NAMES[F_ITEMS], NULL, &e)) {
		rc = api_fail(err, e.code, "%s: %s", s->name, e.msg);
		goto out;
	}
	for (int64_t i = 0; i < s->count; i++) {
		size_t len;
		int lr = rd_line(items, im->line, LINE_MAX_BYTES, &len);
		if (lr != 1) {
			rc = api_fail(err, lr == -1 ? API_EIO : API_EBADREQ,
			              "%s: items.jsonl line %lld: %s", s->name, (long long)i + 1,
			              lr == 0    ? "missing: the manifest counts more items"
			              : lr == -2 ? "longer than 16 KiB"
			              : lr == -3 ? "the last line has no newline"
			                         : strerror(errno));
			goto out;
		}
		json_t *o;
		const char *path, *sha, *why;
		if (parse_item(im->line, len, &o, &path, &sha, &why)) {
			rc = api_fail(err, API_EBADREQ, "%s: items.jsonl line %lld %s", s->name,
			              (long long)i + 1, why);
			goto out;
		}
		json_decref(o);
		int er = rd_exact(emb, im->vec, sizeof(float) * (size_t)dim);
		if (er != 0) {
			rc = api_fail(err, er < 0 ? API_EIO : API_EBADREQ,
			              "%s: embeddings.f32 ends before vector %lld of %lld", s->name,
			              (long long)i + 1, (long long)s->count);
			goto out;
		}
		if ((why = vec_problem(im->vec, dim))) {
			rc = api_fail(err, API_EBADREQ, "%s: embedding %lld %s", s->name, (long long)i + 1,
			              why);
			goto out;
		}
	}
	size_t len;
	if (rd_line(items, im->line, LINE_MAX_BYTES, &len) != 0) {
		rc = api_fail(err, API_EBADREQ, "%s: items.jsonl has more lines than the manifest's count",
		              s->name);
		goto out;
	}
	if ((rc = rd_finish(emb, s, F_EMB, err)) || (rc = rd_finish(items, s, F_ITEMS, err)))
		goto out;
	rd_close(emb);
	if (rd_open(emb, s->dirfd, FILE_NAMES[F_FAILED], NULL, &e)) {
		rc = api_fail(err, e.code, "%s: %s", s->name, e.msg);
		goto out;
	}
	rc = rd_finish(emb, s, F_FAILED, err);
out:
	rd_close(emb);
	rd_close(items);
	free(emb);
	free(items);
	return rc;
}

static void item_failed(struct import *im, struct shard *s, const char *path, const char *why)
{
	api_err e;
	s->failed++;
	if (ingest_reject(&im->ic, path, why, &e)) {
		im->fatal = e;
		im->failed = 1;
	}
}

static void sync_index(struct import *im)
{
	if (im->unsynced)
		space_sync(im->a, STORE_IMAGE);
	im->unsynced = 0;
}

/* One item of the second pass. */
static void import_item(struct import *im, struct shard *s, const char *path, const char *sha)
{
	app *a = im->a;
	store_image found;
	store_err se;
	api_err e;
	int rc = store_image_find_sha(a->st, sha, &found, &se);
	if (rc == STORE_OK) {
		/* Already there: an import, like an upload, holds what it names. */
		if (store_image_pin(a->st, found.id, &se) != STORE_OK && se.code != STORE_ENOTFOUND) {
			api_from_store(&im->fatal, &se);
			im->failed = 1;
		}
		store_image_clear(&found);
		s->present++;
		return;
	}
	if (rc != STORE_ENOTFOUND) {
		api_from_store(&im->fatal, &se);
		im->failed = 1;
		return;
	}
	if (im->handled >= im->limit) {
		im->more = 1;
		return;
	}
	im->handled++;
	int root;
	char rel[SP_PATH_MAX];
	blob_writer *bw;
	if (ingest_map_root(a, path, "the path", &root, rel, sizeof rel, &e) ||
	    ingest_read_at(a, a->root_fds[root], rel, &bw, &e)) {
		if (api_err_status(&e, NULL) >= 500) {
			im->fatal = e;
			im->failed = 1;
		} else {
			item_failed(im, s, path, e.msg);
		}
		return;
	}
	ingest_embedding given = {sha, im->sp->model_id, im->vec, im->sp->dim};
	int64_t id;
	int dup, changed;
	/* Named by its path under its root, as POST /v1/ingest names files. */
	if (ingest_blob_embedded(&im->ic, bw, rel, &given, &id, &dup, &changed, &e)) {
		if (api_err_status(&e, NULL) >= 500 || e.code == API_ECONFLICT) {
			im->fatal = e;
			im->failed = 1;
		} else {
			item_failed(im, s, path, e.msg);
		}
		return;
	}
	if (dup)
		s->present++;
	else if (changed)
		s->changed++;
	else
		s->imported++;
	if (!dup && !changed && ++im->unsynced >= SYNC_EVERY)
		sync_index(im);
}

/* The second pass over one shard. */
static void import_shard(struct import *im, struct shard *s)
{
	struct rd *emb = malloc(sizeof *emb), *items = malloc(sizeof *items);
	api_err e;
	int dim = im->sp->dim;
	if (!emb || !items) {
		api_fail(&im->fatal, API_ENOMEM, "out of memory");
		im->failed = 1;
		goto out;
	}
	emb->fd = items->fd = -1;
	emb->sum = items->sum = NULL;
	if (rd_open(emb, s->dirfd, FILE_NAMES[F_EMB], NULL, &e) ||
	    rd_open(items, s->dirfd, FILE_NAMES[F_ITEMS], NULL, &e)) {
		api_fail(&im->fatal, API_ECONFLICT, "%s changed during the import: %s", s->name, e.msg);
		im->failed = 1;
		goto out;
	}
	for (int64_t i = 0; i < s->count && !im->failed && !im->more; i++) {
		size_t len;
		json_t *o = NULL;
		const char *path, *sha, *why;
		if (rd_line(items, im->line, LINE_MAX_BYTES, &len) != 1 ||
		    rd_exact(emb, im->vec, sizeof(float) * (size_t)dim) != 0 ||
		    parse_item(im->line, len, &o, &path, &sha, &why) || vec_problem(im->vec, dim)) {
			json_decref(o);
			api_fail(&im->fatal, API_ECONFLICT,
			         "%s changed during the import (at item %lld): import it again", s->name,
			         (long long)i + 1);
			im->failed = 1;
			break;
		}
		import_item(im, s, path, sha);
		json_decref(o);
	}
out:
	if (emb)
		rd_close(emb);
	if (items)
		rd_close(items);
	free(emb);
	free(items);
}

/* A shard directory's name: shard-IIIII-of-NNNNN. */
static int shard_name(const char *n)
{
	unsigned i, k;
	int end = 0;
	return strlen(n) == 20 && sscanf(n, "shard-%5u-of-%5u%n", &i, &k, &end) == 2 && end == 20 &&
	       i < k;
}

/* Finds the shards of the directory open at dfd (rel its path under its
 * root): itself when it holds a manifest, else its shard-* entries. */
static int find_shards(struct import *im, int dfd, const char *rel, api_err *err)
{
	struct stat st;
	api_err e;
	if (sp_lstat(dfd, "manifest.json", &st, &e) == 0) {
		if (!(im->shards = calloc(1, sizeof *im->shards)))
			return api_fail(err, API_ENOMEM, "out of memory");
		const char *base = strrchr(rel, '/');
		snprintf(im->shards[0].name, sizeof im->shards[0].name, "%s",
		         base ? base + 1 : (*rel ? rel : "."));
		if ((im->shards[0].dirfd = dup(dfd)) < 0)
			return api_fail(err, API_EIO, "cannot open 'dir': %s", strerror(errno));
		im->n = 1;
		return 0;
	}
	char **names;
	size_t n;
	int rc = sp_list(dfd, 100000, &names, &n, err);
	if (rc)
		return rc;
	size_t want = 0;
	for (size_t i = 0; i < n; i++)
		want += shard_name(names[i]);
	if (want == 0) {
		sp_list_free(names, n);
		return api_fail(err, API_EBADREQ,
		                "'dir' holds no shards (directories named shard-IIIII-of-NNNNN with a "
		                "manifest.json, written by clip-embed --shard)");
	}
	if (want > MAX_SHARDS) {
		sp_list_free(names, n);
		return api_fail(err, API_ETOOBIG, "'dir' holds %zu shards, over %d: import it in parts",
		                want, MAX_SHARDS);
	}
	if (!(im->shards = calloc(want, sizeof *im->shards))) {
		sp_list_free(names, n);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n && !rc; i++) {
		if (!shard_name(names[i]))
			continue;
		struct shard *s = &im->shards[im->n];
		snprintf(s->name, sizeof s->name, "%s", names[i]);
		if ((rc = sp_open(dfd, names[i], SP_DIR, &s->dirfd, NULL, &e)))
			api_fail(err, e.code, "%s: %s", names[i], e.msg);
		else
			im->n++;
	}
	sp_list_free(names, n);
	return rc;
}

static json_t *shard_json(const struct shard *s)
{
	return json_pack("{s:o,s:I,s:I,s:I,s:I,s:I,s:I}", "name", ju_string(s->name), "count",
	                 (json_int_t)s->count, "imported", (json_int_t)s->imported, "present",
	                 (json_int_t)s->present, "changed", (json_int_t)s->changed, "failed",
	                 (json_int_t)s->failed, "embed_failed", (json_int_t)s->embed_failed);
}

void route_import(http_req *r)
{
	struct import im = {.a = http_req_app(r), .sp = http_req_space(r),
	                    .ic = {.a = http_req_app(r), .job_kind = "import", .open = 1}};
	json_t *body = NULL;
	const char *dir;
	int root, dfd = -1;
	char rel[SP_PATH_MAX];
	api_err e;

	if (http_req_json(r, &body, &e) || ju_str(body, "dir", 1, &dir, &e) ||
	    ju_int(body, "limit", IMPORT_LIMIT, 1, IMPORT_LIMIT, &im.limit, &e))
		goto fail;
	if (ingest_map_root(im.a, dir, "'dir'", &root, rel, sizeof rel, &e) ||
	    sp_open(im.a->root_fds[root], rel, SP_DIR, &dfd, NULL, &e))
		goto fail;
	if (!(im.vec = malloc(sizeof(float) * (size_t)im.sp->dim)) ||
	    !(im.line = malloc(LINE_MAX_BYTES))) {
		api_fail(&e, API_ENOMEM, "out of memory");
		goto fail;
	}
	if (find_shards(&im, dfd, rel, &e))
		goto fail;
	for (size_t i = 0; i < im.n; i++)
		if (verify_shard(&im, &im.shards[i], &e))
			goto fail;
	if (ingest_begin(&im.ic, &e))
		goto fail;
	for (size_t i = 0; i < im.n && !im.failed && !im.more; i++)
		import_shard(&im, &im.shards[i]);
	sync_index(&im);
	if (ingest_end(&im.ic, &e) && !im.failed) {
		im.fatal = e;
		im.failed = 1;
	}
	if (im.failed) {
		e = im.fatal;
		goto fail;
	}
	int64_t tot[4] = {0};
	json_t *shards = json_array();
	for (size_t i = 0; i < im.n; i++) {
		const struct shard *s = &im.shards[i];
		tot[0] += s->imported;
		tot[1] += s->present;
		tot[2] += s->changed;
		tot[3] += s->failed;
		json_array_append_new(shards, shard_json(s));
	}
	log_info("import of %zu shard(s), job %lld: %lld imported, %lld present, %lld changed, "
	         "%lld failed%s",
	         im.n, (long long)im.ic.job_id, (long long)tot[0], (long long)tot[1],
	         (long long)tot[2], (long long)tot[3], im.more ? " (stopped at the limit)" : "");
	http_reply_json(r, 200,
	                json_pack("{s:I,s:b,s:I,s:I,s:I,s:I,s:o}", "job", (json_int_t)im.ic.job_id,
	                          "done", !im.more, "imported", (json_int_t)tot[0], "present",
	                          (json_int_t)tot[1], "changed", (json_int_t)tot[2], "failed",
	                          (json_int_t)tot[3], "shards", shards));
	goto out;
fail:
	sync_index(&im);
	http_reply_error(r, &e);
out:
	ingest_end(&im.ic, NULL);
	for (size_t i = 0; i < im.n; i++)
		close(im.shards[i].dirfd);
	free(im.shards);
	free(im.vec);
	free(im.line);
	if (dfd >= 0)
		close(dfd);
	json_decref(body);
}
