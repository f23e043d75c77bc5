//! The blob tests' side of the common harness (`tests/common`): the node's storage account as
//! the daemon wrote it for the CLI, and the sections of `tests/blob/sdk_test.py`, run with the
//! real azure-storage-blob SDK from PyPI.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

pub use crate::common::Node;

/// What blob tests ask of a [`Node`].
pub trait Blob {
    /// The node's account file (name, key1, endpoint).
    fn account(&self) -> serde_json::Value;
    fn account_name(&self) -> String;
    /// `http://127.0.0.1:{blob port}/{account}`.
    fn blob_url(&self) -> String;
    /// `vmnode storage account show-connection-string`.
    fn connection_string(&self) -> String;
    /// Runs one section of tests/blob/sdk_test.py against the node; panics with its output
    /// unless every check passed.
    fn sdk(&self, section: &str) {
        self.sdk_with(section, &[]);
    }
    /// Like [`Blob::sdk`], with more environment for the script.
    fn sdk_with(&self, section: &str, env: &[(&str, &str)]);
}

impl Blob for Node {
    fn account(&self) -> serde_json::Value {
        let f = std::fs::read_dir(self.state.join("storage"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .expect("an account file");
        serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap()
    }

    fn account_name(&self) -> String {
        self.account()["name"].as_str().unwrap().to_string()
    }

    fn blob_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.blob_port,
            self.account_name()
        )
    }

    fn connection_string(&self) -> String {
        self.ok(&["storage", "account", "show-connection-string"])
            .trim()
            .to_string()
    }

    fn sdk_with(&self, section: &str, env: &[(&str, &str)]) {
        let py = crate::common::python_with(&["azure-storage-blob"]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/blob/sdk_test.py");
        let out = Command::new(py)
            .arg(&script)
            .arg(section)
            .env("VMNODE_CONN", self.connection_string())
            .env("VMNODE_BLOB_URL", self.blob_url())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        // On failure the common harness prints the daemon's log.
        assert!(
            out.status.success() && text.contains(" passed, 0 failed"),
            "SDK checks '{section}' failed:\n{text}"
        );
    }
}
