//! The IMDS rules against requests as the agents send them (waagent's `Metadata: True`,
//! cloud-init's `extended=true`, afterburn's leaves) and as a hostile guest would.

use super::document::Facts;
use super::*;

fn facts() -> Facts {
    Facts {
        vm_id: "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into(),
        name: "vm1".into(),
        resource_group: "rg1".into(),
        subscription: "00000000-0000-0000-0000-000000000001".into(),
        location: "local".into(),
        vm_size: "Standard_B1s".into(),
        computer_name: "guest-one".into(),
        admin_username: "azureuser".into(),
        mac: "000D3A047598".into(),
        private_ip: "10.1.0.4".into(),
        subnet_address: "10.1.0.0".into(),
        subnet_prefix: "24".into(),
        ..Facts::default()
    }
}

fn get(target: &str, headers: &[(&str, &str)]) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let req = Request {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    answer(&req, || Some(facts()))
}

fn md(target: &str) -> Response {
    get(target, &[("Metadata", "true")])
}

fn body(r: &Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[test]
fn the_document_for_each_agent_s_request() {
    // waagent: the Python bool on the wire.
    let r = get(
        "/metadata/instance?api-version=2018-02-01",
        &[("Metadata", "True")],
    );
    assert_eq!((r.status, r.content_type), (200, JSON), "{}", r.body);
    let d = body(&r);
    assert_eq!(d["compute"]["vmId"], "02aab8a4-74ef-476e-8182-f6d2ba4166a6");
    assert_eq!(d["compute"]["location"], "local");
    assert_eq!(
        d["network"]["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"],
        "10.1.0.4"
    );
    assert_eq!(d["network"]["interface"][0]["macAddress"], "000D3A047598");
    assert_eq!(
        d["compute"]["resourceId"],
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"
    );
    assert!(d.get("extended").is_none());
    // cloud-init: extended only from 2021-03-01.
    let d = body(&md(
        "/metadata/instance?api-version=2021-08-01&extended=true",
    ));
    assert_eq!(d["extended"]["compute"]["ppsType"], "None");
    let d = body(&md(
        "/metadata/instance?api-version=2019-06-01&extended=true",
    ));
    assert!(d.get("extended").is_none());
    // A trailing slash is the same element.
    assert_eq!(md("/metadata/instance/?api-version=2021-02-01").status, 200);
}

#[test]
fn leaves_need_format_text_and_objects_json() {
    let r = md("/metadata/instance/compute/name?api-version=2021-02-01&format=text");
    assert_eq!(
        (r.status, r.content_type, r.body.as_str()),
        (200, TEXT, "vm1")
    );
    let r = md("/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2017-08-01&format=text");
    assert_eq!((r.status, r.body.as_str()), (200, "10.1.0.4"));
    let r =
        md("/metadata/instance/compute/osProfile/adminUsername?api-version=2021-02-01&format=text");
    assert_eq!(r.body, "azureuser");
    assert_eq!(
        md("/metadata/instance/compute/name?api-version=2021-02-01").status,
        400
    );
    let r = md("/metadata/instance/compute?api-version=2021-02-01");
    assert_eq!(body(&r)["name"], "vm1");
    let r = md("/metadata/instance/compute/publicKeys?api-version=2021-02-01");
    assert_eq!(body(&r), json!([]));
    assert_eq!(
        md("/metadata/instance/compute?api-version=2021-02-01&format=text").status,
        400
    );
    for missing in [
        "/metadata/instance/compute/nope?api-version=2021-02-01&format=text",
        "/metadata/instance/network/interface/1?api-version=2021-02-01",
        "/metadata/instance/network/interface/x?api-version=2021-02-01",
        "/metadata/instance/compute/name/more?api-version=2021-02-01&format=text",
        "/metadata/instancex?api-version=2021-02-01",
        "/metadata/identity?api-version=2021-02-01",
        "/",
    ] {
        assert_eq!(md(missing).status, 404, "{missing}");
    }
}

#[test]
fn the_rules_refuse_what_the_cloud_refuses() {
    let no_header = get("/metadata/instance?api-version=2021-02-01", &[]);
    assert_eq!(no_header.status, 400);
    assert!(body(&no_header)["error"]
        .as_str()
        .unwrap()
        .contains("metadata header"));
    let wrong = get(
        "/metadata/instance?api-version=2021-02-01",
        &[("Metadata", "false")],
    );
    assert_eq!(wrong.status, 400);
    let proxied = get(
        "/metadata/instance?api-version=2021-02-01",
        &[("Metadata", "true"), ("X-Forwarded-For", "10.1.0.9")],
    );
    assert_eq!(proxied.status, 400);
    for bad in [
        "/metadata/instance",
        "/metadata/instance?api-version=2099-01-01",
        "/metadata/instance?api-version=",
    ] {
        let r = md(bad);
        assert_eq!(r.status, 400, "{bad}");
        let b = body(&r);
        assert!(b["error"].as_str().unwrap().contains("api-version"), "{b}");
        assert_eq!(b["newest-versions"][0], *API_VERSIONS.last().unwrap());
    }
    assert_eq!(
        md("/metadata/instance?api-version=2021-02-01&api-version=2021-02-01").status,
        400
    );
    assert_eq!(
        md("/metadata/instance?api-version=2021-02-01&API-VERSION=2018-02-01").status,
        400
    );
    assert_eq!(
        md("/metadata/instance?api-version=2021-02-01&format=xml").status,
        400
    );
    let post = Request {
        method: "POST".into(),
        path: "/metadata/instance".into(),
        query: "api-version=2021-02-01".into(),
        headers: vec![("Metadata".into(), "true".into())],
    };
    assert_eq!(answer(&post, || Some(facts())).status, 405);
}

#[test]
fn versions_need_no_api_version_and_no_vm() {
    let req = Request {
        method: "GET".into(),
        path: "/metadata/versions".into(),
        headers: vec![("metadata".into(), "TRUE".into())],
        ..Request::default()
    };
    let r = answer(&req, || panic!("versions looked the VM up"));
    assert_eq!(r.status, 200);
    assert_eq!(body(&r)["apiVersions"][0], "2017-03-01");
}

#[test]
fn an_unknown_caller_is_403_and_is_looked_up_only_after_the_rules() {
    let req = |headers: Vec<(String, String)>| Request {
        method: "GET".into(),
        path: "/metadata/instance".into(),
        query: "api-version=2021-02-01".into(),
        headers,
    };
    let r = answer(&req(vec![("Metadata".into(), "true".into())]), || None);
    assert_eq!(r.status, 403);
    let r = answer(&req(vec![]), || panic!("looked up before the header check"));
    assert_eq!(r.status, 400);
}
