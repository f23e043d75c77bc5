//! The management API: ARM-shaped JSON over HTTPS on `--listen` and plain HTTP on the unix
//! socket in the run dir, both behind the daemon's bearer token.
//!
//! - `error`: the cloud's error shape and the mapping of module errors to status codes
//! - `routes`: the path table (paths are matched case-insensitively, as ARM does)
//! - `compute`: virtual machines; `extensions`: VM extensions and Run Command; `resources`: subscriptions, groups, sizes, images, NICs
//! - `server`: listeners, TLS, auth; `tls`: the CA and certificate made at first start
//! - `viewer`: the boot-diagnostics pages for browsers (HTML over the API's JSON)

pub mod body;
pub mod compute;
pub mod deployments;
pub mod diagnostics;
pub mod error;
pub mod extensions;
pub mod lookup;
pub mod network;
pub mod resources;
pub mod routes;
pub mod server;
pub mod storage;
pub mod viewer;

use std::sync::Arc;

use crate::vm::Node;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub token: Arc<String>,
    pub deployments: Arc<crate::deploy::Deployments>,
    /// VM extensions and Run Command.
    pub ext: Arc<crate::extensions::Extensions>,
    /// Builds the API a deployment's engine calls (`server::engine_api`).
    pub engine_api: fn(&AppState) -> crate::deploy::engine::Api,
    /// Storage accounts (`Microsoft.Storage/storageAccounts`).
    pub accounts: Arc<crate::blob::accounts::Accounts>,
}

/// The node has one subscription: any other is 404 SubscriptionNotFound.
pub fn check_sub(state: &AppState, sub: &str) -> Result<(), error::ApiError> {
    if sub.eq_ignore_ascii_case(&state.node.subscription) {
        return Ok(());
    }
    Err(error::ApiError::not_found(
        "SubscriptionNotFound",
        format!(
            "The subscription '{sub}' could not be found. This node's subscription is {}.",
            state.node.subscription
        ),
    ))
}

/// The subscription is the node's and the resource group exists.
pub fn check_rg(state: &AppState, sub: &str, rg: &str) -> Result<(), error::ApiError> {
    check_sub(state, sub)?;
    if crate::groups::exists(&state.node.db, rg)? {
        return Ok(());
    }
    Err(crate::vm::VmError::ResourceGroupNotFound(rg.into()).into())
}
