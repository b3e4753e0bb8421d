-- 005: what the image file says about itself (EXIF), in columns so that
-- filters and sorts are SQL. Written at ingest (server/exif.c reads the
-- blob's header) or, for images stored before this migration, by the
-- background backfill (server/exif_backfill.c), which looks for
-- exif_read = 0.
--
-- taken     capture time as the camera wrote it, ISO 8601 wall clock with
--           its offset when the file gives one: '2021-07-04T18:30:00' or
--           '2021-07-04T18:30:00+02:00' (DateTimeOriginal with
--           OffsetTimeOriginal, else DateTimeDigitized with
--           OffsetTimeDigitized; never the file's mtime).
-- taken_ms  the same instant in Unix milliseconds; a time without an
--           offset is read as if it were UTC.
-- gps_lat, gps_lon  signed decimal degrees, both or neither.
-- orientation  EXIF Orientation 1..8.
-- exif_read 1 once the file's metadata was read (whatever it held).
ALTER TABLE images ADD COLUMN taken TEXT;
ALTER TABLE images ADD COLUMN taken_ms INTEGER;
ALTER TABLE images ADD COLUMN gps_lat REAL CHECK (gps_lat BETWEEN -90 AND 90);
ALTER TABLE images ADD COLUMN gps_lon REAL CHECK (gps_lon BETWEEN -180 AND 180);
ALTER TABLE images ADD COLUMN camera_make TEXT;
ALTER TABLE images ADD COLUMN camera_model TEXT;
ALTER TABLE images ADD COLUMN lens TEXT;
ALTER TABLE images ADD COLUMN orientation INTEGER CHECK (orientation BETWEEN 1 AND 8);
ALTER TABLE images ADD COLUMN exif_read INTEGER NOT NULL DEFAULT 0 CHECK (exif_read IN (0, 1));
CREATE INDEX images_by_taken ON images (taken_ms) WHERE taken_ms IS NOT NULL;
-- The backfill's work list, without a scan of every image once it is done.
CREATE INDEX images_exif_unread ON images (id) WHERE exif_read = 0;
