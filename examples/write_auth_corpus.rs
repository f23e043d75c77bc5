//! Writes the signed seeds of the blob auth fuzz corpus (`fuzz/corpus/blob_auth/signed-N`):
//! SAS tokens valid until 2099; SharedKey ones go stale in 15 minutes and then seed the
//! refusals (the stable loop in tests/fuzz_blob.rs signs fresh ones every run).
//!
//!   cargo run --example write_auth_corpus

use std::path::Path;

use vmnode::fuzzing::blob::AuthTarget;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/blob_auth");
    std::fs::create_dir_all(&dir)?;
    let seeds = AuthTarget::new().signed_seeds();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("signed-{i}")), s)?;
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
    Ok(())
}
