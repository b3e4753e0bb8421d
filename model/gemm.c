/*
 * gemm.c: the float32 linear layers on OpenBLAS (the reference backend)
 * and the activations applied after them (see gemm_int.h). Layers packed
 * for oneDNN go to gemm_dnnl.c; attention is attention.c, the helper
 * thread threadpool.c.
 *
 * Large products go to OpenBLAS. A linear layer over a few rows (a short
 * text: 7 tokens) is a different problem: it reads every weight once and
 * does little with it, so it is bound by memory bandwidth, and OpenBLAS's
 * packing of the weight matrix costs more than the product. Those go to a
 * streaming kernel here that reads each weight row once, dots it with every
 * input row while it sits in L1, and splits the output columns across the
 * threads. It is compiled for AVX-512, AVX2 and baseline x86-64, picked at
 * run time (target_clones), so one binary serves every CPU.
 *
 * DESIGN: threads. OpenBLAS keeps its own pool (mm_set_threads); the
 * streaming kernel and the activations use mm_parallel (threadpool.c).
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "clip_int.h"
#include "gemm_int.h"
#include "simd_int.h"

/* gemm_dnnl.c, when oneDNN is built in. */
void mm_dnnl_linear(int n, const mm_weight *W, const float *x, float *y, int flags);

/* At or below this many rows, mm_linear streams instead of calling sgemm.
 * Measured with bench/model on ViT-B/32 shapes (see the note of the model
 * issue): 7-token texts gain most; at 50 rows (one image) sgemm wins. */
#define SMALL_ROWS 16



/* Output columns o0..o1 of y = x . w^T + bias, for n rows of x. Four rows at
 * a time share each load of the weights and give four independent chains
 * of multiply-adds (one chain would wait on its own latency). */
MULTIVERSION
static void linear_rows(int n, int in, int o0, int o1, int out, const float *x, const float *w,
                        const float *bias, float *y, int acc)
{
	for (int o = o0; o < o1; o++) {
		const float *wo = w + (size_t)o * in;
		float b = bias ? bias[o] : 0.0f;
		for (int i0 = 0; i0 < n; i0 += 4) {
			/* Missing rows of the last group repeat row i0; their
			 * results are not stored. */
			const float *x0 = x + (size_t)i0 * in;
			const float *x1 = i0 + 1 < n ? x0 + in : x0;
			const float *x2 = i0 + 2 < n ? x0 + 2 * (size_t)in : x0;
			const float *x3 = i0 + 3 < n ? x0 + 3 * (size_t)in : x0;
			v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
			int k = 0;
			for (; k + 16 <= in; k += 16) {
				v16 wv = LOAD16(wo + k);
				a0 += LOAD16(x0 + k) * wv;
				a1 += LOAD16(x1 + k) * wv;
				a2 += LOAD16(x2 + k) * wv;
				a3 += LOAD16(x3 + k) * wv;
			}
			float s[4] = {hsum(&a0), hsum(&a1), hsum(&a2), hsum(&a3)};
			for (; k < in; k++) {
				s[0] += x0[k] * wo[k];
				s[1] += x1[k] * wo[k];
				s[2] += x2[k] * wo[k];
				s[3] += x3[k] * wo[k];
			}
			for (int j = 0; j < 4 && i0 + j < n; j++) {
				float *yo = y + (size_t)(i0 + j) * out + o;
				*yo = acc ? *yo + s[j] + b : s[j] + b;
			}
		}
	}
}

struct linear_job {
	int n, in, out, acc;
	const float *x, *w, *bias;
	float *y;
};

static void linear_part(void *ctx, int o0, int o1)
{
	struct linear_job *j = ctx;
	linear_rows(j->n, j->in, o0, o1, j->out, j->x, j->w, j->bias, j->y, j->acc);
}

struct act_job {
	float *x;
	size_t chunk, n;
	int flags;
};

static void activate_part(void *ctx, int c0, int c1)
{
	struct act_job *j = ctx;
	size_t i0 = (size_t)c0 * j->chunk, i1 = (size_t)c1 * j->chunk;
	float *x = j->x;
	if (i1 > j->n)
		i1 = j->n;
	if (j->flags & MM_QUICK_GELU) {
		for (size_t i = i0; i < i1; i++)
			x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
	} else if (j->flags & MM_GELU) {
		for (size_t i = i0; i < i1; i++)
			x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
	} else if (j->flags & MM_GELU_TANH) {
		for (size_t i = i0; i < i1; i++)
			x[i] = mm_gelu_tanh(x[i]);
	}
}

static void mm_activate(float *x, size_t n, int flags)
{
	if (!(flags & (MM_QUICK_GELU | MM_GELU | MM_GELU_TANH)))
		return;
	/* In chunks of 4096 so that the part count fits an int. */
	struct act_job j = {x, 4096, n, flags};
	int chunks = (int)((n + j.chunk - 1) / j.chunk);
	mm_parallel(chunks, (int)(n < (1u << 28) ? n * 8 : 1u << 30), activate_part, &j);
}

void mm_linear(int n, const mm_weight *W, const float *x, float *y, int flags)
{
	if (W->packed) {
		mm_dnnl_linear(n, W, x, y, flags);
		return;
	}
	int in = W->in, out = W->out, acc = (flags & MM_ACCUMULATE) != 0;
	const float *w = W->w, *bias = W->b;
	if (n <= SMALL_ROWS) {
		struct linear_job j = {n, in, out, acc, x, w, bias, y};
		/* Work: the weights read; tiny layers stay on one thread. */
		mm_parallel(out, (int)((size_t)in * out >> 1), linear_part, &j);
	} else {
		/* Start from the bias (or add it to the residual) and let sgemm
		 * accumulate: one pass less. */
		if (bias)
			for (int i = 0; i < n; i++) {
				float *yi = y + (size_t)i * out;
				if (acc)
					for (int o = 0; o < out; o++)
						yi[o] += bias[o];
				else
					memcpy(yi, bias, (size_t)out * sizeof *y);
			}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
		            bias || acc ? 1.0f : 0.0f, y, out);
	}
	mm_activate(y, (size_t)n * out, flags);
}

void mm_set_threads(int n)
{
	mm_pool_set_threads(n);
	openblas_set_num_threads(n);
}

#ifndef CLIPD_HAVE_DNNL
/* Built without oneDNN: every layer stays on OpenBLAS. */
void mm_dnnl_linear(int n, const mm_weight *W, const float *x, float *y, int flags)
{
	(void)n, (void)W, (void)x, (void)y, (void)flags;
}

int mm_pack(mm_weight *W, clip_precision p, clip_err *err)
{
	(void)W;
	return clip_fail(err, CLIP_EINVAL, "precision %s needs oneDNN, and this build has none",
	                 clip_precision_name(p));
}

void mm_unpack(mm_weight *W)
{
	(void)W;
}

int mm_have_dnnl(void)
{
	return 0;
}

int mm_precision_supported(clip_precision p, const char **why)
{
	if (p == CLIP_PRECISION_AUTO || p == CLIP_PRECISION_F32)
		return 1;
	if (why)
		*why = "this build has no oneDNN";
	return 0;
}
#endif
