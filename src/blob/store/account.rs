//! A storage account as the blob service knows it: a name and the keys that sign for it.

use std::path::PathBuf;

/// A storage account: its name and its keys (decoded), key1 first. Either key signs requests.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub keys: Vec<Vec<u8>>,
}

impl Account {
    /// The key the node itself signs with (key1).
    pub fn signing_key(&self) -> &[u8] {
        self.keys.first().map_or(&[], Vec::as_slice)
    }
}

/// Why [`super::Store::add_account`] could not serve an account.
#[derive(Debug, thiserror::Error)]
pub enum AddAccountError {
    #[error("account key of {account} is not base64")]
    KeyNotBase64 {
        account: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("making the account's directory {}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
