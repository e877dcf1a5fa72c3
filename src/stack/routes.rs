//! Which `[gateway] routes` can be served together: none under the gateway's own paths, no
//! method and path declared twice, and no two paths that one request could match (axum
//! panics on those). One rule, used by the parser (so `switchboard check` and `up` refuse such a
//! stack at the route's line) and by the gateway before it builds its router.

use std::collections::HashSet;

/// Paths the gateway keeps for itself; a stack route may not start with one.
pub const RESERVED: &[&str] = &["/admin", "/call", "/stream", "/metrics", "/healthz"];

/// The gateway's own paths as axum registers them (a nest adds its prefix and a catch-all), so
/// that a stack route conflicting with one of them is refused too.
const OWN_PATHS: &[&str] = &[
    "/call/{service}/{method}",
    "/stream/{service}/{method}",
    "/metrics",
    "/healthz",
    "/admin",
    "/admin/{*rest}",
];

/// Routes checked one at a time, in declaration order, against the ones before them.
pub struct RouteSet {
    paths: matchit::Router<()>,
    seen_paths: HashSet<String>,
    seen: HashSet<(String, String)>,
}

impl Default for RouteSet {
    fn default() -> Self {
        let mut paths = matchit::Router::new();
        for own in OWN_PATHS {
            let _ = paths.insert(*own, ());
        }
        RouteSet {
            paths,
            seen_paths: HashSet::new(),
            seen: HashSet::new(),
        }
    }
}

impl RouteSet {
    /// Adds `METHOD path`; why it cannot be served beside the routes added before, if it
    /// cannot. A path may carry several methods (`GET` and `DELETE /users/{id}`).
    pub fn add(&mut self, method: &str, path: &str) -> Result<(), String> {
        if RESERVED
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{r}/")))
        {
            return Err(format!(
                "paths under {} belong to the gateway",
                RESERVED.join(", ")
            ));
        }
        if !self.seen.insert((method.to_string(), path.to_string())) {
            return Err(format!("`{method} {path}` is declared twice"));
        }
        if self.seen_paths.insert(path.to_string()) {
            self.paths
                .insert(path, ())
                .map_err(|err| format!("`{path}` overlaps an earlier route: {err}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::RouteSet;

    fn all(routes: &[(&str, &str)]) -> Result<(), String> {
        let mut set = RouteSet::default();
        routes.iter().try_for_each(|(m, p)| set.add(m, p))
    }

    #[test]
    fn overlapping_and_reserved_routes_are_refused() {
        assert!(all(&[("GET", "/users/{id}"), ("DELETE", "/users/{id}")]).is_ok());
        assert!(all(&[("GET", "/users/{id}"), ("GET", "/users/{id}")]).is_err());
        assert!(all(&[("GET", "/users/{id}"), ("POST", "/users/{uid}")]).is_err());
        assert!(all(&[("GET", "/admin/x")]).is_err());
        assert!(all(&[("GET", "/metrics")]).is_err());
        assert!(all(&[("GET", "/callers")]).is_ok());
        assert!(all(&[("GET", "/users/{id}"), ("GET", "/users/{*rest}")]).is_err());
    }
}
