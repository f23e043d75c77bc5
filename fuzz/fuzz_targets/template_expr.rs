//! Any bytes as an ARM template expression, evaluated against parameters and variables: no
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmnode::fuzzing::api::template_expr(data);
});
