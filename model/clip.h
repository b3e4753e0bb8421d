/*
 * clip: CLIP inference in C. Loads a Hugging Face CLIP checkpoint directory
 * (config.json, model.safetensors, vocab.json, merges.txt, optionally
 * preprocessor_config.json) or the same model in open_clip's layout
 * (open_clip_config.json, open_clip_model.safetensors, vocab.json,
 * merges.txt), tokenizes text with CLIP's byte-level BPE,
 * decodes and preprocesses images with libvips exactly as the reference
 * (open_clip / CLIPImageProcessor) does, and runs the vision and text
 * transformers on OpenBLAS (float32, the reference) or, where built in,
 * oneDNN (float32, bfloat16 or int8 linear layers; clip_options).
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
	CLIP_ELIMIT,     /* image over a decode-work limit: JPEG scans, decode time */
} clip_code;

typedef struct clip_err {
	clip_code code;
	char msg[256];
} clip_err;

typedef struct clip_model clip_model;

/* What a checkpoint is, which decides how its scores read. */
typedef enum clip_family {
	CLIP_FAMILY_CLIP = 0,   /* CLIP (OpenAI, LAION, open_clip): logits = scale * cos,
	                         * label probabilities a softmax over the labels */
	CLIP_FAMILY_SIGLIP,     /* SigLIP, SigLIP2: logits = scale * cos + bias, each
	                         * label's probability its own sigmoid */
} clip_family;
typedef struct clip_ctx clip_ctx;

/* The number format of the linear layers' products. Embeddings,
 * LayerNorm, softmax and the residual stream stay float32 in every mode;
 * products accumulate in float32. */
typedef enum clip_precision {
	CLIP_PRECISION_AUTO = 0, /* bf16 where the CPU has AVX512-BF16 or AMX, else f32 */
	CLIP_PRECISION_F32,
	CLIP_PRECISION_BF16,     /* weights and activations rounded to bfloat16 */
	CLIP_PRECISION_INT8,     /* int8 weights (per output channel scales) and
	                          * activations (one scale per product, from its input) */
} clip_precision;

typedef struct clip_options {
	clip_precision precision;
} clip_options;

/* Opens the checkpoint directory dir. Weights are memory-mapped; every
 * tensor is checked against the config before use. *out is NULL on
 * failure. clip_model_open is float32 on OpenBLAS, the reference;
 * clip_model_open_opts with a precision other than f32 converts the linear
 * layers at load (a second or two for ViT-B/32) and fails with CLIP_EINVAL
 * when this build or CPU cannot run that precision. opts may be NULL
 * (auto). */
int clip_model_open(const char *dir, clip_model **out, clip_err *err);
int clip_model_open_opts(const char *dir, const clip_options *opts, clip_model **out,
                         clip_err *err);

/* The config and weights file names (static strings) of the checkpoint
 * layout found in dir: "config.json" and "model.safetensors" (Hugging
 * Face), or "open_clip_config.json" and "open_clip_model.safetensors"
 * (open_clip), as clip_model_open would read them. NULL and CLIP_EMODEL
 * when dir holds neither (the message says what was looked for). */
int clip_checkpoint_files(const char *dir, const char **config, const char **weights,
                          clip_err *err);

/* The identity of the checkpoint in dir: "clip-" and 16 hex digits of a
 * SHA-256 over its config, its safetensors header and its weight file's
 * size (fingerprint.c), into id (id_size >= 22). The daemon names a data
 * directory's model by it, and clip-embed stamps its shards with it. */
int clip_fingerprint(const char *dir, char *id, size_t id_size, clip_err *err);

/* The precision the model runs in (never AUTO). */
clip_precision clip_model_precision(const clip_model *m);

/* "auto", "f32", "bf16", "int8". */
const char *clip_precision_name(clip_precision p);
/* Parses one of those names; returns 0, or -1 for anything else. */
int clip_precision_parse(const char *s, clip_precision *out);
/* Whether this build and CPU can run p (AUTO: always); *why, when non-NULL,
 * receives the reason for a no. */
int clip_precision_supported(clip_precision p, const char **why);
void clip_model_close(clip_model *m);

int clip_model_dim(const clip_model *m);            /* projection (embedding) size */
int clip_model_image_size(const clip_model *m);     /* input side in pixels */
int clip_model_context(const clip_model *m);        /* text positions, 77 */
float clip_model_logit_scale(const clip_model *m);  /* exp(logit_scale) */
float clip_model_logit_bias(const clip_model *m);   /* SigLIP's logit_bias; 0 for CLIP */
clip_family clip_model_family(const clip_model *m);

/* The checkpoint's architecture: "clip", "siglip" or "chinese_clip" (a
 * CLIP image tower with a BERT text tower). Static storage. */
const char *clip_model_arch(const clip_model *m);

/* The zero-shot prompt a label goes into when the caller gives none, in
 * the language the model was trained on: "a photo of a {}." (CLIP's paper
 * prompt), or for Chinese-CLIP "{}的照片". Static storage. */
const char *clip_model_default_template(const clip_model *m);

/* The matrix-product work of one encode in GFLOP (1 multiply-add = 2
 * FLOP; attention products counted dense, element-wise work left out, as
 * ../shared/peers/flops.py counts ONNX Runtime's): one image, or one text
 * of `tokens` positions (SigLIP always runs its whole context; tokens is
 * then ignored). For figures of GFLOP/s in benchmarks. */
double clip_model_image_gflop(const clip_model *m);
double clip_model_text_gflop(const clip_model *m, int tokens);
const char *clip_family_name(clip_family f);        /* "clip", "siglip" */

/* Per-thread encoding context for batches of up to max_batch. */
int clip_ctx_new(const clip_model *m, int max_batch, clip_ctx **out, clip_err *err);
void clip_ctx_free(clip_ctx *c);

/* Tokenizes text into ids[clip_model_context(m)]: <|startoftext|>, the BPE
 * tokens, <|endoftext|>, zeros; truncated with <|endoftext|> kept last.
 * *len (optional) is the number of tokens before the padding. */
int clip_tokenize(const clip_model *m, const char *text, int32_t *ids, int *len, clip_err *err);

/* Defaults of clip_image_limits.max_scans and .decode_timeout_ms.
 * 500 scans is the bound libjpeg-turbo's TurboJPEG API puts on progressive
 * JPEGs (turbojpeg.c, my_progress_monitor: "Progressive JPEG image has
 * more than 500 scans"); encoders write far fewer (libjpeg's
 * jpeg_simple_progression: 10 for colour, 6 for grey). 10 s is 7x the
 * 1.4 s a 100-megapixel JPEG (the default pixel limit) took to decode and
 * preprocess on one core of the development machine. */
#define CLIP_DEFAULT_MAX_SCANS 500
#define CLIP_DEFAULT_DECODE_TIMEOUT_MS 10000

/* Limits for decoding images. */
typedef struct clip_image_limits {
	int64_t max_pixels;   /* width * height refused above this; 0 = default (100 megapixels) */
	int fast_decode;      /* non-zero: a JPEG much larger than the input side is
	                       * shrunk on load (libjpeg's DCT scaling), then
	                       * preprocessed as usual: 2-3x faster on camera photos,
	                       * embeddings slightly off the reference (README,
	                       * --fast-decode). 0: exact. */
	int max_scans;        /* a JPEG of more scans is refused before decoding
	                       * (CLIP_ELIMIT); 0 = CLIP_DEFAULT_MAX_SCANS */
	int decode_timeout_ms; /* a decode still running after this is cut off
	                        * (CLIP_ELIMIT); 0 = CLIP_DEFAULT_DECODE_TIMEOUT_MS */
} clip_image_limits;

/* Decodes and preprocesses an image into out[3][S][S] (CHW, normalised),
 * S = clip_model_image_size(m). *width, *height (optional) receive the
 * decoded size after EXIF orientation. limits may be NULL (the defaults).
 * CLIP_ETOOBIG over the pixel limit, CLIP_ELIMIT over the scan or time
 * limit (clip_vips.h), CLIP_EIMAGE for data that does not decode. */
int clip_preprocess_file(const clip_model *m, const char *path, const clip_image_limits *limits,
                         float *out, int *width, int *height, clip_err *err);
int clip_preprocess_buffer(const clip_model *m, const void *data, size_t len,
                           const clip_image_limits *limits, float *out, int *width, int *height,
                           clip_err *err);

/* Starts libvips once per process, set up for untrusted input process-wide:
 * the operation cache off (it could hand back a stale decode of a file or
 * buffer that changed), the loaders libvips marks untrusted blocked, and
 * libvips' warnings (domain "VIPS") dropped instead of printed on stderr.
 * Every clip_ call that decodes calls it itself; a program that uses
 * libvips directly besides (the server's thumbnails) calls it first, so
 * that libvips runs with these settings whoever starts it. Idempotent and
 * thread-safe: later and concurrent calls wait for and return the first
 * result. CLIP_OK, or CLIP_EIO when libvips cannot start. */
int clip_images_init(clip_err *err);

/* The image formats clipd accepts: JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF
 * and JPEG XL, photographic formats only (libvips also reads matrices,
 * CSV, PDF and more, which a text or document can pass for), each where
 * this libvips has its loader and does not block it (Debian 12's libvips
 * 8.14.1 flags jxlload untrusted, and the model blocks untrusted loaders:
 * no JPEG XL there). This one list decides for the decoder above, the server's
 * thumbnails and its upload sniffer. Both functions start libvips if it
 * is not yet (clip_images_init) and are thread-safe.
 *
 * clip_image_format_accepted: whether a libvips loader nickname
 * ("jpegload_source", "jxlload") or a bare format name ("jpeg", "jxl") is
 * an accepted format; 0 for NULL, and for every name when libvips cannot
 * start. */
int clip_image_format_accepted(const char *nickname);

/* The accepted formats for people, "JPEG, PNG, ... or HEIF/AVIF", written
 * into buf[n] (cut short, always terminated when n > 0; buf may be NULL
 * when n is 0). Returns the length of the whole text, as snprintf does. */
size_t clip_image_formats_text(char *buf, size_t n);

/* Threads each matrix product may use, process-wide (OpenBLAS's pool and
 * oneDNN's OpenMP team); 0 leaves the libraries' defaults. */
void clip_set_threads(int n);

/* Encodes n preprocessed images pixels[n][3][S][S] into out[n][dim]
 * (unnormalised projection output). n <= the context's max_batch. */
int clip_encode_images(clip_ctx *c, int n, const float *pixels, float *out, clip_err *err);

/* Encodes n token rows ids[n][context] into out[n][dim] (unnormalised). */
int clip_encode_texts(clip_ctx *c, int n, const int32_t *ids, float *out, clip_err *err);

/* Scales v[dim] to unit length (a zero vector stays zero). */
void clip_normalize(float *v, int dim);

#endif
