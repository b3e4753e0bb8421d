/* ingest.c: the producer side of the work queue. Uploads, bulk ingests and
 * watched folders become stored, queued items here (validate, store,
 * queue); worker.c is the consumer that encodes them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exif.h"
#include "ingest.h"
#include "log.h"
#include "safepath.h"
#include "sniff.h"
#include "worker.h"

/* Creates the context's job if it has none yet. */
static int ensure_job(ingest_ctx *ic, api_err *err)
{
	store_err se;
	if (ic->job_id)
		return 0;
	int rc = ic->open ? store_job_create_open(ic->a->st, ic->job_kind, &ic->job_id, &se)
	                  : store_job_create(ic->a->st, ic->job_kind, &ic->job_id, &se);
	return rc == STORE_OK ? 0 : api_from_store(err, &se);
}

int ingest_begin(ingest_ctx *ic, api_err *err)
{
	return ensure_job(ic, err);
}

int ingest_reject(ingest_ctx *ic, const char *name, const char *why, api_err *err)
{
	store_err se;
	int rc = ensure_job(ic, err);
	if (rc)
		return rc;
	if (store_job_add_failed(ic->a->st, ic->job_id, name, why, &se) != STORE_OK)
		return api_from_store(err, &se);
	return 0;
}

int ingest_end(ingest_ctx *ic, api_err *err)
{
	store_err se;
	if (ic->ended || !ic->job_id)
		return 0;
	ic->ended = 1;
	if (store_job_seal(ic->a->st, ic->job_id, &se) != STORE_OK)
		return api_from_store(err, &se);
	return 0;
}

/* The same content came again from a source other than the watcher: that
 * source holds the image now, and no watched file event may delete it. */
static int pin_duplicate(ingest_ctx *ic, int64_t id, api_err *err)
{
	store_err se;
	if (ic->watcher)
		return 0;
	return store_image_pin(ic->a->st, id, &se) == STORE_OK ? 0 : api_from_store(err, &se);
}

/* ingest_blob, and ingest_blob_embedded when given is non-NULL. */
static int store_blob(ingest_ctx *ic, blob_writer *bw, const char *filename, const char *meta_json,
                      const ingest_embedding *given, int64_t *id, int *duplicate, int *changed,
                      const char **mime, api_err *err)
{
	app *a = ic->a;
	const uint8_t *data;
	size_t len;
	sniff_info si;
	store_err se;
	store_exif exif = {0};
	int rc, locked = 0, committing = 0;
	char sha[65];

	*duplicate = 0;
	*id = 0;
	if (changed)
		*changed = 0;
	if (mime)
		*mime = NULL;
	if ((rc = blob_writer_finish(bw, err)))
		goto out;
	if (blob_writer_size(bw) == 0) {
		rc = api_fail(err, API_EBADREQ, "the file is empty");
		goto out;
	}
	if ((rc = blob_writer_data(bw, &data, &len, err)))
		goto out;
	if (!sniff_image(data, len, &si)) {
		char formats[128];
		clip_image_formats_text(formats, sizeof formats);
		rc = api_fail(err, API_EUNSUPPORTED, "not a supported image: the content is not %s",
		              formats);
		goto out;
	}
	if (mime)
		*mime = si.mime;
	if ((int64_t)si.width * (int64_t)si.height > a->cfg->max_pixels) {
		rc = api_fail(err, API_ETOOBIG, "image is %dx%d (%lld pixels), over the limit of %lld",
		              si.width, si.height, (long long)si.width * si.height,
		              (long long)a->cfg->max_pixels);
		goto out;
	}
	snprintf(sha, sizeof sha, "%s", blob_writer_sha(bw));
	blobs_lock(a->blobs, sha);
	locked = 1;

	store_image found;
	rc = store_image_find_sha(a->st, sha, &found, &se);
	if (rc == STORE_OK) {
		*id = found.id;
		*duplicate = 1;
		store_image_clear(&found);
		rc = pin_duplicate(ic, *id, err);
		goto out;
	}
	if (rc != STORE_ENOTFOUND) {
		rc = api_from_store(err, &se);
		goto out;
	}
	if ((rc = ensure_job(ic, err)))
		goto out;
	/* What the file says about itself goes in with its row, in the same
	 * transaction: no state where an image exists unread. Its header only,
	 * bounded (exif.h); a damaged field is left unknown and logged, never
	 * a refusal. Out of memory leaves it for the backfill (exif_read 0). */
	exif_notes notes;
	int exif_ok = exif_read_mem(data, len, &exif, &notes) == 0;
	if (notes.n) {
		char what[96];
		snprintf(what, sizeof what, "the upload of %.16s", sha);
		exif_log_notes(what, &notes);
	}
	/* From here on a failure removes the blob again (see ingest.h). */
	committing = 1;
	if ((rc = blob_writer_commit(bw, err)))
		goto out;
	store_image img = {
		.filename = (char *)filename,
		.mime = (char *)si.mime,
		.width = si.width,
		.height = si.height,
		.bytes = blob_writer_size(bw),
		.meta = (char *)meta_json,
		.pinned = !ic->watcher,
		.exif = exif,
		.exif_read = exif_ok,
	};
	memcpy(img.sha256, sha, sizeof img.sha256);
	/* An embedding made elsewhere is taken only for the content it was
	 * made from; a file changed since is queued and embedded here. */
	int embedded = given && !strcmp(given->sha256, sha);
	if (given && !embedded)
		*changed = 1;
	if (embedded)
		rc = store_image_insert_embedded(a->st, &img, ic->job_id, given->model, given->vec,
		                                 given->dim, id, &se);
	else
		rc = store_image_insert_queued(a->st, &img, ic->job_id, id, &se);
	if (rc == STORE_EEXISTS) {
		*duplicate = 1;
		rc = pin_duplicate(ic, *id, err);
		committing = 0; /* a row holds this content: the blob is its */
	} else if (rc == STORE_ESTALE) {
		rc = api_fail(err, API_ECONFLICT, "%s", se.msg);
	} else if (rc != STORE_OK) {
		rc = api_from_store(err, &se);
	} else if (!embedded) {
		worker_pool_kick(a->workers);
	}
out:
	if (rc && committing) {
		api_err re;
		if (blobs_remove(a->blobs, sha, &re))
			log_warn("upload of %s refused, and its blob stays: %s", sha, re.msg);
	}
	if (locked)
		blobs_unlock(a->blobs, sha);
	blob_writer_free(bw);
	store_exif_clear(&exif);
	return rc;
}

int ingest_blob(ingest_ctx *ic, blob_writer *bw, const char *filename, const char *meta_json,
                int64_t *id, int *duplicate, const char **mime, api_err *err)
{
	return store_blob(ic, bw, filename, meta_json, NULL, id, duplicate, NULL, mime, err);
}

int ingest_blob_embedded(ingest_ctx *ic, blob_writer *bw, const char *filename,
                         const ingest_embedding *given, int64_t *id, int *duplicate, int *changed,
                         api_err *err)
{
	return store_blob(ic, bw, filename, NULL, given, id, duplicate, changed, NULL, err);
}

int ingest_roots_open(app *a, api_err *err)
{
	int n = a->cfg->n_allow_roots;
	if (n == 0)
		return 0;
	if (!(a->root_fds = malloc((size_t)n * sizeof *a->root_fds)))
		return api_fail(err, API_ENOMEM, "out of memory");
	for (int i = 0; i < n; i++)
		a->root_fds[i] = -1;
	for (int i = 0; i < n; i++) {
		api_err e;
		if (sp_root_open(a->cfg->allow_roots[i], &a->root_fds[i], &e)) {
			int rc = api_fail(err, e.code, "--allow-root: %s", e.msg);
			ingest_roots_close(a);
			return rc;
		}
	}
	return 0;
}

void ingest_roots_close(app *a)
{
	if (!a->root_fds)
		return;
	for (int i = 0; i < a->cfg->n_allow_roots; i++)
		if (a->root_fds[i] >= 0)
			close(a->root_fds[i]);
	free(a->root_fds);
	a->root_fds = NULL;
}

/* Every --allow-root by two names: its real path (as opened) and its path
 * as given, which may pass through links above the root. */
#define MAX_ROOT_NAMES 256

int ingest_map_root(app *a, const char *path, const char *what, int *root, char *rel,
                    size_t size, api_err *err)
{
	const char *names[MAX_ROOT_NAMES];
	int n = 0, which, rc;
	*root = -1;
	if (a->cfg->n_allow_roots == 0 || !a->root_fds)
		return api_fail(err, API_EFORBIDDEN,
		                "ingesting server files is disabled: start clipd with --allow-root DIR");
	for (int i = 0; i < a->cfg->n_allow_roots && n + 2 <= MAX_ROOT_NAMES; i++) {
		names[n++] = a->cfg->allow_roots[i];
		names[n++] = a->cfg->allow_roots_given ? a->cfg->allow_roots_given[i] : NULL;
	}
	api_err e;
	rc = sp_map(names, n, path, &which, rel, size, &e);
	if (rc == API_EFORBIDDEN)
		return api_fail(err, API_EFORBIDDEN,
		                "%s is outside the directories allowed by --allow-root", what);
	if (rc)
		return api_fail(err, (api_code)rc, "%s: %s", what, e.msg);
	*root = which / 2;
	return 0;
}

int ingest_read_at(app *a, int dirfd, const char *rel, blob_writer **out, api_err *err)
{
	blob_writer *w = NULL;
	char buf[1 << 16];
	struct stat st;
	int fd = -1, rc = 0;
	int64_t limit = a->cfg->max_body, total = 0;
	*out = NULL;
	if ((rc = sp_open(dirfd, rel, SP_FILE, &fd, &st, err)))
		return rc;
	if (st.st_size > limit) {
		rc = api_fail(err, API_ETOOBIG, "the file has %lld bytes, over the limit of %lld",
		              (long long)st.st_size, (long long)limit);
		goto out;
	}
	if ((rc = blob_writer_new(a->blobs, &w, err)))
		goto out;
	/* The size above is only what fstat said: a file that grows (or one
	 * whose size says nothing, as in /proc) is read up to one byte past
	 * the limit, never further. */
	for (;;) {
		size_t want = sizeof buf;
		if ((int64_t)want > limit + 1 - total)
			want = (size_t)(limit + 1 - total);
		ssize_t n = read(fd, buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = api_fail(err, API_EIO, "cannot read the file: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		total += n;
		if (total > limit) {
			rc = api_fail(err, API_ETOOBIG,
			              "the file grew past the limit of %lld bytes while it was read",
			              (long long)limit);
			goto out;
		}
		if ((rc = blob_writer_write(w, buf, (size_t)n, err)))
			goto out;
	}
	*out = w;
	w = NULL;
out:
	blob_writer_free(w);
	if (fd >= 0)
		close(fd);
	return rc;
}

int ingest_queue_check(app *a, int64_t incoming, api_err *err)
{
	int64_t depth;
	store_err se;
	if (store_work_depth(a->st, &depth, &se) != STORE_OK)
		return api_from_store(err, &se);
	if (depth + incoming > a->cfg->max_queue)
		return api_fail(err, API_EQUEUEFULL,
		                "the indexing queue is full (%lld pending, limit %lld): retry later",
		                (long long)depth, (long long)a->cfg->max_queue);
	return 0;
}
