//! `vmnode network ...`: virtual networks, subnets, NICs, the DHCP lease table and ledger.

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use super::client::Client;
use super::output::{print, Format};
use super::Global;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Virtual networks (each a bridge of its own, isolated from the others).
    #[command(subcommand)]
    Vnet(VnetCmd),
    /// Network interfaces.
    #[command(subcommand)]
    Nic(NicCmd),
    /// The DHCP responder: leases and the per-NIC ledger of exchanges.
    #[command(subcommand)]
    Dhcp(DhcpCmd),
}

#[derive(Args)]
pub struct Id {
    #[arg(short = 'g', long = "resource-group")]
    pub rg: String,
    #[arg(short = 'n', long)]
    pub name: String,
}

#[derive(Subcommand)]
pub enum VnetCmd {
    /// Create (or update) a virtual network, optionally with a first subnet.
    Create {
        #[command(flatten)]
        id: Id,
        /// Address space, e.g. 10.2.0.0/16 (repeatable).
        #[arg(long = "address-prefixes", num_args = 1.., default_value = "10.0.0.0/16")]
        prefixes: Vec<String>,
        #[arg(long = "subnet-name")]
        subnet_name: Option<String>,
        #[arg(long = "subnet-prefixes")]
        subnet_prefix: Option<String>,
    },
    List {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
    },
    Show(Id),
    Delete(Id),
    /// Subnets of a vnet.
    #[command(subcommand)]
    Subnet(SubnetCmd),
}

#[derive(Subcommand)]
pub enum SubnetCmd {
    Create {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
        #[arg(long = "vnet-name")]
        vnet: String,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(long = "address-prefixes")]
        prefix: String,
    },
    Delete {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
        #[arg(long = "vnet-name")]
        vnet: String,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum NicCmd {
    /// Create a NIC in a subnet (dynamic address, or --private-ip-address for a static one).
    Create {
        #[command(flatten)]
        id: Id,
        #[arg(long = "vnet-name")]
        vnet: String,
        #[arg(long)]
        subnet: String,
        #[arg(long = "private-ip-address")]
        private_ip: Option<String>,
    },
    List {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
    },
    Show(Id),
    Delete(Id),
}

#[derive(Subcommand)]
pub enum DhcpCmd {
    /// The lease table.
    Leases,
    /// Every NIC's DHCP exchanges, timestamped (DISCOVER/OFFER/REQUEST/ACK/NAK/...).
    Ledger,
    /// Consistency of the NICs and the reserved addresses: no address held for a NIC that does
    /// not exist, every NIC holding its own, none held twice (empty: consistent).
    Check,
}

const VNET_COLS: &[(&str, &str)] = &[
    ("Name", "name"),
    ("AddressSpace", "/properties/addressSpace/addressPrefixes/0"),
    ("Subnets", "subnetList"),
    ("Domain", "/properties/internalDomainNameSuffix"),
];
const NIC_COLS: &[(&str, &str)] = &[
    ("Name", "name"),
    ("MacAddress", "/properties/macAddress"),
    (
        "PrivateIp",
        "/properties/ipConfigurations/0/properties/privateIPAddress",
    ),
    (
        "Allocation",
        "/properties/ipConfigurations/0/properties/privateIPAllocationMethod",
    ),
    ("Lease", "/properties/dhcpLease"),
    ("VirtualMachine", "/properties/virtualMachine/id"),
];

fn with_subnet_list(mut v: Value) -> Value {
    let list: Vec<String> = v["properties"]["subnets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    format!(
                        "{}={}",
                        s["name"].as_str().unwrap_or(""),
                        s["properties"]["addressPrefix"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v["subnetList"] = json!(list.join(","));
    v
}

async fn net_path(cl: &Client, rg: &str, rest: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{}/providers/Microsoft.Network/{rest}",
        cl.rg_path(rg).await?
    ))
}

pub async fn run(g: &Global, c: NetworkCmd) -> anyhow::Result<()> {
    let cl = Client::new(g.url.as_deref(), g.paths())?;
    match c {
        NetworkCmd::Vnet(c) => vnet(g, &cl, c).await,
        NetworkCmd::Nic(c) => nic(g, &cl, c).await,
        NetworkCmd::Dhcp(c) => dhcp(g, &cl, c).await,
    }
}

/// The body of a vnet's PUT, with its first subnet if one is named.
fn vnet_body(
    prefixes: &[String],
    subnet_name: Option<String>,
    subnet_prefix: Option<String>,
) -> Value {
    let mut subnets = vec![];
    if let Some(name) = subnet_name {
        let prefix = subnet_prefix.unwrap_or_else(|| {
            // az's default: the first /24 of the address space.
            prefixes[0]
                .split('/')
                .next()
                .map(|a| format!("{a}/24"))
                .unwrap_or_default()
        });
        subnets.push(json!({ "name": name, "properties": { "addressPrefix": prefix } }));
    }
    json!({
        "location": crate::config::LOCATION,
        "properties": { "addressSpace": { "addressPrefixes": prefixes }, "subnets": subnets },
    })
}

async fn vnet(g: &Global, cl: &Client, c: VnetCmd) -> anyhow::Result<()> {
    match c {
        VnetCmd::Create {
            id,
            prefixes,
            subnet_name,
            subnet_prefix,
        } => {
            let body = vnet_body(&prefixes, subnet_name, subnet_prefix);
            let p = net_path(cl, &id.rg, &format!("virtualNetworks/{}", id.name)).await?;
            let r = cl.request(Method::PUT, &p, Some(&body)).await?.ok()?;
            print(g.output, &with_subnet_list(r.body), VNET_COLS);
        }
        VnetCmd::List { rg } => {
            let r = cl
                .get(&net_path(cl, &rg, "virtualNetworks").await?)
                .await?
                .ok()?;
            let rows: Vec<Value> = r.body["value"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(with_subnet_list)
                .collect();
            print(g.output, &Value::Array(rows), VNET_COLS);
        }
        VnetCmd::Show(id) => {
            let r = cl
                .get(&net_path(cl, &id.rg, &format!("virtualNetworks/{}", id.name)).await?)
                .await?
                .ok()?;
            print(Format::Json, &r.body, &[]);
        }
        VnetCmd::Delete(id) => {
            let p = net_path(cl, &id.rg, &format!("virtualNetworks/{}", id.name)).await?;
            cl.request(Method::DELETE, &p, None).await?.ok()?;
            eprintln!("deleted virtual network {}", id.name);
        }
        VnetCmd::Subnet(c) => subnet(g, cl, c).await?,
    }
    Ok(())
}

async fn subnet(g: &Global, cl: &Client, c: SubnetCmd) -> anyhow::Result<()> {
    match c {
        SubnetCmd::Create {
            rg,
            vnet,
            name,
            prefix,
        } => {
            let p = net_path(cl, &rg, &format!("virtualNetworks/{vnet}/subnets/{name}")).await?;
            let r = cl
                .request(
                    Method::PUT,
                    &p,
                    Some(&json!({ "properties": { "addressPrefix": prefix } })),
                )
                .await?
                .ok()?;
            print(
                g.output,
                &r.body,
                &[
                    ("Name", "name"),
                    ("AddressPrefix", "/properties/addressPrefix"),
                ],
            );
        }
        SubnetCmd::Delete { rg, vnet, name } => {
            let p = net_path(cl, &rg, &format!("virtualNetworks/{vnet}/subnets/{name}")).await?;
            cl.request(Method::DELETE, &p, None).await?.ok()?;
            eprintln!("deleted subnet {name}");
        }
    }
    Ok(())
}

async fn nic(g: &Global, cl: &Client, c: NicCmd) -> anyhow::Result<()> {
    match c {
        NicCmd::Create {
            id,
            vnet,
            subnet,
            private_ip,
        } => {
            let sub = cl.subscription().await?;
            let subnet_id = format!("/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}", id.rg);
            let mut cfg =
                json!({ "subnet": { "id": subnet_id }, "privateIPAllocationMethod": "Dynamic" });
            if let Some(ip) = private_ip {
                cfg["privateIPAllocationMethod"] = json!("Static");
                cfg["privateIPAddress"] = json!(ip);
            }
            let body = json!({
                "location": crate::config::LOCATION,
                "properties": { "ipConfigurations": [{ "name": "ipconfig1", "properties": cfg }] },
            });
            let p = net_path(cl, &id.rg, &format!("networkInterfaces/{}", id.name)).await?;
            let r = cl.request(Method::PUT, &p, Some(&body)).await?.ok()?;
            print(g.output, &r.body, NIC_COLS);
        }
        NicCmd::List { rg } => {
            let r = cl
                .get(&net_path(cl, &rg, "networkInterfaces").await?)
                .await?
                .ok()?;
            print(g.output, &r.body["value"], NIC_COLS);
        }
        NicCmd::Show(id) => {
            let r = cl
                .get(&net_path(cl, &id.rg, &format!("networkInterfaces/{}", id.name)).await?)
                .await?
                .ok()?;
            print(Format::Json, &r.body, &[]);
        }
        NicCmd::Delete(id) => {
            let p = net_path(cl, &id.rg, &format!("networkInterfaces/{}", id.name)).await?;
            cl.request(Method::DELETE, &p, None).await?.ok()?;
            eprintln!("deleted network interface {}", id.name);
        }
    }
    Ok(())
}

async fn dhcp(g: &Global, cl: &Client, c: DhcpCmd) -> anyhow::Result<()> {
    match c {
        DhcpCmd::Leases => {
            let r = cl.get("/vmnode/v1/dhcp/leases").await?.ok()?;
            print(
                g.output,
                &r.body["value"],
                &[
                    ("MacAddress", "macAddress"),
                    ("IpAddress", "ipAddress"),
                    ("Hostname", "hostname"),
                    ("CommittedAt", "committedAt"),
                ],
            );
        }
        DhcpCmd::Check => {
            let r = cl.get("/vmnode/v1/network/check").await?.ok()?;
            let v = &r.body["value"];
            if g.output == Format::Table && v.as_array().is_some_and(|a| a.is_empty()) {
                println!("NICs and addresses are consistent");
            } else {
                print(
                    g.output,
                    v,
                    &[
                        ("Kind", "kind"),
                        ("Subnet", "subnet"),
                        ("Ip", "ip"),
                        ("Detail", "detail"),
                    ],
                );
            }
        }
        DhcpCmd::Ledger => {
            let r = cl.get("/vmnode/v1/dhcp/ledger").await?.ok()?;
            if g.output == Format::Json {
                print(Format::Json, &r.body["value"], &[]);
            } else {
                print_ledger(&r.body["value"]);
            }
        }
    }
    Ok(())
}

/// Every NIC's DHCP exchanges, a line each under a line naming the NIC.
fn print_ledger(nics: &Value) {
    for nic in nics.as_array().cloned().unwrap_or_default() {
        println!(
            "{} ({}, {})",
            nic["nic"].as_str().unwrap_or(""),
            nic["resourceGroup"].as_str().unwrap_or(""),
            nic["macAddress"].as_str().unwrap_or("")
        );
        for e in nic["entries"].as_array().cloned().unwrap_or_default() {
            let at = e["at"]["secs_since_epoch"].as_u64().unwrap_or(0);
            println!(
                "  {at}  {:<10} xid={:08x} {} {}",
                e["kind"]["type"].as_str().unwrap_or(""),
                e["xid"].as_u64().unwrap_or(0),
                e["ip"].as_str().unwrap_or(""),
                e["detail"].as_str().unwrap_or("")
            );
        }
    }
}
