//! Strays: processes a service left behind outside its process group, such as a grandchild that
//! called `setsid()` or a daemon that double-forked into a session of its own. The group kill
//! after reaping cannot reach them, and once their parent is gone they are re-parented away
//! from their service, so nothing else would ever stop them. Three nets catch them:
//!
//! - **Lineage.** Every spawned process carries [`LINEAGE_ENV`]`=<console pid>.<supervisor>.<spawn>`
//!   in its environment, and its descendants inherit it. Once an instance is reaped, its
//!   lineage goes to the [`Sweeper`], which scans `/proc` for processes still carrying it and
//!   SIGKILLs them. Scans are batched, at most one per [`SWEEP_EVERY`], so that a mass restart
//!   costs a few scans rather than one per instance; each lineage is looked for in two scans,
//!   to catch a stray that forked while the first was killing. At shutdown, when every instance
//!   is gone, one last sweep takes everything of this supervisor's lineage.
//! - **Adoption.** A console that is a child subreaper (the `switchboard` binary makes itself
//!   one: `app::keeper`) adopts every orphan of its services, whatever its environment. The
//!   sweeper reaps adopted processes that exit (on SIGCHLD; never a pid the runtime spawned,
//!   see [`OwnChildren`]), and after each reap it stops the adopted processes that no running
//!   instance claims (by lineage, session or process group): one that scrubbed its environment
//!   and left its session (`setsid env -i ...`) is stopped with the service it came from.
//! - **Leftovers.** A new run of a stack finds processes of an earlier run that nobody stopped
//!   (both the console and its keeper were SIGKILLed) by their `SWITCHBOARD_RUN_DIR` and
//!   lineage, reports them and stops them ([`stop_leftovers`]).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rustix::process::{Pid, Signal, WaitOptions};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::procs::{self, ProcStat};

/// The environment variable that marks a process, and its descendants, as spawned by us.
pub const LINEAGE_ENV: &str = "SWITCHBOARD_LINEAGE";
/// The environment variable that names the run directory of the stack a process belongs to.
pub const RUN_DIR_ENV: &str = "SWITCHBOARD_RUN_DIR";
/// The least time between two scans of `/proc`.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How long a leftover of an earlier run has, after SIGTERM, before SIGKILL.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// Supervisors in this process (tests run several), so that lineages never collide.
static SUPERVISORS: AtomicU64 = AtomicU64::new(0);

/// The children this process spawned, by pid, with their lineage: the runtime reaps these, so
/// an adoption scan must never wait for one. The spawner holds the lock from before `fork` until
/// the pid is in, so a scan never sees a child of ours that is not listed yet.
#[derive(Clone, Default)]
pub struct OwnChildren(Arc<Mutex<HashMap<u32, String>>>);

impl OwnChildren {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<u32, String>> {
        // A panic while the map was held leaves it whole (inserts and removes only).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Collects the lineages of reaped instances and kills what still carries them.
#[derive(Clone)]
pub struct Sweeper {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<console pid>.<supervisor>.`: what every lineage of this supervisor starts with.
    prefix: String,
    spawns: AtomicU64,
    /// Lineages of instances reaped since the last scan. Bounded by the exits in one
    /// [`SWEEP_EVERY`], since each scan drains it.
    dead: Mutex<Vec<String>>,
    children: OwnChildren,
    /// This process is a child subreaper: orphans of services become its children.
    adopting: bool,
    wake: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Sweeper {
    /// Starts the sweeping task (and, in a subreaper, the reaping of adopted processes);
    /// [`Sweeper::finish`] ends them. `children` is the spawner's list.
    pub fn start(children: OwnChildren) -> Sweeper {
        let supervisor = SUPERVISORS.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            prefix: format!("{}.{supervisor}.", std::process::id()),
            spawns: AtomicU64::new(0),
            dead: Mutex::new(Vec::new()),
            children,
            adopting: procs::is_subreaper(),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(sweep_loop(inner.clone()));
        if inner.adopting {
            inner.tasks.spawn(reap_loop(inner.clone()));
        }
        Sweeper { inner }
    }

    /// A fresh lineage for the next spawn.
    pub fn lineage(&self) -> String {
        let spawn = self.inner.spawns.fetch_add(1, Ordering::Relaxed);
        format!("{}{spawn}", self.inner.prefix)
    }

    /// The instance `pid` of `lineage` was reaped: whatever still carries its lineage is a
    /// stray, and so is an adopted process no running instance claims.
    pub fn reaped(&self, pid: u32, lineage: String) {
        self.inner.children.lock().remove(&pid);
        if let Ok(mut dead) = self.inner.dead.lock() {
            dead.push(lineage);
        }
        self.inner.wake.notify_one();
    }

    /// A helper process spawned for an instance (a command probe) was reaped by its owner:
    /// its pid may be anyone's next.
    pub fn forget(&self, pid: u32) {
        self.inner.children.lock().remove(&pid);
    }

    /// Every instance is gone: stops the tasks, then kills anything of this supervisor's
    /// lineage, and every adopted process, looking again until a scan finds nothing (a stray
    /// may fork while dying). Returns the pids killed.
    pub async fn finish(&self) -> Vec<u32> {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let prefix = self.inner.prefix.clone();
        let inner = self.inner.clone();
        let mut killed = Vec::new();
        for _ in 0..50 {
            let prefix = prefix.clone();
            let inner = inner.clone();
            let round = tokio::task::spawn_blocking(move || {
                let mut round = kill_matching(|lineage| lineage.starts_with(&prefix));
                if inner.adopting {
                    round.extend(
                        adopted(&inner.children)
                            .iter()
                            .filter(|p| procs::kill_hard(p))
                            .map(|p| p.pid),
                    );
                    reap_adopted(&inner.children);
                }
                round
            })
            .await
            .unwrap_or_default();
            if round.is_empty() {
                break;
            }
            killed.extend(round);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.inner.adopting {
            // The last ones killed are zombies by now, or about to be.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let inner = self.inner.clone();
            let _ = tokio::task::spawn_blocking(move || reap_adopted(&inner.children)).await;
        }
        killed.sort_unstable();
        killed.dedup();
        killed
    }
}

async fn sweep_loop(inner: Arc<Inner>) {
    // Lineages looked for in the previous scan get one more.
    let mut previous: HashSet<String> = HashSet::new();
    loop {
        if previous.is_empty() {
            tokio::select! {
                () = inner.wake.notified() => {}
                () = inner.stop.cancelled() => return,
            }
        }
        // Let more exits gather: one scan for a burst of them.
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = inner.stop.cancelled() => return,
        }
        let fresh: Vec<String> = inner
            .dead
            .lock()
            .map(|mut dead| std::mem::take(&mut *dead))
            .unwrap_or_default();
        let mut wanted: HashSet<String> = fresh.iter().cloned().collect();
        wanted.extend(previous.drain());
        let scan = inner.clone();
        let killed = tokio::task::spawn_blocking(move || {
            let strays = kill_matching(|lineage| wanted.contains(lineage));
            let unclaimed = if scan.adopting {
                kill_unclaimed(&scan.children)
            } else {
                Vec::new()
            };
            (strays, unclaimed)
        })
        .await;
        let Ok((strays, unclaimed)) = killed else {
            continue;
        };
        if !strays.is_empty() {
            tracing::warn!(killed = ?strays, "killed processes left behind by exited services");
        }
        if !unclaimed.is_empty() {
            tracing::warn!(
                killed = ?unclaimed,
                "killed adopted processes that no running service claims"
            );
        }
        previous = fresh.into_iter().collect();
    }
}

/// Reaps adopted processes as they exit: each exit of a child raises SIGCHLD. Also on a slow
/// tick, since signals coalesce and a SIGCHLD may come before the scan that would see it.
async fn reap_loop(inner: Arc<Inner>) {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::warn!(cause = %err, "cannot watch SIGCHLD; adopted processes are reaped at shutdown only");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = sigchld.recv() => {}
            () = inner.stop.cancelled() => return,
        }
        let scan = inner.clone();
        let _ = tokio::task::spawn_blocking(move || reap_adopted(&scan.children)).await;
    }
}

/// Children of this process that it did not spawn: adopted orphans (zombies included).
fn adopted(children: &OwnChildren) -> Vec<ProcStat> {
    let own = children.lock();
    procs::children_of(std::process::id())
        .into_iter()
        .filter(|child| !own.contains_key(&child.pid))
        .collect()
}

/// Waits for every adopted process that has exited. Holds the own-children lock throughout, so
/// no child of ours can appear unlisted and have its exit status taken from the runtime.
fn reap_adopted(children: &OwnChildren) -> Vec<u32> {
    let own = children.lock();
    let mut reaped = Vec::new();
    for child in procs::children_of(std::process::id()) {
        if own.contains_key(&child.pid) || !child.is_zombie() {
            continue;
        }
        if let Some(pid) = i32::try_from(child.pid).ok().and_then(Pid::from_raw)
            && let Ok(Some(_)) = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)
        {
            reaped.push(child.pid);
        }
    }
    if !reaped.is_empty() {
        tracing::debug!(?reaped, "reaped adopted processes");
    }
    reaped
}

/// Kills the adopted processes that no running instance claims: none carries the lineage of
/// one, or is in its session or process group (every instance leads its own).
fn kill_unclaimed(children: &OwnChildren) -> Vec<u32> {
    let (pids, lineages): (HashSet<u32>, HashSet<String>) = {
        let own = children.lock();
        (
            own.keys().copied().collect(),
            own.values().cloned().collect(),
        )
    };
    adopted(children)
        .into_iter()
        .filter(|p| !p.is_zombie())
        .filter(|p| {
            let claimed = pids.contains(&p.session)
                || pids.contains(&p.pgrp)
                || procs::environ(p.pid)
                    .as_deref()
                    .and_then(|env| procs::env_value(env, LINEAGE_ENV))
                    .is_some_and(|lineage| lineages.contains(lineage));
            !claimed
        })
        .filter(procs::kill_hard)
        .map(|p| p.pid)
        .collect()
}

/// SIGKILLs every process (but this one) whose lineage satisfies `wanted`; their pids.
fn kill_matching(wanted: impl Fn(&str) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let mut killed = Vec::new();
    for pid in procs::pids() {
        if pid == me {
            continue;
        }
        // Unreadable (another user's, or gone already): not ours to judge.
        let Some(environ) = procs::environ(pid) else {
            continue;
        };
        if lineage_of(&environ).is_some_and(&wanted) && procs::signal(pid, Signal::KILL) {
            killed.push(pid);
        }
    }
    killed
}

/// The value of [`LINEAGE_ENV`] in a `/proc/PID/environ` image (NUL-separated `KEY=VALUE`).
fn lineage_of(environ: &[u8]) -> Option<&str> {
    procs::env_value(environ, LINEAGE_ENV)
}

/// A process of an earlier run of this stack that is still alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub pid: u32,
    /// Its command name.
    pub name: String,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid)
    }
}

/// Finds the processes of earlier runs of the stack whose run directory is `run_dir`: they
/// carry it in [`RUN_DIR_ENV`] and a lineage that is not this process's. Call it holding the
/// stack's instance lock, so no other console of the stack is running.
pub fn leftovers(run_dir: &Path) -> Vec<Leftover> {
    let me = std::process::id();
    let mine = format!("{me}.");
    let wanted = run_dir.display().to_string();
    procs::pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            procs::environ(pid).is_some_and(|env| {
                procs::env_value(&env, RUN_DIR_ENV) == Some(wanted.as_str())
                    && lineage_of(&env).is_some_and(|lineage| !lineage.starts_with(&mine))
            })
        })
        .filter(|&pid| procs::stat(pid).is_some_and(|s| !s.is_zombie()))
        .map(|pid| Leftover {
            pid,
            name: procs::name(pid),
        })
        .collect()
}

/// Stops the leftovers of earlier runs (see [`leftovers`]): SIGTERM, then SIGKILL for those
/// still there after [`LEFTOVER_GRACE`]. Returns what it found. Blocks.
pub fn stop_leftovers(run_dir: &Path) -> Vec<Leftover> {
    let found = leftovers(run_dir);
    if found.is_empty() {
        return found;
    }
    for leftover in &found {
        procs::signal(leftover.pid, Signal::TERM);
    }
    let deadline = std::time::Instant::now() + LEFTOVER_GRACE;
    let alive = |l: &&Leftover| procs::stat(l.pid).is_some_and(|s| !s.is_zombie());
    while found.iter().any(|l| alive(&l)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for leftover in found.iter().filter(alive) {
        procs::signal(leftover.pid, Signal::KILL);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lineage_is_read_from_an_environ_image() {
        let image = b"PATH=/bin\0SWITCHBOARD_LINEAGE=12.0.7\0HOME=/root\0";
        assert_eq!(lineage_of(image), Some("12.0.7"));
        assert_eq!(lineage_of(b"SWITCHBOARD_LINEAGE_X=1\0"), None);
        assert_eq!(lineage_of(b""), None);
    }

    #[tokio::test]
    async fn a_stray_of_a_reaped_lineage_is_killed_and_others_are_not() {
        let sweeper = Sweeper::start(OwnChildren::default());
        let stray_lineage = sweeper.lineage();
        let live_lineage = sweeper.lineage();
        let spawn = |lineage: &str| {
            std::process::Command::new("sleep")
                .arg("30")
                .env(LINEAGE_ENV, lineage)
                .spawn()
                .unwrap()
        };
        let mut stray = spawn(&stray_lineage);
        let mut live = spawn(&live_lineage);
        sweeper.reaped(stray.id(), stray_lineage);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = stray.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "the stray lives on");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(
            live.try_wait().unwrap().is_none(),
            "a live lineage was killed"
        );
        // At the end everything of this supervisor's lineage goes.
        let killed = sweeper.finish().await;
        assert_eq!(killed, [live.id()]);
        live.wait().unwrap();
    }
}
