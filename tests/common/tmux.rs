//! A real terminal for the real binary: a tmux server of its own (its own socket, so tests
//! never touch an operator's tmux), one session named `main`, keys in and screens out.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (run by a shell in `dir`) in a `width`×`height` session.
    pub fn start(name: &str, dir: &Path, command: &str, (width, height): (u16, u16)) -> Tmux {
        let tmux = Tmux {
            socket: format!("switchboard-{name}-{}", std::process::id()),
        };
        let command = format!("cd {} && {command}", dir.display());
        let (width, height) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &width,
            "-y",
            &height,
            &command,
        ]);
        tmux
    }

    pub fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux must be installed (apt-get install tmux)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// Types `keys` (tmux key names: `Enter`, `q`, …).
    pub fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "main", keys]);
    }

    /// The pid of the session's first process (the shell running the command).
    pub fn pane_pid(&self) -> u32 {
        self.run(&["list-panes", "-t", "main", "-F", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("a pane pid")
    }

    /// Hangs the terminal up, as a dropped SSH session does.
    pub fn hang_up(&self) {
        self.run(&["kill-session", "-t", "main"]);
    }

    /// Waits until `check` holds for the screen, for at most `limit`; returns whether it did
    /// and the last screen.
    pub fn wait(&self, limit: Duration, check: impl Fn(&str) -> bool) -> (bool, String) {
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
