//! `protectedSettings` at rest: sealed with ChaCha20-Poly1305 under a node key kept in
//! `state/extensions.key` (32 random bytes, made 0600 at first use). The record's key is the
//! associated data, so a sealed value moved to another extension does not open.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the node's extension key {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the node's extension key {0} is not 32 bytes; restore it from a backup (sealed protectedSettings cannot be opened without it)")]
    BadKey(PathBuf),
    #[error("the system random source failed")]
    Random,
    #[error("stored protectedSettings do not open with this node's key (was state/extensions.key replaced?)")]
    Open,
}

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// Loads the node key, making it (0600, never overwritten) if there is none.
    pub fn open_or_create(path: &Path) -> Result<Sealer, SecretError> {
        let rng = SystemRandom::new();
        let err = |source| SecretError::Key {
            path: path.to_path_buf(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = [0u8; 32];
                rng.fill(&mut k).map_err(|_| SecretError::Random)?;
                let made = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .and_then(|mut f| f.write_all(&k).and_then(|_| f.sync_all()));
                match made {
                    Ok(()) => k.to_vec(),
                    // Another caller made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(path).map_err(err)?
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            Err(e) => return Err(err(e)),
        };
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| SecretError::BadKey(path.to_path_buf()))?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
            rng,
        })
    }

    /// base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<String, SecretError> {
        let mut n = [0u8; NONCE_LEN];
        self.rng.fill(&mut n).map_err(|_| SecretError::Random)?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(aad.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SecretError::Random)?;
        let mut out = n.to_vec();
        out.extend_from_slice(&buf);
        Ok(B64.encode(out))
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, SecretError> {
        let raw = B64.decode(sealed).map_err(|_| SecretError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (n, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| SecretError::Open)?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| SecretError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sealed_values_open_only_with_their_key_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("extensions.key");
        let s = Sealer::open_or_create(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = s
            .seal(b"{\"commandToExecute\":\"secret\"}", "rg/vm/ext")
            .unwrap();
        assert!(!sealed.contains("secret"));
        // The same key file opens it again (a daemon restart).
        let again = Sealer::open_or_create(&p).unwrap();
        assert_eq!(
            again.open(&sealed, "rg/vm/ext").unwrap(),
            b"{\"commandToExecute\":\"secret\"}"
        );
        assert!(again.open(&sealed, "rg/vm/other").is_err());
        let other = Sealer::open_or_create(&dir.path().join("k2")).unwrap();
        assert!(other.open(&sealed, "rg/vm/ext").is_err());
    }
}
