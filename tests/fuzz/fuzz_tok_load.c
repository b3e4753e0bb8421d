/*
 * fuzz_tok_load: loading vocab.json and merges.txt (model/tok_bpe.c,
 * tok_open). The input is vocab.json, the separator line below, then
 * merges.txt. A tokenizer that opens is then used: a few texts (every byte
 * value among them) are encoded and every id must be inside the vocabulary,
 * so tables that load but point outside it are caught.
 */
#include <stdint.h>

#include "fuzz_util.h"
#include "tok_bpe_int.h"

#define SEP "\n--- merges.txt ---\n"
#define CTX 77

static void check_ids(tok *t, const char *text)
{
	int32_t ids[CTX];
	int len;
	clip_err err;
	int rc = tok_encode(t, text, ids, CTX, &len, &err);
	if (rc != CLIP_OK) {
		FUZZ_CHECK(rc == CLIP_ETEXT && len == 0);
		return;
	}
	FUZZ_CHECK(len >= 2 && len <= CTX);
	FUZZ_CHECK(ids[0] == tok_sot(t) && ids[len - 1] == tok_eot(t));
	for (int i = 0; i < len; i++)
		FUZZ_CHECK(ids[i] >= 0 && ids[i] < tok_vocab_size(t));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char vpath[64], mpath[64];
	const uint8_t *merges;
	size_t vlen, mlen;
	tok *t = NULL;
	clip_err err;

	fuzz_split(data, len, SEP, &vlen, &merges, &mlen);
	int vfd = fuzz_memfile("vocab.json", data, vlen, vpath, sizeof vpath);
	int mfd = fuzz_memfile("merges.txt", merges ? merges : (const uint8_t *)"", mlen, mpath,
	                       sizeof mpath);
	int rc = tok_open(vpath, mpath, &t, &err);
	if (rc == CLIP_OK) {
		FUZZ_CHECK(t != NULL);
		FUZZ_CHECK(tok_sot(t) >= 0 && tok_sot(t) < tok_vocab_size(t));
		FUZZ_CHECK(tok_eot(t) >= 0 && tok_eot(t) < tok_vocab_size(t));
		char all[256];
		for (int i = 0; i < 255; i++)
			all[i] = (char)(i + 1);
		all[255] = 0;
		check_ids(t, all);
		check_ids(t, "a photo of a cat, a dog's ball; 1234 hello world!");
		check_ids(t, "lowerlowerlowest newer wider <start_of_text> caf\xc3\xa9");
		tok_close(t);
	} else {
		FUZZ_CHECK(t == NULL && err.msg[0]);
	}
	close(vfd);
	close(mfd);
	return 0;
}
