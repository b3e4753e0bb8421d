/*
 * thumbs.c: making and caching thumbnails.
 *
 * DESIGN: state and threads.
 * - A thumbnail is made on the HTTP thread that asked for it, holding one
 *   of the THUMBS_PARALLEL `makers` (slots.h): a request waits while all
 *   are taken, so a page full of new thumbnails cannot take every core
 *   from the indexing workers (libvips runs its own threads inside each).
 *   The wait is bounded by --thumb-wait-ms (then 503), so a flood of
 *   thumbnail requests cannot hold every connection thread. The slots'
 *   lock is a leaf lock, never held while making.
 * - The cache index: `cache_mu` guards `cache_order` (every cached file,
 *   oldest first), `cache_names` (file name -> its link in cache_order) and
 *   `cache_total` (their bytes, each rounded up to a 4 KiB block). It is
 *   built on first use by scanning DATA/thumbs (one clipd per data
 *   directory), which also removes temporary files a crash left. Renaming a
 *   new thumbnail into place, its entry, and every eviction (oldest first,
 *   until the total is within --thumb-cache-mb) happen under cache_mu, so
 *   the index and the directory agree. A new thumbnail is served from the
 *   descriptor it was written through, so an eviction right after cannot
 *   fail its request. cache_mu is a leaf lock too.
 * - libvips must be started once per process with the model's settings
 *   (operation cache off, untrusted loaders blocked, warnings silenced):
 *   every make calls clip_images_init first, which does that under the
 *   model's pthread_once (vips_init itself is not safe against a
 *   concurrent first call) and returns at once when libvips is up.
 * - Two requests may make the same thumbnail at once: each writes its own
 *   temporary file and renames it into place; the contents are equal, and
 *   the index counts the name once.
 * - A delete racing a make: the delete removes the row, then the blob,
 *   then the thumbnails; a make renames its file into place, then checks
 *   that the content still has a row and removes its file if not. One of
 *   the two runs after the rename, so no thumbnail of deleted content stays.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "clip_vips.h"
#include "log.h"
#include "slots.h"
#include "thumbs.h"

/* Thumbnails made at once; more wait (see DESIGN). */
#define THUMBS_PARALLEL 2
#define JPEG_QUALITY 80
/* Thumbnails of older versions came in every multiple of 16: a delete
 * removes those too. */
#define LEGACY_STEP 16
/* Disk use of a file, as the cache counts it. */
#define BLOCK 4096

static const int sizes[] = THUMBS_SIZES;

static slots makers = SLOTS_INITIALIZER(THUMBS_PARALLEL); /* see DESIGN */

/* One cached file. */
#define NAME_SIZE 80     /* "<sha256>-<size>.jpg" and its NUL, with room */
struct centry {
	char name[NAME_SIZE]; /* <sha256>-<size>.jpg */
	int64_t charge;      /* its bytes rounded up to a BLOCK */
	int64_t mtime_ns;    /* when it was made (sorting the first scan) */
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER; /* see DESIGN */
static int cache_ready;
static GQueue cache_order = G_QUEUE_INIT; /* struct centry *, oldest first */
static GHashTable *cache_names;           /* name -> GList * in cache_order */
static int64_t cache_total;

int thumbs_parse_size(const char *s, int *size, api_err *err)
{
	const char *p = s;
	long long v = 0;
	*size = THUMBS_DEFAULT_SIZE;
	if (!s)
		return 0;
	if (*p == '+' || *p == '-')
		p++;
	if (*p < '0' || *p > '9')
		return api_fail(err, API_EBADREQ, "parameter 'size' must be an integer (%d to %d)",
		                THUMBS_MIN_SIZE, THUMBS_MAX_SIZE);
	for (; *p >= '0' && *p <= '9'; p++)
		if (v < THUMBS_MAX_SIZE)
			v = v * 10 + (*p - '0');
	if (*p)
		return api_fail(err, API_EBADREQ, "parameter 'size' must be an integer (%d to %d)",
		                THUMBS_MIN_SIZE, THUMBS_MAX_SIZE);
	if (*s == '-')
		v = 0;
	*size = sizes[0];
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
		if (sizes[i] <= v)
			*size = sizes[i];
	return 0;
}

/* libvips the model's way (see DESIGN). */
static int start_vips(api_err *err)
{
	clip_err ce;
	if (clip_images_init(&ce) != CLIP_OK)
		return api_fail(err, API_EINTERNAL, "libvips could not be started");
	return 0;
}

static int hex_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static int sha_ok(const char *sha)
{
	return strlen(sha) == 64 && hex_ok(sha, 64);
}

static void thumb_name(const char *sha, int size, char *buf, size_t n)
{
	snprintf(buf, n, "%s-%d.jpg", sha, size);
}

static void thumb_path(app *a, const char *sha, int size, char *buf, size_t n)
{
	char name[96];
	thumb_name(sha, size, name, sizeof name);
	snprintf(buf, n, "%s/thumbs/%s", a->cfg->data_dir, name);
}

/* ---- the cache index (see DESIGN; all under cache_mu) ---------------------- */

/* Whether name is <sha256>-<digits>.jpg, a file this module made. */
static int thumb_name_ok(const char *name)
{
	size_t n = strlen(name), d = 65;
	if (n < 70 || n >= NAME_SIZE || !hex_ok(name, 64) || name[64] != '-')
		return 0;
	while (d < n && name[d] >= '0' && name[d] <= '9')
		d++;
	return d > 65 && !strcmp(name + d, ".jpg");
}

static int64_t charge_of(int64_t len)
{
	return len <= 0 ? BLOCK : (len + BLOCK - 1) / BLOCK * BLOCK;
}

static void cache_forget_locked(const char *name)
{
	GList *l = cache_names ? g_hash_table_lookup(cache_names, name) : NULL;
	if (!l)
		return;
	struct centry *e = l->data;
	g_hash_table_remove(cache_names, name);
	g_queue_delete_link(&cache_order, l);
	cache_total -= e->charge;
	g_free(e);
}

static void cache_add_locked(const char *name, int64_t len, int64_t mtime_ns)
{
	GList *l = g_hash_table_lookup(cache_names, name);
	if (l) {
		/* Made twice at once: one file under one name. */
		struct centry *e = l->data;
		cache_total += charge_of(len) - e->charge;
		e->charge = charge_of(len);
		return;
	}
	struct centry *e = g_new0(struct centry, 1);
	snprintf(e->name, sizeof e->name, "%s", name);
	e->charge = charge_of(len);
	e->mtime_ns = mtime_ns;
	g_queue_push_tail(&cache_order, e);
	g_hash_table_insert(cache_names, e->name, cache_order.tail);
	cache_total += e->charge;
}

/* Removes the oldest files until the cache is within its limit; keep (the
 * file just made, or NULL) stays even when it alone is over. */
static void cache_evict_locked(app *a, const char *keep)
{
	char path[4200];
	while (cache_total > a->cfg->thumb_cache_bytes && cache_order.head) {
		struct centry *e = cache_order.head->data;
		if (keep && !strcmp(e->name, keep))
			break;
		snprintf(path, sizeof path, "%s/thumbs/%s", a->cfg->data_dir, e->name);
		if (unlink(path) != 0 && errno != ENOENT)
			log_warn("cannot remove a cached thumbnail: %s", strerror(errno));
		cache_forget_locked(e->name);
	}
}

static gint by_age(gconstpointer x, gconstpointer y)
{
	const struct centry *a = *(struct centry *const *)x, *b = *(struct centry *const *)y;
	if (a->mtime_ns != b->mtime_ns)
		return a->mtime_ns < b->mtime_ns ? -1 : 1;
	return strcmp(a->name, b->name);
}

/* The first use: the index from what DATA/thumbs holds. */
static void cache_init_locked(app *a)
{
	char dir[4096], path[4096 + 264];
	if (cache_ready)
		return;
	cache_ready = 1;
	cache_names = g_hash_table_new(g_str_hash, g_str_equal);
	snprintf(dir, sizeof dir, "%s/thumbs", a->cfg->data_dir);
	DIR *d = opendir(dir);
	if (!d)
		return; /* none yet: made with the first thumbnail */
	GPtrArray *found = g_ptr_array_new();
	struct dirent *de;
	while ((de = readdir(d))) {
		struct stat st;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if (!strncmp(de->d_name, ".tmp-", 5)) {
			unlink(path); /* a make cut short by a crash */
			continue;
		}
		if (!thumb_name_ok(de->d_name) || lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		struct centry *e = g_new0(struct centry, 1);
		snprintf(e->name, sizeof e->name, "%s", de->d_name);
		e->charge = st.st_size; /* the length, until cache_add_locked below */
		e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
		g_ptr_array_add(found, e);
	}
	closedir(d);
	g_ptr_array_sort(found, by_age);
	for (guint i = 0; i < found->len; i++) {
		struct centry *e = g_ptr_array_index(found, i);
		cache_add_locked(e->name, e->charge, e->mtime_ns);
		g_free(e);
	}
	g_ptr_array_free(found, TRUE);
	cache_evict_locked(a, NULL);
}

/* A decode guard (model/clip_vips.h) over the file at path: its source
 * reads a descriptor of its own and fails once the decode deadline of
 * limits has passed. */
static int open_guard(const char *path, const clip_image_limits *limits, clip_guard **out,
                      api_err *err)
{
	clip_err ce;
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return api_fail(err, API_ENOTFOUND, "the file of the image is gone");
		return api_fail(err, API_EIO, "cannot open %s: %s", path, strerror(errno));
	}
	int rc = clip_guard_open_fd(fd, limits, out, &ce); /* holds its own duplicate */
	close(fd);
	if (rc != CLIP_OK) {
		vips_error_clear();
		return api_from_clip(err, &ce);
	}
	return 0;
}

/* The error of a failed libvips step: the guard's limit when its deadline
 * passed (that is what stopped libvips), else msg as a 422. */
static int decode_failed(clip_guard *g, api_err *err, const char *msg)
{
	clip_err ce;
	if (clip_guard_expired(g)) {
		clip_guard_timeout_error(g, &ce);
		return api_from_clip(err, &ce);
	}
	return api_fail(err, API_EUNDECODABLE, "%s", msg);
}

/* Checks the format, the pixel count from the header alone, and a JPEG's
 * scans from its raw bytes, all before any pixel is decoded. */
static int check_header(app *a, clip_guard *g, api_err *err)
{
	VipsSource *src = clip_guard_source(g);
	VipsImage *hdr = NULL;
	clip_err ce;
	int rc = 0;
	const char *loader = vips_foreign_find_load_source(src);
	const char *nick = loader ? vips_nickname_find(g_type_from_name(loader)) : NULL;
	/* The formats the model decodes: a blob passed the upload's sniffing,
	 * but a file must not reach a document or matrix loader. */
	if (!clip_image_format_accepted(nick)) {
		rc = api_fail(err, API_EUNDECODABLE, "the image cannot be decoded (not a supported format)");
		goto out;
	}
	if (clip_guard_check_scans(g, &ce) != CLIP_OK) {
		rc = api_from_clip(err, &ce);
		goto out;
	}
	hdr = vips_image_new_from_source(src, "", "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
	                                 VIPS_FAIL_ON_ERROR, NULL);
	if (!hdr) {
		rc = decode_failed(g, err, "the image cannot be decoded (damaged header)");
		goto out;
	}
	int64_t w = vips_image_get_width(hdr), h = vips_image_get_height(hdr);
	if (w * h > a->cfg->max_pixels)
		rc = api_fail(err, API_ETOOBIG, "image is %lldx%lld, over the limit of %lld pixels",
		              (long long)w, (long long)h, (long long)a->cfg->max_pixels);
out:
	if (hdr)
		g_object_unref(hdr);
	vips_error_clear();
	return rc;
}

/* Decodes the guarded image and encodes its thumbnail: *jpg (g_free) of
 * *len bytes. Every step is watched by the guard, so a decode past its
 * deadline is killed and answered as decode_limit. */
static int render(clip_guard *g, int size, void **jpg, size_t *len, api_err *err)
{
	VipsSource *src = clip_guard_source(g);
	VipsImage *t[4] = {NULL, NULL, NULL, NULL}, *img;
	int rc = 0;
	*jpg = NULL;
	/* libvips 8.14's thumbnail_source drops its own fail_on on the way to
	 * the loader: the option string carries it (a truncated file must fail,
	 * not come out grey at the bottom). */
	if (vips_thumbnail_source(src, &t[0], size, "height", size, "size", VIPS_SIZE_DOWN,
	                          "option_string", "fail_on=error", NULL)) {
		rc = decode_failed(g, err, "the image cannot be decoded (damaged or truncated)");
		goto out;
	}
	img = t[0];
	clip_guard_watch(g, img);
	/* 8-bit sRGB or grey, whatever the source was (CMYK, 16-bit, ...). */
	VipsInterpretation in = vips_image_guess_interpretation(img);
	int grey = in == VIPS_INTERPRETATION_B_W || in == VIPS_INTERPRETATION_GREY16;
	if (vips_colourspace_issupported(img)) {
		if (vips_colourspace(img, &t[1], grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB,
		                     NULL)) {
			rc = decode_failed(g, err, "the image colours cannot be converted to sRGB");
			goto out;
		}
		img = t[1];
	}
	if (vips_image_hasalpha(img)) {
		VipsArrayDouble *white = vips_array_double_newv(1, 255.0);
		int frc = vips_flatten(img, &t[2], "background", white, NULL);
		vips_area_unref(VIPS_AREA(white));
		if (frc) {
			rc = decode_failed(g, err, "the image transparency cannot be flattened");
			goto out;
		}
		img = t[2];
	}
	if (vips_image_get_format(img) != VIPS_FORMAT_UCHAR) {
		if (vips_cast_uchar(img, &t[3], NULL)) {
			rc = decode_failed(g, err, "the image cannot be converted to 8 bits");
			goto out;
		}
		img = t[3];
	}
	clip_guard_watch(g, img);
	/* The pixels are decoded here: a truncated file fails now. */
	if (vips_jpegsave_buffer(img, jpg, len, "Q", JPEG_QUALITY, "strip", TRUE, NULL)) {
		*jpg = NULL;
		rc = decode_failed(g, err, "the image cannot be decoded (damaged or truncated)");
		goto out;
	}
out:
	for (int i = 3; i >= 0; i--)
		if (t[i])
			g_object_unref(t[i]);
	vips_error_clear();
	return rc;
}

/* Writes data to a new temporary file in dir, fsynced and readable:
 * *fd (read-write) and its name in tmp. */
static int write_tmp(const char *dir, const void *data, size_t len, char *tmp, size_t tmp_size,
                     int *fd, api_err *err)
{
	const char *p = data;
	int rc = 0;
	snprintf(tmp, tmp_size, "%s/.tmp-XXXXXX", dir);
	int f = mkostemp(tmp, O_CLOEXEC);
	*fd = -1;
	if (f < 0)
		return api_fail(err, API_EIO, "cannot create a file in %s: %s", dir, strerror(errno));
	while (len > 0) {
		ssize_t w = write(f, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = api_fail(err, API_EIO, "cannot write %s: %s", tmp, strerror(errno));
			goto out;
		}
		p += w;
		len -= (size_t)w;
	}
	/* The name is immutable once in place: it must not appear empty after
	 * a crash. */
	if (fsync(f) != 0 || fchmod(f, 0644) != 0)
		rc = api_fail(err, API_EIO, "cannot write %s: %s", tmp, strerror(errno));
out:
	if (rc) {
		close(f);
		unlink(tmp);
	} else {
		*fd = f;
	}
	return rc;
}

/* Makes the thumbnail file path of sha at size, puts it in the cache and
 * opens it: *fd, *bytes. */
static int make(app *a, const char *sha, int size, const char *path, int *fd, uint64_t *bytes,
                api_err *err)
{
	char blob[4096], dir[4096], tmp[4200], name[96];
	void *jpg = NULL;
	size_t len = 0;
	store_image img;
	store_err se;
	clip_guard *g = NULL;
	int rc, f = -1;
	blobs_path(a->blobs, sha, blob, sizeof blob);
	thumb_name(sha, size, name, sizeof name);
	snprintf(dir, sizeof dir, "%s/thumbs", a->cfg->data_dir);
	if (g_mkdir_with_parents(dir, 0755) != 0)
		return api_fail(err, API_EIO, "cannot create %s: %s", dir, strerror(errno));
	if ((rc = start_vips(err)) || (rc = open_guard(blob, &a->limits, &g, err)) ||
	    (rc = check_header(a, g, err)) || (rc = render(g, size, &jpg, &len, err)))
		goto out;
	/* The decode is over: release its file and images before the write. */
	clip_guard_close(g);
	g = NULL;
	if ((rc = write_tmp(dir, jpg, len, tmp, sizeof tmp, &f, err)))
		goto out;
	pthread_mutex_lock(&cache_mu);
	if (rename(tmp, path) != 0) {
		rc = api_fail(err, API_EIO, "cannot rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
	} else {
		cache_add_locked(name, (int64_t)len, 0);
		cache_evict_locked(a, name);
	}
	pthread_mutex_unlock(&cache_mu);
	if (rc)
		goto out;
	/* Deleted meanwhile (see DESIGN): take the file back. */
	rc = store_image_find_sha(a->st, sha, &img, &se);
	if (rc == STORE_OK) {
		store_image_clear(&img);
	} else if (rc == STORE_ENOTFOUND) {
		pthread_mutex_lock(&cache_mu);
		unlink(path);
		cache_forget_locked(name);
		pthread_mutex_unlock(&cache_mu);
		rc = api_fail(err, API_ENOTFOUND, "the image was deleted");
	} else {
		rc = api_from_store(err, &se);
	}
out:
	if (rc == 0) {
		*fd = f;
		*bytes = (uint64_t)len;
	} else if (f >= 0) {
		close(f);
	}
	clip_guard_close(g);
	g_free(jpg);
	return rc;
}

/* Opens path when it holds a thumbnail. */
static int open_cached(const char *path, int *fd, uint64_t *bytes)
{
	struct stat st;
	int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return -1;
	if (fstat(f, &st) != 0 || st.st_size <= 0) {
		close(f);
		return -1;
	}
	*fd = f;
	*bytes = (uint64_t)st.st_size;
	return 0;
}

/* Takes one of the THUMBS_PARALLEL makers, waiting at most wait_ms. */
static int take_maker(int wait_ms, api_err *err)
{
	if (!slots_take(&makers, wait_ms))
		return api_fail(err, API_EQUEUEFULL,
		                "%d thumbnails are being made for other requests and none finished within "
		                "%d ms: retry later", THUMBS_PARALLEL, wait_ms);
	return 0;
}

int thumbs_open(app *a, const char *sha, int size, int *fd, uint64_t *bytes, int *cached,
                api_err *err)
{
	char path[4200];
	int rc = 0;
	*fd = -1;
	*bytes = 0;
	*cached = 0;
	if (!sha_ok(sha) || size < THUMBS_MIN_SIZE || size > THUMBS_MAX_SIZE)
		return api_fail(err, API_EINTERNAL, "thumbs_open: bad arguments");
	pthread_mutex_lock(&cache_mu);
	cache_init_locked(a);
	pthread_mutex_unlock(&cache_mu);
	thumb_path(a, sha, size, path, sizeof path);
	if (open_cached(path, fd, bytes) == 0) {
		*cached = 1;
		return 0;
	}
	if ((rc = take_maker(a->cfg->thumb_wait_ms, err)))
		return rc;
	/* Made by another request while this one waited? */
	if (open_cached(path, fd, bytes) == 0)
		*cached = 1;
	else
		rc = make(a, sha, size, path, fd, bytes, err);
	slots_give(&makers);
	return rc;
}

void thumbs_remove(app *a, const char *sha)
{
	char path[4200], name[96];
	if (!sha_ok(sha))
		return;
	pthread_mutex_lock(&cache_mu);
	for (int size = LEGACY_STEP; size <= THUMBS_MAX_SIZE; size += LEGACY_STEP) {
		thumb_name(sha, size, name, sizeof name);
		thumb_path(a, sha, size, path, sizeof path);
		if (unlink(path) != 0 && errno != ENOENT)
			log_warn("cannot remove a thumbnail: %s", strerror(errno));
		cache_forget_locked(name);
	}
	pthread_mutex_unlock(&cache_mu);
}
