//! TOML to [`Stack`], walking the document with spans so that every problem is reported at its
//! line and column, and all of them at once rather than the first only.

use std::{
    collections::HashMap,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use super::{
    diagnostic::Diagnostic,
    spec::{ConsoleSpec, GatewaySpec, OnHangup, RouteSpec, Stack},
    units,
};

mod backlog;
mod limits;
mod log_budget;
mod nats;
mod probe;
mod restart;
mod service;
mod values;

type Value<'i> = Spanned<DeValue<'i>>;

/// Where things were written, for the cross-reference checks that come after parsing.
#[derive(Debug, Default)]
pub(super) struct Spans {
    /// The span of every durable topic's pattern.
    pub durable_topics: Vec<Range<usize>>,
    pub services: HashMap<String, Range<usize>>,
    /// (service, dependency name, span of the entry)
    pub depends_on: Vec<(String, String, Range<usize>)>,
    pub calls: Vec<(String, String, Range<usize>)>,
    pub routes: Vec<(String, Range<usize>)>,
    pub builtins: Vec<(String, Range<usize>)>,
    pub completed: Vec<(String, String, Range<usize>)>,
    pub services_key: Option<Range<usize>>,
    /// (host name, span of the value) of every `host = "…"`.
    pub hosts: Vec<(String, Range<usize>)>,
}

const TOP_KEYS: &[&str] = &[
    "name", "data_dir", "run_dir", "gateway", "console", "nats", "topics", "services",
];
const CONSOLE_KEYS: &[&str] = &["on_hangup", "output_budget"];
const GATEWAY_KEYS: &[&str] = &[
    "bind",
    "token_env",
    "request_timeout",
    "body_limit",
    "routes",
];
const ROUTE_KEYS: &[&str] = &["route", "call", "stream"];
const SERVICE_KEYS: &[&str] = &[
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
    "startup_timeout",
    "shutdown_grace",
    "stop_grace",
    "stop_signal",
    "replicas",
    "calls",
    "ready_line",
    "protocol",
    "settings",
    "params",
    "autostart",
    "breaker",
    "limits",
    "log_budget",
    "probe",
    "backlog",
    "autoscale",
    "host",
];
const BACKLOG_KEYS: &[&str] = &[
    "grow_window",
    "max_age",
    "max_backlog",
    "max_backlog_methods",
];
const AUTOSCALE_KEYS: &[&str] = &[
    "min",
    "max",
    "target_backlog",
    "target_age",
    "target_in_flight",
    "cooldown",
];
const RESOURCE_LIMITS_KEYS: &[&str] = &["memory", "open_files", "cpu_time", "core"];
const BREAKER_KEYS: &[&str] = &["failures", "ratio", "min_requests", "window", "cooldown"];
const BACKOFF_KEYS: &[&str] = &["initial", "max", "multiplier", "jitter", "reset_after"];
const LIMIT_KEYS: &[&str] = &["count", "window", "then", "retry_after", "retry_max"];
const LOG_BUDGET_KEYS: &[&str] = &["lines", "bytes"];
const PROBE_KEYS: &[&str] = &["http", "tcp", "command", "every", "timeout", "failures"];
const NATS_KEYS: &[&str] = &[
    "url",
    "console_host",
    "user",
    "password_env",
    "token_env",
    "nkey_seed_file",
    "creds_file",
    "tls",
];
const TLS_KEYS: &[&str] = &["ca_file", "cert_file", "key_file"];
const TOPIC_KEYS: &[&str] = &["durable", "ack_wait", "max_age"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

pub(super) struct Walker<'s> {
    src: &'s str,
    file: &'s str,
    base_dir: &'s Path,
    pub diagnostics: Vec<Diagnostic>,
    pub spans: Spans,
}

impl<'s> Walker<'s> {
    pub fn new(src: &'s str, file: &'s str, base_dir: &'s Path) -> Self {
        Walker {
            src,
            file,
            base_dir,
            diagnostics: Vec::new(),
            spans: Spans::default(),
        }
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::at(self.file, self.src, span, message));
    }

    /// The whole document. `None` when it is not TOML at all.
    pub fn document(&mut self) -> Option<Stack> {
        let root = match DeTable::parse(self.src) {
            Ok(root) => root,
            Err(err) => {
                let span = err.span().unwrap_or(0..0);
                let mut message = err.message().trim().to_string();
                if message.contains("duplicate key") {
                    let key = self.src.get(span.clone()).unwrap_or("").trim();
                    message = format!(
                        "duplicate key `{key}`: a service (or any key) may be defined only once"
                    );
                }
                self.error(span, format!("invalid TOML: {message}"));
                return None;
            }
        };
        let root_span = root.span();
        let root = root.get_ref();
        let mut name = None;
        let mut data_dir = None;
        let mut run_dir = None;
        let mut gateway = GatewaySpec::default();
        let mut console = ConsoleSpec::default();
        let mut nats = None;
        let mut topics = Vec::new();
        let mut services = Vec::new();
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "name" => name = self.string(value).map(|n| (n, value.span())),
                "data_dir" => data_dir = self.string(value).map(|d| self.path(&d)),
                "run_dir" => run_dir = self.string(value).map(|d| self.path(&d)),
                "gateway" => {
                    if let Some(table) = self.table(value) {
                        gateway = self.gateway(table);
                    }
                }
                "console" => {
                    if let Some(table) = self.table(value) {
                        console = self.console(table);
                    }
                }
                "nats" => {
                    if let Some(table) = self.table(value) {
                        nats = self.nats(table, value.span());
                    }
                }
                "topics" => {
                    if let Some(table) = self.table(value) {
                        topics = self.topics(table);
                    }
                }
                "services" => {
                    self.spans.services_key = Some(key.span());
                    if let Some(table) = self.table(value) {
                        for (service_key, service) in table.iter() {
                            if let Some(spec) = self.service(service_key, service) {
                                services.push(spec);
                            }
                        }
                    }
                }
                _ => self.unknown(key, TOP_KEYS, "at the top level"),
            }
        }
        let name = match name {
            Some((name, span)) if name.trim().is_empty() => {
                self.error(span, "`name` must not be empty");
                String::new()
            }
            Some((name, _)) => name,
            None => {
                self.error(
                    root_span.start..root_span.start,
                    "missing `name = \"…\"` for the stack",
                );
                String::new()
            }
        };
        if services.is_empty() && self.diagnostics.is_empty() {
            let span = self.spans.services_key.clone().unwrap_or(0..0);
            self.error(
                span,
                "the stack has no services: add a `[services.NAME]` table",
            );
        }
        let state = self.base_dir.join(".switchboard");
        Some(Stack {
            name,
            source: None,
            base_dir: self.base_dir.to_path_buf(),
            data_dir: data_dir.unwrap_or_else(|| state.join("data")),
            run_dir: run_dir.unwrap_or_else(|| state.join("run")),
            gateway,
            console,
            nats,
            topics,
            services,
        })
    }

    fn console(&mut self, table: &DeTable<'_>) -> ConsoleSpec {
        let mut console = ConsoleSpec::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "on_hangup" => match self.string(value).as_deref() {
                    Some("detach") => console.on_hangup = OnHangup::Detach,
                    Some("stop") => console.on_hangup = OnHangup::Stop,
                    Some(other) => self.error(
                        value.span(),
                        format!("`on_hangup` is \"detach\" or \"stop\", not \"{other}\""),
                    ),
                    None => {}
                },
                "output_budget" => {
                    console.output_budget = self.log_budget(value, console.output_budget);
                }
                _ => self.unknown(key, CONSOLE_KEYS, "in [console]"),
            }
        }
        console
    }

    fn path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn gateway(&mut self, table: &DeTable<'_>) -> GatewaySpec {
        let mut gateway = GatewaySpec::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "bind" => {
                    if let Some(text) = self.string(value) {
                        // The same words as `--gateway off`.
                        match text.parse::<SocketAddr>() {
                            _ if matches!(text.as_str(), "off" | "none" | "no") => {
                                gateway.bind = None;
                            }
                            Ok(addr) => gateway.bind = Some(addr),
                            Err(_) => self.error(
                                value.span(),
                                format!(
                                    "`{text}` is not a socket address (e.g. \"127.0.0.1:8787\") nor \"off\""
                                ),
                            ),
                        }
                    }
                }
                "token_env" => gateway.token_env = self.string(value),
                "request_timeout" => {
                    if let Some(d) = self.duration(value) {
                        gateway.request_timeout = d;
                    }
                }
                "body_limit" => {
                    let limit = match value.get_ref() {
                        DeValue::Integer(_) => {
                            self.integer(value).and_then(|n| usize::try_from(n).ok())
                        }
                        _ => self
                            .string(value)
                            .and_then(|text| match units::size(&text) {
                                Ok(size) => Some(size),
                                Err(message) => {
                                    self.error(value.span(), message);
                                    None
                                }
                            }),
                    };
                    if let Some(limit) = limit {
                        gateway.body_limit = limit;
                    }
                }
                "routes" => {
                    if let Some(routes) = self.array(value) {
                        // Routes one request could match are refused here, at their line,
                        // not only when the gateway starts.
                        let mut served = super::routes::RouteSet::default();
                        for route in routes.iter() {
                            if let Some(spec) = self.route(route) {
                                if let Err(why) = served.add(&spec.method, &spec.path) {
                                    self.error(route.span(), why);
                                }
                                gateway.routes.push(spec);
                            }
                        }
                    }
                }
                _ => self.unknown(key, GATEWAY_KEYS, "in [gateway]"),
            }
        }
        gateway
    }

    fn route(&mut self, value: &Value<'_>) -> Option<RouteSpec> {
        let table = self.table(value)?;
        let mut route = None;
        let mut call = None;
        let mut stream = None;
        for (key, item) in table.iter() {
            match key.get_ref().as_ref() {
                "route" => route = self.string(item).map(|r| (r, item.span())),
                "call" => call = self.string(item).map(|c| (c, item.span())),
                "stream" => stream = self.boolean(item),
                _ => self.unknown(key, ROUTE_KEYS, "in a gateway route"),
            }
        }
        let (Some((route, route_span)), Some((call, call_span))) = (route, call) else {
            self.error(
                value.span(),
                "a route needs `route = \"METHOD /path\"` and `call = \"service.method\"`",
            );
            return None;
        };
        let Some((method, path)) = route.split_once(' ') else {
            self.error(
                route_span,
                format!("`{route}` must be \"METHOD /path\", e.g. \"GET /users/{{id}}\""),
            );
            return None;
        };
        let method = method.to_ascii_uppercase();
        let path = path.trim().to_string();
        if !METHODS.contains(&method.as_str()) {
            self.error(
                route_span.clone(),
                format!(
                    "unknown HTTP method `{method}` (use {})",
                    METHODS.join(", ")
                ),
            );
        }
        if !path.starts_with('/') {
            self.error(route_span, format!("path `{path}` must start with `/`"));
        }
        let Some((service, call_method)) = call
            .split_once('.')
            .filter(|(s, m)| !s.is_empty() && !m.is_empty())
        else {
            self.error(call_span, format!("`{call}` must be \"service.method\""));
            return None;
        };
        self.spans.routes.push((service.to_string(), call_span));
        Some(RouteSpec {
            method,
            path,
            service: service.to_string(),
            call_method: call_method.to_string(),
            stream: stream.unwrap_or(false),
        })
    }
}
