/*
 * test_model: the CLIP implementation against the reference kit
 * ($CLIPD_REFERENCE/tiny-clip-a, produced by open_clip; see its README):
 * token ids, text and image embeddings (from the oracle's pixels and from
 * the image files), logits, batching; F16/BF16 checkpoints written by
 * clip-mkmodel against their F32 twins; and every malformed checkpoint the
 * loader must refuse with a message naming the problem. The real ViT-B/32
 * check runs only when CLIP_REAL_MODEL points at openai/clip-vit-base-patch32.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clip.h"
#include "simd_int.h"
#include "ref_kit.h"
#include "tap.h"

static char ref[1024], tiny[1100], tmp[256];
static json_t *expected;
static clip_model *model;

static void t_token_ids(void)
{
	json_t *texts = json_object_get(expected, "texts");
	REQUIRE(json_array_size(texts) > 0);
	int C = clip_model_context(model);
	int32_t ids[77];
	REQUIRE(C == 77);
	size_t i;
	json_t *t;
	json_array_foreach(texts, i, t) {
		clip_err err;
		const char *s = json_string_value(json_object_get(t, "text"));
		int rc = clip_tokenize(model, s, ids, NULL, &err);
		CHECKF(rc == CLIP_OK, "text %zu: %s", i, err.msg);
		json_t *want = json_object_get(t, "ids");
		int same = 1;
		for (int k = 0; k < C; k++)
			same &= ids[k] == json_integer_value(json_array_get(want, (size_t)k));
		CHECKF(same, "text %zu (%.40s): token ids differ", i, s);
	}
}

static void t_text_embeddings(void)
{
	json_t *texts = json_object_get(expected, "texts");
	int D = clip_model_dim(model), C = clip_model_context(model);
	size_t n = json_array_size(texts);
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, (int)n, &ctx, NULL) == CLIP_OK);
	int32_t *ids = malloc(n * (size_t)C * sizeof *ids);
	float *emb = malloc(n * (size_t)D * sizeof *emb), one[1024];
	REQUIRE(ids && emb && D <= 1024);
	/* The oracle's own token ids: this checks the encoder alone. */
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < C; k++)
			ids[i * C + k] = (int32_t)json_integer_value(
				json_array_get(json_object_get(json_array_get(texts, i), "ids"), (size_t)k));
	CHECK(clip_encode_texts(ctx, (int)n, ids, emb, NULL) == CLIP_OK);
	float worst = 0, worst_batch = 0;
	for (size_t i = 0; i < n; i++) {
		float d = max_abs_diff(emb + i * D, json_object_get(json_array_get(texts, i), "embedding"), D);
		CHECKF(d <= 1e-3f, "text %zu: max abs diff %g", i, d);
		worst = d > worst ? d : worst;
		/* One at a time gives the same as in the batch. */
		CHECK(clip_encode_texts(ctx, 1, ids + i * C, one, NULL) == CLIP_OK);
		for (int k = 0; k < D; k++) {
			float bd = fabsf(one[k] - emb[i * D + k]);
			worst_batch = bd > worst_batch ? bd : worst_batch;
		}
	}
	printf("# text embeddings: max abs diff %.2e vs reference, %.2e batch vs single\n", worst,
	       worst_batch);
	CHECK(worst_batch <= 1e-4f);
	free(ids);
	free(emb);
	clip_ctx_free(ctx);
}

static void t_image_embeddings_from_pixels(void)
{
	json_t *images = json_object_get(expected, "images");
	int D = clip_model_dim(model), S = clip_model_image_size(model);
	size_t n = json_array_size(images), plane = (size_t)3 * S * S;
	REQUIRE(n > 0);
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, (int)n, &ctx, NULL) == CLIP_OK);
	float *pix = malloc(n * plane * sizeof *pix), *emb = malloc(n * (size_t)D * sizeof *emb);
	float one[1024];
	REQUIRE(pix && emb);
	for (size_t i = 0; i < n; i++) {
		char p[2048];
		snprintf(p, sizeof p, "%s/%s", tiny,
		         json_string_value(json_object_get(json_array_get(images, i), "pixels")));
		REQUIRE(read_f32(p, pix + i * plane, plane) == 0);
	}
	CHECK(clip_encode_images(ctx, (int)n, pix, emb, NULL) == CLIP_OK);
	float worst = 0, worst_batch = 0;
	for (size_t i = 0; i < n; i++) {
		float d = max_abs_diff(emb + i * D, json_object_get(json_array_get(images, i), "embedding"), D);
		CHECKF(d <= 1e-3f, "image %zu: max abs diff %g", i, d);
		worst = d > worst ? d : worst;
		CHECK(clip_encode_images(ctx, 1, pix + i * plane, one, NULL) == CLIP_OK);
		for (int k = 0; k < D; k++) {
			float bd = fabsf(one[k] - emb[i * D + k]);
			worst_batch = bd > worst_batch ? bd : worst_batch;
		}
	}
	printf("# image embeddings from pixels: max abs diff %.2e, batch vs single %.2e\n", worst,
	       worst_batch);
	CHECK(worst_batch <= 1e-4f);

	/* logits_per_image = exp(logit_scale) * cosine, against every text. */
	json_t *texts = json_object_get(expected, "texts"), *logits = json_object_get(expected, "logits_per_image");
	size_t nt = json_array_size(texts);
	float *temb = malloc(nt * (size_t)D * sizeof *temb);
	REQUIRE(temb);
	for (size_t j = 0; j < nt; j++) {
		json_t *e = json_object_get(json_array_get(texts, j), "embedding");
		for (int k = 0; k < D; k++)
			temb[j * D + k] = (float)json_number_value(json_array_get(e, (size_t)k));
		clip_normalize(temb + j * D, D);
	}
	CHECKF(fabsf(clip_model_logit_scale(model) -
	             (float)json_number_value(json_object_get(expected, "logit_scale"))) < 1e-3f,
	       "logit scale %g", clip_model_logit_scale(model));
	float lworst = 0;
	for (size_t i = 0; i < n; i++) {
		clip_normalize(emb + i * D, D);
		for (size_t j = 0; j < nt; j++) {
			float l = clip_model_logit_scale(model) * dot(emb + i * D, temb + j * D, D);
			float want = (float)json_number_value(json_array_get(json_array_get(logits, i), j));
			float d = fabsf(l - want);
			lworst = d > lworst ? d : lworst;
		}
	}
	printf("# logits_per_image: max abs diff %.2e\n", lworst);
	CHECK(lworst <= 1e-2f);
	free(temb);
	free(pix);
	free(emb);
	clip_ctx_free(ctx);
}

static void t_image_embeddings_from_files(void)
{
	json_t *images = json_object_get(expected, "images");
	int D = clip_model_dim(model), S = clip_model_image_size(model);
	size_t plane = (size_t)3 * S * S;
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, 1, &ctx, NULL) == CLIP_OK);
	float *pix = malloc(plane * sizeof *pix), emb[1024], want[1024];
	REQUIRE(pix);
	size_t i;
	json_t *im;
	json_array_foreach(images, i, im) {
		char p[2048];
		clip_err err;
		snprintf(p, sizeof p, "%s/images/%s", ref, json_string_value(json_object_get(im, "file")));
		int w = 0, h = 0;
		int rc = clip_preprocess_file(model, p, NULL, pix, &w, &h, &err);
		CHECKF(rc == CLIP_OK, "%s: %s", p, err.msg);
		if (rc != CLIP_OK)
			continue;
		CHECK(w > 0 && h > 0);
		CHECK(clip_encode_images(ctx, 1, pix, emb, NULL) == CLIP_OK);
		json_t *e = json_object_get(im, "embedding");
		for (int k = 0; k < D; k++)
			want[k] = (float)json_number_value(json_array_get(e, (size_t)k));
		float d = max_abs_diff(emb, e, D);
		clip_normalize(emb, D);
		clip_normalize(want, D);
		float cos = dot(emb, want, D);
		printf("# %s: max abs diff %.2e, cosine %.6f\n", json_string_value(json_object_get(im, "file")),
		       d, cos);
		/* Same bound as from the oracle's pixels: preprocessing matches
		 * the reference's to within rounding (see test_preprocess). */
		CHECKF(d <= 1e-3f && cos >= 0.9999f, "%s: max abs diff %g, cosine %f", p, d, cos);
	}
	free(pix);
	clip_ctx_free(ctx);
}

static void t_bad_inputs(void)
{
	clip_err err;
	int32_t ids[77];
	clip_ctx *ctx;
	REQUIRE(clip_ctx_new(model, 2, &ctx, NULL) == CLIP_OK);
	CHECK(clip_tokenize(model, "caf\xc3", ids, NULL, &err) == CLIP_ETEXT);
	CHECK(clip_tokenize(model, "", ids, NULL, &err) == CLIP_OK);
	float out[2 * 1024];
	int32_t bad[77] = {49406, 60000, 49407};
	CHECK(clip_encode_texts(ctx, 1, bad, out, &err) == CLIP_EINVAL);
	CHECKF(strstr(err.msg, "vocabulary") != NULL, "message: %s", err.msg);
	CHECK(clip_encode_texts(ctx, 3, ids, out, &err) == CLIP_EINVAL); /* over max_batch */
	CHECK(clip_encode_images(ctx, 0, out, out, &err) == CLIP_EINVAL);
	clip_ctx *none = (clip_ctx *)1;
	CHECK(clip_ctx_new(model, 0, &none, &err) == CLIP_EINVAL && none == NULL);
	char p[512];
	snprintf(p, sizeof p, "%s/not-an-image.png", tmp);
	FILE *f = fopen(p, "w");
	REQUIRE(f);
	fputs("hello, I am a text file\n", f);
	fclose(f);
	float *pix = malloc((size_t)3 * 224 * 224 * sizeof *pix);
	CHECK(clip_preprocess_file(model, p, NULL, pix, NULL, NULL, &err) == CLIP_EIMAGE);
	free(pix);
	clip_ctx_free(ctx);
}

/* ---- malformed checkpoints ----------------------------------------------- */

static int run(const char *cmd)
{
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* A writable copy of tiny-clip-a in tmp/name. */
static void copy_tiny(const char *name, char *dir, size_t n)
{
	char cmd[4096];
	snprintf(dir, n, "%s/%s", tmp, name);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s'/*.json '%s'/merges.txt '%s'/model.safetensors '%s'/",
	         dir, dir, tiny, tiny, tiny, dir);
	if (run(cmd) != 0)
		printf("# copy failed: %s\n", cmd);
}

/* Rewrites dir/model.safetensors with a changed header: edit(header). */
static int rewrite_st(const char *dir, void (*edit)(json_t *hdr))
{
	char p[2048];
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	FILE *f = fopen(p, "rb");
	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *buf = malloc((size_t)size);
	if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | buf[i];
	json_t *hdr = json_loadb((const char *)buf + 8, hl, 0, NULL);
	edit(hdr);
	char *h = json_dumps(hdr, JSON_COMPACT);
	json_decref(hdr);
	size_t nl = strlen(h);
	f = fopen(p, "wb");
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)nl >> (8 * i));
	fwrite(len8, 1, 8, f);
	fwrite(h, 1, nl, f);
	fwrite(buf + 8 + hl, 1, (size_t)size - 8 - hl, f);
	fclose(f);
	free(h);
	free(buf);
	return 0;
}

static void drop_tensor(json_t *h)
{
	json_object_del(h, "vision_model.post_layernorm.weight");
}

static void transpose_shape(json_t *h)
{
	json_object_set_new(json_object_get(h, "text_projection.weight"), "shape", json_pack("[i,i]", 64, 32));
}

static void lie_offsets(json_t *h)
{
	json_object_set_new(json_object_get(h, "visual_projection.weight"), "data_offsets",
	                    json_pack("[I,I]", (json_int_t)1 << 40, ((json_int_t)1 << 40) + 8192));
}

static void wrong_size(json_t *h)
{
	json_object_set_new(json_object_get(h, "text_projection.weight"), "shape", json_pack("[i,i]", 32, 63));
}

static void int_dtype(json_t *h)
{
	json_object_set_new(json_object_get(h, "text_projection.weight"), "dtype", json_string("I32"));
}

static void expect_refused(const char *dir, const char *needle, const char *what)
{
	clip_model *m = (clip_model *)1;
	clip_err err = {0};
	int rc = clip_model_open(dir, &m, &err);
	CHECKF(rc == CLIP_EMODEL, "%s: rc %d (%s)", what, rc, err.msg);
	CHECKF(m == NULL, "%s: model handle not NULL", what);
	CHECKF(strstr(err.msg, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what, err.msg, needle);
	if (rc == CLIP_OK)
		clip_model_close(m);
}

static void edit_config(const char *dir, const char *key_path, json_t *value)
{
	char p[2048];
	snprintf(p, sizeof p, "%s/config.json", dir);
	json_t *c = json_load_file(p, 0, NULL);
	json_t *o = c;
	char kp[256];
	snprintf(kp, sizeof kp, "%s", key_path);
	char *dot = strchr(kp, '.');
	if (dot) {
		*dot = 0;
		o = json_object_get(c, kp);
		json_object_set_new(o, dot + 1, value);
	} else {
		json_object_set_new(c, kp, value);
	}
	json_dump_file(c, p, 0);
	json_decref(c);
}

static void t_malformed_checkpoints(void)
{
	char d[1024], cmd[2200];
	copy_tiny("missing", d, sizeof d);
	rewrite_st(d, drop_tensor);
	expect_refused(d, "vision_model.post_layernorm.weight", "missing tensor");

	copy_tiny("transposed", d, sizeof d);
	rewrite_st(d, transpose_shape);
	expect_refused(d, "text_projection.weight has shape [64,32]", "misshaped tensor");

	copy_tiny("sizes", d, sizeof d);
	rewrite_st(d, wrong_size);
	expect_refused(d, "text_projection.weight", "shape that does not match the bytes");

	copy_tiny("lying", d, sizeof d);
	rewrite_st(d, lie_offsets);
	expect_refused(d, "visual_projection.weight lies outside the file", "offsets past the end");

	copy_tiny("dtype", d, sizeof d);
	rewrite_st(d, int_dtype);
	expect_refused(d, "dtype I32", "integer weights");

	copy_tiny("truncated", d, sizeof d);
	snprintf(cmd, sizeof cmd, "truncate -s 6000000 '%s/model.safetensors'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "lies outside the file", "truncated file");

	copy_tiny("garbage", d, sizeof d);
	snprintf(cmd, sizeof cmd, "head -c 100000 /dev/urandom > '%s/model.safetensors'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "model.safetensors", "random bytes");

	copy_tiny("empty", d, sizeof d);
	snprintf(cmd, sizeof cmd, ": > '%s/model.safetensors'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "too short", "empty file");

	copy_tiny("nosafetensors", d, sizeof d);
	snprintf(cmd, sizeof cmd, "rm '%s/model.safetensors'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "model.safetensors", "no weights file");

	copy_tiny("bert", d, sizeof d);
	edit_config(d, "model_type", json_string("bert"));
	expect_refused(d, "clipd runs \"clip\", \"siglip\" and \"chinese_clip\"", "non-CLIP config");

	copy_tiny("act", d, sizeof d);
	edit_config(d, "vision_config.hidden_act", json_string("relu"));
	expect_refused(d, "hidden_act", "unknown activation");

	copy_tiny("heads", d, sizeof d);
	edit_config(d, "text_config.num_attention_heads", json_integer(3));
	expect_refused(d, "num_attention_heads", "heads that do not divide the width");

	copy_tiny("layers", d, sizeof d);
	edit_config(d, "text_config.num_hidden_layers", json_integer(3));
	expect_refused(d, "text_model.encoder.layers.2", "more layers than tensors");

	copy_tiny("badjson", d, sizeof d);
	snprintf(cmd, sizeof cmd, "printf '{\"model_type\": ' > '%s/config.json'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "config.json", "truncated config.json");

	copy_tiny("novocab", d, sizeof d);
	snprintf(cmd, sizeof cmd, "rm '%s/vocab.json'", d);
	REQUIRE(run(cmd) == 0);
	clip_model *m = NULL;
	clip_err err;
	CHECK(clip_model_open(d, &m, &err) != CLIP_OK && m == NULL);
	CHECKF(strstr(err.msg, "vocab.json") != NULL, "message: %s", err.msg);

	CHECK(clip_model_open("/nonexistent/model", &m, &err) != CLIP_OK && m == NULL);
}

/* ---- dtypes, from clip-mkmodel ------------------------------------------- */

static void t_reduced_precision_twins(void)
{
	const char *mk = getenv("CLIP_MKMODEL");
	REQUIRE(mk && *mk);
	static const char *dts[] = {"bf16", "f16"};
	for (int k = 0; k < 2; k++) {
		char a[600], b[600], cmd[4096];
		snprintf(a, sizeof a, "%s/twin-f32-%s", tmp, dts[k]);
		snprintf(b, sizeof b, "%s/twin-%s", tmp, dts[k]);
		snprintf(cmd, sizeof cmd, "'%s' --preset tiny --seed 3 --dtype f32 --round %s --out '%s' && "
		         "'%s' --preset tiny --seed 3 --dtype %s --out '%s'", mk, dts[k], a, mk, dts[k], b);
		REQUIRE(run(cmd) == 0);
		clip_model *ma, *mb;
		clip_err err;
		REQUIRE(clip_model_open(a, &ma, &err) == CLIP_OK);
		int rc = clip_model_open(b, &mb, &err);
		CHECKF(rc == CLIP_OK, "%s: %s", dts[k], err.msg);
		if (rc != CLIP_OK) {
			clip_model_close(ma);
			continue;
		}
		clip_ctx *ca, *cb;
		REQUIRE(clip_ctx_new(ma, 2, &ca, NULL) == CLIP_OK && clip_ctx_new(mb, 2, &cb, NULL) == CLIP_OK);
		int D = clip_model_dim(ma), S = clip_model_image_size(ma);
		size_t plane = (size_t)3 * S * S;
		float *pix = malloc(2 * plane * sizeof *pix), ea[2 * 1024], eb[2 * 1024];
		for (size_t i = 0; i < 2 * plane; i++)
			pix[i] = sinf((float)i * 0.001f);
		CHECK(clip_encode_images(ca, 2, pix, ea, NULL) == CLIP_OK);
		CHECK(clip_encode_images(cb, 2, pix, eb, NULL) == CLIP_OK);
		float worst = 0;
		for (int i = 0; i < 2 * D; i++)
			worst = fmaxf(worst, fabsf(ea[i] - eb[i]));
		int32_t ids[2 * 77];
		CHECK(clip_tokenize(ma, "a photo of a cat", ids, NULL, NULL) == CLIP_OK);
		CHECK(clip_tokenize(mb, "2 dogs", ids + 77, NULL, NULL) == CLIP_OK);
		CHECK(clip_encode_texts(ca, 2, ids, ea, NULL) == CLIP_OK);
		CHECK(clip_encode_texts(cb, 2, ids, eb, NULL) == CLIP_OK);
		for (int i = 0; i < 2 * D; i++)
			worst = fmaxf(worst, fabsf(ea[i] - eb[i]));
		printf("# %s checkpoint vs its f32 twin: max abs diff %.2e\n", dts[k], worst);
		CHECK(worst <= 1e-3f);
		/* The embeddings are not trivially zero. */
		CHECK(fabsf(ea[0]) + fabsf(ea[1]) > 0);
		free(pix);
		clip_ctx_free(ca);
		clip_ctx_free(cb);
		clip_model_close(ma);
		clip_model_close(mb);
	}
}

static void t_gelu_checkpoint(void)
{
	const char *mk = getenv("CLIP_MKMODEL");
	REQUIRE(mk && *mk);
	char a[600], b[600], cmd[4096];
	snprintf(a, sizeof a, "%s/act-quick", tmp);
	snprintf(b, sizeof b, "%s/act-gelu", tmp);
	snprintf(cmd, sizeof cmd, "'%s' --seed 5 --out '%s' && '%s' --seed 5 --act gelu --out '%s'", mk, a, mk, b);
	REQUIRE(run(cmd) == 0);
	clip_model *ma, *mb;
	REQUIRE(clip_model_open(a, &ma, NULL) == CLIP_OK);
	REQUIRE(clip_model_open(b, &mb, NULL) == CLIP_OK);
	clip_ctx *ca, *cb;
	REQUIRE(clip_ctx_new(ma, 1, &ca, NULL) == CLIP_OK && clip_ctx_new(mb, 1, &cb, NULL) == CLIP_OK);
	int32_t ids[77];
	float ea[1024], eb[1024];
	CHECK(clip_tokenize(ma, "hello world", ids, NULL, NULL) == CLIP_OK);
	CHECK(clip_encode_texts(ca, 1, ids, ea, NULL) == CLIP_OK);
	CHECK(clip_encode_texts(cb, 1, ids, eb, NULL) == CLIP_OK);
	float diff = 0;
	for (int i = 0; i < clip_model_dim(ma); i++)
		diff = fmaxf(diff, fabsf(ea[i] - eb[i]));
	/* Same weights, other activation: the outputs must move. */
	CHECKF(diff > 1e-3f, "gelu and quick_gelu agree to %g", diff);
	clip_ctx_free(ca);
	clip_ctx_free(cb);
	clip_model_close(ma);
	clip_model_close(mb);
}

/* The attention softmax's vector exp against libm's expf over the range
 * softmax feeds it (x - max <= 0) and beyond: relative error within 4e-7
 * (about 3 ulp), inputs past the clamp as at the clamp. */
static void t_vector_exp(void)
{
	double worst = 0;
	int bad = 0;
	for (int i = 0; i < 400000; i += 16) {
		v16 x;
		for (int l = 0; l < 16; l++)
			x[l] = -100.0f + (float)(i + l) * (190.0f / 400000.0f);
		v16 e = x;
		vexp(&e);
		for (int l = 0; l < 16; l++) {
			float c = x[l] < -87.0f ? -87.0f : x[l] > 88.0f ? 88.0f : x[l];
			double want = exp((double)c), rel = fabs(e[l] - want) / want;
			worst = rel > worst ? rel : worst;
			bad += !(rel < 4e-7);
		}
	}
	printf("# vector exp: largest relative error %.3g\n", worst);
	CHECK(bad == 0);
}

static void t_real_model(void)
{
	const char *dir = getenv("CLIP_REAL_MODEL");
	clip_model *m;
	clip_err err;
	REQUIRE(clip_model_open(dir, &m, &err) == CLIP_OK);
	clip_ctx *c;
	REQUIRE(clip_ctx_new(m, 2, &c, NULL) == CLIP_OK);
	int D = clip_model_dim(m), S = clip_model_image_size(m);
	float *pix = malloc((size_t)3 * S * S * sizeof *pix), img[1024], txt[2 * 1024];
	char p[2048];
	snprintf(p, sizeof p, "%s/images/000000039769.png", ref);
	REQUIRE(clip_preprocess_file(m, p, NULL, pix, NULL, NULL, &err) == CLIP_OK);
	REQUIRE(clip_encode_images(c, 1, pix, img, NULL) == CLIP_OK);
	int32_t ids[2 * 77];
	REQUIRE(clip_tokenize(m, "a photo of a cat", ids, NULL, NULL) == CLIP_OK);
	REQUIRE(clip_tokenize(m, "a photo of a dog", ids + 77, NULL, NULL) == CLIP_OK);
	REQUIRE(clip_encode_texts(c, 2, ids, txt, NULL) == CLIP_OK);
	clip_normalize(img, D);
	clip_normalize(txt, D);
	clip_normalize(txt + D, D);
	float l0 = clip_model_logit_scale(m) * dot(img, txt, D);
	float l1 = clip_model_logit_scale(m) * dot(img, txt + D, D);
	/* Published by transformers' test_modeling_clip.py::test_inference
	 * for the JPEG of this picture: [[24.5701, 19.3049]]. */
	printf("# real ViT-B/32 logits: %.4f %.4f\n", l0, l1);
	CHECK(fabsf(l0 - 24.5701f) < 0.1f);
	CHECK(fabsf(l1 - 19.3049f) < 0.1f);
	free(pix);
	clip_ctx_free(c);
	clip_model_close(m);
}

int main(void)
{
	expected = ref_kit_open("tiny-clip-a", "test_model", ref, sizeof ref, tiny, sizeof tiny, tmp,
	                        sizeof tmp);
	clip_err err;
	if (!expected)
		return 1;
	if (clip_model_open(tiny, &model, &err) != CLIP_OK) {
		printf("not ok 1 - reference kit at %s: %s\n1..1\n", tiny, err.msg);
		return 1;
	}
	char p[1200];
	TAP_RUN(t_token_ids);
	TAP_RUN(t_text_embeddings);
	TAP_RUN(t_image_embeddings_from_pixels);
	TAP_RUN(t_image_embeddings_from_files);
	TAP_RUN(t_bad_inputs);
	TAP_RUN(t_malformed_checkpoints);
	TAP_RUN(t_reduced_precision_twins);
	TAP_RUN(t_gelu_checkpoint);
	TAP_RUN(t_vector_exp);
	if (getenv("CLIP_REAL_MODEL") && *getenv("CLIP_REAL_MODEL"))
		TAP_RUN(t_real_model);
	else
		TAP_SKIP(t_real_model, "CLIP_REAL_MODEL is not set (no pretrained weights can be downloaded here)");
	clip_model_close(model);
	json_decref(expected);
	snprintf(p, sizeof p, "rm -rf '%s'", tmp);
	if (system(p) != 0)
		printf("# could not remove %s\n", tmp);
	return tap_done();
}
