//! The stack outlives the screen, with the real binary in real terminals (tmux): a console
//! whose terminal hangs up goes on supervising and can be attached to; `up -d`, `attach`
//! (one acting, one `--read-only`) and `down`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, alive, tmux::Tmux};

const STACK: &str = r#"
name = "attach"
[services.alpha]
builtin = "probe"
shutdown_grace = "2s"
[services.beta]
command = "sh"
args = ["-c", "echo started; read x"]
shutdown_grace = "1s"
"#;

/// The pids of the instance's services, read from `switchboard ps` over its socket.
fn service_pids(dir: &Path) -> Vec<u32> {
    let output = Command::new(SWITCHBOARD)
        .args(["ps", "--file", "stack.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(3)?.parse().ok())
        .collect()
}

fn instance_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(".switchboard/run/instance.lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid| alive(pid))
}

fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// The audit log's lines that contain every one of `words`.
fn audited(dir: &Path, words: &[&str]) -> Vec<String> {
    std::fs::read_to_string(dir.join(".switchboard/run/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

fn down(dir: &Path) -> std::process::Output {
    Command::new(SWITCHBOARD)
        .args(["down", "stack.toml"])
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn a_hung_up_console_keeps_every_service_and_attach_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.toml"), STACK).unwrap();
    let console = Tmux::start(
        "hangup",
        dir.path(),
        &format!("{SWITCHBOARD} stack.toml --gateway off"),
        (120, 30),
    );
    let (ok, screen) = console.wait(Duration::from_secs(20), |s| {
        s.matches("● ready").count() >= 2
    });
    assert!(ok, "services never became ready:\n{screen}");
    let before = service_pids(dir.path());
    assert_eq!(before.len(), 2, "{before:?}");
    let instance = instance_pid(dir.path()).expect("instance pid");

    // A dropped SSH session: the terminal hangs up.
    console.hang_up();
    std::thread::sleep(Duration::from_secs(1));
    assert!(alive(instance), "the console died with its terminal");
    assert_eq!(service_pids(dir.path()), before, "services were replaced");
    assert!(before.iter().all(|&pid| alive(pid)));
    let log = std::fs::read_to_string(dir.path().join(".switchboard/run/console.log")).unwrap();
    assert!(log.contains("detached"), "{log}");

    // A new terminal attaches and sees them.
    let attached = Tmux::start(
        "hangup-attach",
        dir.path(),
        &format!("{SWITCHBOARD} attach stack.toml"),
        (120, 30),
    );
    let (ok, screen) = attached.wait(Duration::from_secs(15), |s| {
        s.contains("attached to") && s.matches("● ready").count() >= 2
    });
    assert!(ok, "attach did not show the stack:\n{screen}");
    assert!(screen.contains(&before[0].to_string()), "{screen}");

    // q, then s, stops the whole stack from the attached console.
    attached.keys("q");
    let (ok, screen) = attached.wait(Duration::from_secs(5), |s| s.contains("stop every service"));
    assert!(ok, "no quit dialog:\n{screen}");
    attached.keys("s");
    assert!(
        wait_until(Duration::from_secs(20), || !alive(instance)
            && before.iter().all(|&p| !alive(p))),
        "the stack did not stop"
    );
    assert_eq!(audited(dir.path(), &["\"down\"", "attach"]).len(), 1);
}

#[test]
fn up_detached_then_attach_act_read_only_and_down() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.toml"), STACK).unwrap();
    let up = Command::new(SWITCHBOARD)
        .args(["up", "-d", "stack.toml", "--gateway", "127.0.0.1:0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(said.contains("switchboard attach stack.toml"), "{said}");
    let instance = instance_pid(dir.path()).expect("instance pid");
    let pids = service_pids(dir.path());
    assert_eq!(
        pids.len(),
        2,
        "every service is ready when up -d returns: {pids:?}"
    );

    // A second up says who runs it instead of starting twice.
    let again = Command::new(SWITCHBOARD)
        .args(["up", "-d", "stack.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains(&format!("already running as pid {instance}")),
        "{err}"
    );

    let acting = Tmux::start(
        "act",
        dir.path(),
        &format!("{SWITCHBOARD} attach stack.toml"),
        (120, 30),
    );
    let watching = Tmux::start(
        "watch",
        dir.path(),
        &format!("{SWITCHBOARD} attach stack.toml --read-only"),
        (120, 30),
    );
    for console in [&acting, &watching] {
        let (ok, screen) = console.wait(Duration::from_secs(15), |s| {
            s.contains("attached to") && s.matches("● ready").count() >= 2
        });
        assert!(ok, "attach did not show the stack:\n{screen}");
    }

    // The read-only console refuses, and says so.
    watching.keys("r");
    let (ok, screen) = watching.wait(Duration::from_secs(5), |s| s.contains("read-only"));
    assert!(ok, "no refusal shown:\n{screen}");
    // The acting console restarts alpha; the audit log names it, and the other console sees
    // the new pid.
    acting.keys("r");
    assert!(
        wait_until(Duration::from_secs(15), || !audited(
            dir.path(),
            &["\"restart\"", "alpha", "attach", "\"ok\""]
        )
        .is_empty()),
        "no audited restart"
    );
    assert!(
        audited(dir.path(), &["read-only"]).is_empty(),
        "the read-only console acted"
    );
    let (ok, screen) = watching.wait(Duration::from_secs(15), |s| {
        s.matches("alpha#0│spawned pid").count() >= 2 && s.matches("● ready").count() >= 2
    });
    assert!(
        ok,
        "the restart was not seen by the other console:\n{screen}"
    );

    // d detaches: the attached console ends, the stack keeps running.
    acting.keys("q");
    acting.wait(Duration::from_secs(5), |s| s.contains("detach"));
    acting.keys("d");
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(instance));

    let down = down(dir.path());
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let mut every = pids.clone();
    every.push(instance);
    assert!(
        wait_until(Duration::from_secs(10), || every.iter().all(|&p| !alive(p))),
        "processes left behind"
    );
}

/// A loopback TCP proxy whose links can be cut and restored, to play a dropped network.
struct Proxy {
    address: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(upstream: std::net::SocketAddr) -> Proxy {
        use std::{
            net::{TcpListener, TcpStream},
            sync::{Arc, Mutex, atomic::AtomicBool},
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut_flag, live) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut_flag.load(std::sync::atomic::Ordering::SeqCst) {
                    // Refused while cut: closed at once.
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                live.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { address, cut, open }
    }

    /// Drops every open link and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

fn up_detached(dir: &Path, stack: &str) -> u32 {
    std::fs::write(dir.join("stack.toml"), stack).unwrap();
    let up = Command::new(SWITCHBOARD)
        .args(["up", "-d", "stack.toml", "--gateway", "127.0.0.1:0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    instance_pid(dir).expect("instance pid")
}

#[test]
fn a_cut_link_says_so_reconnects_by_itself_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let instance = up_detached(dir.path(), STACK);
    let run_dir = dir.path().join(".switchboard/run");
    let discovery: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("gateway.json")).unwrap())
            .unwrap();
    let gateway: std::net::SocketAddr = discovery["address"].as_str().unwrap().parse().unwrap();
    let token = std::fs::read_to_string(run_dir.join("token")).unwrap();
    let proxy = Proxy::start(gateway);
    // Remotely, as through `ssh -L`: the TCP gateway with the token.
    let console = Tmux::start(
        "cut",
        dir.path(),
        &format!(
            "{SWITCHBOARD} attach stack.toml --address {} --token {}",
            proxy.address,
            token.trim()
        ),
        (120, 30),
    );
    let (ok, screen) = console.wait(Duration::from_secs(15), |s| {
        s.contains(&format!("attached to {}", proxy.address)) && s.matches("● ready").count() >= 2
    });
    assert!(ok, "attach over TCP did not show the stack:\n{screen}");

    proxy.cut();
    let (ok, screen) = console.wait(Duration::from_secs(20), |s| s.contains("link down"));
    assert!(ok, "the cut link was not shown:\n{screen}");
    // Something changes while the link is down.
    let stop = Command::new(SWITCHBOARD)
        .args(["stop", "beta", "--file", "stack.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );

    proxy.restore();
    let (ok, screen) = console.wait(Duration::from_secs(20), |s| {
        !s.contains("link down") && s.contains("stopped") && s.matches("● ready").count() == 1
    });
    assert!(ok, "the console did not reconnect and catch up:\n{screen}");

    assert!(down(dir.path()).status.success());
    assert!(wait_until(Duration::from_secs(10), || !alive(instance)));
}

#[test]
fn an_attached_console_scales_and_runs_a_job_with_its_progress_bar() {
    let dir = tempfile::tempdir().unwrap();
    let stack = format!(
        "{STACK}\n[services.count]\nkind = \"job\"\nbuiltin = \"probe-job\"\nparams = '{{\"steps\": 40, \"pace_ms\": 150}}'\n"
    );
    let instance = up_detached(dir.path(), &stack);
    let console = Tmux::start(
        "job",
        dir.path(),
        &format!("{SWITCHBOARD} attach stack.toml"),
        (120, 30),
    );
    let (ok, screen) = console.wait(Duration::from_secs(15), |s| {
        s.contains("attached to") && s.matches("● ready").count() >= 2
    });
    assert!(ok, "attach did not show the stack:\n{screen}");

    // + on alpha (the first row) scales it to two replicas.
    console.keys("+");
    let ps = || {
        let out = Command::new(SWITCHBOARD)
            .args(["ps", "--file", "stack.toml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_until(Duration::from_secs(15), || ps()
            .lines()
            .any(|l| l.starts_with("alpha") && l.contains(" 2/2 "))),
        "alpha was not scaled: {}",
        ps()
    );

    // The job: select it, Enter asks for parameters, Enter runs it with the stack's.
    console.keys("j");
    console.keys("j");
    console.keys("Enter");
    let (ok, screen) = console.wait(Duration::from_secs(5), |s| s.contains("count"));
    assert!(ok, "{screen}");
    console.keys("Enter");
    let (ok, screen) = console.wait(Duration::from_secs(15), |s| {
        s.contains("probe steps") && s.contains("/40 running")
    });
    assert!(ok, "no progress bar for the run:\n{screen}");
    let progress = |s: &str| -> Option<u32> {
        let at = s.find("/40 running")?;
        s[..at].rsplit(' ').next()?.parse().ok()
    };
    let first = progress(&screen).unwrap_or(0);
    let (ok, screen) = console.wait(Duration::from_secs(15), |s| {
        progress(s).is_some_and(|n| n >= first + 3)
    });
    assert!(ok, "the progress bar did not move past {first}:\n{screen}");
    assert!(
        !audited(dir.path(), &["\"run\"", "count", "attach"]).is_empty(),
        "the run was not audited under the attached console"
    );

    assert!(down(dir.path()).status.success());
    assert!(wait_until(Duration::from_secs(10), || !alive(instance)));
}

#[test]
fn up_detached_says_why_a_stack_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let stack = format!(
        "{STACK}\n[services.broken]\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\nrestart = \"never\"\n"
    );
    std::fs::write(dir.path().join("stack.toml"), stack).unwrap();
    let up = Command::new(SWITCHBOARD)
        .args(["up", "-d", "stack.toml", "--gateway", "off"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success(), "{err}");
    assert!(
        err.contains("`broken`") && err.contains("exit 3"),
        "the reason is not given: {err}"
    );
    // What runs keeps running, to be looked at; down stops it.
    let instance = instance_pid(dir.path()).expect("instance pid");
    assert!(down(dir.path()).status.success());
    assert!(wait_until(Duration::from_secs(10), || !alive(instance)));
}

/// A console in tmux running `command` on [`STACK`] in `dir`, once both services are ready,
/// with the services' pids and the instance's.
fn ready_console(dir: &Path, name: &str, command: &str) -> (Tmux, Vec<u32>, u32) {
    std::fs::write(dir.join("stack.toml"), STACK).unwrap();
    let console = Tmux::start(name, dir, command, (120, 30));
    let (ok, screen) = console.wait(Duration::from_secs(20), |s| {
        s.matches("● ready").count() >= 2
    });
    assert!(ok, "services never became ready:\n{screen}");
    let pids = service_pids(dir);
    let instance = instance_pid(dir).expect("instance pid");
    (console, pids, instance)
}

/// The shell has its prompt back (`shell-back-0`), the UI is gone from the screen, and the
/// stack runs on with the same pids until `down` stops all of it. The screen at the prompt.
fn shell_back_with_the_stack_running(
    console: &Tmux,
    dir: &Path,
    pids: &[u32],
    instance: u32,
) -> String {
    let (ok, screen) = console.wait(Duration::from_secs(10), |s| s.contains("shell-back-0"));
    assert!(ok, "the shell did not get its prompt back:\n{screen}");
    assert!(
        screen.contains(&format!("keeps running as pid {instance}"))
            && screen.contains("switchboard attach"),
        "{screen}"
    );
    assert!(
        !screen.contains("● ready"),
        "the UI is still on screen:\n{screen}"
    );
    assert!(alive(instance));
    assert_eq!(service_pids(dir), pids, "services were replaced");
    assert!(down(dir).status.success());
    assert!(wait_until(Duration::from_secs(10), || !alive(instance)
        && pids.iter().all(|&p| !alive(p))));
    screen
}

#[test]
fn q_then_d_gives_the_shell_back_and_the_stack_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let (console, pids, instance) = ready_console(
        dir.path(),
        "detach",
        &format!("{SWITCHBOARD} stack.toml --gateway off; echo shell-back-$?; sleep 30"),
    );
    console.keys("q");
    let (ok, screen) = console.wait(Duration::from_secs(5), |s| s.contains("detach"));
    assert!(ok, "no quit dialog:\n{screen}");
    console.keys("d");
    shell_back_with_the_stack_running(&console, dir.path(), &pids, instance);
}

/// A bug in the console UI (a panic, injected with F12 in debug builds under
/// `SWITCHBOARD_TEST_UI_PANIC`) gives the terminal back as it was found (the same `stty`
/// settings, the main screen, the cursor shown, the mouse released) and costs the stack
/// nothing: it runs on, detached, with the same pids, for `attach` or `down`.
#[test]
fn a_panic_in_the_console_ui_restores_the_terminal_and_the_stack_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let (console, pids, instance) = ready_console(
        dir.path(),
        "uipanic",
        &format!(
            "stty -g > before.stty; RUST_BACKTRACE=0 SWITCHBOARD_TEST_UI_PANIC=1 {SWITCHBOARD} stack.toml --gateway off; \
             stty -g > after.stty; echo shell-back-$?; sleep 30"
        ),
    );
    console.keys("F12");
    let screen = shell_back_with_the_stack_running(&console, dir.path(), &pids, instance);
    assert!(
        screen.contains("fault injected"),
        "no panic message:\n{screen}"
    );
    assert!(screen.contains("the console UI failed"), "{screen}");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(
        read("before.stty"),
        read("after.stty"),
        "stty settings changed"
    );
    let flag = |name: &str| {
        console
            .run(&["display", "-p", "-t", "main", &format!("#{{{name}}}")])
            .trim()
            .to_string()
    };
    assert_eq!(flag("alternate_on"), "0", "still on the alternate screen");
    assert_eq!(flag("cursor_flag"), "1", "the cursor is hidden");
    assert_eq!(flag("mouse_any_flag"), "0", "mouse capture is still on");
}
