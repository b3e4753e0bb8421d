/* routes_classify.c: zero-shot labels (POST /v1/classify) and raw
 * embeddings (POST /v1/embed). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "clock.h"
#include "jsonutil.h"
#include "routes.h"

/* What one classify request may ask for. ImageNet's 1,000 class names are
 * the largest label set in common use, and its longest names are under
 * 100 bytes (the reference kit labels with texts of up to 560 bytes);
 * templates are short sentences with one {} (at most a few). A prompt is
 * thus at most MAX_TEMPLATE_BYTES + MAX_TEMPLATE_SLOTS * MAX_LABEL_BYTES
 * bytes (4.25 KiB), past the 77 tokens the model reads, and the prompts
 * are built and encoded CLASSIFY_CHUNK at a time, so a request holds a few
 * hundred KB whatever it asks. */
#define MAX_LABELS 1000
#define MAX_TEMPLATES 64
#define MAX_PROMPTS 8192
#define MAX_LABEL_BYTES 1024
#define MAX_TEMPLATE_BYTES 256
#define MAX_TEMPLATE_SLOTS 4
#define CLASSIFY_CHUNK 64
#define MAX_EMBED_TEXTS 1024
#define MAX_EMBED_IMAGES 64
/* The same as a text of /v1/texts: a pipeline can embed what it could
 * store. The model reads the first 77 tokens. */
#define MAX_EMBED_TEXT_BYTES 65536

/* "a photo of a {}." with label: every "{}" replaced. */
static char *fill_template(const char *tpl, const char *label)
{
	size_t tl = strlen(tpl), ll = strlen(label), n = 0;
	for (const char *p = tpl; (p = strstr(p, "{}")); p += 2)
		n++;
	char *out = malloc(tl + n * ll + 1), *o = out;
	if (!out)
		return NULL;
	for (const char *p = tpl; *p;) {
		if (p[0] == '{' && p[1] == '}') {
			memcpy(o, label, ll);
			o += ll;
			p += 2;
		} else {
			*o++ = *p++;
		}
	}
	*o = 0;
	return out;
}

/* Form parts (JSON arrays) or query parameters (comma-separated) into the
 * JSON fields the JSON form of the request uses. */
static int classify_params(http_req *r, json_t **out, api_err *err)
{
	static const char *const keys[] = {"labels", "templates"};
	json_t *o = json_object();
	*out = NULL;
	for (int i = 0; i < 2; i++) {
		http_part *p = http_req_part(r, keys[i]);
		if (p && p->data) {
			json_t *arr = json_loadb(p->data, p->len, 0, NULL);
			if (!json_is_array(arr)) {
				json_decref(arr);
				json_decref(o);
				return api_fail(err, API_EBADREQ, "part '%s' must be a JSON array of strings",
				                keys[i]);
			}
			json_object_set_new(o, keys[i], arr);
			continue;
		}
		const char *q = http_req_query(r, keys[i]);
		if (!q)
			continue;
		json_t *arr = json_array();
		char *copy = strdup(q), *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
			json_array_append_new(arr, json_string(t));
		free(copy);
		json_object_set_new(o, keys[i], arr);
	}
	*out = o;
	return 0;
}

struct ranked {
	int label;
	double prob, cos;
};

static int by_prob(const void *x, const void *y)
{
	const struct ranked *a = x, *b = y;
	return (a->prob < b->prob) - (a->prob > b->prob);
}

/* The number of "{}" in s. */
static size_t count_slots(const char *s)
{
	size_t n = 0;
	for (const char *p = s; (p = strstr(p, "{}")); p += 2)
		n++;
	return n;
}

/* Checks the sizes of labels and templates against the limits above. */
static int check_prompts(json_t *labels, json_t *templates, api_err *err)
{
	size_t i;
	json_t *v;
	json_array_foreach(labels, i, v) if (json_string_length(v) > MAX_LABEL_BYTES) return api_fail(
		err, API_EBADREQ, "labels[%zu] is %zu bytes long, at most %d are allowed", i,
		json_string_length(v), MAX_LABEL_BYTES);
	json_array_foreach(templates, i, v) {
		size_t slots = count_slots(json_string_value(v));
		if (json_string_length(v) > MAX_TEMPLATE_BYTES)
			return api_fail(err, API_EBADREQ,
			                "templates[%zu] is %zu bytes long, at most %d are allowed", i,
			                json_string_length(v), MAX_TEMPLATE_BYTES);
		if (slots == 0)
			return api_fail(err, API_EBADREQ, "templates[%zu] must contain {} where the label goes",
			                i);
		if (slots > MAX_TEMPLATE_SLOTS)
			return api_fail(err, API_EBADREQ,
			                "templates[%zu] has %zu {}, at most %d are allowed", i, slots,
			                MAX_TEMPLATE_SLOTS);
	}
	size_t np = json_array_size(labels) * json_array_size(templates);
	if (np > MAX_PROMPTS)
		return api_fail(err, API_EBADREQ, "labels x templates is %zu, at most %d are allowed", np,
		                MAX_PROMPTS);
	return 0;
}

/* Adds the embeddings of prompts [i0, i0 + n) (prompt i is label i / nt
 * in template i % nt) to the label sums lab[nl][dim], in prompt order. */
static int encode_prompts(space *sp, json_t *labels, json_t *templates, size_t i0, size_t n,
                          float *lab, api_err *err)
{
	size_t nt = json_array_size(templates), dim = (size_t)sp->dim;
	char *prompts[CLASSIFY_CHUNK] = {0};
	float *emb = malloc(n * dim * sizeof *emb);
	int rc = 0;
	if (!emb) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t j = 0; j < n; j++)
		if (!(prompts[j] = fill_template(json_string_value(json_array_get(templates, (i0 + j) % nt)),
		                                 json_string_value(json_array_get(labels, (i0 + j) / nt))))) {
			rc = api_fail(err, API_ENOMEM, "out of memory");
			goto out;
		}
	if ((rc = encode_pool_texts_cached(sp->enc, n, (const char *const *)prompts, emb, err)))
		goto out;
	for (size_t j = 0; j < n; j++) {
		float *v = lab + (i0 + j) / nt * dim;
		for (size_t d = 0; d < dim; d++)
			v[d] += emb[j * dim + d];
	}
out:
	for (size_t j = 0; j < n; j++)
		free(prompts[j]);
	free(emb);
	return rc;
}

void route_classify(http_req *r)
{
	int64_t t0 = clock_ms();
	space *sp = http_req_space(r);
	json_t *body = NULL, *labels, *templates, *def_templates = NULL;
	api_err e;
	float *img = NULL, *lab = NULL;
	struct ranked *rk = NULL;
	size_t nl = 0, nt = 0, np = 0;
	int found;
	int json_body = !http_req_parts(r) && !http_req_content_is(r, "image/") &&
	                !http_req_content_is(r, "multipart/");
	int dim = sp->dim;

	if (json_body ? http_req_json(r, &body, &e) : classify_params(r, &body, &e))
		goto fail;
	if (ju_str_array(body, "labels", 1, MAX_LABELS, &labels, &e) ||
	    ju_str_array(body, "templates", 0, MAX_TEMPLATES, &templates, &e))
		goto fail;
	nl = json_array_size(labels);
	if (nl == 0) {
		api_fail(&e, API_EBADREQ, "field 'labels' must not be empty");
		goto fail;
	}
	if (!templates)
		templates = def_templates = json_pack("[s]", clip_model_default_template(sp->model));
	nt = json_array_size(templates);
	if (nt == 0) {
		api_fail(&e, API_EBADREQ, "field 'templates' must not be empty");
		goto fail;
	}
	if (check_prompts(labels, templates, &e))
		goto fail;
	np = nl * nt;
	img = malloc((size_t)dim * sizeof *img);
	lab = calloc(nl * (size_t)dim, sizeof *lab);
	rk = calloc(nl, sizeof *rk);
	if (!img || !lab || !rk) {
		api_fail(&e, API_ENOMEM, "out of memory");
		goto fail;
	}
	if (route_query_image(r, json_body ? body : NULL, img, &found, &e))
		goto fail;
	if (!found) {
		api_fail(&e, API_EBADREQ, "missing image: give 'image_id' or 'image_b64'");
		goto fail;
	}
	/* A chunk at a time: the prompts of a request are never all in
	 * memory, and other requests' encodes run between chunks. */
	for (size_t i0 = 0; i0 < np; i0 += CLASSIFY_CHUNK)
		if (encode_prompts(sp, labels, templates, i0, np - i0 < CLASSIFY_CHUNK ? np - i0 : CLASSIFY_CHUNK,
		                   lab, &e))
			goto fail;
	/* Prompt ensembling (CLIP paper): mean of the normalised template
	 * embeddings of a label, normalised again. */
	double scale = clip_model_logit_scale(sp->model), maxlogit = -INFINITY, sum = 0;
	for (size_t l = 0; l < nl; l++) {
		float *v = lab + l * (size_t)dim;
		clip_normalize(v, dim);
		double c = 0;
		for (int d = 0; d < dim; d++)
			c += (double)v[d] * img[d];
		rk[l].label = (int)l;
		rk[l].cos = c;
		if (scale * c > maxlogit)
			maxlogit = scale * c;
	}
	/* CLIP: one softmax over the labels (they compete: the probabilities
	 * sum to 1). SigLIP was trained on each pair's own sigmoid: every
	 * label's probability stands alone (none, one or several can be
	 * high), as transformers' zero-shot pipeline gives it. */
	int sigmoid = clip_model_family(sp->model) == CLIP_FAMILY_SIGLIP;
	double bias = clip_model_logit_bias(sp->model);
	for (size_t l = 0; l < nl; l++) {
		if (sigmoid) {
			rk[l].prob = 1.0 / (1.0 + exp(-(scale * rk[l].cos + bias)));
		} else {
			rk[l].prob = exp(scale * rk[l].cos - maxlogit);
			sum += rk[l].prob;
		}
	}
	for (size_t l = 0; !sigmoid && l < nl; l++)
		rk[l].prob /= sum;
	qsort(rk, nl, sizeof *rk, by_prob);
	json_t *out = json_array();
	for (size_t l = 0; l < nl; l++)
		json_array_append_new(out, json_pack("{s:s,s:f,s:f}", "label",
		                                     json_string_value(json_array_get(labels, (size_t)rk[l].label)),
		                                     "prob", rk[l].prob, "score", rk[l].cos));
	http_reply_json(r, 200, json_pack("{s:o,s:s,s:f,s:f,s:I}", "labels", out, "probabilities",
	                                  sigmoid ? "sigmoid" : "softmax", "logit_scale", scale,
	                                  "logit_bias", bias, "took_ms",
	                                  (json_int_t)(clock_ms() - t0)));
	goto out;
fail:
	http_reply_error(r, &e);
out:
	free(img);
	free(lab);
	free(rk);
	json_decref(def_templates);
	json_decref(body);
}

static json_t *vec_json(const float *v, int dim)
{
	json_t *a = json_array();
	for (int d = 0; d < dim; d++)
		json_array_append_new(a, json_real(v[d]));
	return a;
}

void route_embed(http_req *r)
{
	space *sp = http_req_space(r);
	json_t *body = NULL, *texts, *images, *out = json_object();
	api_err e;
	float *emb = NULL;
	const char **tv = NULL;
	int dim = sp->dim;

	if (http_req_json(r, &body, &e) ||
	    ju_str_array(body, "texts", 0, MAX_EMBED_TEXTS, &texts, &e) ||
	    ju_str_array(body, "images_b64", 0, MAX_EMBED_IMAGES, &images, &e))
		goto fail;
	if (!texts && !images) {
		api_fail(&e, API_EBADREQ, "give 'texts' (an array of strings) and/or 'images_b64'");
		goto fail;
	}
	size_t nt = texts ? json_array_size(texts) : 0, ni = images ? json_array_size(images) : 0;
	for (size_t i = 0; i < nt; i++)
		if (json_string_length(json_array_get(texts, i)) > MAX_EMBED_TEXT_BYTES) {
			api_fail(&e, API_EBADREQ, "texts[%zu] is %zu bytes long, at most %d are allowed", i,
			         json_string_length(json_array_get(texts, i)), MAX_EMBED_TEXT_BYTES);
			goto fail;
		}
	size_t nmax = nt > ni ? nt : ni;
	emb = malloc((nmax ? nmax : 1) * (size_t)dim * sizeof *emb);
	tv = calloc(nt ? nt : 1, sizeof *tv);
	if (!emb || !tv) {
		api_fail(&e, API_ENOMEM, "out of memory");
		goto fail;
	}
	if (texts) {
		for (size_t i = 0; i < nt; i++)
			tv[i] = json_string_value(json_array_get(texts, i));
		if (nt && encode_pool_texts(sp->enc, nt, tv, emb, &e))
			goto fail;
		json_t *arr = json_array();
		for (size_t i = 0; i < nt; i++)
			json_array_append_new(arr, vec_json(emb + i * (size_t)dim, dim));
		json_object_set_new(out, "texts", arr);
	}
	if (images) {
		json_t *arr = json_array();
		json_object_set_new(out, "images", arr);
		for (size_t i = 0; i < ni; i++) {
			json_t *one = json_pack("{s:O}", "image_b64", json_array_get(images, i));
			float *v = emb;
			int found;
			int rc = route_query_image(r, one, v, &found, &e);
			json_decref(one);
			if (rc) {
				char msg[sizeof e.msg];
				snprintf(msg, sizeof msg, "images_b64[%zu]: %.200s", i, e.msg);
				snprintf(e.msg, sizeof e.msg, "%s", msg);
				goto fail;
			}
			json_array_append_new(arr, vec_json(v, dim));
		}
	}
	json_object_set_new(out, "model", json_string(sp->model_id));
	json_object_set_new(out, "dim", json_integer(dim));
	http_reply_json(r, 200, out);
	out = NULL;
	goto done;
fail:
	http_reply_error(r, &e);
done:
	json_decref(out);
	json_decref(body);
	free(emb);
	free(tv);
}
