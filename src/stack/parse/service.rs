//! The `[services.NAME]` tables: a service's program, its restarts and its breaker.

use std::{ops::Range, time::Duration};

use toml::{
    Spanned,
    de::{DeString, DeTable, DeValue},
};

use super::{
    BACKOFF_KEYS, BREAKER_KEYS, LIMIT_KEYS, SERVICE_KEYS, Value, Walker, values::type_name,
};
use crate::stack::{
    spec::{
        AfterLimit, Backoff, BreakerSpec, Condition, Dependency, LogBudget, Program,
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
        let mut startup_timeout = Duration::from_secs(30);
        let mut shutdown_grace = Duration::from_secs(5);
        let mut grace_key: Option<(&str, Range<usize>)> = None;
        let mut stop_signal = StopSignal::default();
        let mut replicas = 1;
        let mut calls = Vec::new();
        let mut ready_line = None;
        let mut protocol = None;
        let mut settings = Vec::new();
        let mut params = String::new();
        let mut autostart = false;
        let mut breaker = BreakerSpec::default();
        let mut limits = ResourceLimits::default();
        let mut log_budget = LogBudget::SERVICE;
        let mut probe = None;
        let mut backlog = crate::stack::BacklogSpec::default();
        let mut autoscale = None;
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
                "startup_timeout" => {
                    if let Some(d) = self.duration(v) {
                        startup_timeout = d;
                    }
                }
                // One setting, two names: `stop_grace` is what supervisord and Docker users
                // look for; `shutdown_grace` is the protocol's word.
                "shutdown_grace" | "stop_grace" => {
                    if let Some((other, _)) = &grace_key {
                        self.error(
                            k.span(),
                            format!(
                                "`{key}` and `{other}` are the same setting: give one",
                                key = k.get_ref().as_ref()
                            ),
                        );
                    }
                    grace_key = Some((
                        if k.get_ref().as_ref() == "stop_grace" {
                            "stop_grace"
                        } else {
                            "shutdown_grace"
                        },
                        k.span(),
                    ));
                    if let Some(d) = self.duration(v) {
                        shutdown_grace = d;
                    }
                }
                "stop_signal" => {
                    if let Some(text) = self.string(v) {
                        match StopSignal::parse(&text) {
                            Some(signal) => stop_signal = signal,
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
                "limits" => {
                    if let Some(t) = self.table(v) {
                        limits = self.resource_limits(t);
                    }
                }
                "log_budget" => log_budget = self.log_budget(v, log_budget),
                "probe" => probe = self.probe(v),
                "backlog" => {
                    if let Some(t) = self.table(v) {
                        backlog = self.backlog(t);
                    }
                }
                "autoscale" => {
                    if let Some(t) = self.table(v) {
                        autoscale = self.autoscale(t, v.span());
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
        if let Some(scale) = &autoscale
            && !(scale.min..=scale.max).contains(&replicas)
        {
            self.error(
                key.span(),
                format!(
                    "service `{name}` starts {replicas} replicas, outside its autoscale range {} to {}",
                    scale.min, scale.max
                ),
            );
        }
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
            startup_timeout,
            shutdown_grace,
            stop_signal,
            replicas,
            calls,
            ready_line,
            protocol,
            settings,
            params,
            autostart,
            breaker,
            limits,
            log_budget,
            probe,
            backlog,
            autoscale,
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
        let mut stay_failed = false;
        let (mut after, mut max) = match limit.then {
            AfterLimit::Retry { after, max } => (after, max),
            AfterLimit::StayFailed => (Duration::ZERO, Duration::ZERO),
        };
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
                "then" => {
                    stay_failed =
                        self.choice(value, &["retry", "stay-failed"]) == Some("stay-failed")
                }
                "retry_after" => match self.duration(value) {
                    Some(d) if d.is_zero() => {
                        self.error(value.span(), "retry_after must be more than zero")
                    }
                    Some(d) => after = d,
                    None => {}
                },
                "retry_max" => {
                    if let Some(d) = self.duration(value) {
                        max = d;
                    }
                }
                _ => self.unknown(key, LIMIT_KEYS, "in restart_limit"),
            }
        }
        limit.then = if stay_failed {
            AfterLimit::StayFailed
        } else {
            // A max below the first wait would make the first wait the longest.
            AfterLimit::Retry {
                after,
                max: max.max(after),
            }
        };
        limit
    }
}
