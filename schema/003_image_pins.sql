-- 003: who added an image, so that the directory watcher deletes only what
-- it created.
--
-- pinned is 1 when a source other than the watcher (an upload, a bulk
-- ingest, an ingest by server path) added the image or sent its content
-- again: the watcher never deletes such an image, whatever happens to the
-- watched files that name it. 0: only the watcher holds it, and it goes
-- with the last watched file that names it.
ALTER TABLE images ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1));

-- Existing images: the job that queued an image first is the source that
-- created it (jobs and job items are never deleted). An image the watcher
-- created (first queued by a 'watch' job) stays its own; every other one,
-- and one with no job at all (its source is unknown), is pinned.
UPDATE images SET pinned = 1
WHERE coalesce((SELECT j.kind FROM job_items AS i JOIN jobs AS j ON j.id = i.job_id
                WHERE i.kind = 0 AND i.item_id = images.id
                ORDER BY i.id LIMIT 1), '') <> 'watch';
