/*
 * test_cnclip: the Chinese-CLIP implementation against the reference kit
 * ($CLIPD_REFERENCE/tiny-cn-clip-a, produced by transformers v4.44.2's own
 * ChineseCLIPModel with the real 21,128-entry vocab.txt; see its README):
 * the BERT text tower from the oracle's ids (the mask is the tokenizer's
 * length, never ids != [PAD]), the CLIP image tower from its pixels,
 * preprocessing from the files (a straight 224 x 224 resize, no crop),
 * logits, the exact GELU, batches against single texts (padding must not
 * change an embedding), bf16 and int8 against f32.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "gemm_int.h"
#include "ref_kit.h"
#include "tap.h"

static char ref[1024], kit[1100], tmp[256];
static json_t *expected;
static clip_model *model;

static float num(json_t *a, size_t i)
{
	return (float)json_number_value(json_array_get(a, i));
}

static void t_shape(void)
{
	CHECK(clip_model_family(model) == CLIP_FAMILY_CLIP);
	CHECKF(clip_model_dim(model) == 32, "dim %d", clip_model_dim(model));
	CHECKF(clip_model_context(model) == 52, "context %d", clip_model_context(model));
	CHECKF(clip_model_image_size(model) == 224, "image size %d", clip_model_image_size(model));
	float ls = (float)json_number_value(json_object_get(expected, "logit_scale"));
	CHECKF(fabsf(clip_model_logit_scale(model) - ls) < 1e-3f, "logit scale %g", clip_model_logit_scale(model));
}

/* Through clip_tokenize: the kit's real vocab.txt with BertTokenizer's
 * rules, 52 ids each and the length the mask covers (tok_wordpiece's own
 * tests cover the rules). */
static void t_token_ids(void)
{
	json_t *texts = json_object_get(expected, "texts");
	int32_t ids[52];
	size_t i;
	json_t *t;
	REQUIRE(json_array_size(texts) == 26);
	json_array_foreach(texts, i, t) {
		clip_err err;
		int len = -1;
		int rc = clip_tokenize(model, json_string_value(json_object_get(t, "text")), ids, &len, &err);
		CHECKF(rc == CLIP_OK, "text %zu: %s", i, err.msg);
		int same = 1;
		for (int k = 0; k < 52; k++)
			same &= ids[k] == json_integer_value(json_array_get(json_object_get(t, "ids"), (size_t)k));
		CHECKF(same, "text %zu: ids differ", i);
		CHECKF(len == json_integer_value(json_object_get(t, "n_tokens")), "text %zu: length %d", i, len);
	}
}

/* The text tower's exact GELU (the tanh one moves embeddings by 8e-4
 * only: the kit's points say it). */
static void t_activation(void)
{
	json_t *a = json_object_get(expected, "activation_check");
	json_t *x = json_object_get(a, "x"), *y = json_object_get(a, "text_gelu");
	REQUIRE(json_array_size(x) > 10 && json_array_size(x) == json_array_size(y));
	float worst = 0;
	for (size_t i = 0; i < json_array_size(x); i++) {
		float v = num(x, i), g = 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2));
		float d = fabsf(g - num(y, i));
		worst = d > worst ? d : worst;
	}
	printf("# exact GELU: max abs diff %.2e at %zu points\n", worst, json_array_size(x));
	CHECK(worst <= 1e-6f);
}

static void t_text_embeddings(void)
{
	json_t *texts = json_object_get(expected, "texts");
	int D = clip_model_dim(model), C = clip_model_context(model);
	size_t n;
	float *emb = ref_text_embeddings(model, expected, &n);
	REQUIRE(emb && n == 26);
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, 1, &ctx, NULL) == CLIP_OK);
	float worst = 0, worst_batch = 0, one[64];
	int32_t ids[52];
	for (size_t i = 0; i < n; i++) {
		json_t *t = json_array_get(texts, i);
		float d = max_abs_diff(emb + i * D, json_object_get(t, "embedding"), D);
		CHECKF(d <= 1e-3f, "text %zu: max abs diff %g", i, d);
		worst = d > worst ? d : worst;
		/* Alone, the batch's padding (its longest text) is gone. */
		for (int k = 0; k < C; k++)
			ids[k] = (int32_t)json_integer_value(json_array_get(json_object_get(t, "ids"), (size_t)k));
		CHECK(clip_encode_texts(ctx, 1, ids, one, NULL) == CLIP_OK);
		for (int k = 0; k < D; k++) {
			float bd = fabsf(one[k] - emb[i * D + k]);
			worst_batch = bd > worst_batch ? bd : worst_batch;
		}
	}
	printf("# text embeddings: max abs diff %.2e vs reference, %.2e batch vs single\n", worst,
	       worst_batch);
	CHECK(worst_batch <= 1e-4f);
	clip_ctx_free(ctx);
	free(emb);
}

/* A [PAD] written inside a text is a token, not padding: only the ids
 * after the last [SEP] are masked. */
static void t_literal_pad(void)
{
	int C = clip_model_context(model), D = clip_model_dim(model);
	int32_t a[52] = {101, 2769, 0, 3221, 102}, b[52] = {101, 2769, 3221, 102};
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, 1, &ctx, NULL) == CLIP_OK);
	float ea[64], eb[64];
	REQUIRE(C == 52);
	CHECK(clip_encode_texts(ctx, 1, a, ea, NULL) == CLIP_OK);
	CHECK(clip_encode_texts(ctx, 1, b, eb, NULL) == CLIP_OK);
	float d = 0;
	for (int k = 0; k < D; k++)
		d = fmaxf(d, fabsf(ea[k] - eb[k]));
	CHECKF(d > 1e-3f, "a literal [PAD] changed nothing (%g): it was masked", d);
	clip_ctx_free(ctx);
}

static void t_images_and_logits(void)
{
	json_t *images = json_object_get(expected, "images");
	int D = clip_model_dim(model);
	size_t n, nt;
	float *emb = ref_image_embeddings(model, expected, kit, &n), *temb = ref_text_embeddings(model, expected, &nt);
	REQUIRE(emb && temb && n == 7);
	float worst = 0;
	for (size_t i = 0; i < n; i++) {
		float d = max_abs_diff(emb + i * D, json_object_get(json_array_get(images, i), "embedding"), D);
		CHECKF(d <= 1e-3f, "image %zu: max abs diff %g", i, d);
		worst = d > worst ? d : worst;
	}
	printf("# image embeddings from pixels: max abs diff %.2e\n", worst);
	json_t *logits = json_object_get(expected, "logits_per_image");
	float lworst = 0;
	for (size_t j = 0; j < nt; j++)
		clip_normalize(temb + j * D, D);
	for (size_t i = 0; i < n; i++) {
		clip_normalize(emb + i * D, D);
		for (size_t j = 0; j < nt; j++) {
			float l = clip_model_logit_scale(model) * dot(emb + i * D, temb + j * D, D);
			float dl = fabsf(l - num(json_array_get(logits, i), j));
			lworst = dl > lworst ? dl : lworst;
		}
	}
	printf("# logits: max abs diff %.2e\n", lworst);
	CHECK(lworst <= 1e-2f);
	free(emb);
	free(temb);
}

static void t_image_files(void)
{
	json_t *images = json_object_get(expected, "images");
	int D = clip_model_dim(model), S = clip_model_image_size(model);
	size_t plane = (size_t)3 * S * S;
	const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, 1, &ctx, NULL) == CLIP_OK);
	float *pix = malloc(plane * 3 * sizeof *pix), *want = malloc(plane * 3 * sizeof *want), emb[64];
	REQUIRE(pix && want);
	size_t i;
	json_t *im;
	json_array_foreach(images, i, im) {
		clip_err err;
		const char *file = json_string_value(json_object_get(im, "file"));
		double mad = ref_preprocess_mad(model, ref, kit, im, std, pix, want, &err);
		CHECKF(mad != -1, "%s: %s", file, err.msg);
		if (mad == -1)
			continue;
		REQUIRE(mad != -2);
		CHECK(clip_encode_images(ctx, 1, pix, emb, NULL) == CLIP_OK);
		float d = max_abs_diff(emb, json_object_get(im, "embedding"), D);
		printf("# %s: preprocessing mean abs diff %.3f/255, embedding max abs diff %.2e\n", file,
		       mad, d);
		CHECKF(mad <= 0.5, "%s: preprocessing mean abs diff %.3f/255", file, mad);
		CHECKF(d <= 1e-3f, "%s: embedding max abs diff %g", file, d);
	}
	free(pix);
	free(want);
	clip_ctx_free(ctx);
}

static void reduced(clip_precision p, float bound)
{
	if (!clip_precision_supported(p, NULL)) {
		printf("# %s cannot run here; not compared\n", clip_precision_name(p));
		return;
	}
	clip_options o = {p};
	clip_model *m;
	clip_err err;
	REQUIRE(clip_model_open_opts(kit, &o, &m, &err) == CLIP_OK);
	float worst = ref_worst_cosine(model, m, expected, kit);
	printf("# %s vs f32: worst cosine %.5f\n", clip_precision_name(p), worst);
	CHECKF(worst >= bound, "%s: worst cosine %f", clip_precision_name(p), worst);
	clip_model_close(m);
}

static void t_reduced_precision(void)
{
	reduced(CLIP_PRECISION_BF16, 0.999f);
	reduced(CLIP_PRECISION_INT8, 0.995f);
}

int main(void)
{
	expected = ref_kit_open("tiny-cn-clip-a", "test_cnclip", ref, sizeof ref, kit, sizeof kit, tmp,
	                        sizeof tmp);
	clip_err err;
	if (!expected)
		return 1;
	if (clip_model_open(kit, &model, &err) != CLIP_OK) {
		printf("not ok 1 - reference kit at %s: %s\n1..1\n", kit, err.msg);
		return 1;
	}
	TAP_RUN(t_shape);
	TAP_RUN(t_token_ids);
	TAP_RUN(t_activation);
	TAP_RUN(t_text_embeddings);
	TAP_RUN(t_literal_pad);
	TAP_RUN(t_images_and_logits);
	TAP_RUN(t_image_files);
	TAP_RUN(t_reduced_precision);
	clip_model_close(model);
	json_decref(expected);
	char p[1200];
	snprintf(p, sizeof p, "rm -rf '%s'", tmp);
	if (system(p) != 0)
		return 1;
	return tap_done();
}
