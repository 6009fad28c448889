//! What the billing report's CLI tests share: writing input files and
//! running the binary with arguments and standard input.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `ota-billing-report` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ota-billing-report");

/// Writes `content` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Runs `ota-billing-report SUBCOMMAND ARGS…` with `stdin` piped in.
pub(crate) fn run(subcommand: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg(subcommand)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.as_bytes()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}
