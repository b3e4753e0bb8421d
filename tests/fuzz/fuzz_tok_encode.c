/*
 * fuzz_tok_encode: the tokenizer's encode (model/tok_bpe.c, tok_encode)
 * on any bytes as text, with the reference vocabulary
 * ($CLIPD_REFERENCE/tiny-clip-a, read once at start). The first byte picks
 * the context length (77, CLIP's, for half the inputs; 2..81 otherwise),
 * the rest is the text. tok_encode's contract is checked: valid UTF-8
 * gives <|startoftext|> ... <|endoftext|> within the context and zeros
 * after; anything else is CLIP_ETEXT with all zeros.
 */
#include <glib.h>
#include <stdint.h>

#include "fuzz_util.h"
#include "tok_bpe_int.h"

#define CTX_MAX 81

static tok *t;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char vocab[4200], merges[4200];
	clip_err err;
	(void)argc;
	(void)argv;
	snprintf(vocab, sizeof vocab, "%s/tiny-clip-a/vocab.json", fuzz_reference());
	snprintf(merges, sizeof merges, "%s/tiny-clip-a/merges.txt", fuzz_reference());
	if (tok_open(vocab, merges, &t, &err) != CLIP_OK) {
		fprintf(stderr, "fuzz_tok_encode: %s\n", err.msg);
		abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	int32_t ids[CTX_MAX];
	int n = -1;
	clip_err err;
	if (len == 0)
		return 0;
	int ctx = data[0] < 128 ? 77 : 2 + data[0] % 80;
	char *text = malloc(len);
	FUZZ_CHECK(text != NULL);
	memcpy(text, data + 1, len - 1);
	text[len - 1] = 0;
	int rc = tok_encode(t, text, ids, ctx, &n, &err);
	if (g_utf8_validate(text, -1, NULL)) {
		FUZZ_CHECK(rc == CLIP_OK);
		FUZZ_CHECK(n >= 2 && n <= ctx);
		FUZZ_CHECK(ids[0] == tok_sot(t) && ids[n - 1] == tok_eot(t));
		for (int i = 1; i < n - 1; i++)
			FUZZ_CHECK(ids[i] >= 0 && ids[i] < tok_vocab_size(t));
	} else {
		FUZZ_CHECK(rc == CLIP_ETEXT && n == 0);
	}
	for (int i = n > 0 ? n : 0; i < ctx; i++)
		FUZZ_CHECK(ids[i] == 0);
	free(text);
	return 0;
}
