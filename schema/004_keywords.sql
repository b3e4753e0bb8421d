-- 004: the keyword index (FTS5) over what a person remembers of an item:
-- an image's file name, its path as ingested (relative to its root for bulk
-- ingests and the watcher; the client's file name for uploads) and the
-- values of its metadata; a text's words and the values of its metadata.
--
-- The tokenizer is SQLite's own unicode61 (case folded, diacritics
-- removed), so any tool can read and write these tables. It does not split
-- Chinese or Japanese, which have no spaces between words: clipd_fts_text()
-- (schema/store_fts.c, registered on every connection the store opens)
-- writes each Han, kana and Hangul character as a token of its own, and
-- a query's run of such characters becomes a phrase, so a run matches
-- wherever it occurs (a substring), whatever its length.
--
-- The store keeps these rows in step inside the transactions that insert,
-- update and delete the items (schema/store_items.c); a search joins the
-- items, so a row left behind by a tool that deleted an item by hand
-- matches nothing (ids are never reused).

CREATE VIRTUAL TABLE images_fts USING fts5(name, path, meta, tokenize = 'unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE texts_fts USING fts5(text, meta, tokenize = 'unicode61 remove_diacritics 2');

INSERT INTO images_fts (rowid, name, path, meta)
SELECT id, clipd_fts_text(clipd_fts_basename(filename)), clipd_fts_text(filename),
       clipd_fts_text((SELECT group_concat(value, ' ') FROM json_tree(images.meta)
                       WHERE type IN ('text', 'integer', 'real')))
FROM images;

INSERT INTO texts_fts (rowid, text, meta)
SELECT id, clipd_fts_text(text),
       clipd_fts_text((SELECT group_concat(value, ' ') FROM json_tree(texts.meta)
                       WHERE type IN ('text', 'integer', 'real')))
FROM texts;
