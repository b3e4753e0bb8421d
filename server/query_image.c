/*
 * query_image.c: the image a search or classify request queries with
 * (route_query_image): a stored image's embedding by id, or an image sent
 * in the request (base64 in JSON, a multipart part, a raw body), sniffed,
 * checked against the pixel limit, decoded on a --max-decodes slot and
 * encoded on the encode pool.
 */
#include <stdint.h>
#include <stdlib.h>

#include "app.h"
#include "jsonutil.h"
#include "routes.h"
#include "sniff.h"

/* Sniffs (415 not an image, 413 header over the pixel limit), then decodes
 * and preprocesses (422 when it does not decode) holding one of the
 * --max-decodes slots: 503 when none is free within --decode-wait-ms, so
 * that a flood of image queries queues for a bounded time instead of
 * decoding without bound on the connection threads. The slot is given
 * back before the encode, which waits its turn on the encode pool. */
static int encode_bytes(app *a, space *sp, const void *data, size_t len, float *vec,
                        api_err *err)
{
	sniff_info si;
	if (!sniff_image(data, len, &si)) {
		char formats[128];
		clip_image_formats_text(formats, sizeof formats);
		return api_fail(err, API_EUNSUPPORTED, "not a supported image: the content is not %s",
		                formats);
	}
	if ((int64_t)si.width * si.height > a->cfg->max_pixels)
		return api_fail(err, API_ETOOBIG, "image is %dx%d, over the limit of %lld pixels",
		                si.width, si.height, (long long)a->cfg->max_pixels);
	size_t S = (size_t)clip_model_image_size(sp->model);
	float *px = malloc(3 * S * S * sizeof *px);
	clip_err ce;
	int rc;
	if (!px)
		return api_fail(err, API_ENOMEM, "out of memory");
	if (!slots_take(&a->decodes, a->cfg->decode_wait_ms)) {
		free(px);
		return api_fail(err, API_EQUEUEFULL,
		                "%d images are being decoded for other requests and none finished within "
		                "%d ms: retry later", a->cfg->max_decodes, a->cfg->decode_wait_ms);
	}
	rc = clip_preprocess_buffer(sp->model, data, len, &a->limits, px, NULL, NULL, &ce);
	slots_give(&a->decodes);
	rc = rc == CLIP_OK ? encode_pool_pixels(sp->enc, px, vec, err) : api_from_clip(err, &ce);
	free(px);
	return rc;
}

int route_query_image(http_req *r, json_t *body, float *vec, int *found, api_err *err)
{
	app *a = http_req_app(r);
	space *sp = http_req_space(r);
	int64_t image_id;
	const char *b64;
	int rc;
	*found = 0;

	if (!body) {
		/* Multipart with an image part, or a raw image body. */
		http_part *p = http_req_part(r, "image");
		if (p) {
			*found = 1;
			if (p->len == 0)
				return api_fail(err, API_EBADREQ, "the 'image' part is empty");
			return encode_bytes(a, sp, p->data, p->len, vec, err);
		}
		size_t len;
		const char *data = http_req_body(r, &len);
		if (http_req_content_is(r, "image/") && data) {
			*found = 1;
			return encode_bytes(a, sp, data, len, vec, err);
		}
		return 0;
	}
	if ((rc = ju_int(body, "image_id", 0, 1, INT64_MAX, &image_id, err)))
		return rc;
	if ((rc = ju_str(body, "image_b64", 0, &b64, err)))
		return rc;
	if (image_id && b64)
		return api_fail(err, API_EBADREQ, "give 'image_id' or 'image_b64', not both");
	if (image_id) {
		store_err se;
		*found = 1;
		rc = store_embedding_get(a->st, STORE_IMAGE, image_id, sp->model_id, vec, sp->dim, &se);
		if (rc == STORE_ENOTFOUND) {
			store_image img;
			if (store_image_get(a->st, image_id, &img, &se) == STORE_ENOTFOUND)
				return api_fail(err, API_ENOTFOUND, "no image %lld", (long long)image_id);
			rc = api_fail(err, API_ECONFLICT, "image %lld is not indexed (status %s)",
			              (long long)image_id, route_status_name(img.status));
			store_image_clear(&img);
			return rc;
		}
		if (rc != STORE_OK)
			return api_from_store(err, &se);
		return 0;
	}
	if (b64) {
		unsigned char *bytes;
		size_t n;
		*found = 1;
		if ((rc = ju_b64_decode(b64, "image_b64", &bytes, &n, err)))
			return rc;
		if (n == 0) {
			free(bytes);
			return api_fail(err, API_EBADREQ, "field 'image_b64' is empty");
		}
		rc = encode_bytes(a, sp, bytes, n, vec, err);
		free(bytes);
		return rc;
	}
	return 0;
}
