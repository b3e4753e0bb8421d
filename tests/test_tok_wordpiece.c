/*
 * test_tok_wordpiece: Chinese-CLIP's WordPiece tokenizer (model/
 * tok_wordpiece.c) on the reference kit's real vocabulary
 * ($CLIPD_REFERENCE/tiny-cn-clip-a: vocab.txt and the ids and attention
 * masks of expected.json, made by Hugging Face's BertTokenizer v4.44.2);
 * this suite's own texts against tests/tok_wp_ref.py (argv[1]: the README's
 * rules in Python, stdlib unicodedata only), at ctx 52 and at 512 (which
 * crosses the 4 KB chunks); special-token strings, truncation, invalid
 * UTF-8, damaged vocabularies, the work bound on 10 MB texts (counted, not
 * timed) and concurrent use of one tokenizer.
 */
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "tok_wordpiece_int.h"

#define CTX 52
#define WIDE 512
#define BIG (10u << 20)

static char vocab[600];    /* $CLIPD_REFERENCE/tiny-cn-clip-a/vocab.txt */
static char tmp[512];      /* scratch directory, removed at the end */
static const char *ref_py; /* tests/tok_wp_ref.py */
static tok_wp *shared;

static int ntexts;
static char **texts;
static int32_t (*want)[CTX];
static int *want_len;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int enc(const char *text, int32_t *ids, int ctx, int *len)
{
	clip_err err = {0};
	int rc = tok_wp_encode(shared, text, ids, ctx, len, &err);
	if (rc != CLIP_OK)
		printf("# tok_wp_encode: %s\n", err.msg);
	return rc;
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
	want_len = calloc((size_t)ntexts, sizeof *want_len);
	for (int i = 0; i < ntexts; i++) {
		json_t *e = json_array_get(arr, (size_t)i);
		json_t *ids = json_object_get(e, "ids");
		json_t *mask = json_object_get(e, "attention_mask");
		texts[i] = strdup(json_string_value(json_object_get(e, "text")));
		if (json_array_size(ids) != CTX || json_array_size(mask) != CTX) {
			printf("# text %d: %zu ids, %zu mask\n", i, json_array_size(ids),
			       json_array_size(mask));
			json_decref(root);
			return -1;
		}
		for (int k = 0; k < CTX; k++) {
			want[i][k] = (int32_t)json_integer_value(json_array_get(ids, (size_t)k));
			want_len[i] += (int)json_integer_value(json_array_get(mask, (size_t)k));
		}
	}
	json_decref(root);
	return 0;
}

/* Index of the first difference of a and b over n, or -1. */
static int first_diff(const int32_t *a, const int32_t *b, int n)
{
	for (int k = 0; k < n; k++)
		if (a[k] != b[k])
			return k;
	return -1;
}

static void t_open_reference(void)
{
	CHECK(tok_wp_vocab_size(shared) == 21128);
}

static void t_reference_ids(void)
{
	REQUIRE(ntexts >= 20);
	for (int i = 0; i < ntexts; i++) {
		int32_t ids[CTX];
		int len = -1;
		REQUIRE(enc(texts[i], ids, CTX, &len) == CLIP_OK);
		int d = first_diff(ids, want[i], CTX);
		CHECKF(d < 0, "text %d \"%.40s\": position %d is %d, want %d", i, texts[i], d,
		       d < 0 ? 0 : ids[d], d < 0 ? 0 : want[i][d]);
		CHECKF(len == want_len[i], "text %d: len %d, mask sum %d", i, len, want_len[i]);
	}
}

/* ---- own texts against tok_wp_ref.py -------------------------------------- */

static char *repeat(const char *s, int times, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);
	char *r = malloc(n * (size_t)times + t + 1);
	for (int i = 0; i < times; i++)
		memcpy(r + n * (size_t)i, s, n);
	memcpy(r + n * (size_t)times, tail, t + 1);
	return r;
}

#define NGEN 40

typedef struct sbuf_t {
	char *p;
	size_t n, cap;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s)
{
	size_t l = strlen(s);
	if (b->n + l + 1 > b->cap) {
		b->cap = (b->n + l + 1) * 2;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, s, l + 1);
	b->n += l;
}

static char **own_texts(int *count)
{
	static const char *fixed[] = {
		/* mixed scripts */
		"Hello世界мир こんにちは 안녕하세요 العربية हिन्दी ελληνικά",
		"北京abc123的Test東京タワー",
		/* full-width forms stay (no NFKC); CJK punctuation */
		"ＡＢＣ１２３，。！？「」ｈｅｌｌｏ　ｗｏｒｌｄ",
		/* characters outside the vocabulary */
		"🚀😂❤🐱 😂 ❤ 🧑‍🚀 ❤️ \xF0\x9F\x8F\xB3\xEF\xB8\x8F\xE2\x80\x8D\xF0\x9F\x8C\x88",
		"\xEE\x80\x80 private use, ༀ, ꙮ, 𓀀",
		/* special-token strings */
		"a [PAD] b [MASK] c [UNK][CLS][SEP]",
		"[mask] [Pad] [[CLS]] [SEP [MAS K] [PAD]x",
		"[PAD]",
		/* U+2028, U+2029, U+0085 */
		"line\xE2\x80\xA8sep\xE2\x80\xA9para\xC2\x85next",
		/* control and format characters, white space */
		"a\x01" "b\x7f" "c\xE2\x80\x8B" "d\xC2\xAD" "e\tf\ng\rh\x0bi\x0cj\x1c" "k\xE3\x80\x80l\xC2\xA0m",
		"\xEF\xBF\xBD replacement\xEF\xBF\xBD" "char",
		/* lower-casing, accents, decompositions */
		"İstanbul ΣΑΣ ΟΔΟΣ Straße ǅ",
		"café naïve Å e\xCC\x81 ≠ a≠b ≮x≯ ñ ü ぱが ḱ",
		"한국어 ㄱ ㅏ",
		"x² ℃ ½ ™ ﬁ Ⅻ",
		/* WordPiece splits and exactly 100 / 101 characters */
		"unaffable tokenization playing 15便士 T-shirt的价格",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b",
		"$+<=>^|~` a$b+c",
		"",
		"   ",
	};
	int nf = (int)(sizeof fixed / sizeof fixed[0]);
	char **t = calloc((size_t)nf + 16 + NGEN, sizeof *t);
	int n = 0;
	for (int i = 0; i < nf; i++)
		t[n++] = strdup(fixed[i]);
	/* long words and the chunks of 4 KB around them */
	t[n++] = repeat("supercalifragilistic", 6, " end");
	t[n++] = repeat("a", 5000, " hello 世界");
	t[n++] = repeat("x", 4090, " 中文 abc def");
	t[n++] = repeat("a\xCC\x81", 3000, "!b");
	t[n++] = repeat("\xCC\x81", 5000, "a b");
	t[n++] = repeat("\xE2\x80\x8B", 3000, "hello world");
	t[n++] = repeat("≠", 2000, "");
	t[n++] = repeat("中", 3000, "");
	t[n++] = repeat("word, ", 1000, "");
	t[n++] = repeat("ab\xCC\x81", 2000, " [MASK] z");
	t[n++] = repeat("é", 1500, ". next");
	t[n++] = repeat("hello world ", 400, "");
	/* generated: pieces that meet at chunk cuts, long runs, marks, specials */
	static const char *pool[] = {
		"a", "Ab", "ing", "中", "國", " ", "\t", "\n", ",", "!", "[", "]", "[PAD]", "[MASK]",
		"\xCC\x81", "\xE2\x80\x8B", "\xE2\x80\xA8", "≠", "é", "Σ", "İ", "ｈ", "１", "😂",
		"\xEE\x80\x80", "\x01", "\xC2\xA0", "ﬁ", "가", "ぱ", "\xEF\xBF\xBD", "x²", "#",
	};
	unsigned seed = 12345;
	for (int g = 0; g < NGEN; g++) {
		sbuf_t b = {0};
		int parts = 50 + g * 40;
		for (int k = 0; k < parts; k++) {
			seed = seed * 1103515245u + 12345u;
			unsigned r = (seed >> 16) % (sizeof pool / sizeof pool[0]);
			/* long runs of one piece now and then */
			int times = (seed >> 8) % 97 == 0 ? 1500 : 1;
			for (int m = 0; m < times; m++)
				sb_add(&b, pool[r]);
		}
		t[n++] = b.p;
	}
	*count = n;
	return t;
}

/* Runs tok_wp_ref.py on the texts at ctx; returns its JSON array. */
static json_t *run_ref(char **t, int n, int ctx)
{
	char in[600], out[600], cmd[2000];
	json_t *arr = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(arr, json_string(t[i]));
	snprintf(in, sizeof in, "%s/own.json", tmp);
	snprintf(out, sizeof out, "%s/own_ids.json", tmp);
	int rc = json_dump_file(arr, in, 0);
	json_decref(arr);
	if (rc != 0)
		return NULL;
	snprintf(cmd, sizeof cmd, "python3 '%s' '%s' %d '%s' '%s'", ref_py, vocab, ctx, in, out);
	if (system(cmd) != 0) {
		printf("# %s failed\n", cmd);
		return NULL;
	}
	json_error_t jerr;
	return json_load_file(out, 0, &jerr);
}

static void own_at(int ctx)
{
	int n;
	char **t = own_texts(&n);
	json_t *ref = run_ref(t, n, ctx);
	int32_t *ids = malloc(sizeof *ids * (size_t)ctx), *w = malloc(sizeof *w * (size_t)ctx);
	int multi = 0, runs = 0;
	CHECK(json_array_size(ref) == (size_t)n);
	for (int i = 0; ref && i < n && (size_t)i < json_array_size(ref); i++) {
		json_t *e = json_array_get(ref, (size_t)i);
		json_t *wi = json_object_get(e, "ids");
		int wl = (int)json_integer_value(json_object_get(e, "len")), len = -1;
		for (int k = 0; k < ctx; k++)
			w[k] = (int32_t)json_integer_value(json_array_get(wi, (size_t)k));
		tok_wp_stats st;
		clip_err err = {0};
		if (tok_wp_encode_stats(shared, t[i], ids, ctx, &len, &st, &err) != CLIP_OK) {
			CHECKF(0, "own text %d failed: %s", i, err.msg);
			continue;
		}
		multi += st.chunks > 1;
		runs += st.long_runs > 0;
		int d = first_diff(ids, w, ctx);
		CHECKF(d < 0, "ctx %d, own text %d \"%.30s\": position %d is %d, want %d", ctx, i, t[i],
		       d, d < 0 ? 0 : ids[d], d < 0 ? 0 : w[d]);
		CHECKF(len == wl, "ctx %d, own text %d: len %d, want %d", ctx, i, len, wl);
	}
	/* the chunk cuts and the long runs were exercised */
	printf("# ctx %d: %d texts in several chunks, %d with a long run\n", ctx, multi, runs);
	if (ctx == WIDE)
		CHECK(multi >= 5 && runs >= 5);
	json_decref(ref);
	for (int i = 0; i < n; i++)
		free(t[i]);
	free(t);
	free(ids);
	free(w);
}

static void t_own_texts_ctx52(void)
{
	own_at(CTX);
}

static void t_own_texts_ctx512(void)
{
	own_at(WIDE);
}

/* A [PAD] written in the text is id 0 inside the mask; [mask] is text. */
static void t_specials(void)
{
	int32_t ids[CTX];
	int len;
	REQUIRE(enc("[PAD] [MASK]", ids, CTX, &len) == CLIP_OK);
	CHECK(len == 4 && ids[0] == 101 && ids[1] == 0 && ids[2] == 103 && ids[3] == 102);
	REQUIRE(enc("[mask]", ids, CTX, &len) == CLIP_OK);
	CHECK(len > 3 && ids[1] != 103);
}

static void t_truncation(void)
{
	int32_t ids[CTX], small[2];
	int len;
	clip_err err = {0};
	REQUIRE(enc("中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 "
	            "中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中 中",
	            ids, CTX, &len) == CLIP_OK);
	CHECK(len == CTX && ids[0] == 101 && ids[CTX - 1] == 102 && ids[CTX - 2] == ids[1]);
	REQUIRE(enc("hello", small, 2, &len) == CLIP_OK);
	CHECK(len == 2 && small[0] == 101 && small[1] == 102);
	CHECK(tok_wp_encode(shared, "hello", small, 1, &len, &err) == CLIP_EINVAL);
	CHECK(tok_wp_encode(shared, NULL, ids, CTX, &len, &err) == CLIP_EINVAL && len == 0);
}

static void t_invalid_utf8(void)
{
	static const char *bad[] = {"\xff", "abc\xc3", "\xc0\xaf", "\xed\xa0\x80", "ok \xf4\x90\x80\x80"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int32_t ids[CTX];
		int len = 7;
		clip_err err = {0};
		CHECKF(tok_wp_encode(shared, bad[i], ids, CTX, &len, &err) == CLIP_ETEXT, "bad %zu", i);
		int nz = 0;
		for (int k = 0; k < CTX; k++)
			nz += ids[k] != 0;
		CHECK(len == 0 && nz == 0);
	}
}

static int open_rc(const char *path, clip_err *err)
{
	tok_wp *t = (tok_wp *)1;
	int rc = tok_wp_open(path, &t, err);
	if (rc != CLIP_OK)
		CHECK(t == NULL);
	tok_wp_close(t);
	return rc;
}

static void t_bad_vocab_files(void)
{
	char p[700];
	clip_err err = {0};
	const char *nomask = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n";
	REQUIRE(write_tmp("nomask.txt", nomask, strlen(nomask), p, sizeof p) == 0);
	CHECK(open_rc(p, &err) == CLIP_EMODEL && strstr(err.msg, "[MASK]") &&
	      strstr(err.msg, "nomask.txt"));
	REQUIRE(write_tmp("empty.txt", "", 0, p, sizeof p) == 0);
	CHECK(open_rc(p, &err) == CLIP_EMODEL && strstr(err.msg, "empty"));
	const char *badutf = "[PAD]\n[UNK]\n\xff\xfe\n[CLS]\n[SEP]\n[MASK]\n";
	REQUIRE(write_tmp("badutf.txt", badutf, strlen(badutf), p, sizeof p) == 0);
	CHECK(open_rc(p, &err) == CLIP_EMODEL && strstr(err.msg, "line 3"));
	CHECK(open_rc(tmp, &err) == CLIP_EIO);   /* a directory */
	snprintf(p, sizeof p, "%s/absent.txt", tmp);
	CHECK(open_rc(p, &err) == CLIP_EIO);
	CHECK(tok_wp_open(p, NULL, &err) == CLIP_EINVAL);

	/* CRLF line ends read as Python's text mode does; a later duplicate wins */
	const char *crlf = "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello\r\n##lo\rhel\nhello";
	REQUIRE(write_tmp("crlf.txt", crlf, strlen(crlf), p, sizeof p) == 0);
	tok_wp *t = NULL;
	REQUIRE(tok_wp_open(p, &t, &err) == CLIP_OK);
	int32_t ids[8];
	int len;
	CHECK(tok_wp_vocab_size(t) == 9);
	CHECK(tok_wp_encode(t, "hello hello", ids, 8, &len, &err) == CLIP_OK);
	CHECK(len == 4 && ids[0] == 2 && ids[1] == 8 && ids[2] == 8 && ids[3] == 3);
	CHECK(tok_wp_encode(t, "hello hello", ids, 8, &len, &err) == CLIP_OK);
	CHECK(tok_wp_encode(t, "hello hellx", ids, 8, &len, &err) == CLIP_OK);
	CHECK(len == 4 && ids[2] == 1);   /* no piece for "x": the whole word is [UNK] */
	tok_wp_close(t);
}

/* 10 MB texts: the pipeline sees a few KB; a 10 MB word is read a
 * character at a time without normalising it. */
static void t_long_text_bounded(void)
{
	static const char *unit[] = {"a b c ", "中", "a", "hello, "};
	for (size_t u = 0; u < sizeof unit / sizeof unit[0]; u++) {
		size_t n = strlen(unit[u]);
		char *big = malloc(BIG + 16);
		REQUIRE(big);
		size_t k = 0;
		for (; k + n <= BIG; k += n)
			memcpy(big + k, unit[u], n);
		memcpy(big + k, " 你", strlen(" 你") + 1);
		int32_t ids[CTX];
		int len = 0;
		tok_wp_stats st;
		clip_err err = {0};
		REQUIRE(tok_wp_encode_stats(shared, big, ids, CTX, &len, &st, &err) == CLIP_OK);
		printf("# unit %zu: len %d, %zu bytes normalised in %zu chunks, %zu long runs, %zu run bytes\n",
		       u, len, st.normalised_bytes, st.chunks, st.long_runs, st.run_bytes);
		CHECK(st.normalised_bytes <= 3 * 4096);
		if (u == 2) {
			/* one 10 MB word: [UNK], then the 你 after it */
			CHECK(len == 4 && ids[1] == 100 && ids[2] == 872 && st.long_runs == 1);
		} else {
			CHECK(len == CTX && st.run_bytes == 0);
		}
		free(big);
	}
}

static void *thread_main(void *arg)
{
	long bad = 0;
	(void)arg;
	for (int r = 0; r < 20; r++)
		for (int i = 0; i < ntexts; i++) {
			int32_t ids[CTX];
			int len;
			clip_err err = {0};
			if (tok_wp_encode(shared, texts[i], ids, CTX, &len, &err) != CLIP_OK ||
			    first_diff(ids, want[i], CTX) >= 0 || len != want_len[i])
				bad++;
		}
	return (void *)bad;
}

static void t_threads(void)
{
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		REQUIRE(pthread_create(&th[i], NULL, thread_main, NULL) == 0);
	long bad = 0;
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(th[i], &r);
		bad += (long)r;
	}
	CHECK(bad == 0);
}

int main(int argc, char **argv)
{
	const char *r = getenv("CLIPD_REFERENCE");
	const char *base = getenv("TMPDIR");
	char dir[520];
	clip_err err = {0};
	if (!r || !*r || argc < 2) {
		printf("Bail out! CLIPD_REFERENCE is not set, or no tok_wp_ref.py argument\n");
		return 1;
	}
	ref_py = argv[1];
	snprintf(dir, sizeof dir, "%s/tiny-cn-clip-a", r);
	snprintf(vocab, sizeof vocab, "%s/vocab.txt", dir);
	snprintf(tmp, sizeof tmp, "%s/test_tok_wordpiece.XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmp)) {
		printf("Bail out! mkdtemp %s failed\n", tmp);
		return 1;
	}
	if (load_expected(dir) != 0 || tok_wp_open(vocab, &shared, &err) != CLIP_OK) {
		printf("Bail out! cannot load the reference kit: %s\n", err.msg);
		nftw(tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		return 1;
	}

	TAP_RUN(t_open_reference);
	TAP_RUN(t_reference_ids);
	TAP_RUN(t_own_texts_ctx52);
	TAP_RUN(t_own_texts_ctx512);
	TAP_RUN(t_specials);
	TAP_RUN(t_truncation);
	TAP_RUN(t_invalid_utf8);
	TAP_RUN(t_bad_vocab_files);
	TAP_RUN(t_long_text_bounded);
	TAP_RUN(t_threads);

	tok_wp_close(shared);
	for (int i = 0; i < ntexts; i++)
		free(texts[i]);
	free(texts);
	free(want);
	free(want_len);
	nftw(tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
