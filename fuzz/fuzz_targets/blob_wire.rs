//! Any bytes through a connection's framing follower (the first byte sets how they are split):
//! no panic, the same requests followed however the reads are split, and re-casings that change
//! only case.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmnode::fuzzing::blob::wire(data);
});
