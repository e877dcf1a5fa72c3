//! `switchboard check` on bad stack files: one test per kind of mistake, each asserting the
//! line and column it is reported at. Plus the demo stack. (That no input panics the parser is
//! `stack_props.rs`'s.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use switchboard::stack::{self, Condition, Diagnostic, ServiceKind};

fn errors(src: &str) -> Vec<Diagnostic> {
    stack::parse(src, Path::new("bad.toml")).expect_err("should be rejected")
}

/// Asserts that some error is at `line:col` and mentions every fragment.
fn has(errors: &[Diagnostic], line: usize, col: usize, fragments: &[&str]) {
    let found = errors
        .iter()
        .any(|d| d.line == line && d.col == col && fragments.iter().all(|f| d.message.contains(f)));
    assert!(
        found,
        "no error at {line}:{col} mentioning {fragments:?}; got:\n{}",
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_demo_stack_is_valid() {
    let demo = stack::demo().unwrap();
    let order = demo.start_order();
    let position = |n: &str| order.iter().position(|s| *s == n).unwrap();
    assert!(position("user") < position("order"));
    assert!(position("order") < position("notification"));
    assert!(position("notification") < position("storefront"));
    assert_eq!(demo.service("report").unwrap().kind, ServiceKind::Job);
    assert_eq!(
        demo.service("storefront").unwrap().depends_on[0].condition,
        Condition::Ready
    );
    assert_eq!(demo.gateway.routes.len(), 9);
    let streamed: Vec<&str> = demo
        .gateway
        .routes
        .iter()
        .filter(|r| r.stream)
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(streamed, ["/orders/export"]);
}

#[test]
fn unknown_keys_with_a_suggestion() {
    let e =
        errors("name = \"x\"\n[services.a]\ncommand = \"true\"\nrestrat = \"always\"\nbogus = 1\n");
    has(
        &e,
        4,
        1,
        &["unknown key `restrat`", "did you mean `restart`"],
    );
    has(&e, 5, 1, &["unknown key `bogus`"]);
    let e = errors("name = \"x\"\nservces = 1\n[services.a]\ncommand = \"true\"\n");
    has(&e, 2, 1, &["`servces`", "did you mean `services`"]);
}

#[test]
fn bad_durations() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nshutdown_grace = \"5 parsecs\"\nheartbeat_timeout = 5\n",
    );
    has(&e, 4, 18, &["parsecs"]);
    has(&e, 5, 21, &["durations need a unit"]);
}

#[test]
fn bad_types_and_values() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = 7\nreplicas = \"two\"\nrestart = \"sometimes\"\n[services.b]\ncommand = \"true\"\nreplicas = 0\n",
    );
    has(&e, 3, 11, &["expected a string, found an integer"]);
    has(&e, 4, 12, &["expected an integer, found a string"]);
    has(&e, 5, 11, &["`sometimes`", "\"on-failure\""]);
    has(&e, 8, 12, &["between 1 and 1000"]);
}

#[test]
fn dependency_cycles_are_reported_on_every_edge() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\ndepends_on = [\"b\"]\n[services.b]\ncommand = \"true\"\ndepends_on = { c = \"started\" }\n[services.c]\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
    );
    has(&e, 4, 15, &["dependency cycle", "a → b → c → a"]);
    has(&e, 7, 16, &["dependency cycle"]);
    has(&e, 10, 15, &["dependency cycle"]);
    let e = errors("name = \"x\"\n[services.a]\ncommand = \"true\"\ndepends_on = [\"a\"]\n");
    has(&e, 4, 15, &["depends on itself"]);
}

#[test]
fn unknown_names_in_depends_on_calls_and_routes() {
    let e = errors(
        "name = \"x\"\n[gateway]\nroutes = [{ route = \"GET /x\", call = \"ghost.get\" }]\n[services.a]\ncommand = \"true\"\ndepends_on = [\"nobody\"]\ncalls = [\"a\", \"phantom\"]\n",
    );
    has(&e, 3, 38, &["unknown service `ghost`"]);
    has(&e, 6, 15, &["unknown service `nobody`", "services: a"]);
    has(&e, 7, 15, &["unknown service `phantom`"]);
}

#[test]
fn duplicate_names() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\n[services.a]\ncommand = \"false\"\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("duplicate key `a`"), "{}", e[0]);
    assert_eq!((e[0].line, e[0].col), (4, 11), "{}", e[0]);
}

/// The example from the design notes: builtins are not checked by plain `parse`, so this is
/// about structure, defaults and the start order.
const EXAMPLE: &str = r#"name = "shop"

[gateway]
bind = "127.0.0.1:8787"
request_timeout = "10s"
body_limit = "1MiB"
routes = [
  { route = "POST /users", call = "user.create" },
  { route = "GET /orders/{id}/notifications", call = "notification.for_order" },
]

[services.storefront]
builtin = "storefront"
depends_on = { order = "ready", user = "ready" }
calls = ["user", "order"]
settings = { rate = "20" }

[services.user]
builtin = "user"

[services.order]
builtin = "order"
depends_on = { user = "ready" }
calls = ["user"]

[services.notification]
builtin = "notification"
depends_on = ["order"]
calls = ["order"]

[services.report]
kind = "job"
command = "python3"
args = ["${SWITCHBOARD_RUN_DIR}/python/report_job.py"]
protocol = true
calls = ["order"]
params = '{"pace_ms": 200}'
"#;

#[test]
fn the_example_stack_parses_with_defaults() {
    let dir = Path::new("/srv/shop");
    let s = stack::parse(EXAMPLE, &dir.join("stack.toml")).unwrap();
    let order = s.start_order();
    assert_eq!(
        order,
        ["user", "order", "storefront", "notification", "report"]
    );
    assert_eq!(s.base_dir, dir);
    assert_eq!(s.data_dir, dir.join(".switchboard/data"));
    assert_eq!(s.gateway.body_limit, 1 << 20);
    assert_eq!(s.gateway.routes[1].method, "GET");
    assert_eq!(s.gateway.routes[1].path, "/orders/{id}/notifications");
    assert_eq!(s.gateway.routes[1].service, "notification");
    assert_eq!(s.gateway.routes[1].call_method, "for_order");
    let user = s.service("user").unwrap();
    assert!(user.protocol, "builtins speak the protocol by default");
    assert_eq!(user.restart, stack::RestartPolicy::Always);
    assert_eq!(
        user.heartbeat_timeout,
        Some(std::time::Duration::from_secs(5))
    );
    let report = s.service("report").unwrap();
    assert_eq!(report.kind, ServiceKind::Job);
    assert_eq!(report.restart, stack::RestartPolicy::Never);
    assert!(!s.is_autostart("report"), "nothing depends on it");
    assert_eq!(
        s.service("storefront").unwrap().settings,
        [("rate".to_string(), "20".to_string())]
    );
}

#[test]
fn invalid_params_json() {
    let e = errors(
        "name = \"x\"\n[services.a]\nkind = \"job\"\ncommand = \"true\"\nparams = '{oops'\n",
    );
    has(&e, 5, 10, &["params must be JSON"]);
}

#[test]
fn bad_gateway_values() {
    let e = errors(
        "name = \"x\"\n[gateway]\nbind = \"localhost\"\nbody_limit = \"1 parsec\"\nroutes = [{ route = \"FETCH /x\", call = \"a.get\" }, { route = \"GET x\", call = \"a\" }]\n[services.a]\ncommand = \"true\"\n",
    );
    has(&e, 3, 8, &["`localhost` is not a socket address"]);
    has(&e, 4, 14, &["unknown size unit `parsec`"]);
    has(
        &e,
        5,
        21,
        &[
            "unknown HTTP method `FETCH`",
            "GET, POST, PUT, PATCH, DELETE",
        ],
    );
    has(&e, 5, 61, &["must start with `/`"]);
    has(&e, 5, 77, &["must be \"service.method\""]);
}

/// Routes one request could match, a route declared twice and one under the gateway's own
/// paths are refused by `check`, at the route's line, not only when the gateway starts.
#[test]
fn overlapping_and_reserved_routes_are_refused_where_written() {
    let e = errors(
        "name = \"x\"\n[gateway]\nroutes = [\n  { route = \"GET /users/{id}\", call = \"a.get\" },\n  { route = \"DELETE /users/{id}\", call = \"a.del\" },\n  { route = \"POST /users/{uid}\", call = \"a.put\" },\n  { route = \"GET /users/{id}\", call = \"a.get\" },\n  { route = \"GET /metrics\", call = \"a.get\" },\n]\n[services.a]\ncommand = \"true\"\n",
    );
    has(&e, 6, 3, &["`/users/{uid}` overlaps an earlier route"]);
    has(&e, 7, 3, &["`GET /users/{id}` is declared twice"]);
    has(&e, 8, 3, &["belong to the gateway"]);
    assert_eq!(e.len(), 3, "{e:?}");
}

/// `params` and `autostart` mean something only on a job: on a service they are refused where
/// written (they did nothing), whichever line `kind` is on.
#[test]
fn job_keys_on_a_service_are_refused() {
    let e = errors(
        "name = \"x\"\n[services.a]\nparams = '{}'\ncommand = \"true\"\nautostart = true\n[services.b]\nparams = '{}'\nkind = \"job\"\nautostart = true\ncommand = \"true\"\n",
    );
    has(&e, 3, 1, &["`params` is for jobs, and `a` is a service"]);
    has(&e, 5, 1, &["`autostart` is for jobs"]);
    assert_eq!(e.len(), 2, "{e:?}");
}

/// What the console tells a service about itself (`SWITCHBOARD_SERVICE`, `_INSTANCE`, its
/// directories, the segment's descriptor) cannot be set by the stack; other variables, the
/// console's tuning ones among them, can.
#[test]
fn the_console_s_own_variables_are_refused_in_env() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nenv = { SWITCHBOARD_SERVICE = \"b\", SWITCHBOARD_BUSY_POLL = \"0\" }\n",
    );
    has(
        &e,
        4,
        7,
        &["`env` sets SWITCHBOARD_SERVICE, which the console sets"],
    );
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn bad_backoff_and_restart_limit() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nbackoff = { initial = \"0s\", multiplier = 0.5, jitter = 2.0 }\nrestart_limit = { count = 0, window = 5 }\n[services.b]\ncommand = \"true\"\nbackoff = { initial = \"2s\", max = \"1s\" }\n",
    );
    has(&e, 4, 23, &["initial must be more than zero"]);
    has(&e, 4, 42, &["multiplier must be at least 1"]);
    has(&e, 4, 56, &["jitter must be between 0 and 1"]);
    has(&e, 5, 27, &["count must be a positive number"]);
    has(&e, 5, 39, &["durations need a unit"]);
    has(&e, 8, 35, &["backoff.max", "at least backoff.initial"]);
}

#[test]
fn program_choice_and_job_conditions() {
    let e = errors(
        "name = \"x\"\n[services.a]\nbuiltin = \"probe\"\ncommand = \"true\"\n[services.b]\nenv = {}\n[services.c]\ncommand = \"true\"\ndepends_on = { d = \"completed\", a = \"ready\" }\n[services.d]\ncommand = \"true\"\n",
    );
    has(&e, 2, 11, &["both `builtin` and `command`"]);
    has(&e, 5, 11, &["needs `builtin"]);
    has(&e, 9, 20, &["is a service, not a job"]);
    assert!(
        !e.iter().any(|d| d.message.contains("unknown service `a`")),
        "a service with errors is still a known name: {e:?}"
    );
}

#[test]
fn invalid_toml_and_missing_name() {
    let e = errors("name = \"x\"\n[services.a\ncommand = \"true\"\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 2, "{}", e[0]);
    assert!(e[0].message.contains("invalid TOML"));
    let e = errors("[services.a]\ncommand = \"true\"\n");
    has(&e, 1, 1, &["missing `name"]);
    let e = errors("name = \"\"\n[services.a]\ncommand = \"true\"\n");
    has(&e, 1, 8, &["must not be empty"]);
}

#[test]
fn every_error_is_reported_at_once() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nrestrat = 1\nreplicas = 0\ncalls = [\"zz\"]\nshutdown_grace = \"soon\"\n",
    );
    assert_eq!(e.len(), 4, "{e:?}");
    let lines: Vec<usize> = e.iter().map(|d| d.line).collect();
    assert_eq!(lines, [4, 5, 6, 7], "sorted by position");
}

#[test]
fn env_files_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.env"), "A=1\nexport B=\"two\"\n").unwrap();
    std::fs::write(dir.path().join("bad.env"), "A=1\nnot a line\n").unwrap();
    let file = dir.path().join("stack.toml");
    let ok = stack::parse(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nenv_file = \"good.env\"\nenv = { B = \"override\" }\n",
        &file,
    )
    .unwrap();
    let env = &ok.services[0].env;
    assert!(env.contains(&("A".into(), "1".into())));
    assert!(env.contains(&("B".into(), "override".into())));
    let e = stack::parse(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nenv_file = \"bad.env\"\n[services.b]\ncommand = \"true\"\nenv_file = \"missing.env\"\n",
        &file,
    )
    .unwrap_err();
    has(&e, 4, 12, &["bad.env:2", "KEY=VALUE"]);
    has(&e, 7, 12, &["cannot read env file"]);
}

#[test]
fn stop_signal_and_grace() {
    let e = errors(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nstop_signal = \"BOGUS\"\nstop_grace = \"1s\"\nshutdown_grace = \"2s\"\n",
    );
    has(
        &e,
        4,
        15,
        &[
            "unknown stop_signal `BOGUS`",
            "TERM, INT, QUIT, HUP, USR1, USR2",
        ],
    );
    has(
        &e,
        6,
        1,
        &["`shutdown_grace` and `stop_grace` are the same setting"],
    );
    let ok = stack::parse(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nstop_signal = \"sigusr1\"\nstop_grace = \"250ms\"\n[services.b]\ncommand = \"true\"\n",
        Path::new("ok.toml"),
    )
    .unwrap();
    let a = ok.service("a").unwrap();
    assert_eq!(a.stop_signal, stack::StopSignal::Usr1);
    assert_eq!(a.shutdown_grace, std::time::Duration::from_millis(250));
    let b = ok.service("b").unwrap();
    assert_eq!(b.stop_signal, stack::StopSignal::Term);
    assert_eq!(b.shutdown_grace, std::time::Duration::from_secs(5));
}

/// A command not found is a warning for `check`, not an error: the file is valid, and the
/// program may be built before the stack runs.
#[test]
fn a_command_not_found_is_a_warning() {
    let src = "name = \"x\"\n[services.ghost]\ncommand = \"/nonexistent/x/y\"\n[services.shell]\ncommand = \"sh\"\n[services.later]\ncommand = \"${HOME}/bin/x\"\n";
    let stack = stack::parse(src, Path::new("ok.toml")).expect("valid");
    assert_eq!(
        stack::programs::missing(&stack),
        [
            "service `ghost`: command `/nonexistent/x/y` not found (it may be created before the stack runs)"
        ]
    );
}

/// `[gateway] bind = "off"` means no gateway, as `--gateway off` does.
#[test]
fn gateway_bind_off_is_accepted() {
    let src = "name = \"x\"\n[gateway]\nbind = \"off\"\n[services.a]\ncommand = \"true\"\n";
    let stack = stack::parse(src, Path::new("ok.toml")).expect("bind = off is valid");
    assert_eq!(stack.gateway.bind, None);
}

/// `probe = { … }`: one check, a real URL or address, sane numbers; all said at once.
#[test]
fn probes_are_checked() {
    let e = errors(concat!(
        "name = \"x\"\n",
        "[services.a]\ncommand = \"true\"\nprobe = { http = \"https://h/x\" }\n",
        "[services.b]\ncommand = \"true\"\nprobe = { tcp = \"localhost\" }\n",
        "[services.c]\ncommand = \"true\"\nprobe = { tcp = \"h:1\", http = \"http://h/\" }\n",
        "[services.d]\ncommand = \"true\"\nprobe = { command = \" \", every = \"10ms\", failures = 0, nope = 1 }\n",
    ));
    has(&e, 4, 18, &["https probes are not supported"]);
    has(&e, 7, 17, &["`localhost` is not host:port"]);
    has(&e, 10, 9, &["exactly one of"]);
    has(&e, 13, 21, &["a command probe needs a program"]);
    has(&e, 13, 34, &["every must be at least 100ms"]);
    has(&e, 13, 53, &["failures must be between 1 and 1000"]);
    has(&e, 13, 56, &["unknown key `nope`"]);
    assert_eq!(e.len(), 7, "one error each: {e:?}");
    let ok = stack::parse(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\nprobe = { command = [\"pg_isready\", \"-q\"], every = \"1s\" }\n[services.b]\ncommand = \"true\"\nprobe = { http = \"http://127.0.0.1:${PORT}/health\" }\n",
        Path::new("ok.toml"),
    )
    .unwrap();
    let a = ok.service("a").unwrap().probe.clone().unwrap();
    assert_eq!(
        a.check,
        stack::ProbeCheck::Command {
            argv: vec!["pg_isready".into(), "-q".into()]
        }
    );
    assert_eq!(
        (a.every, a.timeout, a.failures),
        (
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(2),
            3
        )
    );
    assert!(ok.service("b").unwrap().probe.is_some());
}

/// The start order as it was first written (quadratic, plainly right): each step takes the
/// first-declared service whose dependencies are all placed.
fn start_order_reference(deps: &[Vec<usize>]) -> Vec<String> {
    let mut order: Vec<usize> = Vec::new();
    let mut placed = vec![false; deps.len()];
    while let Some(next) =
        (0..deps.len()).find(|&i| !placed[i] && deps[i].iter().all(|d| order.contains(d)))
    {
        placed[next] = true;
        order.push(next);
    }
    order.iter().map(|i| format!("s{i}")).collect()
}

#[test]
fn the_linear_start_order_is_the_first_declared_ready_one_each_step() {
    // Random acyclic stacks: service i may depend on services declared after it as well as
    // before (a random ranking decides which way edges go), so the order is not declaration.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..40 {
        let n = 2 + next(30) as usize;
        let rank: Vec<u64> = (0..n).map(|_| next(1000)).collect();
        let mut deps = vec![Vec::new(); n];
        let mut toml = String::from("name = \"order\"\n");
        for i in 0..n {
            for _ in 0..next(4) {
                let d = next(n as u64) as usize;
                if rank[d] < rank[i] && !deps[i].contains(&d) {
                    deps[i].push(d);
                }
            }
            let names: Vec<String> = deps[i].iter().map(|d| format!("\"s{d}\"")).collect();
            toml.push_str(&format!(
                "[services.s{i}]\ncommand = \"true\"\ndepends_on = [{}]\n",
                names.join(", ")
            ));
        }
        let s = stack::parse(&toml, Path::new("stack.toml")).unwrap();
        // The parser keeps declaration order (asserted above), so the reference's
        // indices are the stack's.
        let names: Vec<&str> = s.services.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>());
        assert_eq!(s.start_order(), start_order_reference(&deps), "{toml}");
    }
}

/// `host` and `[nats]`: a service on another host needs `[nats]`; host names are subject
/// tokens; `[nats]` needs a NATS URL, one way to authenticate, a password from the
/// environment, and a client certificate with its key.
#[test]
fn hosts_and_nats_are_checked() {
    let e = errors("name = \"x\"\n[services.a]\ncommand = \"true\"\nhost = \"gpu\"\n");
    has(&e, 4, 8, &["host `gpu`", "[nats]"]);
    let e = errors("name = \"x\"\n[services.a]\ncommand = \"true\"\nhost = \"gpu.1\"\n");
    has(&e, 4, 8, &["`gpu.1`", "letters, digits"]);
    let e = errors(
        "name = \"x\"\n[nats]\nurl = \"http://h:4222\"\nuser = \"u\"\ntoken_env = \"T\"\n[services.a]\ncommand = \"true\"\n",
    );
    has(&e, 3, 7, &["not a NATS URL"]);
    has(&e, 4, 1, &["`user` needs `password_env`"]);
    let e = errors(
        "name = \"x\"\n[nats]\nurl = \"nats://h\"\ntoken_env = \"T\"\nnkey_seed_file = \"k\"\ntls = { cert_file = \"c\" }\n[services.a]\ncommand = \"true\"\n",
    );
    has(&e, 5, 1, &["one way to authenticate"]);
    has(&e, 6, 9, &["`cert_file` and `key_file`"]);
    let e =
        errors("name = \"x\"\n[nats]\nconsole_host = \"main\"\n[services.a]\ncommand = \"true\"\n");
    has(&e, 2, 1, &["needs `url"]);
    // A durable topic is kept by the NATS server; a pattern must be one.
    let e = errors(
        "name = \"x\"\n[topics.\"order.*\"]\ndurable = true\n[topics.\"a..b\"]\ndurable = true\n[services.a]\ncommand = \"true\"\n",
    );
    has(&e, 2, 9, &["durable topic", "[nats]"]);
    has(&e, 4, 9, &["not a topic pattern"]);

    // The console's own host needs nothing; another host does, and gets an agent's stack.
    let ok = stack::parse(
        "name = \"x\"\n[nats]\nurl = \"nats://127.0.0.1:4222\"\nconsole_host = \"main\"\n\
         [services.a]\ncommand = \"true\"\nhost = \"main\"\n\
         [services.b]\ncommand = \"true\"\nhost = \"gpu\"\ndepends_on = [\"a\"]\n",
        Path::new("ok.toml"),
    )
    .unwrap();
    assert!(!ok.is_remote(ok.service("a").unwrap()));
    assert!(ok.is_remote(ok.service("b").unwrap()));
    assert_eq!(ok.remote_hosts(), ["gpu"]);
    let agent = ok.for_host("gpu");
    assert_eq!(agent.services.len(), 1);
    assert!(agent.services[0].depends_on.is_empty(), "a runs elsewhere");
    assert!(!agent.is_remote(&agent.services[0]));
    assert_eq!(agent.run_dir, ok.run_dir.join("hosts/gpu"));
    assert!(agent.gateway.bind.is_none());
}

/// The three-host shop of the README is the demo stack with two services moved to other hosts.
#[test]
fn the_three_host_example_is_the_demo_on_three_hosts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/three-hosts.toml");
    let example = stack::load(&path).unwrap_or_else(|errors| panic!("{errors:?}"));
    let demo = stack::demo().unwrap();
    let names = |s: &stack::Stack| {
        s.services
            .iter()
            .map(|x| x.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&example), names(&demo));
    assert_eq!(example.remote_hosts(), ["db", "mail"]);
    assert_eq!(example.host_of(example.service("user").unwrap()), "db");
    assert_eq!(example.host_of(example.service("order").unwrap()), "web");
}
