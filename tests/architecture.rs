//! The shape of the crate holds: every top-level module of `src/` has a place in the layer
//! table below, and imports only modules of lower layers (or the lower modules of its own
//! layer, in the order listed). A `use crate::...` or `crate::...::` path that goes up or
//! sideways fails this test, naming the file and line.
//!
//! docs/architecture.md explains the layers; keep both in step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom first, each with its modules (a module may use the ones listed before
/// it in its own layer, never after).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base: text, quoting, diagnostics, YAML",
        &["shell", "yaml", "text", "diag", "confine"],
    ),
    (
        "model and outside parts: secrets, SSH, the repo's model, PKI, templates, PostgreSQL and Patroni clients",
        &[
            "secrets",
            "transport",
            "model",
            "pki",
            "template",
            "pg",
            "inventory_import",
        ],
    ),
    (
        "vocabulary: probe records, steps, host state, planner context",
        &["vocab"],
    ),
    ("kinds: one contract per kind", &["kinds"]),
    (
        "stages: load, render, probe, plan, apply, report",
        &["load", "render", "probe", "plan", "apply", "report"],
    ),
    (
        "drivers: where the repo comes from, the run across hosts, the run history, rollback, notifications, the webhook server",
        &[
            "source", "converge", "history", "rollback", "notify", "serve",
        ],
    ),
    ("binary edge: the command line", &["cli"]),
    (
        "test fixtures (compiled for unit tests only)",
        &["testutil"],
    ),
];

fn rank(module: &str) -> Option<usize> {
    let mut r = 0;
    for (_, mods) in LAYERS {
        for m in *mods {
            if *m == module {
                return Some(r);
            }
            r += 1;
        }
    }
    None
}

fn layer_of(module: &str) -> Option<&'static str> {
    LAYERS
        .iter()
        .find(|(_, mods)| mods.contains(&module))
        .map(|(name, _)| *name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of src/ belongs to (None for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Every `crate::NAME` reference of a file, with its line, outside `#[cfg(test)]` modules
/// (tests may reach across layers to build their fixtures).
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_tests = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            in_tests = true;
        }
        if in_tests {
            continue;
        }
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` lists several.
            if name.is_empty() && after.starts_with('{') {
                let list = after[1..].split('}').next().unwrap_or_default();
                for item in list.split(',') {
                    let m: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !m.is_empty() {
                        out.push((n + 1, m));
                    }
                }
            } else if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<(String, String), usize> = BTreeMap::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        // A `tests.rs` file is a unit-test module of its own: like an inline
        // `#[cfg(test)]` module it may reach across layers, provided its parent
        // really compiles it for tests only.
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            let parent = std::fs::read_to_string(f.with_file_name("mod.rs")).unwrap_or_default();
            let lines: Vec<&str> = parent.lines().map(str::trim).collect();
            let gated = lines
                .windows(2)
                .any(|w| w[0] == "#[cfg(test)]" && w[1].ends_with("mod tests;"));
            if !gated {
                problems.push(format!(
                    "{}: a tests.rs module must be declared `#[cfg(test)] mod tests;` in its mod.rs",
                    f.display()
                ));
            }
            continue;
        }
        let Some(mine) = rank(&module) else {
            problems.push(format!(
                "{}: module `{module}` has no place in the layer table of tests/architecture.rs",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, target) in crate_refs(&text) {
            if target == module {
                continue;
            }
            let Some(theirs) = rank(&target) else {
                problems.push(format!(
                    "{}:{line}: `crate::{target}` is not in the layer table",
                    f.display()
                ));
                continue;
            };
            *edges.entry((module.clone(), target.clone())).or_default() += 1;
            if theirs > mine {
                problems.push(format!(
                    "{}:{line}: `{module}` ({}) uses `{target}` ({}), which sits above it",
                    f.display(),
                    layer_of(&module).unwrap_or("?"),
                    layer_of(&target).unwrap_or("?"),
                ));
            }
        }
    }
    let mut table = String::from("layers, bottom first:\n");
    for (name, mods) in LAYERS {
        table.push_str(&format!("  {name}: {}\n", mods.join(", ")));
    }
    eprintln!("{table}");
    assert!(
        problems.is_empty(),
        "{} import(s) against the layers:\n{}\n\n{table}",
        problems.len(),
        problems.join("\n")
    );
    // The table lists only modules that exist, so it stays the map of the crate.
    for (_, mods) in LAYERS {
        for m in *mods {
            assert!(
                src.join(m).is_dir() || src.join(format!("{m}.rs")).is_file(),
                "the layer table names `{m}`, which is not a module of src/"
            );
        }
    }
    assert!(!edges.is_empty());
}

#[test]
fn the_reference_parser_sees_every_form_of_crate_path() {
    let refs = crate_refs(
        "use crate::a::B;\nuse crate::{b, c::D};\nlet x = crate::d::f();\n// crate::e is a comment\n#[cfg(test)]\nuse crate::z;\n",
    );
    let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
}
