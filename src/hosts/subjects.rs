//! The NATS subjects of a stack: `switchboard.STACK.HOST.up` (frames and exits, agent to
//! console), `.down` (frames, console to agent), `.status` (the agent's instances), `.logs`
//! (its services' log lines) and `.control` (commands, request/reply). An agent needs to
//! publish only on its own `up`, `status` and `logs` (and answer on `_INBOX.>`), and to
//! subscribe only to its own `down` and `control`: the permissions docs/hosts.md gives each
//! host's NATS user.

/// The subjects of one stack.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(stack: &str) -> Self {
        Subjects {
            prefix: format!("switchboard.{}", token(stack)),
        }
    }

    pub fn up(&self, host: &str) -> String {
        format!("{}.{host}.up", self.prefix)
    }

    pub fn down(&self, host: &str) -> String {
        format!("{}.{host}.down", self.prefix)
    }

    pub fn status(&self, host: &str) -> String {
        format!("{}.{host}.status", self.prefix)
    }

    pub fn logs(&self, host: &str) -> String {
        format!("{}.{host}.logs", self.prefix)
    }

    pub fn control(&self, host: &str) -> String {
        format!("{}.{host}.control", self.prefix)
    }

    /// Every host's `up` (the console subscribes to this).
    pub fn every_up(&self) -> String {
        self.up("*")
    }

    /// Every host's `logs`.
    pub fn every_logs(&self) -> String {
        self.logs("*")
    }

    /// Every host's `status`.
    pub fn every_status(&self) -> String {
        self.status("*")
    }

    /// The host a subject of this stack names (`None` for a subject of another shape).
    pub fn host_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        let (host, _) = rest.split_once('.')?;
        Some(host)
    }
}

/// A stack name as one subject token: what is not a letter, a digit, `-` or `_` becomes `_`
/// (a stack name may hold dots and spaces; a subject token may not).
pub(crate) fn token(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_stack_and_host() {
        let subjects = Subjects::new("my shop.v2");
        assert_eq!(subjects.up("gpu"), "switchboard.my_shop_v2.gpu.up");
        assert_eq!(subjects.every_status(), "switchboard.my_shop_v2.*.status");
        assert_eq!(
            subjects.host_of("switchboard.my_shop_v2.gpu.up"),
            Some("gpu")
        );
        assert_eq!(subjects.host_of("switchboard.other.gpu.up"), None);
        assert_eq!(subjects.host_of("switchboard.my_shop_v2"), None);
    }
}
