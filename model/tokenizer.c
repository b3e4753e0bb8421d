/*
 * tokenizer.c: CLIP's byte-level BPE tokenizer (API in tokenizer_int.h).
 *
 * tok_encode reproduces open_clip v2.20's SimpleTokenizer.encode and
 * tokenize():
 *   1. html.unescape(html.unescape(text)): numeric references with Python's
 *      replacements for invalid ones, and the named entities of HTML 4 plus
 *      &apos; and the upper-case aliases, with and without ';' exactly where
 *      HTML 5 allows it (entity_table below);
 *   2. strip(), runs of White_Space to one space (whitespace_clean, whose
 *      \s is the `regex` module's), then Python's str.lower(): simple case
 *      mapping, U+0130 to "i" + U+0307, the Final_Sigma rule, and the
 *      non-letters with case (Roman numerals, circled letters);
 *   3. the pieces of the pre-tokenisation regex, matched by hand:
 *      <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]
 *      |[^\s\p{L}\p{N}]+ with IGNORECASE. open_clip names its special tokens
 *      <start_of_text> and <end_of_text> (ids 49406, 49407, which vocab.json
 *      calls <|startoftext|> and <|endoftext|>), so that is the spelling
 *      recognised in a text; <|endoftext|> in a text is ordinary text there
 *      and here. IGNORECASE lets U+017F (long s) stand for 's', and makes
 *      U+0345 match no alternative at all, so it separates pieces and is
 *      dropped;
 *   4. each piece's UTF-8 bytes become byte symbols (GPT-2's bytes_to_unicode),
 *      the last one with "</w>", and merges apply lowest rank first, every
 *      occurrence of the chosen pair left to right before the next rank.
 *
 * Not reproduced: ftfy.fix_text, which open_clip runs first. Texts it would
 * change get other ids than the reference: mojibake, curly quotes (U+2019 in
 * "don’t"), ligatures, full-width forms, text that is not NFC, HTML entities
 * beyond the two unescapes. HTML 5 named entities outside the table stay
 * as written. Character properties come from GLib's Unicode tables; they
 * differ from the `regex` module's only for characters newer than GLib's
 * Unicode version.
 *
 * DESIGN: threads. A tok is read-only after tok_open except its word cache,
 * a direct-mapped table of the ids of short pieces, guarded by cache_mu.
 * cache_mu is a leaf lock held only to copy one slot in or out; the BPE work
 * itself runs outside it on buffers owned by the calling tok_encode.
 *
 * The BPE keeps a word as a linked list of symbols and the candidate pairs in
 * a heap ordered by (rank, position), so a word of n bytes costs
 * O(n log n) rather than the reference's O(n^2): a long run of letters
 * cannot stall a thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <jansson.h>

#include "clip_int.h"
#include "tokenizer_int.h"

/* Pieces up to this many bytes are cached, if they make at most
 * CACHE_IDS_MAX tokens: common words, not pathological runs. */
#define CACHE_SLOTS 4096
#define CACHE_KEY_MAX 30
#define CACHE_IDS_MAX 16

#define MERGE_EMPTY UINT64_MAX
#define VOCAB_MAX (1 << 24)

typedef struct merge_slot {
	uint64_t key;   /* (uint64_t)left << 32 | right; MERGE_EMPTY when free */
	int32_t rank;   /* order in merges.txt: lower ranks merge first */
	int32_t id;     /* the symbol the pair merges into */
} merge_slot;

typedef struct cache_slot {
	uint8_t klen;   /* 0 when the slot is empty */
	uint8_t n;
	char key[CACHE_KEY_MAX];
	int32_t ids[CACHE_IDS_MAX];
} cache_slot;

struct tok {
	int nvocab;
	int32_t sot, eot;
	int32_t byte_id[256];      /* a byte's symbol inside a word */
	int32_t byte_end_id[256];  /* the same with "</w>": a word's last byte */
	merge_slot *merges;        /* [1 << merge_bits], open addressing */
	int merge_bits;
	pthread_mutex_t cache_mu;  /* guards cache */
	cache_slot *cache;         /* [CACHE_SLOTS] */
};

/* ---- growable byte buffer ---------------------------------------------- */

typedef struct sbuf {
	char *p;
	size_t n, cap;
	bool oom;   /* an append failed; the contents are incomplete */
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
	if (b->oom || b->n + more + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < b->n + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->oom = true;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	if (b->oom)
		return;
	if (n) /* s may be NULL for an empty piece: memcpy's arguments may not */
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void sb_putc(sbuf *b, gunichar c)
{
	char u[8];
	sb_put(b, u, (size_t)g_unichar_to_utf8(c, u));
}

/* ---- file loading ------------------------------------------------------ */

/* Reads the whole file into a NUL-terminated buffer the caller frees. */
static int read_file(const char *path, const char *what, char **out, size_t *len, clip_err *err)
{
	int rc = CLIP_OK;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	FILE *f = fopen(path, "rb");
	*out = NULL;
	if (!f)
		return clip_fail(err, CLIP_EIO, "cannot open %s: %s", what, strerror(errno));
	for (;;) {
		if (cap - n < 4096) {
			size_t ncap = cap ? cap * 2 : 1 << 16;
			char *p = realloc(buf, ncap + 1);
			if (!p) {
				rc = clip_fail(err, CLIP_ENOMEM, "out of memory reading %s", what);
				goto out;
			}
			buf = p;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		rc = clip_fail(err, CLIP_EIO, "cannot read %s: %s", what, strerror(errno));
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return rc;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the others (controls, space, U+00AD) for 256, 257, ... in byte order. */
static void byte_symbols(gunichar cp[256])
{
	int n = 0;
	for (int b = 0; b < 256; b++) {
		bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
		cp[b] = printable ? (gunichar)b : (gunichar)(256 + n++);
	}
}

static uint64_t str_hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
	return h ^ (h >> 32);
}

/* vocab.json while the tokenizer loads: token string -> id. The strings
 * point into the parsed JSON, which lives as long as the map. jansson's own
 * lookup would do, but this one makes reading merges.txt several times
 * faster. */
typedef struct vocab_map {
	json_t *json;
	struct vocab_entry {
		const char *key;   /* NULL for a free slot */
		size_t len;
		int32_t id;
	} *slots;              /* [mask + 1], open addressing */
	size_t mask;
} vocab_map;

static void vocab_map_free(vocab_map *v)
{
	json_decref(v->json);
	free(v->slots);
	*v = (vocab_map){0};
}

static int32_t vocab_get(const vocab_map *v, const char *s, size_t n)
{
	for (size_t i = str_hash(s, n) & v->mask;; i = (i + 1) & v->mask) {
		const struct vocab_entry *e = &v->slots[i];
		if (!e->key)
			return -1;
		if (e->len == n && memcmp(e->key, s, n) == 0)
			return e->id;
	}
}

/* Parses vocab.json into v, checks that its ids are 0..n-1 each once, and
 * finds the byte symbols and the special tokens. */
static int load_vocab(tok *t, const char *path, vocab_map *v, clip_err *err)
{
	int rc;
	char *buf = NULL;
	size_t len = 0;
	uint8_t *seen = NULL;
	json_error_t jerr;
	const char *key;
	size_t klen;
	json_t *val;
	gunichar cp[256];

	*v = (vocab_map){0};
	rc = read_file(path, "vocab.json", &buf, &len, err);
	if (rc != CLIP_OK)
		goto out;
	v->json = json_loadb(buf, len, 0, &jerr);
	if (!v->json) {
		rc = clip_fail(err, CLIP_EMODEL, "vocab.json: not valid JSON (line %d: %s)", jerr.line,
		              jerr.text);
		goto out;
	}
	if (!json_is_object(v->json) || json_object_size(v->json) == 0 ||
	    json_object_size(v->json) > VOCAB_MAX) {
		rc = clip_fail(err, CLIP_EMODEL,
		              "vocab.json: expected an object of up to %d token -> id entries", VOCAB_MAX);
		goto out;
	}
	t->nvocab = (int)json_object_size(v->json);
	v->mask = 15;
	while (v->mask + 1 < 2 * (size_t)t->nvocab)
		v->mask = 2 * v->mask + 1;
	v->slots = calloc(v->mask + 1, sizeof *v->slots);
	seen = calloc((size_t)t->nvocab, 1);
	if (!v->slots || !seen) {
		rc = clip_fail(err, CLIP_ENOMEM, "out of memory loading vocab.json");
		goto out;
	}
	json_object_keylen_foreach(v->json, key, klen, val)
	{
		json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
		if (id < 0 || id >= t->nvocab || seen[id]) {
			rc = clip_fail(err, CLIP_EMODEL,
			              "vocab.json: ids must be the integers 0..%d, each once", t->nvocab - 1);
			goto out;
		}
		seen[id] = 1;
		size_t i = str_hash(key, klen) & v->mask;
		while (v->slots[i].key)
			i = (i + 1) & v->mask;
		v->slots[i] = (struct vocab_entry){.key = key, .len = klen, .id = (int32_t)id};
	}

	byte_symbols(cp);
	for (int b = 0; b < 256; b++) {
		char s[16];
		int n = g_unichar_to_utf8(cp[b], s);
		memcpy(s + n, "</w>", 4);
		t->byte_id[b] = vocab_get(v, s, (size_t)n);
		t->byte_end_id[b] = vocab_get(v, s, (size_t)n + 4);
		if (t->byte_id[b] < 0 || t->byte_end_id[b] < 0) {
			rc = clip_fail(err, CLIP_EMODEL, "vocab.json: the symbol of byte 0x%02x is missing",
			              b);
			goto out;
		}
	}
	t->sot = vocab_get(v, "<|startoftext|>", 15);
	t->eot = vocab_get(v, "<|endoftext|>", 13);
	if (t->sot < 0 || t->eot < 0)
		rc = clip_fail(err, CLIP_EMODEL, "vocab.json: <|startoftext|> or <|endoftext|> is missing");
out:
	free(seen);
	free(buf);
	return rc;
}

static size_t merge_hash(const tok *t, uint64_t key)
{
	return (size_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - t->merge_bits));
}

static const merge_slot *merge_find(const tok *t, int32_t left, int32_t right)
{
	uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
	size_t mask = ((size_t)1 << t->merge_bits) - 1;
	for (size_t i = merge_hash(t, key);; i = (i + 1) & mask) {
		const merge_slot *s = &t->merges[i];
		if (s->key == key)
			return s;
		if (s->key == MERGE_EMPTY)
			return NULL;
	}
}

/* Adds a merge; a pair listed twice keeps its last rank, as the dict that
 * open_clip builds from the list does. */
static void merge_add(tok *t, int32_t left, int32_t right, int32_t rank, int32_t id)
{
	uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
	size_t mask = ((size_t)1 << t->merge_bits) - 1;
	size_t i = merge_hash(t, key);
	while (t->merges[i].key != MERGE_EMPTY && t->merges[i].key != key)
		i = (i + 1) & mask;
	t->merges[i] = (merge_slot){.key = key, .rank = rank, .id = id};
}

/* Reads merges.txt into t->merges, looking its symbols up in vocab. */
static int load_merges(tok *t, const char *path, const vocab_map *vocab, clip_err *err)
{
	int rc;
	char *buf = NULL;
	size_t len = 0, lines = 1;
	int32_t rank = 0;

	rc = read_file(path, "merges.txt", &buf, &len, err);
	if (rc != CLIP_OK)
		goto out;
	if (strlen(buf) != len) {
		rc = clip_fail(err, CLIP_EMODEL, "merges.txt: contains a NUL byte");
		goto out;
	}
	for (size_t i = 0; i < len; i++)
		lines += buf[i] == '\n';
	/* At most half full, so probes stay short. */
	t->merge_bits = 4;
	while (((size_t)1 << t->merge_bits) < 2 * lines)
		t->merge_bits++;
	t->merges = malloc(sizeof *t->merges << t->merge_bits);
	if (!t->merges) {
		rc = clip_fail(err, CLIP_ENOMEM, "out of memory loading merges.txt");
		goto out;
	}
	for (size_t i = 0; i < (size_t)1 << t->merge_bits; i++)
		t->merges[i].key = MERGE_EMPTY;

	char *line = buf;
	for (int lineno = 1; line < buf + len; lineno++) {
		char *nl = memchr(line, '\n', (size_t)(buf + len - line));
		char *end = nl ? nl : buf + len;
		char *next = nl ? nl + 1 : buf + len;
		if (end > line && end[-1] == '\r')
			end--;
		if (end == line || (lineno == 1 && line[0] == '#')) {
			line = next;
			continue;
		}
		char *sp = memchr(line, ' ', (size_t)(end - line));
		size_t la = sp ? (size_t)(sp - line) : 0;
		size_t lb = sp ? (size_t)(end - sp - 1) : 0;
		if (!sp || la == 0 || lb == 0 || memchr(sp + 1, ' ', lb)) {
			rc = clip_fail(err, CLIP_EMODEL,
			              "merges.txt line %d: expected two symbols separated by one space",
			              lineno);
			goto out;
		}
		int32_t a = vocab_get(vocab, line, la);
		int32_t b = vocab_get(vocab, sp + 1, lb);
		/* The merged symbol is the two written together. */
		memmove(sp, sp + 1, lb);
		int32_t ab = vocab_get(vocab, line, la + lb);
		if (a < 0 || b < 0 || ab < 0) {
			rc = clip_fail(err, CLIP_EMODEL, "merges.txt line %d: the %s symbol is not in vocab.json",
			              lineno, a < 0 ? "first" : b < 0 ? "second" : "merged");
			goto out;
		}
		merge_add(t, a, b, rank++, ab);
		line = next;
	}
out:
	free(buf);
	return rc;
}

int tok_open(const char *vocab_json, const char *merges_txt, tok **out, clip_err *err)
{
	int rc;
	vocab_map vocab = {0};
	tok *t = NULL;

	if (!out)
		return clip_fail(err, CLIP_EINVAL, "tok_open: out is NULL");
	*out = NULL;
	if (!vocab_json || !merges_txt)
		return clip_fail(err, CLIP_EINVAL, "tok_open: a path is NULL");
	t = calloc(1, sizeof *t);
	if (!t)
		return clip_fail(err, CLIP_ENOMEM, "out of memory opening the tokenizer");
	if (pthread_mutex_init(&t->cache_mu, NULL) != 0) {
		free(t);
		return clip_fail(err, CLIP_ENOMEM, "cannot create the tokenizer's lock");
	}
	t->cache = calloc(CACHE_SLOTS, sizeof *t->cache);
	if (!t->cache) {
		rc = clip_fail(err, CLIP_ENOMEM, "out of memory opening the tokenizer");
		goto out;
	}
	rc = load_vocab(t, vocab_json, &vocab, err);
	if (rc != CLIP_OK)
		goto out;
	rc = load_merges(t, merges_txt, &vocab, err);
	if (rc != CLIP_OK)
		goto out;
	*out = t;
	t = NULL;
out:
	vocab_map_free(&vocab);
	tok_close(t);
	return rc;
}

void tok_close(tok *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->cache_mu);
	free(t->cache);
	free(t->merges);
	free(t);
}

int32_t tok_sot(const tok *t)
{
	return t->sot;
}

int32_t tok_eot(const tok *t)
{
	return t->eot;
}

int tok_vocab_size(const tok *t)
{
	return t->nvocab;
}

/* ---- html.unescape ----------------------------------------------------- */

typedef struct entity {
	const char *name;
	uint32_t cp;
	uint8_t bare;   /* also recognised without the ';' (HTML 5's legacy list) */
} entity;

/* The HTML 4 entities with HTML 5's code points, &apos; and the upper-case
 * aliases, in strcmp order for entity_find's binary search. */
static const entity entity_table[] = {
	{"AElig", 0xC6, 1}, {"AMP", 0x26, 1}, {"Aacute", 0xC1, 1}, {"Acirc", 0xC2, 1},
	{"Agrave", 0xC0, 1}, {"Alpha", 0x391, 0}, {"Aring", 0xC5, 1}, {"Atilde", 0xC3, 1},
	{"Auml", 0xC4, 1}, {"Beta", 0x392, 0}, {"COPY", 0xA9, 1}, {"Ccedil", 0xC7, 1},
	{"Chi", 0x3A7, 0}, {"Dagger", 0x2021, 0}, {"Delta", 0x394, 0}, {"ETH", 0xD0, 1},
	{"Eacute", 0xC9, 1}, {"Ecirc", 0xCA, 1}, {"Egrave", 0xC8, 1}, {"Epsilon", 0x395, 0},
	{"Eta", 0x397, 0}, {"Euml", 0xCB, 1}, {"GT", 0x3E, 1}, {"Gamma", 0x393, 0},
	{"Iacute", 0xCD, 1}, {"Icirc", 0xCE, 1}, {"Igrave", 0xCC, 1}, {"Iota", 0x399, 0},
	{"Iuml", 0xCF, 1}, {"Kappa", 0x39A, 0}, {"LT", 0x3C, 1}, {"Lambda", 0x39B, 0},
	{"Mu", 0x39C, 0}, {"Ntilde", 0xD1, 1}, {"Nu", 0x39D, 0}, {"OElig", 0x152, 0},
	{"Oacute", 0xD3, 1}, {"Ocirc", 0xD4, 1}, {"Ograve", 0xD2, 1}, {"Omega", 0x3A9, 0},
	{"Omicron", 0x39F, 0}, {"Oslash", 0xD8, 1}, {"Otilde", 0xD5, 1}, {"Ouml", 0xD6, 1},
	{"Phi", 0x3A6, 0}, {"Pi", 0x3A0, 0}, {"Prime", 0x2033, 0}, {"Psi", 0x3A8, 0},
	{"QUOT", 0x22, 1}, {"REG", 0xAE, 1}, {"Rho", 0x3A1, 0}, {"Scaron", 0x160, 0},
	{"Sigma", 0x3A3, 0}, {"THORN", 0xDE, 1}, {"Tau", 0x3A4, 0}, {"Theta", 0x398, 0},
	{"Uacute", 0xDA, 1}, {"Ucirc", 0xDB, 1}, {"Ugrave", 0xD9, 1}, {"Upsilon", 0x3A5, 0},
	{"Uuml", 0xDC, 1}, {"Xi", 0x39E, 0}, {"Yacute", 0xDD, 1}, {"Yuml", 0x178, 0},
	{"Zeta", 0x396, 0}, {"aacute", 0xE1, 1}, {"acirc", 0xE2, 1}, {"acute", 0xB4, 1},
	{"aelig", 0xE6, 1}, {"agrave", 0xE0, 1}, {"alefsym", 0x2135, 0}, {"alpha", 0x3B1, 0},
	{"amp", 0x26, 1}, {"and", 0x2227, 0}, {"ang", 0x2220, 0}, {"apos", 0x27, 0},
	{"aring", 0xE5, 1}, {"asymp", 0x2248, 0}, {"atilde", 0xE3, 1}, {"auml", 0xE4, 1},
	{"bdquo", 0x201E, 0}, {"beta", 0x3B2, 0}, {"brvbar", 0xA6, 1}, {"bull", 0x2022, 0},
	{"cap", 0x2229, 0}, {"ccedil", 0xE7, 1}, {"cedil", 0xB8, 1}, {"cent", 0xA2, 1},
	{"chi", 0x3C7, 0}, {"circ", 0x2C6, 0}, {"clubs", 0x2663, 0}, {"cong", 0x2245, 0},
	{"copy", 0xA9, 1}, {"crarr", 0x21B5, 0}, {"cup", 0x222A, 0}, {"curren", 0xA4, 1},
	{"dArr", 0x21D3, 0}, {"dagger", 0x2020, 0}, {"darr", 0x2193, 0}, {"deg", 0xB0, 1},
	{"delta", 0x3B4, 0}, {"diams", 0x2666, 0}, {"divide", 0xF7, 1}, {"eacute", 0xE9, 1},
	{"ecirc", 0xEA, 1}, {"egrave", 0xE8, 1}, {"empty", 0x2205, 0}, {"emsp", 0x2003, 0},
	{"ensp", 0x2002, 0}, {"epsilon", 0x3B5, 0}, {"equiv", 0x2261, 0}, {"eta", 0x3B7, 0},
	{"eth", 0xF0, 1}, {"euml", 0xEB, 1}, {"euro", 0x20AC, 0}, {"exist", 0x2203, 0},
	{"fnof", 0x192, 0}, {"forall", 0x2200, 0}, {"frac12", 0xBD, 1}, {"frac14", 0xBC, 1},
	{"frac34", 0xBE, 1}, {"frasl", 0x2044, 0}, {"gamma", 0x3B3, 0}, {"ge", 0x2265, 0},
	{"gt", 0x3E, 1}, {"hArr", 0x21D4, 0}, {"harr", 0x2194, 0}, {"hearts", 0x2665, 0},
	{"hellip", 0x2026, 0}, {"iacute", 0xED, 1}, {"icirc", 0xEE, 1}, {"iexcl", 0xA1, 1},
	{"igrave", 0xEC, 1}, {"image", 0x2111, 0}, {"infin", 0x221E, 0}, {"int", 0x222B, 0},
	{"iota", 0x3B9, 0}, {"iquest", 0xBF, 1}, {"isin", 0x2208, 0}, {"iuml", 0xEF, 1},
	{"kappa", 0x3BA, 0}, {"lArr", 0x21D0, 0}, {"lambda", 0x3BB, 0}, {"lang", 0x27E8, 0},
	{"laquo", 0xAB, 1}, {"larr", 0x2190, 0}, {"lceil", 0x2308, 0}, {"ldquo", 0x201C, 0},
	{"le", 0x2264, 0}, {"lfloor", 0x230A, 0}, {"lowast", 0x2217, 0}, {"loz", 0x25CA, 0},
	{"lrm", 0x200E, 0}, {"lsaquo", 0x2039, 0}, {"lsquo", 0x2018, 0}, {"lt", 0x3C, 1},
	{"macr", 0xAF, 1}, {"mdash", 0x2014, 0}, {"micro", 0xB5, 1}, {"middot", 0xB7, 1},
	{"minus", 0x2212, 0}, {"mu", 0x3BC, 0}, {"nabla", 0x2207, 0}, {"nbsp", 0xA0, 1},
	{"ndash", 0x2013, 0}, {"ne", 0x2260, 0}, {"ni", 0x220B, 0}, {"not", 0xAC, 1},
	{"notin", 0x2209, 0}, {"nsub", 0x2284, 0}, {"ntilde", 0xF1, 1}, {"nu", 0x3BD, 0},
	{"oacute", 0xF3, 1}, {"ocirc", 0xF4, 1}, {"oelig", 0x153, 0}, {"ograve", 0xF2, 1},
	{"oline", 0x203E, 0}, {"omega", 0x3C9, 0}, {"omicron", 0x3BF, 0}, {"oplus", 0x2295, 0},
	{"or", 0x2228, 0}, {"ordf", 0xAA, 1}, {"ordm", 0xBA, 1}, {"oslash", 0xF8, 1},
	{"otilde", 0xF5, 1}, {"otimes", 0x2297, 0}, {"ouml", 0xF6, 1}, {"para", 0xB6, 1},
	{"part", 0x2202, 0}, {"permil", 0x2030, 0}, {"perp", 0x22A5, 0}, {"phi", 0x3C6, 0},
	{"pi", 0x3C0, 0}, {"piv", 0x3D6, 0}, {"plusmn", 0xB1, 1}, {"pound", 0xA3, 1},
	{"prime", 0x2032, 0}, {"prod", 0x220F, 0}, {"prop", 0x221D, 0}, {"psi", 0x3C8, 0},
	{"quot", 0x22, 1}, {"rArr", 0x21D2, 0}, {"radic", 0x221A, 0}, {"rang", 0x27E9, 0},
	{"raquo", 0xBB, 1}, {"rarr", 0x2192, 0}, {"rceil", 0x2309, 0}, {"rdquo", 0x201D, 0},
	{"real", 0x211C, 0}, {"reg", 0xAE, 1}, {"rfloor", 0x230B, 0}, {"rho", 0x3C1, 0},
	{"rlm", 0x200F, 0}, {"rsaquo", 0x203A, 0}, {"rsquo", 0x2019, 0}, {"sbquo", 0x201A, 0},
	{"scaron", 0x161, 0}, {"sdot", 0x22C5, 0}, {"sect", 0xA7, 1}, {"shy", 0xAD, 1},
	{"sigma", 0x3C3, 0}, {"sigmaf", 0x3C2, 0}, {"sim", 0x223C, 0}, {"spades", 0x2660, 0},
	{"sub", 0x2282, 0}, {"sube", 0x2286, 0}, {"sum", 0x2211, 0}, {"sup", 0x2283, 0},
	{"sup1", 0xB9, 1}, {"sup2", 0xB2, 1}, {"sup3", 0xB3, 1}, {"supe", 0x2287, 0},
	{"szlig", 0xDF, 1}, {"tau", 0x3C4, 0}, {"there4", 0x2234, 0}, {"theta", 0x3B8, 0},
	{"thetasym", 0x3D1, 0}, {"thinsp", 0x2009, 0}, {"thorn", 0xFE, 1}, {"tilde", 0x2DC, 0},
	{"times", 0xD7, 1}, {"trade", 0x2122, 0}, {"uArr", 0x21D1, 0}, {"uacute", 0xFA, 1},
	{"uarr", 0x2191, 0}, {"ucirc", 0xFB, 1}, {"ugrave", 0xF9, 1}, {"uml", 0xA8, 1},
	{"upsih", 0x3D2, 0}, {"upsilon", 0x3C5, 0}, {"uuml", 0xFC, 1}, {"weierp", 0x2118, 0},
	{"xi", 0x3BE, 0}, {"yacute", 0xFD, 1}, {"yen", 0xA5, 1}, {"yuml", 0xFF, 1},
	{"zeta", 0x3B6, 0}, {"zwj", 0x200D, 0}, {"zwnj", 0x200C, 0},
};

#define N_ENTITIES (sizeof entity_table / sizeof entity_table[0])

/* The entity named by s[0..n), if any; bare_only restricts the search to
 * names that may appear without ';'. */
static const entity *entity_find(const char *s, size_t n, bool bare_only)
{
	size_t lo = 0, hi = N_ENTITIES;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const char *name = entity_table[mid].name;
		int c = strncmp(name, s, n);
		if (c == 0)
			c = name[n] != '\0';
		if (c == 0)
			return bare_only && !entity_table[mid].bare ? NULL : &entity_table[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Python's html.unescape for a numeric reference to num (saturated at
 * 0x110000): the Windows-1252 reading of 0x80-0x9F, U+FFFD for NUL,
 * surrogates and values past U+10FFFF, nothing for the other invalid code
 * points. */
static void put_charref(sbuf *b, uint32_t num)
{
	static const uint16_t cp1252[32] = {
		0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
		0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D,   0x017D, 0x8F,
		0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
		0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178,
	};
	if (num >= 0x80 && num <= 0x9F)
		sb_putc(b, cp1252[num - 0x80]);
	else if (num == 0 || (num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF)
		sb_putc(b, 0xFFFD);
	else if ((num >= 0x1 && num <= 0x8) || num == 0xB || (num >= 0xE && num <= 0x1F) ||
	         num == 0x7F || (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
		return;
	else
		sb_putc(b, num);
}

/* Parses the digits at p (base 10 or 16), saturating; returns the end. */
static const char *parse_num(const char *p, int base, uint32_t *num)
{
	uint32_t v = 0;
	for (;; p++) {
		int d;
		if (*p >= '0' && *p <= '9')
			d = *p - '0';
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = *p - 'a' + 10;
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = *p - 'A' + 10;
		else
			break;
		v = v > 0x110000 ? 0x110000 : v * (uint32_t)base + (uint32_t)d;
	}
	*num = v > 0x110000 ? 0x110000 : v;
	return p;
}

/* Python's html.unescape of the NUL-terminated s into b: each match of
 * &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?) is replaced,
 * left to right, without rescanning the replacement. The text may arrive
 * in parts: unless final, a match that could go on past the end of s is
 * left for the next part. Returns the bytes of s consumed (all when
 * final). */
static size_t html_unescape(sbuf *b, const char *s, bool final)
{
	const char *p = s;
	while (*p) {
		const char *amp = strchr(p, '&');
		if (!amp) {
			size_t n = strlen(p);
			sb_put(b, p, n);
			return (size_t)(p + n - s);
		}
		sb_put(b, p, (size_t)(amp - p));
		p = amp + 1;
		if (!final && (!p[0] || (p[0] == '#' && (!p[1] || ((p[1] == 'x' || p[1] == 'X') && !p[2])))))
			return (size_t)(amp - s);
		if (p[0] == '#') {
			uint32_t num;
			if (p[1] >= '0' && p[1] <= '9')
				p = parse_num(p + 1, 10, &num);
			else if ((p[1] == 'x' || p[1] == 'X') && g_ascii_isxdigit(p[2]))
				p = parse_num(p + 2, 16, &num);
			else {
				sb_put(b, "&", 1);
				continue;
			}
			if (!final && !*p)   /* more digits or the ';' may follow */
				return (size_t)(amp - s);
			if (*p == ';')
				p++;
			put_charref(b, num);
			continue;
		}
		/* A name: up to 32 characters, then an optional ';'. */
		const char *name = p;
		size_t nchars = 0, ascii = 0;
		while (nchars < 32 && *p && !strchr("\t\n\f <&#;", *p)) {
			if ((unsigned char)*p < 0x80 && ascii == nchars)
				ascii++;
			p = g_utf8_next_char(p);
			nchars++;
		}
		if (!final && !*p)   /* the name or its ';' may go on */
			return (size_t)(amp - s);
		if (nchars == 0) {
			sb_put(b, "&", 1);
			continue;
		}
		bool semi = *p == ';';
		if (semi)
			p++;
		size_t n = (size_t)(p - name);
		const entity *e = semi ? entity_find(name, n - 1, false) : entity_find(name, n, true);
		if (e) {
			sb_putc(b, e->cp);
			continue;
		}
		/* The longest prefix (of 2 characters or more, the whole name
		 * with ';' excluded) that is a legacy name; names are ASCII. */
		size_t len = nchars + semi;
		size_t x = len - 1 < ascii ? len - 1 : ascii;
		for (; x >= 2; x--) {
			e = entity_find(name, x, true);
			if (e)
				break;
		}
		if (e) {
			sb_putc(b, e->cp);
			sb_put(b, name + x, n - x);
		} else {
			sb_put(b, "&", 1);
			sb_put(b, name, n);
		}
	}
	return (size_t)(p - s);
}

/* ---- whitespace and case ----------------------------------------------- */

/* Python's str.isspace(), which strip() uses. */
static bool py_isspace(gunichar c)
{
	if (c < 0x80)
		return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
	return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
	       c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The Unicode White_Space property: \s of the `regex` module, which
 * whitespace_clean and the pre-tokeniser use. Unlike str.isspace() it leaves
 * out U+001C..U+001F. */
static bool white_space(gunichar c)
{
	return py_isspace(c) && !(c >= 0x1C && c <= 0x1F);
}

/* whitespace_clean (strip(), then runs of White_Space to one ' ') as a
 * stream: the text arrives in pieces, each fed in order. The py_isspace
 * characters after the last other one are held back in pend, already
 * collapsed (' ' and U+001C..U+001F only), and written out in front of the
 * next other character; what is still held at the end of the text is the
 * part strip() removes. */
typedef struct clean_state {
	bool started;   /* a character other than py_isspace was written */
	sbuf pend;      /* held-back white space, collapsed */
} clean_state;

/* Held-back white space beyond this many bytes (only a run of the
 * separators U+001C..U+001F can make it grow) is written out as if more
 * text followed, which keeps the stream's memory bounded. */
#define PEND_MAX 4096

static void clean_feed(clean_state *cs, sbuf *out, const char *s)
{
	for (const char *p = s; *p;) {
		const char *q = g_utf8_next_char(p);
		gunichar c = g_utf8_get_char(p);
		if (!py_isspace(c)) {
			sb_put(out, cs->pend.p, cs->pend.n);
			cs->pend.n = 0;
			sb_put(out, p, (size_t)(q - p));
			cs->started = true;
		} else if (!cs->started) {
			/* leading white space: stripped */
		} else if (!white_space(c)) {
			sb_put(&cs->pend, p, (size_t)(q - p));
		} else if (cs->pend.n == 0 || cs->pend.p[cs->pend.n - 1] != ' ') {
			sb_put(&cs->pend, " ", 1);
		}
		if (cs->pend.n > PEND_MAX) {
			sb_put(out, cs->pend.p, cs->pend.n);
			cs->pend.n = 0;
		}
		p = q;
	}
}

/* Unicode's Cased property as CPython sees it: Lu, Ll, Lt and the
 * Other_Lowercase / Other_Uppercase characters that are not Lm or Mn. */
static bool is_cased(gunichar c)
{
	GUnicodeType ty = g_unichar_type(c);
	return ty == G_UNICODE_UPPERCASE_LETTER || ty == G_UNICODE_LOWERCASE_LETTER ||
	       ty == G_UNICODE_TITLECASE_LETTER || c == 0xAA || c == 0xBA ||
	       (c >= 0x2160 && c <= 0x217F) || (c >= 0x24B6 && c <= 0x24E9) ||
	       (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
	       (c >= 0x1F170 && c <= 0x1F189);
}

/* Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk and the Word_Break
 * MidLetter, MidNumLet and Single_Quote characters. */
static bool is_case_ignorable(gunichar c)
{
	static const gunichar mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
	                               0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
	                               0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
	switch (g_unichar_type(c)) {
	case G_UNICODE_NON_SPACING_MARK:
	case G_UNICODE_ENCLOSING_MARK:
	case G_UNICODE_FORMAT:
	case G_UNICODE_MODIFIER_LETTER:
	case G_UNICODE_MODIFIER_SYMBOL:
		return true;
	default:
		break;
	}
	for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
		if (c == mid[i])
			return true;
	return false;
}

/* Whether the capital sigma at p in s[0..end) is word-final: after a cased
 * letter and not before one, case-ignorable characters skipped (the
 * Final_Sigma condition of CPython's str.lower()). */
static bool final_sigma(const char *s, const char *p, const char *end)
{
	const char *q = p;
	gunichar c = 0;
	bool found = false;
	while (q > s) {
		q = g_utf8_prev_char(q);
		c = g_utf8_get_char(q);
		if (!is_case_ignorable(c)) {
			found = true;
			break;
		}
	}
	if (!found || !is_cased(c))
		return false;
	for (q = g_utf8_next_char(p); q < end; q = g_utf8_next_char(q)) {
		c = g_utf8_get_char(q);
		if (!is_case_ignorable(c))
			return !is_cased(c);
	}
	return true;
}

/* Python's str.lower() of s[0..n). */
static void py_lower(sbuf *b, const char *s, size_t n)
{
	const char *end = s + n;
	for (const char *p = s; p < end; p = g_utf8_next_char(p)) {
		gunichar c = (unsigned char)*p;
		if (c < 0x80) {
			char l = (char)g_ascii_tolower((char)c);
			sb_put(b, &l, 1);
			continue;
		}
		c = g_utf8_get_char(p);
		if (c == 0x130) {              /* İ: the one multi-character lowering */
			sb_putc(b, 'i');
			sb_putc(b, 0x307);
		} else if (c == 0x3A3) {
			sb_putc(b, final_sigma(s, p, end) ? 0x3C2 : 0x3C3);
		} else if (c >= 0x2160 && c <= 0x216F) {   /* Roman numerals, Nl */
			sb_putc(b, c + 0x10);
		} else if (c >= 0x24B6 && c <= 0x24CF) {   /* circled letters, So */
			sb_putc(b, c + 0x1A);
		} else {
			sb_putc(b, g_unichar_tolower(c));
		}
	}
}

/* ---- BPE --------------------------------------------------------------- */

/* Buffers for one word, grown as needed and owned by one tok_encode call. */
typedef struct bpe_work {
	size_t cap;       /* bytes of the longest word the arrays can hold */
	int32_t *sym;     /* [cap] symbol at each position; -1 once merged away */
	int32_t *next;    /* [cap] next live position, -1 at the end */
	int32_t *prev;    /* [cap] previous live position, -1 at the start */
	uint64_t *heap;   /* [3 * cap] (rank << 32 | position), a min-heap */
	int32_t *pend;    /* [2 * cap] positions whose pair changed this round */
	int32_t *out;     /* [cap] the word's tokens */
} bpe_work;

static void bpe_work_free(bpe_work *w)
{
	free(w->sym);
	free(w->next);
	free(w->prev);
	free(w->heap);
	free(w->pend);
	free(w->out);
	*w = (bpe_work){0};
}

static bool bpe_work_reserve(bpe_work *w, size_t n)
{
	if (n <= w->cap)
		return true;
	size_t cap = w->cap ? w->cap : 64;
	while (cap < n)
		cap *= 2;
	bpe_work_free(w);
	w->sym = malloc(cap * sizeof *w->sym);
	w->next = malloc(cap * sizeof *w->next);
	w->prev = malloc(cap * sizeof *w->prev);
	w->heap = malloc(3 * cap * sizeof *w->heap);
	w->pend = malloc(2 * cap * sizeof *w->pend);
	w->out = malloc(cap * sizeof *w->out);
	if (!w->sym || !w->next || !w->prev || !w->heap || !w->pend || !w->out) {
		bpe_work_free(w);
		return false;
	}
	w->cap = cap;
	return true;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v)
{
	size_t i = (*n)++;
	while (i > 0 && h[(i - 1) / 2] > v) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n)
{
	uint64_t top = h[0], v = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && h[c + 1] < h[c])
			c++;
		if (h[c] >= v)
			break;
		h[i] = h[c];
		i = c;
	}
	h[i] = v;
	return top;
}

/* Queues the pair starting at position i, if it is a merge. */
static void push_pair(const tok *t, bpe_work *w, size_t *nheap, int32_t i)
{
	int32_t j = w->next[i];
	if (j < 0)
		return;
	const merge_slot *m = merge_find(t, w->sym[i], w->sym[j]);
	if (m)
		heap_push(w->heap, nheap, (uint64_t)m->rank << 32 | (uint32_t)i);
}

/* Applies the merges to the word s[0..n) (n >= 1) and writes its tokens to
 * ids[] (at most n of them); returns their number.
 *
 * open_clip repeatedly takes the pair of lowest rank and merges all its
 * occurrences left to right. Here the heap yields the occurrences of one rank
 * in position order; an entry is stale when its pair changed since it was
 * queued. Pairs created while merging one rank are queued only when that rank
 * is done, so each round sees the word as open_clip's round does. */
static int bpe_word(const tok *t, bpe_work *w, const unsigned char *s, size_t n, int32_t *ids)
{
	size_t nheap = 0, npend;
	for (size_t i = 0; i < n; i++) {
		w->sym[i] = i + 1 < n ? t->byte_id[s[i]] : t->byte_end_id[s[i]];
		w->prev[i] = (int32_t)i - 1;
		w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
	}
	for (size_t i = 0; i + 1 < n; i++)
		push_pair(t, w, &nheap, (int32_t)i);
	while (nheap > 0) {
		uint32_t rank = (uint32_t)(w->heap[0] >> 32);
		npend = 0;
		while (nheap > 0 && (uint32_t)(w->heap[0] >> 32) == rank) {
			int32_t i = (int32_t)(uint32_t)heap_pop(w->heap, &nheap);
			int32_t j = w->next[i];
			if (w->sym[i] < 0 || j < 0)
				continue;
			const merge_slot *m = merge_find(t, w->sym[i], w->sym[j]);
			if (!m || (uint32_t)m->rank != rank)
				continue;
			w->sym[i] = m->id;
			w->sym[j] = -1;
			w->next[i] = w->next[j];
			if (w->next[j] >= 0)
				w->prev[w->next[j]] = i;
			if (w->prev[i] >= 0)
				w->pend[npend++] = w->prev[i];
			w->pend[npend++] = i;
		}
		for (size_t k = 0; k < npend; k++)
			if (w->sym[w->pend[k]] >= 0)
				push_pair(t, w, &nheap, w->pend[k]);
	}
	int count = 0;
	for (int32_t i = 0; i >= 0; i = w->next[i])
		ids[count++] = w->sym[i];
	return count;
}

/* ---- word cache -------------------------------------------------------- */

static size_t cache_index(const char *s, size_t n)
{
	return (size_t)(str_hash(s, n) % CACHE_SLOTS);
}

/* Copies the cached tokens of s[0..n) to ids; returns their number, or -1
 * when s is not cached. */
static int cache_get(tok *t, const char *s, size_t n, int32_t *ids)
{
	int count = -1;
	cache_slot *c = &t->cache[cache_index(s, n)];
	pthread_mutex_lock(&t->cache_mu);
	if (c->klen == n && memcmp(c->key, s, n) == 0) {
		count = c->n;
		memcpy(ids, c->ids, (size_t)count * sizeof *ids);
	}
	pthread_mutex_unlock(&t->cache_mu);
	return count;
}

static void cache_put(tok *t, const char *s, size_t n, const int32_t *ids, int count)
{
	cache_slot *c = &t->cache[cache_index(s, n)];
	pthread_mutex_lock(&t->cache_mu);
	c->klen = (uint8_t)n;
	c->n = (uint8_t)count;
	memcpy(c->key, s, n);
	memcpy(c->ids, ids, (size_t)count * sizeof *ids);
	pthread_mutex_unlock(&t->cache_mu);
}

/* Appends the tokens of the piece s[0..n) to out (room entries left);
 * returns how many were written, or -1 when out of memory. */
static int encode_piece(tok *t, bpe_work *w, const char *s, size_t n, int32_t *out, int room)
{
	int32_t cached[CACHE_IDS_MAX];
	const int32_t *ids = cached;
	bool cacheable = n <= CACHE_KEY_MAX;
	int count = cacheable ? cache_get(t, s, n, cached) : -1;

	if (count < 0) {
		if (!bpe_work_reserve(w, n))
			return -1;
		count = bpe_word(t, w, (const unsigned char *)s, n, w->out);
		ids = w->out;
		if (cacheable && count <= CACHE_IDS_MAX)
			cache_put(t, s, n, ids, count);
	}
	if (count > room)
		count = room;
	memcpy(out, ids, (size_t)count * sizeof *out);
	return count;
}

/* ---- pre-tokenisation and encoding ------------------------------------- */

enum { CH_SPACE, CH_NONE, CH_LETTER, CH_NUMBER, CH_OTHER };

/* Which part of the pre-tokenisation regex c belongs to. */
static int char_class(gunichar c)
{
	if (white_space(c))
		return CH_SPACE;
	/* COMBINING GREEK YPOGEGRAMMENI case-folds to a letter, and under
	 * IGNORECASE the `regex` module then matches it with neither
	 * [\p{L}] nor [^\s\p{L}\p{N}]. */
	if (c == 0x345)
		return CH_NONE;
	switch (g_unichar_type(c)) {
	case G_UNICODE_UPPERCASE_LETTER:
	case G_UNICODE_LOWERCASE_LETTER:
	case G_UNICODE_TITLECASE_LETTER:
	case G_UNICODE_MODIFIER_LETTER:
	case G_UNICODE_OTHER_LETTER:
		return CH_LETTER;
	case G_UNICODE_DECIMAL_NUMBER:
	case G_UNICODE_LETTER_NUMBER:
	case G_UNICODE_OTHER_NUMBER:
		return CH_NUMBER;
	default:
		return CH_OTHER;
	}
}

/* The length of the match of the lower-case ASCII literal lit at p, or 0.
 * Under IGNORECASE, U+017F (long s) matches 's'. */
static size_t match_literal(const char *p, const char *end, const char *lit)
{
	const char *q = p;
	for (; *lit; lit++) {
		if (q < end && *q == *lit)
			q++;
		else if (*lit == 's' && end - q >= 2 && memcmp(q, "\xC5\xBF", 2) == 0)
			q += 2;
		else
			return 0;
	}
	return (size_t)(q - p);
}

/* Splits the normalised text s[0..n) into pieces and appends their tokens
 * to out, stopping when room tokens are written; returns the number
 * written, or -1 when out of memory. */
static int encode_text(tok *t, bpe_work *w, const char *s, size_t n, int32_t *out, int room)
{
	static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
	const char *end = s + n;
	const char *p = s;
	int count = 0;

	while (p < end && count < room) {
		gunichar c = g_utf8_get_char(p);
		const char *q = g_utf8_next_char(p);
		int cls = char_class(c);
		size_t m = 0;

		if (cls == CH_SPACE || cls == CH_NONE) {
			p = q;
			continue;
		}
		if (c == '<') {
			/* A special token spelt with U+017F is matched by the regex
			 * but is not the special token: open_clip then looks it up
			 * in its cache, finds nothing and runs BPE on it. */
			if ((m = match_literal(p, end, "<start_of_text>")) == 15 ||
			    (m == 0 && (m = match_literal(p, end, "<end_of_text>")) == 13)) {
				out[count++] = m == 15 ? t->sot : t->eot;
				p += m;
				continue;
			}
		}
		for (size_t i = 0; c == '\'' && m == 0 && i < sizeof contractions / sizeof *contractions; i++)
			m = match_literal(p, end, contractions[i]);
		if (m > 0) {
			q = p + m;
		} else if (cls == CH_LETTER || cls == CH_OTHER) {
			/* [\p{L}]+ or [^\s\p{L}\p{N}]+: a run of one class */
			while (q < end && char_class(g_utf8_get_char(q)) == cls)
				q = g_utf8_next_char(q);
		}
		int k = encode_piece(t, w, p, (size_t)(q - p), out + count, room - count);
		if (k < 0)
			return -1;
		count += k;
		p = q;
	}
	return count;
}

/* The text is normalised and encoded in bounded rounds, so the work and
 * memory of one call are bounded by the tokens it keeps, not by the length
 * of the text (a search text of one long word used to be normalised in full
 * four times over). A round takes the next SEG_MAX bytes of the text (cut
 * at a character boundary) and runs it through both unescapes, each of
 * which leaves a reference that may go on for the next round, and
 * whitespace_clean, a stream (clean_state). The cleaned text is
 * lower-cased and split into pieces up to its last ' ' only, the rest
 * waiting for the next round: no piece spans a space, and the Final_Sigma
 * rule reads the same up to one. Encoding stops once ctx is full.
 *
 * So every text gets the ids it got when normalised whole, except where a
 * bound cuts:
 *  - a numeric reference of more than REF_MAX bytes (digits) is read as if
 *    the text ended there;
 *  - a run of more than CARRY_MAX bytes of cleaned text with no space is
 *    encoded as if a space followed it: the BPE of one piece is bounded;
 *  - more than PEND_MAX bytes of U+001C..U+001F inside white space (see
 *    clean_feed).
 * None of these is in a text anyone writes: CARRY_MAX bytes already hold
 * far more than 77 tokens of any script. */
#define SEG_MAX 4096
#define REF_MAX 256
#define CARRY_MAX 8192

/* Lower-cases s[0..n) and appends its tokens to out; returns the count
 * written (at most room) or -1 when out of memory. */
static int encode_clean(tok *t, bpe_work *w, sbuf *lower, const char *s, size_t n, int32_t *out,
                        int room)
{
	lower->n = 0;
	sb_put(lower, "", 0);
	py_lower(lower, s, n);
	if (lower->oom)
		return -1;
	return encode_text(t, w, lower->p, lower->n, out, room);
}

/* The end of the next round's text at p: the whole rest when it is short,
 * else the last character boundary within SEG_MAX bytes. */
static const char *segment_end(const char *p)
{
	size_t i = strnlen(p, SEG_MAX + 1);
	if (i <= SEG_MAX)
		return p + i;
	i = SEG_MAX;
	while (i > 1 && ((unsigned char)p[i] & 0xC0) == 0x80)
		i--;
	return p + i;
}

/* One unescape pass over the part in src (which keeps what is left for
 * the next part), appended to dst. */
static void unescape_part(sbuf *src, sbuf *dst, bool final)
{
	size_t k = html_unescape(dst, src->p, final);
	if (src->n - k > REF_MAX)
		k += html_unescape(dst, src->p + k, true);
	memmove(src->p, src->p + k, src->n - k + 1);
	src->n -= k;
}

int tok_encode(tok *t, const char *text, int32_t *ids, int ctx, int *len, clip_err *err)
{
	int rc = CLIP_OK;
	const char *bad;
	sbuf raw = {0}, once = {0}, twice = {0}, clean = {0}, lower = {0};
	clean_state cs = {0};
	bpe_work w = {0};
	int n = 0, room;

	if (len)
		*len = 0;
	if (ids && ctx > 0)
		memset(ids, 0, (size_t)ctx * sizeof *ids);
	if (!t || !text || !ids || ctx < 2)
		return clip_fail(err, CLIP_EINVAL, "tok_encode: %s",
		                ctx < 2 ? "the context must hold at least 2 tokens" : "NULL argument");
	if (!g_utf8_validate(text, -1, &bad))
		return clip_fail(err, CLIP_ETEXT, "text is not valid UTF-8 (at byte %td)", bad - text);

	/* [sot] + tokens + [eot], truncated to ctx with eot kept last */
	room = ctx - 2;
	sb_put(&raw, "", 0);
	sb_put(&once, "", 0);
	sb_put(&clean, "", 0);
	for (const char *p = text; *p && n < room;) {
		const char *q = segment_end(p);
		bool last = *q == '\0';
		/* basic_clean (minus ftfy), whitespace_clean */
		sb_put(&raw, p, (size_t)(q - p));
		if (!raw.oom)
			unescape_part(&raw, &once, last);
		twice.n = 0;
		sb_put(&twice, "", 0);
		if (!raw.oom && !once.oom)
			unescape_part(&once, &twice, last);
		if (!twice.oom)
			clean_feed(&cs, &clean, twice.p);
		if (raw.oom || once.oom || twice.oom || clean.oom || cs.pend.oom)
			goto oom;
		p = q;
		/* lower() and the pieces, up to the last space unless the text
		 * ends here or the rest grew past CARRY_MAX */
		size_t upto = clean.n;
		if (!last) {
			const char *sp = clean.n ? memrchr(clean.p, ' ', clean.n) : NULL;
			upto = sp ? (size_t)(sp - clean.p) + 1 : clean.n > CARRY_MAX ? clean.n : 0;
		}
		if (upto == 0)
			continue;
		int k = encode_clean(t, &w, &lower, clean.p, upto, ids + 1 + n, room - n);
		if (k < 0)
			goto oom;
		n += k;
		memmove(clean.p, clean.p + upto, clean.n - upto + 1);
		clean.n -= upto;
	}
	ids[0] = t->sot;
	ids[n + 1] = t->eot;
	if (len)
		*len = n + 2;
	goto out;
oom:
	memset(ids, 0, (size_t)ctx * sizeof *ids);
	rc = clip_fail(err, CLIP_ENOMEM, "out of memory tokenizing a text");
out:
	free(raw.p);
	free(once.p);
	free(twice.p);
	free(clean.p);
	free(lower.p);
	free(cs.pend.p);
	bpe_work_free(&w);
	return rc;
}
