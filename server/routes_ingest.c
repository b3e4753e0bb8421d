/* routes_ingest.c: POST /v1/ingest, bulk: multipart files, server paths, a
 * server directory (opened beneath its --allow-root: safepath.h). */
#include <errno.h>
#include <fcntl.h>
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
	                      json_pack("{s:o,s:s,s:s}", "name", ju_string(name ? name : ""), "code",
	                                code, "error", e->msg));
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
	json_array_append_new(b->items, json_pack("{s:o,s:I,s:s}", "name", ju_string(name ? name : ""),
	                                          "id", (json_int_t)id, "status",
	                                          dup ? "duplicate" : "pending"));
}

/* A file that could not be read: 4xx problems become a rejection (name
 * is its path under its root), 5xx stops the batch. */
static void problem(struct bulk *b, const char *name, const api_err *e)
{
	if (api_err_status(e, NULL) >= 500) {
		b->fatal = *e;
		b->failed = 1;
	} else {
		reject(b, name, e);
	}
}

/* Reads rel beneath the directory dirfd and ingests it as name. */
static void one_at(struct bulk *b, int dirfd, const char *rel, const char *name)
{
	blob_writer *bw;
	api_err e;
	if (ingest_read_at(b->ic.a, dirfd, rel, &bw, &e)) {
		problem(b, name, &e);
		return;
	}
	one(b, bw, name, NULL);
}

/* A {"dir"} walk, on descriptors only: each directory is opened beneath
 * the one it was listed in (no link followed), each file read beneath its
 * directory, and no path string is resolved twice. Two passes: the first
 * counts the files (and refuses the request when a directory cannot be
 * read or there are too many), the second ingests them. */
struct walk {
	struct bulk *b;
	int recursive;
	int ingest;                /* 0: the counting pass */
	size_t nfiles;             /* files met so far */
	char rel[SP_PATH_MAX];     /* the directory being walked, under its root */
};

/* Walks the directory open at dfd (w->rel). Hidden entries are skipped,
 * and so is anything but a directory or a regular file (links, FIFOs,
 * sockets, devices). Non-zero with *err only in the counting pass; the
 * ingesting pass records what it cannot read as rejections. */
static int walk(struct walk *w, int dfd, int depth, api_err *err)
{
	char **names;
	size_t n;
	api_err e;
	int rc = sp_list(dfd, MAX_FILES, &names, &n, &e);
	if (rc) {
		if (!w->ingest) {
			*err = e;
			return rc;
		}
		problem(w->b, w->rel[0] ? w->rel : ".", &e);
		return 0;
	}
	size_t base = strlen(w->rel);
	for (size_t i = 0; i < n && !rc && !w->b->failed; i++) {
		const char *name = names[i];
		size_t len = strlen(name);
		struct stat st;
		if (name[0] == '.' || fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		int is_dir = S_ISDIR(st.st_mode) && w->recursive && depth < MAX_DEPTH;
		if (!is_dir && !S_ISREG(st.st_mode))
			continue;
		if (base + 1 + len >= sizeof w->rel) {
			if (!w->ingest)
				rc = api_fail(err, API_EBADREQ, "a path under 'dir' is longer than %d bytes",
				              SP_PATH_MAX - 1);
			continue;
		}
		snprintf(w->rel + base, sizeof w->rel - base, "%s%s", base ? "/" : "", name);
		if (is_dir) {
			int cfd, orc = sp_open(dfd, name, SP_DIR, &cfd, NULL, &e);
			if (orc) {
				if (!w->ingest) {
					*err = e;
					rc = orc;
				} else {
					problem(w->b, w->rel, &e);
				}
			} else {
				rc = walk(w, cfd, depth + 1, err);
				close(cfd);
			}
		} else if (w->nfiles >= MAX_FILES) {
			if (!w->ingest)
				rc = api_fail(err, API_ETOOBIG,
				              "the directory has more than %d files: ingest it in parts", MAX_FILES);
		} else {
			w->nfiles++;
			if (w->ingest)
				one_at(w->b, dfd, name, w->rel);
		}
		w->rel[base] = 0;
	}
	sp_list_free(names, n);
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
	if (mp && ju_meta_parse(mp->data, mp->len, "the 'meta' part", &meta, &e)) {
		http_reply_error(r, &e);
		return;
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

/* A path a request names: its root and the path below it. */
struct target {
	int root;
	char *rel;
};

static void ingest_json(http_req *r, struct bulk *b)
{
	app *a = http_req_app(r);
	json_t *body = NULL, *paths;
	const char *dir;
	int recursive, root, dfd = -1;
	api_err e;
	struct target *t = NULL;
	struct walk *w = NULL;
	size_t nt = 0;
	char rel[SP_PATH_MAX];

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
		if (!(t = calloc(json_array_size(paths) + 1, sizeof *t))) {
			api_fail(&e, API_ENOMEM, "out of memory");
			goto fail;
		}
		/* Every path is mapped before anything is read or stored, by its
		 * text alone: one outside the roots refuses the whole request,
		 * whether it exists or not. */
		json_array_foreach(paths, i, v) {
			char what[32];
			snprintf(what, sizeof what, "paths[%zu]", i);
			if (ingest_map_root(a, json_string_value(v), what, &root, rel, sizeof rel, &e))
				goto fail;
			if (!(t[nt].rel = strdup(rel))) {
				api_fail(&e, API_ENOMEM, "out of memory");
				goto fail;
			}
			t[nt++].root = root;
		}
		b->ic.job_kind = "batch";
		if (ingest_queue_check(a, (int64_t)nt, &e))
			goto fail;
		/* Names shown are paths under their root: never the server's
		 * own layout. */
		for (size_t k = 0; k < nt && !b->failed; k++)
			one_at(b, a->root_fds[t[k].root], t[k].rel, t[k].rel);
	} else {
		if (ingest_map_root(a, dir, "'dir'", &root, rel, sizeof rel, &e) ||
		    sp_open(a->root_fds[root], rel, SP_DIR, &dfd, NULL, &e))
			goto fail;
		if (!(w = calloc(1, sizeof *w))) {
			api_fail(&e, API_ENOMEM, "out of memory");
			goto fail;
		}
		w->b = b;
		w->recursive = recursive;
		snprintf(w->rel, sizeof w->rel, "%s", rel);
		if (walk(w, dfd, 0, &e) || ingest_queue_check(a, (int64_t)w->nfiles, &e))
			goto fail;
		b->ic.job_kind = "folder";
		w->ingest = 1;
		w->nfiles = 0;
		walk(w, dfd, 0, &e);
	}
	reply_bulk(r, b);
	goto out;
fail:
	http_reply_error(r, &e);
out:
	for (size_t k = 0; t && k < nt; k++)
		free(t[k].rel);
	free(t);
	free(w);
	if (dfd >= 0)
		close(dfd);
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
