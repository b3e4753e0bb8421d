/*
 * weights_int.h: binding safetensors tensors to the model's weights, for
 * the checkpoint-layout loaders (load_*.c). Private to the model module.
 *
 * Ownership: converted copies are recorded in the model (m->owned) and
 * freed with it; mapped tensors stay in the model's st_file.
 */
#ifndef CLIPD_WEIGHTS_INT_H
#define CLIPD_WEIGHTS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "clip_int.h"
#include "safetensors_int.h"

/* The shape argument pair of w_bind: DIMS(768, 3, 32, 32). */
#define DIMS(...) \
	(int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

/* Binds the tensor named by fmt (printf-style), which must have the shape
 * want[ndim], as float32 into *out (in place when F32, else a converted
 * copy). CLIP_EMODEL naming the tensor when it is missing, of another
 * shape or of another dtype; CLIP_ENOMEM. */
int w_bind(clip_model *m, const float **out, clip_err *err, int ndim, const int64_t *want,
           const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Binds an embedding table [rows][d] without converting it: F32 in place
 * into *f32 (and *raw NULL), F16 or BF16 as stored into *raw with *dtype
 * (and *f32 NULL); rows are widened when used (w_row). */
int w_bind_rows(clip_model *m, const float **f32, const unsigned char **raw, int *dtype,
                clip_err *err, int64_t rows, int64_t d, const char *name);

/* Row r of a table bound by w_bind_rows, as float32, into out[d]. */
void w_row(const float *f32, const unsigned char *raw, int dtype, int64_t r, int d, float *out);

/* Records p as owned by the model (freed at close); -1 when out of memory. */
int w_keep_owned(clip_model *m, void *p);

/* Frees p when it is one of the model's converted copies. */
void w_drop_owned(clip_model *m, const void *p);

/* Lets a bound tensor of `bytes` go once it has been copied: a converted
 * copy is freed, a mapped one leaves the resident set. */
void w_release(clip_model *m, const void *p, size_t bytes);

/* Stacks a layer's q, k and v projections (w[3] of [d][d], b[3] of [d])
 * into L->qkv, then lets the originals go (w_release). */
int w_fuse_qkv(clip_model *m, clip_layer *L, int d, const float *w[3], const float *b[3],
               clip_err *err);

/* The Hugging Face layout (load_hf.c): every tensor of m->cfg bound, for
 * a CLIPModel or a SiglipModel (m->cfg.family). */
int load_hf_bind(clip_model *m, clip_err *err);

/* open_clip's layout (load_openclip.c): every tensor of m->cfg bound; the
 * stacked in_proj_weight is the fused qkv as is, the two projections are
 * transposed copies owned by the model. */
int load_openclip_bind(clip_model *m, clip_err *err);

#endif
