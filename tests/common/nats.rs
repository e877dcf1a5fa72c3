//! A real `nats-server` on loopback for the tests of several hosts, started and stopped by the
//! test (`.ci/run` installs the Debian package when it is missing).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `nats-server` child, killed when dropped.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    /// The arguments it was started with, to start it again on the same port.
    args: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free loopback port, with `config` (a nats-server configuration
    /// file's text) when given, and waits until it takes connections.
    pub fn start(dir: &Path, config: Option<&str>) -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut args = vec![
            "-a".to_string(),
            "127.0.0.1".to_string(),
            "-p".to_string(),
            port.to_string(),
        ];
        if let Some(config) = config {
            let path = dir.join("nats.conf");
            std::fs::write(&path, config).expect("nats.conf written");
            args.push("-c".into());
            args.push(path.display().to_string());
        }
        let child = spawn(&args);
        let server = NatsServer { child, port, args };
        server.wait_listening();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, with the same settings.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.args);
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(args: &[String]) -> Child {
    Command::new("nats-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is on PATH (Debian package nats-server; .ci/run installs it)")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
