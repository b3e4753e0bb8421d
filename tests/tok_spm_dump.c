/*
 * tok_spm_dump: the differential test's C side (tests/tok_spm_diff.py).
 * Usage: tok_spm_dump MODEL siglip|gemma CTX < texts
 * Reads NUL-terminated texts from stdin and prints, for each, one line: its
 * ctx ids separated by spaces, or "error CODE" when tok_spm_encode fails.
 * When a bound cut the text (tok_spm_stats.exact is 0) the line ends with
 * " cut N": the ids are those of the text's first N bytes. When only a
 * prefix was read but its ids are those of the whole text by tok_spm.c's
 * argument, it ends with " prefix N".
 * Exit status 0, or 2 when the model does not open (message on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_spm_int.h"

int main(int argc, char **argv)
{
	if (argc != 4 || (strcmp(argv[2], "siglip") != 0 && strcmp(argv[2], "gemma") != 0)) {
		fprintf(stderr, "usage: tok_spm_dump MODEL siglip|gemma CTX < texts\n");
		return 2;
	}
	int ctx = atoi(argv[3]);
	clip_err err = {0};
	tok_spm *t = NULL;
	tok_spm_style style = strcmp(argv[2], "siglip") == 0 ? TOK_SPM_SIGLIP : TOK_SPM_GEMMA;
	if (tok_spm_open(argv[1], style, &t, &err) != CLIP_OK) {
		fprintf(stderr, "tok_spm_dump: %s\n", err.msg);
		return 2;
	}
	int32_t *ids = ctx > 0 ? calloc((size_t)ctx, sizeof *ids) : NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	int rc = 0;
	while (ids && (got = getdelim(&line, &cap, '\0', stdin)) > 0) {
		tok_spm_stats st;
		int code = tok_spm_encode_stats(t, line, ids, ctx, NULL, &st, &err);
		if (code != CLIP_OK) {
			printf("error %d\n", code);
			continue;
		}
		for (int i = 0; i < ctx; i++)
			printf(i ? " %d" : "%d", (int)ids[i]);
		if (!st.exact)
			printf(" cut %zu", st.prefix_bytes);
		else if (st.prefix_bytes < strlen(line))
			printf(" prefix %zu", st.prefix_bytes);
		printf("\n");
	}
	if (!ids)
		rc = 2;
	free(line);
	free(ids);
	tok_spm_close(t);
	return fflush(stdout) == 0 ? rc : 1;
}
