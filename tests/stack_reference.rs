#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The stack-file reference (`docs/stack-file.md`) names every key the parser knows.
//!
//! The keys are read from the parser's own lists, every `const …_KEYS: &[&str] = &[…];` in
//! `src/stack/parse.rs` (the lists its "unknown key" errors are checked against), so a key
//! added to the parser without a line in the reference fails here. A key counts as documented
//! when it appears in the reference in backticks, as `` `key` ``.

mod common;

use std::{fs, path::Path};

use common::stack_keys::parser_keys;

const REFERENCE: &str = "docs/stack-file.md";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

#[test]
fn every_key_the_parser_knows_is_in_the_reference() {
    let keys = parser_keys();
    assert!(
        keys.len() >= 20,
        "found only {} keys in the `*_KEYS` lists of {} ({keys:?}): has the way they are \
         written changed?",
        keys.len(),
        common::stack_keys::PARSER
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
    assert_eq!(
        common::stack_keys::keys_in(source),
        ["name", "data_dir", "count", "window"]
    );
}
