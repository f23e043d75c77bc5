//! The folders of `src/` are layers: no import cycle between them (a module that needs
//! something from a folder above it gets it passed in, or the thing moves below both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::X` references in code (comments aside), per top-level folder of `src/`.
fn folder_edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"));
    let folders: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            if !folders.contains(&top) || p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                let code = line.split("//").next().unwrap_or("");
                for part in code.split("crate::").skip(1) {
                    let to: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if to != top && folders.contains(&to) {
                        edges.entry(top.clone()).or_default().insert(to);
                    }
                }
            }
        }
    }
    edges
}

/// Every folder reachable from `from`.
fn reach(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = vec![from];
    while let Some(f) = todo.pop() {
        for t in edges.get(f).into_iter().flatten() {
            if seen.insert(t.clone()) {
                todo.push(t);
            }
        }
    }
    seen
}

#[test]
fn no_import_cycle_between_top_level_folders() {
    let edges = folder_edges();
    assert!(
        edges.contains_key("api") && edges["api"].contains("vm"),
        "{edges:?}"
    );
    let cycles: Vec<&String> = edges
        .keys()
        .filter(|f| reach(&edges, f).contains(*f))
        .collect();
    assert!(
        cycles.is_empty(),
        "folders in an import cycle: {cycles:?}\nedges: {edges:#?}"
    );
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out
}

/// State lives in the daemon's context (src/node.rs) and the values it owns, never in a
/// process-wide static: a `static` holding a lock, an atomic, a cell or a set-once value is
/// mutable state every part of the process shares unseen. (A `LazyLock` of a constant is not.)
#[test]
fn no_process_wide_mutable_static() {
    let shared = [
        "Mutex", "RwLock", "Atomic", "OnceLock", "OnceCell", "Cell<", "Condvar",
    ];
    let found = code_lines_where(|line| {
        let code = line.split("//").next().unwrap_or("").trim_start();
        let is_static = code.starts_with("static ") || code.starts_with("pub static ");
        code.contains("static mut ") || (is_static && shared.iter().any(|s| code.contains(s)))
    });
    assert!(
        found.is_empty(),
        "process-wide mutable statics:\n{}",
        found.join("\n")
    );
}

/// No `Result<_, String>` between modules: errors are typed (`thiserror`, causes kept with
/// `#[source]`). Only clap's value parsers (their error is what clap prints) may say `String`.
#[test]
fn no_string_errors_in_signatures() {
    let found = code_lines_where(|line| {
        let code = line.split("//").next().unwrap_or("");
        code.contains("fn ") && code.split("Result<").skip(1).any(error_is_string)
    });
    assert!(
        found.is_empty(),
        "Result<_, String> signatures:\n{}",
        found.join("\n")
    );
}

/// `path:line: text` of every line of `src/` and `network/src` that `bad` picks.
fn code_lines_where(bad: impl Fn(&str) -> bool) -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let dirs = [
        Path::new(root).join("src"),
        Path::new(root).join("network/src"),
    ];
    let mut found = vec![];
    for (path, text) in dirs.iter().flat_map(|d| sources(d)) {
        for (n, line) in text.lines().enumerate() {
            if bad(line) {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

/// Whether the text after a `Result<` has `String` as its second type argument.
fn error_is_string(after: &str) -> bool {
    let mut depth = 0;
    for (i, c) in after.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            ')' => depth -= 1,
            '>' if depth == 0 => return false,
            '>' => depth -= 1,
            ',' if depth == 0 => {
                let rest = after[i + 1..].trim_start();
                return rest.starts_with("String>") || rest.starts_with("String >");
            }
            _ => {}
        }
    }
    false
}
