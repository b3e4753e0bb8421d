/*
 * Private to the model module: the one interface every matrix product of the
 * encoders goes through. All matrices are row-major float32 at this seam.
 *
 * Two backends sit behind it. OpenBLAS (gemm.c) is the float32 reference
 * and the portable fallback. oneDNN (gemm_dnnl.c, when built) takes the
 * linear layers of a model opened in bf16 or int8 (and f32, where it is
 * faster): their weights are converted and reordered once, at load, into
 * the blocked layout its kernels read (mm_pack), and bias, activation and
 * residual add run inside the product as post-ops instead of as separate
 * passes over memory.
 */
#ifndef CLIPD_GEMM_INT_H
#define CLIPD_GEMM_INT_H

#include <math.h>

#include "clip.h"

typedef struct mm_packed mm_packed;

/* A linear layer: y[n][out] = x[n][in] . w[out][in]^T + b[out]. */
typedef struct mm_weight {
	int in, out;
	const float *w;     /* float32 [out][in]; NULL once packed and dropped */
	const float *b;     /* [out], or NULL */
	mm_packed *packed;  /* the oneDNN form (mm_pack); NULL: OpenBLAS */
} mm_weight;

/* mm_linear flags. */
enum {
	MM_ACCUMULATE = 1,  /* y += the result (a residual connection) */
	MM_QUICK_GELU = 2,  /* x * sigmoid(1.702 x) of the result */
	MM_GELU = 4,        /* the exact (erf) GELU of the result */
	MM_GELU_TANH = 8,   /* GELU's tanh approximation (PyTorch's approximate="tanh") */
};

/* 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))): transformers'
 * gelu_pytorch_tanh, which SigLIP uses. */
static inline float mm_gelu_tanh(float x)
{
	return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

/* y = act(x . W^T + b), or y += that with MM_ACCUMULATE. x and y must not
 * overlap. */
void mm_linear(int n, const mm_weight *W, const float *x, float *y, int flags);

/* Converts W to precision p (CLIP_PRECISION_F32, _BF16 or _INT8) in
 * oneDNN's layout. W->w stays valid (the caller may drop it after).
 * Returns CLIP_OK, or an error when the backend is missing or fails. */
int mm_pack(mm_weight *W, clip_precision p, clip_err *err);
void mm_unpack(mm_weight *W);

/* Whether this build and CPU run precision p at speed: f32 always; bf16
 * with AVX512-BF16 or AMX; int8 with AVX512-VNNI, AVX-VNNI or AMX. When
 * why is non-NULL it receives a reason for a "no". */
int mm_precision_supported(clip_precision p, const char **why);

/* Whether oneDNN is built in (and so whether f32 layers can be packed). */
int mm_have_dnnl(void);

/* One head of attention over T positions (attention.c): out = softmax(scale
 * * q . k^T, causal or not) . v; q, k, v rows ld floats apart, out rows ldo
 * apart, s scratch of mm_attention_scratch(T, dh) floats. */
void mm_attention(int T, int dh, float scale, int causal, const float *q, const float *k,
                  const float *v, int ld, float *out, int ldo, float *s);
static inline size_t mm_attention_scratch(int T, int dh)
{
	size_t T16 = ((size_t)T + 15) & ~(size_t)15;
	return ((size_t)dh + T) * T16;
}

/* Runs fn(ctx, i0, i1) over [0, n), split between the calling thread and
 * one helper thread when there are two threads to use and work (a rough
 * count of operations) is worth it; else fn(ctx, 0, n) in the caller.
 * Returns when every part is done. */
void mm_parallel(int n, int work, void (*fn)(void *ctx, int i0, int i1), void *ctx);

/* Lets mm_parallel's helper spin briefly between jobs (threadpool.c): called
 * once a layer is packed for oneDNN, whose products leave the cores to
 * our two threads. */
void mm_spin_between_jobs(void);

/* Threads one product may use (OpenBLAS's pool; our helper, at most 2). */
void mm_set_threads(int n);
/* The helper's share of that (threadpool.c; mm_set_threads calls it). */
void mm_pool_set_threads(int n);

#endif
