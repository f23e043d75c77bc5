//! vmnode: a host node manager. `vmnode serve` is the daemon; every other verb is a client.
//! See docs/DESIGN.md for what lives where.
//!
//! The crate is a library with one binary (`src/main.rs`) so that the fuzz targets (`fuzz/`) can
//! reach the parsers an outsider feeds; the modules stay private and [`fuzzing`] is the only
//! other way in.

mod api;
mod blob;
mod catalog;
mod cli;
mod config;
mod daemon;
mod deploy;
mod diagnostics;
mod doctor;
mod extensions;
mod failpoint;
pub mod fuzzing;
mod groups;
mod guest;
mod install;
mod net;
mod node;
mod qemu;
mod report;
mod serve;
mod storage;
mod tls;
mod vm;

/// The `vmnode` command line (`src/main.rs` calls only this).
pub fn main() -> std::process::ExitCode {
    cli::main()
}
