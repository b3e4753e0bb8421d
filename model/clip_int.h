/* Private to the model module: the model, its configuration and weights. */
#ifndef CLIPD_CLIP_INT_H
#define CLIPD_CLIP_INT_H

#include "clip.h"
#include "gemm_int.h"

typedef enum clip_act { CLIP_QUICK_GELU, CLIP_GELU, CLIP_GELU_TANH } clip_act;

/* One tower's shape, from config.json. */
typedef struct clip_tower_cfg {
	int hidden;         /* d */
	int intermediate;   /* MLP width */
	int heads;
	int layers;
	clip_act act;
	float eps;
	/* vision */
	int image_size, patch_size, channels;
	/* text */
	int positions;      /* the context (text) or tokens (vision) the tower runs */
	int pos_rows;       /* rows of the position table when more than positions
	                     * (BERT's 512 for Chinese-CLIP's 52-token context); 0: positions */
	int type_vocab;     /* BERT's token types (2), 0 elsewhere */
	int vocab;
	int eos_token_id;
} clip_tower_cfg;

typedef struct clip_cfg {
	clip_family family;
	int text_bert;          /* Chinese-CLIP: a BERT text tower (post-LN, masked, [CLS]) */
	clip_tower_cfg vision, text;
	int projection;         /* the embedding size */
	float mean[3], std[3];  /* preprocessor_config.json, OpenAI's by default */
	int crop;               /* preprocessed side */
	int fit;                /* img_fit (preprocess_int.h) */
	int filter;             /* img_filter (resample_int.h) */
	int alpha_dropped;      /* img_opts.alpha_dropped */
} clip_cfg;

/* Parses config.json (and preprocessor_config.json when pp_path exists). */
int clip_cfg_load(const char *config_path, const char *pp_path, clip_cfg *c, clip_err *err);

/* Parses open_clip's open_clip_config.json (config_openclip.c): model_cfg,
 * its missing keys at open_clip's defaults, and preprocess_cfg's mean and
 * std. A model or preprocessing clipd does not run (timm or Hugging Face
 * towers, CoCa, LayerScale, other pooling, ...) is refused, CLIP_EMODEL
 * naming the key. */
int clip_cfg_load_openclip(const char *path, clip_cfg *c, clip_err *err);

/* A checkpoint layout: its files in the model directory (layout.c). */
typedef enum clip_layout_kind { CLIP_LAYOUT_HF, CLIP_LAYOUT_OPENCLIP } clip_layout_kind;

typedef struct clip_layout {
	clip_layout_kind kind;
	const char *name;                 /* "Hugging Face", "open_clip" */
	const char *config, *weights;     /* file names */
} clip_layout;

/* The layout of dir, from the files present; *out points at static data.
 * CLIP_EMODEL when dir holds neither layout, the message listing what was
 * looked for, or saying to use the safetensors file when there are only
 * pickle (*.bin) checkpoints, or naming vocab.json and merges.txt when an
 * open_clip checkpoint comes without them; CLIP_EINVAL without a
 * directory. */
int clip_layout_detect(const char *dir, const clip_layout **out, clip_err *err);

/* Weights of one pre-norm transformer block. Linear weights are [out][in]. */
typedef struct clip_layer {
	const float *ln1_w, *ln1_b;       /* [d] */
	mm_weight qkv;                    /* [3d][d]: q, k, v projections stacked */
	mm_weight o;                      /* [d][d] */
	const float *ln2_w, *ln2_b;       /* [d] */
	mm_weight fc1;                    /* [i][d] */
	mm_weight fc2;                    /* [d][i] */
} clip_layer;

typedef struct clip_tower {
	clip_tower_cfg cfg;
	clip_layer *layers;               /* [layers] */
	/* vision */
	const float *class_emb;           /* [d] */
	mm_weight patch;                  /* [d][3*p*p] (conv weight, flattened c,y,x), no bias */
	const float *pre_ln_w, *pre_ln_b; /* [d] */
	/* text */
	const float *type_emb;            /* BERT: token type 0's row [d], added to every token */
	const float *emb_ln_w, *emb_ln_b; /* BERT: the embeddings' LayerNorm */
	const float *tok_emb;             /* [vocab][d] float32 (mapped in place), or NULL: */
	const unsigned char *tok_raw;     /* [vocab][d] F16 or BF16 as stored, each row a
	                                   * query uses widened when it is used (a 256k-row
	                                   * table is never copied) */
	int tok_dtype;                    /* st_dtype of tok_raw */
	/* both */
	const float *pos_emb;             /* [positions][d] */
	const float *post_ln_w, *post_ln_b; /* vision post_layernorm / text final_layer_norm */
	mm_weight proj;                   /* [projection][d]: CLIP's projections (no bias),
	                                   * SigLIP's text head (bias); w NULL: none */
	/* SigLIP's vision head (multihead attention pooling): the learned probe
	 * is the one query; probe_q is its projection, computed at load. */
	struct {
		const float *probe_q;     /* [d], owned */
		mm_weight kv;             /* [2d][d]: in_proj's k and v rows */
		mm_weight o;              /* out_proj */
		const float *ln_w, *ln_b; /* layernorm */
		mm_weight fc1, fc2;       /* mlp */
	} map;
	int has_map;
} clip_tower;

struct tok;
struct tok_spm;
struct tok_wp;
struct st_file;

struct clip_model {
	clip_cfg cfg;
	clip_tower vision, text;
	float logit_scale;                /* exp of the stored value */
	float logit_bias;                 /* SigLIP's; 0 for CLIP */
	int32_t sep_id;                   /* BERT's [SEP], which ends a text's mask */
	clip_precision precision;         /* what the linear layers run in */
	const clip_layout *layout;        /* its file names, for messages */
	struct st_file *st;
	struct tok *tok;                  /* CLIP's BPE, or NULL */
	struct tok_spm *spm;              /* SigLIP's SentencePiece, or NULL */
	struct tok_wp *wp;                /* Chinese-CLIP's WordPiece, or NULL */
	/* F16/BF16 tensors converted to float32, freed at close */
	void **owned;
	size_t nowned;
};

/* Sets err and returns code. */
int clip_fail(clip_err *err, clip_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
