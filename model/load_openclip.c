/*
 * load_openclip.c: open_clip's own checkpoint layout
 * (open_clip_model.safetensors, the state_dict() of open_clip's CLIP class)
 * bound to the same model fields as the Hugging Face layout (load_hf.c).
 *
 * Two differences from transformers' names matter beyond the renaming:
 * - attn.in_proj_weight / in_proj_bias are already q, k and v stacked
 *   ([3d][d], nn.MultiheadAttention's layout), which is the model's fused
 *   qkv: bound as is, in place when F32, with no copy.
 * - visual.proj and text_projection are [width][embed], applied as
 *   x @ proj (open_clip transformer.py VisionTransformer.forward, model.py
 *   CLIP._encode_text); the model's linear layers are [out][in], so each is
 *   transposed once here into a copy the model owns (m->owned).
 * Tensors the towers do not use (attn_mask is not persistent, so absent)
 * are ignored.
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
		const char *r = "transformer.resblocks";
		if ((rc = w_bind(m, &L->ln1_w, err, DIMS(d), "%s%s.%d.ln_1.weight", pre, r, l)) ||
		    (rc = w_bind(m, &L->ln1_b, err, DIMS(d), "%s%s.%d.ln_1.bias", pre, r, l)) ||
		    (rc = w_bind(m, &L->qkv.w, err, DIMS(3 * d, d), "%s%s.%d.attn.in_proj_weight", pre, r, l)) ||
		    (rc = w_bind(m, &L->qkv.b, err, DIMS(3 * d), "%s%s.%d.attn.in_proj_bias", pre, r, l)) ||
		    (rc = w_bind(m, &L->o.w, err, DIMS(d, d), "%s%s.%d.attn.out_proj.weight", pre, r, l)) ||
		    (rc = w_bind(m, &L->o.b, err, DIMS(d), "%s%s.%d.attn.out_proj.bias", pre, r, l)) ||
		    (rc = w_bind(m, &L->ln2_w, err, DIMS(d), "%s%s.%d.ln_2.weight", pre, r, l)) ||
		    (rc = w_bind(m, &L->ln2_b, err, DIMS(d), "%s%s.%d.ln_2.bias", pre, r, l)) ||
		    (rc = w_bind(m, &L->fc1.w, err, DIMS(in, d), "%s%s.%d.mlp.c_fc.weight", pre, r, l)) ||
		    (rc = w_bind(m, &L->fc1.b, err, DIMS(in), "%s%s.%d.mlp.c_fc.bias", pre, r, l)) ||
		    (rc = w_bind(m, &L->fc2.w, err, DIMS(d, in), "%s%s.%d.mlp.c_proj.weight", pre, r, l)) ||
		    (rc = w_bind(m, &L->fc2.b, err, DIMS(d), "%s%s.%d.mlp.c_proj.bias", pre, r, l)))
			return rc;
		L->qkv.in = d;
		L->qkv.out = 3 * d;
		L->o.in = L->o.out = d;
		L->fc1.in = d;
		L->fc1.out = in;
		L->fc2.in = in;
		L->fc2.out = d;
	}
	return CLIP_OK;
}

/* Binds the [width][embed] projection called name as the model's
 * [embed][width] linear layer W: a transposed copy, owned by the model. The
 * original's pages (or its converted copy) are let go. */
static int bind_proj(clip_model *m, mm_weight *W, int width, int embed, const char *name,
                     clip_err *err)
{
	const float *src;
	int rc = w_bind(m, &src, err, DIMS(width, embed), "%s", name);
	if (rc != CLIP_OK)
		return rc;
	float *t = malloc((size_t)width * embed * sizeof *t);
	if (!t || w_keep_owned(m, t) != 0) {
		free(t);
		return clip_fail(err, CLIP_ENOMEM, "out of memory transposing %s", name);
	}
	for (int i = 0; i < width; i++)
		for (int o = 0; o < embed; o++)
			t[(size_t)o * width + i] = src[(size_t)i * embed + o];
	const st_tensor *st = st_find(m->st, name);
	if (st && st->data == (const void *)src)
		st_drop(st);
	w_drop_owned(m, src);
	*W = (mm_weight){width, embed, t, NULL, NULL};
	return CLIP_OK;
}

int load_openclip_bind(clip_model *m, clip_err *err)
{
	clip_tower *v = &m->vision, *t = &m->text;
	int dv = v->cfg.hidden, dt = t->cfg.hidden, p = v->cfg.patch_size, P = m->cfg.projection;
	const float *ls;
	int rc;
	if ((rc = w_bind(m, &v->class_emb, err, DIMS(dv), "visual.class_embedding")) ||
	    (rc = w_bind(m, &v->patch.w, err, DIMS(dv, 3, p, p), "visual.conv1.weight")) ||
	    (rc = w_bind(m, &v->pos_emb, err, DIMS(v->cfg.positions, dv), "visual.positional_embedding")) ||
	    (rc = w_bind(m, &v->pre_ln_w, err, DIMS(dv), "visual.ln_pre.weight")) ||
	    (rc = w_bind(m, &v->pre_ln_b, err, DIMS(dv), "visual.ln_pre.bias")) ||
	    (rc = bind_layers(m, v, "visual.", err)) ||
	    (rc = w_bind(m, &v->post_ln_w, err, DIMS(dv), "visual.ln_post.weight")) ||
	    (rc = w_bind(m, &v->post_ln_b, err, DIMS(dv), "visual.ln_post.bias")) ||
	    (rc = bind_proj(m, &v->proj, dv, P, "visual.proj", err)) ||
	    (rc = w_bind_rows(m, &t->tok_emb, &t->tok_raw, &t->tok_dtype, err, t->cfg.vocab, dt, "token_embedding.weight")) ||
	    (rc = w_bind(m, &t->pos_emb, err, DIMS(t->cfg.positions, dt), "positional_embedding")) ||
	    (rc = bind_layers(m, t, "", err)) ||
	    (rc = w_bind(m, &t->post_ln_w, err, DIMS(dt), "ln_final.weight")) ||
	    (rc = w_bind(m, &t->post_ln_b, err, DIMS(dt), "ln_final.bias")) ||
	    (rc = bind_proj(m, &t->proj, dt, P, "text_projection", err)))
		return rc;
	/* A scalar, or [1] with model_cfg.nonscalar_logit_scale (open_clip
	 * model.py:362). */
	const st_tensor *lt = st_find(m->st, "logit_scale");
	if ((rc = lt && lt->ndim == 1 ? w_bind(m, &ls, err, DIMS(1), "logit_scale")
	                              : w_bind(m, &ls, err, 0, NULL, "logit_scale")))
		return rc;
	if (!isfinite(ls[0]) || ls[0] > 20)
		return clip_fail(err, CLIP_EMODEL, "logit_scale %g is out of range", (double)ls[0]);
	m->logit_scale = expf(ls[0]);
	v->patch.in = 3 * p * p;
	v->patch.out = dv;
	return CLIP_OK;
}
