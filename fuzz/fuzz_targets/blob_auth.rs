//! Any request (a `METHOD path?query` line, then `name: value` lines) through SAS and SharedKey
//! authentication: no panic, a refusal is a 403, and nothing is taken as signed that an account
//! of the same name with another key would also take.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmnode::fuzzing::blob::AuthTarget;

static TARGET: OnceLock<AuthTarget> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    TARGET.get_or_init(AuthTarget::new).run(data);
});
