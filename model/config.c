/*
 * config.c: config.json and preprocessor_config.json of a Hugging Face
 * checkpoint, CLIP (model_type "clip") or SigLIP ("siglip", which the
 * fixed-resolution SigLIP2 checkpoints use too). Missing fields take the
 * defaults of transformers' CLIPConfig (CLIPTextConfig, CLIPVisionConfig) or
 * SiglipConfig (v4.44.2: SiglipTextConfig, SiglipVisionConfig), as the hub's
 * checkpoints rely on them (the SigLIP ones list only a few keys); present
 * fields are checked for type and range.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "clip_int.h"
#include "preprocess_int.h"
#include "resample_int.h"

/* Reads an optional positive integer field; 0 on success. */
static int get_int(json_t *o, const char *tower, const char *key, int *v, int min, int max,
                   clip_err *err)
{
	json_t *j = json_object_get(o, key);
	if (!j || json_is_null(j))
		return CLIP_OK;
	if (!json_is_integer(j) || json_integer_value(j) < min || json_integer_value(j) > max)
		return clip_fail(err, CLIP_EMODEL, "config.json: %s%s must be an integer in %d..%d",
		                 tower, key, min, max);
	*v = (int)json_integer_value(j);
	return CLIP_OK;
}

static int get_tower(json_t *o, const char *tower, clip_tower_cfg *t, clip_err *err)
{
	int rc;
	if (o && !json_is_object(o))
		return clip_fail(err, CLIP_EMODEL, "config.json: %s is not an object", tower);
	if ((rc = get_int(o, tower, "hidden_size", &t->hidden, 1, 1 << 16, err)) ||
	    (rc = get_int(o, tower, "intermediate_size", &t->intermediate, 1, 1 << 18, err)) ||
	    (rc = get_int(o, tower, "num_attention_heads", &t->heads, 1, 1024, err)) ||
	    (rc = get_int(o, tower, "num_hidden_layers", &t->layers, 1, 1024, err)) ||
	    (rc = get_int(o, tower, "image_size", &t->image_size, 1, 8192, err)) ||
	    (rc = get_int(o, tower, "patch_size", &t->patch_size, 1, 1024, err)) ||
	    (rc = get_int(o, tower, "num_channels", &t->channels, 3, 3, err)) ||
	    (rc = get_int(o, tower, "max_position_embeddings", &t->positions, 2, 1 << 16, err)) ||
	    (rc = get_int(o, tower, "vocab_size", &t->vocab, 2, 1 << 24, err)) ||
	    (rc = get_int(o, tower, "eos_token_id", &t->eos_token_id, 0, 1 << 24, err)) ||
	    (rc = get_int(o, tower, "type_vocab_size", &t->type_vocab, 1, 1024, err)))
		return rc;
	json_t *act = json_object_get(o, "hidden_act");
	if (act) {
		const char *a = json_string_value(act);
		if (a && strcmp(a, "quick_gelu") == 0)
			t->act = CLIP_QUICK_GELU;
		else if (a && strcmp(a, "gelu") == 0)
			t->act = CLIP_GELU;
		else if (a && (strcmp(a, "gelu_pytorch_tanh") == 0 || strcmp(a, "gelu_new") == 0))
			t->act = CLIP_GELU_TANH; /* both are the tanh approximation in transformers */
		else
			return clip_fail(err, CLIP_EMODEL,
			                 "config.json: %shidden_act must be \"quick_gelu\", \"gelu\" or "
			                 "\"gelu_pytorch_tanh\"", tower);
	}
	json_t *eps = json_object_get(o, "layer_norm_eps");
	if (eps) {
		/* Checked as the float it becomes: 1e-50 is > 0 as a double but
		 * 0 as a float, and LayerNorm would divide by zero. */
		if (!json_is_number(eps) || !((float)json_number_value(eps) > 0) ||
		    json_number_value(eps) > 1)
			return clip_fail(err, CLIP_EMODEL, "config.json: %slayer_norm_eps must be in (0, 1]",
			                 tower);
		t->eps = (float)json_number_value(eps);
	}
	if (t->hidden % t->heads != 0)
		return clip_fail(err, CLIP_EMODEL,
		                 "config.json: %shidden_size %d is not a multiple of num_attention_heads %d",
		                 tower, t->hidden, t->heads);
	return CLIP_OK;
}

static int get_floats3(json_t *o, const char *key, float out[3], clip_err *err)
{
	json_t *a = json_object_get(o, key);
	if (!a)
		return CLIP_OK;
	if (!json_is_array(a) || json_array_size(a) != 3)
		return clip_fail(err, CLIP_EMODEL, "preprocessor_config.json: %s must be 3 numbers", key);
	for (size_t i = 0; i < 3; i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_number(v))
			return clip_fail(err, CLIP_EMODEL, "preprocessor_config.json: %s must be 3 numbers",
			                 key);
		out[i] = (float)json_number_value(v);
	}
	return CLIP_OK;
}

static int load_pp(const char *path, clip_cfg *c, clip_err *err)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, 0, &jerr);
	int rc = CLIP_OK;
	if (!json_is_object(root)) {
		rc = clip_fail(err, CLIP_EMODEL, "preprocessor_config.json: not a JSON object (%s, line %d)",
		               jerr.text, jerr.line);
		goto out;
	}
	if ((rc = get_floats3(root, "image_mean", c->mean, err)) ||
	    (rc = get_floats3(root, "image_std", c->std, err)))
		goto out;
	for (int i = 0; i < 3; i++)
		if (!(c->std[i] > 0)) {
			rc = clip_fail(err, CLIP_EMODEL, "preprocessor_config.json: image_std must be > 0");
			goto out;
		}
	json_t *rs = json_object_get(root, "resample");
	if (rs && !json_is_null(rs)) {
		/* PIL's numbers: 2 BILINEAR, 3 BICUBIC; nearest, Lanczos, box and
		 * Hamming are not reproduced. */
		if (!json_is_integer(rs) || (json_integer_value(rs) != 2 && json_integer_value(rs) != 3)) {
			rc = clip_fail(err, CLIP_EMODEL, "preprocessor_config.json: resample must be 2 "
			               "(bilinear) or 3 (bicubic); other filters are not supported");
			goto out;
		}
		c->filter = (int)json_integer_value(rs);
	}
	json_t *dr = json_object_get(root, "do_resize"), *dsc = json_object_get(root, "do_rescale");
	if (json_is_false(dr) || json_is_false(dsc)) {
		rc = clip_fail(err, CLIP_EMODEL, "preprocessor_config.json: do_resize and do_rescale "
		               "false are not supported");
		goto out;
	}
	json_t *rf = json_object_get(root, "rescale_factor");
	if (rf && !(json_is_number(rf) && fabs(json_number_value(rf) * 255.0 - 1.0) < 1e-6)) {
		rc = clip_fail(err, CLIP_EMODEL, "preprocessor_config.json: rescale_factor must be 1/255");
		goto out;
	}
	if (json_is_false(json_object_get(root, "do_normalize"))) {
		for (int i = 0; i < 3; i++)
			c->mean[i] = 0.0f, c->std[i] = 1.0f;
	}
	/* ChineseCLIPImageProcessor with do_center_crop false (the hub's
	 * file) resizes straight to size x size. */
	if (c->text_bert && json_is_false(json_object_get(root, "do_center_crop")))
		c->fit = IMG_FIT_SQUASH;
	/* The side the processor produces: crop_size for CLIP (after the
	 * shortest-side resize), size for SigLIP (a straight resize). */
	const char *key = c->fit == IMG_FIT_SQUASH ? "size" : "crop_size";
	json_t *crop = json_object_get(root, key);
	json_t *h = json_is_object(crop) ? json_object_get(crop, "height") : crop;
	json_t *w = json_is_object(crop) ? json_object_get(crop, "width") : crop;
	if ((h && json_is_integer(h) && json_integer_value(h) != c->crop) ||
	    (w && json_is_integer(w) && json_integer_value(w) != c->crop)) {
		rc = clip_fail(err, CLIP_EMODEL,
		               "preprocessor_config.json: %s %lldx%lld differs from the model's image_size %d",
		               key, w && json_is_integer(w) ? (long long)json_integer_value(w) : 0LL,
		               h && json_is_integer(h) ? (long long)json_integer_value(h) : 0LL, c->crop);
		goto out;
	}
out:
	json_decref(root);
	return rc;
}

/* SiglipTextConfig / SiglipVisionConfig defaults, transformers v4.44.2. */
static const clip_tower_cfg siglip_vdef = {
	.hidden = 768, .intermediate = 3072, .heads = 12, .layers = 12, .act = CLIP_GELU_TANH,
	.eps = 1e-6f, .image_size = 224, .patch_size = 16, .channels = 3,
};
static const clip_tower_cfg siglip_tdef = {
	.hidden = 768, .intermediate = 3072, .heads = 12, .layers = 12, .act = CLIP_GELU_TANH,
	.eps = 1e-6f, .positions = 64, .vocab = 32000, .eos_token_id = 1,
};

static int load_siglip(json_t *root, clip_cfg *c, clip_err *err)
{
	int rc;
	c->family = CLIP_FAMILY_SIGLIP;
	c->vision = siglip_vdef;
	c->text = siglip_tdef;
	/* IMAGENET_STANDARD_MEAN / _STD, SiglipImageProcessor's defaults. */
	for (int i = 0; i < 3; i++)
		c->mean[i] = c->std[i] = 0.5f;
	c->fit = IMG_FIT_SQUASH;
	c->filter = IMG_BICUBIC;
	c->alpha_dropped = 1;
	json_t *vc = json_object_get(root, "vision_config"), *tc = json_object_get(root, "text_config");
	if ((rc = get_tower(vc, "vision_config.", &c->vision, err)) ||
	    (rc = get_tower(tc, "text_config.", &c->text, err)))
		return rc;
	/* The text head is Linear(hidden, projection_size) (v4.49+; before,
	 * Linear(hidden, hidden)); the image embedding is the vision width. */
	c->projection = c->text.hidden;
	if ((rc = get_int(tc, "text_config.", "projection_size", &c->projection, 1, 1 << 16, err)))
		return rc;
	if (c->projection != c->vision.hidden)
		return clip_fail(err, CLIP_EMODEL, "config.json: the text head's output (%d) differs from "
		                 "the vision width (%d): the two embeddings would not share a space",
		                 c->projection, c->vision.hidden);
	if (c->vision.patch_size > c->vision.image_size)
		return clip_fail(err, CLIP_EMODEL, "config.json: vision_config.patch_size %d is larger "
		                 "than image_size %d", c->vision.patch_size, c->vision.image_size);
	/* A valid convolution: a side that patch_size does not divide leaves
	 * its last pixels out (so400m-patch14-384: 27 patches of 14 = 378). */
	int grid = c->vision.image_size / c->vision.patch_size;
	c->vision.positions = grid * grid;
	return CLIP_OK;
}

/* ChineseCLIPConfig v4.44.2: a CLIP ViT image tower and a BERT text tower
 * (ChineseCLIPTextConfig defaults: vocab 30522, width 768, 12 layers and
 * heads, MLP 3072, exact GELU, 512 positions, 2 token types, eps 1e-12;
 * vision: patch 32, quick_gelu, eps 1e-5). Chinese-CLIP's own context is
 * 52 tokens ([CLS], 50 pieces, [SEP]: cn_clip.clip.tokenize's default; the
 * hub repository has no tokenizer config to say otherwise). The text
 * config's BERT leftovers (pooler_*, bos/eos ids, directionality) are
 * ignored: the model has no pooler. */
#define CNCLIP_CONTEXT 52

static int load_chinese(json_t *root, clip_cfg *c, clip_err *err)
{
	static const clip_tower_cfg tdef = {
		.hidden = 768, .intermediate = 3072, .heads = 12, .layers = 12, .act = CLIP_GELU,
		.eps = 1e-12f, .positions = 512, .vocab = 30522, .type_vocab = 2,
	};
	int rc;
	c->text = tdef;
	c->text_bert = 1;
	json_t *vc = json_object_get(root, "vision_config"), *tc = json_object_get(root, "text_config");
	if ((rc = get_tower(vc, "vision_config.", &c->vision, err)) ||
	    (rc = get_tower(tc, "text_config.", &c->text, err)) ||
	    (rc = get_int(root, "", "projection_dim", &c->projection, 1, 1 << 16, err)))
		return rc;
	const char *pe = json_string_value(json_object_get(tc, "position_embedding_type"));
	if (pe && strcmp(pe, "absolute") != 0)
		return clip_fail(err, CLIP_EMODEL, "config.json: text_config.position_embedding_type "
		                 "\"%s\" is not supported (only \"absolute\")", pe);
	if (c->text.positions < CNCLIP_CONTEXT)
		return clip_fail(err, CLIP_EMODEL, "config.json: text_config.max_position_embeddings %d "
		                 "is below Chinese-CLIP's context of %d", c->text.positions, CNCLIP_CONTEXT);
	c->text.pos_rows = c->text.positions;
	c->text.positions = CNCLIP_CONTEXT;
	/* The image processor resizes straight to size x size unless it says
	 * do_center_crop (load_pp); convert("RGB") drops alpha first. */
	c->alpha_dropped = 1;
	return CLIP_OK;
}

int clip_cfg_load(const char *config_path, const char *pp_path, clip_cfg *c, clip_err *err)
{
	json_error_t jerr;
	int rc;
	static const clip_tower_cfg vdef = {
		.hidden = 768, .intermediate = 3072, .heads = 12, .layers = 12, .act = CLIP_QUICK_GELU,
		.eps = 1e-5f, .image_size = 224, .patch_size = 32, .channels = 3,
	};
	static const clip_tower_cfg tdef = {
		.hidden = 512, .intermediate = 2048, .heads = 8, .layers = 12, .act = CLIP_QUICK_GELU,
		.eps = 1e-5f, .positions = 77, .vocab = 49408, .eos_token_id = 2,
	};
	memset(c, 0, sizeof *c);
	c->vision = vdef;
	c->text = tdef;
	c->projection = 512;
	c->fit = IMG_FIT_CROP;
	c->filter = IMG_BICUBIC;
	/* OpenAI's normalisation, which CLIPImageProcessor also defaults to. */
	const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
	const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	memcpy(c->mean, mean, sizeof mean);
	memcpy(c->std, std, sizeof std);

	json_t *root = json_load_file(config_path, 0, &jerr);
	if (!root)
		return clip_fail(err, CLIP_EMODEL,
		                 "config.json: %s (line %d)", jerr.text, jerr.line);
	if (!json_is_object(root)) {
		rc = clip_fail(err, CLIP_EMODEL, "config.json is not a JSON object");
		goto out;
	}
	const char *mt = json_string_value(json_object_get(root, "model_type"));
	if (mt && strcmp(mt, "siglip2") == 0) {
		rc = clip_fail(err, CLIP_EMODEL, "config.json: model_type \"siglip2\" is a NaFlex "
		               "(variable-resolution) SigLIP2 checkpoint, which clipd does not run yet; "
		               "use a fixed-resolution one (model_type \"siglip\", e.g. "
		               "google/siglip2-base-patch16-256)");
		goto out;
	}
	if (mt && strcmp(mt, "siglip") == 0) {
		if ((rc = load_siglip(root, c, err)))
			goto out;
		goto loaded;
	}
	int chinese = mt && strcmp(mt, "chinese_clip") == 0;
	if (!chinese && (!mt || strcmp(mt, "clip") != 0)) {
		rc = clip_fail(err, CLIP_EMODEL, "config.json: model_type is \"%s\"; clipd runs "
		               "\"clip\", \"siglip\" and \"chinese_clip\" checkpoints",
		               mt ? mt : "(missing)");
		goto out;
	}
	json_t *vc = json_object_get(root, "vision_config"), *tc = json_object_get(root, "text_config");
	if (chinese) {
		if ((rc = load_chinese(root, c, err)))
			goto out;
	} else if (!vc || !tc) {
		rc = clip_fail(err, CLIP_EMODEL, "config.json: vision_config and text_config are required");
		goto out;
	} else if ((rc = get_tower(vc, "vision_config.", &c->vision, err)) ||
	           (rc = get_tower(tc, "text_config.", &c->text, err)) ||
	           (rc = get_int(root, "", "projection_dim", &c->projection, 1, 1 << 16, err))) {
		goto out;
	}
	if (c->vision.image_size % c->vision.patch_size != 0) {
		rc = clip_fail(err, CLIP_EMODEL,
		               "config.json: vision_config.image_size %d is not a multiple of patch_size %d",
		               c->vision.image_size, c->vision.patch_size);
		goto out;
	}
	int grid = c->vision.image_size / c->vision.patch_size;
	c->vision.positions = grid * grid + 1;
loaded:
	c->crop = c->vision.image_size;
	if (pp_path && access(pp_path, F_OK) == 0)
		rc = load_pp(pp_path, c, err);
out:
	json_decref(root);
	return rc;
}
