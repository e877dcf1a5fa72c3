//! The `[services.NAME]` tables: each key read into a draft, then the spec; its dependencies and
//! its breaker. (Backoff and restart limit: `restart.rs`; probe, backlog, limits, log budget:
//! files of their own.)

use std::{ops::Range, time::Duration};

use toml::{
    Spanned,
    de::{DeString, DeTable, DeValue},
};

use super::{BREAKER_KEYS, SERVICE_KEYS, Value, Walker, values::type_name};
use crate::stack::{
    spec::{
        Backoff, BreakerSpec, CONSOLE_ENV, Condition, Dependency, LogBudget, Program,
        ResourceLimits, RestartLimit, RestartPolicy, ServiceKind, ServiceSpec, StopSignal,
    },
    units,
};

impl Walker<'_> {
    pub(super) fn service(
        &mut self,
        key: &Spanned<DeString<'_>>,
        value: &Value<'_>,
    ) -> Option<ServiceSpec> {
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
        let mut d = Draft::default();
        for (k, v) in table.iter() {
            let known = self.program_key(&mut d, k, v)
                || self.lifecycle_key(&mut d, &name, k, v)
                || self.guards_key(&mut d, &name, k, v);
            if !known {
                self.unknown(k, SERVICE_KEYS, &format!("in [services.{name}]"));
            }
        }
        self.finish(key, name, d)
    }

    /// A stack may not set what the console tells each service about itself.
    fn refuse_console_env(&mut self, vars: &[(String, String)], span: Range<usize>, key: &str) {
        for (name, _) in vars {
            if CONSOLE_ENV.contains(&name.as_str()) {
                self.error(
                    span.clone(),
                    format!("`{key}` sets {name}, which the console sets for every service (its own: {})", CONSOLE_ENV.join(", ")),
                );
            }
        }
    }

    /// The spec from what was read: the program chosen, the environment merged, defaults that
    /// depend on other keys filled in.
    fn finish(
        &mut self,
        key: &Spanned<DeString<'_>>,
        name: String,
        d: Draft,
    ) -> Option<ServiceSpec> {
        if d.kind != ServiceKind::Job {
            for (job_key, span) in &d.job_only {
                self.error(
                    span.clone(),
                    format!("`{job_key}` is for jobs, and `{name}` is a service (add `kind = \"job\"`, or remove it)"),
                );
            }
        }
        let program = match (d.builtin, d.command) {
            (Some(builtin), None) => Program::Builtin(builtin),
            (None, Some(command)) => Program::Command {
                command,
                args: d.args,
            },
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
        if let Some(scale) = &d.autoscale
            && !(scale.min..=scale.max).contains(&d.replicas)
        {
            self.error(
                key.span(),
                format!(
                    "service `{name}` starts {} replicas, outside its autoscale range {} to {}",
                    d.replicas, scale.min, scale.max
                ),
            );
        }
        let protocol = d.protocol.unwrap_or(matches!(program, Program::Builtin(_)));
        let mut env = d.env_file_vars;
        for (k, v) in d.env {
            env.retain(|(existing, _)| existing != &k);
            env.push((k, v));
        }
        Some(ServiceSpec {
            restart: d.restart.unwrap_or(match d.kind {
                ServiceKind::Service => RestartPolicy::Always,
                ServiceKind::Job => RestartPolicy::Never,
            }),
            name,
            program,
            env,
            cwd: d.cwd,
            kind: d.kind,
            depends_on: d.depends_on,
            backoff: d.backoff,
            restart_limit: d.restart_limit,
            heartbeat_timeout: d.heartbeat_timeout,
            startup_timeout: d.startup_timeout,
            shutdown_grace: d.shutdown_grace,
            stop_signal: d.stop_signal,
            replicas: d.replicas,
            calls: d.calls,
            ready_line: d.ready_line,
            protocol,
            settings: d.settings,
            params: d.params,
            autostart: d.autostart,
            breaker: d.breaker,
            limits: d.limits,
            log_budget: d.log_budget,
            probe: d.probe,
            backlog: d.backlog,
            autoscale: d.autoscale,
            host: d.host,
        })
    }

    /// What runs and how it is started: the program, its environment, its protocol and a
    /// job's settings. False when `k` is not one of these keys.
    fn program_key(&mut self, d: &mut Draft, k: &Spanned<DeString<'_>>, v: &Value<'_>) -> bool {
        match k.get_ref().as_ref() {
            "builtin" => {
                d.builtin = self.string(v);
                if let Some(b) = &d.builtin {
                    self.spans.builtins.push((b.clone(), v.span()));
                }
            }
            "command" => d.command = self.string(v),
            "args" => d.args = self.strings(v).into_iter().map(|(s, _)| s).collect(),
            "env" => {
                d.env = self.string_map(v);
                self.refuse_console_env(&d.env, v.span(), "env");
            }
            "env_file" => {
                if let Some(file) = self.string(v) {
                    let path = self.path(&file);
                    match std::fs::read_to_string(&path) {
                        Ok(text) => match units::dotenv(&text) {
                            Ok(vars) => {
                                self.refuse_console_env(&vars, v.span(), "env_file");
                                d.env_file_vars = vars;
                            }
                            Err((line, message)) => self
                                .error(v.span(), format!("{}:{line}: {message}", path.display())),
                        },
                        Err(err) => self.error(
                            v.span(),
                            format!("cannot read env file {}: {err}", path.display()),
                        ),
                    }
                }
            }
            "cwd" => d.cwd = self.string(v).map(|c| self.path(&c)),
            "kind" => {
                d.kind = match self.choice(v, &["service", "job"]) {
                    Some("job") => ServiceKind::Job,
                    _ => ServiceKind::Service,
                }
            }
            "protocol" => d.protocol = self.boolean(v),
            "settings" => d.settings = self.string_map(v),
            "params" => {
                if let Some(text) = self.string(v) {
                    if let Err(err) = serde_json::from_str::<serde_json::Value>(&text) {
                        self.error(v.span(), format!("params must be JSON text: {err}"));
                    }
                    d.params = text;
                }
                d.job_only.push(("params", k.span()));
            }
            "autostart" => {
                d.autostart = self.boolean(v).unwrap_or(false);
                d.job_only.push(("autostart", k.span()));
            }
            "ready_line" => d.ready_line = self.string(v).filter(|s| !s.is_empty()),
            "host" => {
                if let Some(host) = self.string(v) {
                    if crate::stack::hosts::valid_host_name(&host) {
                        self.spans.hosts.push((host.clone(), v.span()));
                        d.host = Some(host);
                    } else {
                        self.error(
                            v.span(),
                            format!("host name `{host}` may use only letters, digits, `-` and `_` (at most 64)"),
                        );
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// When it starts, stops and restarts, and how it is judged alive. False when `k` is not
    /// one of these keys.
    fn lifecycle_key(
        &mut self,
        d: &mut Draft,
        name: &str,
        k: &Spanned<DeString<'_>>,
        v: &Value<'_>,
    ) -> bool {
        match k.get_ref().as_ref() {
            "depends_on" => d.depends_on = self.depends_on(name, v),
            "restart" => {
                d.restart = self
                    .choice(v, &["always", "on-failure", "never"])
                    .map(|c| match c {
                        "always" => RestartPolicy::Always,
                        "on-failure" => RestartPolicy::OnFailure,
                        _ => RestartPolicy::Never,
                    })
            }
            "backoff" => {
                if let Some(t) = self.table(v) {
                    d.backoff = self.backoff(t, v.span());
                }
            }
            "restart_limit" => {
                if let Some(t) = self.table(v) {
                    d.restart_limit = self.restart_limit(t);
                }
            }
            "heartbeat_timeout" => {
                d.heartbeat_timeout = match v.get_ref() {
                    DeValue::String(s) if s.as_ref() == "off" => None,
                    _ => self.duration(v).and_then(|d| (!d.is_zero()).then_some(d)),
                }
            }
            "startup_timeout" => {
                if let Some(timeout) = self.duration(v) {
                    d.startup_timeout = timeout;
                }
            }
            // One setting, two names: `stop_grace` is what supervisord and Docker users
            // look for; `d.shutdown_grace` is the d.protocol's word.
            "shutdown_grace" | "stop_grace" => {
                if let Some((other, _)) = &d.grace_key {
                    self.error(
                        k.span(),
                        format!(
                            "`{key}` and `{other}` are the same setting: give one",
                            key = k.get_ref().as_ref()
                        ),
                    );
                }
                d.grace_key = Some((
                    if k.get_ref().as_ref() == "stop_grace" {
                        "stop_grace"
                    } else {
                        "shutdown_grace"
                    },
                    k.span(),
                ));
                if let Some(grace) = self.duration(v) {
                    d.shutdown_grace = grace;
                }
            }
            "stop_signal" => {
                if let Some(text) = self.string(v) {
                    match StopSignal::parse(&text) {
                        Some(signal) => d.stop_signal = signal,
                        None => {
                            let names: Vec<&str> =
                                StopSignal::ALL.iter().map(|s| &s.name()[3..]).collect();
                            self.error(
                                v.span(),
                                format!(
                                    "unknown stop_signal `{text}`: one of {}",
                                    names.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
            "replicas" => {
                if let Some(n) = self.integer(v) {
                    if (1..=1000).contains(&n) {
                        d.replicas = n as u32;
                    } else {
                        self.error(
                            v.span(),
                            format!("replicas must be between 1 and 1000, not {n}"),
                        );
                    }
                }
            }
            "probe" => d.probe = self.probe(v),
            _ => return false,
        }
        true
    }

    /// What guards it and its callers: calls allowed, the breaker, limits, the log budget and
    /// the backlog. False when `k` is not one of these keys.
    fn guards_key(
        &mut self,
        d: &mut Draft,
        name: &str,
        k: &Spanned<DeString<'_>>,
        v: &Value<'_>,
    ) -> bool {
        match k.get_ref().as_ref() {
            "calls" => {
                for (target, span) in self.strings(v) {
                    self.spans
                        .calls
                        .push((name.to_string(), target.clone(), span));
                    d.calls.push(target);
                }
            }
            "breaker" => {
                if let Some(t) = self.table(v) {
                    d.breaker = self.breaker(t);
                }
            }
            "limits" => {
                if let Some(t) = self.table(v) {
                    d.limits = self.resource_limits(t);
                }
            }
            "log_budget" => d.log_budget = self.log_budget(v, d.log_budget),
            "backlog" => {
                if let Some(t) = self.table(v) {
                    d.backlog = self.backlog(t);
                }
            }
            "autoscale" => {
                if let Some(t) = self.table(v) {
                    d.autoscale = self.autoscale(t, v.span());
                }
            }

            _ => return false,
        }
        true
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
}

/// A service's keys as read so far; what its table leaves out keeps the default here.
struct Draft {
    builtin: Option<String>,
    command: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_file_vars: Vec<(String, String)>,
    cwd: Option<std::path::PathBuf>,
    kind: ServiceKind,
    depends_on: Vec<Dependency>,
    /// `None`: by kind (a service always restarts, a job never).
    restart: Option<RestartPolicy>,
    backoff: Backoff,
    restart_limit: RestartLimit,
    heartbeat_timeout: Option<Duration>,
    startup_timeout: Duration,
    shutdown_grace: Duration,
    /// Which of `shutdown_grace` and `stop_grace` gave it, to refuse both.
    grace_key: Option<(&'static str, Range<usize>)>,
    stop_signal: StopSignal,
    replicas: u32,
    calls: Vec<String>,
    ready_line: Option<String>,
    /// `None`: by program (builtins speak it, commands do not).
    protocol: Option<bool>,
    settings: Vec<(String, String)>,
    params: String,
    autostart: bool,
    /// Keys that mean something only on a job, where they were written: refused on a
    /// service, where they would do nothing (the kind may come after them).
    job_only: Vec<(&'static str, Range<usize>)>,
    breaker: BreakerSpec,
    limits: ResourceLimits,
    log_budget: LogBudget,
    probe: Option<crate::stack::ProbeSpec>,
    backlog: crate::stack::BacklogSpec,
    autoscale: Option<crate::stack::AutoscaleSpec>,
    host: Option<String>,
}

impl Default for Draft {
    fn default() -> Self {
        Draft {
            builtin: None,
            command: None,
            args: Vec::new(),
            env: Vec::new(),
            env_file_vars: Vec::new(),
            cwd: None,
            kind: ServiceKind::Service,
            depends_on: Vec::new(),
            restart: None,
            backoff: Backoff::default(),
            restart_limit: RestartLimit::default(),
            heartbeat_timeout: Some(Duration::from_secs(5)),
            startup_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            grace_key: None,
            stop_signal: StopSignal::default(),
            replicas: 1,
            calls: Vec::new(),
            ready_line: None,
            protocol: None,
            settings: Vec::new(),
            params: String::new(),
            autostart: false,
            job_only: Vec::new(),
            breaker: BreakerSpec::default(),
            limits: ResourceLimits::default(),
            log_budget: LogBudget::SERVICE,
            probe: None,
            backlog: crate::stack::BacklogSpec::default(),
            autoscale: None,
            host: None,
        }
    }
}
