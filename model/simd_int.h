/*
 * Private to the model module: the portable vector type the hand-written
 * kernels use (GCC vector extensions), and the function attribute that
 * compiles a kernel for AVX-512, AVX2 and baseline x86-64 and picks one at
 * run time (target_clones), so one binary serves every CPU.
 */
#ifndef CLIPD_SIMD_INT_H
#define CLIPD_SIMD_INT_H

#include <stdint.h>
#include <string.h>

/* Not under ThreadSanitizer: its instrumented ifunc resolvers run before
 * its runtime is up and crash at load (seen with GCC 12). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
	!defined(__SANITIZE_THREAD__)
#define MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MULTIVERSION
#endif

typedef float v16 __attribute__((vector_size(64)));

/* An unaligned load. A macro, not a function: a function returning a
 * 64-byte vector has a different ABI in each target clone. */
#define LOAD16(p)                                                                                  \
	({                                                                                         \
		v16 v_;                                                                            \
		memcpy(&v_, (p), sizeof v_);                                                       \
		v_;                                                                                \
	})

static inline __attribute__((always_inline)) float hsum(const v16 *v)
{
	float s = 0;
	for (int i = 0; i < 16; i++)
		s += (*v)[i];
	return s;
}

typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int8_t v16b __attribute__((vector_size(16)));
typedef uint16_t v16h __attribute__((vector_size(32)));

/* *px = e^*px, sixteen lanes, within 2 ulp of expf for x in [-87, 88] (inputs
 * beyond are clamped): x = n ln2 + r with |r| <= ln2 / 2, e^r from the
 * degree-6 polynomial of Cephes' expf, 2^n put into the exponent bits. */
static inline __attribute__((always_inline)) void vexp(v16 *px)
{
	v16 x = *px;
	const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
	v16i lo = (v16i)(x < -87.0f), hi = (v16i)(x > 88.0f);
	v16 mn = x * 0.0f - 87.0f, mx = x * 0.0f + 88.0f;
	x = (v16)(((v16i)x & ~lo) | ((v16i)mn & lo));
	x = (v16)(((v16i)x & ~hi) | ((v16i)mx & hi));
	v16 n = (x * 1.44269504088896341f + magic) - magic;
	v16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
	v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	v16i e = (__builtin_convertvector(n, v16i) + 127) << 23;
	*px = p * (v16)e;
}

#endif
