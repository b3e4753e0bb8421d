/*
 * Private to the model module: the one interface every matrix product of the
 * encoders goes through. The float32 OpenBLAS backend (gemm.c) is the
 * reference; a second backend (oneDNN, bf16/int8 on AMX) plugs in here.
 * All matrices are row-major float32.
 */
#ifndef CLIPD_GEMM_INT_H
#define CLIPD_GEMM_INT_H

/* y[n][out] = x[n][in] . w[out][in]^T + bias[out] (bias may be NULL). */
void mm_linear(int n, int in, int out, const float *x, const float *w, const float *bias,
               float *y);

/* c[m][n] = alpha * a[m][k] . b[n][k]^T, with leading dimensions. */
void mm_abt(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
            float *c, int ldc);

/* c[m][n] = a[m][k] . b[k][n], with leading dimensions. */
void mm_ab(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c,
           int ldc);

/* Runs fn(ctx, i0, i1) over [0, n), split between the calling thread and
 * one helper thread when there are two threads to use and work (a rough
 * count of operations) is worth it; else fn(ctx, 0, n) in the caller.
 * Returns when every part is done. */
void mm_parallel(int n, int work, void (*fn)(void *ctx, int i0, int i1), void *ctx);

/* Threads the backend may use for one product (OpenBLAS's own pool). */
void mm_set_threads(int n);

#endif
