//! The guest-facing platform services: what an Azure guest reaches at the cloud's fixed
//! addresses on its own network, as on Azure (design note `azure-guest-protocol.md`): the
//! Instance Metadata Service at 169.254.169.254:80 and a first slice of the WireServer at
//! 168.63.129.16:80 (versions, goal state, HostingEnvironmentConfig, SharedConfig, the health
//! report, the telemetry sinks).
//!
//! ```text
//!  daemon ── Platform ──▶ net::NodeNet (as net::PlatformServices)
//!  bring_up(vnet): 169.254.169.254/32 and 168.63.129.16/32 on the bridge, a TCP listener on each
//!     ├─▶ Platform::serve_imds ─▶ http::serve(services::Imds) ─▶ imds::answer (pure)
//!     └─▶ Platform::serve_wire ─▶ http::serve(services::Wire) ─▶ wire::answer (pure)
//!            (one task per vnet and service, aborted with the vnet)
//!            caller? ─▶ attribution::View (store: vnet + source address → NIC → VM)
//! ```
//!
//! `net` does not know this module (it is handed a `PlatformServices`), so the folders keep no
//! import cycle.

mod attribution;
mod http;
pub mod imds;
mod services;
pub mod wire;

use std::sync::Arc;

use crate::net::{PlatformServices, Serving};
use crate::storage::db::Db;

/// The platform services of every vnet of this node: what they read the callers from.
pub struct Platform {
    db: Db,
    subscription: String,
}

impl Platform {
    pub fn new(db: Db, subscription: String) -> Platform {
        Platform { db, subscription }
    }

    /// Who calls on `vnet`'s listeners.
    fn view(&self, vnet: &str) -> attribution::View {
        attribution::View {
            db: self.db.clone(),
            subscription: self.subscription.clone(),
            vnet: vnet.to_string(),
        }
    }
}

impl PlatformServices for Platform {
    fn serve_imds(&self, vnet: &str, listener: tokio::net::TcpListener) -> Serving {
        let service = Arc::new(services::Imds(self.view(vnet)));
        Box::pin(http::serve(listener, service))
    }

    fn serve_wire(&self, vnet: &str, listener: tokio::net::TcpListener) -> Serving {
        let service = Arc::new(services::Wire(self.view(vnet)));
        Box::pin(http::serve(listener, service))
    }
}
