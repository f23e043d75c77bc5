//! Links and addresses over rtnetlink: bridges, bridge ports, veth pairs,
//! up/down, listing. Each call opens a netlink socket on a thread that has
//! joined the namespace (so the socket belongs to it), runs its requests on a
//! small current-thread tokio runtime, and closes it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures_util::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use tracing::debug;

use super::{
    check_ifname, check_netns_name, in_netns, in_netns_at, netns_path, PlumbingError, Result,
};

/// `ENODEV`/`ENOENT` from the kernel: the link is not there.
fn is_missing(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if matches!(-m.raw_code(), libc::ENODEV | libc::ENOENT))
}

fn nl(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PlumbingError {
    let context = context.into();
    move |source| PlumbingError::Netlink { context, source }
}

/// Runs `f` with a netlink handle whose socket lives in `ns`.
pub(super) fn with_netlink<T, F, Fut>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    in_netns(ns, move || netlink_session(f))
}

/// [`with_netlink`] in `ns`, or for `None` in the daemon's own namespace (on
/// a fresh thread, so no tokio runtime of the caller is entered).
fn with_netlink_at<T, F, Fut>(ns: Option<&str>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    in_netns_at(ns, move || netlink_session(f))
}

/// Opens a netlink connection in the calling thread's namespace and runs `f`.
fn netlink_session<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| PlumbingError::Sys {
                context: "netlink runtime".into(),
                source,
            })?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|source| PlumbingError::Sys {
                    context: "netlink socket".into(),
                    source,
                })?;
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    }
}

/// The link `name`, or `None` if it does not exist.
async fn get_link(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(nl(format!("get link {name}"))(e)),
    }
}

async fn index_of(h: &Handle, ns: &str, name: &str) -> Result<u32> {
    get_link(h, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| PlumbingError::NoSuchLink {
            ns: ns.into(),
            name: name.into(),
        })
}

/// The `IFLA_INFO_KIND` of a link (`None` for a plain device such as `lo`).
fn kind_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

async fn set_up_index(h: &Handle, index: u32, what: &str) -> Result<()> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {what} up")))
}

async fn add_addrs(h: &Handle, index: u32, name: &str, addrs: &[Ipv4Network]) -> Result<()> {
    for addr in addrs {
        h.address()
            .add(index, IpAddr::V4(addr.ip()), addr.prefix())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("add {addr} to {name}")))?;
    }
    Ok(())
}

/// `Some(kind)` if the link exists (`kind` is `None` for a plain device),
/// `None` if it does not. A missing namespace has no links.
pub(super) fn link_kind(ns: &str, name: &str) -> Result<Option<Option<String>>> {
    check_netns_name(ns)?;
    link_kind_at(Some(ns), name)
}

/// [`link_kind`] in `ns`, or in the daemon's own namespace for `None`.
fn link_kind_at(ns: Option<&str>, name: &str) -> Result<Option<Option<String>>> {
    check_ifname(name)?;
    if let Some(ns) = ns {
        check_netns_name(ns)?;
        if !netns_path(ns).exists() {
            return Ok(None);
        }
    }
    let name = name.to_string();
    with_netlink_at(ns, move |h| async move {
        Ok(get_link(&h, &name).await?.map(|l| kind_of(&l)))
    })
}

/// Whether a link `name` exists in `ns`, or in the daemon's own namespace
/// for `None`. Unlike [`link_exists`], says why it could not look.
pub fn link_exists_at(ns: Option<&str>, name: &str) -> Result<bool> {
    Ok(link_kind_at(ns, name)?.is_some())
}

/// Brings the link `name` in `ns` up.
pub fn set_link_up(ns: &str, name: &str) -> Result<()> {
    check_ifname(name)?;
    let (name, ns_name) = (name.to_string(), ns.to_string());
    with_netlink(ns, move |h| async move {
        let index = index_of(&h, &ns_name, &name).await?;
        set_up_index(&h, index, &name).await
    })
}

/// Makes sure the bridge exists in `ns`, carries `addrs` and is up.
///
/// Idempotent: an existing bridge is kept, missing addresses are added and
/// addresses not in `addrs` are left alone. Fails if `bridge` exists and is
/// not a bridge.
pub fn ensure_bridge(ns: &str, bridge: &str, addrs: &[Ipv4Network]) -> Result<()> {
    check_netns_name(ns)?;
    check_ifname(bridge)?;
    let (bridge, ns_name, addrs) = (bridge.to_string(), ns.to_string(), addrs.to_vec());
    with_netlink(ns, move |h| async move {
        let index = match get_link(&h, &bridge).await? {
            Some(link) => match kind_of(&link) {
                Some(k) if k == "bridge" => link.header.index,
                found => {
                    return Err(PlumbingError::WrongKind {
                        ns: ns_name,
                        name: bridge,
                        expected: "bridge",
                        found,
                    })
                }
            },
            None => {
                debug!(ns = %ns_name, %bridge, "creating bridge");
                h.link()
                    .add(LinkBridge::new(&bridge).build())
                    .execute()
                    .await
                    .map_err(nl(format!("add bridge {bridge}")))?;
                index_of(&h, &ns_name, &bridge).await?
            }
        };
        add_addrs(&h, index, &bridge, &addrs).await?;
        set_up_index(&h, index, &bridge).await
    })
}

/// Puts `link` on `bridge` and brings it up.
pub fn attach_to_bridge(ns: &str, link: &str, bridge: &str) -> Result<()> {
    check_netns_name(ns)?;
    check_ifname(link)?;
    check_ifname(bridge)?;
    let (link, bridge, ns_name) = (link.to_string(), bridge.to_string(), ns.to_string());
    with_netlink(ns, move |h| async move {
        let port = index_of(&h, &ns_name, &link).await?;
        let master = index_of(&h, &ns_name, &bridge).await?;
        h.link()
            .set(
                LinkUnspec::new_with_index(port)
                    .controller(master)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("attach {link} to {bridge}")))
    })
}

/// Whether a link `name` exists in `ns`. A missing namespace has no links.
pub fn link_exists(ns: &str, name: &str) -> bool {
    matches!(link_kind(ns, name), Ok(Some(_)))
}

/// Deletes the link `name` in `ns`. Missing is fine.
pub fn delete_link(ns: &str, name: &str) -> Result<()> {
    check_netns_name(ns)?;
    check_ifname(name)?;
    if !netns_path(ns).exists() {
        return Ok(());
    }
    let name = name.to_string();
    with_netlink(ns, move |h| async move {
        let Some(link) = get_link(&h, &name).await? else {
            return Ok(());
        };
        match h.link().del(link.header.index).execute().await {
            Err(e) if is_missing(&e) => Ok(()),
            other => other.map_err(nl(format!("delete {name}"))),
        }
    })
}

/// Names of all links in `ns` (including `lo`), in ifindex order.
pub fn list_links(ns: &str) -> Result<Vec<String>> {
    check_netns_name(ns)?;
    with_netlink(ns, move |h| async move {
        let mut links: Vec<LinkMessage> = h
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list links"))?;
        links.sort_by_key(|l| l.header.index);
        Ok(links.iter().filter_map(name_of).collect())
    })
}

/// Whether the link `name` in `ns` is administratively up.
pub fn link_is_up(ns: &str, name: &str) -> Result<bool> {
    check_ifname(name)?;
    let (name, ns_name) = (name.to_string(), ns.to_string());
    with_netlink(ns, move |h| async move {
        let link = get_link(&h, &name)
            .await?
            .ok_or(PlumbingError::NoSuchLink { ns: ns_name, name })?;
        Ok(link.header.flags.contains(LinkFlags::Up))
    })
}

/// The bridge `name` in `ns` is on, or `None`.
pub fn link_master(ns: &str, name: &str) -> Result<Option<String>> {
    check_ifname(name)?;
    let (name, ns_name) = (name.to_string(), ns.to_string());
    with_netlink(ns, move |h| async move {
        let link = get_link(&h, &name)
            .await?
            .ok_or(PlumbingError::NoSuchLink {
                ns: ns_name,
                name: name.clone(),
            })?;
        let Some(master) = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(i) => Some(*i),
            _ => None,
        }) else {
            return Ok(None);
        };
        let mut found = h.link().get().match_index(master).execute();
        let m = found.try_next().await.map_err(nl("get master"))?;
        Ok(m.as_ref().and_then(name_of))
    })
}

/// IPv4 addresses on the link `name` in `ns`, with their prefixes.
pub fn link_addrs(ns: &str, name: &str) -> Result<Vec<Ipv4Network>> {
    check_ifname(name)?;
    let (name, ns_name) = (name.to_string(), ns.to_string());
    with_netlink(ns, move |h| async move {
        let index = index_of(&h, &ns_name, &name).await?;
        let msgs: Vec<_> = h
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl(format!("list addresses of {name}")))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip))
                    | AddressAttribute::Address(IpAddr::V4(ip)) => {
                        Ipv4Network::new(*ip, m.header.prefix_len).ok()
                    }
                    _ => None,
                })
            })
            .collect())
    })
}

/// How the host reaches the guests: a veth pair from the daemon's own
/// (host) namespace into `ns`, whose `ns_if` end is a port of `bridge` and
/// whose `host_if` end carries `host_addr`, e.g. `10.1.0.2/24` (one of the
/// subnet's reserved addresses): the host then sits on the vnet's segment and
/// reaches every guest and the gateway without any routing. Both ends up. Idempotent; a half-made
/// pair (one end missing) is remade. This changes the host's network (one
/// link and one address), so tests use [`ensure_veth_between`] instead.
pub fn ensure_veth_to_host(
    ns: &str,
    host_if: &str,
    ns_if: &str,
    bridge: &str,
    host_addr: Ipv4Network,
) -> Result<()> {
    ensure_veth(None, ns, host_if, ns_if, bridge, host_addr)
}

/// [`ensure_veth_to_host`] with the "host" end in the namespace `outer`
/// instead of the caller's own.
pub fn ensure_veth_between(
    outer: &str,
    ns: &str,
    outer_if: &str,
    ns_if: &str,
    bridge: &str,
    outer_addr: Ipv4Network,
) -> Result<()> {
    check_netns_name(outer)?;
    ensure_veth(Some(outer), ns, outer_if, ns_if, bridge, outer_addr)
}

fn ensure_veth(
    outer: Option<&str>,
    ns: &str,
    outer_if: &str,
    ns_if: &str,
    bridge: &str,
    outer_addr: Ipv4Network,
) -> Result<()> {
    check_ifname(bridge)?;
    make_veth_pair(outer, ns, outer_if, ns_if)?;
    attach_to_bridge(ns, ns_if, bridge)?;
    configure_outer_end(outer, outer_if, outer_addr)
}

/// A routed veth pair (no bridge): `ns_if` in `ns` carries `ns_addr` and the
/// namespace's default route via `outer_addr`, which `outer_if` carries in
/// `outer` (the daemon's own namespace for `None`). Both ends up. Idempotent;
/// a half-made pair is remade. Outbound NAT leaves the namespace this way.
pub fn ensure_routed_veth(
    outer: Option<&str>,
    ns: &str,
    outer_if: &str,
    ns_if: &str,
    outer_addr: Ipv4Network,
    ns_addr: Ipv4Network,
) -> Result<()> {
    make_veth_pair(outer, ns, outer_if, ns_if)?;
    let (ns_if2, ns_name) = (ns_if.to_string(), ns.to_string());
    with_netlink(ns, move |h| async move {
        let index = index_of(&h, &ns_name, &ns_if2).await?;
        add_addrs(&h, index, &ns_if2, &[ns_addr]).await?;
        set_up_index(&h, index, &ns_if2).await?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(outer_addr.ip())
            .output_interface(index)
            .build();
        h.route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(nl(format!(
                "default route via {} on {ns_if2}",
                outer_addr.ip()
            )))
    })?;
    configure_outer_end(outer, outer_if, outer_addr)
}

/// Makes the veth pair `outer_if` (in `outer`, or the daemon's own namespace)
/// / `ns_if` (in `ns`) unless both ends are there; a half-made pair is
/// removed first. Fails if `outer_if` exists and is not a veth.
fn make_veth_pair(outer: Option<&str>, ns: &str, outer_if: &str, ns_if: &str) -> Result<()> {
    check_netns_name(ns)?;
    check_ifname(outer_if)?;
    check_ifname(ns_if)?;
    let outer_kind = link_kind_at(outer, outer_if)?;
    let inner_kind = link_kind(ns, ns_if)?;
    let is_veth =
        |k: &Option<Option<String>>| k.as_ref().is_some_and(|k| k.as_deref() == Some("veth"));
    if is_veth(&outer_kind) && is_veth(&inner_kind) {
        return Ok(());
    }
    if let Some(found) = outer_kind.filter(|k| k.as_deref() != Some("veth")) {
        return Err(PlumbingError::WrongKind {
            ns: outer.unwrap_or("(host)").into(),
            name: outer_if.into(),
            expected: "veth",
            found,
        });
    }
    // Half-made or missing: start over from the outer side.
    delete_link(ns, ns_if)?;
    let ns_file = std::fs::File::open(netns_path(ns)).map_err(|source| PlumbingError::Sys {
        context: format!("open {}", netns_path(ns).display()),
        source,
    })?;
    let (outer_if, ns_if) = (outer_if.to_string(), ns_if.to_string());
    with_netlink_at(outer, move |h: Handle| async move {
        if let Some(old) = get_link(&h, &outer_if).await? {
            h.link()
                .del(old.header.index)
                .execute()
                .await
                .map_err(nl(format!("delete {outer_if}")))?;
        }
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(ns_if.clone())
            .setns_by_fd(ns_file.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(outer_if.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("add veth {outer_if}/{ns_if}")))?;
        drop(ns_file);
        Ok(())
    })
}

/// Gives the outer end of a veth its address and brings it up.
fn configure_outer_end(outer: Option<&str>, outer_if: &str, outer_addr: Ipv4Network) -> Result<()> {
    let outer_if = outer_if.to_string();
    with_netlink_at(outer, move |h: Handle| async move {
        let index = get_link(&h, &outer_if)
            .await?
            .map(|l| l.header.index)
            .ok_or_else(|| PlumbingError::NoSuchLink {
                ns: "(outer)".into(),
                name: outer_if.clone(),
            })?;
        add_addrs(&h, index, &outer_if, &[outer_addr]).await?;
        set_up_index(&h, index, &outer_if).await
    })
}
