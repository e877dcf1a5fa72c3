//! The stack-file keys the parser knows, read from its own `const …_KEYS: &[&str] = &[…];`
//! lists in `src/stack/parse.rs` (the lists its "unknown key" errors are checked against): the
//! reference test checks each is documented, the property tests put each in their soups.

pub const PARSER: &str = "src/stack/parse.rs";

/// Every key of every `*_KEYS` list of the parser, in order, each once.
pub fn parser_keys() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PARSER);
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    keys_in(&source)
}

/// Every string literal in every `const NAME_KEYS: &[&str] = &[ … ];` of `source`.
pub fn keys_in(source: &str) -> Vec<String> {
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
