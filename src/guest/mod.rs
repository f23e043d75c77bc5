//! The guest-facing platform services: what an Azure guest reaches at the cloud's fixed
//! addresses on its own network, as on Azure (design note `azure-guest-protocol.md`). Now the
//! Instance Metadata Service at 169.254.169.254:80; the WireServer (168.63.129.16:80) comes
//! here later.
//!
//! ```text
//!  daemon ── Platform ──▶ net::NodeNet (as net::PlatformServices)
//!  bring_up(vnet): 169.254.169.254/32 on the bridge, a TCP listener bound to it
//!     └─▶ Platform::serve_imds ─▶ http::serve (one task per vnet, aborted with the vnet)
//!            request ─▶ imds::answer (pure) ─ caller? ─▶ attribution::View (store: NIC → VM)
//! ```
//!
//! `net` does not know this module (it is handed a `PlatformServices`), so the folders keep no
//! import cycle.

mod attribution;
mod http;
pub mod imds;

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
}

impl PlatformServices for Platform {
    fn serve_imds(&self, vnet: &str, listener: tokio::net::TcpListener) -> Serving {
        let view = Arc::new(attribution::View {
            db: self.db.clone(),
            subscription: self.subscription.clone(),
            vnet: vnet.to_string(),
        });
        Box::pin(http::serve(listener, view))
    }
}
