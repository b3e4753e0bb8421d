/* jsonutil.c: field readers and base64. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"

int ju_scan_limits(const char *s, size_t len, api_err *err)
{
	/* One pass over the text, counting what jansson would allocate a value
	 * for: every '[' '{' opens one, and every ',' ':' separates two (an
	 * upper bound on the values, within one of the truth per container).
	 * Bytes inside strings are skipped with their escapes. */
	size_t values = 1;
	int depth = 0, in_str = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		switch (c) {
		case '"':
			in_str = 1;
			break;
		case '[':
		case '{':
			if (++depth > JU_MAX_DEPTH)
				return api_fail(err, API_EBADREQ, "JSON nested deeper than %d levels",
				                JU_MAX_DEPTH);
			values++;
			break;
		case ']':
		case '}':
			depth--;
			break;
		case ',':
		case ':':
			if (++values > JU_MAX_VALUES)
				return api_fail(err, API_ETOOBIG, "JSON with more than %d values", JU_MAX_VALUES);
			break;
		}
	}
	return 0;
}

int ju_parse_object(const char *body, size_t len, json_t **out, api_err *err)
{
	json_error_t je;
	int rc;
	*out = NULL;
	size_t i = 0;
	while (body && i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
		i++;
	if (!body || i == len)
		return api_fail(err, API_EBADREQ, "request body is empty: a JSON object was expected");
	if ((rc = ju_scan_limits(body, len, err)))
		return rc;
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

/* Whether v nests no deeper than max levels (a scalar is 0, {} is 1).
 * Recursion stops at max + 1, whatever jansson accepted. */
static int depth_ok(json_t *v, int max)
{
	const char *k;
	size_t i;
	json_t *c;
	if (!json_is_object(v) && !json_is_array(v))
		return 1;
	if (max == 0)
		return 0;
	if (json_is_object(v)) {
		json_object_foreach(v, k, c)
			if (!depth_ok(c, max - 1))
				return 0;
	} else {
		json_array_foreach(v, i, c)
			if (!depth_ok(c, max - 1))
				return 0;
	}
	return 1;
}

int ju_meta(json_t *v, const char *what, char **out, api_err *err)
{
	*out = NULL;
	if (!json_is_object(v))
		return api_fail(err, API_EBADREQ, "%s must be a JSON object", what);
	if (!depth_ok(v, JU_META_MAX_DEPTH))
		return api_fail(err, API_EBADREQ, "%s is nested more than %d levels deep", what,
		                JU_META_MAX_DEPTH);
	char *text = json_dumps(v, JSON_COMPACT);
	if (!text)
		return api_fail(err, API_ENOMEM, "out of memory");
	size_t n = strlen(text);
	if (n > JU_META_MAX_BYTES) {
		free(text);
		return api_fail(err, API_ETOOBIG, "%s has %zu bytes of JSON, over the limit of %d", what,
		                n, JU_META_MAX_BYTES);
	}
	*out = text;
	return 0;
}

int ju_meta_parse(const char *src, size_t len, const char *what, char **out, api_err *err)
{
	json_error_t je;
	*out = NULL;
	if (len > JU_META_MAX_BYTES)
		return api_fail(err, API_ETOOBIG, "%s has %zu bytes, over the limit of %d", what, len,
		                JU_META_MAX_BYTES);
	json_t *j = json_loadb(src ? src : "", len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return api_fail(err, API_EBADREQ, "%s must be a JSON object (malformed JSON at column %d)",
		                what, je.column);
	int rc = ju_meta(j, what, out, err);
	json_decref(j);
	return rc;
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

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when the
 * bytes there are not one: overlong forms, surrogates and code points past
 * U+10FFFF are invalid, as jansson and RFC 3629 say. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t need;
	unsigned min, cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2, min = 0x80, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		need = 3, min = 0x800, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 4, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	if (n < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need;
}

char *ju_utf8_dup(const char *s)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(3 * n + 1); /* each bad byte becomes 3 */
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq((const unsigned char *)s + i, n - i);
		if (k == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3); /* U+FFFD */
			o += 3;
			i++;
		} else {
			memcpy(out + o, s + i, k);
			o += k;
			i += k;
		}
	}
	out[o] = 0;
	return out;
}

void ju_utf8_fix(char *s, size_t size)
{
	char *clean = ju_utf8_dup(s);
	size_t n;
	if (!clean) {
		/* No memory: fall back to plain ASCII in place. */
		for (char *p = s; *p; p++)
			if ((unsigned char)*p >= 0x80)
				*p = '?';
		return;
	}
	n = strlen(clean);
	if (n >= size) {
		/* Cut at a character boundary. */
		n = size - 1;
		while (n > 0 && ((unsigned char)clean[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(s, clean, n);
	s[n] = 0;
	free(clean);
}

void ju_utf8_mask(char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		size_t k = utf8_seq((const unsigned char *)s + i, n - i);
		if (k == 0)
			s[i++] = '?';
		else
			i += k;
	}
}

json_t *ju_string(const char *s)
{
	if (!s)
		return json_null();
	json_t *j = json_string(s);
	if (j)
		return j;
	char *clean = ju_utf8_dup(s);
	j = clean ? json_string(clean) : NULL;
	free(clean);
	return j;
}
