-- 006: searches filtered by place ("near") read the images inside a
-- latitude band through this index instead of scanning every row.
CREATE INDEX images_by_gps ON images (gps_lat, gps_lon) WHERE gps_lat IS NOT NULL;
