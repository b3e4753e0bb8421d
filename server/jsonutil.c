/* jsonutil.c: field readers and base64. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"

int ju_parse_object(const char *body, size_t len, json_t **out, api_err *err)
{
	json_error_t je;
	*out = NULL;
	size_t i = 0;
	while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
		i++;
	if (!body || i == len)
		return api_fail(err, API_EBADREQ, "request body is empty: a JSON object was expected");
	json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return api_fail(err, API_EBADREQ, "malformed JSON at line %d, column %d: %s", je.line,
		                je.column, je.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return api_fail(err, API_EBADREQ, "the request body must be a JSON object");
	}
	*out = j;
	return 0;
}

/* The length of the well-formed UTF-8 sequence at s (at most n bytes), 0
 * when there is none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t len;
	unsigned min;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2, min = 0x80;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3, min = 0x800;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4, min = 0x10000;
	else
		return 0;
	if (len > n)
		return 0;
	unsigned cp = c & (0x3F >> (len - 1));
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3F);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

char *ju_utf8_copy(char *dst, size_t size, const char *src)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t n = strlen(src), o = 0;
	if (size == 0)
		return dst;
	for (size_t i = 0; i < n && o + 1 < size;) {
		size_t l = utf8_len(s + i, n - i);
		if (l == 0 || o + l + 1 > size) {
			dst[o++] = '?';
			i += l ? l : 1;
			continue;
		}
		memcpy(dst + o, s + i, l);
		o += l;
		i += l;
	}
	dst[o] = 0;
	return dst;
}

json_t *ju_string_lossy(const char *s)
{
	size_t n = strlen(s) + 1;
	char *copy = malloc(n);
	if (!copy)
		return NULL;
	json_t *j = json_string(ju_utf8_copy(copy, n, s));
	free(copy);
	return j;
}

static json_t *field(json_t *obj, const char *key)
{
	json_t *v = obj ? json_object_get(obj, key) : NULL;
	return v && !json_is_null(v) ? v : NULL;
}

int ju_int(json_t *obj, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
           api_err *err)
{
	json_t *v = field(obj, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v))
		return api_fail(err, API_EBADREQ, "field '%s' must be an integer", key);
	json_int_t x = json_integer_value(v);
	if (x < min || x > max)
		return api_fail(err, API_EBADREQ, "field '%s' must be from %lld to %lld", key,
		                (long long)min, (long long)max);
	*out = x;
	return 0;
}

int ju_num(json_t *obj, const char *key, double def, double *out, int *present, api_err *err)
{
	json_t *v = field(obj, key);
	if (present)
		*present = v != NULL;
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_number(v))
		return api_fail(err, API_EBADREQ, "field '%s' must be a number", key);
	*out = json_number_value(v);
	return 0;
}

int ju_str(json_t *obj, const char *key, int required, const char **out, api_err *err)
{
	json_t *v = field(obj, key);
	*out = NULL;
	if (!v) {
		if (required)
			return api_fail(err, API_EBADREQ, "missing field '%s'", key);
		return 0;
	}
	if (!json_is_string(v))
		return api_fail(err, API_EBADREQ, "field '%s' must be a string", key);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return api_fail(err, API_EBADREQ, "field '%s' contains a NUL character", key);
	*out = json_string_value(v);
	return 0;
}

int ju_bool(json_t *obj, const char *key, int def, int *out, api_err *err)
{
	json_t *v = field(obj, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_boolean(v))
		return api_fail(err, API_EBADREQ, "field '%s' must be true or false", key);
	*out = json_is_true(v);
	return 0;
}

int ju_object(json_t *obj, const char *key, json_t **out, api_err *err)
{
	json_t *v = field(obj, key);
	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_object(v))
		return api_fail(err, API_EBADREQ, "field '%s' must be a JSON object", key);
	*out = v;
	return 0;
}

int ju_str_array(json_t *obj, const char *key, int required, size_t max, json_t **out,
                 api_err *err)
{
	json_t *v = field(obj, key);
	*out = NULL;
	if (!v) {
		if (required)
			return api_fail(err, API_EBADREQ, "missing field '%s'", key);
		return 0;
	}
	if (!json_is_array(v))
		return api_fail(err, API_EBADREQ, "field '%s' must be an array of strings", key);
	if (json_array_size(v) > max)
		return api_fail(err, API_EBADREQ, "field '%s' has %zu entries, at most %zu are allowed",
		                key, json_array_size(v), max);
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e) {
		if (!json_is_string(e))
			return api_fail(err, API_EBADREQ, "field '%s'[%zu] must be a string", key, i);
		if (strlen(json_string_value(e)) != json_string_length(e))
			return api_fail(err, API_EBADREQ, "field '%s'[%zu] contains a NUL character", key, i);
	}
	*out = v;
	return 0;
}

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

int ju_b64_decode(const char *s, const char *field_name, unsigned char **out, size_t *out_len,
                  api_err *err)
{
	*out = NULL;
	*out_len = 0;
	if (strncmp(s, "data:", 5) == 0) {
		const char *comma = strchr(s, ',');
		if (!comma || !strstr(s, ";base64,"))
			return api_fail(err, API_EBADREQ, "field '%s': a data: URL must be base64", field_name);
		s = comma + 1;
	}
	size_t n = strlen(s);
	unsigned char *buf = malloc(n / 4 * 3 + 3);
	if (!buf)
		return api_fail(err, API_ENOMEM, "out of memory");
	uint32_t acc = 0;
	int bits = 0, pad = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		int v = b64_val(c);
		if (v < 0 || pad) {
			free(buf);
			return api_fail(err, API_EBADREQ, "field '%s' is not valid base64", field_name);
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits >= 6 || pad > 2) {
		free(buf);
		return api_fail(err, API_EBADREQ, "field '%s' is not valid base64", field_name);
	}
	*out = buf;
	*out_len = o;
	return 0;
}

int ju_parse_int_str(const char *s, const char *name, int64_t min, int64_t max, int64_t *out,
                     api_err *err)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return api_fail(err, API_EBADREQ, "parameter '%s' must be an integer", name);
	if (v < min || v > max)
		return api_fail(err, API_EBADREQ, "parameter '%s' must be from %lld to %lld", name,
		                (long long)min, (long long)max);
	*out = v;
	return 0;
}

int ju_parse_bool_str(const char *s, const char *name, int *out, api_err *err)
{
	if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "")) {
		*out = 1;
		return 0;
	}
	if (!strcmp(s, "false") || !strcmp(s, "0")) {
		*out = 0;
		return 0;
	}
	return api_fail(err, API_EBADREQ, "parameter '%s' must be true or false", name);
}
