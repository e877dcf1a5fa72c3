//! The stack file (`stack.toml`): the services a stack runs and how.
//!
//! - [`spec`]: the validated stack as the console uses it.
//! - [`backlog`]: a service's backlog alerts, admission bound and autoscaling.
//! - [`hosts`]: `[nats]` and which host each service runs on.
//! - `parse`: TOML to spec, walking the document with spans.
//! - `validate`: cross-references and dependency cycles.
//! - [`routes`]: which gateway routes can be served together.
//! - [`programs`]: `check`'s warnings about commands not found (not errors).
//! - [`units`]: durations, sizes, env files.
//! - [`diagnostic`]: errors as `FILE:LINE:COL: message`.
//!
//! [`parse`] reports every error it finds, each at the line and column of the offending key or
//! value, so `switchboard check` can list them all at once.

pub mod backlog;
pub mod diagnostic;
pub mod hosts;
mod parse;
pub mod programs;
pub mod routes;
pub mod spec;
pub mod units;
mod validate;

use std::path::Path;

pub use backlog::{AutoscaleSpec, BacklogSpec, ScaleTarget};
pub use diagnostic::Diagnostic;
pub use hosts::{NatsAuth, NatsSpec, TlsSpec, TopicSpec};
pub use spec::{
    AfterLimit, Backoff, BreakerSpec, Condition, ConsoleSpec, Dependency, GatewaySpec, LogBudget,
    OnHangup, ProbeCheck, ProbeSpec, Program, ResourceLimits, RestartLimit, RestartPolicy,
    RouteSpec, ServiceKind, ServiceSpec, Stack, StopSignal,
};

/// The demo stack, embedded in the binary.
pub const DEMO_TOML: &str = include_str!("demo.toml");

/// Options for [`parse_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions<'a> {
    /// When given, `builtin = "…"` must name one of these.
    pub builtins: Option<&'a [&'a str]>,
}

/// Parses a stack file's text. `file` names it in messages, and its directory is the base for
/// relative paths.
pub fn parse(src: &str, file: &Path) -> Result<Stack, Vec<Diagnostic>> {
    parse_with(src, file, &ParseOptions::default())
}

pub fn parse_with(
    src: &str,
    file: &Path,
    options: &ParseOptions<'_>,
) -> Result<Stack, Vec<Diagnostic>> {
    let display = file.display().to_string();
    let base_dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| ".".into()),
    };
    let mut walker = parse::Walker::new(src, &display, &base_dir);
    let stack = walker.document();
    if let Some(stack) = &stack {
        validate::check(stack, &mut walker, options.builtins);
    }
    let mut diagnostics = walker.diagnostics;
    match stack {
        Some(mut stack) if diagnostics.is_empty() => {
            stack.source = Some(file.to_path_buf());
            Ok(stack)
        }
        _ => {
            diagnostics.sort_by_key(|d| (d.line, d.col));
            Err(diagnostics)
        }
    }
}

/// Reads and parses a stack file, checking builtin names against this binary's builtins.
pub fn load(path: &Path) -> Result<Stack, Vec<Diagnostic>> {
    let src = std::fs::read_to_string(path).map_err(|err| {
        vec![Diagnostic {
            file: path.display().to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read the stack file: {err}"),
        }]
    })?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let options = ParseOptions {
        builtins: Some(crate::builtin::BUILTINS),
    };
    parse_with(&src, &path, &options)
}

/// The embedded demo stack, with the current directory as its base.
pub fn demo() -> Result<Stack, Vec<Diagnostic>> {
    let options = ParseOptions {
        builtins: Some(crate::builtin::BUILTINS),
    };
    let mut stack = parse_with(DEMO_TOML, Path::new("<demo>"), &options)?;
    stack.source = None;
    Ok(stack)
}
