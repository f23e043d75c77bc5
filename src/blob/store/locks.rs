//! One lock per (account, container, blob) key, held by the operation on it. Only operations on
//! the same blob wait for each other: a write stuck on the filesystem (a rename waiting for the
//! journal while twenty guests write their disks) delays no other blob's readers, as a shared
//! stripe of a fixed lock table did. An operation holds at most one key, so there is no lock
//! order to get wrong.
//!
//! The lock set belongs to its [`super::Store`]: two stores (tests, fuzzing threads) share
//! nothing. Waiting is blocking (a condvar): callers on an async thread wait on that thread.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The keys held now, and the condvar their holders signal on release.
#[derive(Debug, Default)]
pub struct KeyLocks {
    held: Mutex<BTreeSet<String>>,
    released: Condvar,
}

/// The lock on one key; released when dropped.
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: String,
}

impl KeyLocks {
    fn held(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `key`, waiting while another holds it.
    pub fn lock(&self, key: &str) -> KeyGuard<'_> {
        let mut held = self.held();
        while held.contains(key) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(key.to_string());
        KeyGuard {
            locks: self,
            key: key.to_string(),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.locks.held().remove(&self.key);
        self.locks.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_key_blocks_only_its_own_key() {
        use std::sync::{mpsc, Arc};
        let locks = Arc::new(KeyLocks::default());
        let held = locks.lock("acct/c/slow");
        // Another key is free at once, however long the first is held.
        let (tx, rx) = mpsc::channel();
        let l = locks.clone();
        std::thread::spawn(move || {
            let _g = l.lock("acct/c/hot");
            tx.send(()).unwrap();
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("another key must not wait");
        // The same key waits until the holder lets go.
        let (tx, rx) = mpsc::channel();
        let l = locks.clone();
        std::thread::spawn(move || {
            let _g = l.lock("acct/c/slow");
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("released key must be taken");
    }
}
