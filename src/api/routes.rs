//! The path table. ARM treats path keywords case-insensitively (`resourcegroups` and
//! `resourceGroups` are the same), so known keywords are re-cased before routing.

use axum::http::{Request, Uri};
use axum::routing::{get, post};
use axum::Router;

use super::{
    compute, deployments, diagnostics, extensions, network, resources, storage, viewer, AppState,
};

/// Path keywords, as the cloud spells them; `true` marks a collection, whose next segment is a
/// name the client chose (`virtualMachines/{vm}`) and is never re-cased, whatever it spells.
const KEYWORDS: &[(&str, bool)] = &[
    ("subscriptions", true),
    ("resourceGroups", true),
    ("providers", false),
    ("Microsoft.Compute", false),
    ("Microsoft.Network", false),
    ("Microsoft.Storage", false),
    ("virtualMachines", true),
    ("instanceView", false),
    ("locations", true),
    ("vmSizes", false),
    ("publishers", true),
    ("artifacttypes", false),
    ("vmimage", false),
    ("offers", true),
    ("skus", true),
    ("versions", true),
    ("networkInterfaces", true),
    ("virtualNetworks", true),
    ("subnets", true),
    ("storageAccounts", true),
    ("listKeys", false),
    ("bootDiagnostics", false),
    ("serialConsoleLog", false),
    ("serialTail", false),
    ("boots", true),
    ("retrieveBootDiagnosticsData", false),
    ("start", false),
    ("powerOff", false),
    ("deallocate", false),
    ("restart", false),
    ("redeploy", false),
    ("operations", true),
    ("Microsoft.Resources", false),
    ("deployments", true),
    ("operationStatuses", true),
    ("extensions", true),
    ("runCommand", false),
    ("runCommands", true),
];

/// Re-cases known keywords in keyword positions of an ARM path (`/subscriptions/…`,
/// `/providers/…`); a name after a collection keyword, and every other path, is left as sent
/// (a VM PUT as `…/virtualMachines/Start` is named `Start`).
pub fn canonical_path(path: &str) -> String {
    let arm = ["/subscriptions", "/providers"].iter().any(|p| {
        path.get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    });
    if !arm {
        return path.to_string();
    }
    let mut name_next = false;
    path.split('/')
        .map(|seg| {
            if std::mem::take(&mut name_next) {
                return seg.to_string();
            }
            let Some((k, collection)) = KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg))
            else {
                return seg.to_string();
            };
            name_next = *collection;
            k.to_string()
        })
        .collect::<Vec<_>>()
        .join("/")
}

pub fn canonicalize<B>(mut req: Request<B>) -> Request<B> {
    let uri = req.uri();
    let path = canonical_path(uri.path());
    if path != uri.path() {
        let pq = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        if let Ok(new) = pq.parse::<Uri>() {
            *req.uri_mut() = new;
        }
    }
    req
}

/// The path table. Long on purpose: one route per line, read top to bottom like the cloud's API
/// reference; splitting it would scatter the table, not the logic (there is none here).
pub fn router(state: AppState) -> Router {
    const VM: &str =
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines";
    const LOC: &str = "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}";
    const STG: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage";
    const NET: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network";
    const IMG: &str = "/publishers/{publisher}/artifacttypes/vmimage/offers";
    const DEP: &str =
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Resources/deployments";
    Router::new()
        .route("/subscriptions", get(resources::list_subscriptions))
        .route("/subscriptions/{sub}", get(resources::get_subscription))
        .route(
            "/subscriptions/{sub}/resourceGroups",
            get(resources::list_rgs),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}",
            get(resources::get_rg)
                .put(resources::put_rg)
                .delete(resources::delete_rg),
        )
        .route(VM, get(compute::list_in_rg))
        .route(
            &format!("{VM}/{{vm}}"),
            get(compute::get_vm)
                .put(compute::put_vm)
                .patch(compute::patch_vm)
                .delete(compute::delete_vm),
        )
        .route(
            &format!("{VM}/{{vm}}/instanceView"),
            get(compute::instance_view),
        )
        .route(&format!("{VM}/{{vm}}/start"), post(compute::start))
        .route(&format!("{VM}/{{vm}}/powerOff"), post(compute::power_off))
        .route(
            &format!("{VM}/{{vm}}/deallocate"),
            post(compute::deallocate),
        )
        .route(&format!("{VM}/{{vm}}/restart"), post(compute::restart))
        .route(&format!("{VM}/{{vm}}/redeploy"), post(compute::redeploy))
        .route(&format!("{LOC}/operations/{{id}}"), get(compute::operation))
        .route(
            &format!("{VM}/{{vm}}/extensions"),
            get(extensions::list_ext),
        )
        .route(
            &format!("{VM}/{{vm}}/extensions/{{name}}"),
            get(extensions::get_ext)
                .put(extensions::put_ext)
                .delete(extensions::delete_ext),
        )
        .route(
            &format!("{VM}/{{vm}}/runCommand"),
            post(extensions::run_command),
        )
        .route(
            &format!("{LOC}/runCommands"),
            get(extensions::list_run_commands),
        )
        .route(
            &format!("{LOC}/runCommands/{{id}}"),
            get(extensions::get_run_command),
        )
        .route(
            &format!("{VM}/{{vm}}/bootDiagnostics/serialConsoleLog"),
            get(diagnostics::serial_log),
        )
        .route(
            &format!("{VM}/{{vm}}/bootDiagnostics/screenshot"),
            get(diagnostics::screenshot),
        )
        .route(
            &format!("{VM}/{{vm}}/bootDiagnostics/serialTail"),
            get(diagnostics::serial_tail),
        )
        .route(
            &format!("{VM}/{{vm}}/bootDiagnostics/boots"),
            get(diagnostics::boots),
        )
        .route(
            &format!("{VM}/{{vm}}/retrieveBootDiagnosticsData"),
            post(diagnostics::retrieve),
        )
        .route(
            "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines",
            get(compute::list_all),
        )
        .route(&format!("{LOC}/vmSizes"), get(resources::vm_sizes))
        .route(&format!("{LOC}/publishers"), get(resources::publishers))
        .route(&format!("{LOC}{IMG}"), get(resources::offers))
        .route(&format!("{LOC}{IMG}/{{offer}}/skus"), get(resources::skus))
        .route(
            &format!("{LOC}{IMG}/{{offer}}/skus/{{sku}}/versions"),
            get(resources::versions),
        )
        .route(
            &format!("{LOC}{IMG}/{{offer}}/skus/{{sku}}/versions/{{version}}"),
            get(resources::version),
        )
        .route(&format!("{NET}/virtualNetworks"), get(network::list_vnets))
        .route(
            &format!("{NET}/virtualNetworks/{{vnet}}"),
            get(network::get_vnet)
                .put(network::put_vnet)
                .delete(network::delete_vnet),
        )
        .route(
            &format!("{NET}/virtualNetworks/{{vnet}}/subnets/{{subnet}}"),
            get(network::get_subnet)
                .put(network::put_subnet)
                .delete(network::delete_subnet),
        )
        .route(&format!("{NET}/networkInterfaces"), get(network::list_nics))
        .route(
            &format!("{NET}/networkInterfaces/{{nic}}"),
            get(network::get_nic)
                .put(network::put_nic)
                .delete(network::delete_nic),
        )
        .route("/vmnode/v1/dhcp/ledger", get(network::ledger))
        .route("/vmnode/v1/network/check", get(network::address_check))
        .route(&format!("{STG}/storageAccounts"), get(storage::list))
        .route(
            &format!("{STG}/storageAccounts/{{account}}"),
            get(storage::get).put(storage::put).delete(storage::delete),
        )
        .route(
            &format!("{STG}/storageAccounts/{{account}}/listKeys"),
            post(storage::list_keys),
        )
        .route(DEP, get(deployments::list))
        .route(
            &format!("{DEP}/{{name}}"),
            get(deployments::get)
                .put(deployments::put)
                .delete(deployments::delete),
        )
        .route(
            &format!("{DEP}/{{name}}/operations"),
            get(deployments::operations),
        )
        // ARM lists a deployment's operations without the provider segment.
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/deployments/{name}/operations",
            get(deployments::operations),
        )
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/deployments/{name}/operations/{op}",
            get(deployments::operation),
        )
        .route(
            &format!("{DEP}/{{name}}/operationStatuses/{{op}}"),
            get(deployments::operation_status),
        )
        .route("/vmnode/v1/images", get(resources::all_images))
        .route("/vmnode/v1/dhcp/leases", get(resources::dhcp_leases))
        .route("/vmnode/v1/node", get(resources::node_info))
        .route(viewer::PREFIX, get(viewer::list))
        .route(
            &format!("{}/~/{{file}}", viewer::PREFIX),
            get(viewer::asset),
        )
        .route(
            &format!("{}/{{rg}}/{{vm}}", viewer::PREFIX),
            get(viewer::vm_page),
        )
        .route(
            &format!("{}/{{rg}}/{{vm}}/serialTail", viewer::PREFIX),
            get(viewer::serial_tail),
        )
        .fallback(resources::no_route)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keywords_are_recased_names_kept() {
        assert_eq!(
            super::canonical_path("/subscriptions/S/resourcegroups/MyRG/providers/microsoft.compute/VIRTUALMACHINES/Vm1"),
            "/subscriptions/S/resourceGroups/MyRG/providers/Microsoft.Compute/virtualMachines/Vm1"
        );
    }

    /// A name that spells a keyword is a name: only keyword positions are re-cased.
    #[test]
    fn names_that_spell_keywords_keep_their_case() {
        let c = super::canonical_path;
        assert_eq!(
            c("/subscriptions/S/resourcegroups/Boots/providers/Microsoft.Compute/virtualmachines/Start/START"),
            "/subscriptions/S/resourceGroups/Boots/providers/Microsoft.Compute/virtualMachines/Start/start"
        );
        assert_eq!(
            c("/subscriptions/S/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extensions/Extensions"),
            "/subscriptions/S/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extensions/Extensions"
        );
        assert_eq!(
            c("/SUBSCRIPTIONS/S/providers/microsoft.compute/locations/WestUS/publishers/P/artifacttypes/VMImage/offers/Offers/skus/Skus/versions/Versions"),
            "/subscriptions/S/providers/Microsoft.Compute/locations/WestUS/publishers/P/artifacttypes/vmimage/offers/Offers/skus/Skus/versions/Versions"
        );
        // Not an ARM path: the viewer's /vmnode/v1/viewer/{rg}/{vm} is left as sent.
        assert_eq!(
            c("/vmnode/v1/viewer/Boots/Start"),
            "/vmnode/v1/viewer/Boots/Start"
        );
        // Any bytes: never a panic on a short or multi-byte path.
        for p in [
            "",
            "/",
            "/subé",
            "/\u{10ffff}\u{10ffff}\u{10ffff}\u{10ffff}",
        ] {
            assert_eq!(c(p), p);
        }
    }
}
