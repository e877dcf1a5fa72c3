//! One instance per stack: `RUN_DIR/instance.lock`, held with `flock` for as long as the
//! instance runs and holding its pid. The kernel drops the lock when the process dies however
//! it dies, so a stale file never blocks a new start, and a second `up` of a running stack
//! finds the first one's pid instead of starting twice or stealing its port.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    path::{Path, PathBuf},
};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name in the run directory.
pub const LOCK_FILE: &str = "instance.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("already running as pid {0}")]
    Held(u32),
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or dying) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock of `run_dir` for this process, or says who holds it.
    pub fn acquire(run_dir: &Path) -> Result<InstanceLock, LockError> {
        let path = run_dir.join(LOCK_FILE);
        let io = |source: std::io::Error| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(run_dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(LockError::Held(read_pid(&mut file).unwrap_or(0)));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(InstanceLock { _file: file })
    }
}

/// The pid of the instance running in `run_dir`, if one is.
pub fn holder(run_dir: &Path) -> Option<u32> {
    let mut file = File::open(run_dir.join(LOCK_FILE)).ok()?;
    // A shared lock is granted only when no instance holds the exclusive one.
    if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
        return None;
    }
    read_pid(&mut file)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_names_the_first_holder_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(holder(dir.path()), None);
        let lock = InstanceLock::acquire(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(holder(dir.path()), Some(std::process::id()));
        // flock locks belong to the open file, so a second open in the same process is
        // refused like another process would be.
        match InstanceLock::acquire(dir.path()) {
            Err(LockError::Held(pid)) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(lock);
        assert_eq!(holder(dir.path()), None);
        assert!(InstanceLock::acquire(dir.path()).is_ok());
    }
}
