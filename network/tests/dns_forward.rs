//! The DNS forwarder (off by default): names outside the vnet go to the configured forwarder and
//! its answer comes back; the vnet's own names never leave; without a forwarder, REFUSED.
//! Loopback only: the "forwarder" is a small DNS server of the test's own.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;
use vmnode_network::dns::{serve_with, StaticNames};

/// A forwarder that answers every A query with 192.0.2.7, counting the queries it saw.
async fn upstream(seen: Arc<AtomicUsize>) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = s.recv_from(&mut buf).await.unwrap();
            seen.fetch_add(1, Ordering::SeqCst);
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_available(true);
            r.add_queries(q.queries().iter().cloned());
            let name = q.queries()[0].name().clone();
            r.add_answer(Record::from_rdata(
                name,
                30,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
            ));
            s.send_to(&r.to_vec().unwrap(), from).await.unwrap();
        }
    });
    at
}

async fn server(forwarder: Option<SocketAddr>) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = s.local_addr().unwrap();
    let book = Arc::new(StaticNames::new().with("vm1", Ipv4Addr::new(10, 1, 0, 4)));
    tokio::spawn(serve_with(s, book, forwarder));
    at
}

async fn ask(server: SocketAddr, name: &str, id: u16) -> Message {
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    c.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn a_of(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn outside_names_go_to_the_forwarder_and_ours_never_leave() {
    let seen = Arc::new(AtomicUsize::new(0));
    let up = upstream(seen.clone()).await;
    let srv = server(Some(up)).await;

    let r = ask(srv, "example.org.", 4242).await;
    assert_eq!((r.id(), r.response_code()), (4242, ResponseCode::NoError));
    assert_eq!(a_of(&r), vec![Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let r = ask(srv, "vm1.", 7).await;
    assert_eq!(a_of(&r), vec![Ipv4Addr::new(10, 1, 0, 4)]);
    assert!(r.authoritative());
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a vnet name was forwarded");
}

#[tokio::test]
async fn without_a_forwarder_outside_names_are_refused() {
    let srv = server(None).await;
    let r = ask(srv, "example.org.", 9).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(r.answers().is_empty());
}

#[tokio::test]
async fn a_silent_forwarder_gets_refused_not_silence() {
    // A forwarder that never answers: the guest still gets our REFUSED after the wait.
    let mute = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let srv = server(Some(mute.local_addr().unwrap())).await;
    let r = ask(srv, "example.org.", 11).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    drop(mute);
}
