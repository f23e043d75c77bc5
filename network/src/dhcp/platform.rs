//! The two options Azure's host DHCP adds to every OFFER and ACK, requested or not, and that
//! the Azure guest agents look for (docs/DESIGN.md, `azure-guest-protocol.md` §2.2):
//!
//! * option 245, the WireServer address: waagent reads it from its own DHCP exchange and from
//!   dhclient's leases, cloud-init's Azure datasource from its ephemeral lease (`unknown-245`);
//! * option 121 (RFC 3442 classless static routes): the default route and a /32 to the platform
//!   address and to the metadata address (IMDS), each through the subnet's gateway. waagent
//!   skips its own DHCP probing once `/proc/net/route` holds the /32 to the WireServer. A client
//!   that gets option 121 ignores option 3 (RFC 3442 §DHCP Client Behavior), so the default route
//!   is in option 121 too; option 3 stays for clients that do not know 121.
//!
//! Option 121 is encoded here rather than with dhcproto's typed variant: that one writes the
//! destination's octets as given (host bits and all) and needs `ipnet` types; this encoder
//! masks the destination to its prefix and is tested byte by byte.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, OptionCode, UnknownOption};

use crate::addr::prefix_mask;

/// The instance metadata service's address (IMDS), routed to the gateway by option 121.
pub const METADATA_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Azure's private option carrying the WireServer address.
pub const WIRESERVER_OPTION: u8 = 245;

/// One classless static route: a destination network and the router that reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticRoute {
    /// The destination network's address (host bits are not sent).
    pub dest: Ipv4Addr,
    /// Its prefix length, 0 to 32; a longer one is sent as 32.
    pub prefix: u8,
    /// The router, on the client's subnet.
    pub router: Ipv4Addr,
}

impl StaticRoute {
    /// A route to one host (`/32`).
    pub fn host(dest: Ipv4Addr, router: Ipv4Addr) -> Self {
        Self {
            dest,
            prefix: 32,
            router,
        }
    }

    /// The default route (`0.0.0.0/0`).
    pub fn default_via(router: Ipv4Addr) -> Self {
        Self {
            dest: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            router,
        }
    }
}

/// Option 121's value for `routes` (RFC 3442): per route the prefix width, the destination's
/// significant octets (`ceil(width / 8)` of them, host bits cleared), then the router's four.
pub fn encode_classless_routes(routes: &[StaticRoute]) -> Vec<u8> {
    let mut out = Vec::with_capacity(routes.len() * 9);
    for r in routes {
        let width = r.prefix.min(32);
        let dest = (u32::from(r.dest) & prefix_mask(width)).to_be_bytes();
        out.push(width);
        out.extend_from_slice(&dest[..usize::from(width.div_ceil(8))]);
        out.extend_from_slice(&r.router.octets());
    }
    out
}

/// The routes option 121 carries for a client whose gateway is `router`: the default route
/// first, then a /32 to each of `hosts`.
pub fn gateway_routes(router: Ipv4Addr, hosts: &[Ipv4Addr]) -> Vec<StaticRoute> {
    std::iter::once(StaticRoute::default_via(router))
        .chain(hosts.iter().map(|h| StaticRoute::host(*h, router)))
        .collect()
}

/// Options 121 and 245 for a reply to a client whose gateway is `router`: 121 when `hosts` is
/// not empty, 245 when there is a WireServer address. dhcproto splits a value over 255 bytes
/// into several options of the same code (RFC 3396); 27 host routes still fit in one.
pub(super) fn platform_options(
    router: Ipv4Addr,
    hosts: &[Ipv4Addr],
    wireserver: Option<Ipv4Addr>,
) -> Vec<DhcpOption> {
    let mut opts = Vec::with_capacity(2);
    if !hosts.is_empty() {
        let value = encode_classless_routes(&gateway_routes(router, hosts));
        opts.push(unknown(OptionCode::ClasslessStaticRoute, value));
    }
    if let Some(ws) = wireserver {
        let code = OptionCode::from(WIRESERVER_OPTION);
        opts.push(unknown(code, ws.octets().to_vec()));
    }
    opts
}

/// An option written as raw bytes under its code.
fn unknown(code: OptionCode, value: Vec<u8>) -> DhcpOption {
    DhcpOption::Unknown(UnknownOption::new(code, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn rfc3442_examples() {
        // RFC 3442's own table: width, significant octets, router.
        let r = ip("10.0.0.1");
        let cases: [(&str, u8, &[u8]); 6] = [
            ("0.0.0.0", 0, &[0]),
            ("10.0.0.0", 8, &[8, 10]),
            ("10.17.0.0", 16, &[16, 10, 17]),
            ("10.27.129.0", 24, &[24, 10, 27, 129]),
            ("10.229.0.128", 25, &[25, 10, 229, 0, 128]),
            ("10.198.122.47", 32, &[32, 10, 198, 122, 47]),
        ];
        for (dest, prefix, head) in cases {
            let got = encode_classless_routes(&[StaticRoute {
                dest: ip(dest),
                prefix,
                router: r,
            }]);
            assert_eq!(got, [head, &[10, 0, 0, 1][..]].concat(), "{dest}/{prefix}");
        }
    }

    #[test]
    fn host_bits_are_cleared_and_widths_capped() {
        let r = ip("192.168.1.1");
        let got = encode_classless_routes(&[
            StaticRoute {
                dest: ip("10.1.5.7"),
                prefix: 20,
                router: r,
            },
            StaticRoute {
                dest: ip("1.2.3.4"),
                prefix: 40,
                router: r,
            },
        ]);
        assert_eq!(
            got,
            [20, 10, 1, 0, 192, 168, 1, 1, 32, 1, 2, 3, 4, 192, 168, 1, 1]
        );
        assert!(encode_classless_routes(&[]).is_empty());
    }

    #[test]
    fn azure_routes_through_the_gateway() {
        let gw = ip("10.1.0.1");
        let routes = gateway_routes(gw, &[ip("168.63.129.16"), METADATA_ADDR]);
        assert_eq!(
            encode_classless_routes(&routes),
            [
                0, 10, 1, 0, 1, // 0.0.0.0/0 -> 10.1.0.1
                32, 168, 63, 129, 16, 10, 1, 0, 1, // 168.63.129.16/32 -> 10.1.0.1
                32, 169, 254, 169, 254, 10, 1, 0, 1, // 169.254.169.254/32 -> 10.1.0.1
            ]
        );
        let opts = platform_options(gw, &[METADATA_ADDR], None);
        assert_eq!(opts.len(), 1);
        assert!(platform_options(gw, &[], None).is_empty());
    }
}
