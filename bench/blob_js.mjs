// bench/blob.py's workload through the Azure Storage SDK for JavaScript (@azure/storage-blob,
// npm), whose client costs far less per request than the Python SDK's, so the figures say more
// about the server. Run by `bench/blob.py --sdk js`; prints one JSON object with the same keys
// as the Python workload.
//
//   node bench/blob_js.mjs CONNECTION_STRING [quick]
//
// The SDK is loaded from $VMNODE_JS_SDK (a node_modules folder holding @azure/storage-blob).
import { createRequire } from "node:module";
import { randomBytes, randomUUID } from "node:crypto";
import path from "node:path";

const sdkDir = process.env.VMNODE_JS_SDK || "/var/cache/vmnode/npm-sdk/node_modules";
const require = createRequire(path.join(sdkDir, "noop.js"));
const { BlobServiceClient } = require("@azure/storage-blob");

const MiB = 1 << 20;
const [conn, quickArg] = process.argv.slice(2);
const quick = quickArg === "quick";

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round((p / 100) * (s.length - 1)))];
};
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

const svc = BlobServiceClient.fromConnectionString(conn);
const c = svc.getContainerClient(`bench${randomUUID().replace(/-/g, "").slice(0, 8)}`);
await c.create();
const out = {};

// 4 MiB page writes.
const n = quick ? 16 : 64;
const page = c.getPageBlobClient("disk.vhd");
await page.create(n * 4 * MiB);
const data = randomBytes(4 * MiB);
let t = now();
for (let i = 0; i < n; i++) {
  await page.uploadPages(data, i * 4 * MiB, 4 * MiB);
}
out["page write MiB/s (4 MiB pages)"] = (n * 4) / ((now() - t) / 1000);

// Page-range listing of a fragmented blob: 1000 separate 512-byte pages.
const frag = c.getPageBlobClient("frag.vhd");
await frag.create(64 * MiB);
const one = Buffer.alloc(512, 1);
for (let i = 0; i < 1000; i++) {
  await frag.uploadPages(one, i * 64 * 1024, 512);
}
let lat = [];
let ranges = [];
for (let i = 0; i < (quick ? 50 : 200); i++) {
  t = now();
  const r = await frag.getPageRanges();
  lat.push(now() - t);
  ranges = r.pageRange || [];
}
if (ranges.length !== 1000) throw new Error(`expected 1000 ranges, got ${ranges.length}`);
out["get page ranges (1000 ranges) p50 ms"] = median(lat);
out["get page ranges ops/s"] = 1000 / mean(lat);

// Lease operations.
const lb = c.getBlockBlobClient("leased");
await lb.upload("x", 1);
lat = [];
for (let i = 0; i < (quick ? 50 : 250); i++) {
  const lease = lb.getBlobLeaseClient();
  t = now();
  await lease.acquireLease(15);
  lat.push(now() - t);
  t = now();
  await lease.renewLease();
  lat.push(now() - t);
  t = now();
  await lease.changeLease(randomUUID());
  lat.push(now() - t);
  t = now();
  await lease.releaseLease();
  lat.push(now() - t);
}
out["lease op p50 ms"] = median(lat);
out["lease op p99 ms"] = pct(lat, 99);
out["lease ops/s (sequential)"] = 1000 / mean(lat);

// Block upload and download (4 MiB blocks, 4 in flight).
const size = (quick ? 32 : 128) * MiB;
const blob = randomBytes(size);
const bb = c.getBlockBlobClient("big.bin");
t = now();
await bb.uploadData(blob, { blockSize: 4 * MiB, concurrency: 4, maxSingleShotSize: 4 * MiB });
out["block upload MiB/s (4 MiB blocks, 4 in flight)"] = size / MiB / ((now() - t) / 1000);
t = now();
const got = await bb.downloadToBuffer(0, undefined, { blockSize: 4 * MiB, concurrency: 4 });
out["block download MiB/s (4 in flight)"] = size / MiB / ((now() - t) / 1000);
if (!got.equals(blob)) throw new Error("downloaded bytes differ from the upload");
await c.delete();
console.log(JSON.stringify(out));
