//! `vmnode storage blob ...`: upload (with progress), download, list, delete, SAS, URL and
//! leases, over the account's SharedKey client.

use super::*;

#[derive(Subcommand)]
pub enum BlobCmd {
    /// Upload a file (block blob; `--type page` for disk images).
    Upload(UploadArgs),
    Download(DownloadArgs),
    List(ListArgs),
    Delete(DeleteArgs),
    /// A service SAS for a blob (or, without --name, its container).
    GenerateSas(GenerateSasArgs),
    Url(UrlArgs),
    /// Blob leases: acquire, renew, change, release, break.
    Lease(LeaseArgs),
}

// The arguments of `vmnode storage blob upload`.
#[derive(Args)]
pub struct UploadArgs {
    #[arg(short = 'c', long)]
    container: String,
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Blob name (default: the file's name).
    #[arg(short = 'n', long)]
    name: Option<String>,
    #[arg(long, default_value = "block")]
    r#type: String,
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    acct: AccountArg,
}

// The arguments of `vmnode storage blob download`.
#[derive(Args)]
pub struct DownloadArgs {
    #[arg(short = 'c', long)]
    container: String,
    #[arg(short = 'n', long)]
    name: String,
    #[arg(short = 'f', long)]
    file: PathBuf,
    #[command(flatten)]
    acct: AccountArg,
}

// The arguments of `vmnode storage blob list`.
#[derive(Args)]
pub struct ListArgs {
    #[arg(short = 'c', long)]
    container: String,
    #[arg(long, default_value = "")]
    prefix: String,
    #[arg(long)]
    delimiter: Option<String>,
    #[command(flatten)]
    acct: AccountArg,
}

// The arguments of `vmnode storage blob delete`.
#[derive(Args)]
pub struct DeleteArgs {
    #[arg(short = 'c', long)]
    container: String,
    #[arg(short = 'n', long)]
    name: String,
    /// include or only.
    #[arg(long)]
    delete_snapshots: Option<String>,
    #[arg(long)]
    lease_id: Option<String>,
    #[command(flatten)]
    acct: AccountArg,
}

// The arguments of `vmnode storage blob generate-sas`.
#[derive(Args)]
pub struct GenerateSasArgs {
    #[arg(short = 'c', long)]
    container: String,
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// Permissions, e.g. r, rw, racwdl.
    #[arg(long, default_value = "r")]
    permissions: String,
    /// Expiry (ISO 8601, UTC), e.g. 2030-01-01T00:00:00Z; default: one hour from now.
    #[arg(long)]
    expiry: Option<String>,
    #[arg(long)]
    start: Option<String>,
    /// Allowed source IP or range (a.b.c.d or a.b.c.d-e.f.g.h).
    #[arg(long)]
    ip: Option<String>,
    #[arg(long)]
    https_only: bool,
    /// Print the whole URL, not only the token.
    #[arg(long)]
    full_uri: bool,
    #[command(flatten)]
    acct: AccountArg,
}

// The arguments of `vmnode storage blob url`.
#[derive(Args)]
pub struct UrlArgs {
    #[arg(short = 'c', long)]
    container: String,
    #[arg(short = 'n', long)]
    name: String,
    #[command(flatten)]
    acct: AccountArg,
}

// The arguments of `vmnode storage blob lease`.
#[derive(Args)]
pub struct LeaseArgs {
    action: String,
    #[arg(short = 'c', long)]
    container: String,
    #[arg(short = 'n', long)]
    name: String,
    #[arg(long)]
    lease_id: Option<String>,
    #[arg(long)]
    proposed_id: Option<String>,
    /// Seconds (15-60) or -1 for infinite.
    #[arg(long, default_value = "-1")]
    duration: i64,
    #[arg(long)]
    break_period: Option<i64>,
    #[command(flatten)]
    acct: AccountArg,
}

/// Progress on stderr for transfers of 8 MiB and more.
struct Progress {
    total: u64,
    done: u64,
    show: bool,
    started: std::time::Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            done: 0,
            show: total >= 8 << 20,
            started: std::time::Instant::now(),
        }
    }
    fn add(&mut self, n: u64) {
        self.done += n;
        if self.show {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let rate = mib(self.done) / self.started.elapsed().as_secs_f64().max(0.001);
            let end = if std::io::stderr().is_terminal() {
                "\r"
            } else {
                "\n"
            };
            eprint!(
                "  {:.1}/{:.1} MiB ({:.0}%, {rate:.0} MiB/s){end}",
                mib(self.done),
                mib(self.total),
                100.0 * self.done as f64 / self.total.max(1) as f64
            );
        }
    }
    fn finish(&self) {
        if self.show && std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

fn new_guid_if_none(id: Option<String>) -> String {
    id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

const CHUNK: u64 = 4 << 20;

pub(super) async fn blob_cmd(g: &Global, cmd: BlobCmd) -> anyhow::Result<()> {
    match cmd {
        BlobCmd::Upload(a) => upload(g, a).await,
        BlobCmd::Download(a) => download(g, a).await,
        BlobCmd::List(a) => list(g, a).await,
        BlobCmd::Delete(a) => delete(g, a).await,
        BlobCmd::GenerateSas(a) => generate_sas(g, a).await,
        BlobCmd::Url(a) => url(g, a).await,
        BlobCmd::Lease(a) => lease(g, a).await,
    }
}

/// Uploads a file as a block blob (in 4 MiB blocks past 4 MiB) or a page blob.
async fn upload(g: &Global, a: UploadArgs) -> anyhow::Result<()> {
    let UploadArgs {
        container,
        file,
        name,
        r#type,
        overwrite,
        acct,
    } = a;
    let c = Client::new(account_of(g, acct.account.as_deref())?)?;
    let name = match name {
        Some(n) => n,
        None => file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("give the blob a --name"))?
            .to_string(),
    };
    let path = format!("{container}/{name}");
    let mut f =
        std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let size = f.metadata()?.len();
    let mut progress = Progress::new(size);
    let cond: Vec<(&str, String)> = if overwrite {
        vec![]
    } else {
        vec![("if-none-match", "*".into())]
    };
    match r#type.as_str() {
        "block" => {
            if size <= CHUNK {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                let mut h = cond.clone();
                h.push(("x-ms-blob-type", "BlockBlob".into()));
                c.send(Method::PUT, &path, &[], &h, Bytes::from(buf))
                    .await?
                    .ok()?;
                progress.add(size);
            } else {
                let mut ids = Vec::new();
                let mut i = 0u32;
                loop {
                    let mut buf = vec![0u8; CHUNK as usize];
                    let n = read_full(&mut f, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    use base64::Engine;
                    let id = base64::engine::general_purpose::STANDARD.encode(format!("{i:08}"));
                    c.send(
                        Method::PUT,
                        &path,
                        &[("comp", "block".into()), ("blockid", id.clone())],
                        &[],
                        Bytes::from(buf),
                    )
                    .await?
                    .ok()?;
                    progress.add(n as u64);
                    ids.push(id);
                    i += 1;
                }
                let mut w = blob::http::xml::Writer::new();
                w.open("BlockList");
                for id in &ids {
                    w.elem("Latest", id);
                }
                let body = w.close("BlockList").finish();
                c.send(
                    Method::PUT,
                    &path,
                    &[("comp", "blocklist".into())],
                    &cond,
                    Bytes::from(body),
                )
                .await?
                .ok()?;
            }
        }
        "page" => {
            let blob_size = size.div_ceil(512) * 512;
            let mut h = cond.clone();
            h.push(("x-ms-blob-type", "PageBlob".into()));
            h.push(("x-ms-blob-content-length", blob_size.to_string()));
            c.send(Method::PUT, &path, &[], &h, Bytes::new())
                .await?
                .ok()?;
            let mut off = 0;
            while off < size {
                f.seek(SeekFrom::Start(off))?;
                let mut buf = vec![0u8; CHUNK.min(blob_size - off) as usize];
                let n = read_full(&mut f, &mut buf)?;
                // Zeros stay holes: only pages with data are sent.
                if buf[..n].iter().any(|b| *b != 0) {
                    let end = off + buf.len() as u64 - 1;
                    c.send(
                        Method::PUT,
                        &path,
                        &[("comp", "page".into())],
                        &[
                            ("x-ms-page-write", "update".into()),
                            ("x-ms-range", format!("bytes={off}-{end}")),
                        ],
                        Bytes::from(buf),
                    )
                    .await?
                    .ok()?;
                }
                progress.add(n as u64);
                off += CHUNK;
            }
        }
        t => bail!("--type is block or page, not '{t}'"),
    }
    progress.finish();
    print(
        g.output,
        &json!({"name": name, "container": container, "size": size, "url": format!("{}/{}", c.acct.account_url(), enc(&path))}),
        &[("Name", "name"), ("Size", "size"), ("Url", "url")],
    );
    Ok(())
}

/// Downloads a blob in 4 MiB ranges.
async fn download(g: &Global, a: DownloadArgs) -> anyhow::Result<()> {
    let DownloadArgs {
        container,
        name,
        file,
        acct,
    } = a;
    let c = Client::new(account_of(g, acct.account.as_deref())?)?;
    let path = format!("{container}/{name}");
    let head = c
        .send(Method::HEAD, &path, &[], &[], Bytes::new())
        .await?
        .ok()?;
    let size: u64 = head.header("content-length").parse().unwrap_or(0);
    let mut out =
        std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
    let mut progress = Progress::new(size);
    let mut off = 0;
    while off < size {
        let end = (off + CHUNK).min(size) - 1;
        let r = c
            .send(
                Method::GET,
                &path,
                &[],
                &[("x-ms-range", format!("bytes={off}-{end}"))],
                Bytes::new(),
            )
            .await?
            .ok()?;
        out.write_all(&r.body)?;
        progress.add(r.body.len() as u64);
        off = end + 1;
    }
    out.sync_all()?;
    progress.finish();
    print(
        g.output,
        &json!({"name": name, "file": file, "size": size}),
        &[("Name", "name"), ("Size", "size"), ("File", "file")],
    );
    Ok(())
}

/// Lists a container's blobs, page by page.
async fn list(g: &Global, a: ListArgs) -> anyhow::Result<()> {
    let ListArgs {
        container,
        prefix,
        delimiter,
        acct,
    } = a;
    let c = Client::new(account_of(g, acct.account.as_deref())?)?;
    let mut rows = Vec::new();
    let mut marker = String::new();
    loop {
        let mut q = vec![
            ("restype", "container".to_string()),
            ("comp", "list".to_string()),
            ("prefix", prefix.clone()),
        ];
        if let Some(d) = &delimiter {
            q.push(("delimiter", d.clone()));
        }
        if !marker.is_empty() {
            q.push(("marker", marker.clone()));
        }
        let r = c
            .send(Method::GET, &container, &q, &[], Bytes::new())
            .await?
            .ok()?;
        let (items, prefixes, next) = list_xml(&r.body, "Blob")?;
        for p in prefixes {
            rows.push(json!({"name": p, "blobType": "(prefix)"}));
        }
        for i in items {
            rows.push(json!({
                "name": i.child_text("Name").unwrap_or(""),
                "blobType": prop(&i, "BlobType"),
                "size": prop(&i, "Content-Length").parse::<u64>().unwrap_or(0),
                "lastModified": prop(&i, "Last-Modified"),
                "leaseState": prop(&i, "LeaseState"),
            }));
        }
        if next.is_empty() {
            break;
        }
        marker = next;
    }
    print(
        g.output,
        &Value::Array(rows),
        &[
            ("Name", "name"),
            ("Type", "blobType"),
            ("Size", "size"),
            ("Lease", "leaseState"),
            ("LastModified", "lastModified"),
        ],
    );
    Ok(())
}

/// Deletes a blob.
async fn delete(g: &Global, a: DeleteArgs) -> anyhow::Result<()> {
    let DeleteArgs {
        container,
        name,
        delete_snapshots,
        lease_id,
        acct,
    } = a;
    let c = Client::new(account_of(g, acct.account.as_deref())?)?;
    let mut h = Vec::new();
    if let Some(d) = delete_snapshots {
        h.push(("x-ms-delete-snapshots", d));
    }
    if let Some(l) = lease_id {
        h.push(("x-ms-lease-id", l));
    }
    c.send(
        Method::DELETE,
        &format!("{container}/{name}"),
        &[],
        &h,
        Bytes::new(),
    )
    .await?
    .ok()?;
    eprintln!("deleted {container}/{name}");
    Ok(())
}

/// Prints a service SAS (or its URL) for a blob or container.
async fn generate_sas(g: &Global, a: GenerateSasArgs) -> anyhow::Result<()> {
    let GenerateSasArgs {
        container,
        name,
        permissions,
        expiry,
        start,
        ip,
        https_only,
        full_uri,
        acct,
    } = a;
    let a = account_of(g, acct.account.as_deref())?;
    let c = Client::new(a.clone())?;
    let expiry = expiry.unwrap_or_else(|| {
        let t = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    });
    if blob::http::auth::parse_iso(&expiry).is_none() {
        bail!("--expiry '{expiry}' is not an ISO 8601 time like 2030-01-01T00:00:00Z");
    }
    let account = blob::store::Account {
        name: a.name.clone(),
        keys: vec![c.key.clone()],
    };
    let token = blob::http::auth::service_sas(
        &account,
        &container,
        name.as_deref(),
        &permissions,
        start.as_deref(),
        &expiry,
        ip.as_deref(),
        https_only,
    );
    let url = match &name {
        Some(n) => format!(
            "{}/{}?{token}",
            a.account_url(),
            enc(&format!("{container}/{n}"))
        ),
        None => format!("{}/{}?{token}", a.account_url(), enc(&container)),
    };
    if g.output == crate::cli::output::Format::Json {
        println!("{}", json!({"sas": token, "url": url, "expiry": expiry}));
    } else if full_uri {
        println!("{url}");
    } else {
        println!("{token}");
    }
    Ok(())
}

/// Prints a blob's URL.
async fn url(g: &Global, a: UrlArgs) -> anyhow::Result<()> {
    let UrlArgs {
        container,
        name,
        acct,
    } = a;
    let a = account_of(g, acct.account.as_deref())?;
    println!(
        "{}/{}",
        a.account_url(),
        enc(&format!("{container}/{name}"))
    );
    Ok(())
}

/// Acquires, renews, changes, releases or breaks a blob lease.
async fn lease(g: &Global, a: LeaseArgs) -> anyhow::Result<()> {
    let LeaseArgs {
        action,
        container,
        name,
        lease_id,
        proposed_id,
        duration,
        break_period,
        acct,
    } = a;
    let c = Client::new(account_of(g, acct.account.as_deref())?)?;
    let mut h: Vec<(&str, String)> = vec![("x-ms-lease-action", action.clone())];
    match action.as_str() {
        "acquire" => {
            h.push(("x-ms-lease-duration", duration.to_string()));
            h.push((
                "x-ms-proposed-lease-id",
                new_guid_if_none(proposed_id.or(lease_id)),
            ));
        }
        "renew" | "release" => h.push((
            "x-ms-lease-id",
            lease_id.ok_or_else(|| anyhow!("--lease-id is needed"))?,
        )),
        "change" => {
            h.push((
                "x-ms-lease-id",
                lease_id.ok_or_else(|| anyhow!("--lease-id is needed"))?,
            ));
            h.push((
                "x-ms-proposed-lease-id",
                proposed_id.ok_or_else(|| anyhow!("--proposed-id is needed"))?,
            ));
        }
        "break" => {
            if let Some(p) = break_period {
                h.push(("x-ms-lease-break-period", p.to_string()));
            }
        }
        a => {
            bail!("lease actions are acquire, renew, change, release and break, not '{a}'")
        }
    }
    let r = c
        .send(
            Method::PUT,
            &format!("{container}/{name}"),
            &[("comp", "lease".into())],
            &h,
            Bytes::new(),
        )
        .await?
        .ok()?;
    print(
        g.output,
        &json!({"action": action, "leaseId": r.header("x-ms-lease-id"), "leaseTime": r.header("x-ms-lease-time")}),
        &[
            ("Action", "action"),
            ("LeaseId", "leaseId"),
            ("LeaseTime", "leaseTime"),
        ],
    );
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}
