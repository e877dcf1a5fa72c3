//! Topic patterns, NATS style: topics are dot-separated tokens; in a pattern `*` matches exactly
//! one token and `>` (only as the last token) matches one or more remaining tokens.

/// Whether `topic` matches `pattern`.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    let mut pattern_tokens = pattern.split('.');
    let mut topic_tokens = topic.split('.');
    loop {
        match (pattern_tokens.next(), topic_tokens.next()) {
            (Some(">"), Some(_)) => return pattern_tokens.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(p), Some(t)) if p == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `pattern` is well formed: non-empty tokens, `>` only last, wildcards only as whole
/// tokens.
pub fn valid_pattern(pattern: &str) -> bool {
    let tokens: Vec<&str> = pattern.split('.').collect();
    tokens.iter().enumerate().all(|(i, token)| {
        !token.is_empty()
            && (*token == "*"
                || (*token == ">" && i + 1 == tokens.len())
                || !token.contains(['*', '>']))
    })
}

/// Whether `topic` is a concrete topic (no wildcards) that events can be published to.
pub fn valid_topic(topic: &str) -> bool {
    topic
        .split('.')
        .all(|token| !token.is_empty() && !token.contains(['*', '>']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcards() {
        assert!(topic_matches("order.created", "order.created"));
        assert!(!topic_matches("order.created", "order.completed"));
        assert!(topic_matches("order.*", "order.created"));
        assert!(!topic_matches("order.*", "order.created.eu"));
        assert!(!topic_matches("order.*", "order"));
        assert!(topic_matches("order.>", "order.created"));
        assert!(topic_matches("order.>", "order.created.eu"));
        assert!(!topic_matches("order.>", "order"));
        assert!(topic_matches(">", "anything.at.all"));
        assert!(topic_matches("*.created", "user.created"));
        assert!(!topic_matches("order.>.x", "order.a.x"));
    }

    #[test]
    fn validity() {
        assert!(valid_pattern("order.*"));
        assert!(valid_pattern("order.>"));
        assert!(!valid_pattern("order.>.x"));
        assert!(!valid_pattern("order..x"));
        assert!(!valid_pattern("ord*"));
        assert!(!valid_pattern(""));
        assert!(valid_topic("order.created"));
        assert!(!valid_topic("order.*"));
    }
}
