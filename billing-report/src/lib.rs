//! Turns peer-assisted OTA experiment records into bytes and money saved.
//!
//! The definitions follow the 2017 Sony Mobile study "Peer-assisted OTA
//! updates": for one run, `D_cs` is the number of bytes the CDN served in the
//! plain client-server setup, `D_p2p` the bytes the CDN served when devices
//! also shared the package over BitTorrent, the gain is `G = D_cs − D_p2p`
//! (bytes) and the saving is `W = G / D_cs` (reported here in percent).
//!
//! * [`savings`] — pure statistics over [`savings::RunRecord`]s.
//! * [`run_records`] — parsing run records from CSV or JSON.
//! * [`render`] — table, Markdown, CSV and JSON output of a [`savings::Report`].
#![warn(missing_docs)]

pub mod render;
pub mod run_records;
pub mod savings;
