//! Property tests for the stack file parser and validator: whatever the text, parsing returns
//! a stack or at least one diagnostic pointing at a line of the text, and never panics. Inputs:
//! arbitrary text, soups of the stack file's own keys and values, and valid stacks (the demo and
//! a few test stacks) mutated by deletions, insertions, swapped lines and replaced characters.
//! The `stack_file` fuzz target (`fuzz/`) explores the same property without a time limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use proptest::prelude::*;
use switchboard::{
    builtin::BUILTINS,
    stack::{self, ParseOptions},
};

/// A directory that does not exist, so `env_file` and `cwd` fail as diagnostics.
const FILE: &str = "/nonexistent-switchboard-props/stack.toml";

const VALID: &[&str] = &[
    stack::DEMO_TOML,
    r#"
name = "small"
[services.echo]
builtin = "probe"
replicas = 2
heartbeat_timeout = "400ms"
backoff = { initial = "10ms", jitter = 0.0 }
[services.caller]
builtin = "probe"
calls = ["echo"]
depends_on = ["echo"]
restart_limit = { count = 3, window = "1m" }
breaker = { failures = 5, ratio = 0.5, window = "10s", cooldown = "5s" }
"#,
    r#"
name = "plain"
[gateway]
bind = "127.0.0.1:0"
request_timeout = "2s"
routes = [{ route = "GET /echo", call = "echo.echo" }]
[services.echo]
builtin = "probe"
[services.sh]
command = "sh"
args = ["-c", "sleep 600 & echo ready; read x"]
ready_line = "ready"
env = { A = "1" }
shutdown_grace = "200ms"
restart = "on-failure"
[services.job]
kind = "job"
command = "python3"
args = ["job.py"]
protocol = true
autostart = false
params = '{"limit": 3}'
settings = { mode = "fast" }
depends_on = { echo = "ready" }
"#,
];

/// Pieces of stack files, valid and not, for the token soups and insertions.
/// The soup: `TOKENS`, and every key the parser knows (read from its own lists, so a new key
/// is in the soup the day it is added).
fn tokens() -> Vec<&'static str> {
    let mut tokens = TOKENS.to_vec();
    for key in common::stack_keys::parser_keys() {
        if !tokens.contains(&key.as_str()) {
            // Leaked once per strategy: a few hundred bytes for the test's life.
            tokens.push(key.leak());
        }
    }
    tokens
}

/// Structure and values the soup needs besides the keys.
const TOKENS: &[&str] = &[
    "\n",
    " ",
    "=",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'''",
    "#",
    "name",
    "[gateway]",
    "[services.a]",
    "[services.b]",
    "[[services]]",
    "[services.a.env]",
    "builtin",
    "command",
    "args",
    "env",
    "env_file",
    "cwd",
    "kind",
    "depends_on",
    "restart",
    "backoff",
    "restart_limit",
    "heartbeat_timeout",
    "shutdown_grace",
    "replicas",
    "calls",
    "ready_line",
    "protocol",
    "settings",
    "params",
    "autostart",
    "breaker",
    "routes",
    "bind",
    "condition",
    "initial",
    "max",
    "multiplier",
    "jitter",
    "count",
    "window",
    "\"probe\"",
    "\"job\"",
    "\"a\"",
    "\"b\"",
    "\"always\"",
    "\"off\"",
    "\"10ms\"",
    "\"1h30m\"",
    "\"-5s\"",
    "\"99999999999999999999s\"",
    "\"\"",
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "1e400",
    "nan",
    "-inf",
    "0.5",
    "true",
    "1979-05-27T07:32:00Z",
    "[\"a\", \"b\"]",
    "{ a = \"ready\" }",
    "{ a = \"completed\", b = \"started\" }",
    "{ initial = \"1s\", jitter = 2.0 }",
    "{ count = 0 }",
    "\u{0}",
    "é",
    "\u{202e}",
];

fn check(src: &str) -> Result<(), TestCaseError> {
    let lines = src.matches('\n').count() + 1;
    for builtins in [None, Some(BUILTINS)] {
        let options = ParseOptions { builtins };
        if let Err(diagnostics) = stack::parse_with(src, Path::new(FILE), &options) {
            prop_assert!(!diagnostics.is_empty(), "an error without a diagnostic");
            for d in &diagnostics {
                prop_assert!(
                    d.line >= 1 && d.line <= lines && d.col >= 1,
                    "{d} is outside the text's {lines} lines"
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: &'static str },
    SwapLines { a: usize, b: usize },
    DuplicateLine { line: usize },
    Replace { at: usize, with: char },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::sample::select(tokens()))
            .prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Mutation::Replace { at, with }),
    ]
}

fn apply(src: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for m in mutations {
        match *m {
            Mutation::Delete { at, len } if !chars.is_empty() => {
                let at = at % chars.len();
                let end = (at + len).min(chars.len());
                chars.drain(at..end);
            }
            Mutation::Insert { at, token } => {
                let at = at % (chars.len() + 1);
                chars.splice(at..at, token.chars());
            }
            Mutation::Replace { at, with } if !chars.is_empty() => {
                let at = at % chars.len();
                chars[at] = with;
            }
            Mutation::SwapLines { a, b } => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
                chars = lines.join("\n").chars().collect();
            }
            Mutation::DuplicateLine { line } => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.split('\n').collect();
                let line = line % lines.len();
                lines.insert(line, lines[line]);
                chars = lines.join("\n").chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

#[test]
fn the_seeds_are_valid() {
    // Otherwise the mutations below would only ever start from broken text.
    for src in VALID {
        let options = ParseOptions {
            builtins: Some(BUILTINS),
        };
        if let Err(diagnostics) = stack::parse_with(src, Path::new(FILE), &options) {
            panic!("seed does not parse: {diagnostics:?}\n{src}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(src in any::<String>()) {
        check(&src)?;
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(tokens()), 0..60)) {
        check(&tokens.concat())?;
    }

    #[test]
    fn mutated_valid_stacks_never_panic(
        seed in prop::sample::select(VALID),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        check(&apply(seed, &mutations))?;
    }
}
