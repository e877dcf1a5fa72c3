//! A service's `probe = { http | tcp | command, every, timeout, failures }`: checked here, so
//! that `switchboard check` rejects a probe that could only fail when it runs.

use std::time::Duration;

use toml::de::DeValue;

use super::{PROBE_KEYS, Value, Walker};
use crate::stack::spec::{ProbeCheck, ProbeSpec};

/// Checks more often than this cost more than they tell: a hang is declared after several.
const LEAST_EVERY: Duration = Duration::from_millis(100);
/// More failures in a row than this is no liveness check at all.
const MOST_FAILURES: i64 = 1000;

impl Walker<'_> {
    pub(super) fn probe(&mut self, value: &Value<'_>) -> Option<ProbeSpec> {
        let table = self.table(value)?;
        let mut checks = Vec::new();
        // Given, valid or not: an invalid one is reported where it is, not again as missing.
        let mut given = 0;
        let mut every = ProbeSpec::EVERY;
        let mut timeout = ProbeSpec::TIMEOUT;
        let mut failures = ProbeSpec::FAILURES;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "http" | "tcp" | "command" => {
                    given += 1;
                    checks.extend(match key.get_ref().as_ref() {
                        "http" => self.http_probe(value),
                        "tcp" => self.tcp_probe(value),
                        _ => self.command_probe(value),
                    });
                }
                "every" => {
                    if let Some(d) = self.duration(value) {
                        if d < LEAST_EVERY {
                            self.error(value.span(), "every must be at least 100ms");
                        } else {
                            every = d;
                        }
                    }
                }
                "timeout" => {
                    if let Some(d) = self.duration(value) {
                        if d.is_zero() {
                            self.error(value.span(), "timeout must be more than zero");
                        } else {
                            timeout = d;
                        }
                    }
                }
                "failures" => {
                    if let Some(n) = self.integer(value) {
                        match u32::try_from(n) {
                            Ok(n) if (1..=MOST_FAILURES).contains(&i64::from(n)) => failures = n,
                            _ => self.error(
                                value.span(),
                                format!("failures must be between 1 and {MOST_FAILURES}, not {n}"),
                            ),
                        }
                    }
                }
                _ => self.unknown(key, PROBE_KEYS, "in a probe"),
            }
        }
        if given != 1 {
            self.error(
                value.span(),
                "a probe needs exactly one of `http = \"http://…\"`, `tcp = \"host:port\"` or `command = …`",
            );
            return None;
        }
        Some(ProbeSpec {
            // None when the one given was invalid (and said so).
            check: checks.pop()?,
            every,
            timeout,
            failures,
        })
    }

    fn http_probe(&mut self, value: &Value<'_>) -> Option<ProbeCheck> {
        let url = self.string(value)?;
        if url.contains("${") {
            // Known only at the spawn, from the service's environment.
            return Some(ProbeCheck::Http { url });
        }
        match url.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {
                Some(ProbeCheck::Http { url })
            }
            Ok(uri) if uri.scheme_str() == Some("https") => {
                self.error(
                    value.span(),
                    "https probes are not supported: probe the plain-HTTP port, or use `tcp`",
                );
                None
            }
            _ => {
                self.error(
                    value.span(),
                    format!("`{url}` is not an http:// URL with a host, such as \"http://127.0.0.1:8080/health\""),
                );
                None
            }
        }
    }

    fn tcp_probe(&mut self, value: &Value<'_>) -> Option<ProbeCheck> {
        let address = self.string(value)?;
        if address.contains("${") {
            return Some(ProbeCheck::Tcp { address });
        }
        let port = address
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port != 0);
        if port.is_none() {
            self.error(
                value.span(),
                format!("`{address}` is not host:port, such as \"127.0.0.1:5432\""),
            );
            return None;
        }
        Some(ProbeCheck::Tcp { address })
    }

    fn command_probe(&mut self, value: &Value<'_>) -> Option<ProbeCheck> {
        let argv = match value.get_ref() {
            DeValue::String(_) => {
                let line = self.string(value)?;
                vec!["sh".to_string(), "-c".to_string(), line]
            }
            DeValue::Array(_) => self.strings(value).into_iter().map(|(s, _)| s).collect(),
            _ => {
                self.mismatch(value, "a command line or a list of program and arguments");
                return None;
            }
        };
        // The program, or the shell's command line.
        let what = match value.get_ref() {
            DeValue::String(_) => argv.last(),
            _ => argv.first(),
        };
        if what.is_none_or(|text| text.trim().is_empty()) {
            self.error(value.span(), "a command probe needs a program");
            return None;
        }
        Some(ProbeCheck::Command { argv })
    }
}
