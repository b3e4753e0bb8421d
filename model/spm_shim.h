/*
 * spm_shim.h: the C face of the SentencePiece library (libsentencepiece,
 * Debian's libsentencepiece-dev), implemented by spm_shim.cc, the one C++
 * file of the tree. Private to the model module; tok_spm.c is its user.
 *
 * Only C types cross this header: the model is an opaque handle, texts are
 * UTF-8 bytes, ids are int32_t in the caller's arrays, messages go into the
 * caller's buffer. Every C++ exception is caught inside the shim and
 * becomes a return code.
 *
 * Ownership: spm_load returns a model the caller frees with spm_free.
 * Strings returned by spm_piece live as long as the model.
 *
 * Thread-safety: a loaded model is read-only. spm_encode and the lookups
 * may run on one model from any number of threads at once: they call only
 * const methods of SentencePieceProcessor, whose normaliser and models
 * (unigram, BPE) keep no mutable members in sentencepiece 0.1.97 and work
 * on locals (sentencepiece_processor.cc, normalizer.cc, unigram_model.cc,
 * bpe_model.cc at tag v0.1.97). spm_free must not overlap any other call.
 */
#ifndef CLIPD_SPM_SHIM_H
#define CLIPD_SPM_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spm_model spm_model;

enum spm_status {
	SPM_OK = 0,
	SPM_EINVAL,   /* a NULL argument */
	SPM_EMODEL,   /* the file is missing, unreadable or not a SentencePiece model */
	SPM_ENOMEM,
	SPM_EINTERNAL /* the library failed on a valid text (it should not) */
};

/* Loads the SentencePiece model file at path (a serialised ModelProto, as
 * spiece.model and tokenizer.model are). Returns SPM_OK and sets *out; on
 * failure *out is NULL and msg (msgcap bytes, NUL-terminated) says why, in
 * the library's words. */
int spm_load(const char *path, spm_model **out, char *msg, size_t msgcap);

/* Frees m. Accepts NULL. */
void spm_free(spm_model *m);

/* Encodes text[0..len) (valid UTF-8, no NUL needed) with the model's own
 * normaliser and options, as SentencePieceProcessor::Encode does. Writes
 * the first min(total, cap) ids to ids and the total count to *total.
 * Returns SPM_OK, SPM_ENOMEM or SPM_EINTERNAL (msg says why). */
int spm_encode(const spm_model *m, const char *text, size_t len, int32_t *ids, size_t cap,
               size_t *total, char *msg, size_t msgcap);

/* The number of pieces (ids are 0 .. count-1). */
int spm_piece_count(const spm_model *m);

/* The id of the piece spelt exactly s, or -1 when no piece is (the library
 * answers the unknown id for those; this does not). */
int32_t spm_piece_id(const spm_model *m, const char *s);

/* The text of piece id (NUL-terminated, *len bytes when len is not NULL),
 * or NULL for an id out of range. */
const char *spm_piece(const spm_model *m, int32_t id, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
