/*
 * vision.c: the vision tower's forward pass. Patches are embedded with one
 * matrix product (the patch "conv" is a linear map of each flattened
 * patch), the class token is prepended, position embeddings added and
 * pre_layrnorm applied; the output is post_layernorm of the class token,
 * projected.
 */
#include <string.h>

#include "encoder_int.h"
#include "gemm_int.h"

int clip_encode_images(clip_ctx *c, int B, const float *pixels, float *out, clip_err *err)
{
	const clip_tower *tw = &c->m->vision;
	const clip_tower_cfg *cfg = &tw->cfg;
	if (B < 1 || B > c->max_batch)
		return clip_fail(err, CLIP_EINVAL, "batch of %d images; this context takes 1..%d", B,
		                 c->max_batch);
	if (!pixels || !out)
		return clip_fail(err, CLIP_EINVAL, "pixels and output are required");
	int S = cfg->image_size, p = cfg->patch_size, g = S / p, np = g * g, T = np + 1;
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
		for (int j = 0; j < d; j++)
			xb[j] = tw->class_emb[j] + tw->pos_emb[j];
		for (int i = 0; i < np; i++) {
			const float *pe = c->h + ((size_t)b * np + i) * d;
			const float *pos = tw->pos_emb + (size_t)(i + 1) * d;
			float *xi = xb + (size_t)(i + 1) * d;
			for (int j = 0; j < d; j++)
				xi[j] = pe[j] + pos[j];
		}
	}
	enc_layernorm(c->x, c->x, B * T, d, tw->pre_ln_w, tw->pre_ln_b, cfg->eps);
	for (int l = 0; l < cfg->layers; l++)
		enc_block(cfg, &tw->layers[l], c, B, T, 0);
	for (int b = 0; b < B; b++)
		enc_layernorm(c->x + (size_t)b * T * d, c->pooled + (size_t)b * d, 1, d, tw->post_ln_w,
		          tw->post_ln_b, cfg->eps);
	mm_linear(B, &tw->proj, c->pooled, out, 0);
	return enc_check_finite(out, (size_t)B * c->m->cfg.projection, err);
}

