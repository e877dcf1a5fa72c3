//! Arbitrary text through the stack file parser and validator.
//!
//! A stack file is operator input, checked by `switchboard check` before anything runs: whatever
//! it holds, parsing must not panic and must end in either a stack or at least one diagnostic,
//! each pointing at a line of the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchboard::{
    builtin::BUILTINS,
    stack::{self, ParseOptions},
};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    // A directory that does not exist: an `env_file` or `cwd` resolves against it and fails
    // as a diagnostic, never touching the machine's files.
    let file = Path::new("/nonexistent-switchboard-fuzz/stack.toml");
    let lines = src.matches('\n').count() + 1;
    for builtins in [None, Some(BUILTINS)] {
        let options = ParseOptions { builtins };
        match stack::parse_with(src, file, &options) {
            Ok(_) => {}
            Err(diagnostics) => {
                assert!(!diagnostics.is_empty(), "an error without a diagnostic");
                for d in &diagnostics {
                    assert!(d.line >= 1 && d.line <= lines, "line {} of {lines}: {d}", d.line);
                    let _ = d.to_string();
                }
            }
        }
    }
});
