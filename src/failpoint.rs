//! Crash points: named steps of create, start, stop, deallocate, delete and disk attach/detach
//! where a test can have the daemon die exactly as `kill -9` would (tests/crash_points.rs).
//!
//! They are `fail` crate points, compiled in only where the crate's `failpoints` feature is on:
//! the dev-dependency turns it on, so the daemon built for the tests carries them and a release
//! build does not (there `crash_point` is empty). A test starts the daemon with
//! `FAILPOINTS=<name>=return` (the `fail` crate's own syntax); reaching that point, the daemon
//! logs the name and sends itself SIGKILL: no destructor, no flush, no cleanup runs.

/// Every crash point, in the order an operation reaches them. The test walks this list.
pub const POINTS: &[&str] = &[
    "create.addr_allocated",
    "create.recorded",
    "create.disk_cloned",
    "create.disk_leased",
    "boot.tap_made",
    "boot.qemu_forked",
    "boot.qemu_spawned",
    "boot.qmp_connected",
    "create.running",
    "start.starting",
    "stop.stopping",
    "stop.qemu_quit",
    "deallocate.qemu_stopped",
    "delete.marked",
    "delete.qemu_stopped",
    "delete.tap_removed",
    "nic.addr_freed",
    "delete.nic_released",
    "delete.disks_deleted",
    "delete.record_removed",
    "attach.disk_leased",
    "attach.recorded",
    "attach.plugged",
    "detach.unplugged",
    "detach.released",
];

/// Panic points: where a test can make one request's handler panic (tests/panic_safety.rs), to
/// prove the panic stays in that request (src/serve.rs). Armed with `FAILPOINTS=<name>=panic`, the
/// point panics every time a request reaches it; nothing else is affected.
/// * `api.panic`: a storage account's PUT (the management API, and so a deployment's resource);
/// * `blob.panic`: Get Account Information (`GET /{account}?restype=account&comp=properties`),
///   before authentication, so an anonymous request reaches it.
pub const PANIC_POINTS: &[&str] = &["api.panic", "blob.panic"];

/// Panics here if a test armed this point (`<name>=panic`); a no-op in a release build.
pub fn panic_point(name: &'static str) {
    debug_assert!(
        PANIC_POINTS.contains(&name),
        "panic point {name} is not in PANIC_POINTS"
    );
    fail::fail_point!(name);
}

/// Reads `FAILPOINTS` (a no-op without the feature). Called once, as the daemon starts.
pub fn setup() {
    if fail::has_failpoints() {
        std::mem::forget(fail::FailScenario::setup());
    }
}

/// Dies here, as `kill -9` would, if a test armed this point.
pub fn crash_point(name: &'static str) {
    debug_assert!(
        POINTS.contains(&name),
        "crash point {name} is not in POINTS"
    );
    fail::fail_point!(name, |_| die(name));
    let _ = name;
}

// Reached only through the `failpoints` feature (unused in a release build).
#[allow(dead_code)]
fn die(name: &str) -> ! {
    tracing::error!(
        point = name,
        "crash point reached: the daemon kills itself (SIGKILL)"
    );
    eprintln!("vmnode: crash point {name}: SIGKILL");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}
