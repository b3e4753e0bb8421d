/*
 * test_siglip: the SigLIP implementation against the reference kit
 * ($CLIPD_REFERENCE/tiny-siglip-a, produced by transformers v4.44.2's own
 * SiglipModel; see its README): text and image embeddings from the oracle's
 * token ids and pixels, preprocessing from the image files, logits and
 * sigmoid probabilities, the tanh GELU at the oracle's points, batches
 * against single inputs, bf16 against f32, and the checkpoints the loader
 * must refuse (NaFlex SigLIP2, a missing head, towers of different widths).
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	CHECK(clip_model_family(model) == CLIP_FAMILY_SIGLIP);
	CHECK(strcmp(clip_family_name(clip_model_family(model)), "siglip") == 0);
	CHECKF(clip_model_dim(model) == 64, "dim %d", clip_model_dim(model));
	CHECKF(clip_model_image_size(model) == 96, "image size %d", clip_model_image_size(model));
	CHECKF(clip_model_context(model) == 64, "context %d", clip_model_context(model));
	float ls = (float)json_number_value(json_object_get(expected, "logit_scale"));
	float lb = (float)json_number_value(json_object_get(expected, "logit_bias"));
	CHECKF(fabsf(clip_model_logit_scale(model) - ls) < 1e-4f, "logit scale %g, want %g",
	       clip_model_logit_scale(model), ls);
	CHECKF(fabsf(clip_model_logit_bias(model) - lb) < 1e-6f, "logit bias %g, want %g",
	       clip_model_logit_bias(model), lb);
}

/* Through clip_tokenize: the kit's spiece.model with SiglipTokenizer's
 * rules, 64 ids each (tok_spm's own tests cover the rules). */
static void t_token_ids(void)
{
	json_t *texts = json_object_get(expected, "texts");
	int32_t ids[64];
	size_t i;
	json_t *t;
	REQUIRE(json_array_size(texts) == 23);
	json_array_foreach(texts, i, t) {
		clip_err err;
		int rc = clip_tokenize(model, json_string_value(json_object_get(t, "text")), ids, NULL, &err);
		CHECKF(rc == CLIP_OK, "text %zu: %s", i, err.msg);
		int same = 1;
		for (int k = 0; k < 64; k++)
			same &= ids[k] == json_integer_value(json_array_get(json_object_get(t, "ids"), (size_t)k));
		CHECKF(same, "text %zu: ids differ", i);
	}
}

/* The one mistake the embeddings cannot show: erf GELU for the tanh one. */
static void t_activation(void)
{
	json_t *a = json_object_get(expected, "activation_check");
	json_t *x = json_object_get(a, "x"), *y = json_object_get(a, "y");
	REQUIRE(json_array_size(x) > 10 && json_array_size(x) == json_array_size(y));
	float worst = 0;
	for (size_t i = 0; i < json_array_size(x); i++) {
		float d = fabsf(mm_gelu_tanh(num(x, i)) - num(y, i));
		worst = d > worst ? d : worst;
	}
	printf("# gelu_pytorch_tanh: max abs diff %.2e at %zu points\n", worst, json_array_size(x));
	CHECK(worst <= 2e-7f);
	/* ... and the exact GELU is measurably not it at x = -1.5 (1e-3 apart). */
	float erf_gelu = 0.5f * -1.5f * (1.0f + erff(-1.5f / sqrtf(2.0f)));
	CHECK(fabsf(erf_gelu - mm_gelu_tanh(-1.5f)) > 1e-4f);
}

static void t_text_embeddings(void)
{
	json_t *texts = json_object_get(expected, "texts");
	int D = clip_model_dim(model), C = clip_model_context(model);
	size_t n;
	float *emb = ref_text_embeddings(model, expected, &n);
	REQUIRE(emb && n == 23);
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, 1, &ctx, NULL) == CLIP_OK);
	float worst = 0, worst_batch = 0, one[64];
	int32_t ids[64];
	for (size_t i = 0; i < n; i++) {
		json_t *t = json_array_get(texts, i);
		float d = max_abs_diff(emb + i * D, json_object_get(t, "embedding"), D);
		CHECKF(d <= 1e-3f, "text %zu: max abs diff %g", i, d);
		worst = d > worst ? d : worst;
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

static void t_image_embeddings_and_scores(void)
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
	/* logits = exp(logit_scale) * cos + logit_bias; probabilities are
	 * each pair's own sigmoid. */
	json_t *logits = json_object_get(expected, "logits_per_image");
	json_t *probs = json_object_get(expected, "probs_per_image");
	float lworst = 0, pworst = 0;
	for (size_t j = 0; j < nt; j++)
		clip_normalize(temb + j * D, D);
	for (size_t i = 0; i < n; i++) {
		clip_normalize(emb + i * D, D);
		for (size_t j = 0; j < nt; j++) {
			float l = clip_model_logit_scale(model) * dot(emb + i * D, temb + j * D, D) +
			          clip_model_logit_bias(model);
			float p = 1.0f / (1.0f + expf(-l));
			float dl = fabsf(l - num(json_array_get(logits, i), j));
			float dp = fabsf(p - num(json_array_get(probs, i), j));
			lworst = dl > lworst ? dl : lworst;
			pworst = dp > pworst ? dp : pworst;
		}
	}
	printf("# logits: max abs diff %.2e; sigmoid probabilities %.2e\n", lworst, pworst);
	CHECK(lworst <= 1e-2f);
	CHECK(pworst <= 1e-3f);
	free(emb);
	free(temb);
}

/* From the image files: the squash resize with the processor's filter,
 * within 0.5/255 of the oracle's pixels, and the embedding within 1e-3. */
static void t_image_files(void)
{
	json_t *images = json_object_get(expected, "images");
	int D = clip_model_dim(model), S = clip_model_image_size(model);
	size_t plane = (size_t)3 * S * S;
	const float std[3] = {0.5f, 0.5f, 0.5f}; /* [-1, 1] back to 0..255: x * 127.5 */
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, 1, &ctx, NULL) == CLIP_OK);
	float *pix = malloc(plane * sizeof *pix), *want = malloc(plane * sizeof *want), emb[64];
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

/* bf16 and int8 layers against the f32 reference, by cosine (the bounds
 * the README gives for CLIP: 0.999 and 0.995). */
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

/* A copy of the kit in tmp/name whose config.json is `config` (NULL: the
 * kit's) and without the file `drop` (NULL: none). */
static void kit_copy(const char *name, const char *config, const char *drop, char *dir, size_t n)
{
	char cmd[4096];
	snprintf(dir, n, "%s/%s", tmp, name);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp -r '%s'/. '%s'/", dir, dir, kit,
	         dir);
	REQUIRE(system(cmd) == 0);
	if (config) {
		char p[2048];
		snprintf(p, sizeof p, "%s/config.json", dir);
		FILE *f = fopen(p, "w");
		REQUIRE(f);
		fputs(config, f);
		fclose(f);
	}
	if (drop) {
		char p[2048];
		snprintf(p, sizeof p, "%s/%s", dir, drop);
		REQUIRE(unlink(p) == 0);
	}
}

static void expect_refusal(const char *name, const char *config, const char *want)
{
	char dir[1400];
	kit_copy(name, config, NULL, dir, sizeof dir);
	clip_model *m = NULL;
	clip_err err = {0};
	int rc = clip_model_open(dir, &m, &err);
	CHECKF(rc == CLIP_EMODEL && !m, "%s: rc %d (%s)", name, rc, err.msg);
	CHECKF(strstr(err.msg, want) != NULL, "%s: message \"%s\" lacks \"%s\"", name, err.msg, want);
	clip_model_close(m);
}

static void t_refusals(void)
{
	expect_refusal("naflex", "{\"model_type\": \"siglip2\", \"text_config\": {}, \"vision_config\": {}}",
	               "siglip2");
	/* The hub's minimal config: every missing key takes SiglipConfig's
	 * default (width 768), which the kit's tensors do not have. */
	expect_refusal("minimal", "{\"model_type\": \"siglip\", \"vision_config\": {\"image_size\": 96}}",
	               "shape");
	expect_refusal("widths",
	               "{\"model_type\": \"siglip\", \"text_config\": {\"hidden_size\": 64, "
	               "\"num_attention_heads\": 2, \"projection_size\": 32}, \"vision_config\": "
	               "{\"hidden_size\": 64, \"num_attention_heads\": 2, \"image_size\": 96}}",
	               "share a space");
	expect_refusal("act",
	               "{\"model_type\": \"siglip\", \"text_config\": {\"hidden_act\": \"relu\"}}",
	               "hidden_act");
	/* No tokenizer file: both names said. */
	char dir[1400], cmd[4096];
	kit_copy("nospm", NULL, "spiece.model", dir, sizeof dir);
	clip_model *nm = NULL;
	clip_err nerr = {0};
	CHECK(clip_model_open(dir, &nm, &nerr) == CLIP_EMODEL && !nm);
	CHECKF(strstr(nerr.msg, "spiece.model") && strstr(nerr.msg, "tokenizer.model"), "message: %s",
	       nerr.msg);
	/* A checkpoint without the MAP head: named. */
	kit_copy("nohead", NULL, NULL, dir, sizeof dir);
	/* Rename the probe tensor inside the header: same length, so the
	 * offsets stay right. */
	snprintf(cmd, sizeof cmd,
	         "python3 -c \"import sys; p=sys.argv[1]; b=open(p,'rb').read(); "
	         "open(p,'wb').write(b.replace(b'vision_model.head.probe', b'vision_model.head.pr0be', 1))\" "
	         "'%s/model.safetensors'", dir);
	REQUIRE(system(cmd) == 0);
	clip_model *m = NULL;
	clip_err err = {0};
	CHECK(clip_model_open(dir, &m, &err) == CLIP_EMODEL);
	CHECKF(strstr(err.msg, "vision_model.head.probe") != NULL, "message: %s", err.msg);
	clip_model_close(m);
}

/* A side the patch size does not divide (so400m-patch14-384): the last
 * pixels on the right and bottom are ignored, as a valid convolution
 * does; the one before them is not. */
static void t_valid_convolution(void)
{
	const char *mk = getenv("CLIP_MKMODEL");
	REQUIRE(mk && *mk);
	char dir[512], cmd[2048];
	snprintf(dir, sizeof dir, "%s/side100", tmp);
	snprintf(cmd, sizeof cmd, "'%s' --preset siglip-tiny --image-size 100 --out '%s' --spm '%s/spiece.model'",
	         mk, dir, kit);
	REQUIRE(system(cmd) == 0);
	clip_model *m;
	clip_err err;
	REQUIRE(clip_model_open(dir, &m, &err) == CLIP_OK);
	CHECK(clip_model_image_size(m) == 100);
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(m, 1, &ctx, NULL) == CLIP_OK);
	size_t plane = 100 * 100;
	float *px = malloc(3 * plane * sizeof *px), a[64], b[64], c[64];
	REQUIRE(px);
	for (size_t i = 0; i < 3 * plane; i++)
		px[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
	CHECK(clip_encode_images(ctx, 1, px, a, NULL) == CLIP_OK);
	for (int ch = 0; ch < 3; ch++)
		for (int y = 0; y < 100; y++)
			for (int x = 0; x < 100; x++)
				if (x >= 96 || y >= 96)
					px[ch * plane + (size_t)y * 100 + x] = 0.9f;
	CHECK(clip_encode_images(ctx, 1, px, b, NULL) == CLIP_OK);
	px[95] += 0.5f; /* row 0, column 95: inside the last patch */
	CHECK(clip_encode_images(ctx, 1, px, c, NULL) == CLIP_OK);
	float same = 0, diff = 0;
	for (int k = 0; k < 64; k++) {
		same = fmaxf(same, fabsf(a[k] - b[k]));
		diff = fmaxf(diff, fabsf(b[k] - c[k]));
	}
	CHECKF(same == 0, "pixels past 96 changed the embedding by %g", same);
	CHECKF(diff > 1e-4f, "a pixel of the last patch changed it by only %g", diff);
	/* A file preprocesses to 100 x 100 too. */
	snprintf(cmd, sizeof cmd, "%s/images/horse.png", ref);
	CHECK(clip_preprocess_file(m, cmd, NULL, px, NULL, NULL, &err) == CLIP_OK);
	free(px);
	clip_ctx_free(ctx);
	clip_model_close(m);
}

int main(void)
{
	expected = ref_kit_open("tiny-siglip-a", "test_siglip", ref, sizeof ref, kit, sizeof kit, tmp,
	                        sizeof tmp);
	clip_err err;
	if (!expected)
		return 1;
	if (clip_model_open(kit, &model, &err) != CLIP_OK) {
		printf("not ok 1 - reference kit at %s: %s\n1..1\n", kit, err.msg);
		return 1;
	}
	char p[1200];
	TAP_RUN(t_shape);
	TAP_RUN(t_token_ids);
	TAP_RUN(t_activation);
	TAP_RUN(t_text_embeddings);
	TAP_RUN(t_image_embeddings_and_scores);
	TAP_RUN(t_image_files);
	TAP_RUN(t_reduced_precision);
	TAP_RUN(t_refusals);
	TAP_RUN(t_valid_convolution);
	clip_model_close(model);
	json_decref(expected);
	snprintf(p, sizeof p, "rm -rf '%s'", tmp);
	if (system(p) != 0)
		return 1;
	return tap_done();
}
