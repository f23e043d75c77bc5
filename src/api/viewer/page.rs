//! The viewer's HTML, rendered from the management API's JSON. Everything that came from a
//! guest (serial text, screen text, names) is escaped; each updatable section carries
//! `data-key`, a hash of its content without the SAS links, so the script replaces a section
//! only when it changed (and images do not reload every few seconds).

use std::fmt::Write;
use std::hash::{Hash, Hasher};

use serde_json::Value;

use super::{VmData, PREFIX};
use crate::vm::model::VmRecord;

/// Escapes text for element content and quoted attributes (`&apos;` is HTML too).
pub use crate::blob::http::xml::escape as esc;

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// A content key: the JSON without its SAS links (which change on every render), plus `salt`.
fn key(v: &Value, salt: u64) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "uri" | "serialLogUri"))
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            v => v.clone(),
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    strip(v).to_string().hash(&mut h);
    salt.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// `2025-06-01 12:03:04 UTC`.
fn clock(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .map(|t| format!("{t} UTC"))
        .unwrap_or_default()
}

/// Time since the boot started: `+12.3 s`.
fn rel(ms: i64, start: i64) -> String {
    format!("+{:.1} s", (ms - start) as f64 / 1000.0)
}

fn section(id: &str, key: &str, class: &str, body: &str) -> String {
    format!("<section id=\"{id}\" class=\"card {class}\" data-key=\"{key}\">{body}</section>\n")
}

/// The whole page around `main`; `crumbs` after "vmnode" (text, link).
pub fn document(title: &str, crumbs: &[(&str, Option<&str>)], main: &str) -> String {
    let mut nav = format!("<a class=\"brand\" href=\"{PREFIX}\">vmnode</a>");
    for (text, href) in crumbs {
        match href {
            Some(h) => write!(
                nav,
                "<span>/</span><a href=\"{}\">{}</a>",
                esc(h),
                esc(text)
            ),
            None => write!(nav, "<span>/</span><span>{}</span>", esc(text)),
        }
        .ok();
    }
    write!(nav, "<span>/</span><strong>{}</strong>", esc(title)).ok();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · vmnode</title><link rel=\"stylesheet\" href=\"{PREFIX}/~/viewer.css\"></head>\n\
         <body><header class=\"top\"><nav>{nav}</nav></header>\n<main>\n{main}</main>\n\
         <script src=\"{PREFIX}/~/viewer.js\"></script></body></html>\n",
        esc(title)
    )
}

pub fn error_section(code: &str, message: &str) -> String {
    section(
        "error",
        "",
        "error",
        &format!(
            "<h1>{}</h1><p>{}</p><p><a href=\"{PREFIX}\">All virtual machines</a></p>",
            esc(code),
            esc(message)
        ),
    )
}

/// The 401 page: no stylesheet link (it needs the token too), the CSS inline.
pub fn unauthorized(host: &str, path: &str, wrong: bool) -> String {
    let why = if wrong {
        "The token in this link is not this node's token (was the daemon's state dir reset?)."
    } else {
        "This page shows the node's boot diagnostics and needs the node's access token."
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Sign in · vmnode</title><style>{css}</style></head>\n<body>\
         <header class=\"top\"><nav><span class=\"brand\">vmnode</span></nav></header><main>\
         <section class=\"card error\"><h1>401 · a token is needed</h1><p>{why}</p>\
         <p>On the node, print a link that signs this browser in:</p>\
         <pre class=\"cmd\">vmnode viewer url</pre>\
         <p>or get the token and open this page with it once:</p>\
         <pre class=\"cmd\">vmnode account get-access-token\n\
         https://{host}{path}?token=ACCESS_TOKEN</pre>\
         <p class=\"muted\">The browser then keeps it in a cookie for this node's viewer only.</p>\
         </section></main></body></html>\n",
        css = include_str!("viewer.css"),
        host = esc(host),
        path = esc(path),
    )
}

fn power_word(code: &str) -> &str {
    code.strip_prefix("PowerState/").unwrap_or(code)
}

fn pill(class: &str, text: &str) -> String {
    format!("<span class=\"pill {}\">{}</span>", esc(class), esc(text))
}

fn outcome_pill(verdict: &Value) -> String {
    match verdict["outcome"].as_str() {
        Some(o) => {
            let stage = s(verdict, "stage");
            let text = if o == "failed" || o == "booting" {
                format!("{o} · {stage}")
            } else {
                o.to_string()
            };
            pill(&format!("v-{o}"), &text)
        }
        None => pill("v-none", "no boot yet"),
    }
}

/// A VM of the list.
pub struct VmRow {
    pub rec: VmRecord,
    pub ip: Option<String>,
    /// The current boot's verdict, as the API shows it.
    pub verdict: Option<Value>,
}

pub fn vm_list(rows: &[VmRow]) -> String {
    let mut body = String::from("<h1>Virtual machines</h1>");
    if rows.is_empty() {
        body.push_str(
            "<p class=\"muted\">No VMs on this node yet. Create one:</p>\
             <pre class=\"cmd\">vmnode group create -n rg1\n\
             vmnode vm create -g rg1 -n vm1 --image vmnode:tiny:1:latest --size Standard_B1s</pre>",
        );
    } else {
        body.push_str(
            "<table class=\"vms\"><thead><tr><th>Name</th><th>Resource group</th>\
             <th>Power state</th><th>DIP</th><th>Size</th><th>Boot</th></tr></thead><tbody>",
        );
        for r in rows {
            let power = power_word(r.rec.power.code());
            let verdict = r.verdict.clone().unwrap_or(Value::Null);
            write!(
                body,
                "<tr><td><a href=\"{PREFIX}/{}/{}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                seg(&r.rec.rg),
                seg(&r.rec.name),
                esc(&r.rec.name),
                esc(&r.rec.rg),
                pill(&format!("p-{power}"), power),
                esc(r.ip.as_deref().unwrap_or("—")),
                esc(&r.rec.size),
                outcome_pill(&verdict),
            )
            .ok();
        }
        body.push_str("</tbody></table>");
    }
    let key_data: Vec<Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!([
                r.rec.rg,
                r.rec.name,
                r.rec.power.code(),
                r.ip,
                r.verdict,
                r.rec.size
            ])
        })
        .collect();
    section("vms", &key(&Value::from(key_data), 0), "", &body)
}

/// A VM page's sections; `with_tail`: the whole page (the serial tail is fed by the script,
/// so a fragment leaves it out).
pub fn vm_sections(d: &VmData, with_tail: bool) -> String {
    let cur = d.boots.last().cloned().unwrap_or(Value::Null);
    let start = cur["startedMs"].as_i64().unwrap_or(0);
    let mut out = facts(d, &cur);
    out.push_str(&verdict(&cur));
    out.push_str("<div class=\"pair\">");
    out.push_str(&latest_shot(&cur, start));
    if with_tail {
        out.push_str(&serial(d));
    }
    out.push_str("</div>");
    out.push_str(&strip(&cur, start));
    out.push_str("<div class=\"pair\">");
    out.push_str(&ledger(&d.view));
    out.push_str(&boots(&d.boots));
    out.push_str("</div>");
    out.push_str(&timeline(&cur, start));
    out
}

/// Serial text for reading: terminal escape sequences and control characters (but newlines
/// and tabs) removed.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.next() {
                // CSI: parameters and intermediates up to a final byte.
                Some('[') => {
                    for c in it.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST.
                Some(']') => {
                    while let Some(c) = it.next() {
                        if c == '\x07' || (c == '\x1b' && it.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // A two-character sequence (ESC c, ESC 7, ...).
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn facts(d: &VmData, cur: &Value) -> String {
    let v = &d.view;
    let power = v["statuses"]
        .as_array()
        .and_then(|st| {
            st.iter()
                .filter_map(|s| s["code"].as_str())
                .find(|c| c.starts_with("PowerState/"))
        })
        .map(power_word)
        .unwrap_or("unknown");
    let ip = v["networkInterfaces"][0]["privateIPAddress"]
        .as_str()
        .unwrap_or("—");
    let mut body = format!(
        "<h1>{}</h1><dl class=\"facts\"><div><dt>Power</dt><dd>{}</dd></div>\
         <div><dt>DIP</dt><dd class=\"mono\">{}</dd></div>\
         <div><dt>Resource group</dt><dd>{}</dd></div>\
         <div><dt>Computer name</dt><dd>{}</dd></div>",
        esc(&d.vm),
        pill(&format!("p-{power}"), power),
        esc(ip),
        esc(&d.rg),
        esc(s(v, "computerName")),
    );
    if let Some(n) = cur["n"].as_u64() {
        write!(
            body,
            "<div><dt>Boot</dt><dd>#{n} · {} · {}</dd></div>",
            esc(s(cur, "reason")),
            clock(cur["startedMs"].as_i64().unwrap_or(0))
        )
        .ok();
    }
    body.push_str("</dl>");
    let k = serde_json::json!([power, ip, cur["n"], cur["startedMs"]]);
    section("facts", &key(&k, 0), "", &body)
}

fn verdict(cur: &Value) -> String {
    let v = &cur["verdict"];
    let Some(outcome) = v["outcome"].as_str() else {
        return section(
            "verdict",
            "none",
            "verdict v-none",
            "<p class=\"outcome\">No boot on record yet</p>",
        );
    };
    let mut body = format!(
        "<div class=\"head\"><span class=\"outcome\">{}</span>\
         <span class=\"stage\">stage: <b>{}</b></span></div><p class=\"summary\">{}</p>",
        esc(outcome),
        esc(s(v, "stage")),
        esc(s(v, "summary")),
    );
    if let Some(ev) = v["evidence"].as_array().filter(|e| !e.is_empty()) {
        body.push_str("<ol class=\"evidence\">");
        for e in ev {
            write!(body, "<li>{}</li>", esc(e.as_str().unwrap_or(""))).ok();
        }
        body.push_str("</ol>");
    }
    section(
        "verdict",
        &key(v, 0),
        &format!("verdict v-{}", esc(outcome)),
        &body,
    )
}

fn shows_badge(f: &Value) -> String {
    match f["shows"].as_str() {
        Some(what) => format!(
            "<span class=\"badge b-{0}\" title=\"{1}\">shows {0}</span>",
            esc(what),
            esc(s(f, "evidence"))
        ),
        None => String::new(),
    }
}

fn img(f: &Value, class: &str) -> String {
    format!(
        "<img class=\"{class}\" src=\"{}\" width=\"{}\" height=\"{}\" alt=\"screenshot {}\">",
        esc(s(f, "uri")),
        f["width"].as_u64().unwrap_or(0),
        f["height"].as_u64().unwrap_or(0),
        f["seq"].as_u64().unwrap_or(0),
    )
}

fn latest_shot(cur: &Value, start: i64) -> String {
    let frames = cur["frames"].as_array().cloned().unwrap_or_default();
    let Some(f) = frames.last() else {
        return section(
            "shot",
            "none",
            "",
            "<h2>Latest screenshot</h2><p class=\"muted\">No screenshot in this boot yet.</p>",
        );
    };
    let body = format!(
        "<h2>Latest screenshot</h2><figure><a href=\"{}\">{}</a><figcaption>frame {} · \
         seen {} – {} · {} capture(s) {}</figcaption></figure>",
        esc(s(f, "uri")),
        img(f, "shot"),
        f["seq"].as_u64().unwrap_or(0),
        rel(f["firstMs"].as_i64().unwrap_or(start), start),
        rel(f["lastMs"].as_i64().unwrap_or(start), start),
        f["captures"].as_u64().unwrap_or(0),
        shows_badge(f),
    );
    section("shot", &key(f, 0), "", &body)
}

fn strip(cur: &Value, start: i64) -> String {
    let frames = cur["frames"].as_array().cloned().unwrap_or_default();
    let mut body = format!(
        "<h2>Screenshot series <span class=\"muted\">boot #{} · {} distinct frame(s)</span></h2>",
        cur["n"].as_u64().unwrap_or(0),
        frames.len()
    );
    if frames.is_empty() {
        body.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        body.push_str("<ol class=\"strip\">");
        for f in &frames {
            let (first, last) = (
                f["firstMs"].as_i64().unwrap_or(start),
                f["lastMs"].as_i64().unwrap_or(start),
            );
            write!(
                body,
                "<li><a href=\"{}\">{}</a><span class=\"when\">{} · for {:.0} s · ×{}</span>{}</li>",
                esc(s(f, "uri")),
                img(f, "thumb"),
                rel(first, start),
                (last - first) as f64 / 1000.0,
                f["captures"].as_u64().unwrap_or(0),
                shows_badge(f),
            )
            .ok();
        }
        body.push_str("</ol>");
    }
    section("strip", &key(&cur["frames"], 0), "", &body)
}

fn ledger(view: &Value) -> String {
    let entries = view["networkInterfaces"][0]["dhcpLedger"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut body = String::from("<h2>DHCP ledger</h2>");
    if let Some(d) = view["networkInterfaces"][0]["dhcpDiagnosis"].as_str() {
        write!(body, "<p class=\"warn\">{}</p>", esc(d)).ok();
    } else if !view["networkInterfaces"][0]["dhcpDiagnosis"].is_null() {
        let d = view["networkInterfaces"][0]["dhcpDiagnosis"].to_string();
        write!(body, "<p class=\"warn mono\">{}</p>", esc(&d)).ok();
    }
    if entries.is_empty() {
        body.push_str("<p class=\"muted\">The NIC has not asked for an address yet.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Time</th><th>What</th><th>Address</th><th>Detail</th></tr>\
             </thead><tbody>",
        );
        for e in &entries {
            let ms = e["at"]["secs_since_epoch"].as_i64().unwrap_or(0) * 1000
                + e["at"]["nanos_since_epoch"].as_i64().unwrap_or(0) / 1_000_000;
            let kind = &e["kind"];
            let mut what = s(kind, "type").to_uppercase();
            if let Some(r) = kind["reason"].as_str() {
                what = format!("{what} ({r})");
            }
            write!(
                body,
                "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                esc(clock(ms).trim_end_matches(" UTC").get(11..).unwrap_or("")),
                esc(&what),
                esc(e["ip"].as_str().unwrap_or("")),
                esc(s(e, "detail")),
            )
            .ok();
        }
        body.push_str("</tbody></table>");
    }
    let k = serde_json::json!([
        view["networkInterfaces"][0]["dhcpLedger"],
        view["networkInterfaces"][0]["dhcpDiagnosis"]
    ]);
    section("ledger", &key(&k, 0), "", &body)
}

fn timeline(cur: &Value, start: i64) -> String {
    let events = cur["events"].as_array().cloned().unwrap_or_default();
    let mut body = String::from("<h2>Flight recorder</h2>");
    if events.is_empty() {
        body.push_str("<p class=\"muted\">Nothing recorded yet.</p>");
    } else {
        body.push_str(
            "<table class=\"timeline\"><thead><tr><th>Since start</th><th>Source</th>\
             <th>Event</th></tr></thead><tbody>",
        );
        for e in &events {
            let src = s(e, "source");
            write!(
                body,
                "<tr class=\"m-{}\"><td class=\"mono\">{}</td><td><span class=\"src s-{}\">{}</span></td>\
                 <td class=\"mono\">{}</td></tr>",
                esc(s(e, "mark")),
                rel(e["atMs"].as_i64().unwrap_or(start), start),
                esc(src),
                esc(src),
                esc(&clean(s(e, "text"))),
            )
            .ok();
        }
        body.push_str("</tbody></table>");
        if let Some(n) = cur["eventsDropped"].as_u64().filter(|n| *n > 0) {
            write!(
                body,
                "<p class=\"muted\">{n} later entries were not kept.</p>"
            )
            .ok();
        }
    }
    section("timeline", &key(&cur["events"], 0), "", &body)
}

fn boots(all: &[Value]) -> String {
    let mut body = String::from("<h2>Boots</h2>");
    if all.is_empty() {
        body.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>#</th><th>Started</th><th>Why</th><th>Ended</th>\
             <th>Verdict</th><th>Log</th></tr></thead><tbody>",
        );
        for b in all.iter().rev() {
            let ended = match (b["endedMs"].as_i64(), b["endReason"].as_str()) {
                (Some(ms), r) => format!(
                    "{} ({})",
                    esc(r.unwrap_or("ended")),
                    rel(ms, b["startedMs"].as_i64().unwrap_or(ms))
                ),
                (None, _) => "running".into(),
            };
            let cut = b["log"]["cut"].as_u64().unwrap_or(0);
            write!(
                body,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}<div class=\"muted small\">{}</div></td>\
                 <td><a href=\"{}\">serial log</a> <span class=\"muted small\">{} B{}</span></td></tr>",
                b["n"].as_u64().unwrap_or(0),
                clock(b["startedMs"].as_i64().unwrap_or(0)),
                esc(s(b, "reason")),
                ended,
                outcome_pill(&b["verdict"]),
                esc(s(&b["verdict"], "summary")),
                esc(s(b, "serialLogUri")),
                b["log"]["written"].as_u64().unwrap_or(0),
                if cut > 0 {
                    format!(", {cut} B cut")
                } else {
                    String::new()
                },
            )
            .ok();
        }
        body.push_str("</tbody></table>");
    }
    // The links expire: a new key every 20 minutes brings fresh ones.
    let bucket = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 1200)
        .unwrap_or(0);
    let k: Vec<Value> = all
        .iter()
        .map(|b| serde_json::json!([b["n"], b["endedMs"], b["verdict"], b["log"]]))
        .collect();
    section("boots", &key(&Value::from(k), bucket), "", &body)
}

/// The serial tail: the current boot's last bytes, fed on by the script.
fn serial(d: &VmData) -> String {
    let cur = d.boots.last().cloned().unwrap_or(Value::Null);
    let t = d.tail.clone().unwrap_or(Value::Null);
    let full = match cur["serialLogUri"].as_str() {
        Some(u) => format!(" <a class=\"small\" href=\"{}\">full log</a>", esc(u)),
        None => String::new(),
    };
    format!(
        "<section id=\"serial\" class=\"card\"><h2>Serial console <span class=\"muted\" \
         id=\"tail-state\">boot #{}</span>{full}</h2>\
         <pre id=\"tail\" class=\"tail\" data-src=\"{PREFIX}/{}/{}/serialTail\" data-boot=\"{}\" \
         data-cursor=\"{}\" data-ended=\"{}\">{}</pre></section>\n",
        t["boot"].as_u64().unwrap_or(0),
        seg(&d.rg),
        seg(&d.vm),
        t["boot"].as_u64().unwrap_or(0),
        t["cursor"].as_u64().unwrap_or(0),
        t["ended"].as_bool().unwrap_or(false),
        esc(&clean(s(&t, "text"))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&apos;x&apos;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn keys_ignore_sas_links() {
        let a = serde_json::json!([{ "seq": 1, "uri": "http://x/b?sig=1" }]);
        let b = serde_json::json!([{ "seq": 1, "uri": "http://x/b?sig=2" }]);
        let c = serde_json::json!([{ "seq": 2, "uri": "http://x/b?sig=2" }]);
        assert_eq!(key(&a, 0), key(&b, 0));
        assert_ne!(key(&a, 0), key(&c, 0));
    }

    #[test]
    fn terminal_sequences_are_removed() {
        assert_eq!(
            clean("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\n\x1b]0;title\x07ok\tx"),
            "SeaBIOS\nok\tx"
        );
    }

    #[test]
    fn times() {
        assert_eq!(rel(2_500, 1_000), "+1.5 s");
        assert_eq!(clock(0), "1970-01-01 00:00:00 UTC");
    }
}
