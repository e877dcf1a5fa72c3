//! The admin API on the run directory's Unix socket, `RUN_DIR/admin.sock`, mode 0600.
//!
//! A local `attach`, `down` and the CLI verbs connect here first: only the user the stack runs
//! as can open the socket, so they need no port and no token, and it works with the TCP
//! gateway off or its port taken. TCP with the bearer token stays for remote use (`ssh -L`).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Access, AppState, GatewayError, GatewayState, app, auth};
use crate::supervisor::Supervisor;

/// The socket's file name in the run directory.
pub const SOCKET_FILE: &str = "admin.sock";
/// The longest path a Unix socket can have (`sun_path`, less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long `stop` waits for in-flight requests.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running admin socket.
pub struct AdminSocket {
    path: PathBuf,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl AdminSocket {
    /// Serves the admin API on `RUN_DIR/admin.sock`. The caller holds the run directory's
    /// instance lock, so a socket file already there is a dead instance's and is replaced.
    /// `Ok(None)` when the path is too long for a socket (the TCP gateway still serves).
    /// `gateway` is the TCP gateway's address, for the view, or the stack file's address
    /// when it was taken (`Err`: the view says the stack runs without a gateway).
    pub async fn start(
        supervisor: &Supervisor,
        gateway: Result<Option<std::net::SocketAddr>, std::net::SocketAddr>,
    ) -> Result<Option<AdminSocket>, GatewayError> {
        let path = socket_path(&supervisor.stack().run_dir);
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            tracing::warn!(path = %path.display(), "run directory too deep for the admin socket; attach over TCP");
            return Ok(None);
        }
        let socket_error = |source: std::io::Error| GatewayError::Socket {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(socket_error)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(socket_error(err)),
        }
        // The socket is created with the umask's mode; a umask that leaves only the owner
        // closes the moment between bind and chmod when another user could connect.
        let previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = tokio::net::UnixListener::bind(&path);
        rustix::process::umask(previous);
        let listener = bound.map_err(socket_error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(socket_error)?;
        let shutdown = CancellationToken::new();
        let state = AppState::new(GatewayState {
            supervisor: supervisor.clone(),
            config: Arc::new(supervisor.stack().gateway.clone()),
            token: auth::Token::unknown()?,
            address: gateway.ok().flatten().map(|a| a.to_string().into()),
            taken: gateway.err().map(|a| a.to_string().into()),
            loopback: true,
            started: Instant::now(),
            shutdown: shutdown.clone(),
        });
        let app = app(state, Access::Socket)?;
        let tracker = TaskTracker::new();
        let stopping = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopping.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(cause = %err, "the admin socket stopped serving");
            }
        });
        tracker.close();
        tracing::info!(path = %path.display(), "admin socket listening");
        Ok(Some(AdminSocket {
            path,
            shutdown,
            tracker,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets in-flight requests finish (at most a few seconds), and removes
    /// the socket file.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if tokio::time::timeout(STOP_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("admin socket requests still in flight at shutdown were abandoned");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where a stack's admin socket is.
pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET_FILE)
}
