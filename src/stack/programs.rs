//! Warnings, not errors, for `switchboard check`: a `command` that names a program not found
//! now. It may be built or installed before the stack runs, so the file is still valid; but a
//! typo otherwise shows only when the service fails to start.

use std::path::Path;

use super::spec::{Program, Stack};

/// A line per service whose program is not found: `service `x`: command `/x/y` not found`.
pub fn missing(stack: &Stack) -> Vec<String> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    stack
        .services
        .iter()
        .filter_map(|service| {
            let Program::Command { command, .. } = &service.program else {
                return None;
            };
            // `${VAR}` expands only at launch; what it becomes is not known here.
            if command.contains("${") {
                return None;
            }
            let cwd = service.cwd.as_deref().unwrap_or(&stack.base_dir);
            let path = service
                .env
                .iter()
                .find(|(key, _)| key == "PATH")
                .map(|(_, value)| std::ffi::OsString::from(value))
                .unwrap_or_else(|| path_var.clone());
            (!found(command, cwd, &path)).then(|| {
                format!(
                    "service `{}`: command `{command}` not found (it may be created before the stack runs)",
                    service.name
                )
            })
        })
        .collect()
}

/// Whether `command` names an executable file: a path (tried against the service's working
/// directory and the console's own) or a name on `path`.
fn found(command: &str, cwd: &Path, path: &std::ffi::OsStr) -> bool {
    if command.contains('/') {
        let given = Path::new(command);
        return executable(&cwd.join(given)) || executable(given);
    }
    std::env::split_paths(path).any(|dir| executable(&dir.join(command)))
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_and_names_on_path() {
        let path = std::ffi::OsString::from("/usr/bin:/bin");
        assert!(found("sh", Path::new("/"), &path));
        assert!(found("/bin/sh", Path::new("/"), &path));
        assert!(!found("/nonexistent/x/y", Path::new("/"), &path));
        assert!(!found("no-such-program-here", Path::new("/"), &path));
        assert!(!found(
            "sh",
            Path::new("/"),
            std::ffi::OsStr::new("/nonexistent")
        ));
    }
}
