//! Cross-reference checks after parsing: names that must exist, conditions that must make
//! sense, and dependency cycles, each reported where it was written.

use std::collections::HashMap;

use super::{
    parse::{Spans, Walker},
    spec::{ServiceKind, Stack},
};

pub(super) fn check(stack: &Stack, walker: &mut Walker<'_>, builtins: Option<&[&str]>) {
    let spans = std::mem::take(&mut walker.spans);
    // Every declared name counts as known, even a service whose own table had errors: its
    // dependents should not also be told it does not exist.
    let mut known: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    for name in spans.services.keys() {
        if !known.contains(&name.as_str()) {
            known.push(name);
        }
    }
    let list = known.join(", ");

    for (service, dependency, span) in &spans.depends_on {
        if service == dependency {
            walker.error(span.clone(), format!("`{service}` depends on itself"));
        } else if !known.contains(&dependency.as_str()) {
            walker.error(
                span.clone(),
                format!("`{service}` depends on unknown service `{dependency}` (services: {list})"),
            );
        }
    }
    for (service, dependency, span) in &spans.completed {
        if stack
            .service(dependency)
            .is_some_and(|d| d.kind != ServiceKind::Job)
        {
            walker.error(
                span.clone(),
                format!("`{service}` waits for `{dependency}` to complete, but `{dependency}` is a service, not a job (use \"started\" or \"ready\")"),
            );
        }
    }
    for (service, target, span) in &spans.calls {
        if !known.contains(&target.as_str()) {
            walker.error(
                span.clone(),
                format!("`{service}` may call unknown service `{target}` (services: {list})"),
            );
        }
    }
    for (target, span) in &spans.routes {
        if !known.contains(&target.as_str()) {
            walker.error(
                span.clone(),
                format!("route calls unknown service `{target}` (services: {list})"),
            );
        }
    }
    if let Some(builtins) = builtins {
        for (name, span) in &spans.builtins {
            if !builtins.contains(&name.as_str()) {
                walker.error(
                    span.clone(),
                    format!(
                        "no builtin service named `{name}` (builtins: {})",
                        builtins.join(", ")
                    ),
                );
            }
        }
    }
    hosts(stack, &spans, walker);
    cycles(stack, &spans, walker);
}

/// A service on another host needs `[nats]`, which is how the hosts reach each other; so
/// does a durable topic, which its server keeps.
fn hosts(stack: &Stack, spans: &Spans, walker: &mut Walker<'_>) {
    if stack.nats.is_some() {
        return;
    }
    for span in &spans.durable_topics {
        walker.error(
            span.clone(),
            "a durable topic is kept by a NATS server with JetStream: add a [nats] table",
        );
    }
    for (host, span) in &spans.hosts {
        if host != stack.console_host() {
            walker.error(
                span.clone(),
                format!("host `{host}` is not the console's (`{}`): services on other hosts need a [nats] table, through which the hosts talk", stack.console_host()),
            );
        }
    }
}

/// Reports every dependency cycle at each `depends_on` entry on it.
fn cycles(stack: &Stack, spans: &Spans, walker: &mut Walker<'_>) {
    let index: HashMap<&str, usize> = stack
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = stack
        .services
        .iter()
        .map(|s| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.name.as_str()).copied())
                .filter(|&target| stack.services[target].name != s.name)
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark = vec![0u8; edges.len()];
    let mut path = Vec::new();
    let mut reported: Vec<Vec<usize>> = Vec::new();
    for start in 0..edges.len() {
        visit(start, &edges, &mut mark, &mut path, &mut reported);
    }
    for cycle in reported {
        let mut names: Vec<&str> = cycle
            .iter()
            .map(|&i| stack.services[i].name.as_str())
            .collect();
        names.push(names[0]);
        let text = names.join(" → ");
        for pair in names.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            if let Some((_, _, span)) = spans
                .depends_on
                .iter()
                .find(|(s, d, _)| s == from && d == to)
            {
                walker.error(span.clone(), format!("dependency cycle: {text}"));
            }
        }
    }
}

fn visit(
    node: usize,
    edges: &[Vec<usize>],
    mark: &mut [u8],
    path: &mut Vec<usize>,
    reported: &mut Vec<Vec<usize>>,
) {
    if mark[node] == 2 {
        return;
    }
    if mark[node] == 1 {
        if let Some(at) = path.iter().position(|&n| n == node) {
            let cycle = path[at..].to_vec();
            let mut canonical = cycle.clone();
            canonical.sort_unstable();
            if !reported.iter().any(|c| {
                let mut sorted = c.clone();
                sorted.sort_unstable();
                sorted == canonical
            }) {
                reported.push(cycle);
            }
        }
        return;
    }
    mark[node] = 1;
    path.push(node);
    for &next in &edges[node] {
        visit(next, edges, mark, path, reported);
    }
    path.pop();
    mark[node] = 2;
}
