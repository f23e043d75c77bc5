//! Any bytes as a Put Block List body (parsed, then committed to a temporary store), a Set
//! Container ACL body and a document for the general reader: no panic, at most 50,000 blocks and
//! 5 identifiers taken, and a list the store refuses leaves the blob as it was.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use vmnode::fuzzing::blob::XmlTarget;

static TARGET: Mutex<Option<XmlTarget>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut t = TARGET.lock().unwrap_or_else(|p| p.into_inner());
    t.get_or_insert_with(XmlTarget::new).run(data);
});
