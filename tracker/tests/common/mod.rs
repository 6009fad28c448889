//! Test support shared by the tracker's integration tests.

pub mod pg;
