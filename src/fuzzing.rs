//! The only public way into vmnode's private modules: entry points for the fuzz loops
//! (`tests/fuzz_blob.rs` on stable Rust, in CI) and the cargo-fuzz targets (`fuzz/`), which feed
//! the parsers an outsider reaches the same bytes. Each entry point panics on a broken
//! invariant and on nothing else.

pub mod blob;
