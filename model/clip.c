/*
 * clip.c: the public model API (clip.h): opening a checkpoint directory
 * (its layout from the files present, layout.c; its config, config*.c;
 * weights through the layout's loader, load_*.c; and its tokenizer), converting the linear layers to the chosen precision, and the
 * accessors.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip_int.h"
#include "preprocess_int.h"
#include "safetensors_int.h"
#include "tok_bpe_int.h"
#include "tok_spm_int.h"
#include "tok_wordpiece_int.h"
#include "weights_int.h"

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
			w_drop_owned(m, W->w);
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
	if (tw->has_map &&
	    ((rc = pack_one(m, &tw->map.kv, p, err)) || (rc = pack_one(m, &tw->map.o, p, err)) ||
	     (rc = pack_one(m, &tw->map.fc1, p, err)) || (rc = pack_one(m, &tw->map.fc2, p, err))))
		return rc;
	return tw->proj.w ? pack_one(m, &tw->proj, p, err) : CLIP_OK;
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

/* SigLIP's tokenizer, by the file the checkpoint ships: spiece.model
 * (SigLIP: SentencePiece Unigram, SiglipTokenizer's rules) or
 * tokenizer.model (the fixed-resolution SigLIP2 checkpoints: Gemma's BPE).
 * Its pieces must fit the token table (the table may be larger). */
static int open_spm(clip_model *m, const char *dir, clip_err *err)
{
	static const struct {
		const char *file;
		tok_spm_style style;
	} kinds[] = {{"spiece.model", TOK_SPM_SIGLIP}, {"tokenizer.model", TOK_SPM_GEMMA}};
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		if (snprintf(path, sizeof path, "%s/%s", dir, kinds[i].file) >= (int)sizeof path)
			return clip_fail(err, CLIP_EINVAL, "model directory path is too long");
		if (access(path, F_OK) != 0)
			continue;
		int rc = tok_spm_open(path, kinds[i].style, &m->spm, err);
		if (rc != CLIP_OK)
			return rc;
		if (tok_spm_vocab_size(m->spm) > m->text.cfg.vocab)
			return clip_fail(err, CLIP_EMODEL, "%s has %d pieces, more than the %d rows of the "
			                 "token table", kinds[i].file, tok_spm_vocab_size(m->spm),
			                 m->text.cfg.vocab);
		return CLIP_OK;
	}
	return clip_fail(err, CLIP_EMODEL, "a SigLIP checkpoint needs its SentencePiece tokenizer: "
	                 "spiece.model (SigLIP) or tokenizer.model (SigLIP2) is missing from %s", dir);
}

/* Chinese-CLIP's tokenizer: BERT's WordPiece over vocab.txt, whose ids
 * must fit the token table. [SEP], which ends a text's mask (text.c), is
 * the last id the tokenizer gives the empty text. */
static int open_wordpiece(clip_model *m, const char *dir, clip_err *err)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s/vocab.txt", dir) >= (int)sizeof path)
		return clip_fail(err, CLIP_EINVAL, "model directory path is too long");
	int rc = tok_wp_open(path, &m->wp, err);
	if (rc != CLIP_OK)
		return rc;
	if (tok_wp_vocab_size(m->wp) > m->text.cfg.vocab)
		return clip_fail(err, CLIP_EMODEL, "vocab.txt has %d entries, more than the %d rows of "
		                 "the token table", tok_wp_vocab_size(m->wp), m->text.cfg.vocab);
	int32_t ids[8];
	int len = 0;
	if ((rc = tok_wp_encode(m->wp, "", ids, 8, &len, err)) != CLIP_OK)
		return rc;
	if (len != 2)
		return clip_fail(err, CLIP_EMODEL, "vocab.txt: the empty text gives %d tokens, not "
		                 "[CLS] [SEP]", len);
	m->sep_id = ids[1];
	return CLIP_OK;
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
	const clip_layout *layout;
	if ((rc = clip_layout_detect(dir, &layout, err)) != CLIP_OK)
		return rc;
	if (snprintf(cfg, sizeof cfg, "%s/%s", dir, layout->config) >= (int)sizeof cfg)
		return clip_fail(err, CLIP_EINVAL, "model directory path is too long");
	snprintf(pp, sizeof pp, "%s/preprocessor_config.json", dir);
	snprintf(st, sizeof st, "%s/%s", dir, layout->weights);
	snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
	snprintf(merges, sizeof merges, "%s/merges.txt", dir);

	clip_model *m = calloc(1, sizeof *m);
	if (!m || !(m->st = calloc(1, sizeof *m->st))) {
		free(m);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	m->layout = layout;
	if ((rc = layout->kind == CLIP_LAYOUT_OPENCLIP ? clip_cfg_load_openclip(cfg, &m->cfg, err)
	                                                : clip_cfg_load(cfg, pp, &m->cfg, err)))
		goto out;
	m->vision.cfg = m->cfg.vision;
	m->text.cfg = m->cfg.text;
	if ((rc = st_open(st, m->st, err)) != CLIP_OK)
		goto out;
	if ((rc = layout->kind == CLIP_LAYOUT_OPENCLIP ? load_openclip_bind(m, err)
	                                                : load_hf_bind(m, err)) ||
	    (rc = pack_all(m, precision, reference, err)))
		goto out;
	if (m->cfg.family == CLIP_FAMILY_SIGLIP) {
		if ((rc = open_spm(m, dir, err)) != CLIP_OK)
			goto out;
		*out = m;
		return CLIP_OK;
	}
	if (m->cfg.text_bert) {
		if ((rc = open_wordpiece(m, dir, err)) != CLIP_OK)
			goto out;
		*out = m;
		return CLIP_OK;
	}
	if ((rc = tok_open(vocab, merges, &m->tok, err)) != CLIP_OK)
		goto out;
	if (tok_vocab_size(m->tok) != m->text.cfg.vocab) {
		rc = clip_fail(err, CLIP_EMODEL, "vocab.json has %d tokens, %s says %d",
		               tok_vocab_size(m->tok), layout->config, m->text.cfg.vocab);
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
	tok_spm_close(m->spm);
	tok_wp_close(m->wp);
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
		mm_unpack(&tw->map.kv);
		mm_unpack(&tw->map.o);
		mm_unpack(&tw->map.fc1);
		mm_unpack(&tw->map.fc2);
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

float clip_model_logit_bias(const clip_model *m)
{
	return m->logit_bias;
}

clip_family clip_model_family(const clip_model *m)
{
	return m->cfg.family;
}

/* Multiply-adds of `layers` pre-norm blocks over n tokens of width c. */
static double tower_macs(const clip_tower_cfg *t, double n)
{
	double c = t->hidden, i = t->intermediate;
	return t->layers * (4 * n * c * c + 2 * n * n * c + 2 * n * c * i);
}

double clip_model_image_gflop(const clip_model *m)
{
	const clip_tower_cfg *v = &m->vision.cfg;
	double p = v->patch_size, g = v->image_size / v->patch_size, c = v->hidden;
	double n = v->positions; /* patches, plus CLIP's class token */
	double macs = g * g * 3 * p * p * c + tower_macs(v, n);
	if (m->vision.has_map) /* k, v of every token; the probe's attention; out; MLP */
		macs += 2 * n * c * c + 2 * n * c + c * c + 2 * c * v->intermediate;
	else
		macs += c * m->cfg.projection;
	return 2 * macs / 1e9;
}

double clip_model_text_gflop(const clip_model *m, int tokens)
{
	const clip_tower_cfg *t = &m->text.cfg;
	double n = m->cfg.family == CLIP_FAMILY_SIGLIP || tokens < 1 || tokens > t->positions
	               ? t->positions
	               : tokens;
	return 2 * (tower_macs(t, n) + (double)t->hidden * m->cfg.projection) / 1e9;
}

const char *clip_model_arch(const clip_model *m)
{
	return m->cfg.text_bert ? "chinese_clip" : clip_family_name(m->cfg.family);
}

const char *clip_model_default_template(const clip_model *m)
{
	/* Chinese-CLIP's first prompt template: openai_templates[0] of
	 * cn_clip/eval/cvinw_zeroshot_templates.py, OFA-Sys/Chinese-CLIP at
	 * bed51c615c6e005a01b1a38e755e3e0b2fa5bc6f ("{c}的照片", "a photo of {c}"). */
	return m->cfg.text_bert ? "{}的照片" : "a photo of a {}.";
}

const char *clip_family_name(clip_family f)
{
	return f == CLIP_FAMILY_SIGLIP ? "siglip" : "clip";
}

int clip_tokenize(const clip_model *m, const char *text, int32_t *ids, int *len, clip_err *err)
{
	if (!text || !ids)
		return clip_fail(err, CLIP_EINVAL, "text and output are required");
	if (m->spm)
		return tok_spm_encode(m->spm, text, ids, m->cfg.text.positions, len, err);
	if (m->wp)
		return tok_wp_encode(m->wp, text, ids, m->cfg.text.positions, len, err);
	if (!m->tok)
		return clip_fail(err, CLIP_EMODEL, "this model has no tokenizer");
	return tok_encode(m->tok, text, ids, m->cfg.text.positions, len, err);
}

static void image_opts(const clip_model *m, const clip_image_limits *limits, img_opts *o)
{
	memset(o, 0, sizeof *o);
	o->size = m->cfg.vision.image_size;
	o->fit = (img_fit)m->cfg.fit;
	o->filter = m->cfg.filter;
	o->alpha_dropped = m->cfg.alpha_dropped;
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
