//! Any bytes through the DHCP responder: no panic, no reply to a MAC the
//! book does not know, and options 121 and 245 in every OFFER and ACK.
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
        // An OFFER or ACK (not a NAK) carries the WireServer (245) and the platform routes (121).
        let p = reply.packet();
        let nak = p.get(240..243) == Some(&[53, 1, 6][..]);
        let has = |opt: &[u8]| p.windows(opt.len()).any(|w| w == opt);
        assert_eq!(has(&[245, 4, 168, 63, 129, 16]), !nak);
        assert_eq!(has(&ROUTES), !nak);
    }
});

/// Option 121 for a NIC behind 10.1.0.1: the default route, 168.63.129.16/32, 169.254.169.254/32.
const ROUTES: [u8; 25] = [
    121, 23, 0, 10, 1, 0, 1, 32, 168, 63, 129, 16, 10, 1, 0, 1, 32, 169, 254, 169, 254, 10, 1, 0, 1,
];
