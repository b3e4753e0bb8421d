/*
 * test_openclip: open_clip's checkpoint layout ($CLIPD_REFERENCE/
 * tiny-clip-a-openclip, tiny-clip-a's weights under open_clip's own names,
 * see the kit's README) against the kit's expected.json and against
 * tiny-clip-a itself; the layout chosen from the files present; and every
 * open_clip config the loader must refuse (written into a temp dir) with a
 * message naming the key or file.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clip.h"
#include "ref_kit.h"
#include "tap.h"

static char ref[1024], kit[1100], hf[1100], tmp[256];
static json_t *expected;
static clip_model *oc, *hfm;

static int run(const char *cmd)
{
	int rc = system(cmd);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static float max_diff(const float *a, const float *b, size_t n)
{
	float m = 0;
	for (size_t i = 0; i < n; i++) {
		float d = fabsf(a[i] - b[i]);
		if (!(d <= m))
			m = d;
	}
	return m;
}

/* Every expected text (the oracle's token ids) and image (its pixels)
 * through m into txt[nt][D] and img[ni][D]; 0 on success. */
static int encode_all(clip_model *m, float **txt, float **img, size_t *nt, size_t *ni)
{
	json_t *texts = json_object_get(expected, "texts"), *images = json_object_get(expected, "images");
	int D = clip_model_dim(m), C = clip_model_context(m), S = clip_model_image_size(m);
	size_t plane = (size_t)3 * S * S;
	*nt = json_array_size(texts);
	*ni = json_array_size(images);
	clip_ctx *ctx;
	if (clip_ctx_new(m, (int)(*nt > *ni ? *nt : *ni), &ctx, NULL) != CLIP_OK)
		return -1;
	int32_t *ids = malloc(*nt * (size_t)C * sizeof *ids);
	float *pix = malloc(*ni * plane * sizeof *pix);
	*txt = malloc(*nt * (size_t)D * sizeof **txt);
	*img = malloc(*ni * (size_t)D * sizeof **img);
	int rc = !ids || !pix || !*txt || !*img;
	for (size_t i = 0; !rc && i < *nt; i++)
		for (int k = 0; k < C; k++)
			ids[i * C + k] = (int32_t)json_integer_value(
				json_array_get(json_object_get(json_array_get(texts, i), "ids"), (size_t)k));
	for (size_t i = 0; !rc && i < *ni; i++) {
		char p[2048];
		snprintf(p, sizeof p, "%s/%s", kit,
		         json_string_value(json_object_get(json_array_get(images, i), "pixels")));
		rc = read_f32(p, pix + i * plane, plane);
	}
	if (!rc)
		rc = clip_encode_texts(ctx, (int)*nt, ids, *txt, NULL) != CLIP_OK ||
		     clip_encode_images(ctx, (int)*ni, pix, *img, NULL) != CLIP_OK;
	free(ids);
	free(pix);
	clip_ctx_free(ctx);
	return rc ? -1 : 0;
}

/* The kit gives expected.json's embeddings, texts and pixels, within 1e-3,
 * and the same numbers as tiny-clip-a in the Hugging Face layout. */
static void t_expected_embeddings(void)
{
	json_t *texts = json_object_get(expected, "texts"), *images = json_object_get(expected, "images");
	float *t1, *i1, *t2, *i2;
	size_t nt, ni;
	int D = clip_model_dim(oc);
	REQUIRE(D == clip_model_dim(hfm) && D == 32);
	CHECK(clip_model_context(oc) == 77 && clip_model_image_size(oc) == 224);
	REQUIRE(encode_all(oc, &t1, &i1, &nt, &ni) == 0);
	REQUIRE(encode_all(hfm, &t2, &i2, &nt, &ni) == 0);
	REQUIRE(nt > 0 && ni > 0);
	float wt = 0, wi = 0;
	for (size_t i = 0; i < nt; i++) {
		float d = max_abs_diff(t1 + i * D, json_object_get(json_array_get(texts, i), "embedding"), D);
		CHECKF(d <= 1e-3f, "text %zu: max abs diff %g", i, d);
		wt = d > wt ? d : wt;
	}
	for (size_t i = 0; i < ni; i++) {
		float d = max_abs_diff(i1 + i * D, json_object_get(json_array_get(images, i), "embedding"), D);
		CHECKF(d <= 1e-3f, "image %zu: max abs diff %g", i, d);
		wi = d > wi ? d : wi;
	}
	float st = max_diff(t1, t2, nt * D), si = max_diff(i1, i2, ni * D);
	printf("# open_clip layout vs expected.json: texts %.2e, images %.2e; vs tiny-clip-a: %.2e, %.2e\n",
	       wt, wi, st, si);
	/* The same weights in the same order of operations: equal. */
	CHECK(st <= 1e-6f && si <= 1e-6f);
	CHECK(clip_model_logit_scale(oc) == clip_model_logit_scale(hfm));

	/* Token ids come from the same tokenizer files. */
	int32_t a[77], b[77];
	size_t i;
	json_t *t;
	json_array_foreach(texts, i, t) {
		const char *s = json_string_value(json_object_get(t, "text"));
		REQUIRE(clip_tokenize(oc, s, a, NULL, NULL) == CLIP_OK);
		REQUIRE(clip_tokenize(hfm, s, b, NULL, NULL) == CLIP_OK);
		CHECKF(memcmp(a, b, sizeof a) == 0, "text %zu: token ids differ", i);
	}
	free(t1);
	free(i1);
	free(t2);
	free(i2);
}

/* The layout's converted layers (oneDNN's f32, when built in: the
 * projections' owned copies are packed and freed) give the same answer. */
static void t_packed_precision(void)
{
	clip_options o = {CLIP_PRECISION_F32};
	clip_model *m;
	clip_err err;
	REQUIRE(clip_model_open_opts(kit, &o, &m, &err) == CLIP_OK);
	float *t1, *i1, *t2, *i2;
	size_t nt, ni;
	REQUIRE(encode_all(m, &t1, &i1, &nt, &ni) == 0);
	REQUIRE(encode_all(oc, &t2, &i2, &nt, &ni) == 0);
	int D = clip_model_dim(m);
	float dt = max_diff(t1, t2, nt * D), di = max_diff(i1, i2, ni * D);
	printf("# clip_model_open_opts(f32) vs reference: %.2e, %.2e\n", dt, di);
	CHECK(dt <= 1e-3f && di <= 1e-3f);
	free(t1);
	free(i1);
	free(t2);
	free(i2);
	clip_model_close(m);
}

/* ---- checkpoints written into the temp dir -------------------------------- */

/* A writable copy of the kit (or, hf: tiny-clip-a) in tmp/name. */
static void copy_kit(const char *name, int use_hf, char *dir, size_t n)
{
	char cmd[4096];
	const char *src = use_hf ? hf : kit;
	snprintf(dir, n, "%s/%s", tmp, name);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s'/*.json '%s'/merges.txt '%s'/*.safetensors '%s'/",
	         dir, dir, src, src, src, dir);
	if (run(cmd) != 0)
		printf("# copy failed: %s\n", cmd);
	snprintf(cmd, sizeof cmd, "chmod -R u+w '%s'", dir);
	run(cmd);
}

/* Sets (value) or removes (NULL) the key at path "a.b.c" of dir/file. */
static void edit_json(const char *dir, const char *file, const char *path, json_t *value)
{
	char p[2048], kp[256];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	json_t *root = json_load_file(p, 0, NULL), *o = root;
	snprintf(kp, sizeof kp, "%s", path);
	char *key = kp, *dot;
	while (o && (dot = strchr(key, '.'))) {
		*dot = 0;
		json_t *next = json_object_get(o, key);
		if (!next) {
			next = json_object();
			json_object_set_new(o, key, next);
		}
		o = next;
		key = dot + 1;
	}
	if (value)
		json_object_set_new(o, key, value);
	else
		json_object_del(o, key);
	json_dump_file(root, p, JSON_INDENT(1));
	json_decref(root);
}

static void edit_cfg(const char *dir, const char *path, json_t *value)
{
	edit_json(dir, "open_clip_config.json", path, value);
}

/* Rewrites dir/file (safetensors) with edit(header); convert: every F32
 * tensor also becomes BF16 (rounded to nearest even), the data repacked. */
static int rewrite_st(const char *dir, const char *file, void (*edit)(json_t *hdr), int convert)
{
	char p[2048];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	FILE *f = fopen(p, "rb");
	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *buf = malloc((size_t)size), *out = malloc((size_t)size);
	if (!buf || !out || fread(buf, 1, (size_t)size, f) != (size_t)size) {
		fclose(f);
		free(buf);
		free(out);
		return -1;
	}
	fclose(f);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | buf[i];
	json_t *hdr = json_loadb((const char *)buf + 8, hl, 0, NULL);
	const unsigned char *data = buf + 8 + hl;
	size_t n = (size_t)size - 8 - hl;
	if (convert) {
		const char *k;
		json_t *t;
		size_t at = 0;
		json_object_foreach(hdr, k, t) {
			json_t *off = json_object_get(t, "data_offsets");
			if (!off)
				continue; /* __metadata__ */
			size_t a = (size_t)json_integer_value(json_array_get(off, 0));
			size_t b = (size_t)json_integer_value(json_array_get(off, 1));
			int f32 = strcmp(json_string_value(json_object_get(t, "dtype")), "F32") == 0;
			for (size_t i = a; i < b; i += f32 ? 4 : 1) {
				if (f32) {
					uint32_t u;
					memcpy(&u, data + i, 4);
					u += 0x7fff + ((u >> 16) & 1);
					out[at++] = (unsigned char)(u >> 16);
					out[at++] = (unsigned char)(u >> 24);
				} else {
					out[at++] = data[i];
				}
			}
			size_t len = f32 ? (b - a) / 2 : b - a;
			json_object_set_new(t, "data_offsets", json_pack("[I,I]", (json_int_t)(at - len),
			                                                  (json_int_t)at));
			if (f32)
				json_object_set_new(t, "dtype", json_string("BF16"));
		}
		n = at;
		data = out;
	}
	if (edit)
		edit(hdr);
	char *h = json_dumps(hdr, JSON_COMPACT);
	json_decref(hdr);
	size_t nl = strlen(h);
	f = fopen(p, "wb");
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)nl >> (8 * i));
	int rc = !f || fwrite(len8, 1, 8, f) != 8 || fwrite(h, 1, nl, f) != nl ||
	         fwrite(data, 1, n, f) != n;
	if (f)
		fclose(f);
	free(h);
	free(buf);
	free(out);
	return rc ? -1 : 0;
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
	else
		printf("# %s: %s\n", what, err.msg);
}

/* One open_clip config setting clipd does not run: refused, named. */
static void refuse_cfg(const char *name, const char *path, json_t *value, const char *needle)
{
	char d[1024];
	copy_kit(name, 0, d, sizeof d);
	edit_cfg(d, path, value);
	expect_refused(d, needle, name);
}

static void t_refused_configs(void)
{
	refuse_cfg("timm", "model_cfg.vision_cfg.timm_model_name", json_string("vit_base_patch16_224"),
	           "model_cfg.vision_cfg.timm_model_name is \"vit_base_patch16_224\": a timm image tower");
	refuse_cfg("hftext", "model_cfg.text_cfg.hf_model_name", json_string("xlm-roberta-base"),
	           "model_cfg.text_cfg.hf_model_name is \"xlm-roberta-base\": a Hugging Face text tower");
	refuse_cfg("hftext-null", "model_cfg.text_cfg.hf_model_name", json_null(),
	           "text_cfg.hf_model_name");
	refuse_cfg("coca", "model_cfg.multimodal_cfg", json_pack("{s:i,s:i}", "width", 64, "layers", 2),
	           "model_cfg.multimodal_cfg is present: a CoCa model");
	refuse_cfg("customtext", "model_cfg.custom_text", json_true(), "model_cfg.custom_text");
	refuse_cfg("logitbias", "model_cfg.init_logit_bias", json_integer(-10), "init_logit_bias");
	refuse_cfg("ls", "model_cfg.vision_cfg.ls_init_value", json_real(1e-4),
	           "model_cfg.vision_cfg.ls_init_value is 0.0001: LayerScale");
	/* LayerScale exists with any value, 0 too (transformer.py: "is not None"). */
	refuse_cfg("ls0", "model_cfg.text_cfg.ls_init_value", json_integer(0),
	           "model_cfg.text_cfg.ls_init_value is 0: LayerScale");
	refuse_cfg("avgpool", "model_cfg.vision_cfg.pool_type", json_string("avg"),
	           "vision_cfg.pool_type is \"avg\"");
	refuse_cfg("attnpool", "model_cfg.vision_cfg.attentional_pool", json_true(), "attentional_pool");
	refuse_cfg("nolnpre", "model_cfg.vision_cfg.no_ln_pre", json_true(), "no_ln_pre");
	refuse_cfg("resnet", "model_cfg.vision_cfg.layers", json_pack("[i,i,i,i]", 3, 4, 6, 3),
	           "ModifiedResNet");
	refuse_cfg("qknorm", "model_cfg.text_cfg.qk_norm", json_true(), "text_cfg.qk_norm");
	refuse_cfg("eospool", "model_cfg.text_cfg.pool_type", json_string("eos"),
	           "text_cfg.pool_type is \"eos\"");
	refuse_cfg("bidir", "model_cfg.text_cfg.no_causal_mask", json_true(), "no_causal_mask");
	refuse_cfg("embedcls", "model_cfg.text_cfg.embed_cls", json_true(), "embed_cls");
	refuse_cfg("projbias", "model_cfg.text_cfg.proj_bias", json_true(), "proj_bias");
	refuse_cfg("modern", "model_cfg.text_cfg.text_arch", json_string("modern"), "text_arch");
	refuse_cfg("hftok", "model_cfg.text_cfg.hf_tokenizer_name", json_string("bert-base-uncased"),
	           "hf_tokenizer_name");
	refuse_cfg("clean", "model_cfg.text_cfg.tokenizer_kwargs",
	           json_pack("{s:s}", "clean", "canonicalize"), "tokenizer_kwargs.clean");
	refuse_cfg("actkw", "model_cfg.text_cfg.act_kwargs", json_pack("{s:s}", "approximate", "tanh"),
	           "act_kwargs");
	refuse_cfg("normkw", "model_cfg.vision_cfg.norm_kwargs", json_pack("{s:b}", "bias", 0),
	           "norm_kwargs.bias");
	refuse_cfg("unknown", "model_cfg.vision_cfg.frobnicate", json_true(),
	           "model_cfg.vision_cfg.frobnicate is not a setting");
	refuse_cfg("nearest", "preprocess_cfg.interpolation", json_string("nearest"),
	           "preprocess_cfg.interpolation is \"nearest\"");
	refuse_cfg("mode", "preprocess_cfg.mode", json_string("L"), "preprocess_cfg.mode is \"L\"");
	refuse_cfg("ppsize", "preprocess_cfg.size", json_integer(256), "preprocess_cfg.size 256");
	refuse_cfg("headwidth", "model_cfg.vision_cfg.head_width", json_integer(48), "head_width 48");
	refuse_cfg("noembed", "model_cfg.embed_dim", NULL, "embed_dim");
	/* A missing key takes open_clip's default, which this checkpoint
	 * does not match: the tensor says so. */
	refuse_cfg("defaultpatch", "model_cfg.vision_cfg.patch_size", NULL,
	           "visual.conv1.weight has shape [64,3,32,32], open_clip_config.json implies [64,3,16,16]");

	char d[1024], cmd[2400];
	copy_kit("badjson", 0, d, sizeof d);
	snprintf(cmd, sizeof cmd, "printf '{\"model_cfg\": ' > '%s/open_clip_config.json'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "open_clip_config.json", "truncated open_clip_config.json");

	copy_kit("nomodelcfg", 0, d, sizeof d);
	snprintf(cmd, sizeof cmd, "echo '{\"embed_dim\": 32}' > '%s/open_clip_config.json'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "no model_cfg", "config without model_cfg");
}

static float plane_diff(const float *a, const float *b)
{
	return max_diff(a, b, (size_t)3 * 224 * 224);
}

/* preprocess_cfg's resize_mode and interpolation reach the preprocessing:
 * 'squash' resizes straight to 224 x 224 (the same as the crop on a square
 * image, not on another), 'bilinear' is another filter; 'longest' (pad) is
 * refused. */
static void t_preprocess_modes(void)
{
	static float crop[2][3 * 224 * 224], squash[2][3 * 224 * 224], bil[3 * 224 * 224];
	static const char *const files[2] = {"astronaut.png", "chelsea.png"}; /* 512x512, 451x300 */
	char d[1024], img[1200];
	clip_model *m;
	clip_err err;
	copy_kit("squash", 0, d, sizeof d);
	edit_cfg(d, "preprocess_cfg.resize_mode", json_string("squash"));
	REQUIRE(clip_model_open(d, &m, &err) == CLIP_OK);
	for (int i = 0; i < 2; i++) {
		snprintf(img, sizeof img, "%s/images/%s", ref, files[i]);
		REQUIRE(clip_preprocess_file(oc, img, NULL, crop[i], NULL, NULL, NULL) == CLIP_OK);
		REQUIRE(clip_preprocess_file(m, img, NULL, squash[i], NULL, NULL, NULL) == CLIP_OK);
	}
	clip_model_close(m);
	CHECKF(plane_diff(crop[0], squash[0]) == 0, "square image: squash %g from crop",
	       plane_diff(crop[0], squash[0]));
	CHECKF(plane_diff(crop[1], squash[1]) > 0.1f, "451x300: squash %g from crop",
	       plane_diff(crop[1], squash[1]));

	copy_kit("bilinear", 0, d, sizeof d);
	edit_cfg(d, "preprocess_cfg.interpolation", json_string("bilinear"));
	REQUIRE(clip_model_open(d, &m, &err) == CLIP_OK);
	REQUIRE(clip_preprocess_file(m, img, NULL, bil, NULL, NULL, NULL) == CLIP_OK);
	clip_model_close(m);
	float bd = plane_diff(crop[1], bil);
	CHECKF(bd > 0.01f && bd < 1.0f, "bilinear vs bicubic: %g", bd);

	refuse_cfg("longest", "preprocess_cfg.resize_mode", json_string("longest"),
	           "preprocess_cfg.resize_mode is \"longest\": another resize mode");
}

/* Settings that do not change the computation at inference load, and the
 * embeddings stay the same; quick_gelu is read (false: GELU, other
 * numbers). */
static void t_accepted_configs(void)
{
	char d[1024];
	clip_model *m;
	clip_err err;
	copy_kit("accepted", 0, d, sizeof d);
	edit_cfg(d, "model_cfg.vision_cfg.patch_dropout", json_real(0.5));
	edit_cfg(d, "model_cfg.vision_cfg.output_tokens", json_true());
	edit_cfg(d, "model_cfg.vision_cfg.final_ln_after_pool", json_true());
	edit_cfg(d, "model_cfg.vision_cfg.pool_type", json_string("tok"));
	edit_cfg(d, "model_cfg.vision_cfg.ls_init_value", json_null());
	edit_cfg(d, "model_cfg.vision_cfg.norm_kwargs", json_pack("{s:f}", "eps", 1e-5));
	edit_cfg(d, "model_cfg.vision_cfg.image_size", json_pack("[i,i]", 224, 224));
	edit_cfg(d, "model_cfg.text_cfg.pool_type", json_string("argmax"));
	edit_cfg(d, "model_cfg.text_cfg.tokenizer_kwargs", json_pack("{s:s}", "clean", "lower"));
	edit_cfg(d, "model_cfg.custom_text", json_false());
	edit_cfg(d, "model_cfg.init_logit_scale", json_real(2.6592));
	edit_cfg(d, "preprocess_cfg.interpolation", json_string("bicubic"));
	edit_cfg(d, "preprocess_cfg.resize_mode", json_string("shortest"));
	edit_cfg(d, "preprocess_cfg.fill_color", json_integer(0));
	edit_cfg(d, "preprocess_cfg.some_future_key", json_true()); /* open_clip drops these too */
	int rc = clip_model_open(d, &m, &err);
	CHECKF(rc == CLIP_OK, "accepted settings: %s", err.msg);
	if (rc == CLIP_OK) {
		float *t1, *i1, *t2, *i2;
		size_t nt, ni;
		REQUIRE(encode_all(m, &t1, &i1, &nt, &ni) == 0);
		REQUIRE(encode_all(oc, &t2, &i2, &nt, &ni) == 0);
		CHECK(max_diff(t1, t2, nt * 32) == 0 && max_diff(i1, i2, ni * 32) == 0);
		free(t1);
		free(i1);
		free(t2);
		free(i2);
		clip_model_close(m);
	}

	/* quick_gelu absent: open_clip's default nn.GELU, a different model. */
	copy_kit("gelu", 0, d, sizeof d);
	edit_cfg(d, "model_cfg.quick_gelu", NULL);
	REQUIRE(clip_model_open(d, &m, &err) == CLIP_OK);
	float *t1, *i1, *t2, *i2;
	size_t nt, ni;
	REQUIRE(encode_all(m, &t1, &i1, &nt, &ni) == 0);
	REQUIRE(encode_all(oc, &t2, &i2, &nt, &ni) == 0);
	float dt = max_diff(t1, t2, nt * 32), di = max_diff(i1, i2, ni * 32);
	printf("# GELU instead of QuickGELU moves the embeddings by %.2e (texts), %.2e (images)\n", dt, di);
	CHECK(dt > 1e-2f && di > 1e-2f);
	free(t1);
	free(i1);
	free(t2);
	free(i2);
	clip_model_close(m);

	/* Other preprocessing mean/std are taken. */
	copy_kit("inception", 0, d, sizeof d);
	edit_cfg(d, "preprocess_cfg.mean", json_pack("[f,f,f]", 0.5, 0.5, 0.5));
	edit_cfg(d, "preprocess_cfg.std", json_pack("[f,f,f]", 0.5, 0.5, 0.5));
	REQUIRE(clip_model_open(d, &m, &err) == CLIP_OK);
	static float a[3 * 224 * 224], b[3 * 224 * 224];
	char img[1200];
	snprintf(img, sizeof img, "%s/images/page.png", ref);
	REQUIRE(clip_preprocess_file(m, img, NULL, a, NULL, NULL, NULL) == CLIP_OK);
	REQUIRE(clip_preprocess_file(oc, img, NULL, b, NULL, NULL, NULL) == CLIP_OK);
	/* x = (v - mean) / std, so v = a * 0.5 + 0.5 = b * std_openai + mean_openai */
	float worst = 0;
	for (int i = 0; i < 3 * 224 * 224; i++) {
		static const float om[3] = {0.48145466f, 0.4578275f, 0.40821073f};
		static const float os[3] = {0.26862954f, 0.26130258f, 0.27577711f};
		int c = i / (224 * 224);
		float e = fabsf((a[i] * 0.5f + 0.5f) - (b[i] * os[c] + om[c]));
		worst = e > worst ? e : worst;
	}
	CHECKF(worst < 1e-5f, "mean/std not applied: %g", worst);
	clip_model_close(m);
}

static void drop_in_proj(json_t *h)
{
	json_object_del(h, "transformer.resblocks.1.attn.in_proj_weight");
}

/* visual.proj in the Hugging Face orientation, [embed][width]. */
static void hf_shaped_proj(json_t *h)
{
	json_object_set_new(json_object_get(h, "visual.proj"), "shape", json_pack("[i,i]", 32, 64));
}

static void vector_logit_scale(json_t *h)
{
	json_object_set_new(json_object_get(h, "logit_scale"), "shape", json_pack("[i]", 1));
}

static void t_tensors(void)
{
	char d[1024];
	copy_kit("noinproj", 0, d, sizeof d);
	REQUIRE(rewrite_st(d, "open_clip_model.safetensors", drop_in_proj, 0) == 0);
	expect_refused(d, "open_clip_model.safetensors has no tensor "
	               "transformer.resblocks.1.attn.in_proj_weight", "missing tensor");

	copy_kit("projshape", 0, d, sizeof d);
	REQUIRE(rewrite_st(d, "open_clip_model.safetensors", hf_shaped_proj, 0) == 0);
	expect_refused(d, "tensor visual.proj has shape [32,64], open_clip_config.json implies [64,32]",
	               "wrong tensor shape");

	copy_kit("layers", 0, d, sizeof d);
	edit_cfg(d, "model_cfg.text_cfg.layers", json_integer(3));
	expect_refused(d, "transformer.resblocks.2.ln_1.weight", "more layers than tensors");

	copy_kit("vocab", 0, d, sizeof d);
	edit_cfg(d, "model_cfg.text_cfg.vocab_size", json_integer(49000));
	expect_refused(d, "token_embedding.weight has shape [49408,64]", "vocab_size");

	/* A side the patch does not divide: open_clip's grid is
	 * image_size // patch_size (230 // 32 = 7, the tensors' 50 positions),
	 * the last pixels left out. */
	clip_model *m;
	clip_err err;
	copy_kit("side230", 0, d, sizeof d);
	edit_cfg(d, "model_cfg.vision_cfg.image_size", json_integer(230));
	CHECKF(clip_model_open(d, &m, &err) == CLIP_OK, "image_size 230: %s", err.msg);
	if (m) {
		CHECK(clip_model_image_size(m) == 230);
		clip_model_close(m);
	}
	copy_kit("patchbig", 0, d, sizeof d);
	edit_cfg(d, "model_cfg.vision_cfg.image_size", json_integer(16));
	expect_refused(d, "patch_size 32 is larger than image_size 16", "patch larger than the image");

	/* nonscalar_logit_scale: a [1] logit_scale loads. */
	copy_kit("nonscalar", 0, d, sizeof d);
	edit_cfg(d, "model_cfg.nonscalar_logit_scale", json_true());
	REQUIRE(rewrite_st(d, "open_clip_model.safetensors", vector_logit_scale, 0) == 0);
	CHECKF(clip_model_open(d, &m, &err) == CLIP_OK, "nonscalar logit_scale: %s", err.msg);
	if (m) {
		CHECK(clip_model_logit_scale(m) == clip_model_logit_scale(oc));
		clip_model_close(m);
	}
}

/* BF16 checkpoints: the stacked in_proj and the transposed projections
 * go through the converted copies; both layouts give the same numbers. */
static void t_bf16_twins(void)
{
	char a[1024], b[1024];
	clip_model *ma, *mb;
	clip_err err;
	copy_kit("bf16-openclip", 0, a, sizeof a);
	copy_kit("bf16-hf", 1, b, sizeof b);
	REQUIRE(rewrite_st(a, "open_clip_model.safetensors", NULL, 1) == 0);
	REQUIRE(rewrite_st(b, "model.safetensors", NULL, 1) == 0);
	REQUIRE(clip_model_open(a, &ma, &err) == CLIP_OK);
	REQUIRE(clip_model_open(b, &mb, &err) == CLIP_OK);
	float *t1, *i1, *t2, *i2, *t3, *i3;
	size_t nt, ni;
	REQUIRE(encode_all(ma, &t1, &i1, &nt, &ni) == 0);
	REQUIRE(encode_all(mb, &t2, &i2, &nt, &ni) == 0);
	REQUIRE(encode_all(oc, &t3, &i3, &nt, &ni) == 0);
	float same = fmaxf(max_diff(t1, t2, nt * 32), max_diff(i1, i2, ni * 32));
	float vs32 = fmaxf(max_diff(t1, t3, nt * 32), max_diff(i1, i3, ni * 32));
	printf("# bf16 open_clip vs bf16 Hugging Face: %.2e; vs f32: %.2e\n", same, vs32);
	CHECK(same <= 1e-6f);
	CHECK(vs32 > 0 && vs32 < 0.5f); /* rounded weights: close, not equal */
	free(t1);
	free(i1);
	free(t2);
	free(i2);
	free(t3);
	free(i3);
	clip_model_close(ma);
	clip_model_close(mb);
}

/* The layout from the files present. */
static void t_layout_detection(void)
{
	char d[1024], cmd[8192];
	const char *c, *w;
	clip_err err;
	CHECK(clip_checkpoint_files(kit, &c, &w, &err) == CLIP_OK &&
	      strcmp(c, "open_clip_config.json") == 0 && strcmp(w, "open_clip_model.safetensors") == 0);
	CHECK(clip_checkpoint_files(hf, &c, &w, &err) == CLIP_OK && strcmp(c, "config.json") == 0 &&
	      strcmp(w, "model.safetensors") == 0);

	/* Only pickle checkpoints: refused, pointing at the safetensors file. */
	snprintf(d, sizeof d, "%s/pickle", tmp);
	snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/open_clip_config.json' '%s/vocab.json' "
	         "'%s/merges.txt' '%s/' && head -c 4096 /dev/zero > '%s/open_clip_pytorch_model.bin'",
	         d, kit, kit, kit, d, d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "only a pickle checkpoint (open_clip_pytorch_model.bin)", ".bin-only directory");
	expect_refused(d, "use the checkpoint's safetensors file", ".bin-only directory");
	snprintf(d, sizeof d, "%s/pickle-hf", tmp);
	snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/config.json' '%s/' && : > '%s/pytorch_model.bin'",
	         d, hf, d, d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "only a pickle checkpoint (pytorch_model.bin)", "pytorch_model.bin only");

	/* Neither layout: the message lists both pairs. */
	snprintf(d, sizeof d, "%s/empty", tmp);
	snprintf(cmd, sizeof cmd, "mkdir -p '%s'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "looked for config.json + model.safetensors (Hugging Face) and "
	               "open_clip_config.json + open_clip_model.safetensors (open_clip)", "empty directory");
	CHECK(clip_checkpoint_files(d, &c, &w, &err) == CLIP_EMODEL && c == NULL && w == NULL);
	copy_kit("noweights", 0, d, sizeof d);
	snprintf(cmd, sizeof cmd, "rm '%s/open_clip_model.safetensors'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "open_clip_model.safetensors (open_clip)", "config without weights");
	copy_kit("noconfig", 0, d, sizeof d);
	snprintf(cmd, sizeof cmd, "rm '%s/open_clip_config.json'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "looked for", "weights without config");
	expect_refused("/nonexistent/model", "/nonexistent/model", "no such directory");

	/* Both layouts present (as on many hub repositories): the Hugging
	 * Face pair is read, even when open_clip's config would be refused. */
	copy_kit("both", 1, d, sizeof d);
	snprintf(cmd, sizeof cmd, "cp '%s/open_clip_config.json' '%s/open_clip_model.safetensors' '%s/'",
	         kit, kit, d);
	REQUIRE(run(cmd) == 0);
	edit_cfg(d, "model_cfg.vision_cfg.timm_model_name", json_string("vit_base_patch16_224"));
	clip_model *m;
	CHECKF(clip_model_open(d, &m, &err) == CLIP_OK, "both layouts: %s", err.msg);
	clip_model_close(m);
	CHECK(clip_checkpoint_files(d, &c, &w, &err) == CLIP_OK && strcmp(w, "model.safetensors") == 0);

	/* The tokenizer files are required, and named. */
	copy_kit("novocab", 0, d, sizeof d);
	snprintf(cmd, sizeof cmd, "rm '%s/vocab.json'", d);
	REQUIRE(run(cmd) == 0);
	expect_refused(d, "an open_clip checkpoint without vocab.json and merges.txt: copy CLIP's "
	               "BPE tokenizer files beside it", "no tokenizer files");
}

int main(void)
{
	expected = ref_kit_open("tiny-clip-a-openclip", "test_openclip", ref, sizeof ref, kit,
	                        sizeof kit, tmp, sizeof tmp);
	if (!expected)
		return 1;
	snprintf(hf, sizeof hf, "%s/tiny-clip-a", ref);
	clip_err err = {0};
	if (clip_model_open(kit, &oc, &err) != CLIP_OK || clip_model_open(hf, &hfm, &err) != CLIP_OK) {
		printf("not ok 1 - reference kits at %s: %s\n1..1\n", ref, err.msg);
		return 1;
	}
	char p[1200];
	TAP_RUN(t_expected_embeddings);
	TAP_RUN(t_packed_precision);
	TAP_RUN(t_refused_configs);
	TAP_RUN(t_accepted_configs);
	TAP_RUN(t_preprocess_modes);
	TAP_RUN(t_tensors);
	TAP_RUN(t_bf16_twins);
	TAP_RUN(t_layout_detection);
	clip_model_close(oc);
	clip_model_close(hfm);
	json_decref(expected);
	snprintf(p, sizeof p, "rm -rf '%s'", tmp);
	if (system(p) != 0)
		printf("# could not remove %s\n", tmp);
	return tap_done();
}
