//! The `:` command line: the console's own verbs (`logs`, `filter`, `sort`, `quit`, `help`),
//! then the supervisor's commands, each answered on the status line in words.

use super::{
    action::Effect,
    state::{Confirm, Focus, LogScope, Overlay, UiState},
};
use crate::{api::ConsoleView, supervisor::Command};

/// The `:` command language: `restart NAME`, `stop NAME`, `start NAME`, `kill NAME`,
/// `scale NAME N`, `run JOB [JSON]`, `breaker reset NAME`, `logs [NAME|all]`, `filter TEXT`,
/// `sort`, `quit`. `restart`, `stop`, `start` and `kill` also take `all` or a glob (`order*`).
pub(super) fn run(state: &mut UiState, view: &ConsoleView, line: &str) -> Option<Effect> {
    let mut words = line.split_whitespace();
    let verb = words.next()?;
    let name = words.next().map(str::to_string);
    // The console's own verbs first; the rest are the supervisor's commands.
    match verb {
        "logs" => {
            match name.as_deref() {
                None | Some("all") => state.log_scope = LogScope::All,
                Some(n) if view.services.iter().any(|s| s.name == n) => {
                    // The service's own line, not a replica line under it (or under
                    // the service selected before, by its number).
                    state.selected = Some(n.to_string());
                    state.selected_replica = None;
                    state.log_scope = LogScope::Selected;
                }
                Some(n) => {
                    state.set_status(format!("no service named `{n}`"));
                    return None;
                }
            }
            state.focus = Focus::Logs;
            return None;
        }
        "filter" => {
            state.filter = name.unwrap_or_default();
            return None;
        }
        "sort" => {
            state.sort = state.sort.next();
            state.set_status(format!("sorted by {}", state.sort.label()));
            return None;
        }
        "quit" | "q" => {
            state.overlay = Overlay::Confirm(Confirm::Quit);
            return None;
        }
        "help" => {
            state.overlay = Overlay::Help;
            return None;
        }
        _ => {}
    }
    let command = match line.parse::<Command>() {
        Ok(command) => command,
        Err(err) => {
            state.set_status(format!("{err} (try :help)"));
            return None;
        }
    };
    let target = command.target();
    if super::targets::is_pattern(target) {
        return many(state, view, verb, target);
    }
    let Some(row) = view.services.iter().find(|s| s.name == target) else {
        state.set_status(format!("no service named `{target}`"));
        return None;
    };
    if matches!(command, Command::Kill(_)) && !row.state.has_process() {
        state.set_status(format!("{target} is not running: nothing to kill"));
        return None;
    }
    state.set_status(doing(&command));
    Some(Effect::Supervisor(command))
}

/// A verb on every service a pattern names (`restart all`, `stop order*`); `kill` only those
/// running. Verbs that take one service (`scale`, `run`, `breaker reset`) are refused.
fn many(state: &mut UiState, view: &ConsoleView, verb: &str, pattern: &str) -> Option<Effect> {
    if !matches!(verb, "restart" | "r" | "stop" | "start" | "kill") {
        state.set_status(format!("`{verb}` takes one service, not `{pattern}`"));
        return None;
    }
    let names: Vec<String> = super::targets::matching(pattern, view)
        .into_iter()
        .filter(|name| {
            verb != "kill"
                || view
                    .services
                    .iter()
                    .any(|s| &s.name == name && s.state.has_process())
        })
        .collect();
    let commands: Vec<Command> = names
        .iter()
        .filter_map(|name| Command::from_action(verb, name.clone()).ok())
        .collect();
    let Some(first) = commands.first() else {
        let running = if verb == "kill" { " running" } else { "" };
        state.set_status(format!("no{running} service matches `{pattern}`"));
        return None;
    };
    state.set_status(match commands.len() {
        1 => doing(first),
        n => {
            let signal = if verb == "kill" { " (SIGKILL)" } else { "" };
            format!(
                "{} {n} services{signal}: {}",
                doing_verb(first),
                listed(&names)
            )
        }
    });
    Some(Effect::Each(commands))
}

/// The first few names, then how many more: a status line has one row.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", … {} more", names.len() - SHOWN));
    }
    text
}

/// The verb of [`doing`] alone: `restarting`.
fn doing_verb(command: &Command) -> &'static str {
    match command {
        Command::Start(_) => "starting",
        Command::Stop(_) => "stopping",
        Command::Restart(_) => "restarting",
        Command::Kill(_) => "killing",
        Command::Scale(..) => "scaling",
        Command::RunJob(..) => "running",
        Command::ResetBreaker(_) => "resetting breakers",
    }
}

/// What the console is doing for a command, in words: `scaling order to 2`.
fn doing(command: &Command) -> String {
    match command {
        Command::Start(n) => format!("starting {n}"),
        Command::Stop(n) => format!("stopping {n}"),
        Command::Restart(n) => format!("restarting {n}"),
        Command::Kill(n) => format!("killing {n} (SIGKILL)"),
        Command::Scale(n, r) => format!("scaling {n} to {r}"),
        Command::RunJob(n, _) => format!("running {n}"),
        Command::ResetBreaker(n) => format!("resetting {n}'s circuit breaker"),
    }
}
