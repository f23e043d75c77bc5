//! Unit tests of the DNS core.

use super::*;
use hickory_proto::op::MessageType;

fn book() -> StaticNames {
    StaticNames::new()
        .with("vm1.abc.internal.cloudapp.net", Ipv4Addr::new(10, 1, 0, 4))
        .with("vm1", Ipv4Addr::new(10, 1, 0, 4))
        .with("vm2.abc.internal.cloudapp.net", Ipv4Addr::new(10, 1, 0, 5))
        .with("vm2", Ipv4Addr::new(10, 1, 0, 5))
        .with_zone("abc.internal.cloudapp.net")
}

fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(0x4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

fn ask(m: &Message) -> Message {
    let resp = handle(&book(), &m.to_vec().unwrap()).expect("a response");
    Message::from_vec(&resp).unwrap()
}

fn a_answers(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_records_any_case_with_or_without_dot() {
    for name in [
        "vm1.abc.internal.cloudapp.net.",
        "vm1.abc.internal.cloudapp.net",
        "VM1.Abc.Internal.CloudApp.NET.",
        "vm1",
        "Vm1.",
    ] {
        let r = ask(&query(name, RecordType::A));
        assert_eq!(r.response_code(), ResponseCode::NoError, "{name}");
        assert_eq!(a_answers(&r), vec![Ipv4Addr::new(10, 1, 0, 4)], "{name}");
        assert_eq!(r.id(), 0x4242);
        assert_eq!(r.message_type(), MessageType::Response);
        assert!(r.authoritative());
        assert!(r.recursion_desired(), "RD is copied");
        assert!(!r.recursion_available());
        assert_eq!(r.queries().len(), 1);
        // The answer's owner is the name as asked (case kept), as a FQDN.
        let owner = r.answers()[0].name();
        assert!(owner.is_fqdn());
        assert_eq!(
            owner.to_ascii().trim_end_matches('.'),
            name.trim_end_matches('.')
        );
        assert_eq!(r.answers()[0].ttl(), TTL_SECS);
    }
}

#[test]
fn ptr_records() {
    let r = ask(&query("4.0.1.10.in-addr.arpa.", RecordType::PTR));
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.authoritative());
    match r.answers()[0].data() {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "vm1.abc.internal.cloudapp.net."),
        other => panic!("{other:?}"),
    }
    let r = ask(&query("5.0.1.10.IN-ADDR.ARPA", RecordType::PTR));
    assert_eq!(r.answers().len(), 1);
    // Unknown addresses and malformed reverse names are not ours.
    for name in [
        "9.0.1.10.in-addr.arpa.",
        "0.1.10.in-addr.arpa.",
        "04.0.1.10.in-addr.arpa.",
        "256.0.1.10.in-addr.arpa.",
        "1.4.0.1.10.in-addr.arpa.",
        "x.0.1.10.in-addr.arpa.",
    ] {
        let r = ask(&query(name, RecordType::PTR));
        assert_eq!(r.response_code(), ResponseCode::Refused, "{name}");
        assert!(r.answers().is_empty());
    }
}

#[test]
fn other_types_and_names() {
    // AAAA of a known name: NOERROR, no answer.
    let r = ask(&query("vm1", RecordType::AAAA));
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.answers().is_empty());
    assert!(r.authoritative());
    // ANY gets the A record.
    assert_eq!(a_answers(&ask(&query("vm2", RecordType::ANY))).len(), 1);
    // A missing name in our zone: NXDOMAIN, authoritative.
    let r = ask(&query("vm9.abc.internal.cloudapp.net", RecordType::A));
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert!(r.authoritative());
    // The zone's neighbours are not in it.
    let r = ask(&query("xabc.internal.cloudapp.net", RecordType::A));
    assert_eq!(r.response_code(), ResponseCode::Refused);
    // Anything else: REFUSED, not authoritative, no forwarding.
    for name in ["example.com.", "vm1.example.com", "localhost"] {
        let r = ask(&query(name, RecordType::A));
        assert_eq!(r.response_code(), ResponseCode::Refused, "{name}");
        assert!(!r.authoritative());
        assert!(r.answers().is_empty());
    }
    // Class CH (e.g. version.bind): refused.
    let mut m = query("vm1", RecordType::A);
    m.queries_mut()[0].set_query_class(DNSClass::CH);
    assert_eq!(ask(&m).response_code(), ResponseCode::Refused);
}

#[test]
fn protocol_errors() {
    let b = book();
    // Less than a header, or a response: dropped.
    assert!(handle(&b, &[]).is_none());
    assert!(handle(&b, &[0; 11]).is_none());
    let mut resp = query("vm1", RecordType::A);
    resp.set_message_type(MessageType::Response);
    assert!(handle(&b, &resp.to_vec().unwrap()).is_none());
    // A header and garbage: FORMERR with the id.
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0x3f, b'a']);
    let r = Message::from_vec(&handle(&b, &junk).unwrap()).unwrap();
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    assert_eq!(r.id(), 0x1234);
    assert_eq!(r.message_type(), MessageType::Response);
    // No question, or two: FORMERR.
    let mut none = query("vm1", RecordType::A);
    none.take_queries();
    assert_eq!(ask(&none).response_code(), ResponseCode::FormErr);
    let mut two = query("vm1", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("vm2").unwrap(),
        RecordType::A,
    ));
    assert_eq!(ask(&two).response_code(), ResponseCode::FormErr);
    // Other opcodes: NOTIMP.
    let mut update = query("vm1", RecordType::A);
    update.set_op_code(OpCode::Update);
    assert_eq!(ask(&update).response_code(), ResponseCode::NotImp);
    // EDNS is answered with EDNS.
    let mut edns = query("vm1", RecordType::A);
    edns.set_edns(Edns::new());
    let r = ask(&edns);
    assert_eq!(r.max_payload(), EDNS_PAYLOAD);
    assert_eq!(a_answers(&r).len(), 1);
}

#[test]
fn odd_labels_are_not_names() {
    // A label with a dot or a control byte inside cannot match a book entry.
    let name = Name::from_labels(vec![b"vm1.abc".to_vec(), b"x".to_vec()]).unwrap();
    assert_eq!(lower_name(&name), None);
    let name = Name::from_labels(vec![b"vm\x001".to_vec()]).unwrap();
    assert_eq!(lower_name(&name), None);
    assert_eq!(lower_name(&Name::root()).as_deref(), Some(""));
    assert_eq!(
        arpa_to_ip("1.2.3.4.in-addr.arpa"),
        Some(Ipv4Addr::new(4, 3, 2, 1))
    );
    assert_eq!(arpa_to_ip("in-addr.arpa"), None);
}
