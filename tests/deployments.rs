//! `vmnode deployment group create`: an ARM template's resources are made through the API in
//! dependency order, progress is shown per resource, a failing resource gives the cloud's
//! nested error (and skips its dependants), a bad template makes nothing, and the records
//! survive a daemon restart. (The SDK's view of the same API: tests/sdk/deployments.py.)

mod common;

use common::Node;

const TEMPLATE: &str = r#"{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "prefix": {"type": "string"},
    "space": {"type": "string", "defaultValue": "10.20.0.0/16"}
  },
  "variables": {"vnet": "[concat(parameters('prefix'), '-vnet')]"},
  "resources": [
    {
      "type": "Microsoft.Network/networkInterfaces",
      "apiVersion": "2023-05-01",
      "name": "[concat(parameters('prefix'), '-nic')]",
      "location": "[resourceGroup().location]",
      "dependsOn": ["[resourceId('Microsoft.Network/virtualNetworks', variables('vnet'))]"],
      "properties": {"ipConfigurations": [{"name": "ip1", "properties": {"subnet": {
        "id": "[resourceId('Microsoft.Network/virtualNetworks/subnets', variables('vnet'), 'default')]"}}}]}
    },
    {
      "type": "Microsoft.Network/virtualNetworks",
      "apiVersion": "2023-05-01",
      "name": "[variables('vnet')]",
      "location": "[resourceGroup().location]",
      "properties": {"addressSpace": {"addressPrefixes": ["[parameters('space')]"]},
        "subnets": [{"name": "default", "properties": {"addressPrefix": "[replace(parameters('space'), '/16', '/24')]"}}]}
    }
  ]
}"#;

#[test]
fn templates_deploy_in_order_and_fail_like_the_cloud() {
    let mut node = Node::start();
    node.ok(&["group", "create", "-n", "lab"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.json");
    // `replace()` is not one of the functions vmnode evaluates: the template is refused
    // before anything is made, naming the function.
    std::fs::write(&t, TEMPLATE).unwrap();
    let tf = t.to_str().unwrap();
    let err = node.fails(&[
        "deployment",
        "group",
        "create",
        "-g",
        "lab",
        "-n",
        "d0",
        "-f",
        tf,
        "--parameters",
        "prefix=a",
    ]);
    assert!(
        err.contains("InvalidTemplate") && err.contains("'replace'"),
        "{err}"
    );
    let vnets = node.json(&["network", "vnet", "list", "-g", "lab"]);
    assert_eq!(
        vnets,
        serde_json::json!([]),
        "a refused template made something"
    );

    let fixed = TEMPLATE.replace(
        "[replace(parameters('space'), '/16', '/24')]",
        "10.20.0.0/24",
    );
    std::fs::write(&t, &fixed).unwrap();
    let out = node.cli(&[
        "deployment",
        "group",
        "create",
        "-g",
        "lab",
        "-n",
        "d1",
        "-f",
        tf,
        "--parameters",
        "prefix=web",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Progress, one line per resource, the vnet first although the template lists it last.
    let vnet_at = stderr
        .find("Microsoft.Network/virtualNetworks web-vnet")
        .unwrap();
    let nic_at = stderr
        .find("Microsoft.Network/networkInterfaces web-nic")
        .unwrap();
    assert!(vnet_at < nic_at, "{stderr}");
    assert!(stderr.contains("deployment Succeeded"), "{stderr}");
    let nic = node.json(&["network", "nic", "show", "-g", "lab", "-n", "web-nic"]);
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "10.20.0.4"
    );

    // An address space the network provider refuses: the vnet fails with the provider's own
    // error inside DeploymentFailed, and the NIC that depends on it is skipped.
    let err = node.fails(&[
        "deployment",
        "group",
        "create",
        "-g",
        "lab",
        "-n",
        "d2",
        "-f",
        tf,
        "--parameters",
        "prefix=dup",
        "space=10.20.0.0/99",
    ]);
    assert!(
        err.contains("DeploymentFailed") && err.contains("10.20.0.0/99"),
        "{err}"
    );
    let ops = node.json(&[
        "deployment",
        "operation",
        "group",
        "list",
        "-g",
        "lab",
        "-n",
        "d2",
    ]);
    let states: Vec<(String, String)> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["properties"]["targetResource"]["resourceName"]
                    .as_str()
                    .unwrap()
                    .into(),
                o["properties"]["provisioningState"]
                    .as_str()
                    .unwrap()
                    .into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("dup-vnet".into(), "Failed".into()),
            ("dup-nic".into(), "Skipped".into())
        ],
        "{ops}"
    );

    // Records survive the daemon.
    node.kill_daemon();
    node.spawn_daemon();
    let list = node.json(&["deployment", "group", "list", "-g", "lab"]);
    let names: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["properties"]["provisioningState"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("d1", "Succeeded"), ("d2", "Failed")]);
    let d2 = node.json(&["deployment", "group", "show", "-g", "lab", "-n", "d2"]);
    assert_eq!(d2["properties"]["error"]["code"], "DeploymentFailed");
}

const CSE_TEMPLATE: &str = r#"{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "vmName": {"type": "string"},
    "scriptUri": {"type": "string"},
    "command": {"type": "securestring"},
    "tag": {"type": "string", "defaultValue": "1"}
  },
  "resources": [
    {
      "type": "Microsoft.Compute/virtualMachines/extensions",
      "apiVersion": "2023-03-01",
      "name": "[concat(parameters('vmName'), '/cse')]",
      "location": "[resourceGroup().location]",
      "properties": {
        "publisher": "Microsoft.Azure.Extensions",
        "type": "CustomScript",
        "typeHandlerVersion": "2.1",
        "autoUpgradeMinorVersion": true,
        "forceUpdateTag": "[parameters('tag')]",
        "settings": {"fileUris": ["[parameters('scriptUri')]"]},
        "protectedSettings": {"commandToExecute": "[parameters('command')]"}
      }
    }
  ]
}"#;

/// The seed's first lesson through a template, as the cloud reports it: a CustomScript whose
/// command names the wrong file fails the deployment with DeploymentFailed → Conflict →
/// ResourceDeploymentFailure → VMExtensionProvisioningError (exit code and stderr inside); the
/// VM keeps running; the fixed command with a new forceUpdateTag deploys.
#[test]
fn a_failing_custom_script_fails_its_deployment_with_the_clouds_nested_error() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "vm1", &[]);
    node.ok(&["storage", "container", "create", "-n", "scripts"]);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "echo deployed-by-template\n").unwrap();
    node.ok(&[
        "storage",
        "blob",
        "upload",
        "-c",
        "scripts",
        "-f",
        script.to_str().unwrap(),
    ]);
    let sas = node
        .ok(&[
            "storage",
            "blob",
            "generate-sas",
            "-c",
            "scripts",
            "-n",
            "script.sh",
            "--full-uri",
        ])
        .trim()
        .to_string();
    let t = dir.path().join("cse.json");
    std::fs::write(&t, CSE_TEMPLATE).unwrap();
    let uri = format!("scriptUri={sas}");
    let deploy = |name: &str, command: &str, tag: &str| {
        node.cli(&[
            "deployment",
            "group",
            "create",
            "-g",
            "rg",
            "-n",
            name,
            "-f",
            t.to_str().unwrap(),
            "--parameters",
            "vmName=vm1",
            &uri,
            &format!("command={command}"),
            &format!("tag={tag}"),
        ])
    };

    let out = deploy("cse1", "sh script.ps1", "1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for code in [
        "DeploymentFailed",
        "Conflict",
        "ResourceDeploymentFailure",
        "VMExtensionProvisioningError",
    ] {
        assert!(err.contains(code), "{code} missing from: {err}");
    }
    let d = node.json(&["deployment", "group", "show", "-g", "rg", "-n", "cse1"]);
    let e = &d["properties"]["error"];
    assert_eq!(e["code"], "DeploymentFailed", "{d}");
    assert_eq!(e["details"][0]["code"], "Conflict", "{d}");
    let inner: serde_json::Value =
        serde_json::from_str(e["details"][0]["message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["status"], "Failed");
    assert_eq!(inner["error"]["code"], "ResourceDeploymentFailure");
    let rp = &inner["error"]["details"][0];
    assert_eq!(rp["code"], "VMExtensionProvisioningError", "{inner}");
    let msg = rp["message"].as_str().unwrap();
    assert!(
        msg.contains("non-zero exit code") && msg.contains("script.ps1"),
        "{msg}"
    );
    // The secure parameter is not kept with the deployment.
    assert!(
        d["properties"]["parameters"]["command"]
            .get("value")
            .is_none(),
        "{d}"
    );
    // The VM itself keeps running.
    let vm = node.json(&["vm", "show", "-g", "rg", "-n", "vm1"]);
    assert_eq!(vm["powerState"], "VM running", "{vm}");

    let out = deploy("cse2", "sh script.sh", "2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ext = node.json(&[
        "vm",
        "extension",
        "show",
        "-g",
        "rg",
        "--vm-name",
        "vm1",
        "-n",
        "cse",
    ]);
    assert_eq!(ext["properties"]["provisioningState"], "Succeeded", "{ext}");
    let stdout = ext["properties"]["instanceView"]["substatuses"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(stdout.contains("deployed-by-template"), "{ext}");
}
