/*
 * ref_kit.h: what the model tests share about the reference kits
 * ($CLIPD_REFERENCE/<kit>/: expected.json and pixels/NAME.f32, see its
 * README): finding them, a temp dir, and the comparisons. Header-only, for
 * the test programs (test_model, test_siglip, test_openclip).
 */
#ifndef CLIPD_REF_KIT_H
#define CLIPD_REF_KIT_H

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "clip.h"

#define REF_UNUSED __attribute__((unused))

/* max |a[i] - b[i]| against a JSON array of numbers; NaN counts as a
 * difference. */
static REF_UNUSED float max_abs_diff(const float *a, json_t *b, int n)
{
	float m = 0;
	for (int i = 0; i < n; i++) {
		float d = fabsf(a[i] - (float)json_number_value(json_array_get(b, (size_t)i)));
		if (!(d <= m))
			m = d;
	}
	return m;
}

static REF_UNUSED float dot(const float *a, const float *b, int n)
{
	double s = 0;
	for (int i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return (float)s;
}

/* Reads n little-endian float32 values (a kit's pixels/NAME.f32). */
static REF_UNUSED int read_f32(const char *path, float *out, size_t n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	size_t got = fread(out, sizeof(float), n, f);
	fclose(f);
	return got == n ? 0 : -1;
}

/* The kit's paths and a fresh temp dir: ref = $CLIPD_REFERENCE (else
 * ../shared/reference), kit = ref/name, tmp = $TMPDIR/prefix.XXXXXX made;
 * returns kit/expected.json loaded, or NULL with the reason printed as a
 * failed TAP plan. */
static REF_UNUSED json_t *ref_kit_open(const char *name, const char *prefix, char *ref,
                                       size_t nref, char *kit, size_t nkit, char *tmp, size_t ntmp)
{
	const char *r = getenv("CLIPD_REFERENCE");
	snprintf(ref, nref, "%s", r && *r ? r : "../shared/reference");
	snprintf(kit, nkit, "%s/%s", ref, name);
	const char *t = getenv("TMPDIR");
	snprintf(tmp, ntmp, "%s/%s.XXXXXX", t && *t ? t : "/tmp", prefix);
	if (!mkdtemp(tmp)) {
		printf("not ok 1 - mkdtemp %s\n1..1\n", tmp);
		return NULL;
	}
	char p[4200];
	snprintf(p, sizeof p, "%s/expected.json", kit);
	json_error_t jerr;
	json_t *e = json_load_file(p, 0, &jerr);
	if (!e)
		printf("not ok 1 - reference kit at %s: %s\n1..1\n", kit, jerr.text);
	return e;
}

/* Every expected text (its `ids`) through m, as one batch: a malloc'd
 * [n][dim] the caller frees, *n_out = n; NULL on any failure. */
static REF_UNUSED float *ref_text_embeddings(clip_model *m, json_t *expected, size_t *n_out)
{
	json_t *texts = json_object_get(expected, "texts");
	int D = clip_model_dim(m), C = clip_model_context(m);
	size_t n = json_array_size(texts);
	clip_ctx *ctx;
	*n_out = n;
	if (clip_ctx_new(m, (int)n, &ctx, NULL) != CLIP_OK)
		return NULL;
	int32_t *ids = malloc(n * (size_t)C * sizeof *ids);
	float *emb = malloc(n * (size_t)D * sizeof *emb);
	for (size_t i = 0; ids && emb && i < n; i++)
		for (int k = 0; k < C; k++)
			ids[i * C + k] = (int32_t)json_integer_value(
				json_array_get(json_object_get(json_array_get(texts, i), "ids"), (size_t)k));
	if (!ids || !emb || clip_encode_texts(ctx, (int)n, ids, emb, NULL) != CLIP_OK) {
		free(emb);
		emb = NULL;
	}
	free(ids);
	clip_ctx_free(ctx);
	return emb;
}

/* Every expected image (its kit/pixels file) through m, as one batch. */
static REF_UNUSED float *ref_image_embeddings(clip_model *m, json_t *expected, const char *kit,
                                              size_t *n_out)
{
	json_t *images = json_object_get(expected, "images");
	int D = clip_model_dim(m), S = clip_model_image_size(m);
	size_t n = json_array_size(images), plane = (size_t)3 * S * S;
	clip_ctx *ctx;
	*n_out = n;
	if (clip_ctx_new(m, (int)n, &ctx, NULL) != CLIP_OK)
		return NULL;
	float *pix = malloc(n * plane * sizeof *pix), *emb = malloc(n * (size_t)D * sizeof *emb);
	int ok = pix && emb;
	for (size_t i = 0; ok && i < n; i++) {
		char p[4200];
		snprintf(p, sizeof p, "%s/%s", kit,
		         json_string_value(json_object_get(json_array_get(images, i), "pixels")));
		ok = read_f32(p, pix + i * plane, plane) == 0;
	}
	if (!ok || clip_encode_images(ctx, (int)n, pix, emb, NULL) != CLIP_OK) {
		free(emb);
		emb = NULL;
	}
	free(pix);
	clip_ctx_free(ctx);
	return emb;
}

/* Preprocesses the kit image `im` (an expected.json images[] entry, its
 * file under ref/images) with m into pix[plane] and compares it with the
 * oracle's kit/pixels file read into want[plane]: the mean absolute
 * difference in 0..255 grey levels, undoing each channel's std. -1 when
 * the file does not preprocess (err says why), -2 when the oracle's
 * pixels cannot be read. */
static REF_UNUSED double ref_preprocess_mad(clip_model *m, const char *ref, const char *kit,
                                            json_t *im, const float std[3], float *pix,
                                            float *want, clip_err *err)
{
	int S = clip_model_image_size(m);
	size_t chan = (size_t)S * S, plane = 3 * chan;
	char p[4200];
	snprintf(p, sizeof p, "%s/images/%s", ref, json_string_value(json_object_get(im, "file")));
	if (clip_preprocess_file(m, p, NULL, pix, NULL, NULL, err) != CLIP_OK)
		return -1;
	snprintf(p, sizeof p, "%s/%s", kit, json_string_value(json_object_get(im, "pixels")));
	if (read_f32(p, want, plane) != 0)
		return -2;
	double sum = 0;
	for (size_t k = 0; k < plane; k++)
		sum += fabs((double)pix[k] - want[k]) * std[k / chan] * 255.0;
	return sum / (double)plane;
}

/* The worst cosine between a's and b's embeddings of every expected image
 * and text (two opens of one kit, say f32 and bf16); -2 on failure. */
static REF_UNUSED float ref_worst_cosine(clip_model *a, clip_model *b, json_t *expected,
                                         const char *kit)
{
	int D = clip_model_dim(a);
	size_t n, n2, nt, nt2;
	float *ia = ref_image_embeddings(a, expected, kit, &n), *ib = ref_image_embeddings(b, expected, kit, &n2);
	float *ta = ref_text_embeddings(a, expected, &nt), *tb = ref_text_embeddings(b, expected, &nt2);
	float worst = -2;
	if (ia && ib && ta && tb && clip_model_dim(b) == D) {
		worst = 1;
		for (size_t i = 0; i < n; i++) {
			clip_normalize(ia + i * D, D), clip_normalize(ib + i * D, D);
			worst = fminf(worst, dot(ia + i * D, ib + i * D, D));
		}
		for (size_t i = 0; i < nt; i++) {
			clip_normalize(ta + i * D, D), clip_normalize(tb + i * D, D);
			worst = fminf(worst, dot(ta + i * D, tb + i * D, D));
		}
	}
	free(ia), free(ib), free(ta), free(tb);
	return worst;
}

#endif
