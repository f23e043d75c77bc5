//! `vmnode viewer url`: a link that opens the boot-diagnostics viewer in a browser, signed in
//! once with the node's token (the page then keeps it in a cookie and drops it from the URL).

use anyhow::anyhow;
use clap::Subcommand;
use serde_json::json;

use super::client::Client;
use super::output::Format;
use super::Global;
use crate::api::viewer::PREFIX;

#[derive(Subcommand)]
pub enum ViewerCmd {
    /// Print the viewer's URL with the token (the VM list, or one VM's page with -g and -n).
    Url {
        /// Resource group of the VM whose page to open.
        #[arg(short = 'g', long = "resource-group", requires = "name")]
        rg: Option<String>,
        /// The VM whose page to open.
        #[arg(short = 'n', long, requires = "rg")]
        name: Option<String>,
    },
}

fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub async fn run(g: &Global, c: ViewerCmd) -> anyhow::Result<()> {
    let ViewerCmd::Url { rg, name } = c;
    let cl = Client::new(g.url.as_deref(), g.paths())?;
    // Reached over HTTPS: that address; over the socket: the daemon says where it listens.
    let mut url = match g.url.as_deref() {
        Some(u) if u.starts_with("https://") => format!("{}{PREFIX}", u.trim_end_matches('/')),
        _ => cl.get(&format!("{PREFIX}/~/url")).await?.ok()?.body["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the daemon did not say where its viewer is"))?,
    };
    if let (Some(rg), Some(name)) = (rg, name) {
        // The page says clearly when the VM does not exist; check here too, to fail early.
        cl.get(&cl.vm_path(&rg, &name).await?).await?.ok()?;
        url = format!("{url}/{}/{}", seg(&rg), seg(&name));
    }
    let url = format!("{url}?token={}", cl.token());
    match g.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&json!({ "url": url }))?),
        Format::Table | Format::Tsv => println!("{url}"),
    }
    Ok(())
}
