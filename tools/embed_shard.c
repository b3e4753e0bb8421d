/*
 * embed_shard.c: clip-embed --list FILE --shard I/N --out DIR, one shard of
 * a list of images embedded into a directory that POST /v1/import loads.
 * The format, and what a complete shard promises, is docs/SHARDS.md.
 *
 * Crash safety: everything is written into a temporary directory beside
 * the shard's final name, each file and then the directory are fsynced,
 * and one rename(2) makes the shard appear; the output directory is
 * fsynced after it. So the final name holds a complete shard or nothing,
 * whenever the task dies. A temporary directory of the same shard left by
 * a dead run holds only the files named below, and is removed before the
 * shard is written again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <glib.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clip.h"
#include "embed_shard.h"

#define MAX_SHARDS 99999
#define MAX_BATCH 256

/* The files of a shard, in the order they are written (manifest last). */
enum { F_EMB, F_ITEMS, F_FAILED, NFILES };
static const char *const FILE_NAMES[NFILES] = {"embeddings.f32", "items.jsonl", "failed.jsonl"};
static const char MANIFEST[] = "manifest.json";

/* One output file, hashed and counted as it is written. */
struct out_file {
	int fd;
	GChecksum *sum;
	int64_t bytes;
};

/* One image of the batch being filled. */
struct pending {
	char *path;
	char sha[65];
	int64_t bytes;
};

struct shard {
	const struct shard_args *a;
	clip_model *m;
	clip_ctx *ctx;
	char model_id[32];
	int dim, S;
	char final[4096], tmp[4096], name[64];
	struct out_file f[NFILES];
	float *pix, *emb;
	struct pending batch[MAX_BATCH];
	int nbatch;
	int64_t count, failed;
	unsigned char *buf;   /* one image's bytes, --max-bytes + 1 */
};

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("clip-embed: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return -1;
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

static int out_write(struct shard *s, int which, const void *p, size_t n)
{
	struct out_file *o = &s->f[which];
	if (write_all(o->fd, p, n) != 0)
		return die("%s/%s: %s", s->tmp, FILE_NAMES[which], strerror(errno));
	g_checksum_update(o->sum, p, (gssize)n);
	o->bytes += (int64_t)n;
	return 0;
}

/* Writes one JSON object as a line. */
static int out_line(struct shard *s, int which, json_t *o)
{
	char *t = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
	json_decref(o);
	if (!t)
		return die("out of memory");
	int rc = out_write(s, which, t, strlen(t));
	if (rc == 0)
		rc = out_write(s, which, "\n", 1);
	free(t);
	return rc;
}

/* A path is the list's bytes; JSON needs UTF-8, so a path that is not
 * (only ever in failed.jsonl, which says so) is written with each byte as a
 * code point U+0000..U+00FF (Latin-1), as the daemon names such files
 * (jsonutil.h ju_string). */
static json_t *path_string(const char *p)
{
	if (g_utf8_validate(p, -1, NULL))
		return json_string(p);
	GString *g = g_string_new(NULL);
	for (const unsigned char *c = (const unsigned char *)p; *c; c++)
		g_string_append_unichar(g, *c);
	json_t *j = json_string(g->str);
	g_string_free(g, TRUE);
	return j;
}

static int record_failure(struct shard *s, const char *path, const char *why)
{
	s->failed++;
	return out_line(s, F_FAILED, json_pack("{s:o,s:s}", "path", path_string(path), "error", why));
}

/* Reads path whole (at most max_bytes) into s->buf; *n its size. Returns 0,
 * or fills why and returns 1 for a file that cannot be used. */
static int read_image(struct shard *s, const char *path, size_t *n, char *why, size_t whysize)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	if (fd < 0) {
		snprintf(why, whysize, "cannot open: %s", strerror(errno));
		return 1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, whysize, "not a regular file");
		close(fd);
		return 1;
	}
	size_t got = 0, cap = (size_t)s->a->max_bytes + 1;
	while (got < cap) {
		ssize_t r = read(fd, s->buf + got, cap - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(why, whysize, "cannot read: %s", strerror(errno));
			close(fd);
			return 1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (got > (size_t)s->a->max_bytes) {
		snprintf(why, whysize, "over --max-bytes (%lld bytes)", (long long)s->a->max_bytes);
		return 1;
	}
	if (got == 0) {
		snprintf(why, whysize, "the file is empty");
		return 1;
	}
	*n = got;
	return 0;
}

/* Encodes the batch and writes its rows and items. */
static int flush_batch(struct shard *s)
{
	clip_err err;
	int rc = 0;
	if (s->nbatch == 0)
		return 0;
	if (clip_encode_images(s->ctx, s->nbatch, s->pix, s->emb, &err) != CLIP_OK) {
		rc = die("encoding: %s", err.msg);
		goto out;
	}
	for (int i = 0; i < s->nbatch && rc == 0; i++) {
		float *v = s->emb + (size_t)i * s->dim;
		clip_normalize(v, s->dim);
		rc = out_write(s, F_EMB, v, sizeof(float) * (size_t)s->dim);
		if (rc == 0)
			rc = out_line(s, F_ITEMS,
			              json_pack("{s:o,s:s,s:I}", "path", path_string(s->batch[i].path),
			                        "sha256", s->batch[i].sha, "bytes",
			                        (json_int_t)s->batch[i].bytes));
		s->count++;
	}
out:
	for (int i = 0; i < s->nbatch; i++)
		free(s->batch[i].path);
	s->nbatch = 0;
	return rc;
}

static int add_path(struct shard *s, const char *path)
{
	char why[300];
	size_t n;
	clip_err err;
	/* items.jsonl names a file by its path as a JSON string, which the
	 * importer opens: only a UTF-8 path survives that unchanged. */
	if (!g_utf8_validate(path, -1, NULL))
		return record_failure(s, path, "the path is not UTF-8: it cannot be imported as it is");
	if (read_image(s, path, &n, why, sizeof why))
		return record_failure(s, path, why);
	size_t plane = (size_t)3 * s->S * s->S;
	if (clip_preprocess_buffer(s->m, s->buf, n, NULL, s->pix + (size_t)s->nbatch * plane, NULL,
	                           NULL, &err) != CLIP_OK)
		return record_failure(s, path, err.msg);
	struct pending *p = &s->batch[s->nbatch];
	if (!(p->path = strdup(path)))
		return die("out of memory");
	GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
	g_checksum_update(sum, s->buf, (gssize)n);
	snprintf(p->sha, sizeof p->sha, "%s", g_checksum_get_string(sum));
	g_checksum_free(sum);
	p->bytes = (int64_t)n;
	if (++s->nbatch == s->a->batch)
		return flush_batch(s);
	return 0;
}

static int fsync_path(const char *path, int dir)
{
	int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* Reads the list and embeds the shard's share of it. */
static int embed_list(struct shard *s)
{
	FILE *f = fopen(s->a->list, "r");
	if (!f)
		return die("%s: %s", s->a->list, strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int64_t k = 0;
	int rc = 0;
	while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = 0;
		if (len == 0)
			continue;
		if ((size_t)len != strlen(line)) {
			rc = die("%s: line %lld holds a NUL byte", s->a->list, (long long)k + 1);
			break;
		}
		if (k++ % s->a->nshards != s->a->shard)
			continue;
		rc = add_path(s, line);
	}
	if (rc == 0 && ferror(f))
		rc = die("%s: %s", s->a->list, strerror(errno));
	free(line);
	fclose(f);
	return rc == 0 ? flush_batch(s) : rc;
}

static int write_manifest(struct shard *s)
{
	char when[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_t *files = json_object();
	for (int i = 0; i < NFILES; i++)
		json_object_set_new(files, FILE_NAMES[i],
		                    json_pack("{s:I,s:s}", "bytes", (json_int_t)s->f[i].bytes, "sha256",
		                              g_checksum_get_string(s->f[i].sum)));
	json_t *m = json_pack("{s:s,s:i,s:s,s:i,s:s,s:i,s:i,s:I,s:I,s:o,s:o,s:s}", "format",
	                      "clipd-shard", "version", 1, "model", s->model_id, "dim", s->dim,
	                      "precision", clip_precision_name(clip_model_precision(s->m)), "shard",
	                      s->a->shard, "shards", s->a->nshards, "count", (json_int_t)s->count,
	                      "failed", (json_int_t)s->failed, "list", path_string(s->a->list),
	                      "files", files, "created", when);
	char *t = m ? json_dumps(m, JSON_INDENT(1) | JSON_ENSURE_ASCII) : NULL;
	json_decref(m);
	if (!t)
		return die("out of memory");
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", s->tmp, MANIFEST);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	int rc = fd < 0 || write_all(fd, t, strlen(t)) || write_all(fd, "\n", 1) || fsync(fd);
	if (fd >= 0 && close(fd) != 0)
		rc = 1;
	free(t);
	return rc ? die("%s: %s", path, strerror(errno)) : 0;
}

/* Whether dir holds a shard's manifest of this format (the shard's final
 * name only ever holds a complete one); *count and *failed its counts. */
static int shard_complete(const char *dir, json_int_t *count, json_int_t *failed)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, MANIFEST);
	json_error_t je;
	json_t *m = json_load_file(path, 0, &je);
	const char *format = m ? json_string_value(json_object_get(m, "format")) : NULL;
	int ok = format && !strcmp(format, "clipd-shard");
	*count = json_integer_value(json_object_get(m, "count"));
	*failed = json_integer_value(json_object_get(m, "failed"));
	json_decref(m);
	return ok;
}

/* Removes the temporary directories a dead run of this shard left: those
 * named .NAME.XXXXXX, with the files of a shard in them. Anything else
 * found in one is not clip-embed's to delete: that directory stays, with a
 * warning (the importer ignores it, as every name starting with a dot). */
static void remove_stale(struct shard *s)
{
	char prefix[80];
	snprintf(prefix, sizeof prefix, ".%s.", s->name);
	DIR *d = opendir(s->a->out);
	struct dirent *e;
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 ||
		    strlen(e->d_name) != strlen(prefix) + 6)
			continue;
		char dir[4200], f[4400];
		snprintf(dir, sizeof dir, "%s/%s", s->a->out, e->d_name);
		for (int i = 0; i <= NFILES; i++) {
			snprintf(f, sizeof f, "%s/%s", dir, i < NFILES ? FILE_NAMES[i] : MANIFEST);
			unlink(f);
		}
		if (rmdir(dir) != 0)
			fprintf(stderr, "clip-embed: left %s (%s): it holds files that are not a shard's\n",
			        dir, strerror(errno));
		else
			fprintf(stderr, "clip-embed: removed %s, left by an earlier run\n", dir);
	}
	closedir(d);
}

static int open_outputs(struct shard *s)
{
	snprintf(s->tmp, sizeof s->tmp, "%s/.%s.XXXXXX", s->a->out, s->name);
	if (!mkdtemp(s->tmp))
		return die("%s: %s", s->tmp, strerror(errno));
	/* mkdtemp's 0700 would keep the shard from a daemon running as
	 * another user; the files are made under the umask as usual. */
	mode_t mask = umask(0);
	umask(mask);
	if (chmod(s->tmp, 0777 & ~mask) != 0)
		return die("%s: %s", s->tmp, strerror(errno));
	for (int i = 0; i < NFILES; i++) {
		char path[4200];
		snprintf(path, sizeof path, "%s/%s", s->tmp, FILE_NAMES[i]);
		s->f[i].fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (s->f[i].fd < 0)
			return die("%s: %s", path, strerror(errno));
	}
	return 0;
}

/* Makes the shard durable and gives it its name. */
static int commit(struct shard *s)
{
	for (int i = 0; i < NFILES; i++) {
		if (fsync(s->f[i].fd) != 0 || close(s->f[i].fd) != 0) {
			s->f[i].fd = -1;
			return die("%s/%s: %s", s->tmp, FILE_NAMES[i], strerror(errno));
		}
		s->f[i].fd = -1;
	}
	if (write_manifest(s) != 0)
		return -1;
	if (fsync_path(s->tmp, 1) != 0)
		return die("%s: %s", s->tmp, strerror(errno));
	if (rename(s->tmp, s->final) != 0)
		return die("%s -> %s: %s", s->tmp, s->final, strerror(errno));
	s->tmp[0] = 0;
	if (fsync_path(s->a->out, 1) != 0)
		return die("%s: %s", s->a->out, strerror(errno));
	return 0;
}

static void print_result(const struct shard *s, const char *state, json_int_t embedded,
                         json_int_t failed)
{
	json_t *o = json_pack("{s:i,s:i,s:o,s:s,s:I,s:I}", "shard", s->a->shard, "shards",
	                      s->a->nshards, "dir", path_string(s->final), "state", state, "embedded",
	                      embedded, "failed", failed);
	char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (t)
		puts(t);
	free(t);
	json_decref(o);
	fflush(stdout);
}

int embed_shard_parse(const char *spec, int *shard, int *nshards)
{
	char *end;
	errno = 0;
	long i = strtol(spec, &end, 10);
	if (errno || end == spec || *end != '/')
		return -1;
	const char *rest = end + 1;
	long n = strtol(rest, &end, 10);
	if (errno || end == rest || *end || n < 1 || n > MAX_SHARDS || i < 0 || i >= n)
		return -1;
	*shard = (int)i;
	*nshards = (int)n;
	return 0;
}

int embed_shard_run(const struct shard_args *a)
{
	struct shard s = {.a = a};
	clip_err err;
	int rc = 1;
	for (int i = 0; i < NFILES; i++)
		s.f[i].fd = -1;
	if (a->batch < 1 || a->batch > MAX_BATCH) {
		die("--batch must be 1..%d", MAX_BATCH);
		return 2;
	}
	snprintf(s.name, sizeof s.name, "shard-%05d-of-%05d", a->shard, a->nshards);
	if ((size_t)snprintf(s.final, sizeof s.final, "%s/%s", a->out, s.name) >= sizeof s.final - 64) {
		die("--out path is too long");
		return 2;
	}
	struct stat st;
	/* The array's tasks may all create it at once: EEXIST is success. */
	if (stat(a->out, &st) != 0 && errno == ENOENT && mkdir(a->out, 0777) != 0 && errno != EEXIST) {
		die("--out %s: %s", a->out, strerror(errno));
		return 1;
	}
	if (stat(a->out, &st) != 0 || !S_ISDIR(st.st_mode)) {
		die("--out %s: not a directory", a->out);
		return 1;
	}
	json_int_t count, failed;
	if (lstat(s.final, &st) == 0) {
		if (!S_ISDIR(st.st_mode) || !shard_complete(s.final, &count, &failed)) {
			die("%s exists and is not a shard: remove it to write the shard again", s.final);
			return 1;
		}
		print_result(&s, "complete", count, failed);
		return 0;
	}
	remove_stale(&s);

	if (clip_model_open_opts(a->model, &a->opts, &s.m, &err) != CLIP_OK) {
		die("%s: %s", a->model, err.msg);
		return 1;
	}
	if (clip_fingerprint(a->model, s.model_id, sizeof s.model_id, &err) != CLIP_OK ||
	    clip_ctx_new(s.m, a->batch, &s.ctx, &err) != CLIP_OK) {
		die("%s", err.msg);
		goto out;
	}
	s.dim = clip_model_dim(s.m);
	s.S = clip_model_image_size(s.m);
	s.pix = malloc((size_t)a->batch * 3 * s.S * s.S * sizeof *s.pix);
	s.emb = malloc((size_t)a->batch * s.dim * sizeof *s.emb);
	s.buf = malloc((size_t)a->max_bytes + 1);
	if (!s.pix || !s.emb || !s.buf) {
		die("out of memory");
		goto out;
	}
	for (int i = 0; i < NFILES; i++)
		s.f[i].sum = g_checksum_new(G_CHECKSUM_SHA256);
	if (open_outputs(&s) || embed_list(&s) || commit(&s))
		goto out;
	print_result(&s, "written", (json_int_t)s.count, (json_int_t)s.failed);
	rc = 0;
out:
	for (int i = 0; i < NFILES; i++) {
		if (s.f[i].fd >= 0)
			close(s.f[i].fd);
		if (s.f[i].sum)
			g_checksum_free(s.f[i].sum);
	}
	if (rc != 0 && s.tmp[0]) {
		/* Nothing of a failed run is left for the importer to see. */
		for (int i = 0; i <= NFILES; i++) {
			char f[4400];
			snprintf(f, sizeof f, "%s/%s", s.tmp, i < NFILES ? FILE_NAMES[i] : MANIFEST);
			unlink(f);
		}
		rmdir(s.tmp);
	}
	for (int i = 0; i < s.nbatch; i++)
		free(s.batch[i].path);
	free(s.pix);
	free(s.emb);
	free(s.buf);
	clip_ctx_free(s.ctx);
	clip_model_close(s.m);
	return rc;
}
