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

/* Limits on any JSON a client sends (bodies, form fields): nesting depth
 * (SQLite's json functions stop at 2000; real requests nest a few levels)
 * and the number of values (bounds jansson's memory, about 50 to 100 bytes
 * a value, whatever the text's size). */
#define JU_MAX_DEPTH 64
#define JU_MAX_VALUES 100000

/* Checks text against JU_MAX_DEPTH (400) and JU_MAX_VALUES (413) before
 * it is parsed. */
int ju_scan_limits(const char *s, size_t len, api_err *err);

/* Parses body as one JSON object, within ju_scan_limits. *out is a new
 * reference. An empty body is "request body is empty"; anything else wrong
 * is "malformed JSON ...". */
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

/* User metadata (the "meta" of images and texts) is a JSON object of at
 * most JU_META_MAX_BYTES of compact JSON, nested at most JU_META_MAX_DEPTH
 * deep (the object itself is depth 1). Far below SQLite's json_valid limit
 * (2,000 levels): metadata that passes here is always storable, so a
 * request is refused before anything is written. */
#define JU_META_MAX_BYTES 65536
#define JU_META_MAX_DEPTH 32

/* Checks v as metadata (what names it in messages: "field 'meta'") and
 * serialises it compactly into *out (malloc'ed). 400 when it is not an
 * object or nested too deep, 413 when too long. */
int ju_meta(json_t *v, const char *what, char **out, api_err *err);

/* Parses src (len bytes) as metadata, as ju_meta: a text over
 * JU_META_MAX_BYTES is refused (413) before it is parsed. */
int ju_meta_parse(const char *src, size_t len, const char *what, char **out, api_err *err);

/* Strict standard base64 (padding optional, whitespace ignored, a data:
 * URL prefix "data:...;base64," skipped). *out is malloc'ed. field names
 * the field in messages. */
int ju_b64_decode(const char *s, const char *field, unsigned char **out, size_t *out_len,
                  api_err *err);

/* Query-string helpers: strict integers and booleans ("true"/"1"/"false"/"0"). */
int ju_parse_int_str(const char *s, const char *name, int64_t min, int64_t max, int64_t *out,
                     api_err *err);
int ju_parse_bool_str(const char *s, const char *name, int *out, api_err *err);

/* Client bytes made valid UTF-8: each byte that does not start a valid
 * sequence becomes U+FFFD. ju_utf8_dup returns a new string (NULL when out
 * of memory); ju_utf8_fix rewrites s in place within size bytes, cutting at
 * a character boundary. */
char *ju_utf8_dup(const char *s);
void ju_utf8_fix(char *s, size_t size);
/* In place, never growing: each such byte becomes '?'. */
void ju_utf8_mask(char *s);

/* json_string(s) that never fails on bad UTF-8 (it is repaired as above);
 * JSON null for NULL. NULL only when out of memory. */
json_t *ju_string(const char *s);

#endif
