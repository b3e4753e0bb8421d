/*
 * test_tok_spm: the SentencePiece tokenizers (model/tok_spm.c) on the
 * reference kit's SigLIP model ($CLIPD_REFERENCE/tiny-siglip-a: spiece.model
 * and the ids of expected.json, made by Hugging Face's SiglipTokenizer),
 * special-token strings, truncation, invalid UTF-8, missing and damaged
 * model files, the work bound on long texts (counted, not timed) and
 * concurrent use of one tokenizer. The id-for-id comparison with the
 * library on generated texts, both styles, is tests/tok_spm_diff.py.
 */
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "tok_spm_int.h"

#define CTX 64
#define BIG (10u << 20)

static char model[600];    /* $CLIPD_REFERENCE/tiny-siglip-a/spiece.model */
static char tmp[512];      /* scratch directory, removed at the end */
static tok_spm *shared;

static int ntexts;
static const char **texts;
static int32_t (*want)[CTX];

static int enc(const char *text, int32_t ids[CTX], int *len)
{
	clip_err err = {0};
	int rc = tok_spm_encode(shared, text, ids, CTX, len, &err);
	if (rc != CLIP_OK)
		printf("# tok_spm_encode: %s\n", err.msg);
	return rc;
}

/* Whether a and b give the same ids[CTX] (their lengths may differ: a
 * </s> written in the text is an id like the padding). */
static int same_ids(const char *a, const char *b)
{
	int32_t x[CTX], y[CTX];
	int lx, ly;
	if (enc(a, x, &lx) != CLIP_OK || enc(b, y, &ly) != CLIP_OK)
		return 0;
	return memcmp(x, y, sizeof x) == 0;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (buf)
		*len = (size_t)n;
	return buf;
}

static int write_tmp(const char *name, const void *data, size_t len, char *path, size_t cap)
{
	snprintf(path, cap, "%s/%s", tmp, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(data, 1, len, f);
	return fclose(f) == 0 && w == len ? 0 : -1;
}

static int load_expected(const char *dir)
{
	char p[600];
	json_error_t jerr;
	snprintf(p, sizeof p, "%s/expected.json", dir);
	json_t *root = json_load_file(p, 0, &jerr);
	json_t *arr = json_object_get(root, "texts");
	if (!json_is_array(arr)) {
		printf("# %s: no texts array (%s)\n", p, jerr.text);
		json_decref(root);
		return -1;
	}
	ntexts = (int)json_array_size(arr);
	texts = calloc((size_t)ntexts, sizeof *texts);
	want = calloc((size_t)ntexts, sizeof *want);
	for (int i = 0; i < ntexts; i++) {
		json_t *e = json_array_get(arr, (size_t)i);
		json_t *ids = json_object_get(e, "ids");
		texts[i] = strdup(json_string_value(json_object_get(e, "text")));
		if (json_array_size(ids) != CTX) {
			printf("# text %d: %zu ids\n", i, json_array_size(ids));
			json_decref(root);
			return -1;
		}
		for (int k = 0; k < CTX; k++)
			want[i][k] = (int32_t)json_integer_value(json_array_get(ids, (size_t)k));
	}
	json_decref(root);
	return 0;
}

static void t_open_reference(void)
{
	CHECK(tok_spm_vocab_size(shared) == 2000);
	CHECK(tok_spm_pad_id(shared) == 1);   /* pad_token = "</s>" */
	CHECK(tok_spm_eos_id(shared) == 1);
}

static void t_reference_ids(void)
{
	REQUIRE(ntexts >= 20);
	for (int i = 0; i < ntexts; i++) {
		int32_t ids[CTX];
		int len = -1;
		REQUIRE(enc(texts[i], ids, &len) == CLIP_OK);
		int diff = -1;
		for (int k = 0; k < CTX && diff < 0; k++)
			if (ids[k] != want[i][k])
				diff = k;
		CHECKF(diff < 0, "text %d \"%.40s\": position %d is %d, want %d", i, texts[i], diff,
		       diff < 0 ? 0 : ids[diff], diff < 0 ? 0 : want[i][diff]);
		CHECKF(len >= 1 && len <= CTX && ids[len - 1] == 1, "text %d: len %d", i, len);
	}
}

/* Special-token strings become their ids, after lower-casing; the white
 * space around them goes. */
static void t_specials(void)
{
	int32_t a[CTX], b[CTX], ids[CTX];
	int la, lb, len;
	CHECK(same_ids("hi</s>", "hi"));       /* </s>, then EOS, then </s> padding */
	CHECK(same_ids("hi </S>  ", "hi"));
	REQUIRE(enc("hi</s>", ids, &len) == CLIP_OK);
	CHECK(len == 3 && ids[1] == 1 && ids[2] == 1);
	REQUIRE(enc("a", a, &la) == CLIP_OK && enc("b", b, &lb) == CLIP_OK);
	REQUIRE(la == 2 && lb == 2);
	REQUIRE(enc("A <UNK> b", ids, &len) == CLIP_OK);
	CHECK(len == 4 && ids[0] == a[0] && ids[1] == 2 && ids[2] == b[0] && ids[3] == 1);
	REQUIRE(enc("a<unk>b", ids, &len) == CLIP_OK);
	CHECK(len == 4 && ids[0] == a[0] && ids[1] == 2 && ids[2] == b[0]);
	/* not special: the punctuation goes, the letters stay */
	CHECK(same_ids("<s>", "s"));
	CHECK(same_ids("<pad>", "pad"));
}

static void t_clean_up(void)
{
	CHECK(same_ids("black-and-white", "blackandwhite"));
	CHECK(same_ids("don't", "dont"));
	CHECK(same_ids("  a \t\n\xe3\x80\x80 b  ", "a b"));
	CHECK(same_ids("a\xe2\x96\x81\xe2\x96\x81 b", "a b"));   /* U+2581 is a space */
	CHECK(same_ids("CAF\xc3\x89", "caf\xc3\xa9"));
	CHECK(same_ids("\xef\xbc\xa1\xef\xbc\xa2", "ab"));       /* NFKC, by the model */
	CHECK(!same_ids("a\xe2\x80\x94" "b", "ab"));             /* non-ASCII punctuation stays */
}

static void t_truncation(void)
{
	char text[4096] = "";
	int32_t ids[CTX], small[3];
	int len;
	clip_err err = {0};
	for (int i = 0; i < 100; i++)
		strcat(text, "cat dog ");
	REQUIRE(enc(text, ids, &len) == CLIP_OK);
	CHECK(len == CTX && ids[CTX - 1] == 1);
	for (int i = 0; i < CTX - 1; i++)
		CHECK(ids[i] != 1);
	/* any ctx: EOS kept last */
	REQUIRE(tok_spm_encode(shared, text, small, 3, &len, &err) == CLIP_OK);
	CHECK(len == 3 && small[0] == ids[0] && small[1] == ids[1] && small[2] == 1);
	REQUIRE(tok_spm_encode(shared, text, small, 2, &len, &err) == CLIP_OK);
	CHECK(len == 2 && small[0] == ids[0] && small[1] == 1);
	CHECK(tok_spm_encode(shared, text, small, 1, &len, &err) == CLIP_EINVAL);
	CHECK(tok_spm_encode(shared, NULL, ids, CTX, &len, &err) == CLIP_EINVAL);
	CHECK(tok_spm_encode(shared, "a", NULL, CTX, &len, &err) == CLIP_EINVAL);
	CHECK(tok_spm_encode(shared, "a cat", ids, CTX, NULL, NULL) == CLIP_OK);
}

static void t_invalid_utf8(void)
{
	static const char *const bad[] = {"\xff", "a\xc0\xaf" "b", "\xed\xa0\x80", "\xf4\x90\x80\x80",
	                                  "abc\xe2\x82", "\x80", "ok \xc3"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		int32_t ids[CTX];
		int len = 7;
		clip_err err = {0};
		CHECKF(tok_spm_encode(shared, bad[i], ids, CTX, &len, &err) == CLIP_ETEXT, "text %zu", i);
		CHECK(len == 0 && strstr(err.msg, "UTF-8") != NULL);
		for (int k = 0; k < CTX; k++)
			CHECK(ids[k] == 1);
	}
}

static void t_bad_model_files(void)
{
	char p[600];
	size_t n = 0;
	tok_spm *t = (tok_spm *)1;
	clip_err err = {0};

	snprintf(p, sizeof p, "%s/no-such.model", tmp);
	CHECK(tok_spm_open(p, TOK_SPM_SIGLIP, &t, &err) == CLIP_EMODEL);
	CHECK(t == NULL && strstr(err.msg, "no-such.model") != NULL);

	static const char garbage[] = "garbage\0\x01 not a model";
	REQUIRE(write_tmp("garbage.model", garbage, sizeof garbage - 1, p, sizeof p) == 0);
	err.msg[0] = '\0';
	CHECK(tok_spm_open(p, TOK_SPM_SIGLIP, &t, &err) == CLIP_EMODEL);
	CHECK(t == NULL && strstr(err.msg, "not a SentencePiece model") != NULL);

	REQUIRE(write_tmp("empty.model", "", 0, p, sizeof p) == 0);
	err.msg[0] = '\0';
	CHECK(tok_spm_open(p, TOK_SPM_GEMMA, &t, &err) == CLIP_EMODEL);
	CHECK(t == NULL && err.msg[0] != '\0');

	char *data = read_all(model, &n);
	REQUIRE(data != NULL && n > 1000);
	REQUIRE(write_tmp("half.model", data, n / 2, p, sizeof p) == 0);
	err.msg[0] = '\0';
	CHECK(tok_spm_open(p, TOK_SPM_SIGLIP, &t, &err) == CLIP_EMODEL);
	CHECK(t == NULL && err.msg[0] != '\0');
	free(data);

	/* a directory, and a model without the style's pieces */
	CHECK(tok_spm_open(tmp, TOK_SPM_SIGLIP, &t, &err) == CLIP_EMODEL && t == NULL);
	CHECK(tok_spm_open(model, TOK_SPM_GEMMA, &t, &err) == CLIP_EMODEL);
	CHECK(t == NULL && strstr(err.msg, "<eos>") != NULL);
	CHECK(tok_spm_open(NULL, TOK_SPM_SIGLIP, &t, &err) == CLIP_EINVAL && t == NULL);
	CHECK(tok_spm_open(model, TOK_SPM_SIGLIP, NULL, &err) == CLIP_EINVAL);
	tok_spm_close(NULL);
}

/* A 10 MB text made of unit repeated. */
static char *big_text(const char *head, const char *unit)
{
	size_t lh = strlen(head), lu = strlen(unit);
	char *s = malloc(BIG + lh + lu + 1);
	if (!s)
		return NULL;
	memcpy(s, head, lh);
	size_t n = lh;
	while (n < BIG) {
		memcpy(s + n, unit, lu);
		n += lu;
	}
	s[n] = '\0';
	return s;
}

/* The work of a call on a 10 MB text is that of a few KB when the first
 * KB give ctx-1 pieces, and at most about 2 * TOK_SPM_PREFIX_MAX when
 * nothing does; counted by tok_spm_encode_stats. */
static void t_long_text_bounded(void)
{
	int32_t ids[CTX], ref[CTX];
	int len, lref;
	tok_spm_stats st;
	clip_err err = {0};

	/* words: one attempt, a cut at a space, exact */
	char *s = big_text("", "a photo of a cat ");
	REQUIRE(s != NULL);
	REQUIRE(tok_spm_encode_stats(shared, s, ids, CTX, &len, &st, &err) == CLIP_OK);
	CHECK(len == CTX && ids[CTX - 1] == 1);
	CHECKF(st.attempts == 1 && st.bytes_read <= TOK_SPM_PREFIX_FIRST &&
	       st.bytes_encoded <= TOK_SPM_PREFIX_FIRST && st.exact == 1,
	       "attempts %zu, read %zu, encoded %zu, exact %d", st.attempts, st.bytes_read,
	       st.bytes_encoded, st.exact);
	s[17 * 40] = '\0';   /* 40 units: 200 pieces, more than kept */
	REQUIRE(enc(s, ref, &lref) == CLIP_OK);
	CHECK(lref == CTX && memcmp(ids, ref, sizeof ids) == 0);
	free(s);

	/* one word of 10 MB: one attempt, cut inside the run */
	s = big_text("", "a");
	REQUIRE(s != NULL);
	REQUIRE(tok_spm_encode_stats(shared, s, ids, CTX, &len, &st, &err) == CLIP_OK);
	CHECK(len == CTX);
	CHECKF(st.attempts == 1 && st.bytes_read <= TOK_SPM_PREFIX_FIRST && st.exact == 0,
	       "attempts %zu, read %zu, exact %d", st.attempts, st.bytes_read, st.exact);
	free(s);

	/* 10 MB of white space before a word: every attempt up to the limit,
	 * the word not reached (the bound's documented case) */
	s = big_text("", " ");
	REQUIRE(s != NULL);
	memcpy(s + BIG - 4, "cat", 3);
	REQUIRE(tok_spm_encode_stats(shared, s, ids, CTX, &len, &st, &err) == CLIP_OK);
	CHECK(len == 1 && ids[0] == 1);
	CHECKF(st.bytes_read <= 2 * TOK_SPM_PREFIX_MAX && st.bytes_encoded == 0 && st.exact == 0 &&
	       st.attempts <= 8, "attempts %zu, read %zu, encoded %zu, exact %d", st.attempts,
	       st.bytes_read, st.bytes_encoded, st.exact);
	free(s);

	/* punctuation, then words: the words are reached within the bound */
	s = big_text("", "a cat ");
	REQUIRE(s != NULL);
	memset(s, '!', 6000);
	REQUIRE(tok_spm_encode_stats(shared, s, ids, CTX, &len, &st, &err) == CLIP_OK);
	CHECK(len == CTX && st.exact == 1 && st.attempts == 2 && st.bytes_read <= 3 * TOK_SPM_PREFIX_FIRST);
	free(s);
}

typedef struct worker {
	int failures;
} worker;

static void *work(void *arg)
{
	worker *w = arg;
	for (int round = 0; round < 20; round++)
		for (int i = 0; i < ntexts; i++) {
			int32_t ids[CTX];
			clip_err err = {0};
			if (tok_spm_encode(shared, texts[i], ids, CTX, NULL, &err) != CLIP_OK ||
			    memcmp(ids, want[i], sizeof ids) != 0)
				w->failures++;
		}
	return NULL;
}

static void t_threads(void)
{
	pthread_t th[4];
	worker w[4] = {{0}};
	for (int i = 0; i < 4; i++)
		REQUIRE(pthread_create(&th[i], NULL, work, &w[i]) == 0);
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECKF(w[i].failures == 0, "thread %d: %d wrong results", i, w[i].failures);
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int main(void)
{
	const char *r = getenv("CLIPD_REFERENCE");
	const char *base = getenv("TMPDIR");
	char dir[520];
	clip_err err = {0};
	if (!r || !*r) {
		printf("Bail out! CLIPD_REFERENCE is not set\n");
		return 1;
	}
	snprintf(dir, sizeof dir, "%s/tiny-siglip-a", r);
	snprintf(model, sizeof model, "%s/spiece.model", dir);
	snprintf(tmp, sizeof tmp, "%s/test_tok_spm.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmp)) {
		printf("Bail out! mkdtemp %s failed\n", tmp);
		return 1;
	}
	if (load_expected(dir) != 0 || tok_spm_open(model, TOK_SPM_SIGLIP, &shared, &err) != CLIP_OK) {
		printf("Bail out! cannot load the reference kit: %s\n", err.msg);
		nftw(tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		return 1;
	}

	TAP_RUN(t_open_reference);
	TAP_RUN(t_reference_ids);
	TAP_RUN(t_specials);
	TAP_RUN(t_clean_up);
	TAP_RUN(t_truncation);
	TAP_RUN(t_invalid_utf8);
	TAP_RUN(t_bad_model_files);
	TAP_RUN(t_long_text_bounded);
	TAP_RUN(t_threads);

	tok_spm_close(shared);
	for (int i = 0; i < ntexts; i++)
		free((void *)texts[i]);
	free(texts);
	free(want);
	nftw(tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
