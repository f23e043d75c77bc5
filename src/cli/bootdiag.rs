//! `vmnode vm boot-diagnostics`: serial logs per boot (with `--follow`), SAS links to the
//! latest screenshot and log, screenshots now, and the flight recorder's boots and verdicts.

use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::client::Client;
use super::output::{self, Format};
use super::VmId;

#[derive(Subcommand)]
pub enum BootDiagCmd {
    /// Print a boot's serial console log (default: the current boot).
    ///
    /// Each boot (create, start, restart, redeploy, guest reboot) has its own log, bounded to
    /// its first and last MiB. `--follow` keeps printing as the guest writes, across reboots.
    GetBootLog {
        #[command(flatten)]
        id: VmId,
        /// Which boot (see `boots`); 1 is the first kept.
        #[arg(long, conflicts_with = "all")]
        boot: Option<u32>,
        /// Every kept boot's log, oldest first, each under a header line.
        #[arg(long)]
        all: bool,
        /// Keep printing new output until interrupted.
        #[arg(short, long, conflicts_with_all = ["all", "boot"])]
        follow: bool,
    },
    /// Print SAS links to the latest screenshot and serial log (as `retrieveBootDiagnosticsData`).
    ///
    /// The links work in a browser or with curl until they expire.
    GetBootLogUris {
        #[command(flatten)]
        id: VmId,
        /// Minutes the links stay valid (1-1440).
        #[arg(long, default_value_t = 120)]
        expire: u32,
    },
    /// Take a screenshot of the VM's display now and save it (PNG; --bmp for the cloud's BMP).
    Screenshot {
        #[command(flatten)]
        id: VmId,
        /// Where to save it (default: ./{vm}.png or .bmp).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        bmp: bool,
    },
    /// The boot flight recorder: each boot, where it got to, and the verdict with its evidence.
    Boots {
        #[command(flatten)]
        id: VmId,
        /// Also print every boot's whole timeline.
        #[arg(long)]
        timeline: bool,
    },
}

const PIECE: u64 = 1 << 20;

pub async fn run(cl: &Client, fmt: Format, cmd: BootDiagCmd) -> anyhow::Result<()> {
    match cmd {
        BootDiagCmd::GetBootLog {
            id,
            boot,
            all,
            follow,
        } => {
            let vm = cl.vm_path(&id.rg, &id.name).await?;
            if follow {
                return follow_log(cl, &vm).await;
            }
            if all {
                let boots = cl.get(&format!("{vm}/bootDiagnostics/boots")).await?.ok()?;
                for b in boots.body["value"].as_array().into_iter().flatten() {
                    let n = b["n"].as_u64().unwrap_or(0) as u32;
                    println!(
                        "===== boot {n} ({}) =====",
                        b["reason"].as_str().unwrap_or("")
                    );
                    print!("{}", whole_log(cl, &vm, Some(n)).await?);
                }
                return Ok(());
            }
            print!("{}", whole_log(cl, &vm, boot).await?);
        }
        BootDiagCmd::GetBootLogUris { id, expire } => {
            let vm = cl.vm_path(&id.rg, &id.name).await?;
            let r = cl
                .request(
                    hyper::Method::POST,
                    &format!(
                        "{vm}/retrieveBootDiagnosticsData?sasUriExpirationTimeInMinutes={expire}"
                    ),
                    None,
                )
                .await?
                .ok()?;
            output::print(
                fmt,
                &r.body,
                &[
                    ("ConsoleScreenshotBlobUri", "consoleScreenshotBlobUri"),
                    ("SerialConsoleLogBlobUri", "serialConsoleLogBlobUri"),
                ],
            );
        }
        BootDiagCmd::Screenshot { id, file, bmp } => {
            let q = if bmp { "?format=bmp" } else { "" };
            let p = format!(
                "{}/bootDiagnostics/screenshot{q}",
                cl.vm_path(&id.rg, &id.name).await?
            );
            let r = cl.get_bytes(&p).await?;
            let file = file.unwrap_or_else(|| {
                format!("{}.{}", id.name, if bmp { "bmp" } else { "png" }).into()
            });
            std::fs::write(&file, &r)?;
            println!("{} ({} bytes)", file.display(), r.len());
        }
        BootDiagCmd::Boots { id, timeline } => {
            let vm = cl.vm_path(&id.rg, &id.name).await?;
            let r = cl.get(&format!("{vm}/bootDiagnostics/boots")).await?.ok()?;
            if fmt == Format::Json {
                output::print(fmt, &r.body["value"], &[]);
                return Ok(());
            }
            for b in r.body["value"].as_array().into_iter().flatten() {
                print_boot(b, timeline);
            }
        }
    }
    Ok(())
}

/// The whole of one boot's kept log, read in pieces by cursor.
async fn whole_log(cl: &Client, vm: &str, boot: Option<u32>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut cursor = 0u64;
    let b = boot.map(|n| format!("&boot={n}")).unwrap_or_default();
    loop {
        let t = cl
            .get(&format!(
                "{vm}/bootDiagnostics/serialTail?cursor={cursor}&max={PIECE}{b}"
            ))
            .await?
            .ok()?;
        let text = t.body["text"].as_str().unwrap_or("");
        out.push_str(text);
        let next = t.body["cursor"].as_u64().unwrap_or(cursor);
        if text.is_empty() || next >= t.body["written"].as_u64().unwrap_or(0) {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Prints the current boot's log as it grows, and the next boot's when the guest reboots.
async fn follow_log(cl: &Client, vm: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut boot: Option<u64> = None;
    let mut cursor = 0u64;
    loop {
        let r = cl
            .get(&format!(
                "{vm}/bootDiagnostics/serialTail?cursor={cursor}&max={PIECE}"
            ))
            .await?;
        if r.status == hyper::StatusCode::NOT_FOUND {
            // Not booted yet, or the VM is gone (then the error says so).
            if r.body["error"]["code"] != "BootNotFound" {
                anyhow::bail!(r.error_message());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let t = r.ok()?.body;
        let n = t["boot"].as_u64();
        if boot.is_some() && n != boot {
            // A new boot: start it from its beginning.
            println!("\n===== boot {} =====", n.unwrap_or(0));
            boot = n;
            cursor = 0;
            continue;
        }
        boot = n;
        let text = t["text"].as_str().unwrap_or("");
        print!("{text}");
        std::io::stdout().flush()?;
        cursor = t["cursor"].as_u64().unwrap_or(cursor);
        if text.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn print_boot(b: &Value, timeline: bool) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let v = &b["verdict"];
    let ms = |k: &str| b[k].as_i64();
    let when = ms("startedMs")
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp_nanos(t as i128 * 1_000_000).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    println!(
        "boot {} ({}, {when}): {} at {} — {}",
        b["n"],
        s(&b["reason"]),
        s(&v["outcome"]),
        s(&v["stage"]),
        s(&v["summary"])
    );
    let log = &b["log"];
    println!(
        "  serial log: {} bytes written, {} cut; {} screenshot frame(s)",
        log["written"],
        log["cut"],
        b["frames"].as_array().map(Vec::len).unwrap_or(0)
    );
    for e in v["evidence"].as_array().into_iter().flatten() {
        println!("  evidence: {}", s(e));
    }
    if timeline {
        let start = ms("startedMs").unwrap_or(0);
        for e in b["events"].as_array().into_iter().flatten() {
            println!(
                "  +{:>7.1}s {:<7} {}",
                (e["atMs"].as_i64().unwrap_or(start) - start) as f64 / 1000.0,
                s(&e["source"]),
                s(&e["text"])
            );
        }
    }
}
