//! TOML to [`Stack`], walking the document with spans so that every problem is reported at its
//! line and column, and all of them at once rather than the first only.

use std::{
    collections::HashMap,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use toml::{
    Spanned,
    de::{DeString, DeTable, DeValue},
};

use super::{
    diagnostic::Diagnostic,
    spec::{
        Backoff, BreakerSpec, Condition, ConsoleSpec, Dependency, GatewaySpec, OnHangup, Program,
        RestartLimit, RestartPolicy, RouteSpec, ServiceKind, ServiceSpec, Stack,
    },
    units,
};

mod values;

use values::type_name;

type Value<'i> = Spanned<DeValue<'i>>;

/// Where things were written, for the cross-reference checks that come after parsing.
#[derive(Debug, Default)]
pub(super) struct Spans {
    pub services: HashMap<String, Range<usize>>,
    /// (service, dependency name, span of the entry)
    pub depends_on: Vec<(String, String, Range<usize>)>,
    pub calls: Vec<(String, String, Range<usize>)>,
    pub routes: Vec<(String, Range<usize>)>,
    pub builtins: Vec<(String, Range<usize>)>,
    pub completed: Vec<(String, String, Range<usize>)>,
    pub services_key: Option<Range<usize>>,
}

const TOP_KEYS: &[&str] = &[
    "name", "data_dir", "run_dir", "gateway", "console", "services",
];
const CONSOLE_KEYS: &[&str] = &["on_hangup"];
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
    "shutdown_grace",
    "replicas",
    "calls",
    "ready_line",
    "protocol",
    "settings",
    "params",
    "autostart",
    "breaker",
];
const BREAKER_KEYS: &[&str] = &["failures", "ratio", "min_requests", "window", "cooldown"];
const BACKOFF_KEYS: &[&str] = &["initial", "max", "multiplier", "jitter", "reset_after"];
const LIMIT_KEYS: &[&str] = &["count", "window"];
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
                        match text.parse::<SocketAddr>() {
                            Ok(addr) => gateway.bind = addr,
                            Err(_) => self.error(
                                value.span(),
                                format!(
                                    "`{text}` is not a socket address (e.g. \"127.0.0.1:8787\")"
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
                        for route in routes.iter() {
                            if let Some(route) = self.route(route) {
                                gateway.routes.push(route);
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

    fn service(&mut self, key: &Spanned<DeString<'_>>, value: &Value<'_>) -> Option<ServiceSpec> {
        let name = key.get_ref().to_string();
        self.spans.services.insert(name.clone(), key.span());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.error(
                key.span(),
                format!("service name `{name}` may use only letters, digits, `-` and `_`"),
            );
        }
        let table = self.table(value)?;
        let mut builtin = None;
        let mut command = None;
        let mut args = Vec::new();
        let mut env = Vec::new();
        let mut env_file_vars = Vec::new();
        let mut cwd = None;
        let mut kind = ServiceKind::Service;
        let mut depends_on = Vec::new();
        let mut restart = None;
        let mut backoff = Backoff::default();
        let mut restart_limit = RestartLimit::default();
        let mut heartbeat_timeout = Some(Duration::from_secs(5));
        let mut shutdown_grace = Duration::from_secs(5);
        let mut replicas = 1;
        let mut calls = Vec::new();
        let mut ready_line = None;
        let mut protocol = None;
        let mut settings = Vec::new();
        let mut params = String::new();
        let mut autostart = false;
        let mut breaker = BreakerSpec::default();
        for (k, v) in table.iter() {
            match k.get_ref().as_ref() {
                "builtin" => {
                    builtin = self.string(v);
                    if let Some(b) = &builtin {
                        self.spans.builtins.push((b.clone(), v.span()));
                    }
                }
                "command" => command = self.string(v),
                "args" => args = self.strings(v).into_iter().map(|(s, _)| s).collect(),
                "env" => env = self.string_map(v),
                "env_file" => {
                    if let Some(file) = self.string(v) {
                        let path = self.path(&file);
                        match std::fs::read_to_string(&path) {
                            Ok(text) => match units::dotenv(&text) {
                                Ok(vars) => env_file_vars = vars,
                                Err((line, message)) => self.error(
                                    v.span(),
                                    format!("{}:{line}: {message}", path.display()),
                                ),
                            },
                            Err(err) => self.error(
                                v.span(),
                                format!("cannot read env file {}: {err}", path.display()),
                            ),
                        }
                    }
                }
                "cwd" => cwd = self.string(v).map(|c| self.path(&c)),
                "kind" => {
                    kind = match self.choice(v, &["service", "job"]) {
                        Some("job") => ServiceKind::Job,
                        _ => ServiceKind::Service,
                    }
                }
                "depends_on" => depends_on = self.depends_on(&name, v),
                "restart" => {
                    restart = self
                        .choice(v, &["always", "on-failure", "never"])
                        .map(|c| match c {
                            "always" => RestartPolicy::Always,
                            "on-failure" => RestartPolicy::OnFailure,
                            _ => RestartPolicy::Never,
                        })
                }
                "backoff" => {
                    if let Some(t) = self.table(v) {
                        backoff = self.backoff(t, v.span());
                    }
                }
                "restart_limit" => {
                    if let Some(t) = self.table(v) {
                        restart_limit = self.restart_limit(t);
                    }
                }
                "heartbeat_timeout" => {
                    heartbeat_timeout = match v.get_ref() {
                        DeValue::String(s) if s.as_ref() == "off" => None,
                        _ => self.duration(v).and_then(|d| (!d.is_zero()).then_some(d)),
                    }
                }
                "shutdown_grace" => {
                    if let Some(d) = self.duration(v) {
                        shutdown_grace = d;
                    }
                }
                "replicas" => {
                    if let Some(n) = self.integer(v) {
                        if (1..=1000).contains(&n) {
                            replicas = n as u32;
                        } else {
                            self.error(
                                v.span(),
                                format!("replicas must be between 1 and 1000, not {n}"),
                            );
                        }
                    }
                }
                "calls" => {
                    for (target, span) in self.strings(v) {
                        self.spans.calls.push((name.clone(), target.clone(), span));
                        calls.push(target);
                    }
                }
                "ready_line" => ready_line = self.string(v).filter(|s| !s.is_empty()),
                "protocol" => protocol = self.boolean(v),
                "settings" => settings = self.string_map(v),
                "params" => {
                    if let Some(text) = self.string(v) {
                        if let Err(err) = serde_json::from_str::<serde_json::Value>(&text) {
                            self.error(v.span(), format!("params must be JSON text: {err}"));
                        }
                        params = text;
                    }
                }
                "autostart" => autostart = self.boolean(v).unwrap_or(false),
                "breaker" => {
                    if let Some(t) = self.table(v) {
                        breaker = self.breaker(t);
                    }
                }
                _ => self.unknown(k, SERVICE_KEYS, &format!("in [services.{name}]")),
            }
        }
        let program = match (builtin, command) {
            (Some(builtin), None) => Program::Builtin(builtin),
            (None, Some(command)) => Program::Command { command, args },
            (Some(_), Some(_)) => {
                self.error(
                    key.span(),
                    format!("service `{name}` has both `builtin` and `command`: choose one"),
                );
                return None;
            }
            (None, None) => {
                self.error(
                    key.span(),
                    format!("service `{name}` needs `builtin = \"…\"` or `command = \"…\"`"),
                );
                return None;
            }
        };
        let protocol = protocol.unwrap_or(matches!(program, Program::Builtin(_)));
        let mut merged = env_file_vars;
        for (k, v) in env {
            merged.retain(|(existing, _)| existing != &k);
            merged.push((k, v));
        }
        Some(ServiceSpec {
            restart: restart.unwrap_or(match kind {
                ServiceKind::Service => RestartPolicy::Always,
                ServiceKind::Job => RestartPolicy::Never,
            }),
            name,
            program,
            env: merged,
            cwd,
            kind,
            depends_on,
            backoff,
            restart_limit,
            heartbeat_timeout,
            shutdown_grace,
            replicas,
            calls,
            ready_line,
            protocol,
            settings,
            params,
            autostart,
            breaker,
        })
    }

    fn breaker(&mut self, table: &DeTable<'_>) -> BreakerSpec {
        let mut breaker = BreakerSpec::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "failures" | "min_requests" => {
                    if let Some(n) = self.integer(value) {
                        match u32::try_from(n) {
                            Ok(n) if n > 0 => {
                                if key.get_ref().as_ref() == "failures" {
                                    breaker.failures = n;
                                } else {
                                    breaker.min_requests = n;
                                }
                            }
                            _ => self
                                .error(value.span(), format!("must be a positive number, not {n}")),
                        }
                    }
                }
                "ratio" => {
                    if let Some(r) = self.number(value) {
                        if r > 0.0 && r <= 1.0 {
                            breaker.ratio = r;
                        } else {
                            self.error(
                                value.span(),
                                format!("ratio must be above 0 and at most 1, not {r}"),
                            );
                        }
                    }
                }
                "window" => {
                    if let Some(d) = self.duration(value) {
                        breaker.window = d;
                    }
                }
                "cooldown" => {
                    if let Some(d) = self.duration(value) {
                        breaker.cooldown = d;
                    }
                }
                _ => self.unknown(key, BREAKER_KEYS, "in breaker"),
            }
        }
        breaker
    }

    fn depends_on(&mut self, service: &str, value: &Value<'_>) -> Vec<Dependency> {
        let mut dependencies = Vec::new();
        match value.get_ref() {
            DeValue::Array(_) => {
                for (name, span) in self.strings(value) {
                    self.spans
                        .depends_on
                        .push((service.to_string(), name.clone(), span));
                    dependencies.push(Dependency {
                        name,
                        condition: Condition::Ready,
                    });
                }
            }
            DeValue::Table(table) => {
                for (key, condition) in table.iter() {
                    let name = key.get_ref().to_string();
                    let condition = match self.choice(condition, &["started", "ready", "completed"])
                    {
                        Some("started") => Condition::Started,
                        Some("completed") => {
                            self.spans.completed.push((
                                service.to_string(),
                                name.clone(),
                                condition.span(),
                            ));
                            Condition::Completed
                        }
                        _ => Condition::Ready,
                    };
                    self.spans
                        .depends_on
                        .push((service.to_string(), name.clone(), key.span()));
                    dependencies.push(Dependency { name, condition });
                }
            }
            other => self.error(
                value.span(),
                format!(
                    "depends_on must be a list of names or a table of conditions, found {}",
                    type_name(other)
                ),
            ),
        }
        dependencies
    }

    fn backoff(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Backoff {
        let mut backoff = Backoff::default();
        // The limits are checked after the loop, when both values are known; each is reported
        // at the value that was written, or at the table when the default is the one in conflict.
        let mut initial_span = span.clone();
        let mut max_span = span;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "initial" => {
                    if let Some(d) = self.duration(value) {
                        backoff.initial = d;
                        initial_span = value.span();
                    }
                }
                "max" => {
                    if let Some(d) = self.duration(value) {
                        backoff.max = d;
                        max_span = value.span();
                    }
                }
                "reset_after" => {
                    if let Some(d) = self.duration(value) {
                        backoff.reset_after = d;
                    }
                }
                "multiplier" => {
                    if let Some(m) = self.number(value) {
                        if m >= 1.0 && m.is_finite() {
                            backoff.multiplier = m;
                        } else {
                            self.error(
                                value.span(),
                                format!("multiplier must be at least 1, not {m}"),
                            );
                        }
                    }
                }
                "jitter" => {
                    if let Some(j) = self.number(value) {
                        if (0.0..=1.0).contains(&j) {
                            backoff.jitter = j;
                        } else {
                            self.error(
                                value.span(),
                                format!("jitter must be between 0 and 1, not {j}"),
                            );
                        }
                    }
                }
                _ => self.unknown(key, BACKOFF_KEYS, "in backoff"),
            }
        }
        if backoff.initial.is_zero() {
            self.error(initial_span, "backoff.initial must be more than zero");
        } else if backoff.max < backoff.initial {
            self.error(
                max_span,
                format!(
                    "backoff.max ({:?}) must be at least backoff.initial ({:?})",
                    backoff.max, backoff.initial
                ),
            );
        }
        backoff
    }

    fn restart_limit(&mut self, table: &DeTable<'_>) -> RestartLimit {
        let mut limit = RestartLimit::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "count" => {
                    if let Some(n) = self.integer(value) {
                        match u32::try_from(n) {
                            Ok(n) if n > 0 => limit.count = n,
                            _ => self.error(
                                value.span(),
                                format!("count must be a positive number, not {n}"),
                            ),
                        }
                    }
                }
                "window" => {
                    if let Some(d) = self.duration(value) {
                        limit.window = d;
                    }
                }
                _ => self.unknown(key, LIMIT_KEYS, "in restart_limit"),
            }
        }
        limit
    }
}
