//! The client verbs, az-style.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::client::Client;
use super::output::{print, Format};
use super::{Global, VmId};

#[derive(Subcommand)]
pub enum AccountCmd {
    /// Print a bearer token for the management API (like `az account get-access-token`).
    GetAccessToken,
    /// The node's subscription, location, CA and endpoints.
    Show,
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// Create a resource group (idempotent).
    Create {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'l', long, default_value = crate::config::LOCATION)]
        location: String,
    },
    List,
    Show {
        #[arg(short = 'n', long)]
        name: String,
    },
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum VmCmd {
    /// Create a VM and wait until it runs and holds its DHCP lease.
    Create(Box<CreateArgs>),
    /// List VMs (of a group, or all).
    List {
        #[arg(short = 'g', long = "resource-group")]
        rg: Option<String>,
    },
    /// Show a VM as the API returns it.
    Show(VmId),
    /// Delete a VM and everything it owns (QEMU, tap, lease, address, OS disk).
    Delete {
        #[command(flatten)]
        id: VmId,
        /// Do not ask (vmnode never asks; accepted for az compatibility).
        #[arg(short = 'y', long)]
        yes: bool,
        /// Return once deletion has started.
        #[arg(long)]
        no_wait: bool,
    },
    /// Power and provisioning state, and the DIP.
    GetInstanceView(VmId),
    /// Start a stopped or deallocated VM.
    Start(PowerArgs),
    /// Power off (the guest is asked to shut down first; compute stays allocated).
    Stop {
        #[command(flatten)]
        p: PowerArgs,
        /// Do not ask the guest to shut down: stop QEMU at once.
        #[arg(long)]
        skip_shutdown: bool,
    },
    /// Shut down and release compute: the QEMU process and the temp disk; OS disk and DIP stay.
    Deallocate(PowerArgs),
    /// Reboot the running guest.
    Restart(PowerArgs),
    /// Move the VM to a fresh QEMU (the temp disk is recreated), then start it.
    Redeploy(PowerArgs),
    /// The VM sizes of this node.
    ListSizes {
        #[arg(short = 'l', long, default_value = crate::config::LOCATION)]
        location: String,
    },
    /// The image catalog.
    #[command(subcommand)]
    Image(VmImageCmd),
    /// Data disks: attach (hot-plugged into a running guest) and detach.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Serial log and screenshots.
    #[command(subcommand, name = "boot-diagnostics")]
    BootDiagnostics(super::bootdiag::BootDiagCmd),
    /// VM extensions (CustomScript): set, list, show, delete.
    #[command(subcommand)]
    Extension(super::extension::ExtensionCmd),
    /// Run a script in the VM now and get its exit code, stdout and stderr.
    #[command(subcommand, name = "run-command")]
    RunCommand(super::extension::RunCommandCmd),
}

#[derive(Args)]
pub struct PowerArgs {
    #[command(flatten)]
    pub id: VmId,
    /// Return once the operation has started.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub id: VmId,
    /// Image URN Publisher:Offer:Sku:Version (version may be `latest`), e.g. vmnode:tiny:1:latest.
    #[arg(long)]
    pub image: String,
    /// VM size (see `vmnode vm list-sizes`).
    #[arg(long, default_value = "Standard_DS1_v2")]
    pub size: String,
    /// The guest's host name (default: the VM name).
    #[arg(long)]
    pub computer_name: Option<String>,
    #[arg(long, default_value = "azureuser")]
    pub admin_username: String,
    /// The admin user's password (12-123 characters, 3 of: lower, upper, digit, special).
    #[arg(long, env = "VMNODE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// An SSH public key for the admin user: a key, or a file holding one (repeatable).
    #[arg(long = "ssh-key-values", num_args = 1..)]
    pub ssh_key_values: Vec<String>,
    /// Where the keys go in the guest (default: /home/USER/.ssh/authorized_keys).
    #[arg(long = "ssh-dest-key-path")]
    pub ssh_dest_key_path: Option<String>,
    /// How the admin user logs in: `password`, `ssh` or `all` (default: ssh when keys are given
    /// and no password, else password).
    #[arg(long = "authentication-type")]
    pub authentication_type: Option<String>,
    /// A file whose content the guest gets as customData (/var/lib/waagent/CustomData).
    #[arg(long = "custom-data")]
    pub custom_data: Option<std::path::PathBuf>,
    /// OS disk caching: None, ReadOnly or ReadWrite.
    #[arg(long, default_value = "ReadWrite")]
    pub os_disk_caching: String,
    /// What deleting the VM does to its OS disk: Delete (default) or Detach (keep the blob).
    #[arg(long = "os-disk-delete-option", default_value = "Delete")]
    pub os_disk_delete_option: String,
    /// OS disk size in GB (grown sparse beyond the image's size).
    #[arg(long = "os-disk-size-gb")]
    pub os_disk_size_gb: Option<u64>,
    /// Return as soon as the request is accepted.
    #[arg(long)]
    pub no_wait: bool,
    /// Use these existing NICs (the first is primary); they stay when the VM is deleted.
    #[arg(long, num_args = 1..)]
    pub nics: Vec<String>,
    /// Put the VM's new NIC in this virtual network (with --subnet) instead of the default one.
    #[arg(long = "vnet-name")]
    pub vnet_name: Option<String>,
    #[arg(long)]
    pub subnet: Option<String>,
    /// A static private IP for the VM's new NIC (with --vnet-name/--subnet).
    #[arg(long = "private-ip-address")]
    pub private_ip: Option<String>,
    /// How long to wait for the guest's DHCP lease, in seconds (0: do not wait for it).
    #[arg(long, default_value_t = 180)]
    pub ip_timeout: u64,
}

#[derive(Subcommand)]
pub enum DiskCmd {
    /// Attach a new empty data disk (a page blob under the VM's lease).
    Attach {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
        #[arg(long = "vm-name")]
        vm: String,
        /// Disk name (default: {vm}-datadisk-{lun}).
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Create the disk (the only kind vmnode attaches); accepted for az compatibility.
        #[arg(long)]
        new: bool,
        #[arg(long = "size-gb", default_value_t = 1)]
        size_gb: u64,
        /// LUN (default: the lowest free one).
        #[arg(long)]
        lun: Option<u32>,
        #[arg(long, default_value = "None")]
        caching: String,
    },
    /// Detach a data disk (its blob stays in the store).
    Detach {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
        #[arg(long = "vm-name")]
        vm: String,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum VmImageCmd {
    /// One row per image version, with its URN.
    List {
        #[arg(long)]
        publisher: Option<String>,
        #[arg(long)]
        offer: Option<String>,
        #[arg(long)]
        sku: Option<String>,
        /// Accepted for az compatibility (the node lists everything it has).
        #[arg(long)]
        all: bool,
    },
}

/// `vmnode doctor [--fix]`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  vmnode doctor                  what is missing, and the command that fixes it\n  \
    vmnode doctor --fix            install what quickstart and serve need (as root)\n  \
    vmnode doctor --fix --for tests --dry-run   print the exact apt line for the test suite's needs\n\n\
QEMU's packages are pinned to the version qemu-system-x86 has or will have, so a newer qemu-utils \
already on the host (a backport) is brought to the same release instead of blocking the install."
)]
pub struct DoctorArgs {
    /// Install the missing Debian packages (apt-get update, then the exact apt line, printed first).
    #[arg(long)]
    pub fix: bool,
    /// What the packages are for; each includes the ones before it.
    #[arg(
        long = "for",
        value_enum,
        default_value = "quickstart",
        requires = "fix"
    )]
    pub purpose: crate::install::Purpose,
    /// With --fix: print the apt line and install nothing.
    #[arg(long, requires = "fix")]
    pub dry_run: bool,
    /// The user QEMU runs as, to check (as `serve --qemu-user`).
    #[arg(long, env = "VMNODE_QEMU_USER", default_value = crate::qemu::jail::DEFAULT_USER)]
    pub qemu_user: String,
}

pub fn doctor(a: DoctorArgs) -> anyhow::Result<()> {
    if a.fix {
        crate::install::fix(a.purpose, a.dry_run)?;
        if a.dry_run {
            return Ok(());
        }
    }
    let mut missing = Vec::new();
    for c in crate::doctor::checks(&a.qemu_user) {
        println!(
            "{:<12} {:<4} {}",
            c.name,
            if c.ok { "ok" } else { "FAIL" },
            c.detail
        );
        if !c.ok {
            if let Some(f) = c.fix.filter(|f| !missing.contains(f)) {
                missing.push(f);
            }
        }
    }
    if missing.is_empty() {
        println!("\nAll checks passed.");
        Ok(())
    } else {
        println!("\nTo fix:");
        for f in &missing {
            println!("  {f}");
        }
        bail!("{} check(s) failed", missing.len())
    }
}

pub async fn account(g: &Global, c: AccountCmd) -> anyhow::Result<()> {
    let paths = g.paths();
    let token = std::fs::read_to_string(paths.token()).map_err(|e| {
        anyhow!(
            "cannot read {}: {e}; has `vmnode serve` run with this --state-dir?",
            paths.token().display()
        )
    })?;
    let sub = std::fs::read_to_string(paths.state.join("subscription")).unwrap_or_default();
    match c {
        AccountCmd::GetAccessToken => {
            let v = json!({
                "accessToken": token.trim(),
                "expiresOn": "9999-12-31 23:59:59.000000",
                "subscription": sub.trim(),
                "tenant": sub.trim(),
                "tokenType": "Bearer",
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        AccountCmd::Show => {
            let v = json!({
                "id": sub.trim(),
                "name": "vmnode",
                "location": crate::config::LOCATION,
                "caPath": paths.ca_cert(),
                "socket": paths.socket(),
                "stateDir": paths.state,
            });
            print(
                g.output,
                &v,
                &[
                    ("Subscription", "id"),
                    ("Location", "location"),
                    ("CA", "caPath"),
                    ("Socket", "socket"),
                ],
            );
        }
    }
    Ok(())
}

pub async fn group(g: &Global, c: GroupCmd) -> anyhow::Result<()> {
    let cl = Client::new(g.url.as_deref(), g.paths())?;
    let cols = [
        ("Name", "name"),
        ("Location", "location"),
        ("Status", "/properties/provisioningState"),
    ];
    match c {
        GroupCmd::Create { name, location } => {
            let p = cl.rg_path(&name).await?;
            let r = cl
                .request(Method::PUT, &p, Some(&json!({ "location": location })))
                .await?
                .ok()?;
            print(g.output, &r.body, &cols);
        }
        GroupCmd::List => {
            let p = format!("/subscriptions/{}/resourceGroups", cl.subscription().await?);
            let r = cl.get(&p).await?.ok()?;
            print(g.output, &r.body["value"], &cols);
        }
        GroupCmd::Show { name } => {
            let r = cl.get(&cl.rg_path(&name).await?).await?.ok()?;
            print(g.output, &r.body, &cols);
        }
        GroupCmd::Delete { name, .. } => {
            cl.request(Method::DELETE, &cl.rg_path(&name).await?, None)
                .await?
                .ok()?;
            eprintln!("deleted resource group {name}");
        }
    }
    Ok(())
}

const VM_COLS: &[(&str, &str)] = &[
    ("Name", "name"),
    ("ResourceGroup", "resourceGroup"),
    ("PowerState", "powerState"),
    ("PrivateIps", "privateIps"),
    ("Provisioning", "/properties/provisioningState"),
    ("Image", "urn"),
];

/// Adds the flat fields `az vm show -d` has.
fn decorate(mut v: Value) -> Value {
    let id = v["id"].as_str().unwrap_or_default().to_string();
    let rg = id.split('/').nth(4).unwrap_or_default().to_string();
    v["resourceGroup"] = json!(rg);
    let r = &v["properties"]["storageProfile"]["imageReference"];
    let urn = format!(
        "{}:{}:{}:{}",
        r["publisher"].as_str().unwrap_or(""),
        r["offer"].as_str().unwrap_or(""),
        r["sku"].as_str().unwrap_or(""),
        r["exactVersion"].as_str().unwrap_or("")
    );
    v["urn"] = json!(urn);
    v
}

/// `osProfile` from az's flags: password (checked as az checks it), keys (inline or from
/// files), authentication type, customData (a file, sent base64).
fn os_profile(a: &CreateArgs) -> anyhow::Result<Value> {
    use base64::Engine as _;
    let mut p = json!({ "adminUsername": a.admin_username });
    if let Some(c) = &a.computer_name {
        p["computerName"] = json!(c);
    }
    if let Some(pw) = &a.admin_password {
        let n = pw.chars().count();
        let classes = [
            pw.chars().any(|c| c.is_lowercase()),
            pw.chars().any(|c| c.is_uppercase()),
            pw.chars().any(|c| c.is_ascii_digit()),
            pw.chars().any(|c| !c.is_alphanumeric()),
        ]
        .iter()
        .filter(|c| **c)
        .count();
        if !(12..=123).contains(&n) || classes < 3 {
            bail!("--admin-password must be 12-123 characters and have 3 of: a lower-case letter, an upper-case letter, a digit, a special character");
        }
        p["adminPassword"] = json!(pw);
    }
    let mut keys = vec![];
    for k in &a.ssh_key_values {
        let data = if std::path::Path::new(k).is_file() {
            std::fs::read_to_string(k)
                .with_context(|| format!("cannot read the SSH public key file {k}"))?
        } else if k.starts_with("ssh-") || k.starts_with("ecdsa-") || k.starts_with("sk-") {
            k.clone()
        } else {
            bail!("--ssh-key-values {k}: neither a file nor an OpenSSH public key ('ssh-ed25519 AAAA...')");
        };
        let mut key = json!({ "keyData": data.trim() });
        if let Some(path) = &a.ssh_dest_key_path {
            key["path"] = json!(path);
        }
        keys.push(key);
    }
    let mut linux = json!({ "provisionVMAgent": true });
    if !keys.is_empty() {
        linux["ssh"] = json!({ "publicKeys": keys });
    }
    match a.authentication_type.as_deref() {
        None => {}
        Some("ssh") => linux["disablePasswordAuthentication"] = json!(true),
        Some("password") | Some("all") => linux["disablePasswordAuthentication"] = json!(false),
        Some(o) => bail!("--authentication-type {o}: use password, ssh or all"),
    }
    p["linuxConfiguration"] = linux;
    if let Some(f) = &a.custom_data {
        let data = std::fs::read(f)
            .with_context(|| format!("cannot read the custom data file {}", f.display()))?;
        p["customData"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
    }
    Ok(p)
}

async fn create(g: &Global, cl: &Client, a: CreateArgs) -> anyhow::Result<()> {
    let image = crate::catalog::parse_image(&a.image)?;
    let path = cl.vm_path(&a.id.rg, &a.id.name).await?;
    let existing = cl.get(&path).await?;
    if existing.status.is_success() {
        bail!(
            "a VM named '{}' already exists in resource group '{}'; choose another name or delete it first (`vmnode vm delete -g {} -n {}`)",
            a.id.name, a.id.rg, a.id.rg, a.id.name
        );
    }
    let os_profile = os_profile(&a)?;
    // az's way: a NIC of its own in the named vnet/subnet, made first, deleted with the VM.
    let mut nic_refs = vec![];
    let sub = cl.subscription().await?;
    let nic_id = |n: &str| {
        format!("/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{n}", a.id.rg)
    };
    if let (Some(vnet), Some(subnet)) = (&a.vnet_name, &a.subnet) {
        let nic = format!("{}VMNic", a.id.name);
        let mut cfg = json!({ "subnet": { "id": format!("/subscriptions/{sub}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}", a.id.rg) }, "privateIPAllocationMethod": "Dynamic" });
        if let Some(ip) = &a.private_ip {
            cfg["privateIPAllocationMethod"] = json!("Static");
            cfg["privateIPAddress"] = json!(ip);
        }
        let body = json!({ "location": crate::config::LOCATION, "properties": { "ipConfigurations": [{ "name": "ipconfig1", "properties": cfg }] } });
        let p = format!(
            "{}/providers/Microsoft.Network/networkInterfaces/{nic}",
            cl.rg_path(&a.id.rg).await?
        );
        cl.request(Method::PUT, &p, Some(&body)).await?.ok()?;
        nic_refs.push(json!({ "id": nic_id(&nic), "properties": { "primary": true, "deleteOption": "Delete" } }));
    } else if a.vnet_name.is_some() || a.subnet.is_some() || a.private_ip.is_some() {
        bail!("--vnet-name and --subnet go together (and --private-ip-address needs both)");
    }
    for (i, n) in a.nics.iter().enumerate() {
        let id = if n.starts_with('/') {
            n.clone()
        } else {
            nic_id(n)
        };
        nic_refs.push(json!({ "id": id, "properties": { "primary": i == 0 && nic_refs.is_empty(), "deleteOption": "Detach" } }));
    }
    let body = json!({
        "location": crate::config::LOCATION,
        "properties": {
            "networkProfile": { "networkInterfaces": nic_refs },
            "hardwareProfile": { "vmSize": a.size },
            "storageProfile": {
                "imageReference": { "publisher": image.publisher, "offer": image.offer, "sku": image.sku, "version": image.version },
                "osDisk": { "createOption": "FromImage", "caching": a.os_disk_caching, "diskSizeGB": a.os_disk_size_gb, "deleteOption": a.os_disk_delete_option },
            },
            "osProfile": os_profile,
            "diagnosticsProfile": { "bootDiagnostics": { "enabled": true } },
        }
    });
    let start = Instant::now();
    let r = cl.request(Method::PUT, &path, Some(&body)).await?.ok()?;
    if a.no_wait {
        print(g.output, &decorate(r.body), VM_COLS);
        return Ok(());
    }
    eprintln!("creating VM {} ({})...", a.id.name, a.image);
    let vm = loop {
        let r = cl.get(&path).await?.ok()?;
        match r.body["properties"]["provisioningState"].as_str() {
            Some("Creating") | Some("Updating") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Some("Failed") => {
                let e = &r.body["properties"]["error"];
                bail!(
                    "VM {} failed to provision: {}: {}\nlook further: vmnode vm show -g {} -n {} ; delete it: vmnode vm delete -g {} -n {}",
                    a.id.name, e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""),
                    a.id.rg, a.id.name, a.id.rg, a.id.name
                )
            }
            _ => break r.body,
        }
    };
    eprintln!("  QEMU running after {:.2}s", start.elapsed().as_secs_f64());
    let mut vm = vm;
    if a.ip_timeout > 0 {
        eprint!("  waiting for the guest's DHCP lease");
        let deadline = Instant::now() + Duration::from_secs(a.ip_timeout);
        let mut last_dot = Instant::now();
        loop {
            let r = cl.get(&path).await?.ok()?;
            if r.body["privateIps"].as_str().is_some_and(|s| !s.is_empty()) {
                vm = r.body;
                eprintln!(
                    " {} after {:.2}s",
                    vm["privateIps"].as_str().unwrap_or(""),
                    start.elapsed().as_secs_f64()
                );
                break;
            }
            if Instant::now() > deadline {
                eprintln!();
                bail!(
                    "VM {} runs but its guest did not take a DHCP lease within {}s; see its boot log: vmnode vm boot-diagnostics get-boot-log -g {} -n {}",
                    a.id.name, a.ip_timeout, a.id.rg, a.id.name
                );
            }
            if last_dot.elapsed() > Duration::from_secs(2) {
                eprint!(".");
                last_dot = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    print(g.output, &decorate(vm), VM_COLS);
    Ok(())
}

pub async fn vm(g: &Global, c: VmCmd) -> anyhow::Result<()> {
    if let VmCmd::Image(VmImageCmd::List {
        publisher,
        offer,
        sku,
        ..
    }) = &c
    {
        let cl = Client::new(g.url.as_deref(), g.paths())?;
        let r = cl.get("/vmnode/v1/images").await?.ok()?;
        let m = |want: &Option<String>, have: &Value| {
            want.as_ref()
                .is_none_or(|w| have.as_str().is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        let rows: Vec<Value> = r.body["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| m(publisher, &i["publisher"]) && m(offer, &i["offer"]) && m(sku, &i["sku"]))
            .collect();
        print(
            g.output,
            &Value::Array(rows),
            &[
                ("Architecture", "architecture"),
                ("Offer", "offer"),
                ("Publisher", "publisher"),
                ("Sku", "sku"),
                ("Urn", "urn"),
                ("UrnAlias", "urnAlias"),
                ("Version", "version"),
            ],
        );
        return Ok(());
    }
    let cl = Client::new(g.url.as_deref(), g.paths())?;
    match c {
        VmCmd::Create(a) => create(g, &cl, *a).await?,
        VmCmd::List { rg } => {
            let p = match rg {
                Some(rg) => format!(
                    "{}/providers/Microsoft.Compute/virtualMachines",
                    cl.rg_path(&rg).await?
                ),
                None => format!(
                    "/subscriptions/{}/providers/Microsoft.Compute/virtualMachines",
                    cl.subscription().await?
                ),
            };
            let r = cl.get(&p).await?.ok()?;
            let rows: Vec<Value> = r.body["value"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(decorate)
                .collect();
            print(g.output, &Value::Array(rows), VM_COLS);
        }
        VmCmd::Show(id) => {
            let r = cl.get(&cl.vm_path(&id.rg, &id.name).await?).await?.ok()?;
            let fmt = if g.output == Format::Table {
                Format::Json
            } else {
                g.output
            };
            print(fmt, &decorate(r.body), VM_COLS);
        }
        VmCmd::GetInstanceView(id) => {
            let p = format!("{}/instanceView", cl.vm_path(&id.rg, &id.name).await?);
            let r = cl.get(&p).await?.ok()?;
            print(Format::Json, &r.body, &[]);
        }
        VmCmd::Delete { id, no_wait, .. } => {
            let p = cl.vm_path(&id.rg, &id.name).await?;
            let r = cl.get(&p).await?;
            if r.status == StatusCode::NOT_FOUND {
                bail!("{}", r.error_message());
            }
            let r = cl.request(Method::DELETE, &p, None).await?.ok()?;
            if !no_wait {
                eprint!("deleting VM {}", id.name);
                cl.wait_operation(&r, "delete").await?;
            }
        }
        VmCmd::Start(p) => power(&cl, p, "start", "").await?,
        VmCmd::Stop { p, skip_shutdown } => {
            let q = if skip_shutdown {
                "?skipShutdown=true"
            } else {
                ""
            };
            power(&cl, p, "powerOff", q).await?
        }
        VmCmd::Deallocate(p) => power(&cl, p, "deallocate", "").await?,
        VmCmd::Restart(p) => power(&cl, p, "restart", "").await?,
        VmCmd::Redeploy(p) => power(&cl, p, "redeploy", "").await?,
        VmCmd::ListSizes { location } => {
            let p = format!(
                "/subscriptions/{}/providers/Microsoft.Compute/locations/{location}/vmSizes",
                cl.subscription().await?
            );
            let r = cl.get(&p).await?.ok()?;
            print(
                g.output,
                &r.body["value"],
                &[
                    ("Name", "name"),
                    ("NumberOfCores", "numberOfCores"),
                    ("MemoryInMB", "memoryInMB"),
                    ("MaxDataDiskCount", "maxDataDiskCount"),
                    ("OsDiskSizeInMB", "osDiskSizeInMB"),
                    ("ResourceDiskSizeInMB", "resourceDiskSizeInMB"),
                ],
            );
        }
        VmCmd::BootDiagnostics(c) => super::bootdiag::run(&cl, g.output, c).await?,
        VmCmd::Image(_) => unreachable!("handled above"),
        VmCmd::Disk(d) => disk(g, &cl, d).await?,
        VmCmd::Extension(c) => super::extension::extension(g, &cl, c).await?,
        VmCmd::RunCommand(c) => super::extension::run_command(g, &cl, c).await?,
    }
    Ok(())
}

/// Read-modify-write of the VM's `dataDisks`, as az does.
async fn disk(g: &Global, cl: &Client, d: DiskCmd) -> anyhow::Result<()> {
    let (rg, vm) = match &d {
        DiskCmd::Attach { rg, vm, .. } | DiskCmd::Detach { rg, vm, .. } => (rg.clone(), vm.clone()),
    };
    let path = cl.vm_path(&rg, &vm).await?;
    let mut body = cl.get(&path).await?.ok()?.body;
    let mut disks: Vec<Value> = body["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match d {
        DiskCmd::Attach {
            name,
            size_gb,
            lun,
            caching,
            ..
        } => {
            let used: Vec<u64> = disks.iter().filter_map(|x| x["lun"].as_u64()).collect();
            let lun = lun
                .map(u64::from)
                .unwrap_or_else(|| (0..).find(|l| !used.contains(l)).unwrap_or(0));
            let mut disk = json!({ "lun": lun, "createOption": "Empty", "diskSizeGB": size_gb, "caching": caching });
            if let Some(n) = name {
                disk["name"] = json!(n);
            }
            disks.push(disk);
        }
        DiskCmd::Detach { name, .. } => {
            let before = disks.len();
            disks.retain(|x| {
                !x["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&name))
            });
            if disks.len() == before {
                bail!("VM {vm} has no data disk named '{name}'");
            }
        }
    }
    body["properties"]["storageProfile"]["dataDisks"] = Value::Array(disks);
    let r = cl.request(Method::PUT, &path, Some(&body)).await?.ok()?;
    print(
        g.output,
        &r.body["properties"]["storageProfile"]["dataDisks"],
        &[
            ("Lun", "lun"),
            ("Name", "name"),
            ("SizeGB", "diskSizeGB"),
            ("Caching", "caching"),
            ("Uri", "/vhd/uri"),
        ],
    );
    Ok(())
}

async fn power(cl: &Client, p: PowerArgs, action: &str, query: &str) -> anyhow::Result<()> {
    let path = format!(
        "{}/{action}{query}",
        cl.vm_path(&p.id.rg, &p.id.name).await?
    );
    let r = cl.request(Method::POST, &path, None).await?.ok()?;
    if p.no_wait {
        return Ok(());
    }
    eprint!("{action} {}", p.id.name);
    cl.wait_operation(&r, action).await
}
