//! The handler: one run of a CustomScript configuration. Files are fetched on the node
//! (`download.rs`), written into the guest through its agent into the handler's download dir,
//! and the command runs there with `/bin/sh -c`; exit code, stdout and stderr tails and the
//! times are the result. Every step goes into the handler's log, a blob in the VM's diagnostics
//! container, in the style of the cloud's handler log. Neither the log nor the daemon's log ever
//! holds a protected command: it is named "protected" and not shown.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::download;
use super::model::{Handler, Outcome, RunResult};
use super::status::tail;
use crate::qemu::qga::{Qga, QgaError};
use crate::vm::model::PowerState;
use crate::vm::Node;

/// Stdout and stderr tails kept (the cloud's CustomScript keeps 4 KiB).
pub const TAIL: usize = 4096;
/// How long a command may run (the cloud's limit for CustomScript is 90 minutes).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(90 * 60);
/// How long to wait for a VM being created to run and its agent to answer.
const AGENT_WAIT: Duration = Duration::from_secs(600);
/// The environment commands run with (guest-exec would otherwise pass the agent's own).
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why no session with the VM's guest agent could be had for a run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("VM '{0}' was deleted")]
    Deleted(String),
    #[error("VM '{0}' was deleted and made again")]
    Remade(String),
    #[error("VM '{vm}' is not running ({power}); start it and set the extension again")]
    NotRunning { vm: String, power: &'static str },
    #[error("the VM has not started yet after {0} s")]
    NotStarted(u64),
    #[error("the guest agent does not answer after {after} s")]
    Silent {
        after: u64,
        #[source]
        source: QgaError,
    },
}

/// What to run.
pub enum Command {
    /// `commandToExecute`.
    Shell(String),
    /// `script` (base64 in the settings): saved as `script.sh` and run.
    Script(Vec<u8>),
}

pub struct Job {
    pub handler: Handler,
    pub seq: u32,
    pub file_uris: Vec<String>,
    pub command: Command,
    /// The command came from protectedSettings: never shown anywhere.
    pub protected: bool,
}

/// The VM a run is for.
#[derive(Clone)]
pub struct Target {
    pub node: Arc<Node>,
    pub rg: String,
    pub vm: String,
    pub vm_id: String,
}

impl Target {
    /// A session with the VM's guest agent (the manager's, shared with the VM's actor): waits
    /// while the VM is being created or started and its agent is not up yet; fails at once if
    /// the VM is stopped or gone.
    pub async fn agent(&self) -> Result<Qga, AgentError> {
        let deadline = tokio::time::Instant::now() + AGENT_WAIT;
        let mut last = None;
        loop {
            let Some(rec) = self.node.get(&self.rg, &self.vm) else {
                return Err(AgentError::Deleted(self.vm.clone()));
            };
            if rec.vm_id != self.vm_id {
                return Err(AgentError::Remade(self.vm.clone()));
            }
            match rec.power {
                PowerState::Running => {
                    let Some(agent) = self.node.agent(&self.vm_id) else {
                        return Err(AgentError::Deleted(self.vm.clone()));
                    };
                    match agent.connect(Duration::from_secs(10)).await {
                        Ok(q) => return Ok(q),
                        Err(e) => last = Some(e),
                    }
                }
                PowerState::Starting => {}
                p => {
                    return Err(AgentError::NotRunning {
                        vm: self.vm.clone(),
                        power: p.display(),
                    })
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let after = AGENT_WAIT.as_secs();
                return Err(match last {
                    Some(source) => AgentError::Silent { after, source },
                    None => AgentError::NotStarted(after),
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The handler's log: a block blob in the VM's diagnostics container, appended to line by line.
pub struct HandlerLog {
    path: Option<PathBuf>,
}

impl HandlerLog {
    /// `container` is the VM's diagnostics container dir, `blob` the log's blob name.
    pub fn open(container: Option<PathBuf>, blob: &str) -> HandlerLog {
        HandlerLog {
            path: container.map(|c| c.join(crate::blob::store::encode_name(blob))),
        }
    }

    pub fn line(&self, level: &str, msg: &str) {
        let Some(p) = &self.path else { return };
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:02}/{:02}/{:04} {:02}:{:02}:{:02}.{:02}",
            u8::from(now.month()),
            now.day(),
            now.year(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond() / 10
        );
        let line = format!(
            "[{}+00000001] [{stamp}] [{level}] {msg}\n",
            std::process::id()
        );
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = r {
            tracing::warn!(error = %e, log = %p.display(), "cannot write the extension handler log");
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `job` in the guest of `t`, logging to `log`.
pub async fn run(job: &Job, t: &Target, log: &HandlerLog) -> RunResult {
    let start = crate::report::time_now();
    let outcome = run_steps(job, t, log).await;
    match &outcome {
        Outcome::Exited { code, signal, .. } => {
            let c = code.map_or_else(
                || format!("none (signal {})", signal.unwrap_or(0)),
                |c| c.to_string(),
            );
            log.line(
                "INFO",
                &format!("Command execution finished. Command exited with code: {c}"),
            );
        }
        Outcome::DownloadFailed { .. } => log.line(
            "ERROR",
            "Failed to download all specified files. Exiting. The command was not run.",
        ),
        Outcome::AgentFailed { message } => log.line(
            "ERROR",
            &format!("The command was not run to its end: {message}"),
        ),
    }
    RunResult {
        seq: job.seq,
        start,
        end: crate::report::time_now(),
        outcome,
    }
}

async fn run_steps(job: &Job, t: &Target, log: &HandlerLog) -> Outcome {
    let dir = job.handler.download_dir(job.seq);
    log.line("INFO", "Enable Handler");
    log.line(
        "INFO",
        &format!("Loading configuration for sequence number {}", job.seq),
    );
    let shown: Vec<String> = job.file_uris.iter().map(|u| download::redact(u)).collect();
    let cmd_shown = match (&job.command, job.protected) {
        (_, true) => "(protected, not shown)".to_string(),
        (Command::Shell(c), false) => c.clone(),
        (Command::Script(_), false) => "script (base64, saved as script.sh)".to_string(),
    };
    log.line(
        "INFO",
        &format!(
            "HandlerSettings = FileUris: [{}], CommandToExecute: {cmd_shown}, ProtectedSettings: (not shown)",
            shown.join(", ")
        ),
    );
    // 1. Downloads, on the node (fast failure before the guest is involved).
    let files = match download_all(job, &dir, log).await {
        Ok(f) => f,
        Err(failed) => return failed,
    };
    log.line(
        "INFO",
        "Waiting for all async file download tasks to complete...",
    );
    // 2. Into the guest.
    let mut q = match t.agent().await {
        Ok(q) => q,
        Err(e) => {
            return Outcome::AgentFailed {
                message: crate::report::chain(&e),
            }
        }
    };
    let ten = Duration::from_secs(10);
    let agent_err = |what: &str, e: QgaError| Outcome::AgentFailed {
        message: format!("{what}: {}", crate::report::chain(&e)),
    };
    match q.exec("/bin/mkdir", &["-p", &dir], &[], None, ten).await {
        Ok(o) if o.exit_code == Some(0) => {}
        Ok(o) => {
            return Outcome::AgentFailed {
                message: format!(
                    "mkdir -p {dir} in the guest: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            }
        }
        Err(e) => return agent_err(&format!("mkdir -p {dir} in the guest"), e),
    }
    for (name, bytes) in &files {
        let path = format!("{dir}/{name}");
        // Read and execute for root only, as the cloud's handler saves them.
        if let Err(e) = q.write_file(&path, bytes, 0o500).await {
            return agent_err(&format!("writing {path} in the guest"), e);
        }
    }
    let command = match &job.command {
        Command::Shell(c) => c.clone(),
        Command::Script(s) => {
            let path = format!("{dir}/script.sh");
            if let Err(e) = q.write_file(&path, s, 0o700).await {
                return agent_err(&format!("writing {path} in the guest"), e);
            }
            shell_quote(&path)
        }
    };
    log.line(
        "INFO",
        &format!("Files downloaded. Asynchronously executing command: '{cmd_shown}'"),
    );
    log.line(
        "INFO",
        "Command execution task started. Awaiting completion...",
    );
    // 3. The command, in the download dir: `sh -c 'cd "$1" && exec sh -c "$0"' CMD DIR`.
    let out = q
        .exec(
            "/bin/sh",
            &[
                "-c",
                "cd \"$1\" || exit 1; exec /bin/sh -c \"$0\"",
                &command,
                &dir,
            ],
            &[PATH.to_string(), "HOME=/root".to_string()],
            None,
            COMMAND_LIMIT,
        )
        .await;
    match out {
        Ok(o) => Outcome::Exited {
            code: o.exit_code,
            signal: o.signal,
            stdout_tail: tail(&o.stdout, TAIL),
            stderr_tail: tail(&o.stderr, TAIL),
        },
        Err(e) => agent_err("running the command", e),
    }
}

/// Fetches the job's fileUris on the node, logging each; the files (name, bytes), or the
/// outcome of the first that failed.
async fn download_all(
    job: &Job,
    dir: &str,
    log: &HandlerLog,
) -> Result<Vec<(String, Vec<u8>)>, Outcome> {
    log.line("INFO", "Downloading files specified in configuration...");
    let mut files = Vec::new();
    for (i, url) in job.file_uris.iter().enumerate() {
        let redacted = download::redact(url);
        log.line("INFO", &format!("DownloadFiles: fileUri = {redacted}"));
        log.line("INFO", &format!("DownloadFiles: fileDownloadPath = {dir}"));
        match download::fetch(url).await {
            Ok(bytes) => {
                let name = download::file_name(url);
                log.line(
                    "INFO",
                    &format!(
                        "DownloadFiles: downloaded file {} of {} to fileDownloadLocation = {dir}/{name} ({} bytes)",
                        i + 1,
                        job.file_uris.len(),
                        bytes.len()
                    ),
                );
                files.push((name, bytes));
            }
            Err(e) => {
                let why = crate::report::chain(&e);
                log.line(
                    "ERROR",
                    &format!(
                        "DownloadFiles: file {} of {}: {redacted}: {why}",
                        i + 1,
                        job.file_uris.len()
                    ),
                );
                let path = download::url_path(url);
                // `/{account}/{container}/{blob}` → `container/blob`.
                let blob = path
                    .trim_start_matches('/')
                    .split_once('/')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or(path.clone());
                let blob = percent_encoding::percent_decode_str(&blob)
                    .decode_utf8_lossy()
                    .into_owned();
                let message = match &e {
                    download::DownloadError::Status { message, .. } => message.clone(),
                    _ => why,
                };
                return Err(Outcome::DownloadFailed {
                    url: redacted,
                    blob,
                    status: e.status(),
                    code: e.code(),
                    message,
                });
            }
        }
    }
    Ok(files)
}
