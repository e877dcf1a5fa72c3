//! Changes between two JSON documents, small enough to push to an attached console on every
//! change: the console stream sends the view once, then only patches.
//!
//! A patch is JSON too:
//! - `[v]` (an array of one value) replaces the target with `v`;
//! - an object patches a target object key by key; `[]` as a key's patch removes the key;
//! - an object patches a target array when its keys are indices: `"<": k` first drops `k`
//!   items from the front (a sliding window, like a sparkline's history, costs one number),
//!   then `"3": p` patches item 3 (or appends it, when 3 is the length), and `"#": n` cuts the
//!   array to `n` items.
//!
//! JSON merge patch (RFC 7396) was not enough: it replaces arrays whole, and the view's rows
//! and histories are arrays.

use serde_json::{Map, Value};

/// How far back a sliding window is looked for (`"<"`).
const MAX_SHIFT: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the patch does not fit the document at {0}")]
pub struct PatchError(String);

/// The patch that turns `old` into `new`; `None` when they are equal.
pub fn diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(before) => {
                        if let Some(change) = diff(before, value) {
                            patch.insert(key.clone(), change);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), replace(value));
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Array(Vec::new()));
            }
            Some(Value::Object(patch))
        }
        (Value::Array(old), Value::Array(new)) if !old.is_empty() => Some(diff_items(old, new)),
        _ => Some(replace(new)),
    }
}

fn replace(value: &Value) -> Value {
    Value::Array(vec![value.clone()])
}

fn diff_items(old: &[Value], new: &[Value]) -> Value {
    // A window that only grew needs no shift (and an all-zero history would match one).
    let grew = new.len() >= old.len() && new[..old.len()] == *old;
    let shift = if grew {
        0
    } else {
        (1..=MAX_SHIFT.min(old.len()))
            .find(|&k| {
                let kept = &old[k..];
                new.len() >= kept.len() && !kept.is_empty() && new[..kept.len()] == *kept
            })
            .unwrap_or(0)
    };
    let kept = &old[shift..];
    let mut patch = Map::new();
    if shift > 0 {
        patch.insert("<".into(), shift.into());
    }
    for (i, value) in new.iter().enumerate() {
        match kept.get(i) {
            Some(before) => {
                if let Some(change) = diff(before, value) {
                    patch.insert(i.to_string(), change);
                }
            }
            None => {
                patch.insert(i.to_string(), replace(value));
            }
        }
    }
    if new.len() < kept.len() {
        patch.insert("#".into(), new.len().into());
    }
    // Changed almost everywhere: the whole array may be shorter.
    let patch = Value::Object(patch);
    let whole = replace(&Value::Array(new.to_vec()));
    if encoded_len(&patch) > encoded_len(&whole) {
        whole
    } else {
        patch
    }
}

fn encoded_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

/// Applies `patch` to `document` in place.
pub fn apply(document: &mut Value, patch: &Value) -> Result<(), PatchError> {
    apply_at(document, patch, &mut String::new())
}

fn apply_at(document: &mut Value, patch: &Value, path: &mut String) -> Result<(), PatchError> {
    match (patch, document) {
        (Value::Array(items), document) => match items.as_slice() {
            [value] => {
                *document = value.clone();
                Ok(())
            }
            _ => Err(PatchError(at(path))),
        },
        (Value::Object(changes), Value::Object(fields)) => {
            for (key, change) in changes {
                if change.as_array().is_some_and(Vec::is_empty) {
                    fields.remove(key);
                    continue;
                }
                let mark = path.len();
                path.push('/');
                path.push_str(key);
                let field = fields.entry(key.clone()).or_insert(Value::Null);
                apply_at(field, change, path)?;
                path.truncate(mark);
            }
            Ok(())
        }
        (Value::Object(changes), Value::Array(items)) => {
            if let Some(shift) = changes.get("<") {
                let shift = index(shift).filter(|&k| k <= items.len());
                let shift = shift.ok_or_else(|| PatchError(format!("{}/<", at(path))))?;
                items.drain(..shift);
            }
            let mut indexed: Vec<(usize, &Value)> = Vec::with_capacity(changes.len());
            for (key, change) in changes {
                if key == "<" || key == "#" {
                    continue;
                }
                let i = key
                    .parse::<usize>()
                    .map_err(|_| PatchError(format!("{}/{key}", at(path))))?;
                indexed.push((i, change));
            }
            indexed.sort_by_key(|(i, _)| *i);
            for (i, change) in indexed {
                let mark = path.len();
                path.push_str(&format!("/{i}"));
                if i < items.len() {
                    apply_at(&mut items[i], change, path)?;
                } else if i == items.len() {
                    let mut item = Value::Null;
                    apply_at(&mut item, change, path)?;
                    items.push(item);
                } else {
                    return Err(PatchError(at(path)));
                }
                path.truncate(mark);
            }
            if let Some(len) = changes.get("#") {
                let len = index(len).ok_or_else(|| PatchError(format!("{}/#", at(path))))?;
                items.truncate(len);
            }
            Ok(())
        }
        _ => Err(PatchError(at(path))),
    }
}

fn index(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn round_trip(old: Value, new: Value) -> Option<Value> {
        let patch = diff(&old, &new);
        let mut document = old;
        if let Some(patch) = &patch {
            apply(&mut document, patch).unwrap();
        }
        assert_eq!(document, new);
        patch
    }

    #[test]
    fn a_sliding_window_costs_the_shift_and_the_new_items() {
        let old = json!({"history": (0..300).collect::<Vec<u64>>(), "cpu": 1.5});
        let new = json!({"history": (1..301).collect::<Vec<u64>>(), "cpu": 1.5});
        let patch = round_trip(old, new).unwrap();
        assert_eq!(patch, json!({"history": {"<": 1, "299": [300]}}));
    }

    #[test]
    fn fields_change_appear_and_go() {
        let patch = round_trip(
            json!({"a": 1, "b": {"c": 2}}),
            json!({"b": {"c": 3}, "d": null}),
        )
        .unwrap();
        assert_eq!(patch, json!({"a": [], "b": {"c": [3]}, "d": [null]}));
        assert_eq!(round_trip(json!([1, 2]), json!([1, 2])), None);
    }

    #[test]
    fn arrays_grow_and_shrink() {
        round_trip(
            json!([{"a": 1}, {"a": 2}, {"a": 3}]),
            json!([{"a": 1}, {"a": 5}]),
        );
        round_trip(json!([]), json!([1, 2]));
        round_trip(json!([1]), json!([]));
        round_trip(json!([1, 2, 3]), json!([9, 8, 7, 6]));
    }

    #[test]
    fn a_patch_that_does_not_fit_is_an_error_not_a_panic() {
        let mut document = json!({"a": [1, 2]});
        assert!(apply(&mut document, &json!({"a": {"7": [1]}})).is_err());
        assert!(apply(&mut document, &json!({"a": {"<": 9}})).is_err());
        assert!(apply(&mut document, &json!({"a": {"x": [1]}})).is_err());
        assert!(apply(&mut document, &json!([1, 2])).is_err());
        assert!(apply(&mut json!(5), &json!({"a": [1]})).is_err());
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (0u64..5).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-d<#0-9]{1,2}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_new_document(old in value(), new in value()) {
            round_trip(old, new);
        }

        #[test]
        fn a_shifted_array_round_trips(items in prop::collection::vec(0u64..4, 0..20), k in 0usize..10, extra in prop::collection::vec(0u64..4, 0..5)) {
            let old = Value::from(items.clone());
            let mut shifted: Vec<u64> = items.into_iter().skip(k).collect();
            shifted.extend(extra);
            round_trip(old, Value::from(shifted));
        }
    }
}
