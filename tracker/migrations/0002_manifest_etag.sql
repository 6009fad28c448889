ALTER TABLE releases ADD COLUMN manifest TEXT;
ALTER TABLE releases ADD COLUMN signature TEXT;
ALTER TABLE releases ADD COLUMN etag TEXT;
