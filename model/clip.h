/*
 * clip: CLIP inference in C. Loads a Hugging Face CLIP checkpoint directory
 * (config.json, model.safetensors, vocab.json, merges.txt, optionally
 * preprocessor_config.json), tokenizes text with CLIP's byte-level BPE,
 * decodes and preprocesses images with libvips exactly as the reference
 * (open_clip / CLIPImageProcessor) does, and runs the vision and text
 * transformers in float32 on OpenBLAS.
 *
 * Ownership: a clip_model is read-only once open and shared by every
 * thread; each thread that encodes owns a clip_ctx (its activation buffers,
 * sized once). Output arrays belong to the caller.
 *
 * Errors: every function returns a clip_code (CLIP_OK is 0) and fills err,
 * when non-NULL, with the code and one message naming what was wrong (the
 * tensor, the config field, the image problem).
 *
 * Thread-safety: clip_model_* and clip_tokenize / clip_preprocess_* are safe
 * from any thread. A clip_ctx is used by one thread at a time.
 */
#ifndef CLIPD_CLIP_H
#define CLIPD_CLIP_H

#include <stddef.h>
#include <stdint.h>

typedef enum clip_code {
	CLIP_OK = 0,
	CLIP_EINVAL,     /* bad argument */
	CLIP_EIO,        /* cannot read a file */
	CLIP_EMODEL,     /* malformed checkpoint: config, tensor, tokenizer files */
	CLIP_EIMAGE,     /* not an image, or a damaged one */
	CLIP_ETOOBIG,    /* image over the pixel limit */
	CLIP_ETEXT,      /* text that is not valid UTF-8 */
	CLIP_ENOMEM,
} clip_code;

typedef struct clip_err {
	clip_code code;
	char msg[256];
} clip_err;

typedef struct clip_model clip_model;
typedef struct clip_ctx clip_ctx;

/* Opens the checkpoint directory dir. Weights are memory-mapped; every
 * tensor is checked against the config before use. *out is NULL on
 * failure. */
int clip_model_open(const char *dir, clip_model **out, clip_err *err);
void clip_model_close(clip_model *m);

int clip_model_dim(const clip_model *m);            /* projection (embedding) size */
int clip_model_image_size(const clip_model *m);     /* input side in pixels */
int clip_model_context(const clip_model *m);        /* text positions, 77 */
float clip_model_logit_scale(const clip_model *m);  /* exp(logit_scale) */

/* Per-thread encoding context for batches of up to max_batch. */
int clip_ctx_new(const clip_model *m, int max_batch, clip_ctx **out, clip_err *err);
void clip_ctx_free(clip_ctx *c);

/* Tokenizes text into ids[clip_model_context(m)]: <|startoftext|>, the BPE
 * tokens, <|endoftext|>, zeros; truncated with <|endoftext|> kept last.
 * *len (optional) is the number of tokens before the padding. */
int clip_tokenize(const clip_model *m, const char *text, int32_t *ids, int *len, clip_err *err);

/* Limits for decoding images. */
typedef struct clip_image_limits {
	int64_t max_pixels;   /* width * height refused above this; 0 = default (100 megapixels) */
} clip_image_limits;

/* Decodes and preprocesses an image into out[3][S][S] (CHW, normalised),
 * S = clip_model_image_size(m). *width, *height (optional) receive the
 * decoded size after EXIF orientation. limits may be NULL. */
int clip_preprocess_file(const clip_model *m, const char *path, const clip_image_limits *limits,
                         float *out, int *width, int *height, clip_err *err);
int clip_preprocess_buffer(const clip_model *m, const void *data, size_t len,
                           const clip_image_limits *limits, float *out, int *width, int *height,
                           clip_err *err);

/* Encodes n preprocessed images pixels[n][3][S][S] into out[n][dim]
 * (unnormalised projection output). n <= the context's max_batch. */
int clip_encode_images(clip_ctx *c, int n, const float *pixels, float *out, clip_err *err);

/* Encodes n token rows ids[n][context] into out[n][dim] (unnormalised). */
int clip_encode_texts(clip_ctx *c, int n, const int32_t *ids, float *out, clip_err *err);

/* Scales v[dim] to unit length (a zero vector stays zero). */
void clip_normalize(float *v, int dim);

#endif
