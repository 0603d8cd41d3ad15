//! The shape of the workspace, checked (docs/architecture.md): in every crate,
//! - no module imports from the crate root (`crate::Item`): `lib.rs` (of a
//!   crate with more than one module) and the `mod.rs` files only declare
//!   modules and re-export;
//! - no import cycles, neither between files nor between top-level modules.
//!
//! It reads the sources (`crate::…` and `super::…` paths outside `#[cfg(test)]`
//! blocks) rather than compiling anything, so it runs in milliseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's modules (by path, `a::b`; the root is `""`) and their source.
fn modules(src: &Path) -> BTreeMap<String, (PathBuf, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            out.insert(parts.join("::"), (p.clone(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    out
}

/// The code outside comments and test modules.
fn code(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // The test module runs to the end of the file, by convention.
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(l.split(" //").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

fn ident(s: &str) -> usize {
    s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len())
}

/// Every path written after `crate::` (or `super::`, resolved against
/// `parent`), with `{a, b::c}` groups expanded one level.
fn paths(code: &str, parent: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (prefix, base) in
        [("crate::", Vec::<String>::new()), ("super::", parent.split("::").filter(|s| !s.is_empty()).map(String::from).collect())]
    {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut path = base.clone();
            let mut s = rest;
            loop {
                if let Some(group) = s.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split(',') {
                        let mut p = path.clone();
                        p.extend(item.trim().split("::").map(|x| x[..ident(x)].to_string()).filter(|x| !x.is_empty() && x != "self"));
                        out.push(p);
                    }
                    path.clear();
                    break;
                }
                let n = ident(s);
                if n == 0 {
                    break;
                }
                path.push(s[..n].to_string());
                s = &s[n..];
                match s.strip_prefix("::") {
                    Some(r) => s = r,
                    None => break,
                }
            }
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// The module a path lands in: its longest prefix that is a module.
fn target(path: &[String], mods: &BTreeMap<String, (PathBuf, String)>) -> String {
    (0..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| mods.contains_key(m)).unwrap_or_default()
}

/// A cycle in `edges`, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        e: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|p| p == n).unwrap_or(0);
                let mut c = path[at..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for m in e.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, e, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    edges.keys().find_map(|n| visit(n, edges, &mut state, &mut Vec::new()))
}

/// A module root file holds only declarations and re-exports.
fn only_declarations(code: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let mut in_use = false;
    for l in code.lines().map(str::trim) {
        if in_use {
            in_use = !l.ends_with(';');
            continue;
        }
        if l.is_empty() || l.starts_with("#![") || l.starts_with("#[") {
            continue;
        }
        if l.starts_with("pub mod ") || l.starts_with("mod ") || l.starts_with("pub(crate) mod ") {
            continue;
        }
        if l.starts_with("pub use ") || l.starts_with("pub(crate) use ") {
            in_use = !l.ends_with(';');
            continue;
        }
        bad.push(l.to_string());
    }
    bad
}

#[test]
fn every_crate_has_one_home_per_concern() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for c in std::fs::read_dir(crates).unwrap() {
        let src = c.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let mods = modules(&src);
        let name = src.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, (path, text)) in &mods {
            // Test modules (`#[cfg(test)] mod tests;`) may use anything.
            if m == "tests" || m.ends_with("::tests") {
                continue;
            }
            checked += 1;
            let code = code(text);
            let is_mod_rs = path.file_name().is_some_and(|f| f == "mod.rs" || f == "lib.rs");
            // A crate of one module is that module; with more, lib.rs only lists them.
            if is_mod_rs && mods.len() > 1 {
                for l in only_declarations(&code) {
                    problems.push(format!("{name}: {}: more than module declarations and re-exports: {l}", path.display()));
                }
            }
            // `super::` in a file module means its parent; in mod.rs, the dir's parent.
            let parent = m.rsplit_once("::").map(|(p, _)| p).unwrap_or("");
            let parent = if is_mod_rs { parent.rsplit_once("::").map(|(p, _)| p).unwrap_or("") } else { parent };
            for p in paths(&code, parent) {
                let t = target(&p, &mods);
                if t.is_empty() && !m.is_empty() {
                    problems.push(format!("{name}: {m} imports from the crate root: crate::{}", p.join("::")));
                    continue;
                }
                if t == *m || t.is_empty() {
                    continue;
                }
                files.entry(m.clone()).or_default().insert(t.clone());
                let (a, b) = (m.split("::").next().unwrap().to_string(), t.split("::").next().unwrap().to_string());
                if a != b && !m.is_empty() {
                    tops.entry(a).or_default().insert(b);
                }
            }
        }
        // The root re-exports from its modules; those are not dependencies.
        files.remove("");
        if let Some(c) = cycle(&files) {
            problems.push(format!("{name}: import cycle between files: {}", c.join(" -> ")));
        }
        if let Some(c) = cycle(&tops) {
            problems.push(format!("{name}: import cycle between top-level modules: {}", c.join(" -> ")));
        }
    }
    assert!(checked > 50, "found only {checked} modules under {}", crates.display());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_cycles_and_root_imports() {
    let p = paths("use crate::a::{b::C, d};\nlet x = super::e::f();\nfoo_crate::z", "p");
    assert_eq!(p, [vec!["a", "b", "C"], vec!["a", "d"], vec!["p", "e", "f"]]);
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    e.entry("a".into()).or_default().insert("b".into());
    assert!(cycle(&e).is_none());
    e.entry("b".into()).or_default().insert("a".into());
    assert_eq!(cycle(&e).unwrap(), ["a", "b", "a"]);
    assert_eq!(only_declarations("pub mod a;\npub use a::{\n  B,\n};\nfn f() {}\n"), ["fn f() {}"]);
}

#[test]
fn the_rfc_index_names_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().parent().unwrap();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let named: Vec<&str> = doc.split('`').filter(|s| s.starts_with("crates/") && s.ends_with(".rs")).collect();
    assert!(named.len() > 20, "the index names only {} files", named.len());
    let missing: Vec<&&str> = named.iter().filter(|p| !root.join(p).is_file()).collect();
    assert!(missing.is_empty(), "docs/architecture.md names files that do not exist: {missing:?}");
}
