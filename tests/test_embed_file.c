/*
 * test_embed_file: the build tool tools/embed_file.c. Its output for two
 * fixtures (tests/data/), compiled into this test in strict ISO C, where
 * trigraphs are live (c_std=c11), must hold the files' bytes exactly:
 * every byte value 0-255, every trigraph sequence ("??=", "??/", ...),
 * quotes, backslashes, CR LF. Both forms: one symbol and its length, and
 * the --table array the store's migrations use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed_table.h"
#include "tap.h"

extern const char embed_bytes[];
extern const size_t embed_bytes_len;

/* The fixture's bytes, read from the source tree. */
static char *slurp(const char *name, size_t *len)
{
	char path[4096];
	const char *root = getenv("CLIPD_SOURCE_ROOT");
	snprintf(path, sizeof path, "%s/tests/data/%s", root ? root : "..", name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(1 << 16);
	*len = buf ? fread(buf, 1, 1 << 16, f) : 0;
	fclose(f);
	return buf;
}

static void t_one_symbol(void)
{
	size_t len;
	char *want = slurp("embed_bytes.bin", &len);
	REQUIRE(want);
	CHECKF(embed_bytes_len == len, "length %zu, file %zu", embed_bytes_len, len);
	CHECK(memcmp(embed_bytes, want, len) == 0);
	CHECK(embed_bytes[len] == '\0');
	int all = 1;
	for (int b = 0; b < 256; b++)
		all &= (unsigned char)embed_bytes[b] == b;
	CHECKF(all, "a byte value 0-255 did not survive");
	/* Written with \? so that this file has no trigraph itself. */
	CHECK(strstr(embed_bytes + 256, "?\?= ?\?/ ?\?' ?\?( ?\?) ?\?! ?\?< ?\?> ?\?-") != NULL);
	free(want);
}

static void t_table(void)
{
	const char *files[] = {"embed_text.txt", "embed_bytes.bin"};
	REQUIRE(embed_table_n == 2);
	for (int i = 0; i < 2; i++) {
		size_t len;
		char *want = slurp(files[i], &len);
		REQUIRE(want);
		CHECKF(strcmp(embed_table[i].name, files[i]) == 0, "entry %d is %s", i,
		       embed_table[i].name);
		/* As a C string: up to the first NUL (the byte fixture has one at 0). */
		size_t n = strnlen(want, len);
		CHECK(strlen(embed_table[i].text) == n && memcmp(embed_table[i].text, want, n) == 0);
		free(want);
	}
}

int main(void)
{
	TAP_RUN(t_one_symbol);
	TAP_RUN(t_table);
	return tap_done();
}
