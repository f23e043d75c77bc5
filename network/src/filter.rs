//! Anti-spoofing and isolation with nftables, inside the daemon's namespace.
//!
//! A guest owns one MAC and one IPv4 address per NIC, and may send nothing
//! else. [`ensure_filter`] makes a bridge-family table `vmnode` in the
//! namespace, hooked at bridge prerouting, so it sees every frame entering a
//! bridge port before the bridge forwards it or hands it to the namespace's
//! own stack (the DHCP responder, DNS, the gateway):
//!
//! ```text
//! table bridge vmnode
//!   map nics   { ifname : verdict }           tap -> jump nic-<tap>
//!   chain prerouting (hook prerouting, priority -300)
//!     iifname vmap @nics                        a known NIC: its own chain
//!     iifname "vt*" counter drop                a tap not (yet) allowed: nothing
//!   chain nic-<tap>                             one per NIC, made by allow_nic
//!     ether saddr != MAC          counter drop  another MAC
//!     arp saddr ether != MAC      counter drop  ARP for another MAC
//!     arp saddr ip != {0.0.0.0, IP} counter drop  ARP for an address it does not hold
//!     ether type arp accept                     (0.0.0.0: RFC 5227 probes)
//!     udp sport 67                counter drop  a rogue DHCP server
//!     ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept   DHCP before it has an address
//!     ip saddr != IP              counter drop  another address
//!     ether type ip accept
//!     counter drop                              IPv6, VLAN tags, anything else
//! ```
//!
//! Vnets are IPv4-only, so a NIC's IPv6 and 802.1Q-tagged frames (which could
//! carry spoofed inner headers past `ether type ip` rules) are dropped. Ports
//! that are not taps (e.g. the veth to the host) are not filtered. Taps are
//! named `vt...` by [`crate::plumbing::tap_name_for`]; a tap on a bridge
//! before [`allow_nic`] passes nothing. Every drop is counted per NIC
//! ([`dropped`]), so a guest's spoofing attempts can be shown next to its
//! DHCP ledger.
//!
//! [`set_isolated`] keeps vnets apart: in one namespace with several bridges,
//! IPv4/IPv6 forwarding is off and an `inet vmnode-isolate` table drops
//! anything routed, so a guest can reach its own subnet and the gateway, never
//! another vnet. With outbound NAT ([`crate::nat`]), [`set_routed_uplink`]
//! turns IPv4 forwarding on and lets the bridges route to the uplink only:
//!
//! ```text
//! table inet vmnode-isolate
//!   chain forward (hook forward, priority 0, policy drop)
//!     iifname != UPLINK oifname UPLINK ct state new,established,related accept
//!     iifname UPLINK oifname != UPLINK ct state established,related accept
//! ```
//!
//! Rules are applied with `nft -f -` run inside the namespace (`nft` from
//! Debian's `nftables`); each call is one atomic nftables transaction.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use tracing::debug;

use crate::addr::Mac;
use crate::plumbing::{self, PlumbingError};

/// The bridge-family table vmnode owns in its namespace.
pub const TABLE: &str = "vmnode";
/// The inet-family table that drops forwarded traffic.
pub const ISOLATE_TABLE: &str = "vmnode-isolate";
/// The ip-family table that masquerades what leaves through the uplink
/// ([`crate::nat`]).
pub const NAT_TABLE: &str = "vmnode-nat";
/// Prefix of tap names; such ports pass nothing until [`allow_nic`].
pub const TAP_PREFIX: &str = "vt";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Bad name or namespace.
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),
    /// `nft` could not be started (is Debian's `nftables` installed?).
    #[error("cannot run nft (install nftables): {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the rules.
    #[error("nft failed in namespace {ns} ({status}): {stderr}")]
    Nft {
        /// Namespace.
        ns: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// What nft printed.
        stderr: String,
    },
    /// `nft -j` printed something unexpected.
    #[error("cannot read nft output: {0}")]
    Parse(String),
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, FilterError>;

/// Makes (or keeps) the `bridge vmnode` table in `ns`. Idempotent; existing
/// NIC chains and their elements are kept.
pub fn ensure_filter(ns: &str) -> Result<()> {
    let script = format!(
        "table bridge {TABLE} {{
  map nics {{ type ifname : verdict; }}
  chain prerouting {{ type filter hook prerouting priority -300; policy accept; }}
}}
flush chain bridge {TABLE} prerouting
add rule bridge {TABLE} prerouting iifname vmap @nics
add rule bridge {TABLE} prerouting iifname \"{TAP_PREFIX}*\" counter drop
"
    );
    nft(ns, &script)
}

/// Lets the NIC on bridge port `tap` send as `mac`/`ip`, and nothing else.
/// Replaces any earlier rules of `tap`. Needs [`ensure_filter`] first.
pub fn allow_nic(ns: &str, tap: &str, mac: Mac, ip: Ipv4Addr) -> Result<()> {
    let chain = nic_chain(tap)?;
    let mac = mac.to_colon();
    let script = format!(
        "add chain bridge {TABLE} {chain}
flush chain bridge {TABLE} {chain}
add rule bridge {TABLE} {chain} ether saddr != {mac} counter drop
add rule bridge {TABLE} {chain} arp saddr ether != {mac} counter drop
add rule bridge {TABLE} {chain} arp saddr ip != {{ 0.0.0.0, {ip} }} counter drop
add rule bridge {TABLE} {chain} ether type arp accept
add rule bridge {TABLE} {chain} udp sport 67 counter drop
add rule bridge {TABLE} {chain} ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept
add rule bridge {TABLE} {chain} ip saddr != {ip} counter drop
add rule bridge {TABLE} {chain} ether type ip accept
add rule bridge {TABLE} {chain} counter drop
add element bridge {TABLE} nics {{ \"{tap}\" : jump {chain} }}
"
    );
    debug!(ns, tap, %ip, "allowing NIC");
    nft(ns, &script)
}

/// Forgets `tap`: its frames are dropped again (it is a tap). Missing is fine.
pub fn remove_nic(ns: &str, tap: &str) -> Result<()> {
    let chain = nic_chain(tap)?;
    // Adding first makes the deletes valid whether or not they existed, in one transaction.
    let script = format!(
        "add chain bridge {TABLE} {chain}
add element bridge {TABLE} nics {{ \"{tap}\" : jump {chain} }}
delete element bridge {TABLE} nics {{ \"{tap}\" }}
flush chain bridge {TABLE} {chain}
delete chain bridge {TABLE} {chain}
"
    );
    debug!(ns, tap, "removing NIC filter");
    nft(ns, &script)
}

/// Frames dropped so far for the NIC on `tap` (0 if it has no rules).
pub fn dropped(ns: &str, tap: &str) -> Result<u64> {
    let chain = nic_chain(tap)?;
    let out = match nft_output(ns, &["-j", "list", "chain", "bridge", TABLE, &chain]) {
        Ok(out) => out,
        Err(FilterError::Nft { stderr, .. }) if stderr.contains("No such file") => return Ok(0),
        Err(e) => return Err(e),
    };
    let json: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| FilterError::Parse(e.to_string()))?;
    let mut packets = 0;
    for item in json["nftables"].as_array().into_iter().flatten() {
        for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
            packets += expr["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    Ok(packets)
}

/// Keeps the bridges of `ns` from routing to each other: IPv4 and IPv6
/// forwarding off, and an `inet vmnode-isolate` table whose forward hook
/// drops everything. Idempotent; undoes [`set_routed_uplink`].
pub fn set_isolated(ns: &str) -> Result<()> {
    plumbing::set_sysctl(ns, "net/ipv4/ip_forward", "0")?;
    plumbing::set_sysctl(ns, "net/ipv6/conf/all/forwarding", "0")?;
    nft(ns, &forward_rules(None))
}

/// Like [`set_isolated`], but the bridges may route to `uplink` (the routed
/// link of outbound NAT, see [`crate::nat`]) and its established/related
/// IPv4 replies come back; still nothing between bridges, nothing new
/// inbound, no IPv6. IPv4 forwarding is on in `ns` (and only there).
pub fn set_routed_uplink(ns: &str, uplink: &str) -> Result<()> {
    plumbing::check_ifname(uplink)?;
    plumbing::set_sysctl(ns, "net/ipv6/conf/all/forwarding", "0")?;
    // Rules first, so that forwarding never runs without them.
    nft(ns, &forward_rules(Some(uplink)))?;
    Ok(plumbing::set_sysctl(ns, "net/ipv4/ip_forward", "1")?)
}

/// The isolation table, its forward chain flushed and refilled: a drop
/// policy, and with `uplink` the two rules that let NAT through.
fn forward_rules(uplink: Option<&str>) -> String {
    let mut script = format!(
        "table inet {ISOLATE_TABLE} {{
  chain forward {{ type filter hook forward priority 0; policy drop; }}
}}
flush chain inet {ISOLATE_TABLE} forward
"
    );
    if let Some(up) = uplink {
        script.push_str(&format!(
            "add rule inet {ISOLATE_TABLE} forward meta nfproto ipv4 iifname != \"{up}\" oifname \"{up}\" ct state new,established,related accept
add rule inet {ISOLATE_TABLE} forward meta nfproto ipv4 iifname \"{up}\" oifname != \"{up}\" ct state established,related accept
"
        ));
    }
    script
}

/// Deletes vmnode's tables from `ns` (missing is fine).
pub fn delete_filter(ns: &str) -> Result<()> {
    nft(
        ns,
        &format!(
            "table bridge {TABLE} {{}}\ndelete table bridge {TABLE}\n\
             table inet {ISOLATE_TABLE} {{}}\ndelete table inet {ISOLATE_TABLE}\n\
             table ip {NAT_TABLE} {{}}\ndelete table ip {NAT_TABLE}\n"
        ),
    )
}

/// The chain of a NIC; `tap` must be a valid interface name.
fn nic_chain(tap: &str) -> Result<String> {
    plumbing::check_ifname(tap)?;
    Ok(format!("nic-{tap}"))
}

/// Runs `nft -f -` with `script` inside `ns`.
fn nft(ns: &str, script: &str) -> Result<()> {
    nft_at(Some(ns), script)
}

/// Runs `nft -f -` with `script` inside `ns`, or in the daemon's own
/// namespace for `None`.
pub(crate) fn nft_at(ns: Option<&str>, script: &str) -> Result<()> {
    let ns_name = ns.unwrap_or("(own)").to_string();
    debug!(ns = %ns_name, "nft -f -\n{script}");
    let script = script.to_string();
    plumbing::in_netns_at(ns, move || {
        Ok(run_nft(&ns_name, &["-f", "-"], Some(&script)))
    })?
    .map(|_| ())
}

/// Runs `nft ARGS` inside `ns` and returns its stdout.
fn nft_output(ns: &str, args: &[&str]) -> Result<String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let ns_name = ns.to_string();
    plumbing::in_netns(ns, move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(run_nft(&ns_name, &args, None))
    })?
}

/// Runs nft on the calling thread (which has joined the namespace: a child
/// process starts in the namespace of the thread that forks it).
fn run_nft(ns: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FilterError::Spawn)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(FilterError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(FilterError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FilterError::Nft {
            ns: ns.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
