//! `vmnode serve`: start-up order and shutdown. VMs are never stopped by the daemon's exit.

use std::sync::Arc;

use anyhow::Context;

use crate::api::{self, AppState};
use crate::config::DaemonConfig;
use crate::net::NodeNet;
use crate::node::Node;
use crate::storage::{db::Db, fsutil::write_atomic};
use crate::vm::Vms;

fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Reads the token, making one on first start (0600 in the state dir).
fn ensure_token(path: &std::path::Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let t = random_hex(32);
    write_atomic(path, t.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(t)
}

fn ensure_meta(db: &Db, key: &str, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Some(v) = db.meta_get(key)? {
        return Ok(v);
    }
    let v = make();
    db.meta_set(key, &v)?;
    Ok(v)
}

/// The blob service on `--blob-listen`: the node's account (key in the db, and in
/// `state/storage/{account}.json` 0600 for the CLI), the disk-lease check, then the listener.
/// Returns the store the service serves.
async fn start_blob_service(
    cfg: &DaemonConfig,
    db: &Db,
    account: &str,
    key: &str,
    health: Arc<crate::storage::health::Health>,
) -> anyhow::Result<Arc<crate::blob::Store>> {
    let store = Arc::new(crate::blob::Store::new(cfg.paths.blobs()));
    store
        .add_account(account, &[key])
        .context("serving the node's storage account")?;
    let endpoint = format!("http://{}", cfg.blob_listen);
    let file = crate::blob::AccountFile {
        name: account.to_string(),
        key: key.to_string(),
        blob_endpoint: endpoint.clone(),
    };
    write_atomic(
        &crate::blob::account_file(&cfg.paths.state, account),
        &serde_json::to_vec_pretty(&file)?,
        0o600,
    )?;
    let vms = db.clone();
    let attached: crate::blob::AttachedFn = Arc::new(move || {
        vms.list::<serde_json::Value>(crate::storage::db::Kind::Vm)
            .unwrap_or_default()
            .iter()
            .flat_map(|v| {
                let vm_id = v.get("vm_id").and_then(|i| i.as_str()).unwrap_or_default();
                let data = v.get("data_disks").and_then(|d| d.as_array());
                let paths = std::iter::once(v.get("os_disk_path"))
                    .chain(data.into_iter().flatten().map(|d| d.get("path")));
                paths
                    .filter_map(|p| p?.as_str())
                    .map(|p| crate::blob::AttachedDisk {
                        path: p.into(),
                        vm_id: vm_id.to_string(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    for f in crate::blob::check(&store, &attached(), true) {
        tracing::warn!(kind = %f.kind, blob = %f.blob, repaired = f.repaired, "{}", f.detail);
    }
    let tcp = tokio::net::TcpListener::bind(cfg.blob_listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another daemon using it? pass --blob-listen)",
                cfg.blob_listen
            )
        })?;
    crate::blob::http::start(store.clone(), tcp, endpoint, attached, health)
        .context("starting the blob service's runtime")?;
    tracing::info!(listen = %cfg.blob_listen, %account, "blob service");
    Ok(store)
}

/// What the CLI thread placing the cgroups hands the daemon: the guests' cpu cgroup, once the
/// thread is done (`cli::join_daemon_group`).
pub enum GuestGroup {
    Placing(std::thread::JoinHandle<Option<crate::qemu::cgroup::CpuGroup>>),
    None,
}

impl GuestGroup {
    async fn wait(self) -> Option<crate::qemu::cgroup::CpuGroup> {
        match self {
            GuestGroup::Placing(h) => tokio::task::spawn_blocking(move || h.join().ok().flatten())
                .await
                .ok()
                .flatten(),
            GuestGroup::None => None,
        }
    }
}

/// The node's identity in its store: (subscription, storage account name, API token).
fn identity(db: &Db, paths: &crate::config::Paths) -> anyhow::Result<(String, String, String)> {
    let subscription = ensure_meta(db, "subscription", || uuid::Uuid::new_v4().to_string())?;
    let account = ensure_meta(db, "storage.account", || {
        format!("vmnode{}", &random_hex(4))
    })?;
    let token = ensure_token(&paths.token())?;
    // The CLI reads these without asking the daemon.
    write_atomic(
        &paths.state.join("subscription"),
        subscription.as_bytes(),
        0o644,
    )?;
    Ok((subscription, account, token))
}

/// The guest network in `--netns`: bridges, DHCP, DNS, IMDS, the host's veth and NAT as asked.
fn network(cfg: &DaemonConfig, db: &Db, subscription: &str) -> anyhow::Result<NodeNet> {
    let paths = &cfg.paths;
    // A wrong --nat-via is the user's to fix: say so before anything is changed.
    let nat = match &cfg.nat_via {
        Some(iface) => Some(crate::net::nat::plan(
            &cfg.netns,
            cfg.host_netns.as_deref(),
            iface,
        )?),
        None => None,
    };
    // IMDS on every vnet's bridge, answering from the store.
    let services = crate::guest::Platform::new(db.clone(), subscription.to_string());
    let platform = crate::net::Platform {
        ip: cfg.platform_ip,
        services: Arc::new(services),
    };
    let net = NodeNet::setup(
        &cfg.netns,
        platform,
        db,
        cfg.host_netns.as_deref(),
        nat.as_ref(),
        &paths.nat_record(),
        cfg.dns_forwarder,
    )
    .with_context(|| {
        format!(
            "setting up the guest network in namespace '{}' (is this root?)",
            cfg.netns
        )
    })?;
    Ok(net)
}

/// Storage accounts as ARM resources: the node's own (in group `vmnode`) and any made since,
/// each registered with the blob service (which starts here).
async fn storage_accounts(
    cfg: &DaemonConfig,
    db: &Db,
    account: &str,
    health: &Arc<crate::storage::health::Health>,
) -> anyhow::Result<(
    Arc<crate::blob::Store>,
    Arc<crate::blob::accounts::Accounts>,
)> {
    let storage_key = ensure_meta(db, "storage.key", crate::blob::new_account_key)?;
    let store = start_blob_service(cfg, db, account, &storage_key, health.clone()).await?;
    let accounts = Arc::new(crate::blob::accounts::Accounts::new(
        db.clone(),
        store.clone(),
        cfg.paths.state.clone(),
        format!("http://{}", cfg.blob_listen),
        account.to_string(),
    ));
    accounts
        .start(&storage_key)
        .context("serving the storage accounts")?;
    Ok((store, accounts))
}

/// A host network restart may take bridges and taps away: the watch rebuilds them.
fn watch_network(vms: &Arc<Vms>, net: &NodeNet) {
    let watched = vms.clone();
    tokio::spawn(crate::net::watch::watch(net.clone(), move || {
        use crate::vm::model::PowerState;
        watched
            .list(None)
            .into_iter()
            .filter(|r| matches!(r.power, PowerState::Running | PowerState::Unknown))
            .filter_map(|r| {
                let pid = r
                    .pid
                    .filter(|p| crate::qemu::process::pid_is_vm(*p, &r.vm_id))?;
                Some(crate::net::watch::Attached { nic: r.nic, pid })
            })
            .collect()
    }));
}

/// The management API on `--listen` (TLS) and the unix socket, and the daemon's pidfile.
async fn serve_api(cfg: &DaemonConfig, vms: &Arc<Vms>, token: String) -> anyhow::Result<()> {
    let paths = &cfg.paths;
    let tls =
        crate::tls::server_config(&paths.tls_dir(), cfg.listen.ip()).context("TLS certificate")?;
    let ext = crate::extensions::Extensions::new(vms.clone());
    match ext.resume() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            runs = n,
            "extensions: running again what a restart interrupted"
        ),
        Err(e) => {
            tracing::error!(error = %crate::report::chain(&e), "extensions: cannot resume")
        }
    }
    let state = AppState {
        node: vms.node.clone(),
        vms: vms.clone(),
        token: Arc::new(token),
        deployments: Arc::new(crate::deploy::Deployments::load(&paths.deployments())),
        ext,
        engine_api: api::server::engine_api,
    };
    let svc = api::server::service(state);
    let tcp = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another daemon using it? pass --listen)",
                cfg.listen
            )
        })?;
    let unix = api::server::bind_unix(&paths.socket())
        .with_context(|| format!("binding {}", paths.socket().display()))?;
    write_atomic(
        &paths.daemon_pid(),
        std::process::id().to_string().as_bytes(),
        0o644,
    )?;
    tokio::spawn(api::server::serve_tls(tcp, tls, svc.clone()));
    tokio::spawn(api::server::serve_unix(unix, svc));
    Ok(())
}

pub async fn run(cfg: DaemonConfig, guests: GuestGroup) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    crate::failpoint::setup();
    let paths = cfg.paths.clone();
    for d in [&paths.state, &paths.run] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    let db = Db::open(&paths.db()).with_context(|| format!("opening {}", paths.db().display()))?;
    let (subscription, account, token) = identity(&db, &paths)?;
    let accel = crate::doctor::decide(cfg.accel);
    tracing::info!(accel = %accel.accel, reason = %accel.reason, "accelerator");
    // QEMU runs as an unprivileged user (R3, qemu/jail.rs): made now if missing.
    let qemu =
        crate::qemu::host::QemuHost::prepare(&cfg.qemu_user, cfg.qemu_scope, guests.wait().await)
            .map_err(|e| anyhow::anyhow!("the QEMU user: {}", crate::report::chain(&e)))?;
    let net = network(&cfg, &db, &subscription)?;
    let health = Arc::new(crate::storage::health::Health::new(cfg.min_free_mb));
    let (blobs, accounts) = storage_accounts(&cfg, &db, &account, &health).await?;
    let node = Arc::new(Node {
        cfg: cfg.clone(),
        db,
        subscription: subscription.clone(),
        account,
        accel,
        net: net.clone(),
        blobs,
        accounts,
        qemu: Arc::new(qemu),
        health,
    });
    let vms = Vms::new(node);
    let adopted = vms.load()?;
    watch_network(&vms, &net);
    serve_api(&cfg, &vms, token).await?;
    tracing::info!(
        listen = %cfg.listen,
        socket = %paths.socket().display(),
        vms = adopted,
        subscription = %subscription,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "vmnode serving"
    );
    println!(
        "vmnode: ready on https://{} and {} ({} ms)",
        cfg.listen,
        paths.socket().display(),
        started.elapsed().as_millis()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down; VMs keep running");
    // A boot snapshot being made is not a VM: its QEMU goes, and its half-made files.
    vms.snapshots.stop_makers();
    if let Err(e) = net.stop_nat() {
        tracing::error!(error = %format!("{:#}", anyhow::Error::new(e)), "removing outbound NAT");
    }
    let _ = std::fs::remove_file(paths.socket());
    let _ = std::fs::remove_file(paths.daemon_pid());
    Ok(())
}
