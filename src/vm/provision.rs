//! OS provisioning through the guest agent, as the cloud's Linux agent (waagent) does it from
//! `osProfile`: the host name (computerName), the admin user with passwordless sudo, its password
//! (a sha512-crypt hash, set crypted), its SSH public keys, sshd's password authentication, and
//! `customData` in `/var/lib/waagent/CustomData`.
//!
//! The VM's actor starts [`run`] the first time the agent answers after create (and never again
//! once it succeeded: the record remembers it). It runs off the actor's task, in one agent
//! session, and reports every step's outcome on a channel; the actor puts them on the boot
//! timeline and in the log. Nothing secret is ever reported: not the password (nor its hash), not
//! customData.
//!
//! The guest is asked first what it has (`useradd`, `sudo`, sshd's drop-in directory): what it
//! lacks is skipped and said so (the tiny image, busybox, only takes its host name and
//! customData). A step the guest has but that fails is fatal (`OSProvisioningClientError`); an
//! agent that stops answering midway is not: the actor tries again at its next answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::model::{SshKey, VmRecord};
use super::osprofile::default_key_path;
use crate::qemu::qga::{Agent, Qga, QgaError};

/// How long one step may run in the guest (useradd under TCG takes a second or two).
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// How long to wait for the agent session (another may be open: an extension, the probe).
const SESSION_WAIT: Duration = Duration::from_secs(60);
/// The environment of every command: a known PATH, whatever the agent's own is.
const ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL=C",
];
/// The drop-in that says whether sshd takes passwords (read before sshd_config's own lines).
pub const SSHD_DROP_IN: &str = "/etc/ssh/sshd_config.d/50-vmnode-provisioning.conf";
/// Where the cloud's agent puts customData (as given: base64).
pub const CUSTOM_DATA_PATH: &str = "/var/lib/waagent/CustomData";
/// The sudoers file the cloud's agent writes for the admin user.
pub const SUDOERS_PATH: &str = "/etc/sudoers.d/waagent";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("the guest agent did not answer during step '{step}'")]
    Agent {
        step: &'static str,
        #[source]
        source: QgaError,
    },
    #[error("step '{step}' failed in the guest: {detail}")]
    Step { step: &'static str, detail: String },
}

impl ProvisionError {
    /// The agent went away: worth another try at its next answer (not the guest's fault).
    pub fn retryable(&self) -> bool {
        matches!(self, ProvisionError::Agent { .. })
    }
}

/// What to provision, taken from the VM's record.
#[derive(Clone)]
pub struct Plan {
    pub computer_name: String,
    pub user: String,
    pub password_hash: Option<String>,
    pub keys: Vec<SshKey>,
    pub custom_data: Option<String>,
    pub disable_password_auth: bool,
}

impl Plan {
    pub fn of(r: &VmRecord) -> Plan {
        Plan {
            computer_name: r.computer_name.clone(),
            user: r.admin_username.clone(),
            password_hash: r.admin_password_hash.clone(),
            keys: r.ssh_public_keys.clone(),
            custom_data: r.custom_data.clone(),
            disable_password_auth: r.disable_password_auth,
        }
    }
}

/// What [`run`] reports to the actor.
pub enum Progress {
    /// One step's outcome, in words fit for the timeline (no secrets).
    Step(String),
    /// The end: a summary of what was done and skipped, or why it stopped.
    Done(Result<String, ProvisionError>),
}

/// What the guest has, asked once before the steps.
#[derive(Debug, Default, PartialEq, Eq)]
struct Caps {
    useradd: bool,
    sudoers: bool,
    sshd: bool,
}

impl Caps {
    fn parse(out: &str) -> Caps {
        let has = |w: &str| out.split_whitespace().any(|l| l == w);
        Caps {
            useradd: has("useradd") && has("usermod"),
            sudoers: has("sudoers.d"),
            sshd: has("sshd_config.d"),
        }
    }
}

const PROBE: &str = "for c in useradd usermod hostname; do command -v \"$c\" >/dev/null 2>&1 && echo \"$c\"; done; \
    [ -d /etc/sudoers.d ] && echo sudoers.d; [ -d /etc/ssh/sshd_config.d ] && echo sshd_config.d; true";

const HOSTNAME: &str = "printf '%s\\n' \"$1\" > /etc/hostname && hostname \"$1\" && \
    { grep -v '^127\\.0\\.1\\.1[[:space:]]' /etc/hosts 2>/dev/null; printf '127.0.1.1\\t%s\\n' \"$1\"; } > /etc/hosts.vmnode && \
    cat /etc/hosts.vmnode > /etc/hosts && rm -f /etc/hosts.vmnode && hostname";

const USER: &str = "set -e; if id -u \"$1\" >/dev/null 2>&1; then echo exists; else useradd -m -s /bin/bash \"$1\"; echo created; fi; \
    if getent group sudo >/dev/null; then usermod -aG sudo \"$1\"; fi";

const SUDOERS: &str =
    "set -e; umask 0337; printf '%s ALL=(ALL) NOPASSWD: ALL\\n' \"$1\" > \"$2.tmp\"; \
    if command -v visudo >/dev/null; then visudo -cqf \"$2.tmp\"; fi; mv \"$2.tmp\" \"$2\"";

const KEY_FILE: &str =
    "set -e; d=$(dirname \"$1\"); mkdir -p \"$d\"; cat >> \"$1\"; chmod 600 \"$1\"; \
    case \"$1\" in /home/\"$2\"/*) chown \"$2\": \"$d\" \"$1\"; chmod 700 \"$d\";; esac";

const SSHD: &str =
    "set -e; printf 'PasswordAuthentication %s\\n' \"$1\" > \"$2\"; chmod 644 \"$2\"; \
    if command -v systemctl >/dev/null; then systemctl try-reload-or-restart ssh.service; fi";

const CUSTOM_DATA: &str = "set -e; umask 077; mkdir -p \"$(dirname \"$1\")\"; cat > \"$1\"";

/// Runs `sh -c script sh args…` in the guest; its stdout, or the step's error.
async fn sh(
    q: &mut Qga,
    step: &'static str,
    script: &str,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<String, ProvisionError> {
    let mut argv = vec!["-c", script, "sh"];
    argv.extend_from_slice(args);
    let env: Vec<String> = ENV.iter().map(|s| s.to_string()).collect();
    let out = q
        .exec("/bin/sh", &argv, &env, input, STEP_LIMIT)
        .await
        .map_err(|source| match source {
            QgaError::Agent(detail) => ProvisionError::Step { step, detail },
            QgaError::ExecTimeout(t) => ProvisionError::Step {
                step,
                detail: format!("did not finish within {t:?}"),
            },
            source => ProvisionError::Agent { step, source },
        })?;
    if out.exit_code != Some(0) {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(ProvisionError::Step {
            step,
            detail: format!(
                "exit {} ({})",
                out.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| format!("signal {}", out.signal.unwrap_or(0))),
                err.trim().lines().last().unwrap_or("no output")
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs every step in one session of the VM's agent, reporting on `tx`.
pub async fn run(agent: Arc<Agent>, plan: Plan, tx: mpsc::UnboundedSender<Progress>) {
    let r = steps(&agent, &plan, &tx).await;
    let _ = tx.send(Progress::Done(r));
}

async fn steps(
    agent: &Agent,
    plan: &Plan,
    tx: &mpsc::UnboundedSender<Progress>,
) -> Result<String, ProvisionError> {
    let say = |s: String| {
        let _ = tx.send(Progress::Step(s));
    };
    let mut q = agent
        .connect(SESSION_WAIT)
        .await
        .map_err(|source| ProvisionError::Agent {
            step: "connect",
            source,
        })?;
    let caps = Caps::parse(&sh(&mut q, "probe", PROBE, &[], None).await?);
    let mut done: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();

    let name = plan.computer_name.as_str();
    let now = sh(&mut q, "hostname", HOSTNAME, &[name], None).await?;
    if now.trim() != name {
        return Err(ProvisionError::Step {
            step: "hostname",
            detail: format!("the guest's host name is '{}' after setting it", now.trim()),
        });
    }
    say(format!(
        "host name set to {name} (/etc/hostname, /etc/hosts)"
    ));
    done.push(format!("host name {name}"));

    let user = plan.user.as_str();
    if caps.useradd {
        let how = sh(&mut q, "admin user", USER, &[user], None).await?;
        let how = if how.contains("exists") {
            "already there"
        } else {
            "created"
        };
        say(format!("admin user {user} {how} (group sudo)"));
        if caps.sudoers {
            sh(&mut q, "sudoers", SUDOERS, &[user, SUDOERS_PATH], None).await?;
            say(format!(
                "{user} may use sudo without a password ({SUDOERS_PATH})"
            ));
        } else {
            skipped.push("sudo rights (no /etc/sudoers.d)".into());
        }
        done.push(format!("admin user {user}"));
        if let Some(hash) = &plan.password_hash {
            q.set_user_password(user, hash, true)
                .await
                .map_err(|e| match e {
                    QgaError::Agent(detail) => ProvisionError::Step {
                        step: "password",
                        detail,
                    },
                    source => ProvisionError::Agent {
                        step: "password",
                        source,
                    },
                })?;
            say(format!("password of {user} set (crypted)"));
            done.push("password".into());
        }
        let default = default_key_path(user);
        let (mine, other): (Vec<&SshKey>, Vec<&SshKey>) =
            plan.keys.iter().partition(|k| k.path == default);
        if !mine.is_empty() {
            let keys: Vec<String> = mine.iter().map(|k| k.key_data.clone()).collect();
            q.ssh_add_authorized_keys(user, &keys)
                .await
                .map_err(|e| match e {
                    QgaError::Agent(detail) => ProvisionError::Step {
                        step: "ssh keys",
                        detail,
                    },
                    source => ProvisionError::Agent {
                        step: "ssh keys",
                        source,
                    },
                })?;
            say(format!(
                "{} SSH public key(s) added to {default}",
                keys.len()
            ));
        }
        for k in other {
            let line = format!("{}\n", k.key_data);
            sh(
                &mut q,
                "ssh keys",
                KEY_FILE,
                &[&k.path, user],
                Some(line.as_bytes()),
            )
            .await?;
            say(format!("SSH public key added to {}", k.path));
        }
        if !plan.keys.is_empty() {
            done.push(format!("{} SSH key(s)", plan.keys.len()));
        }
    } else {
        skipped.push(format!(
            "admin user {user}, its password and SSH keys (the image has no useradd)"
        ));
    }

    if caps.sshd {
        let value = if plan.disable_password_auth {
            "no"
        } else {
            "yes"
        };
        sh(&mut q, "sshd", SSHD, &[value, SSHD_DROP_IN], None).await?;
        say(format!(
            "sshd: PasswordAuthentication {value} ({SSHD_DROP_IN}, reloaded)"
        ));
        done.push(format!("sshd PasswordAuthentication {value}"));
    } else {
        skipped.push("sshd settings (the image has no sshd)".into());
    }

    if let Some(cd) = &plan.custom_data {
        sh(
            &mut q,
            "customData",
            CUSTOM_DATA,
            &[CUSTOM_DATA_PATH],
            Some(cd.as_bytes()),
        )
        .await?;
        say(format!(
            "customData written to {CUSTOM_DATA_PATH} ({} bytes, base64 as given)",
            cd.len()
        ));
        done.push("customData".into());
    }

    let mut summary = format!("Provisioned by the guest agent: {}.", done.join(", "));
    if !skipped.is_empty() {
        summary.push_str(&format!(
            " Not done, the image cannot: {}.",
            skipped.join("; ")
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_the_probe() {
        let debian = "useradd\nusermod\nhostname\nsudoers.d\nsshd_config.d\n";
        assert_eq!(
            Caps::parse(debian),
            Caps {
                useradd: true,
                sudoers: true,
                sshd: true
            }
        );
        // busybox: a hostname applet, no useradd, no sshd.
        assert_eq!(Caps::parse("hostname\n"), Caps::default());
    }

    #[test]
    fn only_a_lost_agent_is_retried() {
        let lost = ProvisionError::Agent {
            step: "hostname",
            source: QgaError::Timeout(Duration::from_secs(1)),
        };
        assert!(lost.retryable());
        let rebooted = ProvisionError::Agent {
            step: "probe",
            source: QgaError::Restarted("Invalid parameter 'pid'".into()),
        };
        assert!(rebooted.retryable());
        let failed = ProvisionError::Step {
            step: "admin user",
            detail: "exit 1".into(),
        };
        assert!(!failed.retryable());
    }
}
