/*
 * encoder.c: the two CLIP towers' forward passes (activations in float32;
 * the linear layers in the model's precision, gemm_int.h).
 *
 * Both are pre-norm transformers (x += attn(ln1(x)); x += mlp(ln2(x))). The
 * vision tower embeds patches with one matrix product (the patch "conv" is
 * a linear map of each flattened patch), prepends the class token, adds
 * position embeddings and applies pre_layrnorm; its output is post_layernorm
 * of the class token, projected. The text tower adds token and position
 * embeddings, runs causal attention, and pools final_layer_norm at the
 * <|endoftext|> position. Attention is causal, so a batch of texts only runs
 * as many positions as its longest text needs, not the full context.
 *
 * Every matrix product goes through gemm_int.h. Activations live in the
 * clip_ctx, sized once for its largest batch: nothing here allocates.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"
#include "gemm_int.h"
#include "simd_int.h"

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

struct ln_job {
	const float *x, *w, *b;
	float *y;
	int d;
	float eps;
};

/* Two passes over each row: the sum and the sum of squares of the
 * deviations (not of the values: a row with a large mean loses nothing),
 * then the affine map; sixteen lanes at a time. */
MULTIVERSION
static void layernorm_rows(void *ctx, int i0, int i1)
{
	struct ln_job *j = ctx;
	const float *w = j->w, *b = j->b;
	float eps = j->eps;
	int d = j->d, d16 = d & ~15;
	for (int i = i0; i < i1; i++) {
		const float *xi = j->x + (size_t)i * d;
		float *yi = j->y + (size_t)i * d;
		v16 acc = {0};
		for (int k = 0; k < d16; k += 16)
			acc += LOAD16(xi + k);
		float mean = hsum(&acc);
		for (int k = d16; k < d; k++)
			mean += xi[k];
		mean /= (float)d;
		v16 var = {0};
		for (int k = 0; k < d16; k += 16) {
			v16 t = LOAD16(xi + k) - mean;
			var += t * t;
		}
		float v = hsum(&var);
		for (int k = d16; k < d; k++)
			v += (xi[k] - mean) * (xi[k] - mean);
		float inv = 1.0f / sqrtf(v / (float)d + eps);
		for (int k = 0; k < d16; k += 16) {
			v16 t = (LOAD16(xi + k) - mean) * inv * LOAD16(w + k) + LOAD16(b + k);
			memcpy(yi + k, &t, sizeof t);
		}
		for (int k = d16; k < d; k++)
			yi[k] = (xi[k] - mean) * inv * w[k] + b[k];
	}
}

static void layernorm(const float *x, float *y, int n, int d, const float *w, const float *b,
                      float eps)
{
	struct ln_job j = {x, w, b, y, d, eps};
	mm_parallel(n, n * d * 4, layernorm_rows, &j);
}

struct attn_job {
	clip_ctx *c;
	int B, T, d, H, dh, causal;
	float scale;
};

/* Attention of the (image or text, head) pairs p0..p1, each with its own
 * scores buffer (the second thread uses the upper half). */
static void attention_part(void *ctx, int p0, int p1)
{
	struct attn_job *j = ctx;
	clip_ctx *c = j->c;
	int T = j->T, d = j->d, dh = j->dh;
	float *scores = c->scores + (p0 == 0 ? 0 : c->scores_part);
	for (int p = p0; p < p1; p++) {
		int b = p / j->H, hd = p % j->H;
		const float *qkv = c->qkv + (size_t)b * T * 3 * d;
		float *att = c->att + (size_t)b * T * d;
		const float *q = qkv + (size_t)hd * dh, *k = q + d, *v = q + 2 * d;
		mm_attention(T, dh, j->scale, j->causal, q, k, v, 3 * d, att + (size_t)hd * dh, d,
		             scores);
	}
}

static void block(const clip_tower_cfg *cfg, const clip_layer *L, clip_ctx *c, int B, int T,
                  int causal)
{
	int d = cfg->hidden, H = cfg->heads, dh = d / H, N = B * T;

	int act = cfg->act == CLIP_QUICK_GELU ? MM_QUICK_GELU : MM_GELU;

	/* The residual adds, the biases and the activation happen inside the
	 * products (mm_linear flags). */
	layernorm(c->x, c->h, N, d, L->ln1_w, L->ln1_b, cfg->eps);
	mm_linear(N, &L->qkv, c->h, c->qkv, 0);
	struct attn_job j = {c, B, T, d, H, dh, causal, 1.0f / sqrtf((float)dh)};
	mm_parallel(B * H, B * H * T * T * dh * 2, attention_part, &j);
	mm_linear(N, &L->o, c->att, c->x, MM_ACCUMULATE);

	layernorm(c->x, c->h, N, d, L->ln2_w, L->ln2_b, cfg->eps);
	mm_linear(N, &L->fc1, c->h, c->mlp, act);
	mm_linear(N, &L->fc2, c->mlp, c->x, MM_ACCUMULATE);
}

/* A product that could not run (out of memory for a converted layer,
 * gemm_dnnl.c) leaves NaN behind: an error here, never a stored vector. */
static int check_finite(const float *v, size_t n, clip_err *err)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return clip_fail(err, CLIP_ENOMEM, "the encoder produced a non-finite value "
			                 "(out of memory, or a damaged checkpoint)");
	return CLIP_OK;
}

int clip_ctx_new(const clip_model *m, int max_batch, clip_ctx **out, clip_err *err)
{
	*out = NULL;
	if (max_batch < 1 || max_batch > 4096)
		return clip_fail(err, CLIP_EINVAL, "batch size must be between 1 and 4096");
	const clip_tower_cfg *v = &m->vision.cfg, *t = &m->text.cfg;
	int p = v->patch_size, g = v->image_size / p, np = g * g;
	size_t B = (size_t)max_batch;
	size_t tok = B * (size_t)(v->positions > t->positions ? v->positions : t->positions);
	size_t d = (size_t)(v->hidden > t->hidden ? v->hidden : t->hidden);
	size_t inter = (size_t)(v->intermediate > t->intermediate ? v->intermediate : t->intermediate);
	size_t tmax = (size_t)(v->positions > t->positions ? v->positions : t->positions);
	size_t pd = (size_t)3 * p * p;
	/* h also holds the patch embeddings [B*np][d_vision]. */
	size_t hsz = tok * d;

	clip_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	c->m = m;
	c->max_batch = max_batch;
	c->x = malloc(tok * d * sizeof(float));
	c->h = malloc(hsz * sizeof(float));
	c->qkv = malloc(tok * 3 * d * sizeof(float));
	c->att = malloc(tok * d * sizeof(float));
	c->mlp = malloc(tok * inter * sizeof(float));
	int dh = v->hidden / v->heads > t->hidden / t->heads ? v->hidden / v->heads
	                                                      : t->hidden / t->heads;
	c->scores_part = mm_attention_scratch((int)tmax, dh);
	c->scores = malloc(2 * c->scores_part * sizeof(float)); /* one part per thread */
	c->patches = malloc(B * (size_t)np * pd * sizeof(float));
	c->pooled = malloc(B * d * sizeof(float));
	c->eot = malloc(B * sizeof(int));
	if (!c->x || !c->h || !c->qkv || !c->att || !c->mlp || !c->scores ||
	    !c->patches || !c->pooled || !c->eot) {
		clip_ctx_free(c);
		return clip_fail(err, CLIP_ENOMEM, "out of memory for a batch of %d", max_batch);
	}
	*out = c;
	return CLIP_OK;
}

void clip_ctx_free(clip_ctx *c)
{
	if (!c)
		return;
	free(c->x);
	free(c->h);
	free(c->qkv);
	free(c->att);
	free(c->mlp);
	free(c->scores);
	free(c->patches);
	free(c->pooled);
	free(c->eot);
	free(c);
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
	layernorm(c->x, c->x, B * T, d, tw->pre_ln_w, tw->pre_ln_b, cfg->eps);
	for (int l = 0; l < cfg->layers; l++)
		block(cfg, &tw->layers[l], c, B, T, 0);
	for (int b = 0; b < B; b++)
		layernorm(c->x + (size_t)b * T * d, c->pooled + (size_t)b * d, 1, d, tw->post_ln_w,
		          tw->post_ln_b, cfg->eps);
	mm_linear(B, &tw->proj, c->pooled, out, 0);
	return check_finite(out, (size_t)B * c->m->cfg.projection, err);
}

int clip_encode_texts(clip_ctx *c, int B, const int32_t *ids, float *out, clip_err *err)
{
	const clip_tower *tw = &c->m->text;
	const clip_tower_cfg *cfg = &tw->cfg;
	int ctx = cfg->positions, d = cfg->hidden;
	if (B < 1 || B > c->max_batch)
		return clip_fail(err, CLIP_EINVAL, "batch of %d texts; this context takes 1..%d", B,
		                 c->max_batch);
	if (!ids || !out)
		return clip_fail(err, CLIP_EINVAL, "token ids and output are required");

	/* The pooled position: transformers' rule. With the legacy
	 * eos_token_id 2 it is the first occurrence of the highest id
	 * (<|endoftext|> is the last token of the vocabulary). */
	int T = 1;
	for (int b = 0; b < B; b++) {
		const int32_t *r = ids + (size_t)b * ctx;
		int pos = -1;
		for (int t = 0; t < ctx; t++) {
			if (r[t] < 0 || r[t] >= cfg->vocab)
				return clip_fail(err, CLIP_EINVAL, "token id %d at position %d is outside the "
				                 "vocabulary of %d", r[t], t, cfg->vocab);
			if (cfg->eos_token_id == 2) {
				if (pos < 0 || r[t] > r[pos])
					pos = t;
			} else if (pos < 0 && r[t] == cfg->eos_token_id) {
				pos = t;
			}
		}
		if (pos < 0)
			pos = ctx - 1;
		c->eot[b] = pos;
		if (pos + 1 > T)
			T = pos + 1;
	}
	/* Causal attention: positions past the longest <|endoftext|> cannot
	 * change any pooled output, so the batch runs T positions only. */
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			const float *te = tw->tok_emb + (size_t)ids[(size_t)b * ctx + t] * d;
			const float *pe = tw->pos_emb + (size_t)t * d;
			float *xi = c->x + ((size_t)b * T + t) * d;
			for (int j = 0; j < d; j++)
				xi[j] = te[j] + pe[j];
		}
	for (int l = 0; l < cfg->layers; l++)
		block(cfg, &tw->layers[l], c, B, T, 1);
	for (int b = 0; b < B; b++)
		layernorm(c->x + ((size_t)b * T + c->eot[b]) * d, c->pooled + (size_t)b * d, 1, d,
		          tw->post_ln_w, tw->post_ln_b, cfg->eps);
	mm_linear(B, &tw->proj, c->pooled, out, 0);
	return check_finite(out, (size_t)B * c->m->cfg.projection, err);
}

void clip_normalize(float *v, int dim)
{
	double s = 0;
	for (int i = 0; i < dim; i++)
		s += (double)v[i] * v[i];
	if (s <= 0)
		return;
	float inv = (float)(1.0 / sqrt(s));
	for (int i = 0; i < dim; i++)
		v[i] *= inv;
}
