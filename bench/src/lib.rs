//! `ota-bench`: every benchmark and load generator of the project, as
//! binaries under `src/bin/` driven by the scripts in this folder
//! (`bench/*.sh`), plus `cargo bench` targets under `benches/`. Results go in
//! the README.
