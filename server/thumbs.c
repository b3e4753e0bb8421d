/*
 * thumbs.c: making and caching thumbnails.
 *
 * DESIGN: state and threads.
 * - A thumbnail is made on the HTTP thread that asked for it. `mu` guards
 *   `busy`, the number being made right now: a request waits on `cv` while
 *   THUMBS_PARALLEL are, so a page full of new thumbnails cannot take every
 *   core from the indexing workers (libvips runs its own threads inside
 *   each). mu is a leaf lock, never held while making.
 * - libvips must be started once per process with the model's settings
 *   (operation cache off, untrusted loaders blocked, warnings silenced). The
 *   model does that inside its own pthread_once on its first decode and has
 *   no public init; vips_init itself is not safe against a concurrent first
 *   call. So start_vips, once (`init_mu` guards `init_state`), runs the
 *   model's decode on a path that cannot be opened, which starts libvips
 *   the model's way and does nothing else, then VIPS_INIT as a guard that
 *   returns at once when libvips is up. init_mu is a leaf lock too.
 * - Two requests may make the same thumbnail at once: each writes its own
 *   temporary file and renames it into place; the contents are equal.
 * - A delete racing a make: the delete removes the row, then the blob,
 *   then the thumbnails; a make renames its file into place, then checks
 *   that the content still has a row and removes its file if not. One of
 *   the two runs after the rename, so no thumbnail of deleted content stays.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "log.h"
#include "thumbs.h"

/* Thumbnails made at once; more wait (see DESIGN). */
#define THUMBS_PARALLEL 2
/* Sizes are rounded down to a multiple of this, so one image has at most
 * THUMBS_MAX_SIZE / THUMBS_STEP cached files however sizes are asked for. */
#define THUMBS_STEP 16
#define JPEG_QUALITY 80

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* see DESIGN */
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int busy;

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER; /* see DESIGN */
static int init_state;  /* 0: not tried, 1: up, -1: failed */

/* The formats the model decodes (model/preprocess.c): a blob passed the
 * upload's sniffing, but a file must not reach a document or matrix loader. */
static const char *const formats[] = {"jpeg", "png", "webp", "gif", "tiff", "heif", "jxl"};

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
	if (*s == '-' || v < THUMBS_MIN_SIZE)
		v = THUMBS_MIN_SIZE;
	if (v > THUMBS_MAX_SIZE)
		v = THUMBS_MAX_SIZE;
	*size = (int)(v / THUMBS_STEP * THUMBS_STEP);
	return 0;
}

static int start_vips(app *a, api_err *err)
{
	pthread_mutex_lock(&init_mu);
	if (init_state == 0) {
		int S = clip_model_image_size(a->model);
		float *px = malloc((size_t)3 * (size_t)S * (size_t)S * sizeof *px);
		clip_err ce;
		init_state = -1;
		if (px) {
			/* Fails at open(""), after the model has started libvips. */
			clip_preprocess_file(a->model, "", NULL, px, NULL, NULL, &ce);
			free(px);
			if (VIPS_INIT("clipd") == 0)
				init_state = 1;
			else
				vips_error_clear();
		}
	}
	int ok = init_state == 1;
	pthread_mutex_unlock(&init_mu);
	return ok ? 0 : api_fail(err, API_EINTERNAL, "libvips could not be started");
}

static int sha_ok(const char *sha)
{
	size_t i = 0;
	for (; sha[i]; i++)
		if (!((sha[i] >= '0' && sha[i] <= '9') || (sha[i] >= 'a' && sha[i] <= 'f')))
			return 0;
	return i == 64;
}

static void thumb_path(app *a, const char *sha, int size, char *buf, size_t n)
{
	snprintf(buf, n, "%s/thumbs/%s-%d.jpg", a->cfg->data_dir, sha, size);
}

/* A source on a new descriptor of path (an offset of its own). */
static int open_source(const char *path, VipsSource **out, api_err *err)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return api_fail(err, API_ENOTFOUND, "the file of the image is gone");
		return api_fail(err, API_EIO, "cannot open %s: %s", path, strerror(errno));
	}
	*out = vips_source_new_from_descriptor(fd); /* holds its own duplicate */
	close(fd);
	if (!*out) {
		vips_error_clear();
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	return 0;
}

/* Checks the format and the pixel count from the header alone. */
static int check_header(app *a, const char *blob, api_err *err)
{
	VipsSource *src = NULL;
	VipsImage *hdr = NULL;
	int rc;
	if ((rc = open_source(blob, &src, err)))
		return rc;
	const char *loader = vips_foreign_find_load_source(src);
	const char *nick = loader ? vips_nickname_find(g_type_from_name(loader)) : NULL;
	int allowed = 0;
	for (size_t i = 0; nick && i < sizeof formats / sizeof *formats; i++)
		allowed |= !strncmp(nick, formats[i], strlen(formats[i])) &&
		           !strncmp(nick + strlen(formats[i]), "load", 4);
	if (!allowed) {
		rc = api_fail(err, API_EUNDECODABLE, "the image cannot be decoded (not a supported format)");
		goto out;
	}
	hdr = vips_image_new_from_source(src, "", "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
	                                 VIPS_FAIL_ON_ERROR, NULL);
	if (!hdr) {
		rc = api_fail(err, API_EUNDECODABLE, "the image cannot be decoded (damaged header)");
		goto out;
	}
	int64_t w = vips_image_get_width(hdr), h = vips_image_get_height(hdr);
	if (w * h > a->cfg->max_pixels)
		rc = api_fail(err, API_ETOOBIG, "image is %lldx%lld, over the limit of %lld pixels",
		              (long long)w, (long long)h, (long long)a->cfg->max_pixels);
out:
	if (hdr)
		g_object_unref(hdr);
	g_object_unref(src);
	vips_error_clear();
	return rc;
}

/* Decodes blob and encodes its thumbnail: *jpg (g_free) of *len bytes. */
static int render(const char *blob, int size, void **jpg, size_t *len, api_err *err)
{
	VipsSource *src = NULL;
	VipsImage *t[4] = {NULL, NULL, NULL, NULL}, *img;
	int rc;
	*jpg = NULL;
	if ((rc = open_source(blob, &src, err)))
		return rc;
	/* libvips 8.14's thumbnail_source drops its own fail_on on the way to
	 * the loader: the option string carries it (a truncated file must fail,
	 * not come out grey at the bottom). */
	if (vips_thumbnail_source(src, &t[0], size, "height", size, "size", VIPS_SIZE_DOWN,
	                          "option_string", "fail_on=error", NULL)) {
		rc = api_fail(err, API_EUNDECODABLE, "the image cannot be decoded (damaged or truncated)");
		goto out;
	}
	img = t[0];
	/* 8-bit sRGB or grey, whatever the source was (CMYK, 16-bit, ...). */
	VipsInterpretation in = vips_image_guess_interpretation(img);
	int grey = in == VIPS_INTERPRETATION_B_W || in == VIPS_INTERPRETATION_GREY16;
	if (vips_colourspace_issupported(img)) {
		if (vips_colourspace(img, &t[1], grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB,
		                     NULL)) {
			rc = api_fail(err, API_EUNDECODABLE, "the image colours cannot be converted to sRGB");
			goto out;
		}
		img = t[1];
	}
	if (vips_image_hasalpha(img)) {
		VipsArrayDouble *white = vips_array_double_newv(1, 255.0);
		int frc = vips_flatten(img, &t[2], "background", white, NULL);
		vips_area_unref(VIPS_AREA(white));
		if (frc) {
			rc = api_fail(err, API_EUNDECODABLE, "the image transparency cannot be flattened");
			goto out;
		}
		img = t[2];
	}
	if (vips_image_get_format(img) != VIPS_FORMAT_UCHAR) {
		if (vips_cast_uchar(img, &t[3], NULL)) {
			rc = api_fail(err, API_EUNDECODABLE, "the image cannot be converted to 8 bits");
			goto out;
		}
		img = t[3];
	}
	/* The pixels are decoded here: a truncated file fails now. */
	if (vips_jpegsave_buffer(img, jpg, len, "Q", JPEG_QUALITY, "strip", TRUE, NULL)) {
		*jpg = NULL;
		rc = api_fail(err, API_EUNDECODABLE, "the image cannot be decoded (damaged or truncated)");
		goto out;
	}
out:
	for (int i = 3; i >= 0; i--)
		if (t[i])
			g_object_unref(t[i]);
	g_object_unref(src);
	vips_error_clear();
	return rc;
}

/* Writes data into dst by a temporary file in the same directory. */
static int write_atomic(const char *dir, const char *dst, const void *data, size_t len,
                        api_err *err)
{
	char tmp[4200];
	const char *p = data;
	int rc = 0;
	snprintf(tmp, sizeof tmp, "%s/.tmp-XXXXXX", dir);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return api_fail(err, API_EIO, "cannot create a file in %s: %s", dir, strerror(errno));
	while (len > 0) {
		ssize_t w = write(fd, p, len);
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
	if (fsync(fd) != 0 || fchmod(fd, 0644) != 0) {
		rc = api_fail(err, API_EIO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, dst) != 0)
		rc = api_fail(err, API_EIO, "cannot rename %s: %s", tmp, strerror(errno));
out:
	close(fd);
	if (rc)
		unlink(tmp);
	return rc;
}

/* Makes the thumbnail file path of sha at size. */
static int make(app *a, const char *sha, int size, const char *path, api_err *err)
{
	char blob[4096], dir[4096];
	void *jpg = NULL;
	size_t len = 0;
	store_image img;
	store_err se;
	int rc;
	blobs_path(a->blobs, sha, blob, sizeof blob);
	snprintf(dir, sizeof dir, "%s/thumbs", a->cfg->data_dir);
	if (g_mkdir_with_parents(dir, 0755) != 0)
		return api_fail(err, API_EIO, "cannot create %s: %s", dir, strerror(errno));
	if ((rc = start_vips(a, err)) || (rc = check_header(a, blob, err)) ||
	    (rc = render(blob, size, &jpg, &len, err)))
		goto out;
	if ((rc = write_atomic(dir, path, jpg, len, err)))
		goto out;
	/* Deleted meanwhile (see DESIGN): take the file back. */
	rc = store_image_find_sha(a->st, sha, &img, &se);
	if (rc == STORE_OK) {
		store_image_clear(&img);
	} else if (rc == STORE_ENOTFOUND) {
		unlink(path);
		rc = api_fail(err, API_ENOTFOUND, "the image was deleted");
	} else {
		rc = api_from_store(err, &se);
	}
out:
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
	thumb_path(a, sha, size, path, sizeof path);
	if (open_cached(path, fd, bytes) == 0) {
		*cached = 1;
		return 0;
	}

	pthread_mutex_lock(&mu);
	while (busy >= THUMBS_PARALLEL)
		pthread_cond_wait(&cv, &mu);
	busy++;
	pthread_mutex_unlock(&mu);
	/* Made by another request while this one waited? */
	if (open_cached(path, fd, bytes) == 0)
		*cached = 1;
	else
		rc = make(a, sha, size, path, err);
	pthread_mutex_lock(&mu);
	busy--;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);

	if (rc || *cached)
		return rc;
	if (open_cached(path, fd, bytes) != 0)
		return api_fail(err, API_EIO, "cannot open %s: %s", path, strerror(errno));
	return 0;
}

void thumbs_remove(app *a, const char *sha)
{
	char path[4200];
	if (!sha_ok(sha))
		return;
	for (int size = THUMBS_STEP; size <= THUMBS_MAX_SIZE; size += THUMBS_STEP) {
		thumb_path(a, sha, size, path, sizeof path);
		if (unlink(path) != 0 && errno != ENOENT)
			log_warn("cannot remove a thumbnail: %s", strerror(errno));
	}
}
