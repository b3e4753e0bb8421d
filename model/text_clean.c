/*
 * text_clean.c: the text clean-up steps tokenizers share (text_clean_int.h):
 * a growable byte buffer, Python's html.unescape, whitespace_clean and
 * str.lower(), each reproduced as CPython and open_clip do them.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "text_clean_int.h"

/* ---- growable byte buffer ---------------------------------------------- */

void sb_reserve(sbuf *b, size_t more)
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

void sb_put(sbuf *b, const char *s, size_t n)
{
	sb_reserve(b, n);
	if (b->oom)
		return;
	if (n) /* s may be NULL for an empty piece: memcpy's arguments may not */
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

void sb_putc(sbuf *b, gunichar c)
{
	char u[8];
	sb_put(b, u, (size_t)g_unichar_to_utf8(c, u));
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
size_t html_unescape(sbuf *b, const char *s, bool final)
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
bool py_isspace(gunichar c)
{
	if (c < 0x80)
		return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
	return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
	       c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The Unicode White_Space property: \s of the `regex` module, which
 * whitespace_clean and the pre-tokeniser use. Unlike str.isspace() it leaves
 * out U+001C..U+001F. */
bool white_space(gunichar c)
{
	return py_isspace(c) && !(c >= 0x1C && c <= 0x1F);
}

void clean_feed(clean_state *cs, sbuf *out, const char *s)
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
void py_lower(sbuf *b, const char *s, size_t n)
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

