/* routes_ingest.c: POST /v1/ingest, bulk: multipart files, server paths, a
 * server directory. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app.h"
#include "ingest.h"
#include "jsonutil.h"
#include "log.h"
#include "routes.h"

#define MAX_FILES 100000
#define MAX_DEPTH 32

struct bulk {
	ingest_ctx ic;
	json_t *items, *rejected;
	int64_t accepted, duplicates;
	api_err fatal;   /* a server-side failure: stop and answer it */
	int failed;
};

static void reject(struct bulk *b, const char *name, const api_err *e)
{
	const char *code;
	api_err_status(e, &code);
	/* Names are the client's bytes (a Latin-1 file name): json_pack
	 * would refuse them and the entry would silently be missing. */
	json_array_append_new(b->rejected,
	                      json_pack("{s:o,s:s,s:o}", "name", ju_string_lossy(name ? name : ""),
	                                "code", code, "error", ju_string_lossy(e->msg)));
}

/* Ingests one blob; 4xx problems become a rejection, 5xx stops the batch. */
static void one(struct bulk *b, blob_writer *bw, const char *name, const char *meta)
{
	api_err e;
	int64_t id;
	int dup;
	if (ingest_blob(&b->ic, bw, name, meta, &id, &dup, NULL, &e)) {
		int status = api_err_status(&e, NULL);
		if (status >= 500) {
			b->fatal = e;
			b->failed = 1;
		} else {
			reject(b, name, &e);
		}
		return;
	}
	if (dup)
		b->duplicates++;
	else
		b->accepted++;
	json_array_append_new(b->items, json_pack("{s:o,s:I,s:s}", "name",
	                                          ju_string_lossy(name ? name : ""), "id",
	                                          (json_int_t)id, "status", dup ? "duplicate" : "pending"));
}

static void one_path(struct bulk *b, const char *shown, const char *real)
{
	blob_writer *bw;
	api_err e;
	if (ingest_read_file(b->ic.a, real, &bw, &e)) {
		if (api_err_status(&e, NULL) >= 500) {
			b->fatal = e;
			b->failed = 1;
		} else {
			reject(b, shown, &e);
		}
		return;
	}
	one(b, bw, real, NULL);
}

/* Collects regular files under dir (sorted, hidden entries skipped). */
static int walk(const char *dir, int recursive, int depth, char ***files, size_t *n, size_t *cap,
                api_err *err)
{
	struct dirent **ents;
	int ne = scandir(dir, &ents, NULL, alphasort);
	int rc = 0;
	if (ne < 0)
		return api_fail(err, API_EFORBIDDEN, "cannot read the directory: %s", strerror(errno));
	for (int i = 0; i < ne; i++) {
		const char *name = ents[i]->d_name;
		char *path = NULL;
		struct stat st;
		if (rc || name[0] == '.' || asprintf(&path, "%s/%s", dir, name) < 0)
			goto next;
		if (lstat(path, &st) != 0)
			goto next;
		if (S_ISDIR(st.st_mode)) {
			if (recursive && depth < MAX_DEPTH)
				rc = walk(path, recursive, depth + 1, files, n, cap, err);
		} else if (S_ISREG(st.st_mode)) {
			if (*n == MAX_FILES) {
				rc = api_fail(err, API_ETOOBIG, "the directory has more than %d files: ingest it in parts",
				              MAX_FILES);
				goto next;
			}
			if (*n == *cap) {
				size_t nc = *cap ? *cap * 2 : 64;
				char **p = realloc(*files, nc * sizeof *p);
				if (!p) {
					rc = api_fail(err, API_ENOMEM, "out of memory");
					goto next;
				}
				*files = p;
				*cap = nc;
			}
			(*files)[(*n)++] = path;
			path = NULL;
		}
	next:
		free(path);
		free(ents[i]);
	}
	free(ents);
	return rc;
}

static void reply_bulk(http_req *r, struct bulk *b)
{
	/* Every bulk request answers with a job, done once sealed here: the
	 * refused files are its failed items, listed by GET /v1/jobs/{id}. */
	size_t i;
	json_t *v;
	if (!b->failed && ingest_begin(&b->ic, &b->fatal))
		b->failed = 1;
	json_array_foreach(b->rejected, i, v) {
		if (b->failed)
			break;
		if (ingest_reject(&b->ic, json_string_value(json_object_get(v, "name")),
		                  json_string_value(json_object_get(v, "error")), &b->fatal))
			b->failed = 1;
	}
	api_err e;
	if (ingest_end(&b->ic, &e) && !b->failed) {
		b->fatal = e;
		b->failed = 1;
	}
	if (b->failed) {
		http_reply_error(r, &b->fatal);
		return;
	}
	json_t *o = json_pack("{s:o,s:I,s:I,s:O,s:O}", "job_id",
	                      b->ic.job_id ? json_integer(b->ic.job_id) : json_null(), "accepted",
	                      (json_int_t)b->accepted, "duplicates", (json_int_t)b->duplicates, "items",
	                      b->items, "rejected", b->rejected);
	http_reply_json(r, 202, o);
}

static void ingest_parts(http_req *r, struct bulk *b)
{
	app *a = http_req_app(r);
	api_err e;
	int64_t nfiles = 0;
	char *meta = NULL;
	for (http_part *p = http_req_parts(r); p; p = p->next)
		nfiles += p->bw != NULL;
	if (nfiles == 0) {
		api_fail(&e, API_EBADREQ, "no files: send parts with a filename");
		http_reply_error(r, &e);
		return;
	}
	http_part *mp = http_req_part(r, "meta");
	if (mp) {
		json_t *j = json_loadb(mp->data ? mp->data : "", mp->len, 0, NULL);
		if (!json_is_object(j)) {
			json_decref(j);
			api_fail(&e, API_EBADREQ, "the 'meta' part must be a JSON object");
			http_reply_error(r, &e);
			return;
		}
		meta = json_dumps(j, JSON_COMPACT);
		json_decref(j);
	}
	if (ingest_queue_check(a, nfiles, &e)) {
		free(meta);
		http_reply_error(r, &e);
		return;
	}
	b->ic.job_kind = "batch";
	for (http_part *p = http_req_parts(r); p && !b->failed; p = p->next) {
		if (!p->bw)
			continue;
		const char *slash = strrchr(p->filename, '/');
		one(b, http_part_take(p), slash ? slash + 1 : p->filename, meta);
	}
	free(meta);
	reply_bulk(r, b);
}

static void ingest_json(http_req *r, struct bulk *b)
{
	app *a = http_req_app(r);
	json_t *body = NULL, *paths;
	const char *dir;
	int recursive;
	api_err e;
	char **files = NULL, **shown = NULL;
	size_t nf = 0, cap = 0;

	if (http_req_json(r, &body, &e) || ju_str_array(body, "paths", 0, MAX_FILES, &paths, &e) ||
	    ju_str(body, "dir", 0, &dir, &e) || ju_bool(body, "recursive", 0, &recursive, &e))
		goto fail;
	if (!paths == !dir) {
		api_fail(&e, API_EBADREQ, "give one of 'paths' (an array of files) or 'dir'");
		goto fail;
	}
	if (paths) {
		size_t i;
		json_t *v;
		if (!(files = calloc(json_array_size(paths) + 1, sizeof *files)) ||
		    !(shown = calloc(json_array_size(paths) + 1, sizeof *shown))) {
			api_fail(&e, API_ENOMEM, "out of memory");
			goto fail;
		}
		/* Every path is checked before anything is stored: one outside
		 * the roots refuses the whole request. */
		json_array_foreach(paths, i, v) {
			const char *p = json_string_value(v);
			shown[nf] = (char *)p;
			if (ingest_check_root(a, p, &files[nf], &e)) {
				if (e.domain == ERR_API && e.code == API_ENOTFOUND) {
					reject(b, p, &e);
					continue;
				}
				goto fail;
			}
			nf++;
		}
		b->ic.job_kind = "batch";
	} else {
		char *real;
		struct stat st;
		if (ingest_check_root(a, dir, &real, &e))
			goto fail;
		if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
			free(real);
			api_fail(&e, API_EBADREQ, "'%s' is not a directory", dir);
			goto fail;
		}
		int rc = walk(real, recursive, 0, &files, &nf, &cap, &e);
		free(real);
		if (rc)
			goto fail;
		b->ic.job_kind = "folder";
	}
	if (ingest_queue_check(a, (int64_t)nf, &e))
		goto fail;
	for (size_t i = 0; i < nf && !b->failed; i++) {
		char *real = NULL;
		if (!paths) {
			/* A symlink in the tree may point outside the roots. */
			if (ingest_check_root(a, files[i], &real, &e)) {
				reject(b, files[i], &e);
				continue;
			}
			one_path(b, files[i], real);
			free(real);
		} else {
			one_path(b, shown[i], files[i]);
		}
	}
	reply_bulk(r, b);
	goto out;
fail:
	http_reply_error(r, &e);
out:
	for (size_t i = 0; files && i < nf; i++)
		free(files[i]);
	free(files);
	free(shown);
	json_decref(body);
}

void route_ingest(http_req *r)
{
	struct bulk b = {.ic = {.a = http_req_app(r), .job_kind = "batch", .open = 1}};
	b.items = json_array();
	b.rejected = json_array();
	if (http_req_parts(r) || http_req_content_is(r, "multipart/"))
		ingest_parts(r, &b);
	else
		ingest_json(r, &b);
	ingest_end(&b.ic, NULL); /* when a request failed half-way: its job is sealed as it is */
	json_decref(b.items);
	json_decref(b.rejected);
}
