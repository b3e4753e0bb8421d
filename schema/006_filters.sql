-- 006: what filtered searches read through an index instead of a scan of
-- every row.
--
-- taken_local_ms  the capture time as the camera's clock showed it (the
--                 wall clock of 'taken', its offset dropped) in
--                 milliseconds as if it were UTC: "photos of 2021" and the
--                 date order mean the dates written on them, whatever
--                 time zone each was taken in. Computed by SQLite from
--                 'taken', so it can never disagree with it.
ALTER TABLE images ADD COLUMN taken_local_ms INTEGER
	GENERATED ALWAYS AS (unixepoch(substr(taken, 1, 19)) * 1000) VIRTUAL;
CREATE INDEX images_by_local_time ON images (taken_local_ms)
	WHERE taken_local_ms IS NOT NULL;
-- A place filter ("near") reads the images inside a latitude band.
CREATE INDEX images_by_gps ON images (gps_lat, gps_lon) WHERE gps_lat IS NOT NULL;
