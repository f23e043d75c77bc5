//! Options 245 (the WireServer) and 121 (routes to the platform and metadata addresses): sent
//! unrequested, to configured clients too, after everything else, and to waagent's own DISCOVER.

use super::*;

/// A DISCOVER with no parameter request list at all, and one asking only for a mask.
fn unasking(kind: MessageType) -> Vec<Message> {
    let mut none = request(MAC, kind);
    none.opts_mut().remove(OptionCode::ParameterRequestList);
    let mut mask = request(MAC, kind);
    mask.opts_mut()
        .insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
        ]));
    vec![none, mask]
}

#[test]
fn platform_options_are_sent_unrequested() {
    let book = Book::with_nic();
    for m in unasking(MessageType::Discover) {
        assert_lease_reply(&run(&book, &m).unwrap(), MessageType::Offer);
    }
    for mut m in unasking(MessageType::Request) {
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(ip("10.1.0.4")));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(PLATFORM_ADDR));
        assert_lease_reply(&run(&book, &m).unwrap(), MessageType::Ack);
    }
}

/// waagent sends its own DHCP request from a guest that already has its address; renewing,
/// rebinding and rebooting clients must get the options as well as a fresh one.
#[test]
fn configured_clients_get_platform_options() {
    let book = Book::with_nic();
    let four = ip("10.1.0.4");
    // A DISCOVER from a client that keeps its address in ciaddr: unicast to it.
    let mut discover = unasking(MessageType::Discover).remove(0);
    discover.set_ciaddr(four);
    let r = run(&book, &discover).unwrap();
    assert_eq!(r.destination(), SocketAddrV4::new(four, 68));
    assert_lease_reply(&r, MessageType::Offer);
    // RENEWING (unicast, no broadcast flag) and REBINDING (broadcast): ciaddr, no server id.
    for broadcast in [false, true] {
        let mut m = unasking(MessageType::Request).remove(0);
        m.set_ciaddr(four);
        m.set_flags(Flags::new(if broadcast { 0x8000 } else { 0 }));
        let r = run(&book, &m).unwrap();
        assert_eq!(r.destination(), SocketAddrV4::new(four, 68));
        assert_eq!(decode(&r).opts().msg_type(), Some(MessageType::Ack));
        assert_platform_options(&r, "10.1.0.1");
    }
    // INIT-REBOOT: requested address, no ciaddr, no server id.
    let mut reboot = unasking(MessageType::Request).remove(1);
    reboot
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(four));
    assert_lease_reply(&run(&book, &reboot).unwrap(), MessageType::Ack);
    // INFORM: an ACK without a lease, with the routes and the WireServer all the same.
    let mut inform = unasking(MessageType::Inform).remove(0);
    inform.set_ciaddr(four);
    assert_platform_options(&run(&book, &inform).unwrap(), "10.1.0.1");
    // A NAK carries neither.
    let mut wrong = unasking(MessageType::Request).remove(0);
    wrong.set_ciaddr(ip("10.1.0.9"));
    let nak = run(&book, &wrong).unwrap();
    assert_nak(&nak);
    assert_eq!(raw_option(nak.packet(), 121), None);
    assert_eq!(raw_option(nak.packet(), 245), None);
}

/// With both options switched off a reply is what it was before they existed; with them on,
/// the same bytes are followed by 121 and 245, then End.
#[test]
fn platform_options_come_last_and_change_nothing_else() {
    let book = Book::with_nic();
    let plain = DhcpConfig {
        wireserver: None,
        gateway_routes: vec![],
        ..DhcpConfig::default()
    };
    for m in [
        request(MAC, MessageType::Discover),
        selecting(MAC, ip("10.1.0.4"), PLATFORM_ADDR),
    ] {
        let before = handle(&plain, &book, &bytes(&m)).unwrap();
        let after = run(&book, &m).unwrap();
        let (b, a) = (before.packet(), after.packet());
        let end = b.iter().rposition(|&x| x == 255).unwrap();
        assert!(b[end + 1..].iter().all(|&x| x == 0), "padding after End");
        assert_eq!(a[..end], b[..end]);
        let tail = [
            &[121, 23][..],
            &azure_routes("10.1.0.1"),
            &[245, 4, 168, 63, 129, 16, 255],
        ]
        .concat();
        assert_eq!(a[end..end + tail.len()], tail[..]);
    }
}

#[test]
fn platform_options_follow_the_gateway_and_the_platform_address() {
    let book = Book::with_wide_nic();
    let cfg = DhcpConfig::for_platform(ip("100.64.0.9"));
    let r = handle(&cfg, &book, &bytes(&request(MAC, MessageType::Discover))).unwrap();
    let want = routes_via(ip("172.16.0.1"), ip("100.64.0.9"));
    assert_eq!(raw_option(r.packet(), 121), Some(want));
    assert_eq!(raw_option(r.packet(), 245), Some(vec![100, 64, 0, 9]));
    assert_eq!(raw_option(r.packet(), 54), Some(vec![100, 64, 0, 9]));
    assert_eq!(raw_option(r.packet(), 3), Some(vec![172, 16, 0, 1]));
}

/// The DISCOVER WALinuxAgent 2.7.3 sends itself when it finds neither the /32 route to the
/// WireServer nor a lease with option 245 (`azurelinuxagent/common/dhcp.py`,
/// `build_dhcp_request`): 244 bytes, the header zero but for op/htype/hlen, xid, the broadcast
/// flag on its second try, and chaddr; then the cookie, option 53 = DISCOVER and End. It reads
/// option 245 from the OFFER (`parse_dhcp_resp`), which must come to the broadcast address
/// since the agent's socket has no address of its own.
#[test]
fn waagents_own_discover_gets_the_wireserver() {
    let book = Book::with_nic();
    for broadcast in [false, true] {
        let mut p = vec![0u8; 244];
        p[..3].copy_from_slice(&[1, 1, 6]);
        p[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        if broadcast {
            p[0x0a] = 0x80;
        }
        p[0x1c..0x22].copy_from_slice(&MAC.octets());
        p[0xec..].copy_from_slice(&[99, 130, 83, 99, 53, 1, 1, 255]);
        let r = handle(&cfg(), &book, &p).expect("an OFFER");
        assert_eq!(r.destination(), SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        assert_eq!(decode(&r).opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(decode(&r).flags().broadcast(), broadcast);
        assert_platform_options(&r, "10.1.0.1");
        // What `validate_dhcp_resp` compares: cookie, xid and MAC at the request's offsets.
        let o = r.packet();
        for (at, len) in [(0xec, 4), (4, 4), (0x1c, 6)] {
            assert_eq!(o[at..at + len], p[at..at + len], "offset {at:#x}");
        }
    }
}
