//! Any bytes as a request head to IMDS (169.254.169.254): every answer one of its statuses, no
//! document without `Metadata: true` or for a caller no VM holds, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmnode::fuzzing::imds::request(data);
});
