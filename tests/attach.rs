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

use common::{SWITCHBOARD, alive};

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

/// A tmux server of its own, with one session running `command`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, dir: &Path, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("switchboard-attach-{name}-{}", std::process::id()),
        };
        let command = format!("cd {} && {command}", dir.display());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            "120",
            "-y",
            "30",
            &command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux must be installed (apt-get install tmux)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "main", keys]);
    }

    fn wait(&self, limit: Duration, check: impl Fn(&str) -> bool) -> (bool, String) {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                return (true, screen);
            }
            if start.elapsed() > limit {
                return (false, screen);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

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
    );
    let (ok, screen) = console.wait(Duration::from_secs(20), |s| {
        s.matches("● ready").count() >= 2
    });
    assert!(ok, "services never became ready:\n{screen}");
    let before = service_pids(dir.path());
    assert_eq!(before.len(), 2, "{before:?}");
    let instance = instance_pid(dir.path()).expect("instance pid");

    // A dropped SSH session: the terminal hangs up.
    console.run(&["kill-session", "-t", "main"]);
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
    );
    let watching = Tmux::start(
        "watch",
        dir.path(),
        &format!("{SWITCHBOARD} attach stack.toml --read-only"),
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
