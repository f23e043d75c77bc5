//! vmnode networking: addresses, the DHCP responder and its ledger, internal
//! DNS, anti-spoofing filters, and netns/bridge/tap/veth plumbing.
//!
//! # The network model
//!
//! vmnode gives its guests networking the way a public cloud's node stack
//! does, while never touching the host's own networks:
//!
//! * **One namespace per daemon.** All guest networking lives in one network
//!   namespace the daemon owns (default name [`plumbing::DEFAULT_NETNS`],
//!   `vmnode`, at `/run/netns/vmnode`). The host's interfaces, routes and
//!   firewall are never changed, except for the one veth pair through which
//!   the host reaches its guests ([`plumbing::ensure_veth_to_host`]).
//! * **A bridge per virtual network.** Each virtual network (subnet) is a Linux
//!   bridge in that namespace carrying the subnet's gateway address (`.1`, see
//!   [`addr::Subnet::gateway`]) and the platform address `168.63.129.16/32`.
//! * **A tap per NIC.** Each guest NIC is a tap ([`plumbing::create_tap`],
//!   named by [`plumbing::tap_name_for`]) attached to its network's bridge. The
//!   tap is not persistent: it goes away with the QEMU process holding it.
//! * **Addresses from vmnode's own DHCP.** Each NIC's private address (DIP) is
//!   chosen by the daemon ([`addr::Subnet::allocate`]: `.4` upwards, the cloud's
//!   reserved addresses skipped) and served by [`dhcp`], which answers only the
//!   MACs the daemon's [`dhcp::LeaseBook`] knows, always with the same address.
//!   As in the cloud, the DHCP server identifier and the DNS server guests see
//!   are the platform address [`dhcp::PLATFORM_ADDR`] (`168.63.129.16`); every
//!   OFFER and ACK also names it as the WireServer (option 245) and routes it
//!   and the metadata address [`dhcp::METADATA_ADDR`] through the gateway
//!   (option 121), as the Azure guest agents expect.
//!   Every packet and outcome goes to the book's ledger
//!   ([`dhcp::LedgerEntry`]); [`dhcp::diagnose`] names what went wrong.
//! * **Names from vmnode's own DNS.** [`dns`] answers A and PTR for the
//!   vnet's names at the platform address, one listener per bridge, and
//!   refuses everything else, or asks a forwarder if one is configured.
//! * **No spoofing, no crossing.** [`filter`] lets each tap send only with its
//!   NIC's MAC and IP and never as a DHCP server, and keeps the bridges of a
//!   namespace from routing to each other.
//! * **Out only when asked.** [`nat`] gives the vnets outbound connectivity
//!   masqueraded through an uplink of the host (`--nat-via`), off by default.

pub mod addr;
pub mod dhcp;
pub mod dns;
pub mod filter;
pub mod nat;
pub mod plumbing;

pub use addr::{AddrError, Mac, Subnet};
pub use dhcp::{
    diagnose, handle, serve, Binding, DhcpConfig, DhcpError, LeaseBook, LedgerEntry, LedgerKind,
    Reply, METADATA_ADDR, PLATFORM_ADDR,
};
pub use plumbing::{
    attach_to_bridge, create_tap, delete_link, delete_netns, ensure_bridge, ensure_netns,
    link_exists, list_links, tap_name_for, udp_socket_in_ns, udp_socket_in_ns_at, PlumbingError,
    DEFAULT_NETNS,
};
