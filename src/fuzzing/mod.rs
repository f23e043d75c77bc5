//! The only public way into vmnode's private modules: entry points for the fuzz loops
//! (`tests/fuzz_*.rs` on stable Rust, in CI) and the cargo-fuzz targets (`fuzz/`). Each function
//! takes what an outsider sends, as bytes, and runs it through the same parse and validate
//! functions the daemon's handlers call; it panics on a broken invariant and on nothing else.

pub mod api;
pub mod blob;
