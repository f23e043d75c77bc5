//! `vmnode storage ...`: the node's blob service from the command line. The account name, key
//! and endpoint come from `state/storage/{account}.json` (0600, written by the daemon), so these
//! verbs talk to the blob endpoint directly with SharedKey, as any SDK would.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use hyper::body::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use super::output::print;
use super::Global;
use crate::blob::{self, AccountFile};

mod blobs;
mod client;
use blobs::{blob_cmd, BlobCmd};
use client::{enc, Client};

#[derive(Subcommand)]
pub enum StorageCmd {
    /// The node's storage accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Containers.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Blobs.
    #[command(subcommand)]
    Blob(BlobCmd),
    /// Consistency of VM disks and their leases (also run at daemon start).
    Check {
        /// Acquire missing disk leases and release orphaned ones.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Args, Clone)]
pub struct AccountArg {
    /// The storage account (default: the node's).
    #[arg(long = "account-name", short = 'a')]
    pub account: Option<String>,
}

#[derive(Subcommand)]
pub enum AccountCmd {
    List,
    ShowConnectionString {
        #[arg(short = 'n', long = "name")]
        name: Option<String>,
        /// primary (key1, from the state dir) or secondary (key2, asked of the daemon).
        #[arg(long, default_value = "primary", value_parser = ["primary", "secondary"])]
        key: String,
        /// The account's resource group, for `--key secondary`.
        #[arg(short = 'g', long = "resource-group", default_value = crate::net::DEFAULT_RG)]
        rg: String,
    },
}

#[derive(Subcommand)]
pub enum ContainerCmd {
    Create {
        #[arg(short = 'n', long)]
        name: String,
        /// off, blob or container.
        #[arg(long, default_value = "off")]
        public_access: String,
        #[command(flatten)]
        acct: AccountArg,
    },
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        acct: AccountArg,
    },
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        acct: AccountArg,
    },
    SetPermission {
        #[arg(short = 'n', long)]
        name: String,
        /// off, blob or container.
        #[arg(long)]
        public_access: String,
        #[command(flatten)]
        acct: AccountArg,
    },
}

/// An account's key2, from the daemon's `listKeys`.
async fn secondary_key(g: &Global, rg: &str, account: &str) -> anyhow::Result<String> {
    let cl = super::client::Client::new(g.url.as_deref(), g.paths())?;
    let path = format!(
        "{}/providers/Microsoft.Storage/storageAccounts/{account}/listKeys",
        cl.rg_path(rg).await?
    );
    let r = cl.request(Method::POST, &path, None).await?.ok()?;
    r.body["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["keyName"] == "key2"))
        .and_then(|k| k["value"].as_str())
        .map(String::from)
        .ok_or_else(|| anyhow!("the daemon listed no key2 for account '{account}'"))
}

fn account_of(g: &Global, name: Option<&str>) -> anyhow::Result<AccountFile> {
    let all = blob::read_account_files(&g.state_dir);
    if all.is_empty() {
        bail!(
            "no storage account in {}: start `vmnode serve` with this --state-dir first",
            g.state_dir.join("storage").display()
        );
    }
    match name {
        None => Ok(all[0].clone()),
        Some(n) => all.into_iter().find(|a| a.name == n).ok_or_else(|| {
            anyhow!("no storage account '{n}' on this node (see `vmnode storage account list`)")
        }),
    }
}

fn list_xml(
    body: &Bytes,
    item: &str,
) -> anyhow::Result<(Vec<blob::http::xml::Node>, Vec<String>, String)> {
    let text = String::from_utf8_lossy(body);
    let doc = blob::http::xml::parse(&text).ok_or_else(|| anyhow!("the service sent bad XML"))?;
    let group = doc
        .children
        .iter()
        .find(|c| c.name == "Containers" || c.name == "Blobs");
    let items = group
        .map(|g| {
            g.children
                .iter()
                .filter(|c| c.name == item)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let prefixes = group
        .map(|g| {
            g.children
                .iter()
                .filter(|c| c.name == "BlobPrefix")
                .filter_map(|c| c.child_text("Name").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let next = doc.child_text("NextMarker").unwrap_or("").to_string();
    Ok((items, prefixes, next))
}

fn prop(n: &blob::http::xml::Node, name: &str) -> String {
    n.child("Properties")
        .and_then(|p| p.child_text(name))
        .unwrap_or("")
        .to_string()
}

pub async fn run(g: &Global, cmd: StorageCmd) -> anyhow::Result<()> {
    match cmd {
        StorageCmd::Account(AccountCmd::List) => {
            let rows: Vec<Value> = blob::read_account_files(&g.state_dir)
                .iter()
                .map(|a| json!({"name": a.name, "blobEndpoint": a.account_url()}))
                .collect();
            print(
                g.output,
                &Value::Array(rows),
                &[("Name", "name"), ("BlobEndpoint", "blobEndpoint")],
            );
            Ok(())
        }
        StorageCmd::Account(AccountCmd::ShowConnectionString { name, key, rg }) => {
            let mut a = account_of(g, name.as_deref())?;
            if key == "secondary" {
                a.key = secondary_key(g, &rg, &a.name).await?;
            }
            if g.output == super::output::Format::Json {
                println!("{}", json!({"connectionString": a.connection_string()}));
            } else {
                println!("{}", a.connection_string());
            }
            Ok(())
        }
        StorageCmd::Check { repair } => {
            let c = Client::new(account_of(g, None)?)?;
            let mut q = vec![("comp", "vmnode-check".to_string())];
            if repair {
                q.push(("repair", "true".into()));
            }
            let r = c
                .send(Method::POST, "", &q, &[], Bytes::new())
                .await?
                .ok()?;
            let v: Value = serde_json::from_slice(&r.body)?;
            if g.output == super::output::Format::Table
                && v.as_array().is_some_and(|a| a.is_empty())
            {
                println!("disks and leases are consistent");
                return Ok(());
            }
            print(
                g.output,
                &v,
                &[
                    ("Kind", "kind"),
                    ("Blob", "blob"),
                    ("Repaired", "repaired"),
                    ("Detail", "detail"),
                ],
            );
            Ok(())
        }
        StorageCmd::Container(c) => container(g, c).await,
        StorageCmd::Blob(b) => blob_cmd(g, b).await,
    }
}

fn access_header(level: &str) -> anyhow::Result<Option<(&'static str, String)>> {
    match level {
        "off" | "private" | "none" => Ok(None),
        "blob" | "container" => Ok(Some(("x-ms-blob-public-access", level.to_string()))),
        l => bail!("--public-access is off, blob or container, not '{l}'"),
    }
}

async fn container(g: &Global, cmd: ContainerCmd) -> anyhow::Result<()> {
    let rc = || vec![("restype", "container".to_string())];
    match cmd {
        ContainerCmd::Create {
            name,
            public_access,
            acct,
        } => {
            let c = Client::new(account_of(g, acct.account.as_deref())?)?;
            let h: Vec<_> = access_header(&public_access)?.into_iter().collect();
            c.send(Method::PUT, &name, &rc(), &h, Bytes::new())
                .await?
                .ok()?;
            print(
                g.output,
                &json!({"name": name, "created": true}),
                &[("Name", "name"), ("Created", "created")],
            );
        }
        ContainerCmd::List { prefix, acct } => {
            let c = Client::new(account_of(g, acct.account.as_deref())?)?;
            let mut rows = Vec::new();
            let mut marker = String::new();
            loop {
                let mut q = vec![("comp", "list".to_string()), ("prefix", prefix.clone())];
                if !marker.is_empty() {
                    q.push(("marker", marker.clone()));
                }
                let r = c.send(Method::GET, "", &q, &[], Bytes::new()).await?.ok()?;
                let (items, _, next) = list_xml(&r.body, "Container")?;
                for i in items {
                    rows.push(json!({
                        "name": i.child_text("Name").unwrap_or(""),
                        "lastModified": prop(&i, "Last-Modified"),
                        "publicAccess": match prop(&i, "PublicAccess").as_str() { "" => "off".to_string(), p => p.to_string() },
                        "leaseState": prop(&i, "LeaseState"),
                    }));
                }
                if next.is_empty() {
                    break;
                }
                marker = next;
            }
            print(
                g.output,
                &Value::Array(rows),
                &[
                    ("Name", "name"),
                    ("PublicAccess", "publicAccess"),
                    ("Lease", "leaseState"),
                    ("LastModified", "lastModified"),
                ],
            );
        }
        ContainerCmd::Delete { name, acct } => {
            let c = Client::new(account_of(g, acct.account.as_deref())?)?;
            c.send(Method::DELETE, &name, &rc(), &[], Bytes::new())
                .await?
                .ok()?;
            eprintln!("deleted container {name}");
        }
        ContainerCmd::SetPermission {
            name,
            public_access,
            acct,
        } => {
            let c = Client::new(account_of(g, acct.account.as_deref())?)?;
            let h: Vec<_> = access_header(&public_access)?.into_iter().collect();
            let mut q = rc();
            q.push(("comp", "acl".into()));
            c.send(Method::PUT, &name, &q, &h, Bytes::new())
                .await?
                .ok()?;
            print(
                g.output,
                &json!({"name": name, "publicAccess": public_access}),
                &[("Name", "name"), ("PublicAccess", "publicAccess")],
            );
        }
    }
    Ok(())
}
