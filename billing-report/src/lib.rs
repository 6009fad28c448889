//! Turns peer-assisted OTA experiment records and CDN access logs into bytes
//! and money saved.
//!
//! The definitions follow the 2017 Sony Mobile study "Peer-assisted OTA
//! updates": for one run, `D_cs` is the number of bytes the CDN served in the
//! plain client-server setup, `D_p2p` the bytes the CDN served when devices
//! also shared the package over BitTorrent, the gain is `G = D_cs − D_p2p`
//! (bytes) and the saving is `W = G / D_cs` (reported here in percent).
//!
//! * [`savings`] — pure statistics over [`savings::RunRecord`]s.
//! * [`run_records`] — parsing run records from CSV or JSON.
//! * [`cost`] — tiered per-GB prices (USD) from TOML, cost per run and
//!   scenario, monthly fleet projection (pure).
//! * [`egress`] — bytes sent per object and per UTC hour from access logs,
//!   streamed line by line; one-line parsers in [`s3_log`] (Amazon S3 server
//!   access logs), [`cloudfront_log`] (Amazon CloudFront standard logs) and
//!   [`origin_ledger`] (the seeder's ledger export), each yielding a
//!   [`log_line::LineOutcome`]; UTC calendar arithmetic in [`calendar`].
//! * [`render`] — table, Markdown, CSV and JSON output of a
//!   [`savings::Report`] (with costs) and of an [`egress::EgressReport`].
//! * [`plot`] — SVG and PNG plots of a [`savings::Report`].
//! * [`synthetic`] — synthetic S3 access logs for tests and the benchmark.

pub mod calendar;
pub mod cloudfront_log;
pub mod cost;
pub mod egress;
pub mod log_line;
pub mod origin_ledger;
pub mod plot;
pub mod render;
pub mod run_records;
pub mod s3_log;
pub mod savings;
pub mod synthetic;
