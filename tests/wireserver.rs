//! The WireServer from inside real guests: the tiny image's busybox `wget` asks 168.63.129.16:80
//! (the platform address on the vnet's bridge) for the versions and its goal state, which names
//! its own container and role instance; it posts a Ready health report (waagent's document) and
//! the node logs it on the VM's span; a second guest that posts a report for the first one's
//! container is refused.

mod common;

use std::time::Duration;

use common::{exec_when_ready, Node};

const BOOT: Duration = Duration::from_secs(120);
const WIRE: &str = "http://168.63.129.16";

/// `wget` in the guest with the agent's headers (and a body to post): (exit code, output).
fn wget(node: &Node, vm_id: &str, target: &str, post: Option<&str>) -> (i64, String) {
    let url = format!("{WIRE}{target}");
    let mut argv = vec![
        "/bin/wget",
        "-q",
        "-O",
        "-",
        "--header",
        "x-ms-version: 2012-11-30",
    ];
    if let Some(body) = post {
        argv.extend(["--header", "Content-Type: text/xml", "--post-data", body]);
    }
    argv.push(&url);
    exec_when_ready(node, vm_id, &argv, BOOT)
}

/// The text of the first `<tag>` in `doc`.
fn text_of(doc: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = doc.find(&open).unwrap_or_else(|| panic!("no {tag}: {doc}")) + open.len();
    doc[start..start + doc[start..].find('<').unwrap()].to_string()
}

/// waagent 2.7.3's health report (`_build_health_report`) for a container and instance.
fn report(container: &str, instance: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Health \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><GoalStateIncarnation>1\
         </GoalStateIncarnation><Container><ContainerId>{container}</ContainerId>\
         <RoleInstanceList><Role><InstanceId>{instance}</InstanceId><Health><State>Ready\
         </State></Health></Role></RoleInstanceList></Container></Health>"
    )
}

/// A VM's goal state as it fetches it: (ContainerId, InstanceId).
fn goal_state(node: &Node, vm_id: &str) -> (String, String) {
    let (code, doc) = wget(node, vm_id, "/machine/?comp=goalstate", None);
    assert_eq!(code, 0, "{doc}\n{}", node.daemon_log());
    assert_eq!(text_of(&doc, "Incarnation"), "1", "{doc}");
    let url = text_of(&doc, "HostingEnvironmentConfig").replace("&amp;", "&");
    let (code, hosting) = wget(
        node,
        vm_id,
        url.trim_start_matches(WIRE).trim_start_matches(":80"),
        None,
    );
    assert_eq!(code, 0, "{url}: {hosting}");
    assert!(hosting.contains("<HostingEnvironmentConfig "), "{hosting}");
    (text_of(&doc, "ContainerId"), text_of(&doc, "InstanceId"))
}

#[test]
fn guests_read_their_goal_state_and_report_ready() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg1"]);
    let one = node.create_vm("rg1", "wire-1", &[]);
    let two = node.create_vm("rg1", "wire-2", &[]);
    let id1 = one["properties"]["vmId"].as_str().unwrap().to_string();
    let id2 = two["properties"]["vmId"].as_str().unwrap().to_string();
    node.wait_for_log("rg1", "wire-1", "VMNODE-BOOT: network ", BOOT);
    node.wait_for_log("rg1", "wire-2", "VMNODE-BOOT: network ", BOOT);

    let (code, versions) = wget(&node, &id1, "/?comp=versions", None);
    assert_eq!(code, 0, "{versions}\n{}", node.daemon_log());
    let supported = &versions[versions.find("<Supported>").expect(&versions)..];
    assert!(
        supported.contains("<Version>2012-11-30</Version>"),
        "{versions}"
    );

    let (container1, instance1) = goal_state(&node, &id1);
    assert_eq!(instance1, format!("{}.wire-1", id1.replace('-', "")));
    let (container2, instance2) = goal_state(&node, &id2);
    assert_eq!(instance2, format!("{}.wire-2", id2.replace('-', "")));
    assert_ne!(container1, container2);

    // The second guest posts a report for the first one's container: refused (busybox wget
    // prints the status it fails on).
    let first = report(&container1, &instance1);
    let (code, out) = wget(&node, &id2, "/machine?comp=health", Some(&first));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("403"), "{out}");
    assert!(!node.daemon_log().contains("WireServer: health report"));

    let (code, out) = wget(&node, &id1, "/machine?comp=health", Some(&first));
    assert_eq!(code, 0, "{out}\n{}", node.daemon_log());
    node.wait_for_daemon_log("WireServer: health report", Duration::from_secs(10));
    let log = node.daemon_log();
    let line = log
        .lines()
        .find(|l| l.contains("WireServer: health report"))
        .unwrap();
    assert!(line.contains("Ready") && line.contains("wire-1"), "{line}");
    assert!(line.contains(&id1), "{line}");
}
