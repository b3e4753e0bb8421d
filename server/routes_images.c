/* routes_images.c: upload one image, read, change and delete images, and
 * their thumbnails. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "ingest.h"
#include "jsonutil.h"
#include "log.h"
#include "routes.h"
#include "space.h"
#include "thumbs.h"
#include "worker.h"

/* Parses and re-serialises user metadata (a JSON object within the
 * limits of jsonutil.h); *out malloc'ed, NULL when src is. */
static int meta_text(const char *src, size_t len, const char *what, char **out, api_err *err)
{
	*out = NULL;
	return src ? ju_meta_parse(src, len, what, out, err) : 0;
}

static const char *base_name(const char *s)
{
	const char *slash = s ? strrchr(s, '/') : NULL;
	return slash ? slash + 1 : s;
}

void route_image_upload(http_req *r)
{
	app *a = http_req_app(r);
	api_err e;
	blob_writer *bw = NULL;
	char *meta = NULL;
	const char *filename = NULL;
	int wait = 0;
	const char *q;

	if ((q = http_req_query(r, "wait")) && ju_parse_bool_str(q, "wait", &wait, &e))
		goto fail;
	if (http_req_parts(r)) {
		http_part *file = NULL;
		for (http_part *p = http_req_parts(r); p && !file; p = p->next)
			if (p->bw && (!strcmp(p->key, "image") || !strcmp(p->key, "file")))
				file = p;
		for (http_part *p = http_req_parts(r); p && !file; p = p->next)
			if (p->bw)
				file = p;
		if (!file) {
			api_fail(&e, API_EBADREQ, "missing file: send a part named 'image' with a filename");
			goto fail;
		}
		http_part *mp = http_req_part(r, "meta");
		if (mp && meta_text(mp->data ? mp->data : "", mp->len, "the 'meta' part", &meta, &e))
			goto fail;
		filename = base_name(file->filename);
		bw = http_part_take(file);
	} else if (http_req_content_is(r, "image/") || http_req_content_is(r, "application/octet-stream")) {
		bw = http_req_take_raw(r);
		if (!bw) {
			api_fail(&e, API_EBADREQ, "request body is empty: send the image bytes");
			goto fail;
		}
		filename = base_name(http_req_query(r, "filename"));
		q = http_req_query(r, "meta");
		if (q && meta_text(q, strlen(q), "parameter 'meta'", &meta, &e))
			goto fail;
	} else {
		size_t len;
		http_req_body(r, &len);
		if (http_req_content_is(r, "multipart/"))
			api_fail(&e, API_EBADREQ, "missing file: send a part named 'image' with a filename");
		else if (len == 0 && !http_req_header(r, "Content-Type"))
			api_fail(&e, API_EBADREQ, "request body is empty: send an image");
		else
			api_fail(&e, API_EUNSUPPORTED,
			         "send the image as multipart/form-data (part 'image') or as a raw body with "
			         "Content-Type image/*");
		goto fail;
	}
	if (ingest_queue_check(a, 1, &e))
		goto fail;

	ingest_ctx ic = {.a = a, .job_kind = "upload"};
	int64_t id;
	int dup;
	int rc = ingest_blob(&ic, bw, filename, meta, &id, &dup, NULL, &e);
	bw = NULL;
	if (rc)
		goto fail;
	if (dup) {
		store_image img;
		store_err se;
		if (store_image_get(a->st, id, &img, &se) != STORE_OK) {
			api_from_store(&e, &se);
			goto fail;
		}
		json_t *o = route_image_json(&img);
		json_object_set_new(o, "duplicate", json_true());
		store_image_clear(&img);
		http_reply_json(r, 200, o);
		goto out;
	}
	if (wait) {
		store_job job;
		int done;
		if (worker_pool_wait_job(a->workers, ic.job_id, a->cfg->wait_max_s * 1000, &job, &done, &e))
			goto fail;
		store_job_clear(&job);
		store_image img;
		store_err se;
		if (store_image_get(a->st, id, &img, &se) != STORE_OK) {
			api_from_store(&e, &se);
			goto fail;
		}
		if (img.status == STORE_FAILED) {
			api_fail(&e, API_EUNDECODABLE, "image %lld could not be indexed: %s", (long long)id,
			         img.error ? img.error : "unknown reason");
			store_image_clear(&img);
			goto fail;
		}
		json_t *o = route_image_json(&img);
		json_object_set_new(o, "job_id", json_integer(ic.job_id));
		store_image_clear(&img);
		http_reply_json(r, done ? 200 : 202, o);
		goto out;
	}
	http_reply_json(r, 202,
	                json_pack("{s:I,s:s,s:I}", "id", (json_int_t)id, "status", "pending", "job_id",
	                          (json_int_t)ic.job_id));
	goto out;
fail:
	http_reply_error(r, &e);
out:
	blob_writer_free(bw);
	free(meta);
}

void route_image_get(http_req *r)
{
	app *a = http_req_app(r);
	store_image img;
	store_err se;
	api_err e;
	if (store_image_get(a->st, http_req_id(r), &img, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	http_reply_json(r, 200, route_image_json(&img));
	store_image_clear(&img);
}

void route_image_patch(http_req *r)
{
	app *a = http_req_app(r);
	json_t *body = NULL, *meta;
	char *text = NULL;
	store_err se;
	api_err e;
	store_image img;
	if (http_req_json(r, &body, &e) || ju_object(body, "meta", &meta, &e))
		goto fail;
	if (!meta) {
		api_fail(&e, API_EBADREQ, "missing field 'meta' (a JSON object replacing the metadata)");
		goto fail;
	}
	if (ju_meta(meta, "field 'meta'", &text, &e))
		goto fail;
	if (store_image_set_meta(a->st, http_req_id(r), text, &se) != STORE_OK ||
	    store_image_get(a->st, http_req_id(r), &img, &se) != STORE_OK) {
		api_from_store(&e, &se);
		goto fail;
	}
	http_reply_json(r, 200, route_image_json(&img));
	store_image_clear(&img);
	goto out;
fail:
	http_reply_error(r, &e);
out:
	free(text);
	json_decref(body);
}

void route_image_delete(http_req *r)
{
	app *a = http_req_app(r);
	int64_t id = http_req_id(r);
	store_image img;
	store_err se;
	api_err e;
	if (store_image_get(a->st, id, &img, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	blobs_lock(a->blobs, img.sha256);
	int rc = store_image_delete(a->st, id, &se);
	if (rc == STORE_OK) {
		if (blobs_remove(a->blobs, img.sha256, &e))
			log_warn("image %lld: %s", (long long)id, e.msg);
	}
	blobs_unlock(a->blobs, img.sha256);
	if (rc == STORE_OK)
		thumbs_remove(a, img.sha256);
	store_image_clear(&img);
	if (rc != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	space_sync(a, STORE_IMAGE);
	http_reply_json(r, 200, json_pack("{s:I,s:b}", "id", (json_int_t)id, "deleted", 1));
}

void route_image_file(http_req *r)
{
	app *a = http_req_app(r);
	store_image img;
	store_err se;
	api_err e;
	char path[4096];
	struct stat st;
	if (store_image_get(a->st, http_req_id(r), &img, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	blobs_path(a->blobs, img.sha256, path, sizeof path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		if (fd >= 0)
			close(fd);
		api_fail(&e, API_ENOTFOUND, "the file of image %lld is gone", (long long)img.id);
		store_image_clear(&img);
		http_reply_error(r, &e);
		return;
	}
	/* The type is the one sniffed at upload: a browser must not guess
	 * another (an "image" that is really HTML or script). */
	http_add_header(r, "X-Content-Type-Options", "nosniff");
	http_reply_fd(r, fd, (uint64_t)st.st_size, img.mime);
	store_image_clear(&img);
}

#define THUMB_CACHE_CONTROL "public, max-age=31536000, immutable"

void route_image_thumbnail(http_req *r)
{
	app *a = http_req_app(r);
	store_image img;
	store_err se;
	api_err e;
	int size, fd, cached;
	uint64_t bytes;
	char etag[96];
	if (thumbs_parse_size(http_req_query(r, "size"), &size, &e)) {
		http_reply_error(r, &e);
		return;
	}
	if (store_image_get(a->st, http_req_id(r), &img, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	/* The content and the size make the thumbnail: it never changes. The
	 * caching headers go on 200 and 304 only, never on an error. */
	snprintf(etag, sizeof etag, "\"%s-%d\"", img.sha256, size);
	const char *inm = http_req_header(r, "If-None-Match");
	if (inm && (strstr(inm, etag) || !strcmp(inm, "*"))) {
		http_add_header(r, "Cache-Control", THUMB_CACHE_CONTROL);
		http_add_header(r, "ETag", etag);
		http_add_header(r, "X-Content-Type-Options", "nosniff");
		http_reply_data(r, 304, "", 0, 0, NULL);
		store_image_clear(&img);
		return;
	}
	if (thumbs_open(a, img.sha256, size, &fd, &bytes, &cached, &e)) {
		if ((e.domain == ERR_API && (e.code == API_EUNDECODABLE || e.code == API_ETOOBIG)) ||
		    (e.domain == ERR_CLIP && e.code == CLIP_ELIMIT)) {
			char msg[sizeof e.msg];
			snprintf(msg, sizeof msg, "image %lld has no thumbnail: %.200s", (long long)img.id,
			         e.msg);
			snprintf(e.msg, sizeof e.msg, "%s", msg);
		}
		store_image_clear(&img);
		http_reply_error(r, &e);
		return;
	}
	http_add_header(r, "Cache-Control", THUMB_CACHE_CONTROL);
	http_add_header(r, "ETag", etag);
	http_add_header(r, "X-Thumbnail-Cache", cached ? "hit" : "miss");
	http_add_header(r, "X-Content-Type-Options", "nosniff");
	http_reply_fd(r, fd, bytes, "image/jpeg");
	store_image_clear(&img);
}
