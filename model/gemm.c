/* gemm.c: the float32 matrix products on OpenBLAS (see gemm_int.h). */
#include <cblas.h>
#include <string.h>

#include "gemm_int.h"

void mm_linear(int n, int in, int out, const float *x, const float *w, const float *bias, float *y)
{
	if (bias) {
		/* Start from the bias and let sgemm accumulate: one pass less. */
		for (int i = 0; i < n; i++)
			memcpy(y + (size_t)i * out, bias, (size_t)out * sizeof *y);
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in,
	            bias ? 1.0f : 0.0f, y, out);
}

void mm_abt(int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
            float *c, int ldc)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, alpha, a, lda, b, ldb, 0.0f, c,
	            ldc);
}

void mm_ab(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *c, int ldc)
{
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c,
	            ldc);
}

void mm_set_threads(int n)
{
	openblas_set_num_threads(n);
}
