use super::*;

fn vm(id: &str, name: &str) -> Facts {
    Facts {
        vm_id: id.into(),
        name: name.into(),
        ..Facts::default()
    }
}

const VM1: &str = "02aab8a4-74ef-476e-8182-f6d2ba4166a6";

fn get(target: &str) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Request {
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        headers: vec![("x-ms-version".into(), "2012-11-30".into())],
    }
}

fn post(target: &str) -> Request {
    Request {
        method: "POST".into(),
        ..get(target)
    }
}

/// The text of the first `<tag>` in `doc` (as cloud-init's ElementTree paths find it).
fn text_of<'a>(doc: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {doc}"))
        + open.len();
    let end = doc[start..].find('<').unwrap() + start;
    &doc[start..end]
}

/// waagent 2.7.3's health report (`wire.py` `_build_health_report`), for `id`.
fn report_of(id: &Identity, state: &str, details: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Health \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><GoalStateIncarnation>1\
         </GoalStateIncarnation><Container><ContainerId>{}</ContainerId><RoleInstanceList>\
         <Role><InstanceId>{}</InstanceId><Health><State>{state}</State>{details}</Health>\
         </Role></RoleInstanceList></Container></Health>",
        id.container_id, id.instance_id
    )
}

#[test]
fn versions_list_2012_11_30_as_supported() {
    let a = answer(&get("/?comp=versions"), b"", || None);
    assert_eq!(a.response.status, 200);
    let doc = &a.response.body;
    let supported = &doc[doc.find("<Supported>").unwrap()..];
    assert!(supported.contains("<Version>2012-11-30</Version>"), "{doc}");
}

#[test]
fn the_goal_state_names_the_callers_container_and_instance() {
    let f = vm(VM1, "vm1");
    let id = Identity::of(&f);
    assert_eq!(id, Identity::of(&f), "deterministic");
    assert!(uuid::Uuid::parse_str(&id.container_id).is_ok());
    assert_eq!(id.instance_id, "02aab8a474ef476e8182f6d2ba4166a6.vm1");
    for target in ["/machine/?comp=goalstate", "/machine?comp=goalstate"] {
        let a = answer(&get(target), b"", || Some(f.clone()));
        assert_eq!(a.response.status, 200, "{target}");
        let doc = &a.response.body;
        assert!(!doc.contains(" xmlns=\""), "no default namespace: {doc}");
        assert_eq!(text_of(doc, "Incarnation"), "1");
        assert_eq!(text_of(doc, "ContainerId"), id.container_id);
        assert_eq!(text_of(doc, "InstanceId"), id.instance_id);
        let want = format!(
            "http://168.63.129.16:80/machine/{}/{}?comp=config&amp;type=hostingEnvironmentConfig&amp;incarnation=1",
            id.container_id, id.instance_id
        );
        assert_eq!(text_of(doc, "HostingEnvironmentConfig"), want);
        assert!(!text_of(doc, "SharedConfig").contains(char::is_whitespace));
        assert!(text_of(doc, "ConfigName").starts_with("02aab8a474ef476e8182f6d2ba4166a6."));
    }
    let other = Identity::of(&vm("11111111-2222-3333-4444-555555555555", "vm1"));
    assert_ne!(other.container_id, id.container_id);
    assert_eq!(
        answer(&get("/machine?comp=goalstate"), b"", || None)
            .response
            .status,
        403
    );
}

#[test]
fn configuration_documents_are_served_only_to_their_instance() {
    let f = vm(VM1, "vm1");
    let id = Identity::of(&f);
    let base = format!("/machine/{}/{}", id.container_id, id.instance_id);
    let hosting = format!("{base}?comp=config&type=hostingEnvironmentConfig&incarnation=1");
    let a = answer(&get(&hosting), b"", || Some(f.clone()));
    assert_eq!(a.response.status, 200);
    assert!(a.response.body.contains("<HostingEnvironmentConfig "));
    assert!(a.response.body.contains("instance=\"vm1\""));
    let shared = format!("{base}?comp=config&type=sharedConfig&incarnation=1");
    let a = answer(&get(&shared), b"", || Some(f.clone()));
    assert_eq!(a.response.status, 200);
    assert!(a.response.body.contains("<SharedConfig "));
    let unknown = format!("{base}?comp=config&type=fullConfig&incarnation=1");
    assert_eq!(
        answer(&get(&unknown), b"", || Some(f.clone()))
            .response
            .status,
        404
    );
    let other = vm("11111111-2222-3333-4444-555555555555", "vm2");
    assert_eq!(
        answer(&get(&hosting), b"", || Some(other)).response.status,
        403
    );
    assert_eq!(answer(&get(&hosting), b"", || None).response.status, 403);
}

#[test]
fn values_in_documents_are_escaped() {
    let id = Identity::of(&vm(VM1, "a<b&\"c"));
    for doc in [
        goal_state(&id),
        hosting_environment(&id),
        shared_config(&id),
    ] {
        assert!(!doc.contains("a<b"), "{doc}");
        assert!(doc.contains("a&lt;b&amp;"), "{doc}");
        let mut r = quick_xml::Reader::from_str(&doc);
        loop {
            match r.read_event().unwrap_or_else(|e| panic!("{e}: {doc}")) {
                quick_xml::events::Event::Eof => break,
                _ => continue,
            }
        }
    }
}

#[test]
fn a_ready_report_is_accepted_and_read() {
    let f = vm(VM1, "vm1");
    let id = Identity::of(&f);
    let body = report_of(&id, "Ready", "");
    let a = answer(&post("/machine?comp=health"), body.as_bytes(), || {
        Some(f.clone())
    });
    assert_eq!(a.response, Response::empty(200));
    let h = a.health.expect("the report");
    assert_eq!(
        (
            h.incarnation.as_str(),
            h.state.as_str(),
            h.sub_status.as_str()
        ),
        ("1", "Ready", "")
    );
    assert_eq!(h.container_id, id.container_id);
    // cloud-init's failure report, with its details (and an entity in the description).
    let details = "<Details><SubStatus>ProvisioningFailed</SubStatus>\
                   <Description>no &lt;disk&gt; found</Description></Details>";
    let body = report_of(&id, "NotReady", details);
    let a = answer(&post("/machine/?comp=health"), body.as_bytes(), || {
        Some(f.clone())
    });
    let h = a.health.expect("the report");
    assert_eq!(h.state, "NotReady");
    assert_eq!(h.sub_status, "ProvisioningFailed");
    assert_eq!(h.description, "no <disk> found");
}

#[test]
fn a_report_for_another_vm_or_no_report_is_refused() {
    let f = vm(VM1, "vm1");
    let other = Identity::of(&vm("11111111-2222-3333-4444-555555555555", "vm2"));
    let body = report_of(&other, "Ready", "");
    let a = answer(&post("/machine?comp=health"), body.as_bytes(), || {
        Some(f.clone())
    });
    assert_eq!((a.response.status, a.health), (403, None));
    let a = answer(&post("/machine?comp=health"), body.as_bytes(), || None);
    assert_eq!(a.response.status, 403);
    for bad in [
        "".to_string(),
        "<Health>".to_string(),
        "<Other/>".to_string(),
        report_of(&Identity::of(&f), "Sideways", ""),
        format!("<Health>{}</Health>", "<a>".repeat(64)),
    ] {
        let a = answer(&post("/machine?comp=health"), bad.as_bytes(), || {
            Some(f.clone())
        });
        assert_eq!(a.response.status, 400, "{bad}");
    }
}

#[test]
fn sinks_take_posts_and_the_rest_is_404() {
    let a = answer(
        &post("/machine?comp=telemetrydata"),
        b"<TelemetryData/>",
        || None,
    );
    assert_eq!(a.response.status, 200);
    assert_eq!(
        answer(&post("/HealthService"), b"{}", || None)
            .response
            .status,
        200
    );
    for r in [
        get("/"),
        get("/machine?comp=health"),
        post("/?comp=versions"),
        get("/machine?comp=roleProperties"),
        get("/metadata/instance"),
    ] {
        assert_eq!(
            answer(&r, b"", || Some(vm(VM1, "vm1"))).response.status,
            404,
            "{r:?}"
        );
    }
}

/// cloud-init 22.4.2's report (`GoalStateHealthReporter.build_report`), indented as it sends it.
#[test]
fn cloud_init_s_indented_report_is_read() {
    let f = vm(VM1, "vm1");
    let id = Identity::of(&f);
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <GoalStateIncarnation>1</GoalStateIncarnation>
  <Container>
    <ContainerId>{}</ContainerId>
    <RoleInstanceList>
      <Role>
        <InstanceId>{}</InstanceId>
        <Health>
          <State>NotReady</State>
          <Details>
            <SubStatus>ProvisioningFailed</SubStatus>
            <Description>failed to mount the provisioning media</Description>
          </Details>
        </Health>
      </Role>
    </RoleInstanceList>
  </Container>
</Health>
"#,
        id.container_id, id.instance_id
    );
    let h = health::parse(body.as_bytes()).expect("a report");
    assert_eq!(h.instance_id, id.instance_id);
    assert_eq!(
        (h.state.as_str(), h.sub_status.as_str()),
        ("NotReady", "ProvisioningFailed")
    );
    assert_eq!(h.description, "failed to mount the provisioning media");
}
