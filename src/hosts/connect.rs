//! A NATS connection for one host of the stack, from its `[nats]` table: the credentials
//! (`{host}` in a user or file name is this host's name), TLS, and reconnection for as long
//! as the process runs.

use std::time::Duration;

use crate::stack::{NatsAuth, NatsSpec};

/// How long the first connection may take before the agent or console gives up with an error
/// (later losses are retried for good).
const FIRST_CONNECT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("environment variable {0} (the NATS {1}) is not set")]
    MissingSecret(String, &'static str),
    #[error("cannot read {path}: {cause}")]
    File { path: String, cause: std::io::Error },
    #[error("cannot subscribe on NATS: {0}")]
    Subscribe(String),
    #[error("cannot connect to NATS at {url}: {cause}")]
    Connect {
        url: String,
        cause: async_nats::ConnectError,
    },
}

/// Connects host `host` to the stack's NATS server.
pub async fn connect(
    spec: &NatsSpec,
    stack: &str,
    host: &str,
) -> Result<async_nats::Client, ConnectError> {
    let mut options = match spec.auth.for_host(host) {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password_env } => {
            let password = secret(&password_env, "password")?;
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        NatsAuth::Token { token_env } => {
            async_nats::ConnectOptions::with_token(secret(&token_env, "token")?)
        }
        NatsAuth::NkeySeedFile(path) => {
            let seed = std::fs::read_to_string(&path).map_err(|cause| ConnectError::File {
                path: path.display().to_string(),
                cause,
            })?;
            async_nats::ConnectOptions::with_nkey(seed.trim().to_string())
        }
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(&path)
            .await
            .map_err(|cause| ConnectError::File {
                path: path.display().to_string(),
                cause,
            })?,
    };
    if let Some(tls) = &spec.tls {
        if let Some(ca) = &tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options = options.require_tls(true);
    }
    if spec.url.starts_with("tls://") {
        options = options.require_tls(true);
    }
    options
        .name(format!("switchboard {stack} {host}"))
        .connection_timeout(FIRST_CONNECT)
        .max_reconnects(None)
        // An agent sends its status twice a second; a dead link shows in 2.5 s
        // anyway (see `remote`), so the client's own keepalive need not be eager.
        .ping_interval(Duration::from_secs(10))
        .connect(spec.url.as_str())
        .await
        .map_err(|cause| ConnectError::Connect {
            url: spec.url.clone(),
            cause,
        })
}

fn secret(variable: &str, what: &'static str) -> Result<String, ConnectError> {
    std::env::var(variable).map_err(|_| ConnectError::MissingSecret(variable.to_string(), what))
}
