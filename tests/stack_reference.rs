#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The stack-file reference (`docs/stack-file.md`) names every key the parser knows.
//!
//! The keys are read from the parser's own lists, every `const …_KEYS: &[&str] = &[…];` in
//! `src/stack/parse.rs` (the lists its "unknown key" errors are checked against), so a key
//! added to the parser without a line in the reference fails here. A key counts as documented
//! when it appears in the reference in backticks, as `` `key` ``.

use std::{fs, path::Path};

const PARSER: &str = "src/stack/parse.rs";
const REFERENCE: &str = "docs/stack-file.md";

/// Every string literal in every `const NAME_KEYS: &[&str] = &[ … ];` of `source`, in order,
/// each once.
fn parser_keys(source: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("const ") {
        rest = &rest[at + "const ".len()..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        let after_name = rest[name_end..].trim_start();
        let Some(after_type) = after_name
            .strip_prefix(':')
            .map(str::trim_start)
            .and_then(|t| t.strip_prefix("&[&str]"))
        else {
            continue;
        };
        if !name.ends_with("_KEYS") {
            continue;
        }
        let Some(list) = after_type
            .trim_start()
            .strip_prefix('=')
            .map(str::trim_start)
            .and_then(|t| t.strip_prefix("&["))
        else {
            panic!("`const {name}` in {PARSER} is not written `= &[ … ];`");
        };
        let end = list
            .find("];")
            .unwrap_or_else(|| panic!("`const {name}` in {PARSER} has no closing `];`"));
        for key in string_literals(&list[..end]) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// The contents of the plain `"…"` literals in `text` (the key lists hold no escapes).
fn string_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        let after = &rest[open + 1..];
        let close = after
            .find('"')
            .unwrap_or_else(|| panic!("an unclosed string in a key list: {text}"));
        out.push(after[..close].to_string());
        rest = &after[close + 1..];
    }
    out
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

#[test]
fn every_key_the_parser_knows_is_in_the_reference() {
    let keys = parser_keys(&read(PARSER));
    assert!(
        keys.len() >= 20,
        "found only {} keys in the `*_KEYS` lists of {PARSER} ({keys:?}): has the way they are \
         written changed?",
        keys.len()
    );
    let reference_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
    assert!(
        reference_path.is_file(),
        "the stack-file reference {REFERENCE} is missing"
    );
    let reference = read(REFERENCE);
    let missing: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|key| !reference.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE} does not document these stack-file keys (each must appear as `key`, with its \
         type, default and meaning): {}",
        missing.join(", ")
    );
}

#[test]
fn the_readme_links_the_reference() {
    let readme = read("README.md");
    assert!(
        readme.contains(&format!("]({REFERENCE})")),
        "README.md does not link the stack-file reference {REFERENCE}"
    );
}

#[test]
fn the_key_lists_are_read_as_written() {
    let source = r#"
const TOP_KEYS: &[&str] = &[
    "name", "data_dir",
];
const METHODS: &[&str] = &["GET"];
const LIMIT_KEYS: &[&str] = &["count", "window"];
const OTHER_KEYS: &[&str] = &["name"];
"#;
    assert_eq!(parser_keys(source), ["name", "data_dir", "count", "window"]);
}
