-- The origin's cost/speed dial per release (issue 17): `fastest`,
-- `cheapest` or `within:SECS`; NULL leaves it to the seeder's default.
ALTER TABLE releases ADD COLUMN origin_goal TEXT;
