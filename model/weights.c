/*
 * weights.c: binding checkpoint tensors to the model (weights_int.h).
 *
 * A tensor is looked up by name and its dtype and shape are checked
 * against the config before a pointer is kept. F32 tensors are used in
 * place from the read-only mapping; F16 and BF16 ones are widened to
 * float32 once, here, into copies the model owns.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights_int.h"

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else { /* subnormal: normalise */
			int e = -1;
			do {
				e++;
				man <<= 1;
			} while (!(man & 0x400));
			bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
		}
	} else if (exp == 0x1f) {
		bits = sign | 0x7f800000u | man << 13;
	} else {
		bits = sign | (exp + 127 - 15) << 23 | man << 13;
	}
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

int w_keep_owned(clip_model *m, void *p)
{
	void **n = realloc(m->owned, (m->nowned + 1) * sizeof *n);
	if (!n)
		return -1;
	m->owned = n;
	m->owned[m->nowned++] = p;
	return 0;
}

int w_bind(clip_model *m, const float **out, clip_err *err, int ndim, const int64_t *want,
                const char *fmt, ...)
{
	char name[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);

	const char *wf = m->layout ? m->layout->weights : "model.safetensors";
	const char *cf = m->layout ? m->layout->config : "config.json";
	const st_tensor *t = st_find(m->st, name);
	if (!t)
		return clip_fail(err, CLIP_EMODEL, "%s has no tensor %s", wf, name);
	int ok = t->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		ok = t->shape[i] == want[i];
	if (!ok) {
		char got[96] = "", exp[96] = "";
		for (int i = 0; i < t->ndim; i++)
			snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
			         (long long)t->shape[i]);
		for (int i = 0; i < ndim; i++)
			snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? "," : "",
			         (long long)want[i]);
		return clip_fail(err, CLIP_EMODEL, "tensor %s has shape [%s], %s implies [%s]",
		                 name, got, cf, exp);
	}
	size_t n = (size_t)st_numel(t);
	if (t->dtype == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
		*out = t->data;
		return CLIP_OK;
	}
	if (t->dtype == ST_OTHER)
		return clip_fail(err, CLIP_EMODEL, "tensor %s has dtype %s; F32, F16 or BF16 expected",
		                 name, t->dtype_name);
	float *f = malloc((n ? n : 1) * sizeof *f);
	if (!f || w_keep_owned(m, f) != 0) {
		free(f);
		return clip_fail(err, CLIP_ENOMEM, "out of memory converting %s", name);
	}
	const unsigned char *src = t->data;
	for (size_t i = 0; i < n; i++) {
		if (t->dtype == ST_F32) {
			memcpy(&f[i], src + 4 * i, 4);
		} else {
			uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
			if (t->dtype == ST_BF16) {
				uint32_t bits = (uint32_t)h << 16;
				memcpy(&f[i], &bits, 4);
			} else {
				f[i] = f16_to_f32(h);
			}
		}
	}
	*out = f;
	return CLIP_OK;
}

/* Frees p when it is one of the converted copies the model owns. */
void w_drop_owned(clip_model *m, const void *p)
{
	for (size_t i = 0; i < m->nowned; i++)
		if (m->owned[i] == p) {
			free(m->owned[i]);
			m->owned[i] = m->owned[--m->nowned];
			return;
		}
}

/* The q, k and v projections of a layer stacked into one [3d][d] matrix
 * (and [3d] bias): one matrix product instead of three, which matters most
 * for a single image or a short text. The originals' pages are then dropped
 * from memory, so the copy costs no resident memory in the end. */
int w_fuse_qkv(clip_model *m, clip_layer *L, int d, const float *w[3], const float *b[3],
               clip_err *err)
{
	float *qw = malloc((size_t)3 * d * d * sizeof *qw), *qb = malloc((size_t)3 * d * sizeof *qb);
	if (!qw || !qb || w_keep_owned(m, qw) != 0) {
		free(qw);
		free(qb);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	if (w_keep_owned(m, qb) != 0) {
		free(qb);
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	}
	for (int j = 0; j < 3; j++) {
		memcpy(qw + (size_t)j * d * d, w[j], (size_t)d * d * sizeof *qw);
		memcpy(qb + (size_t)j * d, b[j], (size_t)d * sizeof *qb);
		w_release(m, w[j], (size_t)d * d * sizeof *qw);
		w_drop_owned(m, b[j]);
	}
	L->qkv = (mm_weight){d, 3 * d, qw, qb, NULL};
	return CLIP_OK;
}


int w_bind_rows(clip_model *m, const float **f32, const unsigned char **raw, int *dtype,
                clip_err *err, int64_t rows, int64_t d, const char *name)
{
	*f32 = NULL;
	*raw = NULL;
	const st_tensor *t = st_find(m->st, name);
	if (t && (t->dtype == ST_F16 || t->dtype == ST_BF16) && t->ndim == 2 &&
	    t->shape[0] == rows && t->shape[1] == d) {
		*raw = t->data;
		*dtype = t->dtype;
		return CLIP_OK;
	}
	/* F32, or a tensor w_bind refuses with its message. */
	return w_bind(m, f32, err, DIMS(rows, d), "%s", name);
}

void w_row(const float *f32, const unsigned char *raw, int dtype, int64_t r, int d, float *out)
{
	if (f32) {
		memcpy(out, f32 + r * d, (size_t)d * sizeof *out);
		return;
	}
	const unsigned char *src = raw + (size_t)r * d * 2;
	for (int i = 0; i < d; i++) {
		uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
		if (dtype == ST_BF16) {
			uint32_t bits = (uint32_t)h << 16;
			memcpy(&out[i], &bits, 4);
		} else {
			out[i] = f16_to_f32(h);
		}
	}
}

void w_release(clip_model *m, const void *p, size_t bytes)
{
	for (size_t i = 0; i < m->nowned; i++)
		if (m->owned[i] == p) {
			w_drop_owned(m, p);
			return;
		}
	st_drop_range(p, bytes);
}
