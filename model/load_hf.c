/*
 * load_hf.c: the Hugging Face CLIPModel, SiglipModel and ChineseCLIPModel
 * layouts (model.safetensors with transformers' tensor names) bound to the
 * model. Tensors the towers do
 * not use (position_ids buffers and the like) are ignored.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights_int.h"

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
		if ((rc = w_bind(m, &L->ln1_w, err, DIMS(d), "%s.%s.%d.layer_norm1.weight", pre, e, l)) ||
		    (rc = w_bind(m, &L->ln1_b, err, DIMS(d), "%s.%s.%d.layer_norm1.bias", pre, e, l)) ||
		    (rc = w_bind(m, &w[0], err, DIMS(d, d), "%s.%s.%d.self_attn.q_proj.weight", pre, e, l)) ||
		    (rc = w_bind(m, &b[0], err, DIMS(d), "%s.%s.%d.self_attn.q_proj.bias", pre, e, l)) ||
		    (rc = w_bind(m, &w[1], err, DIMS(d, d), "%s.%s.%d.self_attn.k_proj.weight", pre, e, l)) ||
		    (rc = w_bind(m, &b[1], err, DIMS(d), "%s.%s.%d.self_attn.k_proj.bias", pre, e, l)) ||
		    (rc = w_bind(m, &w[2], err, DIMS(d, d), "%s.%s.%d.self_attn.v_proj.weight", pre, e, l)) ||
		    (rc = w_bind(m, &b[2], err, DIMS(d), "%s.%s.%d.self_attn.v_proj.bias", pre, e, l)) ||
		    (rc = w_bind(m, &L->o.w, err, DIMS(d, d), "%s.%s.%d.self_attn.out_proj.weight", pre, e, l)) ||
		    (rc = w_bind(m, &L->o.b, err, DIMS(d), "%s.%s.%d.self_attn.out_proj.bias", pre, e, l)) ||
		    (rc = w_bind(m, &L->ln2_w, err, DIMS(d), "%s.%s.%d.layer_norm2.weight", pre, e, l)) ||
		    (rc = w_bind(m, &L->ln2_b, err, DIMS(d), "%s.%s.%d.layer_norm2.bias", pre, e, l)) ||
		    (rc = w_bind(m, &L->fc1.w, err, DIMS(in, d), "%s.%s.%d.mlp.fc1.weight", pre, e, l)) ||
		    (rc = w_bind(m, &L->fc1.b, err, DIMS(in), "%s.%s.%d.mlp.fc1.bias", pre, e, l)) ||
		    (rc = w_bind(m, &L->fc2.w, err, DIMS(d, in), "%s.%s.%d.mlp.fc2.weight", pre, e, l)) ||
		    (rc = w_bind(m, &L->fc2.b, err, DIMS(d), "%s.%s.%d.mlp.fc2.bias", pre, e, l)) ||
		    (rc = w_fuse_qkv(m, L, d, w, b, err)))
			return rc;
		L->o.in = L->o.out = d;
		L->fc1.in = d;
		L->fc1.out = in;
		L->fc2.in = in;
		L->fc2.out = d;
	}
	return CLIP_OK;
}

/* Chinese-CLIP's text tower: BERT's names (post-LN: ln1 is the attention
 * output's LayerNorm, ln2 the MLP output's). */
static int bind_bert_layers(clip_model *m, clip_tower *tw, clip_err *err)
{
	const clip_tower_cfg *c = &tw->cfg;
	int d = c->hidden, in = c->intermediate, rc;
	tw->layers = calloc((size_t)c->layers, sizeof *tw->layers);
	if (!tw->layers)
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	for (int l = 0; l < c->layers; l++) {
		clip_layer *L = &tw->layers[l];
		const char *e = "text_model.encoder.layer";
		const float *w[3], *b[3];
		if ((rc = w_bind(m, &w[0], err, DIMS(d, d), "%s.%d.attention.self.query.weight", e, l)) ||
		    (rc = w_bind(m, &b[0], err, DIMS(d), "%s.%d.attention.self.query.bias", e, l)) ||
		    (rc = w_bind(m, &w[1], err, DIMS(d, d), "%s.%d.attention.self.key.weight", e, l)) ||
		    (rc = w_bind(m, &b[1], err, DIMS(d), "%s.%d.attention.self.key.bias", e, l)) ||
		    (rc = w_bind(m, &w[2], err, DIMS(d, d), "%s.%d.attention.self.value.weight", e, l)) ||
		    (rc = w_bind(m, &b[2], err, DIMS(d), "%s.%d.attention.self.value.bias", e, l)) ||
		    (rc = w_bind(m, &L->o.w, err, DIMS(d, d), "%s.%d.attention.output.dense.weight", e, l)) ||
		    (rc = w_bind(m, &L->o.b, err, DIMS(d), "%s.%d.attention.output.dense.bias", e, l)) ||
		    (rc = w_bind(m, &L->ln1_w, err, DIMS(d), "%s.%d.attention.output.LayerNorm.weight", e, l)) ||
		    (rc = w_bind(m, &L->ln1_b, err, DIMS(d), "%s.%d.attention.output.LayerNorm.bias", e, l)) ||
		    (rc = w_bind(m, &L->fc1.w, err, DIMS(in, d), "%s.%d.intermediate.dense.weight", e, l)) ||
		    (rc = w_bind(m, &L->fc1.b, err, DIMS(in), "%s.%d.intermediate.dense.bias", e, l)) ||
		    (rc = w_bind(m, &L->fc2.w, err, DIMS(d, in), "%s.%d.output.dense.weight", e, l)) ||
		    (rc = w_bind(m, &L->fc2.b, err, DIMS(d), "%s.%d.output.dense.bias", e, l)) ||
		    (rc = w_bind(m, &L->ln2_w, err, DIMS(d), "%s.%d.output.LayerNorm.weight", e, l)) ||
		    (rc = w_bind(m, &L->ln2_b, err, DIMS(d), "%s.%d.output.LayerNorm.bias", e, l)) ||
		    (rc = w_fuse_qkv(m, L, d, w, b, err)))
			return rc;
		L->o.in = L->o.out = d;
		L->fc1.in = d;
		L->fc1.out = in;
		L->fc2.in = in;
		L->fc2.out = d;
	}
	return CLIP_OK;
}

static int bind_bert_text(clip_model *m, clip_err *err)
{
	clip_tower *t = &m->text;
	int dt = t->cfg.hidden, P = m->cfg.projection, rc;
	const float *types;
	const char *e = "text_model.embeddings";
	if ((rc = w_bind_rows(m, &t->tok_emb, &t->tok_raw, &t->tok_dtype, err, t->cfg.vocab, dt,
	                      "text_model.embeddings.word_embeddings.weight")) ||
	    (rc = w_bind(m, &t->pos_emb, err, DIMS(t->cfg.pos_rows, dt), "%s.position_embeddings.weight", e)) ||
	    (rc = w_bind(m, &types, err, DIMS(t->cfg.type_vocab, dt), "%s.token_type_embeddings.weight", e)) ||
	    (rc = w_bind(m, &t->emb_ln_w, err, DIMS(dt), "%s.LayerNorm.weight", e)) ||
	    (rc = w_bind(m, &t->emb_ln_b, err, DIMS(dt), "%s.LayerNorm.bias", e)) ||
	    (rc = bind_bert_layers(m, t, err)) ||
	    (rc = w_bind(m, &t->proj.w, err, DIMS(P, dt), "text_projection.weight")))
		return rc;
	t->type_emb = types; /* every token is of type 0 */
	t->proj.in = dt;
	t->proj.out = P;
	return CLIP_OK;
}

static int bind_clip(clip_model *m, clip_err *err)
{
	clip_tower *v = &m->vision, *t = &m->text;
	int dv = v->cfg.hidden, dt = t->cfg.hidden, p = v->cfg.patch_size, P = m->cfg.projection;
	const float *ls;
	int rc;
	if ((rc = w_bind(m, &v->class_emb, err, DIMS(dv), "vision_model.embeddings.class_embedding")) ||
	    (rc = w_bind(m, &v->patch.w, err, DIMS(dv, 3, p, p), "vision_model.embeddings.patch_embedding.weight")) ||
	    (rc = w_bind(m, &v->pos_emb, err, DIMS(v->cfg.positions, dv), "vision_model.embeddings.position_embedding.weight")) ||
	    (rc = w_bind(m, &v->pre_ln_w, err, DIMS(dv), "vision_model.pre_layrnorm.weight")) ||
	    (rc = w_bind(m, &v->pre_ln_b, err, DIMS(dv), "vision_model.pre_layrnorm.bias")) ||
	    (rc = bind_layers(m, v, "vision_model", err)) ||
	    (rc = w_bind(m, &v->post_ln_w, err, DIMS(dv), "vision_model.post_layernorm.weight")) ||
	    (rc = w_bind(m, &v->post_ln_b, err, DIMS(dv), "vision_model.post_layernorm.bias")) ||
	    (rc = w_bind(m, &v->proj.w, err, DIMS(P, dv), "visual_projection.weight")))
		return rc;
	if (m->cfg.text_bert) {
		if ((rc = bind_bert_text(m, err)) || (rc = w_bind(m, &ls, err, 0, NULL, "logit_scale")))
			return rc;
	} else if ((rc = w_bind_rows(m, &t->tok_emb, &t->tok_raw, &t->tok_dtype, err, t->cfg.vocab, dt, "text_model.embeddings.token_embedding.weight")) ||
	    (rc = w_bind(m, &t->pos_emb, err, DIMS(t->cfg.positions, dt), "text_model.embeddings.position_embedding.weight")) ||
	    (rc = bind_layers(m, t, "text_model", err)) ||
	    (rc = w_bind(m, &t->post_ln_w, err, DIMS(dt), "text_model.final_layer_norm.weight")) ||
	    (rc = w_bind(m, &t->post_ln_b, err, DIMS(dt), "text_model.final_layer_norm.bias")) ||
	    (rc = w_bind(m, &t->proj.w, err, DIMS(P, dt), "text_projection.weight")) ||
	    (rc = w_bind(m, &ls, err, 0, NULL, "logit_scale")))
		return rc;
	if (!isfinite(ls[0]) || ls[0] > 20)
		return clip_fail(err, CLIP_EMODEL, "logit_scale %g is out of range", (double)ls[0]);
	m->logit_scale = expf(ls[0]);
	v->patch.in = 3 * p * p;
	v->patch.out = dv;
	v->proj.in = dv;
	v->proj.out = P;
	if (!m->cfg.text_bert) {
		t->proj.in = dt;
		t->proj.out = P;
	}
	return CLIP_OK;
}


/* SigLIP's MAP head: the probe's query projected once, here; k and v rows
 * of in_proj copied into a [2d][d] layer of their own (so that packing it
 * can let the copy go). */
static int bind_map(clip_model *m, clip_tower *v, clip_err *err)
{
	int d = v->cfg.hidden, in = v->cfg.intermediate, rc;
	const float *probe, *ipw, *ipb;
	const char *h = "vision_model.head";
	if ((rc = w_bind(m, &probe, err, DIMS(1, 1, d), "%s.probe", h)) ||
	    (rc = w_bind(m, &ipw, err, DIMS(3 * d, d), "%s.attention.in_proj_weight", h)) ||
	    (rc = w_bind(m, &ipb, err, DIMS(3 * d), "%s.attention.in_proj_bias", h)) ||
	    (rc = w_bind(m, &v->map.o.w, err, DIMS(d, d), "%s.attention.out_proj.weight", h)) ||
	    (rc = w_bind(m, &v->map.o.b, err, DIMS(d), "%s.attention.out_proj.bias", h)) ||
	    (rc = w_bind(m, &v->map.ln_w, err, DIMS(d), "%s.layernorm.weight", h)) ||
	    (rc = w_bind(m, &v->map.ln_b, err, DIMS(d), "%s.layernorm.bias", h)) ||
	    (rc = w_bind(m, &v->map.fc1.w, err, DIMS(in, d), "%s.mlp.fc1.weight", h)) ||
	    (rc = w_bind(m, &v->map.fc1.b, err, DIMS(in), "%s.mlp.fc1.bias", h)) ||
	    (rc = w_bind(m, &v->map.fc2.w, err, DIMS(d, in), "%s.mlp.fc2.weight", h)) ||
	    (rc = w_bind(m, &v->map.fc2.b, err, DIMS(d), "%s.mlp.fc2.bias", h)))
		return rc;
	float *q = malloc((size_t)d * sizeof *q);
	float *kv = malloc((size_t)2 * d * d * sizeof *kv), *kvb = malloc((size_t)2 * d * sizeof *kvb);
	if (!q || !kv || !kvb) {
		free(q), free(kv), free(kvb);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	if (w_keep_owned(m, q) || w_keep_owned(m, kv) || w_keep_owned(m, kvb))
		return clip_fail(err, CLIP_ENOMEM, "out of memory"); /* kept ones are freed at close */
	for (int o = 0; o < d; o++) {
		double a = ipb[o];
		for (int i = 0; i < d; i++)
			a += (double)probe[i] * ipw[(size_t)o * d + i];
		q[o] = (float)a;
	}
	memcpy(kv, ipw + (size_t)d * d, (size_t)2 * d * d * sizeof *kv);
	memcpy(kvb, ipb + d, (size_t)2 * d * sizeof *kvb);
	w_release(m, ipw, (size_t)3 * d * d * sizeof *ipw);
	v->map.probe_q = q;
	v->map.kv = (mm_weight){d, 2 * d, kv, kvb, NULL};
	v->map.o.in = v->map.o.out = d;
	v->map.fc1.in = d;
	v->map.fc1.out = in;
	v->map.fc2.in = in;
	v->map.fc2.out = d;
	v->has_map = 1;
	return CLIP_OK;
}

static int bind_siglip(clip_model *m, clip_err *err)
{
	clip_tower *v = &m->vision, *t = &m->text;
	int dv = v->cfg.hidden, dt = t->cfg.hidden, p = v->cfg.patch_size, P = m->cfg.projection;
	const float *ls, *lb;
	int rc;
	if ((rc = w_bind(m, &v->patch.w, err, DIMS(dv, 3, p, p), "vision_model.embeddings.patch_embedding.weight")) ||
	    (rc = w_bind(m, &v->patch.b, err, DIMS(dv), "vision_model.embeddings.patch_embedding.bias")) ||
	    (rc = w_bind(m, &v->pos_emb, err, DIMS(v->cfg.positions, dv), "vision_model.embeddings.position_embedding.weight")) ||
	    (rc = bind_layers(m, v, "vision_model", err)) ||
	    (rc = w_bind(m, &v->post_ln_w, err, DIMS(dv), "vision_model.post_layernorm.weight")) ||
	    (rc = w_bind(m, &v->post_ln_b, err, DIMS(dv), "vision_model.post_layernorm.bias")) ||
	    (rc = bind_map(m, v, err)) ||
	    (rc = w_bind_rows(m, &t->tok_emb, &t->tok_raw, &t->tok_dtype, err, t->cfg.vocab, dt, "text_model.embeddings.token_embedding.weight")) ||
	    (rc = w_bind(m, &t->pos_emb, err, DIMS(t->cfg.positions, dt), "text_model.embeddings.position_embedding.weight")) ||
	    (rc = bind_layers(m, t, "text_model", err)) ||
	    (rc = w_bind(m, &t->post_ln_w, err, DIMS(dt), "text_model.final_layer_norm.weight")) ||
	    (rc = w_bind(m, &t->post_ln_b, err, DIMS(dt), "text_model.final_layer_norm.bias")) ||
	    (rc = w_bind(m, &t->proj.w, err, DIMS(P, dt), "text_model.head.weight")) ||
	    (rc = w_bind(m, &t->proj.b, err, DIMS(P), "text_model.head.bias")) ||
	    (rc = w_bind(m, &ls, err, DIMS(1), "logit_scale")) ||
	    (rc = w_bind(m, &lb, err, DIMS(1), "logit_bias")))
		return rc;
	if (!isfinite(ls[0]) || ls[0] > 20)
		return clip_fail(err, CLIP_EMODEL, "logit_scale %g is out of range", (double)ls[0]);
	if (!isfinite(lb[0]))
		return clip_fail(err, CLIP_EMODEL, "logit_bias is not finite");
	m->logit_scale = expf(ls[0]);
	m->logit_bias = lb[0];
	v->patch.in = 3 * p * p;
	v->patch.out = dv;
	t->proj.in = dt;
	t->proj.out = P;
	return CLIP_OK;
}

int load_hf_bind(clip_model *m, clip_err *err)
{
	return m->cfg.family == CLIP_FAMILY_SIGLIP ? bind_siglip(m, err) : bind_clip(m, err);
}
