//! The actor's failures keep their kind up to the client: a lifecycle refusal is a 409
//! OperationNotAllowed, an I/O failure on the host is a 5xx with its cause, never a 409.

mod common;

use std::process::Command;

use common::{walk, Node};

/// `chattr +i` (root cannot create files in an immutable directory either) on `dir`, undone
/// when dropped so the test's state dir can be removed.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(dir: &std::path::Path) -> Immutable {
        let st = Command::new("chattr").arg("+i").arg(dir).status().unwrap();
        assert!(st.success(), "chattr +i {}", dir.display());
        Immutable(dir.into())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn an_io_failure_in_the_actor_is_a_500_and_a_refusal_a_409() {
    let node = Node::start();
    node.ok(&["group", "create", "-n", "rg"]);
    node.create_vm("rg", "vm1", &[]);
    let attach = [
        "vm",
        "disk",
        "attach",
        "-g",
        "rg",
        "--vm-name",
        "vm1",
        "-n",
        "d1",
        "--new",
        "--size-gb",
        "1",
    ];
    // The OS disk's folder is where a new data disk's file is made: the actor cannot create it.
    let os_disk = walk(&node.state.join("blobs"))
        .into_iter()
        .find(|p| {
            let p = p.to_string_lossy();
            p.contains("-osdisk-") && p.ends_with(".vhd") && !p.contains("/.")
        })
        .expect("the VM's OS disk");
    let dir = os_disk.parent().unwrap().to_path_buf();
    {
        let _frozen = Immutable::set(&dir);
        let err = node.fails(&attach);
        assert!(err.contains("InternalServerError (500)"), "{err}");
        assert!(err.contains("creating data disk"), "names the step: {err}");
        assert!(
            err.contains("Operation not permitted"),
            "keeps the cause: {err}"
        );
        assert!(!err.contains("(409)"), "{err}");
    }
    // The same attach works once the host is fixed, and nothing half-made was left in between.
    node.ok(&attach);
    let v = node.json(&["vm", "show", "-g", "rg", "-n", "vm1"]);
    assert_eq!(
        v["properties"]["storageProfile"]["dataDisks"][0]["name"],
        "d1"
    );

    // A lifecycle refusal stays a 409: restart of a stopped VM.
    node.ok(&["vm", "stop", "-g", "rg", "-n", "vm1", "--skip-shutdown"]);
    let err = node.fails(&["vm", "restart", "-g", "rg", "-n", "vm1"]);
    assert!(err.contains("OperationNotAllowed (409)"), "{err}");
    node.ok(&["vm", "delete", "-g", "rg", "-n", "vm1", "--yes"]);
}
