/*
 * tok_spm.c: the SentencePiece tokenizers of SigLIP and SigLIP2 (API in
 * tok_spm_int.h), over the reference library (spm_shim.h) with the text
 * rules of Hugging Face's tokenizers in front of it.
 *
 * TOK_SPM_SIGLIP, SiglipTokenizer v4.44.2 with the hub's spiece.model:
 *   1. lower-casing as transformers' slow tokenizers do it: Python's
 *      .lower() of each character alone (py_lower_each: full Unicode,
 *      U+0130 to two characters, but no Final_Sigma: a capital sigma is
 *      always U+03C3, as PreTrainedTokenizer.tokenize's re.sub over "(.+?)"
 *      gives it);
 *   2. the special-token strings </s> and <unk> are split out and become
 *      their ids (matched after lower-casing; the white space they absorb
 *      on both sides is white space step 3 removes anyway);
 *   3. each piece of text between them: U+2581 to ' ', ASCII punctuation
 *      (string.punctuation) deleted, runs of str.isspace() characters to
 *      one ' ', stripped (SiglipTokenizer.canonicalize_text);
 *   4. SentencePiece's Encode with the model as it is (nmt_nfkc from the
 *      file's precompiled charsmap, dummy prefix, extra white space
 *      removed, byte fallback).
 * TOK_SPM_GEMMA, SigLIP2's GemmaTokenizer (add_bos_token=False,
 * add_eos_token=True): str.lower() (the model was trained on lower-cased
 * text and the tokenizer does not lower-case), <pad>, <eos>, <bos>, <unk>
 * written in the text split out, the rest through Encode (identity
 * normalisation, no dummy prefix, spaces kept, digits split, byte
 * fallback).
 * Both: the ids truncated to ctx-1, EOS appended (kept after truncation),
 * padded with the pad id. No BOS.
 *
 * The two lower-casings differ only for a word-final capital sigma
 * (U+03C3 for SigLIP, U+03C2 for SigLIP2's str.lower()).
 *
 * The bound. Only a prefix of the text is lower-cased, cleaned and encoded:
 * first TOK_SPM_PREFIX_FIRST bytes, then twice as many while the prefix
 * gives too few ids, up to TOK_SPM_PREFIX_MAX. A prefix ends at a cut
 * point, an ASCII space (GEMMA: one after a character other than ' ',
 * U+2581 and those a U+2581 follows inside a piece of the model), the last
 * one in the second half of the prefix. At such a cut
 * the ids of the prefix are exactly the first ids of the whole text:
 *  - str.lower() reads context (Final_Sigma) only up to the next character
 *    that is neither cased nor case-ignorable, and a space is neither;
 *  - no special-token string contains a space; punctuation deletion is per
 *    character and white-space collapsing ends the prefix's last piece of
 *    text where the whole text's continues with a space;
 *  - SentencePiece's normaliser matches its rules at the longest prefix,
 *    and no rule of nmt_nfkc spans a space (its keys are single characters
 *    and base + combining-mark sequences, builder.cc BuildNFKCMap, v0.1.97;
 *    identity has none), so the prefix normalises to a prefix of the
 *    whole, ending just before a U+2581 that follows another character;
 *  - no piece of the model contains a ' ', and none contains U+2581 right
 *    after the character before the cut (checked at open: cuts_exact and
 *    before[]; SIGLIP's pieces have no U+2581 after another character at
 *    all), so no piece can span the cut; and U+2581 is a piece, so no run
 *    of unknown pieces (merged into one id without byte fallback) crosses
 *    it. Unigram's Viterbi pass computes the best path to a position from
 *    the text before it only (unigram_model.cc EncodeOptimized), and every
 *    path of the whole text passes the cut, so the whole text's path up to
 *    the cut is the prefix's, float for float. BPE merges on either side
 *    of a boundary no piece spans are independent, so the left side ends as
 *    it does alone (bpe_model.cc Encode).
 * So the ids are those of the whole text except when:
 *  - the prefix holds no cut point in its second half (a run of more than
 *    TOK_SPM_PREFIX_FIRST/2 bytes without a space, as CJK text is): it is
 *    cut at a character boundary and must give ctx-1 + MIDRUN_MARGIN ids.
 *    The first ctx-1 can then differ only if the best segmentation of text
 *    more than MIDRUN_MARGIN pieces before the cut depends on text after it
 *    (possible in principle for Viterbi and BPE; none of tok_spm_diff's
 *    texts shows it);
 *  - the first TOK_SPM_PREFIX_MAX bytes give fewer than ctx-1 ids (256 KB
 *    of white space, punctuation or characters the normaliser deletes
 *    before the text): the rest is not read;
 *  - the model fails the cuts_exact check: no U+2581 piece, a piece with a
 *    ' ', more than BEFORE_MAX characters before a U+2581 inside pieces,
 *    or (SIGLIP) any (not the case for the kit's model, nor for a model
 *    trained with split_by_whitespace);
 *  - GEMMA with a normaliser other than identity (Gemma's is identity)
 *    that changes the characters around a cut.
 * tok_spm_stats.exact says which case a call was in.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "clip_int.h"
#include "spm_shim.h"
#include "text_clean_int.h"
#include "tok_spm_int.h"

#define MIDRUN_MARGIN 64
#define SPECIALS_MAX 4
#define BEFORE_MAX 64
#define LOWER_ONE_EIGHTH "\xE2\x96\x81"   /* U+2581, SentencePiece's space */

struct tok_spm {
	spm_model *sp;
	tok_spm_style style;
	int nvocab;
	int32_t eos, pad;
	int nspecial;
	struct special {
		const char *s;   /* a literal */
		size_t n;
		int32_t id;
	} special[SPECIALS_MAX];  /* the strings split out of the text */
	bool cuts_exact;          /* no piece can span a cut point (header) */
	int nbefore;              /* GEMMA: characters that precede U+2581 in a piece */
	gunichar before[BEFORE_MAX];
};

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Whether no piece has a ' ', and records in t->before the characters
 * other than U+2581 that a U+2581 follows inside a piece: a cut after one of
 * those could be spanned. SIGLIP has none of them (Unigram trained with
 * split_by_whitespace) or is not exact: its normaliser changes characters,
 * so the one before a cut in the text says little about the pieces. */
static bool check_cuts(tok_spm *t)
{
	if (spm_piece_id(t->sp, LOWER_ONE_EIGHTH) < 0)
		return false;
	for (int32_t id = 0; id < t->nvocab; id++) {
		size_t len;
		const char *s = spm_piece(t->sp, id, &len);
		if (!s || memchr(s, ' ', len) || !g_utf8_validate(s, (gssize)len, NULL))
			return false;
		for (size_t k = 1; k + 3 <= len; k++) {
			if (memcmp(s + k, LOWER_ONE_EIGHTH, 3) != 0)
				continue;
			gunichar c = g_utf8_get_char(g_utf8_prev_char(s + k));
			bool seen = c == 0x2581;
			for (int i = 0; i < t->nbefore && !seen; i++)
				seen = t->before[i] == c;
			if (seen)
				continue;
			if (t->style == TOK_SPM_SIGLIP || t->nbefore == BEFORE_MAX)
				return false;
			t->before[t->nbefore++] = c;
		}
	}
	return true;
}

/* Whether a piece may have c, the character before a space in the text,
 * followed by U+2581, once lower-cased as py_lower may (the space ends the
 * Final_Sigma context, so a capital sigma there may become either sigma). */
static bool before_space(const tok_spm *t, gunichar c)
{
	gunichar cand[4] = {c, c, c, c};
	char u[8];
	sbuf b = {0};
	if (t->nbefore == 0)
		return false;
	py_lower(&b, u, (size_t)g_unichar_to_utf8(c, u));
	if (!b.oom && b.n)
		cand[1] = g_utf8_get_char(g_utf8_prev_char(b.p + b.n));
	free(b.p);
	if (c == 0x3A3) {
		cand[2] = 0x3C2;
		cand[3] = 0x3C3;
	}
	for (int i = 0; i < t->nbefore; i++)
		for (int k = 0; k < 4; k++)
			if (t->before[i] == cand[k])
				return true;
	return false;
}

static int add_special(tok_spm *t, const char *s, bool required, const char *file, clip_err *err)
{
	int32_t id = spm_piece_id(t->sp, s);
	if (id < 0)
		return required ? clip_fail(err, CLIP_EMODEL, "%s: the model has no %s piece", file, s)
		                : CLIP_OK;
	t->special[t->nspecial++] = (struct special){.s = s, .n = strlen(s), .id = id};
	return CLIP_OK;
}

int tok_spm_open(const char *model_file, tok_spm_style style, tok_spm **out, clip_err *err)
{
	int rc;
	char msg[200];
	tok_spm *t = NULL;

	if (!out)
		return clip_fail(err, CLIP_EINVAL, "tok_spm_open: out is NULL");
	*out = NULL;
	if (!model_file || (style != TOK_SPM_SIGLIP && style != TOK_SPM_GEMMA))
		return clip_fail(err, CLIP_EINVAL, "tok_spm_open: bad argument");
	const char *file = base_name(model_file);
	/* The library's own message for a missing file names the path. */
	FILE *f = fopen(model_file, "rb");
	if (!f)
		return clip_fail(err, CLIP_EMODEL, "cannot open %s: %s", file, strerror(errno));
	fclose(f);

	t = calloc(1, sizeof *t);
	if (!t)
		return clip_fail(err, CLIP_ENOMEM, "out of memory opening the tokenizer");
	t->style = style;
	switch (spm_load(model_file, &t->sp, msg, sizeof msg)) {
	case SPM_OK:
		break;
	case SPM_ENOMEM:
		rc = clip_fail(err, CLIP_ENOMEM, "%s: %s", file, msg);
		goto out;
	default:
		rc = clip_fail(err, CLIP_EMODEL, "%s: %s", file, msg);
		goto out;
	}
	t->nvocab = spm_piece_count(t->sp);
	if (style == TOK_SPM_SIGLIP) {
		/* pad_token = eos_token = "</s>" (tokenizer_config.json) */
		if ((rc = add_special(t, "</s>", true, file, err)) != CLIP_OK ||
		    (rc = add_special(t, "<unk>", true, file, err)) != CLIP_OK)
			goto out;
		t->eos = t->pad = t->special[0].id;
	} else {
		if ((rc = add_special(t, "<pad>", true, file, err)) != CLIP_OK ||
		    (rc = add_special(t, "<eos>", true, file, err)) != CLIP_OK ||
		    (rc = add_special(t, "<bos>", false, file, err)) != CLIP_OK ||
		    (rc = add_special(t, "<unk>", false, file, err)) != CLIP_OK)
			goto out;
		t->pad = t->special[0].id;
		t->eos = t->special[1].id;
	}
	t->cuts_exact = check_cuts(t);
	*out = t;
	t = NULL;
	rc = CLIP_OK;
out:
	tok_spm_close(t);
	return rc;
}

void tok_spm_close(tok_spm *t)
{
	if (!t)
		return;
	spm_free(t->sp);
	free(t);
}

int tok_spm_vocab_size(const tok_spm *t)
{
	return t->nvocab;
}

int32_t tok_spm_pad_id(const tok_spm *t)
{
	return t->pad;
}

int32_t tok_spm_eos_id(const tok_spm *t)
{
	return t->eos;
}

/* ---- one prefix ---------------------------------------------------------- */

/* string.punctuation */
static bool ascii_punct(gunichar c)
{
	return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
	       (c >= 0x7B && c <= 0x7E);
}

/* SiglipTokenizer's canonicalize_text of s[0..n), after its tokenize()
 * turned U+2581 into ' ', into b (replacing its contents). */
static void siglip_canon(sbuf *b, const char *s, size_t n)
{
	const char *end = s + n;
	bool started = false, space = false;
	b->n = 0;
	sb_put(b, "", 0);
	for (const char *p = s; p < end;) {
		const char *q = g_utf8_next_char(p);
		gunichar c = g_utf8_get_char(p);
		if (ascii_punct(c)) {
			/* deleted, not replaced */
		} else if (c == 0x2581 || py_isspace(c)) {
			space = started;
		} else {
			if (space)
				sb_put(b, " ", 1);
			space = false;
			started = true;
			sb_put(b, p, (size_t)(q - p));
		}
		p = q;
	}
}

/* The output of one prefix: the first room ids and how many the prefix
 * gives in all. */
typedef struct prefix_out {
	int32_t *ids;
	int room, n;
	size_t count;
} prefix_out;

static int put_text(const tok_spm *t, sbuf *clean, const char *s, size_t n, prefix_out *o,
                    tok_spm_stats *st, clip_err *err)
{
	char msg[200];
	size_t total = 0;
	if (t->style == TOK_SPM_SIGLIP) {
		siglip_canon(clean, s, n);
		if (clean->oom)
			return clip_fail(err, CLIP_ENOMEM, "out of memory tokenizing a text");
		s = clean->p;
		n = clean->n;
	}
	if (n == 0)
		return CLIP_OK;
	st->bytes_encoded += n;
	switch (spm_encode(t->sp, s, n, o->ids + o->n, (size_t)(o->room - o->n), &total, msg,
	                   sizeof msg)) {
	case SPM_OK:
		break;
	case SPM_ENOMEM:
		return clip_fail(err, CLIP_ENOMEM, "%s", msg);
	default:
		return clip_fail(err, CLIP_EMODEL, "%s", msg);
	}
	o->count += total;
	o->n += total < (size_t)(o->room - o->n) ? (int)total : o->room - o->n;
	return CLIP_OK;
}

/* Tokenizes the prefix s[0..p) into o. */
static int run_prefix(const tok_spm *t, const char *s, size_t p, sbuf *lower, sbuf *clean,
                      prefix_out *o, tok_spm_stats *st, clip_err *err)
{
	int rc;
	o->n = 0;
	o->count = 0;
	lower->n = 0;
	sb_put(lower, "", 0);
	if (t->style == TOK_SPM_SIGLIP)
		py_lower_each(lower, s, p);
	else
		py_lower(lower, s, p);
	if (lower->oom)
		return clip_fail(err, CLIP_ENOMEM, "out of memory tokenizing a text");
	st->bytes_read += p;

	const char *a = lower->p, *end = lower->p + lower->n;
	for (const char *q = a; q < end; q++) {
		if (*q != '<')
			continue;
		const struct special *sp = NULL;
		for (int i = 0; i < t->nspecial && !sp; i++)
			if ((size_t)(end - q) >= t->special[i].n &&
			    memcmp(q, t->special[i].s, t->special[i].n) == 0)
				sp = &t->special[i];
		if (!sp)
			continue;
		if ((rc = put_text(t, clean, a, (size_t)(q - a), o, st, err)) != CLIP_OK)
			return rc;
		o->count++;
		if (o->n < o->room)
			o->ids[o->n++] = sp->id;
		a = q + sp->n;
		q = a - 1;
	}
	return put_text(t, clean, a, (size_t)(end - a), o, st, err);
}

/* The end of the prefix of at most limit bytes of s (which is longer): the
 * last cut point in its second half, *clean set; else the last character
 * boundary, *clean cleared. */
static size_t find_cut(const tok_spm *t, const char *s, size_t limit, bool *clean)
{
	for (size_t i = limit; i > limit / 2; i--) {
		if (s[i] != ' ')
			continue;
		if (t->style == TOK_SPM_GEMMA) {
			gunichar c = g_utf8_get_char(g_utf8_prev_char(s + i));
			if (c == ' ' || c == 0x2581 || before_space(t, c))
				continue;
		}
		*clean = true;
		return i;
	}
	size_t i = limit;
	while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
		i--;
	*clean = false;
	return i;
}

int tok_spm_encode_stats(const tok_spm *t, const char *text, int32_t *ids, int ctx, int *len,
                         tok_spm_stats *stats, clip_err *err)
{
	int rc = CLIP_OK;
	const char *bad;
	sbuf lower = {0}, clean = {0};
	tok_spm_stats st = {0};

	if (len)
		*len = 0;
	if (stats)
		*stats = st;
	if (ids && ctx > 0)
		for (int i = 0; i < ctx; i++)
			ids[i] = t ? t->pad : 0;
	if (!t || !text || !ids || ctx < 2)
		return clip_fail(err, CLIP_EINVAL, "tok_spm_encode: %s",
		                ctx < 2 ? "the context must hold at least 2 tokens" : "NULL argument");
	if (!g_utf8_validate(text, -1, &bad))
		return clip_fail(err, CLIP_ETEXT, "text is not valid UTF-8 (at byte %td)", bad - text);

	size_t n = (size_t)(bad - text);   /* g_utf8_validate stopped at the NUL */
	prefix_out o = {.ids = ids, .room = ctx - 1};
	for (size_t limit = TOK_SPM_PREFIX_FIRST;; limit *= 2) {
		bool clean_cut = true;
		size_t p = n <= limit ? n : find_cut(t, text, limit, &clean_cut);
		st.attempts++;
		st.prefix_bytes = p;
		rc = run_prefix(t, text, p, &lower, &clean, &o, &st, err);
		if (rc != CLIP_OK)
			goto fail;
		if (p == n) {
			st.exact = 1;
			break;
		}
		if (o.count >= (size_t)o.room + (clean_cut ? 0 : MIDRUN_MARGIN)) {
			st.exact = clean_cut && t->cuts_exact;
			break;
		}
		if (limit >= TOK_SPM_PREFIX_MAX)
			break;
	}
	ids[o.n] = t->eos;
	for (int i = o.n + 1; i < ctx; i++)   /* an earlier attempt may have written there */
		ids[i] = t->pad;
	if (len)
		*len = o.n + 1;
	goto out;
fail:
	for (int i = 0; i < ctx; i++)
		ids[i] = t->pad;
out:
	if (stats)
		*stats = st;
	free(lower.p);
	free(clean.p);
	return rc;
}

int tok_spm_encode(const tok_spm *t, const char *text, int32_t *ids, int ctx, int *len,
                   clip_err *err)
{
	return tok_spm_encode_stats(t, text, ids, ctx, len, NULL, err);
}
