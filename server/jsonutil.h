/*
 * jsonutil: strict reading of request JSON with errors that name the field,
 * and base64 decoding. All functions are thread-safe and return 0 or a
 * non-zero code with err filled (API_EBADREQ unless noted).
 */
#ifndef CLIPD_JSONUTIL_H
#define CLIPD_JSONUTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

/* Parses body as one JSON object. *out is a new reference. An empty body is
 * "request body is empty"; anything else wrong is "malformed JSON ...". */
int ju_parse_object(const char *body, size_t len, json_t **out, api_err *err);

/* Optional integer field: *out = def when absent (or JSON null); wrong type
 * or outside [min, max] is an error naming the field. */
int ju_int(json_t *obj, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
           api_err *err);

/* Optional number field (integer or real). */
int ju_num(json_t *obj, const char *key, double def, double *out, int *present, api_err *err);

/* String field; *out points into obj (NULL when absent and not required). */
int ju_str(json_t *obj, const char *key, int required, const char **out, api_err *err);

/* Boolean field. */
int ju_bool(json_t *obj, const char *key, int def, int *out, api_err *err);

/* A field that must be a JSON object when present: *out borrowed or NULL. */
int ju_object(json_t *obj, const char *key, json_t **out, api_err *err);

/* A field that must be an array of non-NULL strings (at most max) when
 * present; *out borrowed or NULL. */
int ju_str_array(json_t *obj, const char *key, int required, size_t max, json_t **out,
                 api_err *err);

/* Strict standard base64 (padding optional, whitespace ignored, a data:
 * URL prefix "data:...;base64," skipped). *out is malloc'ed. field names
 * the field in messages. */
int ju_b64_decode(const char *s, const char *field, unsigned char **out, size_t *out_len,
                  api_err *err);

/* Copies the string src into dst[size] (always NUL-terminated) as valid
 * UTF-8, which jansson requires of every string: each byte that does not
 * start a well-formed sequence (overlong, surrogate, past U+10FFFF, cut
 * short, or cut by size) becomes '?'. Returns dst. */
char *ju_utf8_copy(char *dst, size_t size, const char *src);

/* A JSON string of s made valid UTF-8 as ju_utf8_copy does: for strings a
 * client chose and the server repeats (file names), which json_string and
 * json_pack would refuse, silently dropping the field or the reply. NULL
 * only when out of memory. */
json_t *ju_string_lossy(const char *s);

/* Query-string helpers: strict integers and booleans ("true"/"1"/"false"/"0"). */
int ju_parse_int_str(const char *s, const char *name, int64_t min, int64_t max, int64_t *out,
                     api_err *err);
int ju_parse_bool_str(const char *s, const char *name, int *out, api_err *err);

#endif
