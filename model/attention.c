/*
 * attention.c: the attention kernel of both backends (mm_attention,
 * gemm_int.h): softmax(scale * q . k^T) . v for one head, causal or not.
 */
#include <string.h>

#include "gemm_int.h"
#include "simd_int.h"

/* One head of attention for T positions: out[i] = softmax(scale * q[i] .
 * k[j]^T over j) . v, with j <= i when causal. q, k, v rows are ld floats
 * apart (they sit side by side in the qkv buffer), out rows ldo apart; s
 * is scratch of (dh + 4) * T16 + T * T16 floats, T16 = T rounded up to 16.
 * These are 50x50x64 products: OpenBLAS's threading and packing cost more
 * than they compute. The keys are transposed first, so that a score row is
 * a sum over d of q[i][d] times a row of k^T: 16 scores per vector, four
 * query rows sharing each load. The weighted sum of values keeps the output
 * row in registers across all j. */
MULTIVERSION
void mm_attention(int T, int dh, float scale, int causal, const float *q, const float *k,
                  const float *v, int ld, float *out, int ldo, float *s)
{
	int T16 = (T + 15) & ~15;
	float *kt = s, *sc = s + (size_t)dh * T16; /* kt[dh][T16], sc[T][T16] */
	for (int j = 0; j < T; j++)
		for (int d = 0; d < dh; d++)
			kt[(size_t)d * T16 + j] = k[(size_t)j * ld + d] * scale;
	for (int d = 0; d < dh; d++)
		for (int j = T; j < T16; j++)
			kt[(size_t)d * T16 + j] = 0;
	for (int i0 = 0; i0 < T; i0 += 4) {
		int ni = T - i0 < 4 ? T - i0 : 4;
		const float *qi[4];
		for (int r = 0; r < 4; r++)
			qi[r] = q + (size_t)(i0 + (r < ni ? r : 0)) * ld;
		int jn = causal ? i0 + ni : T;
		for (int j = 0; j < jn; j += 16) {
			v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
			for (int d = 0; d < dh; d++) {
				v16 kv = LOAD16(kt + (size_t)d * T16 + j);
				a0 += qi[0][d] * kv;
				a1 += qi[1][d] * kv;
				a2 += qi[2][d] * kv;
				a3 += qi[3][d] * kv;
			}
			v16 *acc[4] = {&a0, &a1, &a2, &a3};
			for (int r = 0; r < ni; r++)
				memcpy(sc + (size_t)(i0 + r) * T16 + j, acc[r], sizeof a0);
		}
	}
	const v16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
	for (int i = 0; i < T; i++) {
		float *r = sc + (size_t)i * T16;
		int n = causal ? i + 1 : T;
		float mx = r[0], sum = 0;
		for (int j = 1; j < n; j++)
			mx = r[j] > mx ? r[j] : mx;
		/* Sixteen at a time; lanes at or past n become 0. */
		v16 vs = {0};
		for (int j = 0; j < n; j += 16) {
			v16 e = LOAD16(r + j) - mx;
			vexp(&e);
			v16i keep = (v16i)(lane < (float)(n - j));
			e = (v16)((v16i)e & keep);
			memcpy(r + j, &e, sizeof e);
			vs += e;
		}
		sum = hsum(&vs);
		float inv = 1.0f / sum;
		float *o = out + (size_t)i * ldo;
		int d = 0;
		for (; d + 64 <= dh; d += 64) {
			v16 o0 = {0}, o1 = {0}, o2 = {0}, o3 = {0};
			for (int j = 0; j < n; j++) {
				const float *vj = v + (size_t)j * ld + d;
				float p = r[j];
				o0 += LOAD16(vj) * p;
				o1 += LOAD16(vj + 16) * p;
				o2 += LOAD16(vj + 32) * p;
				o3 += LOAD16(vj + 48) * p;
			}
			o0 *= inv, o1 *= inv, o2 *= inv, o3 *= inv;
			memcpy(o + d, &o0, sizeof o0);
			memcpy(o + d + 16, &o1, sizeof o1);
			memcpy(o + d + 32, &o2, sizeof o2);
			memcpy(o + d + 48, &o3, sizeof o3);
		}
		for (; d < dh; d++) {
			float a = 0;
			for (int j = 0; j < n; j++)
				a += v[(size_t)j * ld + d] * r[j];
			o[d] = a * inv;
		}
	}
}
