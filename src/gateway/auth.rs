//! The admin API's bearer token: where it comes from, and the check in front of every admin
//! route.
//!
//! The token is the environment variable named by the stack's `gateway.token_env`, else
//! `SWITCHBOARD_TOKEN`, else 32 random bytes generated at start and written (hex) to
//! `RUN_DIR/token` with mode 0600, where `switchboard ps` and friends find it. A token from the
//! environment is never written to disk.

use std::{
    io::{Read, Write},
    path::Path,
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{GatewayError, error::ApiError};
use crate::audit::AuditLog;

/// The environment variable read when the stack names none.
pub const TOKEN_ENV: &str = "SWITCHBOARD_TOKEN";
/// The file, in the run directory, that holds a generated token.
pub const TOKEN_FILE: &str = "token";

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// An environment variable: the operator chose it.
    Env,
    /// Generated at start and written to `RUN_DIR/token`.
    Generated,
}

#[derive(Clone)]
pub struct Token {
    secret: Arc<str>,
    pub source: TokenSource,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in a log line.
        f.debug_struct("Token")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Resolves the token as described in the module docs; a generated one is written to
    /// `run_dir`.
    pub fn resolve(token_env: Option<&str>, run_dir: &Path) -> Result<Token, GatewayError> {
        let path = run_dir.join(TOKEN_FILE);
        if let Some(secret) = from_env(token_env) {
            // A token file left by an earlier run would only mislead the CLI.
            let _ = std::fs::remove_file(&path);
            return Ok(Token {
                secret: secret.into(),
                source: TokenSource::Env,
            });
        }
        let secret = generate().map_err(GatewayError::Token)?;
        write_private(&path, &secret).map_err(GatewayError::Token)?;
        Ok(Token {
            secret: secret.into(),
            source: TokenSource::Generated,
        })
    }

    /// A token nobody knows, for a listener whose requests need none (the run directory's
    /// socket): nothing can authenticate with it by accident.
    pub fn unknown() -> Result<Token, GatewayError> {
        Ok(Token {
            secret: generate().map_err(GatewayError::Token)?.into(),
            source: TokenSource::Env,
        })
    }

    #[cfg(test)]
    pub fn fixed(secret: &str) -> Token {
        Token {
            secret: secret.into(),
            source: TokenSource::Env,
        }
    }

    /// Whether `offered` is the token, in time independent of where they first differ.
    pub fn matches(&self, offered: &str) -> bool {
        let (a, b) = (self.secret.as_bytes(), offered.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The token from the stack's variable, else from `SWITCHBOARD_TOKEN`; empty counts as unset.
pub fn from_env(token_env: Option<&str>) -> Option<String> {
    token_env
        .into_iter()
        .chain([TOKEN_ENV])
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(|v| v.trim().to_string())
}

/// 32 bytes from the kernel's CSPRNG, as hex.
fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `secret` to a fresh file readable by the owner only. The old file is removed first,
/// so a file created earlier with wider permissions is never reused.
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")
}

/// What the token check needs: the token, and the audit log for refused attempts.
#[derive(Clone)]
pub struct Guard {
    pub token: Token,
    pub audit: Option<AuditLog>,
    /// The prefix axum strips from paths under a nest (`/admin`), for the audit log.
    pub prefix: &'static str,
}

/// The audit log's actor for a request with a wrong token.
pub const WRONG_TOKEN_ACTOR: &str = "api:wrong-token";

/// Middleware in front of the admin routes: `Authorization: Bearer TOKEN` or 401/403. A wrong
/// token (not a missing one, which is only a forgetful client) is audited.
pub async fn require_token(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let token = &guard.token;
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match offered {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the admin API needs `Authorization: Bearer TOKEN` (see RUN_DIR/token)",
        )
        .into_response(),
        Some(offered) if !token.matches(offered) => {
            tracing::warn!(path = %request.uri().path(), "admin request with a wrong token");
            if let Some(audit) = &guard.audit {
                let target = format!(
                    "{} {}{}",
                    request.method(),
                    guard.prefix,
                    request.uri().path()
                );
                audit.record(WRONG_TOKEN_ACTOR, "request", &target, "refused");
            }
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", "wrong token").into_response()
        }
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_and_random() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // Make sure the environment does not decide for this test.
        let name = "SWITCHBOARD_TEST_TOKEN_UNSET_VARIABLE";
        let first = Token::resolve(Some(name), dir.path());
        if std::env::var(TOKEN_ENV).is_ok() {
            return;
        }
        let first = first.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.source, TokenSource::Generated);
        let path = dir.path().join(TOKEN_FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text.trim().len(), 64);
        assert!(first.matches(text.trim()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert_eq!(mode & 0o777, 0o600);
        let second = Token::resolve(Some(name), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(!second.matches(text.trim()), "a new token every start");
    }

    #[test]
    fn matching_is_exact() {
        let token = Token::fixed("abc");
        assert!(token.matches("abc"));
        assert!(!token.matches("abd"));
        assert!(!token.matches("ab"));
        assert!(!token.matches(""));
    }
}
