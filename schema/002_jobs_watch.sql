-- 002: jobs that are filled over time, named job items, watched files.

-- A job is sealed once no more items will be added to it; only a sealed job
-- can be done. Jobs of 001 were complete when created: they are sealed, and
-- any left waiting with nothing to do (an empty job) are done now.
ALTER TABLE jobs ADD COLUMN sealed INTEGER NOT NULL DEFAULT 1 CHECK (sealed IN (0, 1));
UPDATE jobs SET state = 2 WHERE state <> 2 AND done + failed >= total;

-- What the client called the item (a file name or server path), so a failed
-- item can be reported after its image is gone. A file refused before it was
-- stored (not an image, too big) is a failed item with item_id 0.
ALTER TABLE job_items ADD COLUMN name TEXT;

-- Files under --watch directories and the image each one is (NULL: the file
-- was refused). size and mtime say whether the file changed since; the image
-- of a file is deleted when no watched file names it any more.
CREATE TABLE watched_files (
	path        TEXT    PRIMARY KEY,
	size        INTEGER NOT NULL CHECK (size >= 0),
	mtime_ns    INTEGER NOT NULL,
	image_id    INTEGER,
	updated_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX watched_files_by_image ON watched_files (image_id) WHERE image_id IS NOT NULL;
