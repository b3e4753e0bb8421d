/*
 * fuzz_config: config.json and preprocessor_config.json loading
 * (model/config.c, clip_cfg_load). The input is config.json, optionally
 * followed by the separator line below and a preprocessor_config.json. A
 * config that loads must describe a model the encoders can be built for:
 * the invariants clip.c relies on are checked.
 */
#include <stdint.h>

#include "clip_int.h"
#include "fuzz_util.h"

#define SEP "\n--- preprocessor_config.json ---\n"

static void check_tower(const clip_tower_cfg *t)
{
	FUZZ_CHECK(t->hidden >= 1 && t->heads >= 1 && t->layers >= 1 && t->intermediate >= 1);
	FUZZ_CHECK(t->hidden % t->heads == 0);
	FUZZ_CHECK(t->eps > 0 && t->eps <= 1);
	FUZZ_CHECK(t->act == CLIP_QUICK_GELU || t->act == CLIP_GELU);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char cpath[64], ppath[64];
	const uint8_t *pp;
	size_t clen, pplen;
	clip_cfg c;
	clip_err err;

	fuzz_split(data, len, SEP, &clen, &pp, &pplen);
	int cfd = fuzz_memfile("config.json", data, clen, cpath, sizeof cpath);
	int pfd = pp ? fuzz_memfile("preprocessor_config.json", pp, pplen, ppath, sizeof ppath) : -1;
	if (clip_cfg_load(cpath, pp ? ppath : NULL, &c, &err) == CLIP_OK) {
		check_tower(&c.vision);
		check_tower(&c.text);
		FUZZ_CHECK(c.vision.patch_size >= 1 && c.vision.image_size % c.vision.patch_size == 0);
		FUZZ_CHECK(c.vision.positions >= 2 && c.crop == c.vision.image_size);
		FUZZ_CHECK(c.text.positions >= 2 && c.text.vocab >= 2 && c.projection >= 1);
		for (int i = 0; i < 3; i++)
			FUZZ_CHECK(c.std[i] > 0);
	} else {
		FUZZ_CHECK(err.code != CLIP_OK && err.msg[0]);
	}
	close(cfd);
	if (pfd >= 0)
		close(pfd);
	return 0;
}
