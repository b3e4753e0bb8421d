/*
 * text_clean_int.h: text clean-up shared by the tokenizers (text_clean.c).
 * Private to the model module. Every function appends to an sbuf, whose
 * oom flag records a failed append (the contents are then incomplete).
 * Thread-safety: none needed; all state is the caller's.
 */
#ifndef CLIPD_TEXT_CLEAN_INT_H
#define CLIPD_TEXT_CLEAN_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <glib.h>

/* A growable NUL-terminated byte buffer; zero-initialise, free(b.p). */
typedef struct sbuf {
	char *p;
	size_t n, cap;
	bool oom;   /* an append failed; the contents are incomplete */
} sbuf;

void sb_reserve(sbuf *b, size_t more);
void sb_put(sbuf *b, const char *s, size_t n);
void sb_putc(sbuf *b, gunichar c);

/* Python's html.unescape of s, appended to b. Stops before a '&' whose
 * reference may continue past the end of s unless final; returns the bytes
 * of s consumed. */
size_t html_unescape(sbuf *b, const char *s, bool final);

/* Python's str.isspace(), and the Unicode White_Space property. */
bool py_isspace(gunichar c);
bool white_space(gunichar c);

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

void clean_feed(clean_state *cs, sbuf *out, const char *s);

/* Python's str.lower() of s[0..n) (full Unicode: U+0130, Final_Sigma, the
 * cased non-letters), appended to b. */
void py_lower(sbuf *b, const char *s, size_t n);

#endif
