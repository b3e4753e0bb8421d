/*
 * tok_wordpiece.c: Chinese-CLIP's WordPiece tokenizer (API in
 * tok_wordpiece_int.h; lower-casing and the byte buffer are text_clean.c).
 *
 * tok_wp_encode reproduces transformers v4.44.2's slow BertTokenizer with
 * do_lower_case, tokenize_chinese_chars and strip_accents=None, called as
 * processor(text, padding='max_length', max_length=ctx, truncation=True):
 *   1. [PAD] [UNK] [CLS] [SEP] [MASK] written in the text (case-sensitive,
 *      leftmost first) are split out and become their ids; "[mask]" is
 *      ordinary text;
 *   2. the rest is lower-cased one character at a time (py_lower_each:
 *      capital sigma always to U+03C3, U+0130 to "i" + U+0307);
 *   3. U+0000, U+FFFD and every category C character (Cc, Cf, Co, Cs, Cn)
 *      except \t \n \r are dropped; \t \n \r and Zs become ' ';
 *   4. a space each side of every CJK ideograph of cjk() below;
 *   5. NFC (g_utf8_normalize; not NFKC: full-width forms stay);
 *   6. split on white space as str.split() (' ', U+2028, U+2029 are what
 *      is left by then);
 *   7. each word: str.lower() (py_lower), NFD, Mn characters dropped;
 *   8. each punctuation character (ASCII 33-47, 58-64, 91-96, 123-126 or a
 *      category P) is a word of its own;
 *   9. WordPiece: a word of more than 100 characters is [UNK]; otherwise
 *      longest match first from the left, "##" before the pieces after the
 *      first, and the whole word is [UNK] if some position matches nothing;
 *  10. [CLS], the first ctx-2 pieces, [SEP], [PAD] up to ctx.
 * Character properties come from GLib's tables (GLib 2.74: Unicode 15.0);
 * the reference ran Python 3.11, whose unicodedata is Unicode 14.0. Checked
 * once over every code point (ctypes calling g_unichar_type and
 * g_utf8_normalize beside unicodedata, GLib 2.74.6, Python 3.11.7): the
 * categories differ only on the 4,489 characters Unicode 15.0 added, which
 * Python calls Cn and drops and GLib keeps (so a word holding one is
 * mostly [UNK] here); G_NORMALIZE_NFC and G_NORMALIZE_NFD give
 * unicodedata's NFC and NFD for every other character. The unit test
 * compares the kit's texts and its own ones (tests/tok_wp_ref.py).
 *
 * The bound. The text is cut into chunks of at most CHUNK_MAX bytes, each
 * run through steps 2-9 alone, until ctx-2 pieces are known. A chunk ends
 * at a special-token string or just before a cut character: ASCII
 * white space, Zs, U+2028/U+2029, an ideograph of cjk() or a punctuation
 * character of step 8. At such a cut the pieces of the chunks are exactly
 * those of the whole text: steps 2 and 3 are per character; step 4 puts a
 * space before an ideograph; a cut character is a starter that NFC never
 * composes with what precedes it (no canonical composition has white space,
 * an ideograph or punctuation as its second character); steps 6 and 8 end a
 * word there, and no special-token string holds a cut character other than
 * its first '['. (Checked once over every code point with Python 3.11's
 * unicodedata: each of the 82,370 cut characters has combining class 0, is
 * the second character of no canonical decomposition, and stays one
 * punctuation character or ideograph through steps 2-7.)
 * A run of more than CHUNK_MAX bytes without a cut (a 10 MB "word") is
 * read one character at a time instead, with memory bounded: each
 * character lower-cased, cleaned and fully decomposed on its own, its Mn
 * characters dropped, punctuation splitting the word, and the word kept
 * only up to 101 characters (more is [UNK] whatever they are). That equals
 * steps 2-9 because NFD(NFC(x)) = NFD(x) and the lower-casing of step 7
 * changes nothing in text step 2 lower-cased (checked over every code
 * point and every canonical composition of a lower-case base with Python
 * 3.11: NFC of a lower-cased text is lower case); it can differ only in the
 * order of two non-Mn combining characters of different combining classes
 * (Mc musical symbols), which NFD's canonical reordering would swap. Such a
 * run is read to its end (where its last word ends) unless the pieces fill
 * up inside it; that costs work in proportion to its length, as the UTF-8
 * check does, but no memory.
 * The ids are those of the whole text normalised at once except in that
 * Mc case. A special-token string that steps 2-8 would produce inside a
 * word (none can: they are upper case after lower-casing) is not looked for.
 *
 * DESIGN: threads. A tok_wp is read-only after tok_wp_open (its GHashTable
 * is only looked up, which GLib allows from many threads at once); every
 * buffer of an encode is its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "clip_int.h"
#include "text_clean_int.h"
#include "tok_wordpiece_int.h"

#define CHUNK_MAX 4096
#define WORD_CHARS_MAX 100          /* BertTokenizer's max_input_chars_per_word */
#define VOCAB_BYTES_MAX (64u << 20)
#define KEY_MAX (2 + WORD_CHARS_MAX * 6 + 1)

enum { SP_PAD, SP_UNK, SP_CLS, SP_SEP, SP_MASK, SP_N };

static const char *const special_str[SP_N] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

struct tok_wp {
	char *buf;            /* the file, line ends replaced by NULs: the keys */
	GHashTable *vocab;    /* token -> GINT_TO_POINTER(id + 1) */
	int nvocab;           /* lines */
	int max_chars;        /* the longest token, in characters: no piece is longer */
	int32_t special[SP_N];
};

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

static int32_t lookup(const tok_wp *t, const char *key)
{
	gpointer v = g_hash_table_lookup(t->vocab, key);
	return v ? GPOINTER_TO_INT(v) - 1 : -1;
}

/* ---- open --------------------------------------------------------------- */

static int read_file(const char *path, const char *file, char **out, size_t *len, clip_err *err)
{
	struct stat st;
	int rc = CLIP_OK;
	char *buf = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return clip_fail(err, CLIP_EIO, "cannot open %s: %s", file, strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = clip_fail(err, CLIP_EIO, "cannot read %s: %s", file, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = clip_fail(err, CLIP_EIO, "%s is not a regular file", file);
		goto out;
	}
	if ((uint64_t)st.st_size > VOCAB_BYTES_MAX) {
		rc = clip_fail(err, CLIP_EMODEL, "%s: larger than %u MB", file, VOCAB_BYTES_MAX >> 20);
		goto out;
	}
	size_t n = (size_t)st.st_size, got = 0;
	buf = malloc(n + 1);
	if (!buf) {
		rc = clip_fail(err, CLIP_ENOMEM, "out of memory reading %s", file);
		goto out;
	}
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = clip_fail(err, CLIP_EIO, "cannot read %s: %s", file,
			               r < 0 ? strerror(errno) : "truncated while reading");
			goto out;
		}
		got += (size_t)r;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

int tok_wp_open(const char *vocab_txt, tok_wp **out, clip_err *err)
{
	int rc;
	size_t n = 0;
	tok_wp *t = NULL;

	if (!out)
		return clip_fail(err, CLIP_EINVAL, "tok_wp_open: out is NULL");
	*out = NULL;
	if (!vocab_txt)
		return clip_fail(err, CLIP_EINVAL, "tok_wp_open: bad argument");
	const char *file = base_name(vocab_txt);
	t = calloc(1, sizeof *t);
	if (!t)
		return clip_fail(err, CLIP_ENOMEM, "out of memory opening the tokenizer");
	if ((rc = read_file(vocab_txt, file, &t->buf, &n, err)) != CLIP_OK)
		goto out;
	if (n == 0) {
		rc = clip_fail(err, CLIP_EMODEL, "%s: empty", file);
		goto out;
	}
	t->vocab = g_hash_table_new(g_str_hash, g_str_equal);
	/* Lines as Python's text mode reads them: "\n", "\r\n" and "\r" end
	 * one; a last line without an end is a token too. */
	char *p = t->buf, *end = t->buf + n;
	int line = 0;
	while (p < end) {
		char *q = p;
		while (q < end && *q != '\n' && *q != '\r' && *q != '\0')
			q++;
		line++;
		if (q < end && *q == '\0') {
			rc = clip_fail(err, CLIP_EMODEL, "%s: line %d holds a NUL byte", file, line);
			goto out;
		}
		if (!g_utf8_validate(p, q - p, NULL)) {
			rc = clip_fail(err, CLIP_EMODEL, "%s: line %d is not valid UTF-8", file, line);
			goto out;
		}
		if (line == INT32_MAX) {
			rc = clip_fail(err, CLIP_EMODEL, "%s: too many lines", file);
			goto out;
		}
		char *next = q;
		if (q < end)
			next = q + (q[0] == '\r' && q + 1 < end && q[1] == '\n' ? 2 : 1);
		*q = '\0';   /* buf[n] is the NUL of a last line without an end */
		/* A token listed again takes its later id (load_vocab's dict). */
		g_hash_table_insert(t->vocab, p, GINT_TO_POINTER(line));
		int chars = (int)g_utf8_strlen(p, -1);
		if (chars > t->max_chars)
			t->max_chars = chars;
		p = next;
	}
	t->nvocab = line;
	for (int i = 0; i < SP_N; i++) {
		t->special[i] = lookup(t, special_str[i]);
		if (t->special[i] < 0) {
			rc = clip_fail(err, CLIP_EMODEL, "%s: no line is the token %s", file,
			               special_str[i]);
			goto out;
		}
	}
	*out = t;
	t = NULL;
	rc = CLIP_OK;
out:
	tok_wp_close(t);
	return rc;
}

void tok_wp_close(tok_wp *t)
{
	if (!t)
		return;
	if (t->vocab)
		g_hash_table_destroy(t->vocab);
	free(t->buf);
	free(t);
}

int tok_wp_vocab_size(const tok_wp *t)
{
	return t->nvocab;
}

/* ---- character classes -------------------------------------------------- */

/* The CJK ideographs of BasicTokenizer._is_chinese_char. */
static bool cjk(gunichar c)
{
	return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
	       (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
	       (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
	       (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* _clean_text's dropped characters: NUL, U+FFFD, category C but \t \n \r. */
static bool dropped(gunichar c)
{
	if (c == 0 || c == 0xFFFD)
		return true;
	if (c == '\t' || c == '\n' || c == '\r')
		return false;
	switch (g_unichar_type(c)) {
	case G_UNICODE_CONTROL:
	case G_UNICODE_FORMAT:
	case G_UNICODE_UNASSIGNED:
	case G_UNICODE_PRIVATE_USE:
	case G_UNICODE_SURROGATE:
		return true;
	default:
		return false;
	}
}

/* _clean_text's white space (mapped to ' '). */
static bool wp_space(gunichar c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
	       g_unichar_type(c) == G_UNICODE_SPACE_SEPARATOR;
}

/* _is_punctuation. */
static bool punct(gunichar c)
{
	if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
	    (c >= 123 && c <= 126))
		return true;
	switch (g_unichar_type(c)) {
	case G_UNICODE_CONNECT_PUNCTUATION:
	case G_UNICODE_DASH_PUNCTUATION:
	case G_UNICODE_CLOSE_PUNCTUATION:
	case G_UNICODE_FINAL_PUNCTUATION:
	case G_UNICODE_INITIAL_PUNCTUATION:
	case G_UNICODE_OTHER_PUNCTUATION:
	case G_UNICODE_OPEN_PUNCTUATION:
		return true;
	default:
		return false;
	}
}

/* A character a chunk may end before (see the header). */
static bool cut_char(gunichar c)
{
	return wp_space(c) || c == 0x2028 || c == 0x2029 || cjk(c) || punct(c);
}

/* ---- output ------------------------------------------------------------- */

typedef struct piece_out {
	int32_t *ids;   /* the pieces go to ids[1..room] */
	int n, room;
} piece_out;

/* Appends id; returns whether the output is full. */
static bool emit(piece_out *o, int32_t id)
{
	if (o->n < o->room)
		o->ids[1 + o->n++] = id;
	return o->n >= o->room;
}

/* Step 9 for the word s[0..n) of nch characters (already known when
 * nch > WORD_CHARS_MAX, which is all that is needed then). */
static bool wordpiece(const tok_wp *t, const char *s, size_t n, int nch, piece_out *o)
{
	int32_t got[WORD_CHARS_MAX];
	size_t off[WORD_CHARS_MAX + 1];
	char key[KEY_MAX];
	int ngot = 0;

	if (nch > WORD_CHARS_MAX)
		return emit(o, t->special[SP_UNK]);
	if (nch == 0)
		return o->n >= o->room;
	int k = 0;
	for (const char *p = s; p < s + n; p = g_utf8_next_char(p))
		off[k++] = (size_t)(p - s);
	off[k] = n;
	for (int start = 0; start < nch;) {
		int end = nch < start + t->max_chars ? nch : start + t->max_chars;
		int32_t id = -1;
		for (; end > start; end--) {
			size_t pre = start > 0 ? 2 : 0, len = off[end] - off[start];
			memcpy(key, "##", pre);
			memcpy(key + pre, s + off[start], len);
			key[pre + len] = '\0';
			if ((id = lookup(t, key)) >= 0)
				break;
		}
		if (id < 0)
			return emit(o, t->special[SP_UNK]);
		got[ngot++] = id;
		start = end;
	}
	for (int i = 0; i < ngot; i++)
		if (emit(o, got[i]))
			return true;
	return o->n >= o->room;
}

/* ---- a chunk, steps 2-9 --------------------------------------------------- */

typedef struct bufs {
	sbuf lower, clean, word, strip;
} bufs;

/* Steps 7-9 for the word w[0..n). */
static bool do_word(const tok_wp *t, const char *w, size_t n, bufs *b, piece_out *o)
{
	b->word.n = 0;
	py_lower(&b->word, w, n);
	if (b->word.oom)
		return false;
	char *nfd = g_utf8_normalize(b->word.p, (gssize)b->word.n, G_NORMALIZE_NFD);
	b->strip.n = 0;
	for (const char *p = nfd; p && *p; p = g_utf8_next_char(p))
		if (g_unichar_type(g_utf8_get_char(p)) != G_UNICODE_NON_SPACING_MARK)
			sb_put(&b->strip, p, (size_t)(g_utf8_next_char(p) - p));
	g_free(nfd);
	if (b->strip.oom)
		return false;
	/* step 8, then 9 on each part */
	const char *s = b->strip.p, *end = s + b->strip.n, *wstart = s;
	int nch = 0;
	for (const char *p = s; p < end; p = g_utf8_next_char(p)) {
		if (!punct(g_utf8_get_char(p))) {
			nch++;
			continue;
		}
		const char *q = g_utf8_next_char(p);
		if (wordpiece(t, wstart, (size_t)(p - wstart), nch, o) ||
		    wordpiece(t, p, (size_t)(q - p), 1, o))
			return true;
		wstart = q;
		nch = 0;
	}
	return wordpiece(t, wstart, (size_t)(end - wstart), nch, o);
}

/* Steps 2-9 for s[0..n); returns whether the output is full. */
static bool run_chunk(const tok_wp *t, const char *s, size_t n, bufs *b, piece_out *o)
{
	bool full = false;
	b->lower.n = 0;
	py_lower_each(&b->lower, s, n);
	b->clean.n = 0;
	const char *end = b->lower.p + b->lower.n;
	for (const char *p = b->lower.p; p && p < end; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);
		if (dropped(c))
			continue;
		if (wp_space(c)) {
			sb_put(&b->clean, " ", 1);
		} else if (cjk(c)) {
			sb_put(&b->clean, " ", 1);
			sb_putc(&b->clean, c);
			sb_put(&b->clean, " ", 1);
		} else {
			sb_put(&b->clean, p, (size_t)(g_utf8_next_char(p) - p));
		}
	}
	if (b->lower.oom || b->clean.oom || b->clean.n == 0)
		return false;
	char *nfc = g_utf8_normalize(b->clean.p, (gssize)b->clean.n, G_NORMALIZE_NFC);
	const char *w = NULL;
	for (const char *p = nfc; p; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);
		bool sep = c == 0 || py_isspace(c);
		if (sep && w) {
			if ((full = do_word(t, w, (size_t)(p - w), b, o)))
				break;
			w = NULL;
		} else if (!sep && !w) {
			w = p;
		}
		if (c == 0)
			break;
	}
	g_free(nfc);
	return full;
}

/* ---- a long run, a character at a time ---------------------------------- */

typedef struct run_word {
	char buf[WORD_CHARS_MAX * 4 + 4];
	size_t n;
	int nch;   /* may pass WORD_CHARS_MAX: the word is then [UNK] */
} run_word;

static bool run_flush(const tok_wp *t, run_word *w, piece_out *o)
{
	bool full = wordpiece(t, w->buf, w->n, w->nch, o);
	w->n = 0;
	w->nch = 0;
	return full;
}

/* Steps 2-9, a character at a time (see the header), for the run at s up
 * to the next cut character or end; returns where it stopped. *full says
 * whether the output filled up, *oom whether memory ran out. */
static const char *run_long(const tok_wp *t, const char *s, const char *end, piece_out *o,
                            bool *full, bool *oom, tok_wp_stats *st)
{
	run_word w = {.n = 0};
	sbuf lb = {0};   /* one character lower-cased */
	const char *p = s;
	*full = false;
	st->long_runs++;
	for (; p < end; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);
		if (p > s && cut_char(c))
			break;
		lb.n = 0;
		py_lower_each(&lb, p, (size_t)(g_utf8_next_char(p) - p));
		if (lb.oom) {
			*oom = true;
			goto out;
		}
		for (const char *q = lb.p; q < lb.p + lb.n; q = g_utf8_next_char(q)) {
			gunichar d[G_UNICHAR_MAX_DECOMPOSITION_LENGTH];
			gunichar l = g_utf8_get_char(q);
			if (dropped(l))
				continue;
			gsize nd = g_unichar_fully_decompose(l, FALSE, d, G_N_ELEMENTS(d));
			for (gsize i = 0; i < nd; i++) {
				if (g_unichar_type(d[i]) == G_UNICODE_NON_SPACING_MARK)
					continue;
				if (punct(d[i]) || wp_space(d[i]) || cjk(d[i])) {
					/* a boundary the decomposition made (U+2260 gives '=') */
					if (run_flush(t, &w, o)) {
						*full = true;
						goto out;
					}
					if (punct(d[i]) || cjk(d[i])) {
						char u[8];
						int un = g_unichar_to_utf8(d[i], u);
						if ((*full = wordpiece(t, u, (size_t)un, 1, o)))
							goto out;
					}
					continue;
				}
				if (++w.nch <= WORD_CHARS_MAX)
					w.n += (size_t)g_unichar_to_utf8(d[i], w.buf + w.n);
				else if (w.nch == WORD_CHARS_MAX + 1 && o->n + 1 >= o->room) {
					/* [UNK] whatever follows, and the last piece kept */
					*full = run_flush(t, &w, o);
					goto out;
				}
			}
		}
	}
	*full = run_flush(t, &w, o);
out:
	free(lb.p);
	st->run_bytes += (size_t)(p - s);
	return p;
}

/* ---- encode ------------------------------------------------------------- */

/* The leftmost special-token string at or after p in [p, end), or end;
 * *which is its index. */
static const char *next_special(const char *p, const char *end, int *which)
{
	for (;;) {
		const char *q = memchr(p, '[', (size_t)(end - p));
		if (!q)
			return end;
		for (int i = 0; i < SP_N; i++) {
			size_t l = strlen(special_str[i]);
			if ((size_t)(end - q) >= l && memcmp(q, special_str[i], l) == 0) {
				*which = i;
				return q;
			}
		}
		p = q + 1;
	}
}

/* Where the chunk from p (before seg) ends: seg if that is at most
 * CHUNK_MAX bytes away, else the last cut character after p within
 * CHUNK_MAX bytes, else NULL (a long run). */
static const char *find_cut(const char *p, const char *seg)
{
	if ((size_t)(seg - p) <= CHUNK_MAX)
		return seg;
	const char *cut = NULL, *lim = p + CHUNK_MAX;
	for (const char *q = g_utf8_next_char(p); q <= lim; q = g_utf8_next_char(q))
		if (cut_char(g_utf8_get_char(q)))
			cut = q;
	return cut;
}

int tok_wp_encode_stats(const tok_wp *t, const char *text, int32_t *ids, int ctx, int *len,
                        tok_wp_stats *stats, clip_err *err)
{
	const char *bad;
	bufs b;
	tok_wp_stats st = {0};
	int rc = CLIP_OK;

	if (len)
		*len = 0;
	if (stats)
		*stats = st;
	if (ids && ctx > 0)
		for (int i = 0; i < ctx; i++)
			ids[i] = t ? t->special[SP_PAD] : 0;
	if (!t || !text || !ids || ctx < 2)
		return clip_fail(err, CLIP_EINVAL, "tok_wp_encode: %s",
		                 ctx < 2 ? "the context must hold at least 2 tokens" : "NULL argument");
	if (!g_utf8_validate(text, -1, &bad))
		return clip_fail(err, CLIP_ETEXT, "text is not valid UTF-8 (at byte %td)", bad - text);

	memset(&b, 0, sizeof b);
	const char *end = bad;   /* g_utf8_validate stopped at the NUL */
	piece_out o = {.ids = ids, .room = ctx - 2};
	bool full = o.room == 0;
	const char *p = text;
	int which = 0;
	const char *sp = next_special(p, end, &which);
	while (!full && p < end) {
		if (p == sp) {
			full = emit(&o, t->special[which]);
			p += strlen(special_str[which]);
			sp = next_special(p, end, &which);
			continue;
		}
		const char *cut = find_cut(p, sp);
		if (!cut) {
			bool oom = false;
			p = run_long(t, p, sp, &o, &full, &oom, &st);
			if (oom) {
				rc = clip_fail(err, CLIP_ENOMEM, "out of memory tokenizing");
				goto fail;
			}
			continue;
		}
		st.chunks++;
		st.normalised_bytes += (size_t)(cut - p);
		full = run_chunk(t, p, (size_t)(cut - p), &b, &o);
		if (b.lower.oom || b.clean.oom || b.word.oom || b.strip.oom) {
			rc = clip_fail(err, CLIP_ENOMEM, "out of memory tokenizing");
			goto fail;
		}
		p = cut;
	}
	ids[0] = t->special[SP_CLS];
	ids[o.n + 1] = t->special[SP_SEP];
	if (len)
		*len = o.n + 2;
	goto out;
fail:
	for (int i = 0; i < ctx; i++)
		ids[i] = t->special[SP_PAD];
out:
	if (stats)
		*stats = st;
	free(b.lower.p);
	free(b.clean.p);
	free(b.word.p);
	free(b.strip.p);
	return rc;
}

int tok_wp_encode(const tok_wp *t, const char *text, int32_t *ids, int ctx, int *len,
                  clip_err *err)
{
	return tok_wp_encode_stats(t, text, ids, ctx, len, NULL, err);
}
