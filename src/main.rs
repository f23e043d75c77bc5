//! vmnode: a host node manager. `vmnode serve` is the daemon; every other verb is a client.
//! See docs/DESIGN.md for what lives where.

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
mod net;
mod qemu;
mod storage;
mod vm;

fn main() -> std::process::ExitCode {
    cli::main()
}
