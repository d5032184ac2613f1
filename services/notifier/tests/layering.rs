//! The notifier's modules form layers: data flows listener → transaction → package → store →
//! scheduler → transport, and a module names only modules in layers below its own (`wire`
//! and `want` carry what crosses between them). This reads the sources and fails on any
//! `crate::<module>` reference that points upwards, which is how import cycles start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest layer first. A module may use the ones before it.
const LAYERS: &[&str] = &[
    "limits",
    "digest",
    "dialect",
    "config",
    "metrics_desc",
    "store",
    "want",
    "wire",
    "target",
    "notify",
    "checksync",
    "pipeline",
    "fanout",
    "expiry",
    "subscribe",
    "transport",
    "engine",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib").then_some(name)
}

/// Every `crate::<name>` a source names outside comments.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            }
        }
    }
    refs
}

#[test]
fn modules_only_use_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let layer = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut upward = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let own = layer(&module)
            .unwrap_or_else(|| panic!("module `{module}` is not in LAYERS: place it in a layer"));
        let text = std::fs::read_to_string(file).expect("read source");
        for name in crate_refs(&text) {
            // Items of the crate root (`Ctx`, ...) are shared context, not a layer.
            let Some(dep) = layer(&name) else { continue };
            if dep > own {
                upward.push(format!("{}: {module} uses {name}", file.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "upward references:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_reference_scan_sees_paths_and_skips_comments() {
    let refs = crate_refs("use crate::wire::{A, B}; let x = crate::store::f(); // crate::engine");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["store".to_owned(), "wire".to_owned()]
    );
}
