//! The target layer's one-way hierarchy, checked: each file of `src/` imports (by `use
//! crate::x` or a `crate::x::` path) only modules of the layers below its own, or of its own
//! layer without a cycle. The table is the one docs/design.md draws; a test checks that the
//! picture there names the same files, so the two cannot drift apart.
//!
//! Runs with the host tests (`cargo test --workspace`, the first step of `cargo xtask test`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first, and their modules (`src/<module>.rs`, or `src/<module>/` for the
/// two below everything). A file may import from a layer below its own, never above.
const LAYERS: &[(&str, &[&str])] = &[
    ("crate root", &["dm_remap"]),
    ("dm adapter", &["target"]),
    ("actions", &["relocate", "scan", "message", "migrate"]),
    ("services", &["commit", "health"]),
    ("state", &["engine", "table"]),
    ("storage", &["metadata"]),
    ("below", &["dm", "logic"]),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../src")
}

/// The layer index of a module (0 is the top), if the table has it.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// Removes `//` comments (outside string literals), so a comment naming a module is not an
/// import.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            match c {
                '"' if prev != '\\' => in_str = !in_str,
                '/' if !in_str && prev == '/' => {
                    cut = i - 1;
                    break;
                }
                _ => {}
            }
            prev = if prev == '\\' && c == '\\' { '\0' } else { c };
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules of the crate that `src` names through `crate::`: `crate::a::b`,
/// `use crate::a`, `use crate::{a, b::c}`.
fn crate_imports(src: &str) -> BTreeSet<String> {
    let src = strip_comments(src);
    let mut found = BTreeSet::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("crate::") {
        // Not the tail of another path (`kernel::crate::` does not exist, but `$crate::`
        // in a macro means some other crate).
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if matches!(before, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // A group: the first identifier of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        found.insert(ident_at(&group[j..]).to_string());
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(rest);
            if !id.is_empty() {
                found.insert(id.to_string());
            }
        }
    }
    found
}

/// Every checked file with the module it belongs to: `src/*.rs` and `src/dm/*.rs` (`dm`).
/// `src/logic/` is a crate of its own on the host (its `crate::` means itself) and cannot
/// reach the target layer at all.
fn files() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for (dir, module) in [(src_dir(), None), (src_dir().join("dm"), Some("dm"))] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .collect();
        entries.sort();
        for p in entries {
            let m = module.map(str::to_string).unwrap_or_else(|| p.file_stem().unwrap().to_string_lossy().into_owned());
            out.push((p, m));
        }
    }
    out
}

/// The violations in a set of (module, its imports): unknown modules, upward imports, and
/// cycles between modules of one layer.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, imports) in graph {
        let Some(lf) = layer_of(from) else {
            bad.push(format!("src/{from}.rs is in no layer: add it to LAYERS here and to docs/design.md"));
            continue;
        };
        for to in imports {
            if to == from {
                continue;
            }
            match layer_of(to) {
                None => bad.push(format!("{from} imports crate::{to}, which is in no layer")),
                Some(lt) if lt < lf => bad.push(format!(
                    "{from} ({}) imports crate::{to} ({}), a layer above it",
                    LAYERS[lf].0, LAYERS[lt].0
                )),
                _ => {}
            }
        }
    }
    // Within a layer, imports must not form a cycle: depth-first search from each module.
    for start in graph.keys() {
        let Some(layer) = layer_of(start) else { continue };
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((m, path)) = stack.pop() {
            for to in graph.get(&m).into_iter().flatten() {
                if to == &m || layer_of(to) != Some(layer) {
                    continue;
                }
                if to == start {
                    let cycle = path.join(" -> ");
                    let msg = format!("import cycle in layer {}: {cycle} -> {start}", LAYERS[layer].0);
                    if !bad.contains(&msg) {
                        bad.push(msg);
                    }
                } else if !path.contains(to) {
                    let mut p = path.clone();
                    p.push(to.clone());
                    stack.push((to.clone(), p));
                }
            }
        }
    }
    bad
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, module) in files() {
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        graph.entry(module).or_default().extend(crate_imports(&src));
    }
    for (_, mods) in LAYERS {
        for m in *mods {
            if *m != "logic" {
                assert!(graph.contains_key(*m), "LAYERS names {m}, but there is no src/{m}.rs");
            }
        }
    }
    // Sanity: the parser sees the imports that are known to exist.
    assert!(graph["target"].contains("relocate") && graph["target"].contains("engine"));
    let bad = violations(&graph);
    assert!(bad.is_empty(), "layering violations (see docs/design.md):\n  {}", bad.join("\n  "));
}

#[test]
fn the_checker_finds_upward_imports_and_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    assert!(violations(&g(&[("target", "relocate"), ("relocate", "migrate"), ("migrate", "commit")])).is_empty());
    assert_eq!(violations(&g(&[("health", "scan")])).len(), 1, "services importing actions");
    assert_eq!(violations(&g(&[("metadata", "engine")])).len(), 1, "storage importing state");
    assert_eq!(violations(&g(&[("dm", "target")])).len(), 1, "dm importing the target");
    assert!(!violations(&g(&[("scan", "migrate"), ("migrate", "scan")])).is_empty(), "a cycle in one layer");
    assert!(!violations(&g(&[("control", "dm")])).is_empty(), "a file in no layer");
}

#[test]
fn the_import_parser_reads_every_form() {
    let src = "use crate::dm::{self, Bio};\nuse crate::{commit, engine::{Engine, Stat}};\n\
               // use crate::scan;\nfn f() { let s = \"a // b\"; crate::health::check(); }\n\
               use kernel::prelude::*; $crate::print!();\n";
    let got: Vec<String> = crate_imports(src).into_iter().collect();
    assert_eq!(got, ["commit", "dm", "engine", "health"]);
}

#[test]
fn design_md_draws_the_same_layers() {
    let path = src_dir().join("../docs/design.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines: Vec<&str> = doc.lines().collect();
    for (layer, mods) in LAYERS {
        // A layer's part of the picture: its line and those after it, up to the next layer's
        // line or the end of the block.
        let start = lines
            .iter()
            .position(|l| l.trim_start().starts_with(layer))
            .unwrap_or_else(|| panic!("docs/design.md has no line starting with the layer name {layer:?}"));
        let part: Vec<&str> = lines[start..]
            .iter()
            .enumerate()
            .take_while(|(i, l)| {
                *i == 0 || !(l.starts_with("```") || LAYERS.iter().any(|(n, _)| l.trim_start().starts_with(n)))
            })
            .map(|(_, l)| *l)
            .collect();
        let line = part.join("\n");
        for m in *mods {
            let name = if matches!(*m, "dm" | "logic") { format!("{m}/") } else { format!("{m}.rs") };
            assert!(line.contains(&name), "docs/design.md's {layer:?} line does not name {name}: {line:?}");
        }
    }
}
