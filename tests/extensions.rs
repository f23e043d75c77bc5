//! VM extensions on real guests: the seed's CustomScript scenario (a script uploaded to the blob
//! service, passed by its SAS link, run with the wrong file name → the cloud's nested error with
//! the exit code and stderr, then fixed with a new forceUpdateTag, then not run again), an expired
//! SAS reported as a download failure, Run Command, protectedSettings kept out of every GET, log
//! and file, the Azure SDK for Python, and bash on the debian-12 image.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{guest_exec, http_get, walk, Node};
use serde_json::Value;

const SECRET: &str = "s3cr3t-9f27c1d4";

fn upload_script(node: &Node, dir: &std::path::Path, name: &str, text: &str) -> String {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    node.ok(&[
        "storage",
        "blob",
        "upload",
        "-c",
        "scripts",
        "-f",
        f.to_str().unwrap(),
    ]);
    node.ok(&[
        "storage",
        "blob",
        "generate-sas",
        "-c",
        "scripts",
        "-n",
        name,
        "--permissions",
        "r",
        "--full-uri",
    ])
    .trim()
    .to_string()
}

fn show(node: &Node, vm: &str, name: &str) -> Value {
    node.json(&[
        "vm",
        "extension",
        "show",
        "-g",
        "rg",
        "--vm-name",
        vm,
        "-n",
        name,
    ])
}

/// `vm extension set` of a CustomScript (Linux) named `instance`; returns the CLI's output.
fn set(node: &Node, vm: &str, instance: &str, extra: &[&str]) -> std::process::Output {
    let mut a = vec![
        "vm",
        "extension",
        "set",
        "-g",
        "rg",
        "--vm-name",
        vm,
        "-n",
        "CustomScript",
        "--publisher",
        "Microsoft.Azure.Extensions",
        "--version",
        "2.1",
        "--extension-instance-name",
        instance,
    ];
    a.extend(extra);
    node.cli(&a)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn custom_script_as_in_the_seed_then_fixed_then_not_run_again_and_run_command() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let vm = node.create_vm("rg", "vm1", &[]);
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    node.ok(&["storage", "container", "create", "-n", "scripts"]);
    let dir = tempfile::tempdir().unwrap();
    let sas = upload_script(
        &node,
        dir.path(),
        "script.sh",
        "echo run >> /tmp/cse-counter\necho hello-from-script\necho to-stderr >&2\n",
    );

    let t0 = Instant::now();
    // 1. The seed's mistake: the blob is script.sh, the command names script.ps1.
    let settings = serde_json::json!({ "fileUris": [sas], "commandToExecute": "sh script.ps1" });
    let out = set(&node, "vm1", "cse", &["--settings", &settings.to_string()]);
    assert!(
        !out.status.success(),
        "a failing script must fail the set: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("VMExtensionProvisioningError"),
        "{}",
        text(&out)
    );
    let ext = show(&node, "vm1", "cse");
    let p = &ext["properties"];
    assert_eq!(p["provisioningState"], "Failed", "{ext}");
    let iv = &p["instanceView"];
    let code = iv["vmnodeExitCode"].as_i64().expect("an exit code");
    assert_ne!(code, 0);
    assert_eq!(
        iv["statuses"][0]["code"],
        format!("ProvisioningState/failed/{code}")
    );
    let stderr = iv["substatuses"][1]["message"].as_str().unwrap();
    assert_eq!(
        iv["substatuses"][1]["code"],
        "ComponentStatus/StdErr/succeeded"
    );
    assert!(stderr.contains("script.ps1"), "{stderr}");
    let msg = p["error"]["message"].as_str().unwrap();
    assert_eq!(p["error"]["code"], "VMExtensionProvisioningError");
    assert!(msg.starts_with("VM has reported a failure when processing extension 'cse' (publisher 'Microsoft.Azure.Extensions' and type 'CustomScript'). Error message: 'Command execution finished, but failed because it returned a non-zero exit code of: '"), "{msg}");
    assert!(
        msg.contains(&format!("exit code of: '{code}'")) && msg.contains(stderr.trim_end()),
        "{msg}"
    );
    assert!(msg.ends_with("More information on troubleshooting is available at https://aka.ms/VMExtensionCSELinuxTroubleshoot."), "{msg}");
    // The VM keeps running, and shows the failure: error, resources[], instance view.
    let vmv = node.json(&["vm", "show", "-g", "rg", "-n", "vm1"]);
    assert_eq!(vmv["powerState"], "VM running");
    assert_eq!(vmv["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        vmv["properties"]["error"]["code"],
        "VMExtensionProvisioningError"
    );
    assert_eq!(vmv["resources"][0]["name"], "cse");
    assert_eq!(
        vmv["resources"][0]["properties"]["provisioningState"],
        "Failed"
    );
    let view = node.json(&["vm", "get-instance-view", "-g", "rg", "-n", "vm1"]);
    assert_eq!(view["extensions"][0]["name"], "cse");
    assert!(view["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["code"] == "ProvisioningState/failed/VMExtensionProvisioningError"));
    // The handler log, through its SAS link: the download and the exit code.
    let log_uri = iv["vmnodeHandlerLogUri"]
        .as_str()
        .expect("a handler log link");
    let (st, _, log) = http_get(log_uri);
    let log = String::from_utf8_lossy(&log).into_owned();
    assert_eq!(st, 200, "{log}");
    assert!(
        log.contains("[INFO] Downloading files specified in configuration..."),
        "{log}"
    );
    assert!(
        log.contains("/scripts/script.sh?") && log.contains("sig=REDACTED"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "[INFO] Command execution finished. Command exited with code: {code}"
        )),
        "{log}"
    );

    eprintln!("measured: failing run reported at {:?}", t0.elapsed());
    // 2. Fixed, with a new forceUpdateTag: runs again without uninstalling.
    let fixed = serde_json::json!({ "fileUris": [sas], "commandToExecute": "sh script.sh" });
    let out = set(
        &node,
        "vm1",
        "cse",
        &[
            "--settings",
            &fixed.to_string(),
            "--force-update-tag",
            "fix-1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ext = show(&node, "vm1", "cse");
    let iv = &ext["properties"]["instanceView"];
    assert_eq!(ext["properties"]["provisioningState"], "Succeeded", "{ext}");
    assert!(ext["properties"].get("error").is_none(), "{ext}");
    assert_eq!(iv["statuses"][0]["code"], "ProvisioningState/succeeded");
    assert_eq!(iv["vmnodeExitCode"], 0);
    assert_eq!(iv["vmnodeSequenceNumber"], 1);
    assert_eq!(
        iv["substatuses"][0]["code"],
        "ComponentStatus/StdOut/succeeded"
    );
    assert_eq!(iv["substatuses"][0]["message"], "hello-from-script\n");
    assert_eq!(iv["substatuses"][1]["message"], "to-stderr\n");
    let vmv = node.json(&["vm", "show", "-g", "rg", "-n", "vm1"]);
    assert!(vmv["properties"].get("error").is_none(), "{vmv}");
    let (_, counter) = guest_exec(&node, &vm_id, &["/bin/cat", "/tmp/cse-counter"]);
    assert_eq!(counter, "run\n");

    eprintln!("measured: fixed run reported at {:?}", t0.elapsed());
    // 3. The same settings and tag again: nothing runs.
    let out = set(
        &node,
        "vm1",
        "cse",
        &[
            "--settings",
            &fixed.to_string(),
            "--force-update-tag",
            "fix-1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(2));
    let (_, counter) = guest_exec(&node, &vm_id, &["/bin/cat", "/tmp/cse-counter"]);
    assert_eq!(counter, "run\n", "an unchanged configuration ran again");
    assert_eq!(
        show(&node, "vm1", "cse")["properties"]["instanceView"]["vmnodeSequenceNumber"],
        1
    );

    eprintln!("measured: unchanged set checked at {:?}", t0.elapsed());
    // 4. An expired SAS: a download failure naming the blob and the 403, not a script failure.
    let expired = node.ok(&[
        "storage",
        "blob",
        "generate-sas",
        "-c",
        "scripts",
        "-n",
        "script.sh",
        "--start",
        "2020-01-01T00:00:00Z",
        "--expiry",
        "2020-01-02T00:00:00Z",
        "--full-uri",
    ]);
    let s = serde_json::json!({ "fileUris": [expired.trim()], "commandToExecute": "sh script.sh" });
    let out = set(&node, "vm1", "expired", &["--settings", &s.to_string()]);
    assert!(!out.status.success(), "{}", text(&out));
    let ext = show(&node, "vm1", "expired");
    let msg = ext["properties"]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Failed to download all specified files"),
        "{msg}"
    );
    assert!(
        msg.contains("(403) Forbidden") && msg.contains("AuthenticationFailed"),
        "{msg}"
    );
    assert!(
        msg.contains("'scripts/script.sh'") && msg.contains("Signed expiry time"),
        "{msg}"
    );
    assert!(!msg.contains("exit code"), "{msg}");
    let iv = &ext["properties"]["instanceView"];
    assert_eq!(iv["statuses"][0]["code"], "ProvisioningState/failed");
    assert!(
        iv.get("substatuses").is_none() && iv.get("vmnodeExitCode").is_none(),
        "{iv}"
    );
    let (_, _, log) = http_get(iv["vmnodeHandlerLogUri"].as_str().unwrap());
    let log = String::from_utf8_lossy(&log).into_owned();
    assert!(
        log.contains("[ERROR]") && log.contains("403") && !log.contains("Command exited"),
        "{log}"
    );
    let (_, counter) = guest_exec(&node, &vm_id, &["/bin/cat", "/tmp/cse-counter"]);
    assert_eq!(counter, "run\n");

    // 5. protectedSettings: the command runs, and its secret is nowhere to be read.
    let prot =
        serde_json::json!({ "commandToExecute": format!("MARK={SECRET}; echo protected-ran") });
    let out = set(
        &node,
        "vm1",
        "secret",
        &[
            "--settings",
            "{}",
            "--protected-settings",
            &prot.to_string(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(SECRET));
    let ext = show(&node, "vm1", "secret");
    assert_eq!(
        ext["properties"]["instanceView"]["substatuses"][0]["message"],
        "protected-ran\n"
    );
    // A PowerShell command is refused, not emulated.
    let ps = node.cli(&[
        "vm",
        "extension",
        "set",
        "-g",
        "rg",
        "--vm-name",
        "vm1",
        "-n",
        "CustomScriptExtension",
        "--publisher",
        "Microsoft.Compute",
        "--settings",
        r#"{"commandToExecute": "powershell -ExecutionPolicy Unrestricted -File script.ps1"}"#,
    ]);
    assert!(
        !ps.status.success() && text(&ps).contains("PowerShell"),
        "{}",
        text(&ps)
    );

    eprintln!(
        "measured: expired SAS and protected run at {:?}",
        t0.elapsed()
    );
    // A public blob (no SAS) and a Windows-style CustomScriptExtension, run by /bin/sh.
    node.ok(&[
        "storage",
        "container",
        "create",
        "-n",
        "public",
        "--public-access",
        "blob",
    ]);
    let f = dir.path().join("pub.sh");
    std::fs::write(&f, "echo from-public-blob\n").unwrap();
    node.ok(&[
        "storage",
        "blob",
        "upload",
        "-c",
        "public",
        "-f",
        f.to_str().unwrap(),
    ]);
    let url = node.ok(&["storage", "blob", "url", "-c", "public", "-n", "pub.sh"]);
    let s = serde_json::json!({ "fileUris": [url.trim()], "commandToExecute": "sh pub.sh" });
    let out = node.cli(&[
        "vm",
        "extension",
        "set",
        "-g",
        "rg",
        "--vm-name",
        "vm1",
        "-n",
        "CustomScriptExtension",
        "--publisher",
        "Microsoft.Compute",
        "--extension-instance-name",
        "public",
        "--settings",
        &s.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let ext = show(&node, "vm1", "public");
    assert_eq!(ext["properties"]["typeHandlerVersion"], "1.10");
    let iv = &ext["properties"]["instanceView"];
    assert_eq!(iv["type"], "Microsoft.Compute.CustomScriptExtension");
    assert_eq!(iv["substatuses"][0]["message"], "from-public-blob\n");
    node.ok(&[
        "vm",
        "extension",
        "delete",
        "-g",
        "rg",
        "--vm-name",
        "vm1",
        "-n",
        "public",
    ]);

    // 6. Run Command: exit code, stdout and stderr of a real command.
    let rc = node.json(&[
        "vm",
        "run-command",
        "invoke",
        "-g",
        "rg",
        "-n",
        "vm1",
        "--command-id",
        "RunShellScript",
        "--scripts",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(rc["exitCode"], 3, "{rc}");
    assert_eq!(rc["stdout"], "out\n");
    assert_eq!(rc["stderr"], "err\n");
    assert_eq!(rc["value"][0]["message"], "Enable failed: failed to execute command: command terminated with exit status=3\n[stdout]\nout\n\n[stderr]\nerr\n");
    let ids = node.json(&["vm", "run-command", "list"]);
    let ids: Vec<&str> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["RunShellScript", "ifconfig"]);
    let table = node.ok(&[
        "vm",
        "run-command",
        "invoke",
        "-g",
        "rg",
        "-n",
        "vm1",
        "--command-id",
        "RunShellScript",
        "--scripts",
        "echo \"$1-$2\"",
        "--parameters",
        "a",
        "b",
    ]);
    assert_eq!(table, "ExitCode: 0\n[stdout]\na-b\n\n[stderr]\n\n");

    eprintln!("measured: two run commands at {:?}", t0.elapsed());
    // Every GET, the daemon's log and every file under the state dir (the store holds the
    // secret sealed, the blobs hold logs and disks) are free of the secret.
    let lists = [
        node.ok(&[
            "vm",
            "extension",
            "list",
            "-g",
            "rg",
            "--vm-name",
            "vm1",
            "-o",
            "json",
        ]),
        node.ok(&["vm", "show", "-g", "rg", "-n", "vm1"]),
        node.ok(&["vm", "get-instance-view", "-g", "rg", "-n", "vm1"]),
        node.ok(&["vm", "list", "-o", "json"]),
        show(&node, "vm1", "secret").to_string(),
        show(&node, "vm1", "cse").to_string(),
    ];
    for l in &lists {
        assert!(
            !l.contains(SECRET) && !l.contains("protectedSettings"),
            "{l}"
        );
    }
    assert!(!node.daemon_log().contains(SECRET));
    // grep reads every file, binary ones too (and skips the holes of sparse disks; -l lists
    // binary files that match as well).
    let found = Command::new("grep")
        .args(["-rlF", "--", SECRET])
        .arg(&node.state)
        .output()
        .unwrap();
    assert_eq!(
        found.status.code(),
        Some(1),
        "files holding the secret: {}",
        String::from_utf8_lossy(&found.stdout)
    );
    assert!(walk(&node.state)
        .iter()
        .any(|f| f.ends_with("extensions.key")));
    // The same scan does read the binary store: it finds the VM's id there.
    let control = Command::new("grep")
        .args(["-rlF", "--", &vm_id])
        .arg(&node.state)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&control.stdout).contains("vmnode.db"),
        "{}",
        String::from_utf8_lossy(&control.stdout)
    );
    eprintln!("measured: secrets scan done at {:?}", t0.elapsed());

    // The records survive a daemon restart; deleting one removes it.
    let mut node = node;
    node.kill_daemon();
    node.spawn_daemon();
    let l = node.json(&["vm", "extension", "list", "-g", "rg", "--vm-name", "vm1"]);
    let names: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cse", "expired", "secret"]);
    assert_eq!(
        show(&node, "vm1", "secret")["properties"]["provisioningState"],
        "Succeeded"
    );
    node.ok(&[
        "vm",
        "extension",
        "delete",
        "-g",
        "rg",
        "--vm-name",
        "vm1",
        "-n",
        "expired",
    ]);
    let l = node.json(&["vm", "extension", "list", "-g", "rg", "--vm-name", "vm1"]);
    assert_eq!(l.as_array().unwrap().len(), 2);
    eprintln!("measured: restart checked at {:?}", t0.elapsed());
    // Deleting the VM deletes its extensions: a VM made again under the name has none.
    node.ok(&["vm", "delete", "-g", "rg", "-n", "vm1", "--yes"]);
    node.create_vm("rg", "vm1", &["--ip-timeout", "0"]);
    let l = node.json(&["vm", "extension", "list", "-g", "rg", "--vm-name", "vm1"]);
    assert_eq!(l, serde_json::json!([]));
    eprintln!("measured: VM deleted and made again at {:?}", t0.elapsed());
}

#[test]
fn the_azure_sdk_sets_an_extension_and_runs_a_command() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "vm1", &[]);
    node.ok(&["storage", "container", "create", "-n", "scripts"]);
    let dir = tempfile::tempdir().unwrap();
    let sas = upload_script(&node, dir.path(), "hello.sh", "echo hello-sdk\n");
    let python = common::python_with(&["azure-mgmt-compute"]);
    let tok = node.json(&["account", "get-access-token"]);
    let out = Command::new(python)
        .arg(format!(
            "{}/tests/sdk/extensions.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(format!("https://127.0.0.1:{}", node.port))
        .arg(tok["subscription"].as_str().unwrap())
        .arg(tok["accessToken"].as_str().unwrap())
        .arg(node.state.join("tls/ca.pem"))
        .arg(&sas)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("extensions-sdk-ok"),
        "extensions.py failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn custom_script_runs_bash_on_debian_12() {
    let node = Node::start();
    let urn = node.build_image("debian-12");
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm_from(&urn, "rg", "deb1", &["--ip-timeout", "600"]);
    node.ok(&["storage", "container", "create", "-n", "scripts"]);
    let dir = tempfile::tempdir().unwrap();
    let sas = upload_script(
        &node,
        dir.path(),
        "probe.sh",
        "#!/bin/bash\necho \"bash ${BASH_VERSINFO[0]}\"\nfor i in sh bash perl python3; do command -v $i >/dev/null && echo \"has $i\" || echo \"no $i\"; done\n",
    );
    let started = Instant::now();
    let s = serde_json::json!({ "fileUris": [sas], "commandToExecute": "./probe.sh" });
    let out = set(&node, "deb1", "probe", &["--settings", &s.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let ext = show(&node, "deb1", "probe");
    let stdout = ext["properties"]["instanceView"]["substatuses"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!(
        "debian-12 interpreters after {:?}:\n{stdout}",
        started.elapsed()
    );
    assert!(
        stdout.starts_with("bash 5\nhas sh\nhas bash\nhas perl\n"),
        "{stdout}"
    );
}
