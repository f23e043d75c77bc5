//! The platform services as the per-vnet HTTP loop (`guest::http`) runs them: each is a vnet's
//! [`View`] (who is calling) around a pure answer function (`imds::answer`, `wire::answer`).

use std::net::SocketAddr;

use super::attribution::View;
use super::http::Service;
use super::{imds, wire};

/// The Instance Metadata Service of one vnet (169.254.169.254:80).
pub struct Imds(pub View);

impl Service for Imds {
    const NAME: &'static str = "IMDS";
    const MAX_BODY: usize = 0;

    fn answer(&self, req: &imds::Request, _body: &[u8], peer: SocketAddr) -> imds::Response {
        imds::answer(req, || self.0.caller(peer, Self::NAME, &req.path))
    }

    fn vnet(&self) -> &str {
        &self.0.vnet
    }
}

/// The WireServer of one vnet (168.63.129.16:80).
pub struct Wire(pub View);

impl Service for Wire {
    const NAME: &'static str = "WireServer";
    const MAX_BODY: usize = wire::MAX_BODY;

    fn answer(&self, req: &imds::Request, body: &[u8], peer: SocketAddr) -> imds::Response {
        let mut vm = None;
        let a = wire::answer(req, body, || {
            vm = self.0.caller(peer, Self::NAME, &req.path);
            vm.clone()
        });
        if let (Some(h), Some(f)) = (&a.health, &vm) {
            let span = tracing::info_span!("vm", name = %f.name, vm_id = %f.vm_id);
            let _in = span.enter();
            tracing::info!(state = %h.state, sub_status = %h.sub_status,
                description = %h.description, incarnation = %h.incarnation,
                "WireServer: health report");
        }
        a.response
    }

    fn vnet(&self) -> &str {
        &self.0.vnet
    }
}
