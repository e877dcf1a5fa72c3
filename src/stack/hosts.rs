//! Several hosts in one stack: the `[nats]` table that links them, and which services run on
//! which host (`host = "NAME"` on a service; the console's own host by default).
//!
//! The console runs the services of its own host; `switchboard agent --host NAME` runs those
//! of host NAME, from the same stack file ([`Stack::for_host`]).

use std::path::PathBuf;

use super::spec::{ServiceSpec, Stack};

/// The name of the console's own host when `[nats]` does not give one.
pub const CONSOLE_HOST: &str = "console";

/// `[nats]`: the NATS server every host of the stack connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSpec {
    /// `nats://HOST:PORT` (or `tls://`, which requires TLS).
    pub url: String,
    /// The console's own host name: services without `host`, or with this one, run beside it.
    pub console_host: String,
    pub auth: NatsAuth,
    pub tls: Option<TlsSpec>,
}

/// How a host proves who it is to the NATS server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    #[default]
    None,
    /// `user` (where `{host}` becomes the connecting host's name, so each host can have a user
    /// of its own with its own permissions) and the password from the environment variable
    /// `password_env`: a secret is never written in the stack file.
    UserPassword { user: String, password_env: String },
    /// A token from the environment variable `token_env`.
    Token { token_env: String },
    /// An nkey seed file (`{host}` as in `user`).
    NkeySeedFile(PathBuf),
    /// A credentials file: a user JWT and its nkey seed (`{host}` as in `user`).
    CredsFile(PathBuf),
}

/// `[nats.tls]`: a CA to trust the server by, and a client certificate when the server asks
/// for one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSpec {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl NatsAuth {
    /// The same setting for host `host`: `{host}` in a user name or file name replaced.
    pub fn for_host(&self, host: &str) -> NatsAuth {
        let path = |p: &PathBuf| PathBuf::from(p.to_string_lossy().replace("{host}", host));
        match self {
            NatsAuth::UserPassword { user, password_env } => NatsAuth::UserPassword {
                user: user.replace("{host}", host),
                password_env: password_env.clone(),
            },
            NatsAuth::NkeySeedFile(p) => NatsAuth::NkeySeedFile(path(p)),
            NatsAuth::CredsFile(p) => NatsAuth::CredsFile(path(p)),
            other => other.clone(),
        }
    }
}

/// `[topics."PATTERN"]`: how the events of the topics a pattern matches are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// A topic pattern (`order.*`, `audit.>`).
    pub pattern: String,
    /// Stored in a JetStream stream and delivered at least once to each subscribing service,
    /// which acknowledges each after handling it.
    pub durable: bool,
    /// How long a delivered event may go unacknowledged before it is delivered again.
    pub ack_wait: std::time::Duration,
    /// How long the stream keeps an event.
    pub max_age: std::time::Duration,
}

impl TopicSpec {
    pub const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
}

/// Whether `name` can be a host's name: it is one token of a NATS subject.
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Stack {
    /// The console's own host name.
    pub fn console_host(&self) -> &str {
        self.nats
            .as_ref()
            .map_or(CONSOLE_HOST, |n| n.console_host.as_str())
    }

    /// The durable topic pattern `topic` falls under, if any.
    pub fn durable_topic(&self, topic: &str) -> Option<&TopicSpec> {
        self.topics
            .iter()
            .filter(|t| t.durable)
            .find(|t| switchboard_protocol::topic::topic_matches(&t.pattern, topic))
    }

    /// The host `spec` runs on.
    pub fn host_of<'a>(&'a self, spec: &'a ServiceSpec) -> &'a str {
        spec.host.as_deref().unwrap_or(self.console_host())
    }

    /// Whether `spec` runs on another host than the console's.
    pub fn is_remote(&self, spec: &ServiceSpec) -> bool {
        self.host_of(spec) != self.console_host()
    }

    /// Every host named in the stack but the console's, in order of first mention.
    pub fn remote_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for spec in &self.services {
            let host = self.host_of(spec);
            if host != self.console_host() && !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_string());
            }
        }
        hosts
    }

    /// The stack as the agent of `host` runs it: only that host's services, their
    /// dependencies on other hosts' services dropped (the agent cannot see them start), the
    /// gateway off (the console is the stack's front door), and a run directory of its own
    /// (`RUN_DIR/hosts/HOST`), so a console and agents can share one machine.
    pub fn for_host(&self, host: &str) -> Stack {
        let mut stack = self.clone();
        stack.services.retain(|s| self.host_of(s) == host);
        let here: Vec<String> = stack.services.iter().map(|s| s.name.clone()).collect();
        for spec in &mut stack.services {
            spec.depends_on.retain(|d| here.contains(&d.name));
        }
        stack.gateway.bind = None;
        stack.gateway.routes.clear();
        stack.run_dir = self.run_dir.join("hosts").join(host);
        // On the agent, its own host is the local one.
        if let Some(nats) = &mut stack.nats {
            nats.console_host = host.to_string();
        }
        stack
    }
}
