use super::*;

fn code<T: std::fmt::Debug>(r: Result<T>) -> (u16, &'static str) {
    let e = r.unwrap_err();
    (e.status.as_u16(), e.code)
}

fn blocks(n: usize, tag: &str) -> String {
    let id = base64::engine::general_purpose::STANDARD.encode("block-0001");
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
    for _ in 0..n {
        s.push_str(&format!("<{tag}>{id}</{tag}>"));
    }
    s.push_str("</BlockList>");
    s
}

fn nested(depth: usize) -> String {
    let mut s = "<BlockList>".repeat(depth);
    s.push_str(&"</BlockList>".repeat(depth));
    s
}

#[test]
fn a_block_list_is_read_in_order() {
    let body =
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>\n  <Latest>QUFB</Latest>\n  \
                <Committed> QkJC </Committed><Uncommitted>Q0ND</Uncommitted>\n</BlockList>";
    assert_eq!(
        block_list(body.as_bytes()).unwrap(),
        vec![
            (BlockRef::Latest, "QUFB".to_string()),
            (BlockRef::Committed, "QkJC".to_string()),
            (BlockRef::Uncommitted, "Q0ND".to_string()),
        ]
    );
    assert_eq!(block_list(b"<BlockList/>").unwrap(), vec![]);
}

#[test]
fn the_cloud_cap_of_50000_blocks_holds() {
    let max = blocks(MAX_BLOCKS, "Latest");
    assert_eq!(block_list(max.as_bytes()).unwrap().len(), MAX_BLOCKS);
    let over = blocks(MAX_BLOCKS + 1, "Latest");
    assert_eq!(code(block_list(over.as_bytes())), (400, "BlockListTooLong"));
    // The longest entries of a full list fit the byte cap.
    let id = "A".repeat(88);
    let longest = format!("<Uncommitted>{id}</Uncommitted>\n").repeat(MAX_BLOCKS);
    let body = format!("<BlockList>\n{longest}</BlockList>");
    assert!(body.len() <= MAX_BLOCK_LIST_BYTES);
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    // 35,000 levels once aborted the daemon (a recursive reader on a 2 MiB stack); the refusal
    // is made on a small stack here to show nothing deep is built.
    let body = nested(35_000);
    let got = std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || code(block_list(body.as_bytes())))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(got, (400, "InvalidXmlDocument"));
    assert_eq!(
        code(block_list(nested(3).as_bytes())),
        (400, "InvalidXmlDocument")
    );
}

#[test]
fn malformed_and_foreign_bodies_are_invalid_xml() {
    for bad in [
        &b"<BlockList><Latest>QUFB</Committed></BlockList>"[..],
        b"<BlockList><Latest>QUFB</Latest>",
        b"<BlockList></BlockList><BlockList></BlockList>",
        b"<Blocks><Latest>QUFB</Latest></Blocks>",
        b"<BlockList><Other>QUFB</Other></BlockList>",
        b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]><BlockList><Latest>&a;</Latest></BlockList>",
        b"<BlockList><Latest>&unknown;</Latest></BlockList>",
        b"junk<BlockList/>",
        b"\xff\xfe<BlockList/>",
        b"",
    ] {
        assert_eq!(
            code(block_list(bad)),
            (400, "InvalidXmlDocument"),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_bad_block_id_is_an_invalid_node_value() {
    let long = base64::engine::general_purpose::STANDARD.encode([7u8; 65]);
    for id in ["", "not base64!", "QUF", long.as_str()] {
        let body = format!("<BlockList><Latest>{id}</Latest></BlockList>");
        let e = block_list(body.as_bytes()).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (400, "InvalidXmlNodeValue"),
            "{id}"
        );
        assert_eq!(e.details[0], ("XmlNodeName", "Latest".to_string()));
    }
}

#[test]
fn an_oversized_body_is_refused_before_it_is_read() {
    let body = vec![b' '; MAX_BLOCK_LIST_BYTES + 1];
    assert_eq!(code(block_list(&body)), (413, "RequestBodyTooLarge"));
    let body = vec![b' '; MAX_ACL_BYTES + 1];
    assert_eq!(
        code(signed_identifiers(&body)),
        (413, "RequestBodyTooLarge")
    );
}

fn acl(n: usize) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><SignedIdentifiers>");
    for i in 0..n {
        s.push_str(&format!(
            "<SignedIdentifier><Id>policy-{i}</Id><AccessPolicy><Start>2030-01-01T00:00:00Z</Start>\
             <Expiry>2030-01-02T00:00:00Z</Expiry><Permission>rl</Permission></AccessPolicy>\
             </SignedIdentifier>"
        ));
    }
    s.push_str("</SignedIdentifiers>");
    s
}

#[test]
fn five_signed_identifiers_and_no_more() {
    let ids = signed_identifiers(acl(5).as_bytes()).unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[4].id, "policy-4");
    assert_eq!(ids[4].permission.as_deref(), Some("rl"));
    assert_eq!(ids[0].start.as_deref(), Some("2030-01-01T00:00:00Z"));
    assert_eq!(
        code(signed_identifiers(acl(6).as_bytes())),
        (400, "InvalidXmlDocument")
    );
    assert_eq!(
        code(signed_identifiers(acl(100).as_bytes())),
        (400, "InvalidXmlDocument")
    );
    assert!(signed_identifiers(b"  ").unwrap().is_empty());
    assert!(signed_identifiers(b"<SignedIdentifiers/>")
        .unwrap()
        .is_empty());
}

#[test]
fn an_identifier_needs_an_id_of_at_most_64_characters() {
    for id in [String::new(), "\u{e9}".repeat(65)] {
        let body = format!("<SignedIdentifiers><SignedIdentifier><Id>{id}</Id></SignedIdentifier></SignedIdentifiers>");
        assert_eq!(
            code(signed_identifiers(body.as_bytes())),
            (400, "InvalidXmlNodeValue")
        );
    }
    let id = "\u{e9}".repeat(64);
    let body = format!(
        "<SignedIdentifiers><SignedIdentifier><Id>{id}</Id></SignedIdentifier></SignedIdentifiers>"
    );
    assert_eq!(signed_identifiers(body.as_bytes()).unwrap()[0].id, id);
}
