/*
 * encoder_int.h: what the towers' forward passes share (transformer.c):
 * the per-thread activation buffers, LayerNorm and the pre-norm
 * transformer block. Private to the model module.
 */
#ifndef CLIPD_ENCODER_INT_H
#define CLIPD_ENCODER_INT_H

#include "clip_int.h"

struct clip_ctx {
	const clip_model *m;
	int max_batch;
	float *x;        /* [B*T][d]   residual stream */
	float *h;        /* [B*T][max(d, patch_dim... )] normalised input / scratch */
	float *qkv;      /* [B*T][3d]  q, k, v side by side in each row */
	float *att;      /* [B*T][d]   heads concatenated */
	float *mlp;      /* [B*T][intermediate] */
	float *scores;   /* attention scratch, one part per thread */
	size_t scores_part; /* floats in each part */
	float *patches;  /* [B*np][3*p*p] */
	float *pooled;   /* [B][d] */
	int *eot;        /* [B] */
};

/* y[n][d] = LayerNorm(x) with weight w, bias b and eps; x == y allowed. */
void enc_layernorm(const float *x, float *y, int n, int d, const float *w, const float *b,
                   float eps);

/* One pre-norm block over c->x[B*T][d]: x += attn(ln1(x)); x += mlp(ln2(x)). */
void enc_block(const clip_tower_cfg *cfg, const clip_layer *L, clip_ctx *c, int B, int T,
               int causal);

/* BERT's post-norm block: x = ln1(x + attn(x)); x = ln2(x + mlp(x)), the
 * attention of item b over its first lens[b] positions only (its mask). */
void enc_block_post(const clip_tower_cfg *cfg, const clip_layer *L, clip_ctx *c, int B, int T,
                    const int *lens);

/* CLIP_OK when every v[n] is finite; else CLIP_ENOMEM with a message. */
int enc_check_finite(const float *v, size_t n, clip_err *err);

#endif
