/*
 * vision.c: the vision tower's forward pass. Patches are embedded with one
 * matrix product (the patch "conv" is a linear map of each flattened
 * patch, with SigLIP's bias). CLIP then prepends the class token, adds
 * position embeddings and applies pre_layrnorm; its output is
 * post_layernorm of the class token, projected. SigLIP has no class token
 * and no pre-norm: post_layernorm runs over every patch token, and the
 * multihead attention pooling head (map_head below) makes the embedding.
 */
#include <math.h>
#include <string.h>

#include "encoder_int.h"
#include "gemm_int.h"

struct map_job {
	clip_ctx *c;
	const float *q;
	int T, d, H, dh;
	float scale;
};

/* The probe's attention over the tokens of images (and heads) p0..p1:
 * one query per head, so a dot product per key, a softmax and a weighted
 * sum of the values. k and v sit side by side in each qkv row. */
static void map_attention(void *ctx, int p0, int p1)
{
	struct map_job *j = ctx;
	clip_ctx *c = j->c;
	int T = j->T, d = j->d, dh = j->dh;
	float *sc = c->scores + (p0 == 0 ? 0 : c->scores_part);
	for (int p = p0; p < p1; p++) {
		int b = p / j->H, hd = p % j->H;
		const float *q = j->q + (size_t)hd * dh;
		const float *kv = c->qkv + (size_t)b * T * 2 * d + (size_t)hd * dh;
		float mx = -INFINITY;
		for (int t = 0; t < T; t++) {
			const float *k = kv + (size_t)t * 2 * d;
			float a = 0;
			for (int i = 0; i < dh; i++)
				a += q[i] * k[i];
			sc[t] = a * j->scale;
			mx = sc[t] > mx ? sc[t] : mx;
		}
		float sum = 0;
		for (int t = 0; t < T; t++)
			sum += sc[t] = expf(sc[t] - mx);
		float inv = 1.0f / sum, *o = c->att + (size_t)b * d + (size_t)hd * dh;
		for (int i = 0; i < dh; i++)
			o[i] = 0;
		for (int t = 0; t < T; t++) {
			const float *v = kv + (size_t)t * 2 * d + d;
			float w = sc[t] * inv;
			for (int i = 0; i < dh; i++)
				o[i] += w * v[i];
		}
	}
}

/* SigLIP's head over c->x[B][T][d] (already post-LayerNormed) into
 * c->pooled[B][d]: a = out_proj(attention(probe, x, x)); pooled = a +
 * mlp(layernorm(a)) (the residual is around the MLP only). */
static void map_head(const clip_tower *tw, clip_ctx *c, int B, int T)
{
	const clip_tower_cfg *cfg = &tw->cfg;
	int d = cfg->hidden, H = cfg->heads, dh = d / H;
	int act = cfg->act == CLIP_QUICK_GELU ? MM_QUICK_GELU
	          : cfg->act == CLIP_GELU     ? MM_GELU
	                                      : MM_GELU_TANH;
	mm_linear(B * T, &tw->map.kv, c->x, c->qkv, 0);
	struct map_job j = {c, tw->map.probe_q, T, d, H, dh, 1.0f / sqrtf((float)dh)};
	mm_parallel(B * H, B * H * T * dh * 4, map_attention, &j);
	mm_linear(B, &tw->map.o, c->att, c->pooled, 0);
	enc_layernorm(c->pooled, c->h, B, d, tw->map.ln_w, tw->map.ln_b, cfg->eps);
	mm_linear(B, &tw->map.fc1, c->h, c->mlp, act);
	mm_linear(B, &tw->map.fc2, c->mlp, c->pooled, MM_ACCUMULATE);
}

int clip_encode_images(clip_ctx *c, int B, const float *pixels, float *out, clip_err *err)
{
	const clip_tower *tw = &c->m->vision;
	const clip_tower_cfg *cfg = &tw->cfg;
	if (B < 1 || B > c->max_batch)
		return clip_fail(err, CLIP_EINVAL, "batch of %d images; this context takes 1..%d", B,
		                 c->max_batch);
	if (!pixels || !out)
		return clip_fail(err, CLIP_EINVAL, "pixels and output are required");
	int S = cfg->image_size, p = cfg->patch_size, g = S / p, np = g * g;
	int cls = tw->class_emb != NULL, T = np + cls;
	int d = cfg->hidden, pd = 3 * p * p;

	/* Gather patches so that each row matches the conv weight's (c, y, x)
	 * order. */
	for (int b = 0; b < B; b++)
		for (int gy = 0; gy < g; gy++)
			for (int gx = 0; gx < g; gx++) {
				float *row = c->patches + ((size_t)b * np + (size_t)gy * g + gx) * pd;
				for (int ch = 0; ch < 3; ch++)
					for (int ky = 0; ky < p; ky++)
						memcpy(row + (ch * p + ky) * p,
						       pixels + (((size_t)b * 3 + ch) * S + (size_t)gy * p + ky) * S +
						               (size_t)gx * p,
						       (size_t)p * sizeof(float));
			}
	mm_linear(B * np, &tw->patch, c->patches, c->h, 0);
	for (int b = 0; b < B; b++) {
		float *xb = c->x + (size_t)b * T * d;
		if (cls)
			for (int j = 0; j < d; j++)
				xb[j] = tw->class_emb[j] + tw->pos_emb[j];
		for (int i = 0; i < np; i++) {
			const float *pe = c->h + ((size_t)b * np + i) * d;
			const float *pos = tw->pos_emb + (size_t)(i + cls) * d;
			float *xi = xb + (size_t)(i + cls) * d;
			for (int j = 0; j < d; j++)
				xi[j] = pe[j] + pos[j];
		}
	}
	if (tw->pre_ln_w)
		enc_layernorm(c->x, c->x, B * T, d, tw->pre_ln_w, tw->pre_ln_b, cfg->eps);
	for (int l = 0; l < cfg->layers; l++)
		enc_block(cfg, &tw->layers[l], c, B, T, 0);
	if (tw->has_map) {
		enc_layernorm(c->x, c->x, B * T, d, tw->post_ln_w, tw->post_ln_b, cfg->eps);
		map_head(tw, c, B, T);
	} else {
		for (int b = 0; b < B; b++)
			enc_layernorm(c->x + (size_t)b * T * d, c->pooled + (size_t)b * d, 1, d,
			              tw->post_ln_w, tw->post_ln_b, cfg->eps);
	}
	if (tw->proj.w || tw->proj.packed)
		mm_linear(B, &tw->proj, c->pooled, out, 0);
	else
		memcpy(out, c->pooled, (size_t)B * d * sizeof *out);
	return enc_check_finite(out, (size_t)B * c->m->cfg.projection, err);
}

