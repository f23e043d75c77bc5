//! Any bytes as a management API PUT body, through every resource parser the handlers use
//! (VM, extension, vnet, NIC, deployment and its planned resources): no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmnode::fuzzing::api::arm_json(data);
});
