//! bench/blob.py's workload through the official Azure SDK for Rust (`azure_storage_blob`),
//! whose client costs less per request than the Python and JavaScript SDKs, so the figures say
//! more about the server. Run by `bench/blob.py --sdk rust`; prints one JSON object with the same
//! keys as the Python workload and bench/blob_js.mjs.
//!
//!     blob_rs CONTAINER_URL_WITH_SAS [quick]
//!
//! The SDK has no SharedKey authentication (only Entra ID tokens, over https), so blob.py
//! creates the container, signs a service SAS for it and passes the container's URL with the
//! SAS; it deletes the container afterwards.
//!
//! Measured: 4 MiB page writes (one at a time), listing the page ranges of a page blob of 1000
//! separate 512-byte pages, lease acquire/renew/change/release (each op's latency), and the
//! SDK's managed block upload and download (4 MiB blocks, 4 in flight).

use std::{error::Error, num::NonZero, time::Instant};

use azure_core::http::{RequestContent, Url};
use azure_storage_blob::{
    models::{
        BlobClientAcquireLeaseOptions, BlobClientAcquireLeaseResultHeaders,
        BlobClientChangeLeaseResultHeaders, BlobClientDownloadOptions,
        BlockBlobClientUploadOptions, HttpRange,
    },
    BlobContainerClient,
};
use futures::TryStreamExt;
use serde_json::{Map, Value};

const MIB: u64 = 1 << 20;
type Res<T> = Result<T, Box<dyn Error>>;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn median(xs: &[f64]) -> f64 {
    let s = sorted(xs);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// The same percentile as blob.py's and blob_js.mjs's `pct` (nearest rank, rounded).
fn pct(xs: &[f64], p: f64) -> f64 {
    let s = sorted(xs);
    let i = (p / 100.0 * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn random(n: usize) -> Res<Vec<u8>> {
    let mut v = vec![0; n];
    getrandom::fill(&mut v).map_err(|e| format!("getrandom: {e}"))?;
    Ok(v)
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: blob_rs CONTAINER_URL_WITH_SAS [quick]")?;
    let quick = args.next().as_deref() == Some("quick");
    let c = BlobContainerClient::new(Url::parse(&url)?, None, None)?;
    let mut out = Map::new();
    let mut put = |k: &str, v: f64| out.insert(k.into(), Value::from(v));

    // 4 MiB page writes.
    let n: u64 = if quick { 16 } else { 64 };
    let page = c.blob_client("disk.vhd").page_blob_client();
    page.create(n * 4 * MIB, None).await?;
    let data = azure_core::Bytes::from(random(4 * MIB as usize)?);
    let t = Instant::now();
    for i in 0..n {
        let range = HttpRange::new(i * 4 * MIB, 4 * MIB);
        page.upload_pages(data.clone().into(), 4 * MIB, range, None)
            .await?;
    }
    put(
        "page write MiB/s (4 MiB pages)",
        (n * 4) as f64 / (ms(t) / 1000.0),
    );

    // Page-range listing of a fragmented blob: 1000 separate 512-byte pages.
    let frag = c.blob_client("frag.vhd").page_blob_client();
    frag.create(64 * MIB, None).await?;
    let one = azure_core::Bytes::from(vec![1u8; 512]);
    for i in 0..1000 {
        let range = HttpRange::new(i * 64 * 1024, 512);
        frag.upload_pages(one.clone().into(), 512, range, None)
            .await?;
    }
    let mut lat = Vec::new();
    let mut ranges = 0;
    for _ in 0..(if quick { 50 } else { 200 }) {
        let t = Instant::now();
        let mut pages = frag.list_page_ranges(None)?;
        ranges = 0;
        while let Some(p) = pages.try_next().await? {
            ranges += p.into_model()?.page_ranges.len();
        }
        lat.push(ms(t));
    }
    if ranges != 1000 {
        return Err(format!("expected 1000 ranges, got {ranges}").into());
    }
    put("get page ranges (1000 ranges) p50 ms", median(&lat));
    put("get page ranges ops/s", 1000.0 / mean(&lat));

    // Lease operations; like the other SDKs' lease clients, acquire proposes a fresh id.
    let lb = c.blob_client("leased");
    lb.upload(RequestContent::from(b"x".to_vec()), None).await?;
    let mut lat = Vec::new();
    for _ in 0..(if quick { 50 } else { 250 }) {
        let opts = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(new_uuid()),
            ..Default::default()
        };
        let t = Instant::now();
        let id = lb.acquire_lease(15, Some(opts)).await?.lease_id()?;
        lat.push(ms(t));
        let id = id.ok_or("acquire lease returned no lease id")?;
        let t = Instant::now();
        lb.renew_lease(id.clone(), None).await?;
        lat.push(ms(t));
        let t = Instant::now();
        let rsp = lb.change_lease(id, new_uuid(), None).await?;
        lat.push(ms(t));
        let id = rsp.lease_id()?.ok_or("change lease returned no lease id")?;
        let t = Instant::now();
        lb.release_lease(id, None).await?;
        lat.push(ms(t));
    }
    put("lease op p50 ms", median(&lat));
    put("lease op p99 ms", pct(&lat, 99.0));
    put("lease ops/s (sequential)", 1000.0 / mean(&lat));

    // Block upload and download through the SDK's managed transfers (4 MiB blocks, 4 in flight).
    let size = (if quick { 32 } else { 128 }) * MIB as usize;
    let blob = azure_core::Bytes::from(random(size)?);
    let bb = c.blob_client("big.bin");
    let (parallel, part) = (NonZero::new(4).unwrap(), NonZero::new(4 * MIB).unwrap());
    let opts = BlockBlobClientUploadOptions {
        parallel: Some(parallel),
        partition_size: Some(part),
        ..Default::default()
    };
    let t = Instant::now();
    bb.block_blob_client()
        .upload(blob.clone().into(), Some(opts))
        .await?;
    let secs = ms(t) / 1000.0;
    put(
        "block upload MiB/s (4 MiB blocks, 4 in flight)",
        size as f64 / MIB as f64 / secs,
    );
    let opts = BlobClientDownloadOptions {
        parallel: Some(parallel),
        partition_size: Some(NonZero::new(4 * MIB as usize).unwrap()),
        ..Default::default()
    };
    let t = Instant::now();
    // The buffer is part of the download, as in the other SDKs (downloadToBuffer, readall).
    let mut got = vec![0u8; size];
    let read = bb.download_into(&mut got, Some(opts)).await?.len;
    let secs = ms(t) / 1000.0;
    put(
        "block download MiB/s (4 in flight)",
        size as f64 / MIB as f64 / secs,
    );
    if read != size || got[..] != blob[..] {
        return Err(format!("downloaded {read} bytes that differ from the upload").into());
    }
    println!("{}", Value::Object(out));
    Ok(())
}
