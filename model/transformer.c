/*
 * transformer.c: the parts both towers share (encoder_int.h): the
 * per-thread context, LayerNorm, and the pre-norm transformer block
 * (x += attn(ln1(x)); x += mlp(ln2(x))). Activations are float32; the
 * linear layers run in the model's precision (gemm_int.h). The towers
 * themselves are vision.c and text.c.
 *
 * Every matrix product goes through gemm_int.h. Activations live in the
 * clip_ctx, sized once for its largest batch: nothing here allocates
 * after clip_ctx_new.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "encoder_int.h"
#include "gemm_int.h"
#include "simd_int.h"

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

void enc_layernorm(const float *x, float *y, int n, int d, const float *w, const float *b,
                      float eps)
{
	struct ln_job j = {x, w, b, y, d, eps};
	mm_parallel(n, n * d * 4, layernorm_rows, &j);
}

struct attn_job {
	clip_ctx *c;
	int B, T, d, H, dh, causal;
	float scale;
	const int *lens;  /* keys that count per item (BERT's mask), or NULL: all T */
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
		/* With a mask of n keys, the first n positions attend among
		 * themselves only, exactly as masking the keys at -inf: a masked
		 * position never reaches an unmasked one. Its own rows are
		 * zeroed; nothing pools them. */
		int n = j->lens ? j->lens[b] : T;
		mm_attention(n, dh, j->scale, j->causal, q, k, v, 3 * d, att + (size_t)hd * dh, d,
		             scores);
		for (int t = n; t < T; t++)
			memset(att + (size_t)t * d + (size_t)hd * dh, 0, (size_t)dh * sizeof *att);
	}
}

void enc_block(const clip_tower_cfg *cfg, const clip_layer *L, clip_ctx *c, int B, int T,
                  int causal)
{
	int d = cfg->hidden, H = cfg->heads, dh = d / H, N = B * T;

	int act = cfg->act == CLIP_QUICK_GELU ? MM_QUICK_GELU
	          : cfg->act == CLIP_GELU     ? MM_GELU
	                                      : MM_GELU_TANH;

	/* The residual adds, the biases and the activation happen inside the
	 * products (mm_linear flags). */
	enc_layernorm(c->x, c->h, N, d, L->ln1_w, L->ln1_b, cfg->eps);
	mm_linear(N, &L->qkv, c->h, c->qkv, 0);
	struct attn_job j = {c, B, T, d, H, dh, causal, 1.0f / sqrtf((float)dh), NULL};
	mm_parallel(B * H, B * H * T * T * dh * 2, attention_part, &j);
	mm_linear(N, &L->o, c->att, c->x, MM_ACCUMULATE);

	enc_layernorm(c->x, c->h, N, d, L->ln2_w, L->ln2_b, cfg->eps);
	mm_linear(N, &L->fc1, c->h, c->mlp, act);
	mm_linear(N, &L->fc2, c->mlp, c->x, MM_ACCUMULATE);
}

void enc_block_post(const clip_tower_cfg *cfg, const clip_layer *L, clip_ctx *c, int B, int T,
                    const int *lens)
{
	int d = cfg->hidden, H = cfg->heads, dh = d / H, N = B * T;
	int act = cfg->act == CLIP_QUICK_GELU ? MM_QUICK_GELU
	          : cfg->act == CLIP_GELU     ? MM_GELU
	                                      : MM_GELU_TANH;
	mm_linear(N, &L->qkv, c->x, c->qkv, 0);
	struct attn_job j = {c, B, T, d, H, dh, 0, 1.0f / sqrtf((float)dh), lens};
	mm_parallel(B * H, B * H * T * T * dh * 2, attention_part, &j);
	mm_linear(N, &L->o, c->att, c->x, MM_ACCUMULATE);
	enc_layernorm(c->x, c->x, N, d, L->ln1_w, L->ln1_b, cfg->eps);
	mm_linear(N, &L->fc1, c->x, c->mlp, act);
	mm_linear(N, &L->fc2, c->mlp, c->x, MM_ACCUMULATE);
	enc_layernorm(c->x, c->x, N, d, L->ln2_w, L->ln2_b, cfg->eps);
}

/* A product that could not run (out of memory for a converted layer,
 * gemm_dnnl.c) leaves NaN behind: an error here, never a stored vector. */
int enc_check_finite(const float *v, size_t n, clip_err *err)
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
