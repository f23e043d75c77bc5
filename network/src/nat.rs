//! Outbound NAT through an uplink of the host, only when asked (`vmnode serve
//! --nat-via IFACE`).
//!
//! The vnets' bridges live in the daemon's namespace; the uplink (say `eth0`)
//! lives outside it, in the host's namespace, and stays there: moving it in
//! would take it from the host. So traffic leaves the daemon's namespace over
//! a routed veth pair of its own (not the host-access veth, which is a port of
//! the default vnet's bridge), and is masqueraded twice:
//!
//! ```text
//!  daemon namespace                                   outer namespace (the host's)
//!  guest ─ vnbr0/vb… ─▶ forward ─▶ vnnat0 ═══ veth ═══ vx<hash> ─▶ forward ─▶ IFACE ─▶ out
//!   (ip_forward=1; only bridge→vnnat0 and   169.254.a.b/30    (forwarding on vx<hash> and
//!    its replies; masquerade to vnnat0's                       IFACE only; masquerade to
//!    address)                                                  IFACE's address)
//! ```
//!
//! * In the daemon's namespace, [`filter::set_routed_uplink`] turns IPv4
//!   forwarding on and lets the bridges route to `vnnat0` only (replies come
//!   back as established/related; never bridge to bridge, never new inbound),
//!   and `ip vmnode-nat` masquerades to `vnnat0`'s link address. The host so
//!   sees one source address per daemon and needs no routes to the vnets'
//!   address spaces (which may overlap the host's own networks, and the
//!   default vnet's does: the host-access veth carries 10.1.0.2/24).
//! * In the outer namespace, the global `ip_forward` stays as it is:
//!   forwarding is turned on for the two interfaces of the path only
//!   (`conf/vx<hash>/forwarding`, `conf/IFACE/forwarding`; the kernel checks
//!   the input interface's flag), and a table `ip vmnode-nat-vx<hash>`
//!   masquerades the transit's address out of IFACE, lets the transit reach
//!   IFACE and nothing else (not the host's own services, not its other
//!   networks), lets only replies back, and, if vmnode was the one to turn
//!   IFACE's forwarding on, forwards nothing else that comes in on IFACE.
//!
//! [`plan`] checks the uplink and records what will change (IFACE's former
//! `forwarding`) in an [`Applied`], which the caller keeps (the daemon: in its
//! run dir) before [`apply`]; [`remove`] undoes it all, also after a crash.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use tracing::{debug, warn};

use crate::addr::stable_hash;
use crate::filter::{self, FilterError, NAT_TABLE};
use crate::plumbing::{self, PlumbingError};

/// The daemon's end of the transit veth.
pub const NS_IF: &str = "vnnat0";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// Links, addresses, sysctls.
    #[error(transparent)]
    Plumbing(#[from] PlumbingError),
    /// nftables.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The uplink does not exist where it must.
    #[error(
        "--nat-via {iface}: there is no interface {iface} in {place}; name the interface that \
         leads out of this host (see `ip -br link`{hint})"
    )]
    NoUplink {
        /// The name given.
        iface: String,
        /// "the daemon's own network namespace" or "network namespace X".
        place: String,
        /// More help, if any.
        hint: String,
    },
    /// The uplink is one that cannot carry NAT.
    #[error("--nat-via {iface}: {reason}")]
    BadUplink {
        /// The name given.
        iface: String,
        /// Why not.
        reason: &'static str,
    },
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, NatError>;

/// Outbound NAT of one daemon namespace, as planned or applied: enough to undo it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// The namespace the uplink is in; `None`: the daemon's own (the host's).
    pub outer: Option<String>,
    /// The uplink.
    pub iface: String,
    /// The outer end of the transit veth (`vx` + hash of the daemon's namespace).
    pub transit: String,
    /// IFACE's `net/ipv4/conf/IFACE/forwarding` before; vmnode restores it if
    /// it was off.
    pub iface_forwarding_was: String,
}

impl Applied {
    fn table(&self) -> String {
        format!("{NAT_TABLE}-{}", self.transit)
    }

    fn place(&self) -> &str {
        self.outer.as_deref().unwrap_or("(own)")
    }

    fn vmnode_turned_forwarding_on(&self) -> bool {
        self.iface_forwarding_was == "0"
    }
}

/// The transit of daemon namespace `ns`: outer end name and the /30's two
/// addresses (daemon end, outer end), stable per namespace name, inside
/// 169.254.0.0/16 (link-local: never a guest's, nor routed beyond the host)
/// and outside 169.254.169.0/24 (the cloud's metadata address).
pub fn transit_of(ns: &str) -> (String, Ipv4Network, Ipv4Network) {
    let h = stable_hash(ns.as_bytes()) & 0xff_ffff_ffff;
    let mut third = (h % 250 + 1) as u8;
    if third == 169 {
        third = 170;
    }
    let fourth = ((h >> 8) % 64 * 4) as u8;
    let at = |n: u8| {
        Ipv4Network::new(Ipv4Addr::new(169, 254, third, fourth + n), 30)
            .expect("a /30 is a valid prefix")
    };
    (format!("vx{h:010x}"), at(1), at(2))
}

/// Checks the uplink `iface` in `outer` (the daemon's own namespace for
/// `None`) and reads what [`apply`] will change. Changes nothing.
pub fn plan(ns: &str, outer: Option<&str>, iface: &str) -> Result<Applied> {
    let (transit, _, _) = transit_of(ns);
    let bad = |reason| {
        Err(NatError::BadUplink {
            iface: iface.into(),
            reason,
        })
    };
    if plumbing::check_ifname(iface).is_err() {
        return bad("not a valid interface name");
    }
    if iface == "lo" {
        return bad("the loopback interface leads nowhere");
    }
    if iface == transit || iface.starts_with("vh") && iface.len() == 12 {
        return bad("that is one of vmnode's own veths; name the host's uplink");
    }
    if !plumbing::link_exists_at(outer, iface)? {
        let hint = if plumbing::link_exists(ns, iface) {
            format!("; {iface} is in the daemon's namespace {ns}, where vmnode routes from, not to")
        } else {
            String::new()
        };
        return Err(NatError::NoUplink {
            iface: iface.into(),
            place: match outer {
                None => "the daemon's own network namespace (the host's)".into(),
                Some(o) => format!("network namespace {o} (--host-netns)"),
            },
            hint,
        });
    }
    let iface_forwarding_was =
        plumbing::get_sysctl_at(outer, &format!("net/ipv4/conf/{iface}/forwarding"))?;
    Ok(Applied {
        outer: outer.map(str::to_string),
        iface: iface.into(),
        transit,
        iface_forwarding_was,
    })
}

/// Sets outbound NAT up as planned. Idempotent.
pub fn apply(ns: &str, a: &Applied) -> Result<()> {
    let outer = a.outer.as_deref();
    let (_, ns_addr, outer_addr) = transit_of(ns);
    plumbing::ensure_routed_veth(outer, ns, &a.transit, NS_IF, outer_addr, ns_addr)?;
    // The outer side first: its rules must stand before anything can be forwarded.
    filter::nft_at(outer, &outer_rules(a, ns_addr.ip()))?;
    for dev in [&a.transit, &a.iface] {
        plumbing::set_sysctl_at(outer, &format!("net/ipv4/conf/{dev}/forwarding"), "1")?;
    }
    filter::nft_at(
        Some(ns),
        &format!(
            "table ip {NAT_TABLE} {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
}}
flush chain ip {NAT_TABLE} postrouting
add rule ip {NAT_TABLE} postrouting oifname \"{NS_IF}\" masquerade
"
        ),
    )?;
    filter::set_routed_uplink(ns, NS_IF)?;
    debug!(ns, outer = a.place(), iface = %a.iface, transit = %a.transit, "outbound NAT up");
    Ok(())
}

/// The outer namespace's table (see the module doc).
fn outer_rules(a: &Applied, src: Ipv4Addr) -> String {
    let (t, x, up) = (a.table(), &a.transit, &a.iface);
    let mut s = format!(
        "table ip {t} {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
  chain forward {{ type filter hook forward priority filter; policy accept; }}
  chain input {{ type filter hook input priority filter; policy accept; }}
}}
flush table ip {t}
add rule ip {t} postrouting ip saddr {src} oifname \"{up}\" masquerade
add rule ip {t} forward iifname \"{x}\" oifname \"{up}\" ct state new,established,related accept
add rule ip {t} forward iifname \"{x}\" counter drop
add rule ip {t} forward iifname \"{up}\" oifname \"{x}\" ct state established,related accept
add rule ip {t} forward oifname \"{x}\" counter drop
add rule ip {t} input iifname \"{x}\" ct state established,related accept
add rule ip {t} input iifname \"{x}\" counter drop
"
    );
    if a.vmnode_turned_forwarding_on() {
        // IFACE forwarded nothing before vmnode turned its flag on; keep it so, but for the
        // replies to vmnode's transits (this daemon's and any other's).
        s.push_str(&format!(
            "add rule ip {t} forward iifname \"{up}\" oifname != \"vx*\" counter drop\n"
        ));
    }
    s
}

/// Removes outbound NAT from `ns` and, given what was applied, from the outer
/// namespace too (restoring IFACE's forwarding flag if vmnode turned it on).
/// Without a record only the daemon's side is cleaned (its forwarding off, the
/// transit and the masquerade gone). Missing pieces are fine.
pub fn remove(ns: &str, applied: Option<&Applied>) -> Result<()> {
    if let Some(a) = applied {
        let outer = a.outer.as_deref();
        let outer_there = outer.is_none_or(|o| plumbing::netns_path(o).exists());
        if outer_there {
            let t = a.table();
            filter::nft_at(outer, &format!("table ip {t} {{}}\ndelete table ip {t}\n"))?;
            if a.vmnode_turned_forwarding_on() {
                let key = format!("net/ipv4/conf/{}/forwarding", a.iface);
                if let Err(e) = plumbing::set_sysctl_at(outer, &key, "0") {
                    // The uplink may be gone meanwhile; then so is its flag.
                    warn!(iface = %a.iface, error = %e, "cannot turn the uplink's forwarding off again");
                }
            }
        }
    }
    if plumbing::netns_path(ns).exists() {
        filter::set_isolated(ns)?;
        // Deleting one end of a veth deletes both, and the default route with it.
        plumbing::delete_link(ns, NS_IF)?;
        filter::nft_at(
            Some(ns),
            &format!("table ip {NAT_TABLE} {{}}\ndelete table ip {NAT_TABLE}\n"),
        )?;
    }
    debug!(ns, "outbound NAT removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transits_are_link_local_30s_named_like_links() {
        for ns in ["vmnode", "vmnt-1-0", "vmnt-1-1", ""] {
            let (name, inner, outer) = transit_of(ns);
            assert!(plumbing::check_ifname(&name).is_ok(), "{name}");
            assert_eq!(name.len(), 12);
            assert_eq!(inner.prefix(), 30);
            assert_eq!(inner.network(), outer.network());
            assert_ne!(inner.ip(), outer.ip());
            assert!(inner.ip().is_link_local() && outer.ip().is_link_local());
            assert_ne!(inner.ip().octets()[2], 169);
            assert_ne!(inner.ip(), inner.network());
            assert_ne!(outer.ip(), outer.broadcast());
            assert_eq!(transit_of(ns), (name, inner, outer));
        }
    }

    #[test]
    fn the_outer_table_keeps_iface_closed_only_if_vmnode_opened_it() {
        let (transit, ns_addr, _) = transit_of("vmnode");
        let mut a = Applied {
            outer: None,
            iface: "eth0".into(),
            transit,
            iface_forwarding_was: "0".into(),
        };
        let rules = outer_rules(&a, ns_addr.ip());
        assert!(rules.contains(&format!(
            "ip saddr {} oifname \"eth0\" masquerade",
            ns_addr.ip()
        )));
        assert!(rules.contains("iifname \"eth0\" oifname != \"vx*\" counter drop"));
        a.iface_forwarding_was = "1".into();
        assert!(!outer_rules(&a, ns_addr.ip()).contains("oifname != \"vx*\""));
    }
}
