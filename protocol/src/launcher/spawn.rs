//! The child process: its pipes, its environment (`SPEC.md` §1) and the segment as fd 3.

use std::{
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command, Stdio},
};

use super::{LaunchError, Launcher};
use crate::segment::{SEGMENT_FD_ENV, SegmentReader, create_segment};

/// The fd the segment has in the child, as under the console.
const SEGMENT_FD: i32 = 3;

/// Starts the child with a fresh sealed segment; returns it and a reader over the segment.
pub(super) fn spawn(launcher: &mut Launcher) -> Result<(Child, SegmentReader), LaunchError> {
    let (segment, reader) = create_segment(&launcher.name)?;
    let mut command = Command::new(&launcher.program);
    command
        .args(&launcher.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(launcher.stderr.take().unwrap_or_else(Stdio::inherit));
    let dir = match &launcher.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|source| spawn_error(launcher, source))?,
    };
    command
        .current_dir(&dir)
        .env("SWITCHBOARD_SERVICE", &launcher.name)
        .env("SWITCHBOARD_INSTANCE", "0")
        .env("SWITCHBOARD_PROTOCOL", "1")
        .env(SEGMENT_FD_ENV, SEGMENT_FD.to_string())
        .env("SWITCHBOARD_DATA_DIR", &dir)
        .env("SWITCHBOARD_RUN_DIR", &dir)
        .env("SWITCHBOARD_STACK_DIR", &dir)
        .env(
            "SWITCHBOARD_LINEAGE",
            format!("launcher-{}-{}", std::process::id(), launcher.name),
        );
    for (key, value) in &launcher.env {
        command.env(key, value);
    }
    let fd = segment.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl and dup2,
    // which are async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(move || {
            let moved = if fd == SEGMENT_FD {
                // dup2 onto itself would keep FD_CLOEXEC set: clear it instead.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, SEGMENT_FD)
            };
            if moved == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|source| spawn_error(launcher, source))?;
    // The parent's fd is no longer needed: the reader has its own mapping.
    drop(segment);
    Ok((child, reader))
}

fn spawn_error(launcher: &Launcher, source: std::io::Error) -> LaunchError {
    LaunchError::Spawn {
        program: launcher.program.to_string_lossy().into_owned(),
        source,
    }
}
