//! Typed accessors for the walker: each reports a type mismatch at the value and returns
//! `None`, so the caller can keep going and collect the next error too.

use std::{ops::Range, time::Duration};

use toml::{
    Spanned,
    de::{DeArray, DeString, DeTable, DeValue},
};

use super::{Value, Walker};
use crate::stack::units;

impl Walker<'_> {
    pub(super) fn mismatch(&mut self, value: &Value<'_>, expected: &str) {
        let found = type_name(value.get_ref());
        self.error(value.span(), format!("expected {expected}, found {found}"));
    }

    pub(super) fn string(&mut self, value: &Value<'_>) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.mismatch(value, "a string");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.mismatch(value, "true or false");
                None
            }
        }
    }

    pub(super) fn integer(&mut self, value: &Value<'_>) -> Option<i64> {
        match value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(value.span(), "integer out of range");
                    None
                }
            },
            _ => {
                self.mismatch(value, "an integer");
                None
            }
        }
    }

    pub(super) fn number(&mut self, value: &Value<'_>) -> Option<f64> {
        match value.get_ref() {
            DeValue::Float(f) => f.as_str().parse().ok(),
            DeValue::Integer(_) => self.integer(value).map(|n| n as f64),
            _ => {
                self.mismatch(value, "a number");
                None
            }
        }
    }

    pub(super) fn duration(&mut self, value: &Value<'_>) -> Option<Duration> {
        match value.get_ref() {
            DeValue::String(s) => match units::duration(s) {
                Ok(d) => Some(d),
                Err(message) => {
                    self.error(value.span(), message);
                    None
                }
            },
            DeValue::Integer(i) => {
                self.error(
                    value.span(),
                    format!("durations need a unit, e.g. \"{}s\"", i.as_str()),
                );
                None
            }
            _ => {
                self.mismatch(value, "a duration such as \"5s\"");
                None
            }
        }
    }

    pub(super) fn choice(
        &mut self,
        value: &Value<'_>,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let text = self.string(value)?;
        match allowed.iter().find(|a| **a == text) {
            Some(found) => Some(found),
            None => {
                let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
                self.error(
                    value.span(),
                    format!("`{text}` is not one of {}", list.join(", ")),
                );
                None
            }
        }
    }

    pub(super) fn table<'v, 'i>(&mut self, value: &'v Value<'i>) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.mismatch(value, "a table");
                None
            }
        }
    }

    pub(super) fn array<'v, 'i>(&mut self, value: &'v Value<'i>) -> Option<&'v DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(array) => Some(array),
            _ => {
                self.mismatch(value, "a list");
                None
            }
        }
    }

    pub(super) fn strings(&mut self, value: &Value<'_>) -> Vec<(String, Range<usize>)> {
        let Some(array) = self.array(value) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in array.iter() {
            if let Some(s) = self.string(item) {
                out.push((s, item.span()));
            }
        }
        out
    }

    pub(super) fn string_map(&mut self, value: &Value<'_>) -> Vec<(String, String)> {
        let Some(table) = self.table(value) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, item) in table.iter() {
            // Numbers and booleans are accepted as their text, as in env files.
            let text = match item.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                DeValue::Integer(i) => Some(i.to_string()),
                DeValue::Float(f) => Some(f.to_string()),
                DeValue::Boolean(b) => Some(b.to_string()),
                _ => {
                    self.mismatch(item, "a string");
                    None
                }
            };
            if let Some(text) = text {
                out.push((key.get_ref().to_string(), text));
            }
        }
        out
    }

    pub(super) fn unknown(&mut self, key: &Spanned<DeString<'_>>, known: &[&str], context: &str) {
        let name = key.get_ref();
        let suggestion = known
            .iter()
            .map(|k| (edit_distance(name, k), *k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 3))
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| format!(", did you mean `{k}`?"))
            .unwrap_or_else(|| format!(" (known keys: {})", known.join(", ")));
        self.error(
            key.span(),
            format!("unknown key `{name}` {context}{suggestion}"),
        );
    }
}

pub(super) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    pub(super) fn distances() {
        assert_eq!(edit_distance("restrat", "restart"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
