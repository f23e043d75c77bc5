//! Any bytes through the DNS listener's core: no panic, and every response
//! echoes the query's id with QR set.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vmnode_network::dns::{handle, StaticNames};

fuzz_target!(|data: &[u8]| {
    let book = StaticNames::new()
        .with("vm1.abc.internal.cloudapp.net", Ipv4Addr::new(10, 1, 0, 4))
        .with("vm1", Ipv4Addr::new(10, 1, 0, 4))
        .with_zone("abc.internal.cloudapp.net");
    if let Some(resp) = handle(&book, data) {
        assert_eq!(resp[..2], data[..2]);
        assert!(resp[2] & 0x80 != 0);
    }
});
