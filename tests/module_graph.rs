//! The console's modules depend on each other one way only: no cycle between the top-level
//! modules of `src/` (from the `crate::x` paths of their non-test code). A new cycle fails here
//! with its edges, so it is fixed where it starts instead of spreading.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Top-level module → the top-level modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let uses = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if rest.starts_with('{') {
                // `use crate::{a::x, b, c::{..}}`: each top-level name in the group.
                let group = &rest[1..rest.find("};").unwrap_or(rest.len())];
                let mut depth = 0;
                let mut start = true;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && (c.is_ascii_lowercase() || c == '_') => {
                            let name: String = group[j..]
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            uses.insert(name);
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                uses.insert(name);
            }
        }
        uses.remove(&top);
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|u| known.contains(u));
    }
    graph
}

/// Whether `to` is reachable from `from`.
fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(module) = stack.pop() {
        if module == to {
            return true;
        }
        if seen.insert(module.clone()) {
            stack.extend(graph.get(&module).into_iter().flatten().cloned());
        }
    }
    false
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = graph();
    assert!(graph.len() > 10, "too few modules found: {graph:?}");
    let cycles: Vec<String> = graph
        .iter()
        .flat_map(|(from, uses)| {
            uses.iter()
                .filter(|to| reaches(&graph, to, from))
                .map(move |to| format!("{from} -> {to}"))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "edges on a cycle between src/ modules: {cycles:?}"
    );
}

#[test]
fn the_check_sees_an_edge_and_a_cycle() {
    let graph = graph();
    // A dependency the code certainly has, so a parser that sees nothing cannot pass.
    assert!(graph["router"].contains("registry"), "{graph:?}");
    let mut with_cycle = graph.clone();
    with_cycle
        .get_mut("registry")
        .unwrap()
        .insert("router".into());
    assert!(
        reaches(&with_cycle, "registry", "registry") && reaches(&with_cycle, "router", "registry")
    );
}
