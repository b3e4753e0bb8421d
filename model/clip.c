/*
 * clip.c: opening a checkpoint directory and binding its tensors.
 *
 * Every tensor the towers use is looked up by its Hugging Face name, and its
 * dtype and shape are checked against config.json before a pointer is kept.
 * F32 tensors are used in place from the read-only mapping; F16 and BF16
 * ones are widened to float32 once, here. Tensors the towers do not use
 * (position_ids buffers and the like) are ignored.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"
#include "preprocess_int.h"
#include "safetensors_int.h"
#include "tokenizer_int.h"

int clip_fail(clip_err *err, clip_code code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
	}
	return code;
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else { /* subnormal: normalise */
			int e = -1;
			do {
				e++;
				man <<= 1;
			} while (!(man & 0x400));
			bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
		}
	} else if (exp == 0x1f) {
		bits = sign | 0x7f800000u | man << 13;
	} else {
		bits = sign | (exp + 127 - 15) << 23 | man << 13;
	}
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

static int keep_owned(clip_model *m, void *p)
{
	void **n = realloc(m->owned, (m->nowned + 1) * sizeof *n);
	if (!n)
		return -1;
	m->owned = n;
	m->owned[m->nowned++] = p;
	return 0;
}

/* Binds tensor name (printf-style), which must have the given shape, as
 * float32. */
#define DIMS(...) \
	(int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

static int bind(clip_model *m, const float **out, clip_err *err, int ndim, const int64_t *want,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int bind(clip_model *m, const float **out, clip_err *err, int ndim, const int64_t *want,
                const char *fmt, ...)
{
	char name[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);

	const st_tensor *t = st_find(m->st, name);
	if (!t)
		return clip_fail(err, CLIP_EMODEL, "model.safetensors has no tensor %s", name);
	int ok = t->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		ok = t->shape[i] == want[i];
	if (!ok) {
		char got[96] = "", exp[96] = "";
		for (int i = 0; i < t->ndim; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
			         (long long)t->shape[i]);
		for (int i = 0; i < ndim; i++)
			snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? "," : "",
			         (long long)want[i]);
		return clip_fail(err, CLIP_EMODEL, "tensor %s has shape [%s], config.json implies [%s]",
		                 name, got, exp);
	}
	size_t n = (size_t)st_numel(t);
	if (t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
		*out = t->data;
		return CLIP_OK;
	}
	if (t->dtype == ST_OTHER)
		return clip_fail(err, CLIP_EMODEL, "tensor %s has dtype %s; F32, F16 or BF16 expected",
		                 name, t->dtype_name);
	float *f = malloc((n ? n : 1) * sizeof *f);
	if (!f || keep_owned(m, f) != 0) {
		free(f);
		return clip_fail(err, CLIP_ENOMEM, "out of memory converting %s", name);
	}
	const unsigned char *src = t->data;
	for (size_t i = 0; i < n; i++) {
		if (t->dtype == ST_F32) {
			memcpy(&f[i], src + 4 * i, 4);
		} else {
			uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
			if (t->dtype == ST_BF16) {
				uint32_t bits = (uint32_t)h << 16;
				memcpy(&f[i], &bits, 4);
			} else {
				f[i] = f16_to_f32(h);
			}
		}
	}
	*out = f;
	return CLIP_OK;
}

/* Frees p when it is one of the converted copies the model owns. */
static void drop_owned(clip_model *m, const void *p)
{
	for (size_t i = 0; i < m->nowned; i++)
		if (m->owned[i] == p) {
			free(m->owned[i]);
			m->owned[i] = m->owned[--m->nowned];
			return;
		}
}

/* The q, k and v projections of a layer stacked into one [3d][d] matrix
 * (and [3d] bias): one matrix product instead of three, which matters most
 * for a single image or a short text. The originals' pages are then dropped
 * from memory, so the copy costs no resident memory in the end. */
static int fuse_qkv(clip_model *m, clip_layer *L, const char *pre, int l, int d,
                    const float *w[3], const float *b[3], clip_err *err)
{
	static const char *const names[3] = {"q_proj", "k_proj", "v_proj"};
	float *qw = malloc((size_t)3 * d * d * sizeof *qw), *qb = malloc((size_t)3 * d * sizeof *qb);
	if (!qw || !qb || keep_owned(m, qw) != 0) {
		free(qw);
		free(qb);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	if (keep_owned(m, qb) != 0) {
		free(qb);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	for (int j = 0; j < 3; j++) {
		memcpy(qw + (size_t)j * d * d, w[j], (size_t)d * d * sizeof *qw);
		memcpy(qb + (size_t)j * d, b[j], (size_t)d * sizeof *qb);
		char name[256];
		snprintf(name, sizeof name, "%s.encoder.layers.%d.self_attn.%s.weight", pre, l, names[j]);
		const st_tensor *t = st_find(m->st, name);
		if (t && t->data == (const void *)w[j])
			st_drop(t);
		drop_owned(m, w[j]);
		drop_owned(m, b[j]);
	}
	L->qkv = (mm_weight){d, 3 * d, qw, qb, NULL};
	return CLIP_OK;
}

static int bind_layers(clip_model *m, clip_tower *tw, const char *pre, clip_err *err)
{
	const clip_tower_cfg *c = &tw->cfg;
	int d = c->hidden, in = c->intermediate, rc;
	tw->layers = calloc((size_t)c->layers, sizeof *tw->layers);
	if (!tw->layers)
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	for (int l = 0; l < c->layers; l++) {
		clip_layer *L = &tw->layers[l];
		const char *e = "encoder.layers";
		const float *w[3], *b[3];
		if ((rc = bind(m, &L->ln1_w, err, DIMS(d), "%s.%s.%d.layer_norm1.weight", pre, e, l)) ||
		    (rc = bind(m, &L->ln1_b, err, DIMS(d), "%s.%s.%d.layer_norm1.bias", pre, e, l)) ||
		    (rc = bind(m, &w[0], err, DIMS(d, d), "%s.%s.%d.self_attn.q_proj.weight", pre, e, l)) ||
		    (rc = bind(m, &b[0], err, DIMS(d), "%s.%s.%d.self_attn.q_proj.bias", pre, e, l)) ||
		    (rc = bind(m, &w[1], err, DIMS(d, d), "%s.%s.%d.self_attn.k_proj.weight", pre, e, l)) ||
		    (rc = bind(m, &b[1], err, DIMS(d), "%s.%s.%d.self_attn.k_proj.bias", pre, e, l)) ||
		    (rc = bind(m, &w[2], err, DIMS(d, d), "%s.%s.%d.self_attn.v_proj.weight", pre, e, l)) ||
		    (rc = bind(m, &b[2], err, DIMS(d), "%s.%s.%d.self_attn.v_proj.bias", pre, e, l)) ||
		    (rc = bind(m, &L->o.w, err, DIMS(d, d), "%s.%s.%d.self_attn.out_proj.weight", pre, e, l)) ||
		    (rc = bind(m, &L->o.b, err, DIMS(d), "%s.%s.%d.self_attn.out_proj.bias", pre, e, l)) ||
		    (rc = bind(m, &L->ln2_w, err, DIMS(d), "%s.%s.%d.layer_norm2.weight", pre, e, l)) ||
		    (rc = bind(m, &L->ln2_b, err, DIMS(d), "%s.%s.%d.layer_norm2.bias", pre, e, l)) ||
		    (rc = bind(m, &L->fc1.w, err, DIMS(in, d), "%s.%s.%d.mlp.fc1.weight", pre, e, l)) ||
		    (rc = bind(m, &L->fc1.b, err, DIMS(in), "%s.%s.%d.mlp.fc1.bias", pre, e, l)) ||
		    (rc = bind(m, &L->fc2.w, err, DIMS(d, in), "%s.%s.%d.mlp.fc2.weight", pre, e, l)) ||
		    (rc = bind(m, &L->fc2.b, err, DIMS(d), "%s.%s.%d.mlp.fc2.bias", pre, e, l)) ||
		    (rc = fuse_qkv(m, L, pre, l, d, w, b, err)))
			return rc;
		L->o.in = L->o.out = d;
		L->fc1.in = d;
		L->fc1.out = in;
		L->fc2.in = in;
		L->fc2.out = d;
	}
	return CLIP_OK;
}

static int bind_all(clip_model *m, clip_err *err)
{
	clip_tower *v = &m->vision, *t = &m->text;
	int dv = v->cfg.hidden, dt = t->cfg.hidden, p = v->cfg.patch_size, P = m->cfg.projection;
	const float *ls;
	int rc;
	if ((rc = bind(m, &v->class_emb, err, DIMS(dv), "vision_model.embeddings.class_embedding")) ||
	    (rc = bind(m, &v->patch.w, err, DIMS(dv, 3, p, p), "vision_model.embeddings.patch_embedding.weight")) ||
	    (rc = bind(m, &v->pos_emb, err, DIMS(v->cfg.positions, dv), "vision_model.embeddings.position_embedding.weight")) ||
	    (rc = bind(m, &v->pre_ln_w, err, DIMS(dv), "vision_model.pre_layrnorm.weight")) ||
	    (rc = bind(m, &v->pre_ln_b, err, DIMS(dv), "vision_model.pre_layrnorm.bias")) ||
	    (rc = bind_layers(m, v, "vision_model", err)) ||
	    (rc = bind(m, &v->post_ln_w, err, DIMS(dv), "vision_model.post_layernorm.weight")) ||
	    (rc = bind(m, &v->post_ln_b, err, DIMS(dv), "vision_model.post_layernorm.bias")) ||
	    (rc = bind(m, &v->proj.w, err, DIMS(P, dv), "visual_projection.weight")) ||
	    (rc = bind(m, &t->tok_emb, err, DIMS(t->cfg.vocab, dt), "text_model.embeddings.token_embedding.weight")) ||
	    (rc = bind(m, &t->pos_emb, err, DIMS(t->cfg.positions, dt), "text_model.embeddings.position_embedding.weight")) ||
	    (rc = bind_layers(m, t, "text_model", err)) ||
	    (rc = bind(m, &t->post_ln_w, err, DIMS(dt), "text_model.final_layer_norm.weight")) ||
	    (rc = bind(m, &t->post_ln_b, err, DIMS(dt), "text_model.final_layer_norm.bias")) ||
	    (rc = bind(m, &t->proj.w, err, DIMS(P, dt), "text_projection.weight")) ||
	    (rc = bind(m, &ls, err, 0, NULL, "logit_scale")))
		return rc;
	if (!isfinite(ls[0]) || ls[0] > 20)
		return clip_fail(err, CLIP_EMODEL, "logit_scale %g is out of range", (double)ls[0]);
	m->logit_scale = expf(ls[0]);
	v->patch.in = 3 * p * p;
	v->patch.out = dv;
	v->proj.in = dv;
	t->proj.in = dt;
	v->proj.out = t->proj.out = P;
	return CLIP_OK;
}

/* Converts one layer for the oneDNN backend, then lets its float32 copy go:
 * a converted (owned) copy is freed, a memory-mapped one leaves the
 * resident set. */
static int pack_one(clip_model *m, mm_weight *W, clip_precision p, clip_err *err)
{
	int rc = mm_pack(W, p, err);
	if (rc != CLIP_OK)
		return rc;
	size_t bytes = (size_t)W->in * W->out * sizeof(float);
	for (size_t i = 0; i < m->nowned; i++)
		if (m->owned[i] == W->w) {
			drop_owned(m, W->w);
			W->w = NULL;
			return CLIP_OK;
		}
	st_drop_range(W->w, bytes);
	return CLIP_OK;
}

static int pack_tower(clip_model *m, clip_tower *tw, clip_precision p, clip_err *err)
{
	int rc;
	for (int l = 0; l < tw->cfg.layers; l++) {
		clip_layer *L = &tw->layers[l];
		if ((rc = pack_one(m, &L->qkv, p, err)) || (rc = pack_one(m, &L->o, p, err)) ||
		    (rc = pack_one(m, &L->fc1, p, err)) || (rc = pack_one(m, &L->fc2, p, err)))
			return rc;
	}
	return pack_one(m, &tw->proj, p, err);
}

/* Resolves auto and converts every linear layer for oneDNN; float32 stays
 * on OpenBLAS when oneDNN is not built in. */
static int pack_all(clip_model *m, clip_precision p, int reference, clip_err *err)
{
	if (p == CLIP_PRECISION_AUTO)
		p = mm_precision_supported(CLIP_PRECISION_BF16, NULL) ? CLIP_PRECISION_BF16
		                                                      : CLIP_PRECISION_F32;
	const char *why = NULL;
	if (!mm_precision_supported(p, &why))
		return clip_fail(err, CLIP_EINVAL, "precision %s cannot run here: %s",
		                 clip_precision_name(p), why);
	m->precision = p;
	if (p == CLIP_PRECISION_F32 && (reference || !mm_have_dnnl()))
		return CLIP_OK;
	int rc;
	if ((rc = pack_one(m, &m->vision.patch, p, err)) ||
	    (rc = pack_tower(m, &m->vision, p, err)) || (rc = pack_tower(m, &m->text, p, err)))
		return rc;
	return CLIP_OK;
}

static const char *const precision_names[] = {"auto", "f32", "bf16", "int8"};

const char *clip_precision_name(clip_precision p)
{
	return (unsigned)p < 4 ? precision_names[p] : "unknown";
}

int clip_precision_parse(const char *s, clip_precision *out)
{
	for (int i = 0; s && i < 4; i++)
		if (strcmp(s, precision_names[i]) == 0) {
			*out = (clip_precision)i;
			return 0;
		}
	return -1;
}

int clip_precision_supported(clip_precision p, const char **why)
{
	return mm_precision_supported(p, why);
}

void clip_set_threads(int n)
{
	if (n > 0)
		mm_set_threads(n);
}

clip_precision clip_model_precision(const clip_model *m)
{
	return m->precision;
}

/* reference: float32 on OpenBLAS, nothing converted. */
static int open_model(const char *dir, clip_precision p, int reference, clip_model **out,
                      clip_err *err);

int clip_model_open(const char *dir, clip_model **out, clip_err *err)
{
	return open_model(dir, CLIP_PRECISION_F32, 1, out, err);
}

int clip_model_open_opts(const char *dir, const clip_options *opts, clip_model **out,
                         clip_err *err)
{
	return open_model(dir, opts ? opts->precision : CLIP_PRECISION_AUTO, 0, out, err);
}

static int open_model(const char *dir, clip_precision precision, int reference, clip_model **out,
                      clip_err *err)
{
	char cfg[PATH_MAX], pp[PATH_MAX], st[PATH_MAX], vocab[PATH_MAX], merges[PATH_MAX];
	clip_err local;
	int rc;

	if (!err)
		err = &local;
	*out = NULL;
	if (!dir || !*dir)
		return clip_fail(err, CLIP_EINVAL, "no model directory given");
	if (snprintf(cfg, sizeof cfg, "%s/config.json", dir) >= (int)sizeof cfg)
		return clip_fail(err, CLIP_EINVAL, "model directory path is too long");
	snprintf(pp, sizeof pp, "%s/preprocessor_config.json", dir);
	snprintf(st, sizeof st, "%s/model.safetensors", dir);
	snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
	snprintf(merges, sizeof merges, "%s/merges.txt", dir);

	clip_model *m = calloc(1, sizeof *m);
	if (!m || !(m->st = calloc(1, sizeof *m->st))) {
		free(m);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	if ((rc = clip_cfg_load(cfg, pp, &m->cfg, err)) != CLIP_OK)
		goto out;
	m->vision.cfg = m->cfg.vision;
	m->text.cfg = m->cfg.text;
	if ((rc = st_open(st, m->st, err)) != CLIP_OK)
		goto out;
	if ((rc = bind_all(m, err)) != CLIP_OK || (rc = pack_all(m, precision, reference, err)))
		goto out;
	if ((rc = tok_open(vocab, merges, &m->tok, err)) != CLIP_OK)
		goto out;
	if (tok_vocab_size(m->tok) != m->text.cfg.vocab) {
		rc = clip_fail(err, CLIP_EMODEL, "vocab.json has %d tokens, config.json says %d",
		               tok_vocab_size(m->tok), m->text.cfg.vocab);
		goto out;
	}
	*out = m;
	return CLIP_OK;
out:
	clip_model_close(m);
	return rc;
}

void clip_model_close(clip_model *m)
{
	if (!m)
		return;
	tok_close(m->tok);
	if (m->st)
		st_close(m->st);
	free(m->st);
	for (int t = 0; t < 2; t++) {
		clip_tower *tw = t ? &m->text : &m->vision;
		for (int l = 0; tw->layers && l < tw->cfg.layers; l++) {
			mm_unpack(&tw->layers[l].qkv);
			mm_unpack(&tw->layers[l].o);
			mm_unpack(&tw->layers[l].fc1);
			mm_unpack(&tw->layers[l].fc2);
		}
		mm_unpack(&tw->patch);
		mm_unpack(&tw->proj);
	}
	free(m->vision.layers);
	free(m->text.layers);
	for (size_t i = 0; i < m->nowned; i++)
		free(m->owned[i]);
	free(m->owned);
	free(m);
}

int clip_model_dim(const clip_model *m)
{
	return m->cfg.projection;
}

int clip_model_image_size(const clip_model *m)
{
	return m->cfg.vision.image_size;
}

int clip_model_context(const clip_model *m)
{
	return m->cfg.text.positions;
}

float clip_model_logit_scale(const clip_model *m)
{
	return m->logit_scale;
}

int clip_tokenize(const clip_model *m, const char *text, int32_t *ids, int *len, clip_err *err)
{
	if (!text || !ids)
		return clip_fail(err, CLIP_EINVAL, "text and output are required");
	return tok_encode(m->tok, text, ids, m->cfg.text.positions, len, err);
}

static void image_opts(const clip_model *m, const clip_image_limits *limits, img_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = m->cfg.vision.image_size;
	memcpy(o->mean, m->cfg.mean, sizeof o->mean);
	memcpy(o->std, m->cfg.std, sizeof o->std);
	o->max_pixels = limits && limits->max_pixels > 0 ? limits->max_pixels : 100000000;
	o->shrink_min_side = limits && limits->fast_decode ? o->size * IMG_FAST_DECODE_MARGIN : 0;
	o->max_scans = limits ? limits->max_scans : 0;
	o->timeout_ms = limits ? limits->decode_timeout_ms : 0;
}

int clip_preprocess_file(const clip_model *m, const char *path, const clip_image_limits *limits,
                         float *out, int *width, int *height, clip_err *err)
{
	img_opts o;
	image_opts(m, limits, &o);
	return img_preprocess_file(path, &o, out, width, height, err);
}

int clip_preprocess_buffer(const clip_model *m, const void *data, size_t len,
                           const clip_image_limits *limits, float *out, int *width, int *height,
                           clip_err *err)
{
	img_opts o;
	image_opts(m, limits, &o);
	return img_preprocess_buffer(data, len, &o, out, width, height, err);
}
