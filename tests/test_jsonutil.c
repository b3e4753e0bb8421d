/*
 * test_jsonutil: server/jsonutil.c, how the server reads client JSON: the
 * field getters (absent, null, wrong type, out of range, NUL inside a
 * string) and the exact messages that name the field, ju_scan_limits'
 * depth and value counts at and one past each limit (brackets inside
 * strings not counted), ju_parse_object on bodies that are empty, cut,
 * duplicated or not objects, the metadata limits of ju_meta and
 * ju_meta_parse, strict base64 (both alphabets, padding, whitespace, data:
 * URLs) checked against an encoder written here, the query-string parsers,
 * and the UTF-8 repair functions on every kind of invalid sequence. Bodies
 * are passed in buffers of exactly their length (no NUL after them), as
 * libmicrohttpd hands them over.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "tap.h"

/* A heap copy of s without its NUL, n bytes. */
static char *exact(const char *s, size_t n)
{
	char *p = malloc(n ? n : 1);
	if (!p)
		abort();
	memcpy(p, s, n);
	return p;
}

/* err holds code (ERR_API) and exactly text. */
static int is_err(const api_err *err, int code, const char *text)
{
	return err->domain == ERR_API && err->code == code && !strcmp(err->msg, text);
}

static json_t *obj(const char *text)
{
	json_error_t je;
	json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
	if (!j) {
		printf("# bad fixture %s: %s\n", text, je.text);
		abort();
	}
	return j;
}

static void t_int_num_bool(void)
{
	json_t *j = obj("{\"a\": 5, \"n\": null, \"r\": 1.5, \"s\": \"5\", \"t\": true, \"big\": "
	                "9223372036854775807, \"neg\": -3, \"z\": 0.0}");
	api_err e;
	int64_t v;
	CHECK(ju_int(j, "a", 1, 1, 10, &v, &e) == 0 && v == 5);
	CHECK(ju_int(j, "absent", 7, 1, 10, &v, &e) == 0 && v == 7);
	CHECK(ju_int(j, "n", 8, 1, 10, &v, &e) == 0 && v == 8); /* null is absent */
	CHECK(ju_int(NULL, "a", 9, 1, 10, &v, &e) == 0 && v == 9);
	CHECK(ju_int(j, "a", 1, 5, 5, &v, &e) == 0 && v == 5);
	CHECK(ju_int(j, "a", 1, 6, 10, &v, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'a' must be from 6 to 10"));
	CHECK(ju_int(j, "a", 1, 1, 4, &v, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'a' must be from 1 to 4"));
	CHECK(ju_int(j, "neg", 1, 0, 10, &v, &e) && is_err(&e, API_EBADREQ,
	      "field 'neg' must be from 0 to 10"));
	CHECK(ju_int(j, "big", 0, INT64_MIN, INT64_MAX, &v, &e) == 0 && v == INT64_MAX);
	static const char *const not_int[] = {"r", "s", "t", "z"};
	for (size_t i = 0; i < 4; i++) {
		char want[64];
		snprintf(want, sizeof want, "field '%s' must be an integer", not_int[i]);
		CHECKF(ju_int(j, not_int[i], 1, 0, 10, &v, &e) == API_EBADREQ &&
		       is_err(&e, API_EBADREQ, want), "%s: '%s'", not_int[i], e.msg);
	}

	double d;
	int present = -1;
	CHECK(ju_num(j, "r", 0, &d, &present, &e) == 0 && d == 1.5 && present == 1);
	CHECK(ju_num(j, "a", 0, &d, &present, &e) == 0 && d == 5 && present == 1);
	CHECK(ju_num(j, "absent", 2.5, &d, &present, &e) == 0 && d == 2.5 && present == 0);
	CHECK(ju_num(j, "n", 3.5, &d, NULL, &e) == 0 && d == 3.5);
	CHECK(ju_num(j, "s", 0, &d, &present, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 's' must be a number"));
	CHECK(ju_num(j, "t", 0, &d, NULL, &e) == API_EBADREQ);

	int b = -1;
	CHECK(ju_bool(j, "t", 0, &b, &e) == 0 && b == 1);
	CHECK(ju_bool(j, "absent", 1, &b, &e) == 0 && b == 1);
	CHECK(ju_bool(j, "n", 0, &b, &e) == 0 && b == 0);
	CHECK(ju_bool(j, "a", 0, &b, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'a' must be true or false"));
	CHECK(ju_bool(j, "s", 0, &b, &e) == API_EBADREQ);
	json_decref(j);
}

static void t_str_object_array(void)
{
	json_t *j = obj("{\"s\": \"hi\", \"e\": \"\", \"nul\": \"a\\u0000b\", \"n\": null, \"i\": 3, "
	                "\"o\": {\"x\": 1}, \"arr\": [\"a\", \"b\"], \"mixed\": [\"a\", 2], "
	                "\"anul\": [\"a\", \"b\", \"c\\u0000\"], \"empty\": []}");
	api_err e;
	const char *s = "unset";
	CHECK(ju_str(j, "s", 1, &s, &e) == 0 && !strcmp(s, "hi"));
	CHECK(ju_str(j, "e", 1, &s, &e) == 0 && !strcmp(s, ""));
	CHECK(ju_str(j, "absent", 0, &s, &e) == 0 && s == NULL);
	CHECK(ju_str(j, "n", 0, &s, &e) == 0 && s == NULL);
	CHECK(ju_str(j, "absent", 1, &s, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "missing field 'absent'"));
	CHECK(ju_str(j, "n", 1, &s, &e) == API_EBADREQ && is_err(&e, API_EBADREQ, "missing field 'n'"));
	CHECK(ju_str(j, "i", 0, &s, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'i' must be a string"));
	CHECK(ju_str(j, "nul", 0, &s, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'nul' contains a NUL character"));

	json_t *o = (json_t *)1;
	CHECK(ju_object(j, "o", &o, &e) == 0 && o == json_object_get(j, "o"));
	CHECK(ju_object(j, "absent", &o, &e) == 0 && o == NULL);
	CHECK(ju_object(j, "arr", &o, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'arr' must be a JSON object"));

	json_t *a = (json_t *)1;
	CHECK(ju_str_array(j, "arr", 1, 2, &a, &e) == 0 && a == json_object_get(j, "arr"));
	CHECK(ju_str_array(j, "empty", 1, 0, &a, &e) == 0 && json_array_size(a) == 0);
	CHECK(ju_str_array(j, "absent", 0, 5, &a, &e) == 0 && a == NULL);
	CHECK(ju_str_array(j, "absent", 1, 5, &a, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "missing field 'absent'"));
	CHECK(ju_str_array(j, "arr", 1, 1, &a, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'arr' has 2 entries, at most 1 are allowed"));
	CHECK(ju_str_array(j, "s", 1, 5, &a, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 's' must be an array of strings"));
	CHECK(ju_str_array(j, "mixed", 1, 5, &a, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'mixed'[1] must be a string"));
	CHECK(ju_str_array(j, "anul", 1, 5, &a, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "field 'anul'[2] contains a NUL character"));
	json_decref(j);
}

/* A text of depth levels of '[' (then ']'), from a buffer without NUL. */
static int scan_depth(int depth, char open, api_err *e)
{
	size_t n = (size_t)depth * 2;
	char *s = malloc(n ? n : 1);
	for (int i = 0; i < depth; i++) {
		s[i] = open;
		s[n - 1 - (size_t)i] = open == '[' ? ']' : '}';
	}
	int rc = ju_scan_limits(s, n, e);
	free(s);
	return rc;
}

static void t_scan_limits(void)
{
	api_err e;
	CHECK(scan_depth(JU_MAX_DEPTH, '[', &e) == 0);
	CHECK(scan_depth(JU_MAX_DEPTH + 1, '[', &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "JSON nested deeper than 64 levels"));
	CHECK(scan_depth(JU_MAX_DEPTH + 1, '{', &e) == API_EBADREQ);
	CHECK(scan_depth(100000, '[', &e) == API_EBADREQ);
	/* Depth is nesting, not the count of containers. */
	size_t n = 0;
	char *s = malloc(4 * 1000);
	for (int i = 0; i < 1000; i++) {
		memcpy(s + n, "[],", 3);
		n += 3;
	}
	s[n - 1] = ' ';
	CHECK(ju_scan_limits(s, n, &e) == 0);
	free(s);
	/* Brackets in strings, and escaped quotes, are not structure. */
	char text[400];
	n = (size_t)snprintf(text, sizeof text, "{\"k\": \"%s\\\"%s\"}",
	                     "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
	                     "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{");
	CHECK(ju_scan_limits(text, n, &e) == 0);
	/* The escape covers exactly one byte: a \\ then a quote closes. */
	n = (size_t)snprintf(text, sizeof text, "[\"\\\\\", %s", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
	                     "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[");
	CHECK(ju_scan_limits(text, n, &e) == API_EBADREQ);

	/* Values: the text counts 1, and each '[' '{' ',' ':' one more; an
	 * array of 99,998 commas is 100,000 values, one more comma is over. */
	size_t cap = 8 * (size_t)JU_MAX_VALUES;
	char *big = malloc(cap);
	n = 0;
	big[n++] = '[';
	for (int i = 0; i < JU_MAX_VALUES - 2; i++) {
		big[n++] = '0';
		big[n++] = ',';
	}
	big[n++] = '0';
	big[n++] = ']';
	CHECK(ju_scan_limits(big, n, &e) == 0);
	memmove(big + 3, big + 1, n - 1);
	memcpy(big + 1, "0,", 2);
	n += 2;
	CHECK(ju_scan_limits(big, n, &e) == API_ETOOBIG &&
	      is_err(&e, API_ETOOBIG, "JSON with more than 100000 values"));
	/* The same commas inside a string are one value. */
	big[0] = '"';
	big[n - 1] = '"';
	CHECK(ju_scan_limits(big, n, &e) == 0);
	/* Object members count their ':' too: 50,000 members are 100,001. */
	n = 0;
	big[n++] = '{';
	for (int i = 0; i < JU_MAX_VALUES / 2; i++)
		n += (size_t)snprintf(big + n, cap - n, "\"%x\":0,", i);
	big[n - 1] = '}';
	CHECK(ju_scan_limits(big, n, &e) == API_ETOOBIG);
	/* One member fewer: 99,999. */
	n = 0;
	big[n++] = '{';
	for (int i = 0; i < JU_MAX_VALUES / 2 - 1; i++)
		n += (size_t)snprintf(big + n, cap - n, "\"%x\":0,", i);
	big[n - 1] = '}';
	CHECK(ju_scan_limits(big, n, &e) == 0);
	free(big);
}

static int parse_exact(const char *text, size_t n, json_t **out, api_err *e)
{
	char *b = exact(text, n);
	int rc = ju_parse_object(b, n, out, e);
	free(b);
	return rc;
}

static void t_parse_object(void)
{
	json_t *j = (json_t *)1;
	api_err e;
	const char *good = "{\"a\": [1, {\"b\": null}]}";
	CHECK(parse_exact(good, strlen(good), &j, &e) == 0 && json_is_object(j));
	json_decref(j);
	static const char *const empty[] = {"", " ", "\n\r\t ", "\t"};
	for (size_t i = 0; i < 4; i++)
		CHECKF(parse_exact(empty[i], strlen(empty[i]), &j, &e) == API_EBADREQ && j == NULL &&
		       is_err(&e, API_EBADREQ, "request body is empty: a JSON object was expected"),
		       "'%s': '%s'", empty[i], e.msg);
	CHECK(ju_parse_object(NULL, 0, &j, &e) == API_EBADREQ && j == NULL &&
	      strstr(e.msg, "request body is empty"));
	CHECK(parse_exact("[1,2]", 5, &j, &e) == API_EBADREQ && j == NULL &&
	      is_err(&e, API_EBADREQ, "the request body must be a JSON object"));
	/* jansson itself refuses a bare scalar at the top. */
	CHECK(parse_exact("\"x\"", 3, &j, &e) == API_EBADREQ && j == NULL &&
	      strstr(e.msg, "malformed JSON"));
	CHECK(parse_exact("{\"a\": 1", 7, &j, &e) == API_EBADREQ && j == NULL &&
	      !strncmp(e.msg, "malformed JSON at line 1, column ", 33));
	CHECK(parse_exact("{\"a\": 1,\n \"a\": 2}", 17, &j, &e) == API_EBADREQ &&
	      !strncmp(e.msg, "malformed JSON at line 2", 24) && strstr(e.msg, "duplicate"));
	/* The length bounds the text: a valid object followed by more bytes
	 * outside len is read as the object alone. */
	CHECK(parse_exact("{\"a\": 1}garbage", 8, &j, &e) == 0);
	json_decref(j);
	CHECK(parse_exact("{} {}", 5, &j, &e) == API_EBADREQ && strstr(e.msg, "malformed JSON"));
	/* Invalid UTF-8 inside a string: malformed, and the message is UTF-8. */
	CHECK(parse_exact("{\"a\": \"\xff\"}", 10, &j, &e) == API_EBADREQ &&
	      strstr(e.msg, "malformed JSON"));
	json_t *chk = json_string(e.msg);
	CHECK(chk != NULL);
	json_decref(chk);
	/* The limits come first, with their own codes. */
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	CHECK(parse_exact(deep, 200, &j, &e) == API_EBADREQ && strstr(e.msg, "nested deeper"));
}

/* A JSON object nested depth deep: {"a":{"a":...{}}}. */
static json_t *nested(int depth)
{
	json_t *j = json_object();
	for (int i = 1; i < depth; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "a", j);
		j = o;
	}
	return j;
}

static void t_meta(void)
{
	api_err e;
	char *out = (char *)1;
	json_t *j = obj("{\"tag\": \"x\", \"n\": [1, 2.5, null, true]}");
	CHECK(ju_meta(j, "field 'meta'", &out, &e) == 0 && out &&
	      !strcmp(out, "{\"tag\":\"x\",\"n\":[1,2.5,null,true]}"));
	free(out);
	json_decref(j);
	j = obj("[1]");
	CHECK(ju_meta(j, "field 'meta'", &out, &e) == API_EBADREQ && out == NULL &&
	      is_err(&e, API_EBADREQ, "field 'meta' must be a JSON object"));
	json_decref(j);
	j = json_string("x");
	CHECK(ju_meta(j, "the meta part", &out, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "the meta part must be a JSON object"));
	json_decref(j);
	CHECK(ju_meta(NULL, "meta", &out, &e) == API_EBADREQ);

	/* Depth: the object itself is level 1. */
	j = nested(JU_META_MAX_DEPTH);
	CHECK(ju_meta(j, "meta", &out, &e) == 0 && out);
	free(out);
	json_decref(j);
	j = nested(JU_META_MAX_DEPTH + 1);
	CHECK(ju_meta(j, "meta", &out, &e) == API_EBADREQ && out == NULL &&
	      is_err(&e, API_EBADREQ, "meta is nested more than 32 levels deep"));
	json_decref(j);
	/* An array counts as a level as an object does. */
	j = nested(JU_META_MAX_DEPTH - 1);
	json_t *leaf = j;
	while (json_object_get(leaf, "a"))
		leaf = json_object_get(leaf, "a");
	json_object_set_new(leaf, "arr", json_array());
	CHECK(ju_meta(j, "meta", &out, &e) == 0);
	free(out);
	json_array_append_new(json_object_get(leaf, "arr"), json_array());
	CHECK(ju_meta(j, "meta", &out, &e) == API_EBADREQ && strstr(e.msg, "nested more than"));
	json_decref(j);

	/* Bytes: {"k":"..."} of exactly the limit, then one more. */
	size_t fill = JU_META_MAX_BYTES - 8; /* {"k":""} is 8 bytes */
	char *s = malloc(fill + 2);
	memset(s, 'v', fill + 1);
	s[fill] = 0;
	j = json_object();
	json_object_set_new(j, "k", json_string(s));
	CHECK(ju_meta(j, "meta", &out, &e) == 0 && out && strlen(out) == JU_META_MAX_BYTES);
	free(out);
	s[fill] = 'v';
	s[fill + 1] = 0;
	json_object_set_new(j, "k", json_string(s));
	CHECK(ju_meta(j, "meta", &out, &e) == API_ETOOBIG && out == NULL &&
	      is_err(&e, API_ETOOBIG, "meta has 65537 bytes of JSON, over the limit of 65536"));
	json_decref(j);
	free(s);

	/* ju_meta_parse: over the limit before parsing, then as ju_meta. */
	size_t n = JU_META_MAX_BYTES + 1;
	char *text = malloc(n);
	memset(text, ' ', n);
	text[0] = '{';
	text[n - 1] = '}';
	CHECK(ju_meta_parse(text, n, "meta", &out, &e) == API_ETOOBIG && out == NULL &&
	      is_err(&e, API_ETOOBIG, "meta has 65537 bytes, over the limit of 65536"));
	CHECK(ju_meta_parse(text, n - 1, "meta", &out, &e) == API_EBADREQ &&
	      strstr(e.msg, "meta must be a JSON object (malformed JSON at column"));
	text[n - 2] = '}';
	CHECK(ju_meta_parse(text, n - 1, "meta", &out, &e) == 0 && out && !strcmp(out, "{}"));
	free(out);
	free(text);
	char *b = exact("{\"a\":1}", 7);
	CHECK(ju_meta_parse(b, 7, "meta", &out, &e) == 0 && out && !strcmp(out, "{\"a\":1}"));
	free(out);
	free(b);
	CHECK(ju_meta_parse(NULL, 0, "meta", &out, &e) == API_EBADREQ && out == NULL);
	CHECK(ju_meta_parse("[]", 2, "meta", &out, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "meta must be a JSON object"));
	CHECK(ju_meta_parse("{\"a\":1,\"a\":2}", 13, "meta", &out, &e) == API_EBADREQ &&
	      strstr(e.msg, "malformed JSON"));
	CHECK(ju_meta_parse("{\"a\":1} x", 9, "meta", &out, &e) == API_EBADREQ &&
	      strstr(e.msg, "meta must be a JSON object (malformed JSON at column "));
}

/* Standard base64 of n bytes, written here against RFC 4648. */
static char *b64(const unsigned char *p, size_t n, int pad)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc(n / 3 * 4 + 5), *o = out;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
		             (i + 2 < n ? p[i + 2] : 0);
		*o++ = al[v >> 18 & 63];
		*o++ = al[v >> 12 & 63];
		if (i + 1 < n)
			*o++ = al[v >> 6 & 63];
		else if (pad)
			*o++ = '=';
		if (i + 2 < n)
			*o++ = al[v & 63];
		else if (pad)
			*o++ = '=';
	}
	*o = 0;
	return out;
}

static int decodes_to(const char *s, const void *want, size_t n)
{
	unsigned char *out = NULL;
	size_t len = 99;
	api_err e;
	int rc = ju_b64_decode(s, "img", &out, &len, &e);
	int good = rc == 0 && out && len == n && !memcmp(out, want, n);
	free(out);
	return good;
}

static void t_base64(void)
{
	/* Every length from 0 to 300, padded and not, against the encoder. */
	unsigned char data[300];
	uint32_t x = 7;
	for (size_t i = 0; i < sizeof data; i++) {
		x = x * 1664525u + 1013904223u;
		data[i] = (unsigned char)(x >> 24);
	}
	for (size_t n = 0; n <= sizeof data; n++) {
		for (int pad = 0; pad < 2; pad++) {
			char *s = b64(data, n, pad);
			CHECKF(decodes_to(s, data, n), "%zu bytes, pad %d", n, pad);
			free(s);
		}
	}
	CHECK(decodes_to("aGVsbG8=", "hello", 5));
	CHECK(decodes_to("aGVs\nbG8\r\n=\t ", "hello", 5));
	CHECK(decodes_to("data:image/png;base64,aGVsbG8", "hello", 5));
	/* URL-safe alphabet: - and _ for + and /. */
	CHECK(decodes_to("-_-_", "\xfb\xff\xbf", 3));
	CHECK(decodes_to("+/+/", "\xfb\xff\xbf", 3));

	static const struct {
		const char *s, *msg;
	} bad[] = {
		{"***", "field 'img' is not valid base64"},
		{"aGVsbG8=x", "field 'img' is not valid base64"}, /* data after padding */
		{"aGVsbG8===", "field 'img' is not valid base64"},
		{"aGVsb", "field 'img' is not valid base64"},     /* 6 bits left over */
		{"a", "field 'img' is not valid base64"},
		{"aGVs\x80", "field 'img' is not valid base64"},
		{"aGVs.bG8", "field 'img' is not valid base64"},
		{"data:image/png,aGVsbG8", "field 'img': a data: URL must be base64"},
		{"data:image/png;base64", "field 'img': a data: URL must be base64"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		unsigned char *out = (unsigned char *)1;
		size_t len = 99;
		api_err e;
		int rc = ju_b64_decode(bad[i].s, "img", &out, &len, &e);
		CHECKF(rc == API_EBADREQ && out == NULL && len == 0 &&
		       is_err(&e, API_EBADREQ, bad[i].msg), "'%s': %d '%s'", bad[i].s, rc, e.msg);
	}
}

static void t_query_strings(void)
{
	api_err e;
	int64_t v;
	CHECK(ju_parse_int_str("12", "k", 1, 100, &v, &e) == 0 && v == 12);
	CHECK(ju_parse_int_str("1", "k", 1, 100, &v, &e) == 0 && v == 1);
	CHECK(ju_parse_int_str("100", "k", 1, 100, &v, &e) == 0 && v == 100);
	CHECK(ju_parse_int_str("-4", "offset", -10, 0, &v, &e) == 0 && v == -4);
	static const char *const not_int[] = {"", "abc", "1x", "1.0", "1e3", "99999999999999999999"};
	for (size_t i = 0; i < sizeof not_int / sizeof *not_int; i++)
		CHECKF(ju_parse_int_str(not_int[i], "k", 1, 100, &v, &e) == API_EBADREQ &&
		       is_err(&e, API_EBADREQ, "parameter 'k' must be an integer"), "'%s': '%s'",
		       not_int[i], e.msg);
	CHECK(ju_parse_int_str("0", "k", 1, 100, &v, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "parameter 'k' must be from 1 to 100"));
	CHECK(ju_parse_int_str("101", "k", 1, 100, &v, &e) == API_EBADREQ &&
	      is_err(&e, API_EBADREQ, "parameter 'k' must be from 1 to 100"));

	int b = -1;
	static const char *const yes[] = {"true", "1", ""}, *const no[] = {"false", "0"};
	for (size_t i = 0; i < 3; i++)
		CHECK(ju_parse_bool_str(yes[i], "wait", &b, &e) == 0 && b == 1);
	for (size_t i = 0; i < 2; i++)
		CHECK(ju_parse_bool_str(no[i], "wait", &b, &e) == 0 && b == 0);
	static const char *const bad[] = {"yes", "TRUE", "2", "truex", " true"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECKF(ju_parse_bool_str(bad[i], "wait", &b, &e) == API_EBADREQ &&
		       is_err(&e, API_EBADREQ, "parameter 'wait' must be true or false"), "'%s'", bad[i]);
}

/* Each invalid input and what ju_utf8_dup makes of it ("R" is U+FFFD). */
static const struct {
	const char *in, *out;
} utf8_cases[] = {
	{"plain ascii", "plain ascii"},
	{"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", NULL}, /* valid: unchanged */
	{"\xc3\xa9\xc3", "\xc3\xa9R"},             /* cut 2-byte sequence */
	{"\xe2\x82", "RR"},                        /* cut 3-byte sequence */
	{"\xf0\x9f\x98", "RRR"},                   /* cut 4-byte sequence */
	{"\xc0\xaf", "RR"},                        /* overlong '/' */
	{"\xc1\xbf", "RR"},
	{"\xe0\x80\xaf", "RRR"},                   /* overlong, 3 bytes */
	{"\xf0\x80\x80\xaf", "RRRR"},              /* overlong, 4 bytes */
	{"\xed\xa0\x80", "RRR"},                   /* surrogate U+D800 */
	{"\xed\xbf\xbf", "RRR"},                   /* surrogate U+DFFF */
	{"\xf4\x90\x80\x80", "RRRR"},              /* U+110000 */
	{"\xf5\x80\x80\x80", "RRRR"},
	{"\xf8\x88\x80\x80\x80", "RRRRR"},         /* 5-byte form */
	{"\xfe\xff", "RR"},
	{"\x80", "R"},                             /* lone continuation */
	{"a\xbf" "b", "aRb"},
	{"\xe2\x28\xa1", "R(R"},                   /* bad second byte */
	{"\xed\x9f\xbf", NULL},                    /* U+D7FF: valid */
	{"\xee\x80\x80", NULL},                    /* U+E000: valid */
};

/* s with every "R" replaced by U+FFFD. */
static void expand(const char *s, char *out)
{
	for (; *s; s++) {
		if (*s == 'R') {
			memcpy(out, "\xef\xbf\xbd", 3);
			out += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = 0;
}

static void t_utf8_repair(void)
{
	for (size_t i = 0; i < sizeof utf8_cases / sizeof *utf8_cases; i++) {
		char want[128], masked[128];
		const char *in = utf8_cases[i].in;
		if (utf8_cases[i].out)
			expand(utf8_cases[i].out, want);
		else
			snprintf(want, sizeof want, "%s", in);
		char *got = ju_utf8_dup(in);
		CHECKF(got && !strcmp(got, want), "case %zu: dup", i);
		/* ju_string: the same repair, never NULL. */
		json_t *js = ju_string(in);
		CHECKF(js && !strcmp(json_string_value(js), want), "case %zu: ju_string", i);
		json_decref(js);
		/* In place with room: the same. */
		char buf[128];
		snprintf(buf, sizeof buf, "%s", in);
		ju_utf8_fix(buf, sizeof buf);
		CHECKF(!strcmp(buf, want), "case %zu: fix", i);
		/* Mask: each bad byte a '?', the length unchanged. */
		snprintf(masked, sizeof masked, "%s", in);
		ju_utf8_mask(masked);
		char want_mask[128];
		if (utf8_cases[i].out)
			snprintf(want_mask, sizeof want_mask, "%s", utf8_cases[i].out);
		else
			snprintf(want_mask, sizeof want_mask, "%s", in);
		for (char *p = want_mask; *p; p++)
			if (*p == 'R')
				*p = '?';
		CHECKF(!strcmp(masked, want_mask) && strlen(masked) == strlen(in), "case %zu: mask '%s'",
		       i, masked);
		free(got);
	}
	json_t *null = ju_string(NULL);
	CHECK(json_is_null(null));
	json_decref(null);

	/* ju_utf8_fix cuts at a character boundary when the repair grows
	 * past size. */
	char buf[16];
	memcpy(buf, "abcdefgh\xff\xff", 11);
	ju_utf8_fix(buf, sizeof buf); /* 8 + 2 x 3 = 14 bytes: fits */
	CHECK(!strcmp(buf, "abcdefgh\xef\xbf\xbd\xef\xbf\xbd"));
	memcpy(buf, "abcdefghij\xff\xff", 13);
	ju_utf8_fix(buf, sizeof buf); /* 10 + 6 = 16: one replacement only */
	CHECKF(!strcmp(buf, "abcdefghij\xef\xbf\xbd"), "'%s'", buf);
	memcpy(buf, "abcdefghijklm\xff", 15);
	ju_utf8_fix(buf, sizeof buf); /* 13 + 3 = 16: cut before it */
	CHECKF(!strcmp(buf, "abcdefghijklm"), "'%s'", buf);
	/* A valid string too long for size is cut too, at a boundary. */
	memcpy(buf, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 9);
	ju_utf8_fix(buf, 6);
	CHECKF(!strcmp(buf, "\xc3\xa9\xc3\xa9"), "'%s'", buf);
}

int main(void)
{
	TAP_RUN(t_int_num_bool);
	TAP_RUN(t_str_object_array);
	TAP_RUN(t_scan_limits);
	TAP_RUN(t_parse_object);
	TAP_RUN(t_meta);
	TAP_RUN(t_base64);
	TAP_RUN(t_query_strings);
	TAP_RUN(t_utf8_repair);
	return tap_done();
}
