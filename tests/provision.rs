//! OS provisioning from osProfile through the guest agent, on the tiny image (fast): what the
//! image can take (its host name, customData) is done and what it cannot (no useradd, no sshd) is
//! said; the agent's Ready status; a guest whose agent never answers fails provisioning with
//! `OSProvisioningTimedOut` and keeps running; bad osProfiles are refused with the cloud's error
//! target before anything is made. The debian-12 side (user, password, SSH keys, sudo) is in
//! tests/debian.rs.

mod common;

use std::time::{Duration, Instant};

use common::{guest_exec, Node};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);

fn view(node: &Node, vm: &str) -> Value {
    node.json(&["vm", "get-instance-view", "-g", "rg", "-n", vm])
}

fn codes(v: &Value) -> Vec<String> {
    v["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until the instance view satisfies `ok`; returns it.
fn wait_view(node: &Node, vm: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + BOOT;
    loop {
        let v = view(node, vm);
        if ok(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{vm}: not {what} after {BOOT:?}: {v:#}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn timeline(node: &Node, vm: &str) -> String {
    let boots = node.json(&["vm", "boot-diagnostics", "boots", "-g", "rg", "-n", vm]);
    boots
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_tiny_image_takes_its_host_name_and_custom_data_and_says_what_it_cannot_do() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let custom = node.dir.path().join("custom.txt");
    std::fs::write(&custom, "#!/bin/sh\necho provisioned-by-vmnode\n").unwrap();
    let password = "Tiny-Secret-Pw-42";
    let vm = node.create_vm(
        "rg",
        "tp",
        &[
            "--computer-name",
            "tiny-host",
            "--admin-password",
            password,
            "--custom-data",
            custom.to_str().unwrap(),
        ],
    );
    let vm_id = vm["properties"]["vmId"].as_str().unwrap().to_string();
    // The request's secrets are not part of the VM as the API shows it.
    let os = &vm["properties"]["osProfile"];
    assert!(
        os.get("adminPassword").is_none() && os.get("customData").is_none(),
        "{os:#}"
    );

    let v = wait_view(&node, "tp", "provisioned", |v| {
        codes(v).iter().any(|c| c == "OSProvisioningComplete")
    });
    assert_eq!(codes(&v)[0], "ProvisioningState/succeeded", "{v:#}");
    let done = v["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "OSProvisioningComplete")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(done.contains("host name tiny-host"), "{done}");
    assert!(done.contains("customData"), "{done}");
    // busybox: no useradd, no sshd; said, not pretended.
    assert!(done.contains("no useradd"), "{done}");
    assert!(done.contains("no sshd"), "{done}");
    // The agent is Ready, with its version.
    let agent = &v["vmAgent"];
    assert_eq!(agent["statuses"][0]["displayStatus"], "Ready", "{v:#}");
    assert_eq!(agent["statuses"][0]["code"], "ProvisioningState/succeeded");
    assert_eq!(agent["statuses"][0]["message"], "Guest Agent is running");
    let version = agent["vmAgentVersion"].as_str().unwrap();
    assert!(
        version.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{version}"
    );

    // In the guest: the name in /etc/hosts (DHCP does not write that) and the customData file,
    // base64 as the cloud's agent leaves it.
    let (code, hosts) = guest_exec(&node, &vm_id, &["/bin/cat", "/etc/hosts"]);
    assert_eq!(code, 0, "{hosts}");
    assert!(hosts.contains("127.0.1.1\ttiny-host"), "{hosts}");
    let (_, name) = guest_exec(&node, &vm_id, &["/bin/hostname"]);
    assert_eq!(name.trim(), "tiny-host");
    let (code, cd) = guest_exec(&node, &vm_id, &["/bin/cat", "/var/lib/waagent/CustomData"]);
    assert_eq!(code, 0, "{cd}");
    assert_eq!(cd, "IyEvYmluL3NoCmVjaG8gcHJvdmlzaW9uZWQtYnktdm1ub2RlCg==");

    // Every step is on the boot timeline, and no secret is anywhere in the daemon's log.
    let t = timeline(&node, "tp");
    assert!(
        t.contains("provisioning: host name set to tiny-host"),
        "{t}"
    );
    assert!(t.contains("provisioning succeeded"), "{t}");
    let log = node.daemon_log();
    assert!(log.contains("OS provisioning succeeded"));
    assert!(!log.contains(password) && !log.contains("IyEvYmluL3No"));
    let shown = node.ok(&["vm", "show", "-g", "rg", "-n", "tp", "-o", "json"]);
    assert!(!shown.contains("IyEvYmluL3No") && !shown.contains("$6$"));

    // A restart does not provision again.
    node.ok(&["vm", "restart", "-g", "rg", "-n", "tp"]);
    node.wait_for_count("rg", "tp", "VMNODE-BOOT: agent-started", 2, BOOT);
    wait_view(&node, "tp", "Ready after the restart", |v| {
        v["vmAgent"]["statuses"][0]["displayStatus"] == "Ready"
    });
    let t = timeline(&node, "tp");
    assert_eq!(t.matches("provisioning succeeded").count(), 1, "{t}");

    // The agent stops (killed in the guest, a moment after this command returns): Not Ready,
    // with the time it last answered.
    let (code, out) = guest_exec(
        &node,
        &vm_id,
        &[
            "/bin/sh",
            "-c",
            "(sleep 1; kill $(pidof qemu-ga)) >/dev/null 2>&1 &",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v = wait_view(&node, "tp", "Not Ready", |v| {
        v["vmAgent"]["statuses"][0]["displayStatus"] == "Not Ready"
    });
    let s = &v["vmAgent"]["statuses"][0];
    assert_eq!(s["level"], "Warning", "{v:#}");
    let last = s["time"].as_str().unwrap();
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains(&format!("last answered at {last}")),
        "{v:#}"
    );
    // Nothing else changed: the VM runs and stays provisioned.
    assert_eq!(codes(&v)[0], "ProvisioningState/succeeded");
    assert_eq!(codes(&v)[1], "PowerState/running");
}

#[test]
fn a_guest_whose_agent_never_answers_fails_with_os_provisioning_timed_out_and_keeps_running() {
    // The daemon reads it at every check (nextest runs each test in its own process).
    std::env::set_var("VMNODE_PROVISION_TIMEOUT_SECS", "20");
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let urn = node.publish_variant("noagent", "vmnode.noagent");
    node.ok(&[
        "vm",
        "create",
        "-g",
        "rg",
        "-n",
        "silent",
        "--image",
        &urn,
        "--size",
        "Standard_B1s",
        "--ip-timeout",
        "0",
    ]);
    let v = wait_view(&node, "silent", "failed", |v| {
        v["statuses"][0]["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("ProvisioningState/failed"))
    });
    assert_eq!(
        v["statuses"][0]["code"], "ProvisioningState/failed/OSProvisioningTimedOut",
        "{v:#}"
    );
    assert_eq!(v["statuses"][0]["level"], "Error");
    assert_eq!(v["statuses"][1]["code"], "PowerState/running", "{v:#}");
    assert_eq!(v["vmAgent"]["statuses"][0]["displayStatus"], "Not Ready");

    let vm = node.json(&["vm", "show", "-g", "rg", "-n", "silent"]);
    assert_eq!(vm["properties"]["provisioningState"], "Failed", "{vm:#}");
    let e = &vm["properties"]["error"];
    assert_eq!(e["code"], "OSProvisioningTimedOut", "{e:#}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("did not finish in the allotted time"), "{msg}");
    // The message says where to look: the serial log, by command and by blob URL.
    assert!(
        msg.contains("vmnode vm boot-diagnostics get-boot-log -g rg -n silent"),
        "{msg}"
    );
    let vm_id = vm["properties"]["vmId"].as_str().unwrap();
    assert!(
        msg.contains(&format!("silent.{vm_id}.serialconsole.log")),
        "{msg}"
    );
    // The VM keeps running: its QEMU is alive and the guest still writes its console.
    assert_eq!(vm["powerState"], "VM running");
    let pid = node.qemu_pid(vm_id);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let log = node.ok(&[
        "vm",
        "boot-diagnostics",
        "get-boot-log",
        "-g",
        "rg",
        "-n",
        "silent",
    ]);
    assert!(log.contains("VMNODE-BOOT: ready"), "{log}");
    assert!(timeline(&node, "silent").contains("provisioning timed out"));
}

/// `PUT path` with a JSON body on the daemon's unix socket (plain HTTP, bearer token), as any
/// client of the API; returns the status and the JSON answer.
fn api_put(node: &Node, path: &str, body: &Value) -> (u16, Value) {
    use std::io::{Read, Write};
    let token = std::fs::read_to_string(node.state.join("token")).unwrap();
    let body = body.to_string();
    let mut s = std::os::unix::net::UnixStream::connect(node.run.join("vmnode.sock")).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        token.trim(),
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // The JSON body (the daemon may send it chunked: take the outermost object).
    let json = answer
        .find('{')
        .zip(answer.rfind('}'))
        .and_then(|(a, b)| serde_json::from_str(&answer[a..=b]).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

#[test]
fn bad_os_profiles_are_refused_with_the_field_at_fault() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    let rg_id = node.json(&["group", "show", "-n", "rg"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path =
        format!("{rg_id}/providers/Microsoft.Compute/virtualMachines/bad?api-version=2024-07-01");
    let vm = |os_profile: Value| {
        serde_json::json!({
            "location": "local",
            "properties": {
                "hardwareProfile": { "vmSize": "Standard_B1s" },
                "storageProfile": { "imageReference": {
                    "publisher": "vmnode", "offer": "tiny", "sku": "1", "version": "latest" } },
                "osProfile": os_profile,
            }
        })
    };
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEo5jZ5k6qkq3n0f8zV3QfNn6m4hJX2xg2r0mYq3b9cT";
    let cases = [
        (
            serde_json::json!({ "adminUsername": "root", "adminPassword": "Passw0rd!Passw0rd" }),
            "adminUsername",
        ),
        (
            serde_json::json!({ "adminUsername": "azureuser", "adminPassword": "abcdefghijkl" }),
            "adminPassword",
        ),
        (
            serde_json::json!({ "adminUsername": "azureuser", "adminPassword": "Password1" }),
            "adminPassword",
        ),
        (
            serde_json::json!({ "adminUsername": "azureuser", "linuxConfiguration": {
                "ssh": { "publicKeys": [{ "keyData": "ssh-ed25519 AAAAnotakey" }] } } }),
            "linuxConfiguration.ssh.publicKeys.keyData",
        ),
        (
            serde_json::json!({ "adminUsername": "azureuser", "linuxConfiguration": {
                "disablePasswordAuthentication": true } }),
            "linuxConfiguration",
        ),
        (
            serde_json::json!({ "adminUsername": "azureuser", "linuxConfiguration": {
                "ssh": { "publicKeys": [{ "path": "../etc/passwd", "keyData": key }] } } }),
            "linuxConfiguration.ssh.publicKeys.path",
        ),
        (
            serde_json::json!({ "adminUsername": "azureuser", "customData": "not base64!" }),
            "customData",
        ),
        (
            serde_json::json!({ "adminUsername": "azureuser", "computerName": "bad_name" }),
            "computerName",
        ),
    ];
    for (profile, target) in cases {
        let (status, answer) = api_put(&node, &path, &vm(profile.clone()));
        assert_eq!(status, 400, "{profile}: {answer}");
        assert_eq!(answer["error"]["code"], "InvalidParameter", "{answer}");
        assert_eq!(answer["error"]["target"], target, "{profile}: {answer}");
    }
    // The CLI says what was wrong; it checks the password as az does, before asking.
    let create = |extra: &[&str]| {
        let mut a = vec![
            "vm",
            "create",
            "-g",
            "rg",
            "-n",
            "bad",
            "--image",
            "vmnode:tiny:1:latest",
            "--ip-timeout",
            "0",
        ];
        a.extend_from_slice(extra);
        node.fails(&a)
    };
    let e = create(&["--admin-username", "root"]);
    assert!(
        e.contains("InvalidParameter (400): The Admin Username specified is not allowed"),
        "{e}"
    );
    let e = create(&["--admin-password", "short1A!"]);
    assert!(e.contains("12-123 characters"), "{e}");
    // Nothing was made.
    let list = node.json(&["vm", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}
