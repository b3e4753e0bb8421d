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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
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

#endif
