//! Run Command (`POST .../virtualMachines/{vm}/runCommand`): a script run now through the guest
//! agent, its exit code, stdout and stderr returned in the operation's result. The cloud's Linux
//! command ids are `RunShellScript` (the script given) and `ifconfig`. Parameters are passed as
//! positional arguments (`$1`, `$2`, … in order) and, when the name is a shell identifier, as
//! environment variables too.

use std::time::Duration;

use serde_json::{json, Value};

use super::handler::{AgentError, Target, COMMAND_LIMIT, TAIL};
use super::status::{run_command_result, tail};
use crate::qemu::qga::QgaError;

/// A Run Command request the node cannot take (the API's 400).
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("RunShellScript needs a script (one or more lines)")]
    NoScript,
    #[error("The command id '{0}' is not available on this node's Linux guests; use RunShellScript or ifconfig")]
    UnknownCommand(String),
}

/// Why a Run Command did not run to its end (its operation's error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Guest(#[from] QgaError),
    #[error("mkdir -p {dir} in the guest: {stderr}")]
    Mkdir { dir: String, stderr: String },
}

/// The command ids this node offers, as `GET .../locations/{loc}/runCommands` lists them.
pub fn documents() -> Vec<Value> {
    vec![
        json!({
            "$schema": "http://schema.management.azure.com/schemas/2016-11-17/runcommands.json",
            "id": "RunShellScript",
            "osType": "Linux",
            "label": "Run Linux Shell script",
            "description": "Custom multiline shell script",
            "script": [],
            "parameters": [],
        }),
        json!({
            "$schema": "http://schema.management.azure.com/schemas/2016-11-17/runcommands.json",
            "id": "ifconfig",
            "osType": "Linux",
            "label": "List network configuration",
            "description": "Get the configuration of all network interfaces.",
            "script": [IFCONFIG],
            "parameters": [],
        }),
    ]
}

/// `ifconfig` where the image has it (busybox does), `ip addr` where it does not (debian-12).
const IFCONFIG: &str = "if command -v ifconfig >/dev/null 2>&1; then ifconfig; else ip addr; fi";

pub struct Request {
    pub command_id: String,
    pub script: Vec<String>,
    pub parameters: Vec<(String, String)>,
}

/// The script to run for a request; an unknown command id is refused with the known ones.
pub fn script_for(req: &Request) -> Result<String, ScriptError> {
    if req.command_id.eq_ignore_ascii_case("RunShellScript") {
        if req.script.is_empty() {
            return Err(ScriptError::NoScript);
        }
        Ok(req.script.join("\n") + "\n")
    } else if req.command_id.eq_ignore_ascii_case("ifconfig") {
        Ok(format!("{IFCONFIG}\n"))
    } else {
        Err(ScriptError::UnknownCommand(req.command_id.clone()))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Runs the request in the guest; `run_id` names its folder. Returns the result document.
pub async fn run(t: &Target, req: &Request, script: &str, run_id: &str) -> Result<Value, RunError> {
    let start = crate::report::time_now();
    let mut q = t.agent().await?;
    let dir = format!("/var/lib/waagent/run-command/download/{run_id}");
    let ten = Duration::from_secs(10);
    let mk = q.exec("/bin/mkdir", &["-p", &dir], &[], None, ten).await?;
    if mk.exit_code != Some(0) {
        return Err(RunError::Mkdir {
            stderr: String::from_utf8_lossy(&mk.stderr).trim().to_string(),
            dir,
        });
    }
    let path = format!("{dir}/script.sh");
    q.write_file(&path, script.as_bytes(), 0o700).await?;
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "HOME=/root".to_string(),
    ];
    env.extend(
        req.parameters
            .iter()
            .filter(|(n, _)| is_identifier(n))
            .map(|(n, v)| format!("{n}={v}")),
    );
    // A script with its own `#!` runs as itself; others with /bin/sh.
    let mut args: Vec<&str> = vec!["-c", "cd \"$(dirname \"$0\")\" || exit 1; case \"$(head -c 2 \"$0\")\" in '#!') exec \"$0\" \"$@\";; *) exec /bin/sh \"$0\" \"$@\";; esac", &path];
    args.extend(req.parameters.iter().map(|(_, v)| v.as_str()));
    let out = q.exec("/bin/sh", &args, &env, None, COMMAND_LIMIT).await?;
    Ok(run_command_result(
        out.exit_code,
        &tail(&out.stdout, TAIL),
        &tail(&out.stderr, TAIL),
        &start,
        &crate::report::time_now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_ids() {
        let r = Request {
            command_id: "RunShellScript".into(),
            script: vec!["echo a".into(), "echo b".into()],
            parameters: vec![],
        };
        assert_eq!(script_for(&r).unwrap(), "echo a\necho b\n");
        let r = Request {
            command_id: "RunPowerShellScript".into(),
            script: vec!["x".into()],
            parameters: vec![],
        };
        assert!(script_for(&r)
            .unwrap_err()
            .to_string()
            .contains("RunShellScript"));
        assert!(is_identifier("arg_1") && !is_identifier("1a") && !is_identifier("a-b"));
    }
}
