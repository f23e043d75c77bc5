//! `vmnode quickstart`: the README's main job on a fresh Debian host.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hyper::Method;
use serde_json::json;

use super::client::Client;
use super::commands::CreateArgs;
use super::Global;
use super::VmId;

#[derive(Args)]
pub struct QuickstartArgs {
    /// Resource group to create the VM in.
    #[arg(short = 'g', long = "resource-group", default_value = "quickstart")]
    pub rg: String,
    /// VM name.
    #[arg(short = 'n', long, default_value = "vm1")]
    pub name: String,
    /// Do not install missing Debian packages (just say what is missing).
    #[arg(long)]
    pub no_install: bool,
    /// Network namespace for the daemon quickstart starts (when none runs).
    #[arg(long, default_value = crate::config::DEFAULT_NETNS)]
    pub netns: String,
    /// Management API address for the daemon quickstart starts.
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
    pub listen: String,
    /// Blob service address for the daemon quickstart starts.
    #[arg(long, default_value = crate::config::DEFAULT_BLOB_LISTEN)]
    pub blob_listen: String,
    /// Host end of the veth into the default vnet: host, off, or a namespace name.
    #[arg(long, default_value = "host")]
    pub host_netns: String,
    /// Give guests outbound connectivity through this interface of the host (`serve --nat-via`).
    #[arg(long, value_name = "IFACE")]
    pub nat_via: Option<String>,
    /// Where packages and image builds are cached.
    #[arg(long, env = "VMNODE_CACHE_DIR", default_value = crate::config::DEFAULT_CACHE_DIR)]
    pub cache_dir: std::path::PathBuf,
}

fn say(s: &str) {
    eprintln!("==> {s}");
}

/// The installer `vmnode doctor --fix` runs (src/install): the same path CI takes.
fn install_missing(no_install: bool) -> anyhow::Result<()> {
    let p = crate::install::fix(crate::install::Purpose::Quickstart, no_install)?;
    if no_install && !p.is_empty() {
        bail!(
            "missing packages: {}; install them with: vmnode doctor --fix (runs: {})",
            p.packages().join(" "),
            p.command_line()
        );
    }
    Ok(())
}

async fn daemon_up(g: &Global) -> bool {
    match Client::new(g.url.as_deref(), g.paths()) {
        Ok(c) => c
            .get("/vmnode/v1/node")
            .await
            .map(|r| r.status.is_success())
            .unwrap_or(false),
        Err(_) => false,
    }
}

async fn start_daemon(g: &Global, a: &QuickstartArgs) -> anyhow::Result<()> {
    if daemon_up(g).await {
        say("daemon: already running");
        return Ok(());
    }
    let paths = g.paths();
    std::fs::create_dir_all(&paths.state)?;
    let log = paths.state.join("vmnode.log");
    let exe = std::env::current_exe()?;
    say(&format!(
        "starting the daemon: {} serve (log: {})",
        exe.display(),
        log.display()
    ));
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--state-dir")
        .arg(&paths.state)
        .arg("--run-dir")
        .arg(&paths.run)
        .args([
            "--netns",
            &a.netns,
            "--listen",
            &a.listen,
            "--blob-listen",
            &a.blob_listen,
            "--host-netns",
            &a.host_netns,
        ])
        .args(a.nat_via.iter().flat_map(|i| ["--nat-via", i.as_str()]))
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    // SAFETY: setsid is async-signal-safe; the daemon outlives this command in its own session.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting vmnode serve")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if daemon_up(g).await {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("the daemon exited ({st}); see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the daemon did not come up within 20s; see {}",
        log.display()
    )
}

pub async fn run(g: &Global, a: QuickstartArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    install_missing(a.no_install)?;
    say("building the tiny image (cached after the first time)");
    let images = g.paths().images();
    let cache = a.cache_dir.clone();
    let v = tokio::task::spawn_blocking(move || {
        crate::catalog::build::build_and_publish("tiny", &cache, &images, false, &mut |l| {
            eprintln!("    {l}")
        })
    })
    .await??;
    say(&format!("image {} ready", v.urn()));
    start_daemon(g, &a).await?;
    let cl = Client::new(g.url.as_deref(), g.paths())?;
    let rgp = cl.rg_path(&a.rg).await?;
    cl.request(
        Method::PUT,
        &rgp,
        Some(&json!({ "location": crate::config::LOCATION })),
    )
    .await?
    .ok()?;
    let vmp = cl.vm_path(&a.rg, &a.name).await?;
    if cl.get(&vmp).await?.status.is_success() {
        say(&format!(
            "VM {} already exists in {}: showing it",
            a.name, a.rg
        ));
    } else {
        say(&format!(
            "creating VM {} in resource group {}",
            a.name, a.rg
        ));
        super::commands::vm(
            &Global {
                output: super::output::Format::Table,
                ..g.clone()
            },
            super::commands::VmCmd::Create(Box::new(CreateArgs {
                id: VmId {
                    rg: a.rg.clone(),
                    name: a.name.clone(),
                },
                image: "vmnode:tiny:1:latest".into(),
                size: "Standard_DS1_v2".into(),
                computer_name: None,
                admin_username: "azureuser".into(),
                admin_password: None,
                ssh_key_values: vec![],
                ssh_dest_key_path: None,
                authentication_type: None,
                custom_data: None,
                os_disk_caching: "ReadWrite".into(),
                no_wait: false,
                os_disk_size_gb: None,
                os_disk_delete_option: "Delete".into(),
                ip_timeout: 180,
                nics: vec![],
                vnet_name: None,
                subnet: None,
                private_ip: None,
            })),
        )
        .await?;
    }
    let vm = cl.get(&vmp).await?.ok()?.body;
    let log = cl
        .get(&format!("{vmp}/bootDiagnostics/serialConsoleLog"))
        .await?
        .text;
    println!();
    println!(
        "VM {} is {} with private IP {}",
        a.name,
        vm["powerState"].as_str().unwrap_or("?"),
        vm["privateIps"].as_str().unwrap_or("?")
    );
    println!("Last lines of its boot log:");
    for l in log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .iter()
        .rev()
        .take(12)
        .rev()
    {
        println!("  | {l}");
    }
    println!();
    println!("Look further:  vmnode vm show -g {} -n {}", a.rg, a.name);
    println!(
        "               vmnode vm boot-diagnostics get-boot-log -g {} -n {}",
        a.rg, a.name
    );
    println!("               vmnode network dhcp leases");
    println!(
        "Delete it:     vmnode vm delete -g {} -n {} --yes",
        a.rg, a.name
    );
    println!("(quickstart took {:.1}s)", start.elapsed().as_secs_f64());
    Ok(())
}
