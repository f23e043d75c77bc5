//! `vmnode deployment ...`: ARM template deployments into a resource group, as
//! `az deployment group create|show|list|delete` and `az deployment operation group list`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use hyper::Method;
use serde_json::{json, Value};

use super::client::Client;
use super::network::Id;
use super::output::{print, Format};
use super::Global;

#[derive(Subcommand)]
pub enum DeploymentCmd {
    /// Deployments into a resource group.
    #[command(subcommand)]
    Group(GroupCmd),
    /// The steps (one per resource) of a deployment.
    #[command(subcommand)]
    Operation(OperationCmd),
}

#[derive(Subcommand)]
pub enum GroupCmd {
    /// Deploy an ARM template (JSON) into a group and follow it resource by resource.
    ///
    /// Resources are created through the node's own API in `dependsOn` order; template
    /// expressions (`[parameters('x')]`, `[concat(...)]`, `[resourceId(...)]`, `[format(...)]`,
    /// `[uniqueString(...)]`, …) are evaluated first, and a template that cannot be evaluated
    /// is refused before anything is made. Example:
    ///   vmnode deployment group create -g lab -n web --template-file web.json \
    ///       --parameters vmName=web1 adminPassword=@secret.txt
    Create {
        #[command(flatten)]
        id: Id,
        /// The template file (JSON; Bicep is not supported).
        #[arg(short = 'f', long = "template-file")]
        template: PathBuf,
        /// Parameters: KEY=VALUE (VALUE is JSON if it parses as JSON, else a string;
        /// KEY=@FILE reads the value from a file), or @FILE for a parameters file.
        #[arg(short = 'p', long, num_args = 1..)]
        parameters: Vec<String>,
        /// Return once the deployment is accepted instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    Show(Id),
    List {
        #[arg(short = 'g', long = "resource-group")]
        rg: String,
    },
    /// Forget a deployment's record (its resources stay, as in the cloud).
    Delete(Id),
}

#[derive(Subcommand)]
pub enum OperationCmd {
    /// The operations of a deployment into a group.
    #[command(subcommand)]
    Group(OpGroupCmd),
}

#[derive(Subcommand)]
pub enum OpGroupCmd {
    List(Id),
}

const COLS: &[(&str, &str)] = &[
    ("Name", "/name"),
    ("State", "/properties/provisioningState"),
    ("Timestamp", "/properties/timestamp"),
    ("Duration", "/properties/duration"),
];
const OP_COLS: &[(&str, &str)] = &[
    ("Resource", "/properties/targetResource/resourceName"),
    ("Type", "/properties/targetResource/resourceType"),
    ("State", "/properties/provisioningState"),
    ("Status", "/properties/statusCode"),
    ("Duration", "/properties/duration"),
];

/// `KEY=VALUE`, `KEY=@FILE` and `@FILE` into the `{"name": {"value": …}}` ARM expects. A
/// VALUE is read by the type the template declares for KEY, as az does: string parameters take
/// it as written, int/bool/array/object ones parse it as JSON.
pub fn parse_parameters(args: &[String], template: &Value) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for a in args {
        if let Some(file) = a.strip_prefix('@') {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the parameters file {file}"))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("the parameters file {file} is not JSON"))?;
            // A deploymentParameters.json document, or the bare parameters object.
            let params = v.get("parameters").cloned().unwrap_or(v);
            let Some(obj) = params.as_object() else {
                bail!("the parameters file {file} must hold an object of {{\"name\": {{\"value\": …}}}}");
            };
            for (k, v) in obj {
                out.insert(k.clone(), v.clone());
            }
            continue;
        }
        let Some((k, v)) = a.split_once('=') else {
            bail!("'{a}' is not a parameter: write KEY=VALUE, KEY=@FILE or @FILE");
        };
        if k.is_empty() {
            bail!("'{a}' has no parameter name before '='");
        }
        let value = match v.strip_prefix('@') {
            Some(file) => Value::String(
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {file} for the parameter {k}"))?
                    .trim_end_matches('\n')
                    .to_string(),
            ),
            None => {
                let declared = template["parameters"].as_object().and_then(|ps| {
                    ps.iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, d)| d["type"].as_str().unwrap_or("").to_ascii_lowercase())
                });
                match declared.as_deref() {
                    Some("string") | Some("securestring") => Value::String(v.to_string()),
                    _ => serde_json::from_str(v)
                        .ok()
                        .filter(|j: &Value| !j.is_string())
                        .unwrap_or_else(|| Value::String(v.to_string())),
                }
            }
        };
        out.insert(k.to_string(), json!({ "value": value }));
    }
    Ok(Value::Object(out))
}

async fn dep_path(cl: &Client, rg: &str, name: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{}/providers/Microsoft.Resources/deployments/{name}",
        cl.rg_path(rg).await?
    ))
}

/// Prints each resource as it settles, until the deployment ends.
async fn follow(cl: &Client, path: &str) -> anyhow::Result<Value> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let started = std::time::Instant::now();
    loop {
        let d = cl.get(path).await?.ok()?.body;
        let ops = cl.get(&format!("{path}/operations")).await?.ok()?.body;
        for o in ops["value"].as_array().cloned().unwrap_or_default() {
            let p = &o["properties"];
            let id = o["operationId"].as_str().unwrap_or_default().to_string();
            let st = p["provisioningState"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if seen.get(&id) != Some(&st) {
                eprintln!(
                    "  {:<10} {} {} ({})",
                    st,
                    p["targetResource"]["resourceType"]
                        .as_str()
                        .unwrap_or_default(),
                    p["targetResource"]["resourceName"]
                        .as_str()
                        .unwrap_or_default(),
                    p["duration"].as_str().unwrap_or_default()
                );
                seen.insert(id, st);
            }
        }
        let state = d["properties"]["provisioningState"].as_str().unwrap_or("");
        if matches!(state, "Succeeded" | "Failed" | "Canceled") {
            eprintln!(
                "deployment {state} after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(d);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The innermost messages of a nested ARM error, one line each (the Conflict detail's message
/// is itself JSON).
pub fn error_lines(e: &Value, depth: usize, out: &mut Vec<String>) {
    let code = e["code"].as_str().unwrap_or("Error");
    let msg = e["message"].as_str().unwrap_or("");
    let indent = "  ".repeat(depth);
    match serde_json::from_str::<Value>(msg) {
        Ok(inner) if inner.get("error").is_some() => {
            out.push(format!("{indent}{code}:"));
            error_lines(&inner["error"], depth + 1, out);
        }
        _ => out.push(format!("{indent}{code}: {msg}")),
    }
    for d in e["details"].as_array().into_iter().flatten() {
        error_lines(d, depth + 1, out);
    }
}

pub async fn run(g: &Global, c: DeploymentCmd) -> anyhow::Result<()> {
    let cl = Client::new(g.url.as_deref(), g.paths())?;
    match c {
        DeploymentCmd::Group(GroupCmd::Create {
            id,
            template,
            parameters,
            no_wait,
        }) => {
            let text = std::fs::read_to_string(&template)
                .with_context(|| format!("cannot read the template {}", template.display()))?;
            let tpl: Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a JSON ARM template (Bicep files must be built to JSON first)",
                    template.display()
                )
            })?;
            let body = json!({ "properties": {
                "mode": "Incremental",
                "template": tpl,
                "parameters": parse_parameters(&parameters, &tpl)?,
            }});
            let path = dep_path(&cl, &id.rg, &id.name).await?;
            let r = cl.request(Method::PUT, &path, Some(&body)).await?.ok()?;
            if no_wait {
                print(g.output, &r.body, COLS);
                return Ok(());
            }
            eprintln!("deploying {} into {}:", id.name, id.rg);
            let d = follow(&cl, &path).await?;
            if let Some(e) = d["properties"].get("error") {
                let mut lines = Vec::new();
                error_lines(e, 0, &mut lines);
                bail!(
                    "the deployment failed:\n{}\n(see `vmnode deployment operation group list -g {} -n {}`)",
                    lines.join("\n"),
                    id.rg,
                    id.name
                );
            }
            print(g.output, &d, COLS);
        }
        DeploymentCmd::Group(GroupCmd::Show(id)) => {
            let r = cl
                .get(&dep_path(&cl, &id.rg, &id.name).await?)
                .await?
                .ok()?;
            print(g.output, &r.body, COLS);
        }
        DeploymentCmd::Group(GroupCmd::List { rg }) => {
            let p = format!(
                "{}/providers/Microsoft.Resources/deployments",
                cl.rg_path(&rg).await?
            );
            let r = cl.get(&p).await?.ok()?;
            print(g.output, &r.body["value"], COLS);
        }
        DeploymentCmd::Group(GroupCmd::Delete(id)) => {
            let p = dep_path(&cl, &id.rg, &id.name).await?;
            cl.request(Method::DELETE, &p, None).await?.ok()?;
        }
        DeploymentCmd::Operation(OperationCmd::Group(OpGroupCmd::List(id))) => {
            let p = format!("{}/operations", dep_path(&cl, &id.rg, &id.name).await?);
            let r = cl.get(&p).await?.ok()?;
            if g.output == Format::Table {
                print(g.output, &r.body["value"], OP_COLS);
                for o in r.body["value"].as_array().into_iter().flatten() {
                    if let Some(e) = o["properties"]["statusMessage"].get("error") {
                        let mut lines = Vec::new();
                        error_lines(e, 1, &mut lines);
                        println!(
                            "{}:\n{}",
                            o["properties"]["targetResource"]["resourceName"]
                                .as_str()
                                .unwrap_or_default(),
                            lines.join("\n")
                        );
                    }
                }
            } else {
                print(g.output, &r.body["value"], OP_COLS);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_parse_like_az() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, r#"{"$schema": "x", "parameters": {"a": {"value": 1}}}"#).unwrap();
        let s = dir.path().join("secret");
        std::fs::write(&s, "hunter2\n").unwrap();
        let tpl = json!({"parameters": {"tag": {"type": "string"}, "N": {"type": "int"}}});
        let v = parse_parameters(
            &[
                format!("@{}", f.display()),
                "n=3".into(),
                "s=web".into(),
                "b=true".into(),
                format!("pw=@{}", s.display()),
                "o={\"k\":1}".into(),
                "tag=1".into(),
            ],
            &tpl,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": {"value": 1}, "n": {"value": 3}, "s": {"value": "web"}, "b": {"value": true},
                   "pw": {"value": "hunter2"}, "o": {"value": {"k": 1}}, "tag": {"value": "1"}})
        );
        assert!(parse_parameters(&["novalue".into()], &tpl).is_err());
        assert!(parse_parameters(&["=x".into()], &tpl).is_err());
    }

    #[test]
    fn nested_errors_unfold() {
        let inner = json!({"status": "Failed", "error": {"code": "ResourceDeploymentFailure", "message": "terminal", "details": [{"code": "VMExtensionProvisioningError", "message": "exit 1"}]}});
        let e = json!({"code": "DeploymentFailed", "message": "one failed", "details": [{"code": "Conflict", "message": inner.to_string()}]});
        let mut lines = Vec::new();
        error_lines(&e, 0, &mut lines);
        assert_eq!(
            lines,
            [
                "DeploymentFailed: one failed",
                "  Conflict:",
                "    ResourceDeploymentFailure: terminal",
                "      VMExtensionProvisioningError: exit 1"
            ]
        );
    }
}
