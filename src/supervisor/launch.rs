//! Turning a service's spec into a [`LaunchCommand`]: which program, which arguments, which
//! environment.

use std::{collections::BTreeMap, ffi::OsString, path::PathBuf};

use super::spawn::{LaunchCommand, SEGMENT_FD};
use crate::stack::{Program, ServiceSpec, Stack};

/// Where the console's own pieces are, for building launch commands.
#[derive(Debug, Clone)]
pub struct LaunchContext {
    /// The executable that runs builtins as `EXE service NAME` (normally the console itself).
    pub builtin_exe: PathBuf,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub stack_dir: PathBuf,
}

impl LaunchContext {
    pub fn for_stack(stack: &Stack, builtin_exe: PathBuf) -> Self {
        LaunchContext {
            builtin_exe,
            data_dir: stack.data_dir.clone(),
            run_dir: stack.run_dir.clone(),
            stack_dir: stack.base_dir.clone(),
        }
    }

    /// The command for `replica` of `spec`; `segment` is passed when the service speaks the
    /// protocol.
    pub fn command(
        &self,
        spec: &ServiceSpec,
        replica: u32,
        segment: Option<std::os::fd::OwnedFd>,
        lineage: &str,
    ) -> LaunchCommand {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        if matches!(spec.program, Program::Builtin(_)) {
            // mimalloc backs its first allocations with transparent huge pages where the
            // kernel allows them (`madvise` mode): every builtin then zeroed 2 MiB pages before
            // `main`, most of a service's start-up CPU at 500 services, and kept them resident
            // while idle. A stack can still turn them back on in the service's `env`.
            env.insert("MIMALLOC_ALLOW_THP".into(), "0".into());
        }
        for (key, value) in &spec.env {
            env.insert(key.clone(), value.clone());
        }
        // After the stack's own, so they always hold (the parser refuses them in `env`, see
        // `CONSOLE_ENV`): a service must not be misled about which it is, and a stack cannot
        // take a service out of the stray sweep, nor out of the next run's search for leftovers.
        env.insert("SWITCHBOARD_SERVICE".into(), spec.name.clone());
        env.insert("SWITCHBOARD_INSTANCE".into(), replica.to_string());
        env.insert("SWITCHBOARD_PROTOCOL".into(), "1".into());
        env.insert(
            "SWITCHBOARD_DATA_DIR".into(),
            self.data_dir.display().to_string(),
        );
        env.insert(
            "SWITCHBOARD_STACK_DIR".into(),
            self.stack_dir.display().to_string(),
        );
        if segment.is_some() {
            env.insert(
                switchboard_protocol::segment::SEGMENT_FD_ENV.into(),
                SEGMENT_FD.to_string(),
            );
        }
        env.insert(super::strays::LINEAGE_ENV.into(), lineage.into());
        env.insert(
            super::strays::RUN_DIR_ENV.into(),
            self.run_dir.display().to_string(),
        );
        let lookup = |name: &str| env.get(name).cloned().or_else(|| std::env::var(name).ok());
        let (program, args) = match &spec.program {
            Program::Builtin(name) => (
                self.builtin_exe.clone().into_os_string(),
                vec![OsString::from("service"), OsString::from(name)],
            ),
            Program::Command { command, args } => (
                OsString::from(expand(command, &lookup)),
                args.iter()
                    .map(|arg| OsString::from(expand(arg, &lookup)))
                    .collect(),
            ),
        };
        LaunchCommand {
            program,
            args,
            env: env.into_iter().collect(),
            cwd: spec.cwd.clone(),
            segment,
            limits: spec.limits,
        }
    }
}

/// Expands `${NAME}` from the child's environment; an unknown name expands to nothing, and
/// `$${` stays a literal `${`.
pub fn expand(text: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push_str(&lookup(&after[..end]).unwrap_or_default());
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables() {
        let lookup = |name: &str| (name == "DIR").then(|| "/run".to_string());
        assert_eq!(expand("${DIR}/x.py", &lookup), "/run/x.py");
        assert_eq!(expand("a${NOPE}b", &lookup), "ab");
        assert_eq!(expand("$${DIR}", &lookup), "${DIR}");
        assert_eq!(expand("${DIR", &lookup), "${DIR");
        assert_eq!(expand("plain", &lookup), "plain");
    }
}

#[cfg(test)]
mod huge_pages {
    use super::*;

    fn env_of(toml: &str, service: &str) -> Vec<(String, String)> {
        let stack = crate::stack::parse(toml, std::path::Path::new("/srv/stack.toml"))
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        let context = LaunchContext::for_stack(&stack, PathBuf::from("/bin/switchboard"));
        let spec = stack.service(service).expect("in the stack");
        context.command(spec, 0, None, "1.0.1").env
    }

    fn thp(env: &[(String, String)]) -> Option<&str> {
        env.iter()
            .find(|(k, _)| k == "MIMALLOC_ALLOW_THP")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn builtins_start_without_huge_pages_unless_their_env_says_otherwise() {
        let toml = r#"
            name = "t"
            [services.plain]
            builtin = "probe"
            [services.tuned]
            builtin = "probe"
            env = { MIMALLOC_ALLOW_THP = "1" }
            [services.other]
            command = "sleep"
            args = ["1"]
        "#;
        assert_eq!(thp(&env_of(toml, "plain")), Some("0"));
        assert_eq!(thp(&env_of(toml, "tuned")), Some("1"));
        assert_eq!(thp(&env_of(toml, "other")), None, "not ours to tune");
    }

    /// Every `SWITCHBOARD_` variable the console sets is in `CONSOLE_ENV` (which the parser
    /// refuses in a stack's `env`), and holds over the stack's own.
    #[test]
    fn the_console_s_variables_are_listed_and_win() {
        let toml = r#"
            name = "t"
            [services.plain]
            command = "sleep"
        "#;
        let stack = crate::stack::parse(toml, std::path::Path::new("/srv/stack.toml"))
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        let mut spec = stack.service("plain").expect("in the stack").clone();
        spec.env = crate::stack::spec::CONSOLE_ENV
            .iter()
            .map(|k| (k.to_string(), "from the stack".to_string()))
            .collect();
        let context = LaunchContext::for_stack(&stack, PathBuf::from("/bin/switchboard"));
        let (segment, _) = rustix::pipe::pipe().expect("a descriptor to pass");
        let env = context.command(&spec, 2, Some(segment), "1.0.1").env;
        for (key, value) in &env {
            if key.starts_with("SWITCHBOARD_") {
                assert!(
                    crate::stack::spec::CONSOLE_ENV.contains(&key.as_str()),
                    "{key} is not in CONSOLE_ENV"
                );
                assert_ne!(value, "from the stack", "{key} was taken from the stack");
            }
        }
        assert_eq!(
            env.iter()
                .filter(|(k, _)| k.starts_with("SWITCHBOARD_"))
                .count(),
            crate::stack::spec::CONSOLE_ENV.len()
        );
    }
}
