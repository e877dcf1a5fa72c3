//! Which services a `:` verb's target names: one service, `all`, or a glob (`order*`, `?ser`).

use crate::api::ConsoleView;

/// Whether the target names more than one service at once.
pub fn is_pattern(target: &str) -> bool {
    target == "all" || target.contains(['*', '?'])
}

/// The services `pattern` names, in the stack's order.
pub fn matching(pattern: &str, view: &ConsoleView) -> Vec<String> {
    view.services
        .iter()
        .filter(|s| pattern == "all" || glob(pattern, &s.name))
        .map(|s| s.name.clone())
        .collect()
}

/// `*` is any run of characters, `?` any one. Linear: on a mismatch it goes back only to just
/// after the last `*` (a pattern of many stars must not take exponential time).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_a_shell_does() {
        assert!(glob("order*", "order"));
        assert!(glob("order*", "orders"));
        assert!(!glob("order*", "reorder"));
        assert!(glob("*der", "reorder"));
        assert!(glob("u?er", "user"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acb-"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob(&"*a".repeat(30), &"a".repeat(29)));
        assert!(is_pattern("all") && is_pattern("o*") && !is_pattern("order"));
    }
}
