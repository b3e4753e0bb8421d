/*
 * tok_bpe.c: CLIP's byte-level BPE tokenizer (API in tok_bpe_int.h; the
 * clean-up of steps 1 and 2 is text_clean.c).
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
#include "text_clean_int.h"
#include "tok_bpe_int.h"

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
