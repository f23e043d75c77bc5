//! Any bytes through the DHCP responder: no panic, and no reply to a MAC the
//! book does not know.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vmnode_network::dhcp::{handle, Binding, DhcpConfig, LeaseBook};
use vmnode_network::Mac;

const KNOWN: Mac = Mac::new([0x00, 0x0d, 0x3a, 0x01, 0x02, 0x03]);

struct Book;

impl LeaseBook for Book {
    fn binding(&self, mac: &Mac) -> Option<Binding> {
        (*mac == KNOWN).then(|| Binding {
            ip: Ipv4Addr::new(10, 1, 0, 4),
            prefix: 24,
            router: Ipv4Addr::new(10, 1, 0, 1),
            hostname: "vm1".into(),
            domain: "abc.internal.cloudapp.net".into(),
        })
    }
    fn commit(&self, _mac: &Mac, _ip: Ipv4Addr) -> Result<(), vmnode_network::dhcp::CommitError> {
        Ok(())
    }
    fn release(&self, _mac: &Mac, _ip: Ipv4Addr) {}
}

fuzz_target!(|data: &[u8]| {
    if let Some(reply) = handle(&DhcpConfig::default(), &Book, data) {
        assert_eq!(data.get(28..34), Some(&KNOWN.octets()[..]));
        assert_eq!(&reply.packet()[28..34], &KNOWN.octets()[..]);
    }
});
