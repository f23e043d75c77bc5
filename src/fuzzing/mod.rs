//! The only public way into vmnode's private modules: entry points for the fuzz loops
//! (`tests/fuzz_*.rs` on stable Rust, in CI) and the cargo-fuzz targets (`fuzz/`). Each function
//! takes what an outsider sends, as bytes, and runs it through the same parse and validate
//! functions the daemon's handlers call; it panics on a broken invariant and on nothing else.

pub mod api;
pub mod blob;
pub mod imds;
pub mod wire;

/// The seed inputs of one target, `fuzz/corpus/<target>/*` in the repository, sorted (the stable
/// loops and the cargo-fuzz targets share them). Panics, naming the folder, when it cannot be
/// read or is empty: a loop without seeds would test nothing.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let p = e
                .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
                .path();
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "empty corpus {}", dir.display());
    seeds
}
