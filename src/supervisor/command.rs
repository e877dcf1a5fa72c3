//! An operator's command: what the console's keys and `:` line, the admin API and the CLI all
//! ask the supervisor for. It is written and read back in one text form (`scale order 3`), so
//! the three front ends parse it once, here.

/// An operator's (or the stack's) command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Start(String),
    Stop(String),
    /// A rolling restart: one replica at a time, each waiting for its successor to be ready.
    Restart(String),
    /// SIGKILL every instance; the restart policy then applies as to any crash.
    Kill(String),
    Scale(String, u32),
    /// Run a job with these parameters (JSON text; `None` uses the stack file's).
    RunJob(String, Option<String>),
    /// Close the circuit breaker in front of a service by hand (`breaker reset NAME`).
    ResetBreaker(String),
}

impl Command {
    /// The service (or job) it is for.
    pub fn target(&self) -> &str {
        match self {
            Command::Start(n)
            | Command::Stop(n)
            | Command::Restart(n)
            | Command::Kill(n)
            | Command::Scale(n, _)
            | Command::RunJob(n, _)
            | Command::ResetBreaker(n) => n,
        }
    }

    /// The action's name and its target, for the audit log.
    pub fn describe(&self) -> (&'static str, String) {
        match self {
            Command::Start(n) => ("start", n.clone()),
            Command::Stop(n) => ("stop", n.clone()),
            Command::Restart(n) => ("restart", n.clone()),
            Command::Kill(n) => ("kill", n.clone()),
            Command::Scale(n, r) => ("scale", format!("{n} to {r}")),
            Command::RunJob(n, p) => ("run", format!("{n} {}", p.as_deref().unwrap_or(""))),
            Command::ResetBreaker(n) => ("breaker reset", n.clone()),
        }
    }
}

/// A command that does not parse, as a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command `{0}` (restart, stop, start, kill, scale, run, breaker reset)")]
    Unknown(String),
    #[error("`{0}` needs a service name: `{0} NAME`")]
    NoName(&'static str),
    #[error("usage: scale NAME REPLICAS (a whole number, e.g. `scale order 3`)")]
    Scale,
    #[error("usage: breaker reset NAME")]
    Breaker,
}

impl Command {
    /// A command that takes only a service's name: `restart`, `stop`, `start`, `kill`.
    pub fn from_action(action: &str, name: String) -> Result<Command, CommandError> {
        match action {
            "restart" | "r" => Ok(Command::Restart(name)),
            "stop" => Ok(Command::Stop(name)),
            "start" => Ok(Command::Start(name)),
            "kill" => Ok(Command::Kill(name)),
            other => Err(CommandError::Unknown(other.to_string())),
        }
    }
}

impl std::str::FromStr for Command {
    type Err = CommandError;

    /// `restart NAME`, `stop NAME`, `start NAME`, `kill NAME`, `scale NAME N`,
    /// `run JOB [JSON]`, `breaker reset NAME`: what [`Display`](std::fmt::Display) writes, read
    /// back.
    fn from_str(line: &str) -> Result<Command, CommandError> {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        if verb == "breaker" {
            return match (words.next(), words.next(), words.next()) {
                (Some("reset"), Some(name), None) => Ok(Command::ResetBreaker(name.to_string())),
                _ => Err(CommandError::Breaker),
            };
        }
        let verb: &'static str = match verb {
            "restart" | "r" => "restart",
            "stop" => "stop",
            "start" => "start",
            "kill" => "kill",
            "scale" => "scale",
            "run" => "run",
            other => return Err(CommandError::Unknown(other.to_string())),
        };
        let name = words.next().ok_or(CommandError::NoName(verb))?.to_string();
        match verb {
            "scale" => {
                let replicas = words.next().and_then(|w| w.parse().ok());
                match (replicas, words.next()) {
                    (Some(replicas), None) => Ok(Command::Scale(name, replicas)),
                    _ => Err(CommandError::Scale),
                }
            }
            "run" => {
                let rest: Vec<&str> = words.collect();
                Ok(Command::RunJob(
                    name,
                    (!rest.is_empty()).then(|| rest.join(" ")),
                ))
            }
            action => Command::from_action(action, name),
        }
    }
}

impl std::fmt::Display for Command {
    /// As the operator would type it on the `:` line: `restart order`, `scale order 3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Start(n) => write!(f, "start {n}"),
            Command::Stop(n) => write!(f, "stop {n}"),
            Command::Restart(n) => write!(f, "restart {n}"),
            Command::Kill(n) => write!(f, "kill {n}"),
            Command::Scale(n, r) => write!(f, "scale {n} {r}"),
            Command::RunJob(n, None) => write!(f, "run {n}"),
            Command::RunJob(n, Some(p)) => write!(f, "run {n} {p}"),
            Command::ResetBreaker(n) => write!(f, "breaker reset {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_reads_back_what_it_writes() {
        for command in [
            Command::Restart("order".into()),
            Command::Stop("a".into()),
            Command::Start("a".into()),
            Command::Kill("a".into()),
            Command::Scale("order".into(), 3),
            Command::RunJob("report".into(), None),
            Command::RunJob("report".into(), Some("{\"a\": 1}".into())),
            Command::ResetBreaker("user".into()),
        ] {
            assert_eq!(command.to_string().parse::<Command>(), Ok(command.clone()));
        }
    }

    #[test]
    fn what_does_not_parse_says_why() {
        assert_eq!("scale order".parse::<Command>(), Err(CommandError::Scale));
        assert_eq!("scale order x".parse::<Command>(), Err(CommandError::Scale));
        assert_eq!(
            "restart".parse::<Command>(),
            Err(CommandError::NoName("restart"))
        );
        assert_eq!(
            "explode x".parse::<Command>(),
            Err(CommandError::Unknown("explode".into()))
        );
        assert!(CommandError::Scale.to_string().starts_with("usage: scale"));
        assert_eq!(
            "breaker user".parse::<Command>(),
            Err(CommandError::Breaker)
        );
        assert_eq!(
            "breaker reset".parse::<Command>(),
            Err(CommandError::Breaker)
        );
    }
}
