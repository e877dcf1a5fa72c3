//! `[nats]`: the server that links the stack's hosts, how each host authenticates, and TLS;
//! and `[topics]`, whose durable topics are kept by that server.

use std::ops::Range;

use toml::de::DeTable;

use super::{NATS_KEYS, TLS_KEYS, TOPIC_KEYS, Walker};
use crate::stack::hosts::{CONSOLE_HOST, NatsAuth, NatsSpec, TlsSpec, TopicSpec, valid_host_name};

impl Walker<'_> {
    pub(super) fn nats(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<NatsSpec> {
        let mut url = None;
        let mut console_host = CONSOLE_HOST.to_string();
        let mut user = None;
        let mut password_env = None;
        let mut token_env = None;
        let mut nkey = None;
        let mut creds = None;
        let mut tls = None;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "url" => {
                    if let Some(text) = self.string(value) {
                        if nats_url(&text) {
                            url = Some(text);
                        } else {
                            self.error(
                                value.span(),
                                format!("`{text}` is not a NATS URL (e.g. \"nats://127.0.0.1:4222\", or tls://)"),
                            );
                        }
                    }
                }
                "console_host" => {
                    if let Some(host) = self.string(value) {
                        if valid_host_name(&host) {
                            console_host = host;
                        } else {
                            self.error(
                                value.span(),
                                format!("host name `{host}` may use only letters, digits, `-` and `_` (at most 64)"),
                            );
                        }
                    }
                }
                "user" => user = self.string(value).map(|u| (u, key.span())),
                "password_env" => password_env = self.string(value),
                "token_env" => token_env = self.string(value).map(|t| (t, key.span())),
                "nkey_seed_file" => nkey = self.string(value).map(|f| (self.path(&f), key.span())),
                "creds_file" => creds = self.string(value).map(|f| (self.path(&f), key.span())),
                "tls" => {
                    if let Some(table) = self.table(value) {
                        tls = Some(self.tls(table));
                    }
                }
                _ => self.unknown(key, NATS_KEYS, "in [nats]"),
            }
        }
        let mut ways: Vec<(NatsAuth, Range<usize>)> = Vec::new();
        match (user, password_env) {
            (Some((user, span)), Some(password_env)) => {
                ways.push((NatsAuth::UserPassword { user, password_env }, span));
            }
            (Some((_, span)), None) => self.error(
                span,
                "`user` needs `password_env`, the environment variable that holds the password",
            ),
            (None, Some(_)) => self.error(span.clone(), "`password_env` needs `user`"),
            (None, None) => {}
        }
        if let Some((token_env, span)) = token_env {
            ways.push((NatsAuth::Token { token_env }, span));
        }
        if let Some((file, span)) = nkey {
            ways.push((NatsAuth::NkeySeedFile(file), span));
        }
        if let Some((file, span)) = creds {
            ways.push((NatsAuth::CredsFile(file), span));
        }
        if ways.len() > 1 {
            self.error(
                ways[1].1.clone(),
                "[nats] takes one way to authenticate: user and password_env, token_env, nkey_seed_file or creds_file",
            );
        }
        let auth = ways.into_iter().next().map(|(a, _)| a).unwrap_or_default();
        let Some(url) = url else {
            self.error(span, "[nats] needs `url = \"nats://HOST:PORT\"`");
            return None;
        };
        Some(NatsSpec {
            url,
            console_host,
            auth,
            tls,
        })
    }

    fn tls(&mut self, table: &DeTable<'_>) -> TlsSpec {
        let mut tls = TlsSpec::default();
        let mut cert_span = None;
        for (key, value) in table.iter() {
            let file = |walker: &mut Self| walker.string(value).map(|f| walker.path(&f));
            match key.get_ref().as_ref() {
                "ca_file" => tls.ca_file = file(self),
                "cert_file" => {
                    tls.cert_file = file(self);
                    cert_span = Some(key.span());
                }
                "key_file" => {
                    tls.key_file = file(self);
                    cert_span.get_or_insert(key.span());
                }
                _ => self.unknown(key, TLS_KEYS, "in [nats.tls]"),
            }
        }
        if tls.cert_file.is_some() != tls.key_file.is_some()
            && let Some(span) = cert_span
        {
            self.error(
                span,
                "a client certificate needs both `cert_file` and `key_file`",
            );
        }
        tls
    }
}

/// `nats://`, `tls://`, and a host (with a port or not).
fn nats_url(text: &str) -> bool {
    ["nats://", "tls://"].iter().any(|scheme| {
        text.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', ' ']))
    })
}

impl Walker<'_> {
    /// `[topics."PATTERN"]` tables.
    pub(super) fn topics(&mut self, table: &DeTable<'_>) -> Vec<TopicSpec> {
        let mut topics = Vec::new();
        for (key, value) in table.iter() {
            let pattern = key.get_ref().to_string();
            if !switchboard_protocol::topic::valid_pattern(&pattern) {
                self.error(
                    key.span(),
                    format!("`{pattern}` is not a topic pattern (dot-separated tokens; `*` one token, `>` the rest, last)"),
                );
                continue;
            }
            let Some(settings) = self.table(value) else {
                continue;
            };
            let mut topic = TopicSpec {
                pattern,
                durable: false,
                ack_wait: TopicSpec::ACK_WAIT,
                max_age: TopicSpec::MAX_AGE,
            };
            for (k, v) in settings.iter() {
                match k.get_ref().as_ref() {
                    "durable" => topic.durable = self.boolean(v).unwrap_or(false),
                    "ack_wait" => {
                        if let Some(d) = self.duration(v).filter(|d| !d.is_zero()) {
                            topic.ack_wait = d;
                        }
                    }
                    "max_age" => {
                        if let Some(d) = self.duration(v).filter(|d| !d.is_zero()) {
                            topic.max_age = d;
                        }
                    }
                    _ => self.unknown(k, TOPIC_KEYS, &format!("in [topics.\"{}\"]", topic.pattern)),
                }
            }
            if topic.durable {
                self.spans.durable_topics.push(key.span());
            }
            topics.push(topic);
        }
        topics
    }
}
