//! Tab in the `:` line: completes the word being typed, a verb first, then a service's name;
//! Tab again cycles through the other candidates, as a shell's menu completion does.

use crate::api::ConsoleView;

/// The verbs the `:` line knows (the console's own, then the supervisor's).
const VERBS: &[&str] = &[
    "breaker", "filter", "help", "kill", "logs", "quit", "restart", "run", "scale", "sort",
    "start", "stop",
];

/// Verbs whose target may be `all` (or a glob) as well as one name.
const MANY: &[&str] = &["kill", "logs", "restart", "start", "stop"];

/// A completion being cycled: the line up to the completed word, the candidates, and which
/// one the prompt shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    base: String,
    candidates: Vec<String>,
    shown: usize,
}

/// The prompt's text after a Tab, or `None` when nothing completes. A single candidate is
/// taken with a space after it (the next Tab completes the next word); several are cycled, and
/// `cycle` remembers where (the caller clears it when the operator types).
pub fn complete(text: &str, cycle: &mut Option<Cycle>, view: &ConsoleView) -> Option<String> {
    if let Some(c) = cycle {
        c.shown = (c.shown + 1) % c.candidates.len();
        return Some(format!("{}{}", c.base, c.candidates[c.shown]));
    }
    let start = text.rfind(' ').map_or(0, |i| i + 1);
    let (base, word) = text.split_at(start);
    let candidates: Vec<String> = candidates(base, view)
        .into_iter()
        .filter(|c| c.starts_with(word))
        .collect();
    match candidates.len() {
        0 => None,
        1 => Some(format!("{base}{} ", candidates[0])),
        _ => {
            let first = format!("{base}{}", candidates[0]);
            *cycle = Some(Cycle {
                base: base.to_string(),
                candidates,
                shown: 0,
            });
            Some(first)
        }
    }
}

/// What may come next after the words in `base`.
fn candidates(base: &str, view: &ConsoleView) -> Vec<String> {
    let words: Vec<&str> = base.split_whitespace().collect();
    let names = || view.services.iter().map(|s| s.name.clone());
    match words.as_slice() {
        [] => VERBS.iter().map(|v| (*v).to_string()).collect(),
        ["breaker"] => vec!["reset".into()],
        ["breaker", "reset"] | ["scale" | "run"] => names().collect(),
        [verb] if MANY.contains(verb) => {
            std::iter::once("all".to_string()).chain(names()).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::ServiceRow, registry::InstanceState};

    fn view() -> ConsoleView {
        ConsoleView {
            services: ["order", "order-audit", "user"]
                .iter()
                .map(|n| ServiceRow::new(n, InstanceState::Ready))
                .collect(),
            ..ConsoleView::default()
        }
    }

    #[test]
    fn tab_completes_a_verb_then_a_name_and_cycles() {
        let view = view();
        let mut cycle = None;
        assert_eq!(
            complete("res", &mut cycle, &view).as_deref(),
            Some("restart ")
        );
        assert_eq!(cycle, None);
        let mut text = complete("restart or", &mut cycle, &view);
        assert_eq!(text.as_deref(), Some("restart order"));
        text = complete(text.as_deref().unwrap_or_default(), &mut cycle, &view);
        assert_eq!(text.as_deref(), Some("restart order-audit"));
        text = complete(text.as_deref().unwrap_or_default(), &mut cycle, &view);
        assert_eq!(text.as_deref(), Some("restart order"));
        let mut cycle = None;
        assert_eq!(
            complete("stop a", &mut cycle, &view).as_deref(),
            Some("stop all ")
        );
        assert_eq!(
            complete("breaker r", &mut cycle, &view).as_deref(),
            Some("breaker reset ")
        );
        assert_eq!(complete("sort x", &mut cycle, &view), None);
        assert_eq!(complete("zz", &mut cycle, &view), None);
    }
}
