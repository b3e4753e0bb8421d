/*
 * load_hf.c: the Hugging Face CLIPModel layout (model.safetensors with
 * transformers' tensor names) bound to the model. Tensors the towers do
 * not use (position_ids buffers and the like) are ignored.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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
		    (rc = w_fuse_qkv(m, L, pre, l, d, w, b, err)))
			return rc;
		L->o.in = L->o.out = d;
		L->fc1.in = d;
		L->fc1.out = in;
		L->fc2.in = in;
		L->fc2.out = d;
	}
	return CLIP_OK;
}

int load_hf_bind(clip_model *m, clip_err *err)
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
	    (rc = w_bind(m, &v->proj.w, err, DIMS(P, dv), "visual_projection.weight")) ||
	    (rc = w_bind(m, &t->tok_emb, err, DIMS(t->cfg.vocab, dt), "text_model.embeddings.token_embedding.weight")) ||
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
	t->proj.in = dt;
	v->proj.out = t->proj.out = P;
	return CLIP_OK;
}

