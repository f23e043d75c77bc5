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
