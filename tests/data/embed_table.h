/* The entry type of test_embed_file's --table output. */
struct embed_entry {
	const char *name;
	const char *text;
};
extern const struct embed_entry embed_table[];
extern const int embed_table_n;
