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
