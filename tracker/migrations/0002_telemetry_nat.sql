-- The device's NAT kind as its STUN probe found it (issue 14), with its
-- latest telemetry report.
ALTER TABLE telemetry ADD COLUMN nat TEXT;
