//! `vmnode vm extension set|list|show|delete` and `vmnode vm run-command invoke|list`, az-style.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use super::client::Client;
use super::output::{print, Format};
use super::Global;

#[derive(Args)]
pub struct ExtVm {
    /// Resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub rg: String,
    /// The VM.
    #[arg(long = "vm-name")]
    pub vm: String,
}

#[derive(Subcommand)]
pub enum ExtensionCmd {
    /// Create or update an extension and wait for its run (CustomScript first).
    ///
    /// A configuration runs once; `--force-update` runs the same one again (a new forceUpdateTag).
    Set(Box<SetArgs>),
    /// A VM's extensions.
    List {
        #[command(flatten)]
        vm: ExtVm,
    },
    /// One extension with its instance view (exit code, stdout, stderr, handler log link).
    Show {
        #[command(flatten)]
        vm: ExtVm,
        /// The extension's resource name.
        #[arg(short = 'n', long)]
        name: String,
    },
    /// Remove an extension from the VM.
    Delete {
        #[command(flatten)]
        vm: ExtVm,
        #[arg(short = 'n', long)]
        name: String,
    },
}

#[derive(Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub vm: ExtVm,
    /// The extension type: CustomScript (publisher Microsoft.Azure.Extensions) or
    /// CustomScriptExtension (publisher Microsoft.Compute).
    #[arg(short = 'n', long)]
    pub name: String,
    #[arg(long)]
    pub publisher: String,
    /// typeHandlerVersion (default 2.1 for CustomScript, 1.10 for CustomScriptExtension).
    #[arg(long)]
    pub version: Option<String>,
    /// The extension's resource name (default: the type name).
    #[arg(long = "extension-instance-name")]
    pub instance_name: Option<String>,
    /// Public settings: JSON, or @file.
    #[arg(long)]
    pub settings: Option<String>,
    /// Protected settings (stored sealed, never shown): JSON, or @file.
    #[arg(long = "protected-settings")]
    pub protected_settings: Option<String>,
    /// Run the configuration again even if nothing changed (a new forceUpdateTag).
    #[arg(long)]
    pub force_update: bool,
    /// Use this forceUpdateTag.
    #[arg(long = "force-update-tag", conflicts_with = "force_update")]
    pub force_update_tag: Option<String>,
    /// Return once the request is accepted.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Subcommand)]
pub enum RunCommandCmd {
    /// Run a script in the VM now; prints its exit code, stdout and stderr.
    Invoke {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
        /// The VM.
        #[arg(short = 'n', long)]
        name: String,
        /// RunShellScript or ifconfig (see `run-command list`).
        #[arg(long = "command-id")]
        command_id: String,
        /// The script's lines.
        #[arg(long, num_args = 1..)]
        scripts: Vec<String>,
        /// Parameters `[name=]value` (positional $1, $2, …; named ones also as environment).
        #[arg(long, num_args = 1..)]
        parameters: Vec<String>,
    },
    /// The command ids this node offers.
    List {
        #[arg(short = 'l', long, default_value = crate::config::LOCATION)]
        location: String,
    },
}

fn json_arg(what: &str, s: &str) -> anyhow::Result<Value> {
    let text = match s.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {what} from {path}"))?
        }
        None => s.to_string(),
    };
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{what} is not JSON"))?;
    if !v.is_object() {
        bail!("{what} must be a JSON object");
    }
    Ok(v)
}

const COLS: &[(&str, &str)] = &[
    ("Name", "name"),
    ("Publisher", "/properties/publisher"),
    ("Type", "/properties/type"),
    ("Version", "/properties/typeHandlerVersion"),
    ("ProvisioningState", "/properties/provisioningState"),
];

pub async fn extension(g: &Global, cl: &Client, c: ExtensionCmd) -> anyhow::Result<()> {
    match c {
        ExtensionCmd::Set(a) => set(g, cl, *a).await,
        ExtensionCmd::List { vm } => {
            let p = format!("{}/extensions", cl.vm_path(&vm.rg, &vm.vm).await?);
            let r = cl.get(&p).await?.ok()?;
            print(g.output, &r.body["value"], COLS);
            Ok(())
        }
        ExtensionCmd::Show { vm, name } => {
            let p = format!(
                "{}/extensions/{name}?$expand=instanceView",
                cl.vm_path(&vm.rg, &vm.vm).await?
            );
            let r = cl.get(&p).await?.ok()?;
            print(Format::Json, &r.body, &[]);
            Ok(())
        }
        ExtensionCmd::Delete { vm, name } => {
            let p = format!("{}/extensions/{name}", cl.vm_path(&vm.rg, &vm.vm).await?);
            let r = cl.request(Method::DELETE, &p, None).await?.ok()?;
            if r.status == hyper::StatusCode::NO_CONTENT {
                eprintln!("VM {} has no extension named {name}", vm.vm);
            } else {
                eprintln!("deleted extension {name}");
            }
            Ok(())
        }
    }
}

async fn set(g: &Global, cl: &Client, a: SetArgs) -> anyhow::Result<()> {
    let instance = a.instance_name.clone().unwrap_or_else(|| a.name.clone());
    let path = format!(
        "{}/extensions/{instance}",
        cl.vm_path(&a.vm.rg, &a.vm.vm).await?
    );
    let mut props = json!({
        "publisher": a.publisher,
        "type": a.name,
        "autoUpgradeMinorVersion": true,
    });
    if let Some(v) = &a.version {
        props["typeHandlerVersion"] = json!(v);
    }
    if let Some(s) = &a.settings {
        props["settings"] = json_arg("--settings", s)?;
    }
    if let Some(s) = &a.protected_settings {
        props["protectedSettings"] = json_arg("--protected-settings", s)?;
    }
    let tag = match (&a.force_update_tag, a.force_update) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => Some(uuid::Uuid::new_v4().to_string()),
        // Keep the stored tag, so an unchanged `set` does not run again.
        (None, false) => {
            let cur = cl.get(&path).await?;
            cur.status
                .is_success()
                .then(|| {
                    cur.body["properties"]["forceUpdateTag"]
                        .as_str()
                        .map(str::to_string)
                })
                .flatten()
        }
    };
    if let Some(t) = tag {
        props["forceUpdateTag"] = json!(t);
    }
    let body = json!({ "location": crate::config::LOCATION, "properties": props });
    let r = cl.request(Method::PUT, &path, Some(&body)).await?.ok()?;
    if a.no_wait || r.headers.get("azure-asyncoperation").is_none() {
        print(Format::Json, &r.body, &[]);
        if !a.no_wait && r.body["properties"]["provisioningState"] == "Failed" {
            bail!(
                "this configuration already ran and failed (it runs again only when it changes, or with --force-update): {}",
                r.body["properties"]["error"]["message"].as_str().unwrap_or("")
            );
        }
        return Ok(());
    }
    eprint!("running extension {instance} on {}", a.vm.vm);
    let view = format!("{path}?$expand=instanceView");
    let start = std::time::Instant::now();
    let mut dots = std::time::Instant::now();
    let done = loop {
        let r = cl.get(&view).await?.ok()?;
        match r.body["properties"]["provisioningState"].as_str() {
            Some("Creating") | Some("Updating") => {}
            _ => break r.body,
        }
        if dots.elapsed() > Duration::from_secs(2) {
            eprint!(".");
            dots = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(" {:.1}s", start.elapsed().as_secs_f64());
    let fmt = if g.output == Format::Table {
        Format::Json
    } else {
        g.output
    };
    print(fmt, &done, &[]);
    if done["properties"]["provisioningState"] == "Failed" {
        let e = &done["properties"]["error"];
        bail!(
            "{}: {}\nthe handler log: vmnode vm extension show -g {} --vm-name {} -n {instance} (instanceView.vmnodeHandlerLogUri)",
            e["code"].as_str().unwrap_or("Failed"),
            e["message"].as_str().unwrap_or(""),
            a.vm.rg,
            a.vm.vm
        );
    }
    Ok(())
}

pub async fn run_command(g: &Global, cl: &Client, c: RunCommandCmd) -> anyhow::Result<()> {
    match c {
        RunCommandCmd::List { location } => {
            let p = format!(
                "/subscriptions/{}/providers/Microsoft.Compute/locations/{location}/runCommands",
                cl.subscription().await?
            );
            let r = cl.get(&p).await?.ok()?;
            print(
                g.output,
                &r.body["value"],
                &[("Id", "id"), ("OsType", "osType"), ("Label", "label")],
            );
            Ok(())
        }
        RunCommandCmd::Invoke {
            rg,
            name,
            command_id,
            scripts,
            parameters,
        } => {
            let params: Vec<Value> = parameters
                .iter()
                .enumerate()
                .map(|(i, p)| match p.split_once('=') {
                    Some((n, v)) if !n.is_empty() && !n.contains(' ') => {
                        json!({ "name": n, "value": v })
                    }
                    _ => json!({ "name": format!("arg{}", i + 1), "value": p }),
                })
                .collect();
            let body = json!({ "commandId": command_id, "script": scripts, "parameters": params });
            let p = format!("{}/runCommand", cl.vm_path(&rg, &name).await?);
            let r = cl.request(Method::POST, &p, Some(&body)).await?.ok()?;
            let url = r
                .headers
                .get("azure-asyncoperation")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| anyhow!("the daemon did not say where to follow the command"))?;
            let path = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
            let path = &path[path.find('/').unwrap_or(0)..];
            let path = path.split('?').next().unwrap_or(path);
            let out = loop {
                let s = cl.get(path).await?.ok()?;
                match s.body["status"].as_str() {
                    Some("InProgress") => tokio::time::sleep(Duration::from_millis(250)).await,
                    Some("Succeeded") => break s.body["properties"]["output"].clone(),
                    _ => bail!(
                        "run command failed: {}",
                        s.body["error"]["message"]
                            .as_str()
                            .unwrap_or("unknown error")
                    ),
                }
            };
            if g.output != Format::Table {
                print(g.output, &out, &[]);
                return Ok(());
            }
            println!("ExitCode: {}", out["exitCode"]);
            println!("[stdout]\n{}", out["stdout"].as_str().unwrap_or(""));
            println!("[stderr]\n{}", out["stderr"].as_str().unwrap_or(""));
            Ok(())
        }
    }
}
