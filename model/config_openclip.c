/*
 * config_openclip.c: open_clip_config.json, the configuration open_clip
 * writes beside open_clip_model.safetensors (push_to_hf_hub.py,
 * save_config_for_hf: {"model_cfg": ..., "preprocess_cfg": {"mean", "std",
 * and "interpolation" / "resize_mode" when set}}), read into the same
 * clip_cfg as a Hugging Face config.json.
 *
 * open_clip builds its model from model_cfg with CLIP(**model_cfg), the
 * towers with CLIPVisionCfg(**vision_cfg) and CLIPTextCfg(**text_cfg), so
 * a missing key takes the dataclass default and an unknown key is an error
 * there too. Here every key is in one of the tables below: used (parsed
 * into clip_cfg), ignored (no effect on an embedding at inference, the
 * reason beside it), or one that must stay at open_clip's default because
 * it selects something clipd does not run (LayerScale, a timm or Hugging
 * Face tower, CoCa, another pooling ...): such a config is refused, the
 * message naming the key. Any other key is refused as unknown, so a
 * setting open_clip adds later is never silently run as plain CLIP.
 *
 * Source read: github.com/mlfoundations/open_clip at commit
 * 89fb801f1e6087880e951fc8354b8a2077b79c6d (after v3.3.0), and the keys
 * v2.20.0 (a09d519f, the reference kit's version) had and later renamed.
 * "model.py:38" below means src/open_clip/model.py line 38 at that commit.
 *
 * Errors: CLIP_EMODEL naming the file and key; CLIP_EIO is not used
 * (a missing file is reported by json_load_file as CLIP_EMODEL, as
 * config.c does).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_int.h"
#include "preprocess_int.h"
#include "resample_int.h"

#define OC_FILE "open_clip_config.json"

typedef enum oc_rule {
	OC_USED,    /* parsed below */
	OC_IGNORED, /* no effect at inference: the comment beside it says why */
	OC_ABSENT,  /* refused when present at all, even null: open_clip tests "key in cfg" */
	OC_NULL,    /* absent or null ("is not None" in open_clip) */
	OC_OFF,     /* absent, null, false, 0, "", {} or [] (falsy in Python) */
	OC_ONE_OF,  /* absent, null, or one of the '|'-separated strings in want */
} oc_rule;

typedef struct oc_key {
	const char *key;
	oc_rule rule;
	const char *want;  /* OC_ONE_OF: the values accepted */
	const char *what;  /* OC_OFF, OC_ONE_OF: what the key selects, for the message */
} oc_key;

/* model_cfg: the arguments of CLIP.__init__ (model.py:318-331) and the keys
 * factory.py:497-535 reads to pick another model class. */
static const oc_key top_keys[] = {
	{"embed_dim", OC_USED, NULL, NULL},
	{"vision_cfg", OC_USED, NULL, NULL},
	{"text_cfg", OC_USED, NULL, NULL},
	{"quick_gelu", OC_USED, NULL, NULL},
	/* logit_scale of shape [1] (model.py:362): load_openclip.c takes []
	 * or [1], the same number. */
	{"nonscalar_logit_scale", OC_IGNORED, NULL, NULL},
	/* An initial value: the checkpoint's logit_scale tensor replaces it. */
	{"init_logit_scale", OC_IGNORED, NULL, NULL},
	/* Only the container of forward()'s result (model.py:318). */
	{"output_dict", OC_IGNORED, NULL, NULL},
	/* factory.py:522-535: CustomTextCLIP, its text tower under "text.*" */
	{"custom_text", OC_OFF, NULL, "a custom text tower (CustomTextCLIP)"},
	/* model.py:364: a learned bias added to the logits (SigLIP-style) */
	{"init_logit_bias", OC_NULL, NULL, "a logit bias (SigLIP-style sigmoid logits)"},
	/* factory.py:530: CoCa, a captioning decoder and attentional pooling */
	{"multimodal_cfg", OC_ABSENT, NULL, "a CoCa model (multimodal text decoder)"},
	/* factory.py:448, 511-519: audio (CLAP) and NaFlex generative models */
	{"audio_cfg", OC_ABSENT, NULL, "an audio tower (CLAP)"},
	{"audio_naflex_cfg", OC_ABSENT, NULL, "an audio tower (GenLAP)"},
	{"genlip_cfg", OC_ABSENT, NULL, "a generative NaFlex model (GenLIP)"},
	{"genlap_cfg", OC_ABSENT, NULL, "a generative NaFlex audio model (GenLAP)"},
	{NULL, 0, NULL, NULL},
};

/* The custom attention block's switches, both towers (model.py:62-67 and
 * 114-119; transformer.py:500-504 picks CustomResidualAttentionBlock when
 * any is set). */
#define OC_CUSTOM_BLOCK \
	{"block_type", OC_ONE_OF, "default", "a custom attention block"}, \
	{"qk_norm", OC_OFF, NULL, "LayerNorm on q and k"}, \
	{"scaled_cosine_attn", OC_OFF, NULL, "scaled cosine attention"}, \
	{"scale_heads", OC_OFF, NULL, "per-head attention scales"}, \
	{"scale_attn_inner", OC_OFF, NULL, "a LayerNorm inside attention"}, \
	{"scale_attn", OC_OFF, NULL, "a LayerNorm after attention"}, \
	{"scale_fc", OC_OFF, NULL, "a LayerNorm inside the MLP"}

/* vision_cfg: CLIPVisionCfg (model.py:38-76), as _build_vision_tower
 * (model.py:171-248) and VisionTransformer (transformer.py:592-930) use it. */
static const oc_key vision_keys[] = {
	{"layers", OC_USED, NULL, NULL},  /* a list is a ModifiedResNet: refused below */
	{"width", OC_USED, NULL, NULL},
	{"head_width", OC_USED, NULL, NULL},
	{"mlp_ratio", OC_USED, NULL, NULL},
	{"patch_size", OC_USED, NULL, NULL},
	{"image_size", OC_USED, NULL, NULL},
	{"norm_kwargs", OC_USED, NULL, NULL}, /* {"eps": x} only, below */
	/* transformer.py:32: PatchDropout.forward returns x unchanged when
	 * not training. */
	{"patch_dropout", OC_IGNORED, NULL, NULL},
	/* transformer.py:925: adds the token sequence to forward()'s result;
	 * the pooled embedding is the same. */
	{"output_tokens", OC_IGNORED, NULL, NULL},
	/* model.py:245: an attribute for NaFlex sequence caps; unused by
	 * VisionTransformer's forward. */
	{"image_seq_len", OC_IGNORED, NULL, NULL},
	/* Only read with attentional_pool, which is refused (transformer.py:678). */
	{"attn_pooler_queries", OC_IGNORED, NULL, NULL},
	{"attn_pooler_heads", OC_IGNORED, NULL, NULL},
	{"n_queries", OC_IGNORED, NULL, NULL},  /* v2.20.0's name of attn_pooler_queries */
	/* Only read with timm_model_name, which is refused (model.py:185-198). */
	{"timm_model_pretrained", OC_IGNORED, NULL, NULL},
	{"timm_pool", OC_IGNORED, NULL, NULL},
	{"timm_proj", OC_IGNORED, NULL, NULL},
	{"timm_proj_bias", OC_IGNORED, NULL, NULL},
	{"timm_drop", OC_IGNORED, NULL, NULL},
	{"timm_drop_path", OC_IGNORED, NULL, NULL},
	{"timm_model_kwargs", OC_IGNORED, NULL, NULL},
	/* model.py:185: a timm image tower */
	{"timm_model_name", OC_OFF, NULL, "a timm image tower"},
	/* transformer.py:289, 300: LayerScale on both residual branches */
	{"ls_init_value", OC_NULL, NULL, "LayerScale"},
	/* transformer.py:678-711, 810-823: an attentional pooler */
	{"attentional_pool", OC_OFF, NULL, "an attentional pooler"},
	/* transformer.py:660: no LayerNorm before the transformer */
	{"no_ln_pre", OC_OFF, NULL, "a vision tower without ln_pre"},
	/* transformer.py:783-790: 'avg' averages the patch tokens, 'none'
	 * keeps them all; clipd pools the class token. */
	{"pool_type", OC_ONE_OF, "tok", "another pooling"},
	/* transformer.py:643-653: 'sin_cos_2d' is fixed, but stored in the
	 * state dict as visual.positional_embedding like a learned one, so the
	 * forward pass is the same. */
	{"pos_embed_type", OC_ONE_OF, "learnable|sin_cos_2d", "another position embedding"},
	/* transformer.py:826-828: LayerNorm after pooling. It acts on each
	 * token alone, so with pool_type 'tok' (the only pooling accepted)
	 * ln_post(x)[:, 0] == ln_post(x[:, 0]): the same computation. */
	{"final_ln_after_pool", OC_IGNORED, NULL, NULL},
	/* model.py:213: arguments to the activation (e.g. approximate='tanh') */
	{"act_kwargs", OC_OFF, NULL, "a modified activation"},
	/* v2.20.0 (model.py CLIPVisionCfg): a LayerNorm on each input patch,
	 * and average pooling (now pool_type 'avg'). */
	{"input_patchnorm", OC_OFF, NULL, "a LayerNorm on the input patches"},
	{"global_average_pool", OC_OFF, NULL, "average pooling"},
	OC_CUSTOM_BLOCK,
	{NULL, 0, NULL, NULL},
};

/* text_cfg: CLIPTextCfg (model.py:80-150), as _build_text_tower
 * (model.py:251-315), TextTransformer (transformer.py:1578-) and CLIP's own
 * _encode_text (model.py:396-411) use it; the tokenizer keys as
 * factory.py's get_tokenizer reads them (factory.py:829-884). */
static const oc_key text_keys[] = {
	{"context_length", OC_USED, NULL, NULL},
	{"vocab_size", OC_USED, NULL, NULL},
	{"width", OC_USED, NULL, NULL},
	{"heads", OC_USED, NULL, NULL},
	{"layers", OC_USED, NULL, NULL},
	{"mlp_ratio", OC_USED, NULL, NULL},
	{"norm_kwargs", OC_USED, NULL, NULL},
	{"tokenizer_kwargs", OC_USED, NULL, NULL}, /* {"clean": "lower"} only, below */
	/* Only the result container (transformer.py TextTransformer.forward);
	 * CLIP._encode_text does not read it. */
	{"output_tokens", OC_IGNORED, NULL, NULL},
	/* pad_id: the padding mask, off unless no_causal_mask (refused);
	 * eos_id: only pool_type 'eos' (refused); bos_id: tokenizers other
	 * than SimpleTokenizer (transformer.py:1621, 937-955). */
	{"pad_id", OC_IGNORED, NULL, NULL},
	{"eos_id", OC_IGNORED, NULL, NULL},
	{"bos_id", OC_IGNORED, NULL, NULL},
	/* Not passed to TextTransformer by _build_text_tower (model.py:287-313);
	 * and LayerNorm per token commutes with pooling one token anyway. */
	{"final_ln_after_pool", OC_IGNORED, NULL, NULL},
	/* Only with hf_model_name or hf_tokenizer_name (refused). */
	{"hf_model_pretrained", OC_IGNORED, NULL, NULL},
	{"hf_proj_type", OC_IGNORED, NULL, NULL},
	{"hf_pooler_type", OC_IGNORED, NULL, NULL},
	{"hf_model_config", OC_IGNORED, NULL, NULL},
	{"proj", OC_IGNORED, NULL, NULL},        /* v2.20.0's hf_proj_type */
	{"pooler_type", OC_IGNORED, NULL, NULL}, /* v2.20.0's hf_pooler_type */
	{"tokenizer_mode", OC_IGNORED, NULL, NULL},
	/* Only with tokenizer_type 'tiktoken' (refused). */
	{"tiktoken_name", OC_IGNORED, NULL, NULL},
	/* Only read by ModernTextTransformer (text_arch 'modern', refused):
	 * model.py:121-143. */
	{"attention_mode", OC_IGNORED, NULL, NULL},
	{"pos_embed", OC_IGNORED, NULL, NULL},
	{"rope_temperature", OC_IGNORED, NULL, NULL},
	{"mlp_type", OC_IGNORED, NULL, NULL},
	{"norm_type", OC_IGNORED, NULL, NULL},
	{"norm_eps", OC_IGNORED, NULL, NULL},
	{"attn_gated", OC_IGNORED, NULL, NULL},
	{"pre_norm", OC_IGNORED, NULL, NULL},
	{"norm_placement", OC_IGNORED, NULL, NULL},
	{"zero_init_residual", OC_IGNORED, NULL, NULL},
	{"reg_tokens", OC_IGNORED, NULL, NULL},
	{"value_residual", OC_IGNORED, NULL, NULL},
	{"attention_bias", OC_IGNORED, NULL, NULL},
	{"mlp_bias", OC_IGNORED, NULL, NULL},
	{"gate_bias", OC_IGNORED, NULL, NULL},
	/* model.py:265-268: another text tower */
	{"text_arch", OC_ONE_OF, "clip", "another text tower (ModernTextTransformer)"},
	/* factory.py:498, 526-534: present at all (even null), it makes the
	 * model a CustomTextCLIP, its text weights under "text.*" */
	{"hf_model_name", OC_ABSENT, NULL, "a Hugging Face text tower (CustomTextCLIP)"},
	/* model.py:343: variable-length text, CustomTextCLIP only */
	{"variable_text", OC_OFF, NULL, "variable-length text"},
	/* factory.py:833-865: a tokenizer other than CLIP's BPE */
	{"hf_tokenizer_name", OC_OFF, NULL, "a Hugging Face tokenizer"},
	{"tokenizer_type", OC_OFF, NULL, "another tokenizer"},
	/* transformer.py:289, 300 */
	{"ls_init_value", OC_NULL, NULL, "LayerScale"},
	/* transformer.py:1625-1630, 1754-1758: a class token appended */
	{"embed_cls", OC_OFF, NULL, "a text class token (CoCa)"},
	/* transformer.py:1649: bidirectional attention */
	{"no_causal_mask", OC_OFF, NULL, "bidirectional text attention"},
	/* transformer.py:931-955: text_global_pool; clipd pools at the
	 * argmax of the token ids (the <|endoftext|>). */
	{"pool_type", OC_ONE_OF, "argmax", "another text pooling"},
	/* transformer.py:1654-1660: no projection, or one with a bias */
	{"proj_type", OC_ONE_OF, "linear", "another text projection"},
	{"proj_bias", OC_OFF, NULL, "a text projection with a bias"},
	{"act_kwargs", OC_OFF, NULL, "a modified activation"},
	OC_CUSTOM_BLOCK,
	{NULL, 0, NULL, NULL},
};

/* preprocess_cfg: PreprocessCfg (transform.py:17-26). open_clip drops keys
 * that are not PreprocessCfg fields (merge_preprocess_dict,
 * transform.py:41-55), so unknown ones are ignored here too. */
static const oc_key pp_keys[] = {
	{"mean", OC_USED, NULL, NULL},
	{"std", OC_USED, NULL, NULL},
	{"size", OC_USED, NULL, NULL},
	/* transform.py:28: asserted to be 'RGB' */
	{"mode", OC_ONE_OF, "RGB", "another colour mode"},
	/* transform.py:385-388: bicubic unless 'bilinear' ('random' is
	 * bicubic at inference); torchvision's Resize on a PIL image is PIL's
	 * resize with that filter, which resample.c reproduces. */
	{"interpolation", OC_ONE_OF, "bicubic|bilinear|random", "another resampling filter"},
	/* transform.py:461-485: 'shortest' resizes the short side and
	 * center-crops, 'squash' resizes straight to size x size (both run
	 * here); 'longest' fits the long side and pads, which clipd does not. */
	{"resize_mode", OC_ONE_OF, "shortest|squash", "another resize mode"},
	/* transform.py:465: only the padding of resize_mode 'longest' */
	{"fill_color", OC_IGNORED, NULL, NULL},
	{NULL, 0, NULL, NULL},
};

static int is_off(json_t *v)
{
	return !v || json_is_null(v) || json_is_false(v) ||
	       (json_is_number(v) && json_number_value(v) == 0) ||
	       (json_is_string(v) && !*json_string_value(v)) ||
	       (json_is_object(v) && json_object_size(v) == 0) ||
	       (json_is_array(v) && json_array_size(v) == 0);
}

static int one_of(const char *s, const char *want)
{
	size_t n = strlen(s);
	for (const char *p = want; *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);
		if (len == n && strncmp(p, s, n) == 0)
			return 1;
		p += len + (bar != NULL);
	}
	return 0;
}

/* Checks every key of o against its table (sec: "model_cfg.vision_cfg.").
 * unknown_ok: keys not in the table are ignored rather than refused. */
static int check_keys(json_t *o, const oc_key *tab, const char *sec, int unknown_ok,
                      clip_err *err)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) {
		const oc_key *r = tab;
		while (r->key && strcmp(r->key, k) != 0)
			r++;
		if (!r->key) {
			if (unknown_ok)
				continue;
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": %s%s is not a setting clipd knows "
			                 "(not one of open_clip's CLIP model settings)", sec, k);
		}
		char *shown = json_is_object(v) || json_is_array(v)
		                      ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		int bad = r->rule == OC_ABSENT || (r->rule == OC_NULL && !json_is_null(v)) ||
		          (r->rule == OC_OFF && !is_off(v)) ||
		          (r->rule == OC_ONE_OF && !json_is_null(v) &&
		           !(json_is_string(v) && one_of(json_string_value(v), r->want)));
		if (bad) {
			clip_fail(err, CLIP_EMODEL, OC_FILE ": %s%s is %.60s: %s, which clipd does not run%s%s",
			          sec, k, shown ? shown : "present", r->what,
			          r->rule == OC_ONE_OF ? "; supported: " : "",
			          r->rule == OC_ONE_OF ? r->want : "");
			free(shown);
			return CLIP_EMODEL;
		}
		free(shown);
	}
	return CLIP_OK;
}

static int get_int(json_t *o, const char *sec, const char *key, int *v, int min, int max,
                   clip_err *err)
{
	json_t *j = json_object_get(o, key);
	if (!j || json_is_null(j))
		return CLIP_OK;
	if (!json_is_integer(j) || json_integer_value(j) < min || json_integer_value(j) > max)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %s%s must be an integer in %d..%d", sec, key,
		                 min, max);
	*v = (int)json_integer_value(j);
	return CLIP_OK;
}

/* image_size and patch_size: an integer or a square [n, n] (to_2tuple). */
static int get_side(json_t *o, const char *sec, const char *key, int *v, clip_err *err)
{
	json_t *j = json_object_get(o, key);
	if (json_is_array(j)) {
		json_t *a = json_array_get(j, 0), *b = json_array_get(j, 1);
		if (json_array_size(j) != 2 || !json_is_integer(a) || !json_is_integer(b) ||
		    json_integer_value(a) != json_integer_value(b))
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": %s%s must be an integer or a square "
			                 "[n, n]: clipd runs square images only", sec, key);
		j = a;
	}
	if (!j || json_is_null(j))
		return CLIP_OK;
	if (!json_is_integer(j) || json_integer_value(j) < 1 || json_integer_value(j) > 8192)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %s%s must be an integer in 1..8192", sec, key);
	*v = (int)json_integer_value(j);
	return CLIP_OK;
}

/* mlp_ratio: the MLP is int(width * mlp_ratio) wide (transformer.py:294). */
static int get_mlp(json_t *o, const char *sec, int width, int *out, clip_err *err)
{
	double r = 4.0;
	json_t *j = json_object_get(o, "mlp_ratio");
	if (j && !json_is_null(j)) {
		if (!json_is_number(j) || !(json_number_value(j) > 0) || json_number_value(j) > 64)
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": %smlp_ratio must be a number in (0, 64]",
			                 sec);
		r = json_number_value(j);
	}
	*out = (int)(width * r);
	if (*out < 1)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %smlp_ratio %g makes an empty MLP", sec, r);
	return CLIP_OK;
}

/* norm_kwargs: only {"eps": x} (the LayerNorm's epsilon); nn.LayerNorm's
 * default 1e-5 otherwise. */
static int get_norm(json_t *o, const char *sec, float *eps, clip_err *err)
{
	json_t *nk = json_object_get(o, "norm_kwargs");
	if (!nk || json_is_null(nk))
		return CLIP_OK;
	const char *k;
	json_t *v;
	if (!json_is_object(nk))
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %snorm_kwargs is not an object", sec);
	json_object_foreach(nk, k, v) {
		if (strcmp(k, "eps") != 0)
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": %snorm_kwargs.%s: a modified LayerNorm, "
			                 "which clipd does not run (only eps is supported)", sec, k);
		if (!json_is_number(v) || !((float)json_number_value(v) > 0) || json_number_value(v) > 1)
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": %snorm_kwargs.eps must be in (0, 1]",
			                 sec);
		*eps = (float)json_number_value(v);
	}
	return CLIP_OK;
}

static int get_vision(json_t *o, clip_tower_cfg *t, clip_err *err)
{
	static const char sec[] = "model_cfg.vision_cfg.";
	int rc, head_width = 64;
	if (!json_is_object(o))
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": model_cfg.vision_cfg is not an object");
	if ((rc = check_keys(o, vision_keys, sec, 0, err)))
		return rc;
	/* model.py:199-207: a list of four stage depths is a ModifiedResNet. */
	if (json_is_array(json_object_get(o, "layers")))
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %slayers is a list: a ModifiedResNet image "
		                 "tower, which clipd does not run (a ViT's layers is an integer)", sec);
	if ((rc = get_int(o, sec, "layers", &t->layers, 1, 1024, err)) ||
	    (rc = get_int(o, sec, "width", &t->hidden, 1, 1 << 16, err)) ||
	    (rc = get_int(o, sec, "head_width", &head_width, 1, 1 << 16, err)) ||
	    (rc = get_side(o, sec, "image_size", &t->image_size, err)) ||
	    (rc = get_side(o, sec, "patch_size", &t->patch_size, err)) ||
	    (rc = get_mlp(o, sec, t->hidden, &t->intermediate, err)) ||
	    (rc = get_norm(o, sec, &t->eps, err)))
		return rc;
	/* model.py:209: heads = width // head_width */
	if (t->hidden % head_width != 0)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %swidth %d is not a multiple of head_width %d",
		                 sec, t->hidden, head_width);
	t->heads = t->hidden / head_width;
	/* transformer.py:628: grid = image_size // patch_size; the stride-p
	 * convolution leaves out the last pixels of a side p does not divide
	 * (as vision.c does). */
	if (t->patch_size > t->image_size)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %spatch_size %d is larger than image_size %d",
		                 sec, t->patch_size, t->image_size);
	int grid = t->image_size / t->patch_size;
	t->positions = grid * grid + 1;
	return CLIP_OK;
}

static int get_text(json_t *o, clip_tower_cfg *t, clip_err *err)
{
	static const char sec[] = "model_cfg.text_cfg.";
	int rc;
	if (!json_is_object(o))
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": model_cfg.text_cfg is not an object");
	if ((rc = check_keys(o, text_keys, sec, 0, err)))
		return rc;
	if ((rc = get_int(o, sec, "context_length", &t->positions, 2, 1 << 16, err)) ||
	    (rc = get_int(o, sec, "vocab_size", &t->vocab, 2, 1 << 24, err)) ||
	    (rc = get_int(o, sec, "width", &t->hidden, 1, 1 << 16, err)) ||
	    (rc = get_int(o, sec, "heads", &t->heads, 1, 1024, err)) ||
	    (rc = get_int(o, sec, "layers", &t->layers, 1, 1024, err)) ||
	    (rc = get_mlp(o, sec, t->hidden, &t->intermediate, err)) ||
	    (rc = get_norm(o, sec, &t->eps, err)))
		return rc;
	if (t->hidden % t->heads != 0)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %swidth %d is not a multiple of heads %d",
		                 sec, t->hidden, t->heads);
	/* SimpleTokenizer's clean function (tokenizer.py:100-110, default
	 * 'lower', tokenizer.py:148) is the one tok_bpe.c runs; the others
	 * ('canonicalize', 'whitespace', ...) give other token ids. */
	json_t *tk = json_object_get(o, "tokenizer_kwargs");
	if (tk && !json_is_null(tk)) {
		const char *k;
		json_t *v;
		if (!json_is_object(tk))
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": %stokenizer_kwargs is not an object", sec);
		json_object_foreach(tk, k, v) {
			if (strcmp(k, "clean") == 0 && json_is_string(v) &&
			    strcmp(json_string_value(v), "lower") == 0)
				continue;
			char *shown = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			clip_fail(err, CLIP_EMODEL, OC_FILE ": %stokenizer_kwargs.%s is %.40s: another "
			          "tokenization, which clipd does not run (only clean \"lower\")", sec, k,
			          shown ? shown : "set");
			free(shown);
			return CLIP_EMODEL;
		}
	}
	/* pool_type 'argmax' (the only one accepted): the first position of
	 * the highest id, the <|endoftext|>, which is text.c's rule for the
	 * legacy eos_token_id 2. */
	t->eos_token_id = 2;
	return CLIP_OK;
}

static int get_floats3(json_t *o, const char *key, float out[3], clip_err *err)
{
	json_t *a = json_object_get(o, key);
	if (!a || json_is_null(a))
		return CLIP_OK;
	if (!json_is_array(a) || json_array_size(a) != 3)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": preprocess_cfg.%s must be 3 numbers", key);
	for (size_t i = 0; i < 3; i++) {
		json_t *v = json_array_get(a, i);
		if (!json_is_number(v) || !isfinite(json_number_value(v)))
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": preprocess_cfg.%s must be 3 numbers",
			                 key);
		out[i] = (float)json_number_value(v);
	}
	return CLIP_OK;
}

static int get_pp(json_t *o, clip_cfg *c, clip_err *err)
{
	int rc, size = c->vision.image_size;
	if (!o || json_is_null(o))
		return CLIP_OK;
	if (!json_is_object(o))
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": preprocess_cfg is not an object");
	if ((rc = check_keys(o, pp_keys, "preprocess_cfg.", 1, err)) ||
	    (rc = get_floats3(o, "mean", c->mean, err)) || (rc = get_floats3(o, "std", c->std, err)) ||
	    (rc = get_side(o, "preprocess_cfg.", "size", &size, err)))
		return rc;
	for (int i = 0; i < 3; i++)
		if (!(c->std[i] > 0))
			return clip_fail(err, CLIP_EMODEL, OC_FILE ": preprocess_cfg.std must be > 0");
	const char *rm = json_string_value(json_object_get(o, "resize_mode"));
	const char *ip = json_string_value(json_object_get(o, "interpolation"));
	if (rm && strcmp(rm, "squash") == 0)
		c->fit = IMG_FIT_SQUASH;
	if (ip && strcmp(ip, "bilinear") == 0)
		c->filter = IMG_BILINEAR;
	if (size != c->vision.image_size)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": preprocess_cfg.size %d differs from the "
		                 "model's image_size %d", size, c->vision.image_size);
	return CLIP_OK;
}

int clip_cfg_load_openclip(const char *path, clip_cfg *c, clip_err *err)
{
	json_error_t jerr;
	int rc;
	/* The dataclass defaults: CLIPVisionCfg (model.py:39-44), CLIPTextCfg
	 * (model.py:82-92); nn.LayerNorm's eps; quick_gelu False (CLIP's
	 * argument, model.py:325): nn.GELU. */
	static const clip_tower_cfg vdef = {
		.hidden = 768, .intermediate = 3072, .heads = 12, .layers = 12, .act = CLIP_GELU,
		.eps = 1e-5f, .image_size = 224, .patch_size = 16, .channels = 3,
	};
	static const clip_tower_cfg tdef = {
		.hidden = 512, .intermediate = 2048, .heads = 8, .layers = 12, .act = CLIP_GELU,
		.eps = 1e-5f, .positions = 77, .vocab = 49408, .eos_token_id = 2,
	};
	memset(c, 0, sizeof *c);
	c->vision = vdef;
	c->text = tdef;
	c->family = CLIP_FAMILY_CLIP;
	/* PreprocessCfg's defaults: bicubic, the shortest side, a centre crop;
	 * open_clip's transform converts to RGB after the resize (alpha kept
	 * through it, as PIL resizes RGBA). */
	c->fit = IMG_FIT_CROP;
	c->filter = IMG_BICUBIC;
	c->alpha_dropped = 0;
	/* OpenAI's normalisation, PreprocessCfg's default (constants.py). */
	const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
	const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
	memcpy(c->mean, mean, sizeof mean);
	memcpy(c->std, std, sizeof std);

	json_t *root = json_load_file(path, 0, &jerr);
	if (!root)
		return clip_fail(err, CLIP_EMODEL, OC_FILE ": %s (line %d)", jerr.text, jerr.line);
	json_t *mc = json_object_get(root, "model_cfg");
	if (!json_is_object(root) || !json_is_object(mc)) {
		rc = clip_fail(err, CLIP_EMODEL, OC_FILE " has no model_cfg object");
		goto out;
	}
	if ((rc = check_keys(mc, top_keys, "model_cfg.", 0, err)))
		goto out;
	json_t *vc = json_object_get(mc, "vision_cfg"), *tc = json_object_get(mc, "text_cfg");
	if (!vc || !tc || !json_object_get(mc, "embed_dim")) {
		rc = clip_fail(err, CLIP_EMODEL, OC_FILE ": model_cfg needs embed_dim, vision_cfg and "
		               "text_cfg");
		goto out;
	}
	json_t *qg = json_object_get(mc, "quick_gelu");
	if (qg && !json_is_boolean(qg) && !json_is_null(qg)) {
		rc = clip_fail(err, CLIP_EMODEL, OC_FILE ": model_cfg.quick_gelu must be true or false");
		goto out;
	}
	/* model.py:183, 280: QuickGELU in both towers, else nn.GELU (erf) */
	if (json_is_true(qg))
		c->vision.act = c->text.act = CLIP_QUICK_GELU;
	if ((rc = get_int(mc, "model_cfg.", "embed_dim", &c->projection, 1, 1 << 16, err)) ||
	    (rc = get_vision(vc, &c->vision, err)) || (rc = get_text(tc, &c->text, err)))
		goto out;
	c->crop = c->vision.image_size;
	rc = get_pp(json_object_get(root, "preprocess_cfg"), c, err);
out:
	json_decref(root);
	return rc;
}
