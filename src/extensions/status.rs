//! What a run means to the API (pure): the extension's instance view (statuses and the
//! StdOut/StdErr substatuses the cloud shows for CustomScript), the cloud's
//! `VMExtensionProvisioningError` text, and Run Command's result.

use serde_json::{json, Value};

use super::model::{ErrorBody, ExtensionRecord, Handler, Outcome, ProvisioningState, RunResult};

/// The cloud's instance view type names.
fn view_type(h: Handler) -> &'static str {
    match h {
        Handler::LinuxCustomScript => "Microsoft.Azure.Extensions.CustomScript",
        Handler::WindowsCustomScript => "Microsoft.Compute.CustomScriptExtension",
    }
}

fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The handler's own message for a run (what the cloud puts after "Error message:").
pub fn handler_message(run: &RunResult) -> String {
    match &run.outcome {
        Outcome::Exited { code: Some(0), .. } => "Command execution finished".into(),
        Outcome::Exited {
            code, stderr_tail, ..
        } => {
            let how = match code {
                Some(c) => format!("it returned a non-zero exit code of: '{c}'"),
                None => "it was ended by a signal".to_string(),
            };
            format!(
                "Command execution finished, but failed because {how}. The command had an error output of: '{}' For more information, check the instance view by executing Get-AzVmssVm or Get-AzVm (https://aka.ms/GetAzVm). These commands can be executed using CloudShell (https://aka.ms/CloudShell)",
                stderr_tail.trim_end()
            )
        }
        Outcome::DownloadFailed {
            url,
            blob,
            status,
            code,
            message,
        } => {
            let server = match status {
                Some(s) => format!(
                    "The remote server returned an error: ({s}) {}. ",
                    reason(*s)
                ),
                None => String::new(),
            };
            let detail = if message.is_empty() {
                code.clone()
            } else {
                format!("{code}: {}", message.trim_end_matches('.'))
            };
            format!(
                "Failed to download all specified files. Exiting. Error Message: {server}Downloading '{blob}' from {url} failed: {detail}. The command was not run."
            )
        }
        Outcome::AgentFailed { message } => {
            format!("The command could not be run through the guest agent: {message}")
        }
    }
}

/// `VMExtensionProvisioningError` for a failed run, in the cloud's words; none for a success.
pub fn error_for(r: &ExtensionRecord, run: &RunResult) -> Option<ErrorBody> {
    if run.succeeded() {
        return None;
    }
    Some(ErrorBody {
        code: "VMExtensionProvisioningError".into(),
        message: format!(
            "VM has reported a failure when processing extension '{}' (publisher '{}' and type '{}'). Error message: '{}'. More information on troubleshooting is available at {}.",
            r.name,
            r.publisher,
            r.ext_type,
            handler_message(run),
            r.handler.troubleshoot_link()
        ),
        details: vec![],
    })
}

fn status(code: String, ok: bool, message: &str, time: Option<&str>) -> Value {
    let mut v = json!({
        "code": code,
        "level": if ok { "Info" } else { "Error" },
        "displayStatus": if ok { "Provisioning succeeded" } else { "Provisioning failed" },
        "message": message,
    });
    if let Some(t) = time {
        v["time"] = json!(t);
    }
    v
}

/// The StdOut and StdErr substatuses (the streams' tails, last 4 KiB each).
fn stream_substatuses(stdout: &str, stderr: &str) -> Vec<Value> {
    vec![
        status(
            "ComponentStatus/StdOut/succeeded".into(),
            true,
            stdout,
            None,
        ),
        status(
            "ComponentStatus/StdErr/succeeded".into(),
            true,
            stderr,
            None,
        ),
    ]
}

/// The extension's instance view; `log_uri` links the handler's log (vmnode's addition, as are
/// the `vmnode*` fields: exit code, start and end of the last run).
pub fn instance_view(r: &ExtensionRecord, log_uri: Option<String>) -> Value {
    let mut v = json!({
        "name": r.name,
        "type": view_type(r.handler),
        "typeHandlerVersion": r.type_handler_version,
    });
    let in_progress = matches!(
        r.provisioning_state,
        ProvisioningState::Creating | ProvisioningState::Updating
    );
    let run = r.last_run.as_ref().filter(|run| run.seq == r.seq);
    match (in_progress, run) {
        (true, _) | (false, None) => {
            v["statuses"] = json!([{
                "code": "ProvisioningState/transitioning",
                "level": "Info",
                "displayStatus": "Transitioning",
                "message": "Enable in progress",
            }]);
        }
        (false, Some(run)) => {
            let ok = run.succeeded();
            let code = match (&run.outcome, ok) {
                (_, true) => "ProvisioningState/succeeded".to_string(),
                (Outcome::Exited { code: Some(c), .. }, false) => {
                    format!("ProvisioningState/failed/{c}")
                }
                _ => "ProvisioningState/failed".to_string(),
            };
            v["statuses"] = json!([status(code, ok, &handler_message(run), Some(&run.end))]);
            if let Outcome::Exited {
                code,
                signal,
                stdout_tail,
                stderr_tail,
            } = &run.outcome
            {
                v["substatuses"] = json!(stream_substatuses(stdout_tail, stderr_tail));
                v["vmnodeExitCode"] = json!(code);
                if let Some(s) = signal {
                    v["vmnodeSignal"] = json!(s);
                }
            }
            v["vmnodeStartTime"] = json!(run.start);
            v["vmnodeEndTime"] = json!(run.end);
            v["vmnodeSequenceNumber"] = json!(run.seq);
        }
    }
    if let Some(u) = log_uri {
        v["vmnodeHandlerLogUri"] = json!(u);
    }
    v
}

/// The last `n` bytes of a stream, as text.
pub fn tail(bytes: &[u8], n: usize) -> String {
    let start = bytes.len().saturating_sub(n);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Run Command's result, in the cloud's shape for RunShellScript (one status whose message has
/// the `[stdout]` and `[stderr]` tails), plus vmnode's `exitCode`, `stdout`, `stderr` and times.
/// A non-zero exit is reported (`ProvisioningState/failed`), not turned into a failed operation,
/// so the output is never lost.
pub fn run_command_result(
    code: Option<i32>,
    stdout: &str,
    stderr: &str,
    start: &str,
    end: &str,
) -> Value {
    let ok = code == Some(0);
    let message = if ok {
        format!("Enable succeeded: \n[stdout]\n{stdout}\n[stderr]\n{stderr}")
    } else {
        let why = match code {
            Some(c) => format!("command terminated with exit status={c}"),
            None => "command terminated by a signal".into(),
        };
        format!("Enable failed: failed to execute command: {why}\n[stdout]\n{stdout}\n[stderr]\n{stderr}")
    };
    let code_s = if ok {
        "ProvisioningState/succeeded"
    } else {
        "ProvisioningState/failed"
    };
    json!({
        "value": [status(code_s.into(), ok, &message, None)],
        "exitCode": code,
        "stdout": stdout,
        "stderr": stderr,
        "startTime": start,
        "endTime": end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn rec() -> ExtensionRecord {
        ExtensionRecord {
            rg: "rg".into(),
            vm: "vm1".into(),
            vm_id: "id".into(),
            name: "cse".into(),
            location: "local".into(),
            publisher: "Microsoft.Azure.Extensions".into(),
            ext_type: "CustomScript".into(),
            handler: Handler::LinuxCustomScript,
            type_handler_version: "2.1".into(),
            auto_upgrade_minor_version: true,
            settings: Map::new(),
            protected_sealed: None,
            force_update_tag: None,
            tags: Map::new(),
            provisioning_state: ProvisioningState::Failed,
            seq: 0,
            error: None,
            last_run: None,
            handler_log_blob: "extensions/cse/handler.log".into(),
        }
    }

    fn exited(code: i32, out: &str, err: &str) -> RunResult {
        RunResult {
            seq: 0,
            start: "s".into(),
            end: "e".into(),
            outcome: Outcome::Exited {
                code: Some(code),
                signal: None,
                stdout_tail: out.into(),
                stderr_tail: err.into(),
            },
        }
    }

    #[test]
    fn a_non_zero_exit_is_the_clouds_error_with_code_and_stderr() {
        let r = rec();
        let run = exited(
            127,
            "",
            "sh: can't open 'script.ps1': No such file or directory\n",
        );
        let e = error_for(&r, &run).unwrap();
        assert_eq!(e.code, "VMExtensionProvisioningError");
        assert_eq!(
            e.message,
            "VM has reported a failure when processing extension 'cse' (publisher 'Microsoft.Azure.Extensions' and type 'CustomScript'). Error message: 'Command execution finished, but failed because it returned a non-zero exit code of: '127'. The command had an error output of: 'sh: can't open 'script.ps1': No such file or directory' For more information, check the instance view by executing Get-AzVmssVm or Get-AzVm (https://aka.ms/GetAzVm). These commands can be executed using CloudShell (https://aka.ms/CloudShell)'. More information on troubleshooting is available at https://aka.ms/VMExtensionCSELinuxTroubleshoot."
        );
        assert!(error_for(&r, &exited(0, "hi", "")).is_none());
    }

    #[test]
    fn a_download_failure_says_which_blob_and_status() {
        let run = RunResult {
            seq: 0,
            start: "s".into(),
            end: "e".into(),
            outcome: Outcome::DownloadFailed {
                url: "http://h/a/c/s.sh?se=x&sig=REDACTED".into(),
                blob: "c/s.sh".into(),
                status: Some(403),
                code: "AuthenticationFailed".into(),
                message: "Signed expiry time [x] has to be after signed start time".into(),
            },
        };
        let m = error_for(&rec(), &run).unwrap().message;
        assert!(m.contains("(403) Forbidden"), "{m}");
        assert!(m.contains("'c/s.sh'") && m.contains("AuthenticationFailed: Signed expiry"));
        assert!(!m.contains("exit code"));
        let mut r = rec();
        r.last_run = Some(run);
        let v = instance_view(&r, None);
        assert_eq!(v["statuses"][0]["code"], "ProvisioningState/failed");
        assert!(v.get("substatuses").is_none());
    }

    #[test]
    fn instance_view_has_stdout_and_stderr_substatuses() {
        let mut r = rec();
        r.provisioning_state = ProvisioningState::Succeeded;
        r.last_run = Some(exited(0, "hello\n", "warn\n"));
        let v = instance_view(&r, Some("http://x/log".into()));
        assert_eq!(v["statuses"][0]["code"], "ProvisioningState/succeeded");
        assert_eq!(
            v["substatuses"][0]["code"],
            "ComponentStatus/StdOut/succeeded"
        );
        assert_eq!(v["substatuses"][0]["message"], "hello\n");
        assert_eq!(
            v["substatuses"][1]["code"],
            "ComponentStatus/StdErr/succeeded"
        );
        assert_eq!(v["substatuses"][1]["message"], "warn\n");
        assert_eq!(v["vmnodeExitCode"], 0);
        r.provisioning_state = ProvisioningState::Failed;
        r.last_run = Some(exited(3, "", "boom"));
        let v = instance_view(&r, None);
        assert_eq!(v["statuses"][0]["code"], "ProvisioningState/failed/3");
        assert_eq!(v["statuses"][0]["level"], "Error");
        r.provisioning_state = ProvisioningState::Updating;
        let v = instance_view(&r, None);
        assert_eq!(v["statuses"][0]["code"], "ProvisioningState/transitioning");
    }

    #[test]
    fn run_command_result_keeps_output_on_failure() {
        let v = run_command_result(Some(3), "out\n", "err\n", "a", "b");
        assert_eq!(v["exitCode"], 3);
        assert_eq!(v["value"][0]["code"], "ProvisioningState/failed");
        assert!(v["value"][0]["message"]
            .as_str()
            .unwrap()
            .contains("[stdout]\nout\n\n[stderr]\nerr\n"));
        let v = run_command_result(Some(0), "x\n", "", "a", "b");
        assert_eq!(
            v["value"][0]["message"],
            "Enable succeeded: \n[stdout]\nx\n\n[stderr]\n"
        );
        assert_eq!(tail(b"abcdef", 3), "def");
    }
}
