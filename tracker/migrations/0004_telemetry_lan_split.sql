-- Peer bytes split by where the sending device is: LAN (private, shared,
-- loopback, link-local, ULA addresses) or internet (public addresses).
ALTER TABLE telemetry ADD COLUMN bytes_from_lan_peers INTEGER NOT NULL DEFAULT 0;
ALTER TABLE telemetry ADD COLUMN bytes_from_internet_peers INTEGER NOT NULL DEFAULT 0;
