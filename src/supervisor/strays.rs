//! Strays: processes a service left behind outside its process group, such as a grandchild that
//! called `setsid()` or a daemon that double-forked into a session of its own. The group kill
//! after reaping cannot reach them, and once their parent is gone they are re-parented away
//! from the console, so nothing else would ever stop them.
//!
//! Every spawned process carries [`LINEAGE_ENV`]`=<console pid>.<supervisor>.<spawn>` in its
//! environment, and its descendants inherit it. Once an instance is reaped, its lineage goes to
//! the [`Sweeper`], which scans `/proc` for processes still carrying it and SIGKILLs them. Scans
//! are batched, at most one per [`SWEEP_EVERY`], so that a mass restart costs a few scans rather
//! than one per instance; each lineage is looked for in two scans, to catch a stray that forked
//! while the first was killing. At shutdown, when every instance is gone, one last sweep takes
//! everything of this supervisor's lineage.
//!
//! A process that scrubs its environment escapes this; only a cgroup per service would close
//! that, and it needs privileges the console does not assume.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The environment variable that marks a process, and its descendants, as spawned by us.
pub const LINEAGE_ENV: &str = "SWITCHBOARD_LINEAGE";
/// The least time between two scans of `/proc`.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Supervisors in this process (tests run several), so that lineages never collide.
static SUPERVISORS: AtomicU64 = AtomicU64::new(0);

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
    wake: Notify,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Sweeper {
    /// Starts the sweeping task; [`Sweeper::finish`] ends it.
    pub fn start() -> Sweeper {
        let supervisor = SUPERVISORS.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            prefix: format!("{}.{supervisor}.", std::process::id()),
            spawns: AtomicU64::new(0),
            dead: Mutex::new(Vec::new()),
            wake: Notify::new(),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(sweep_loop(inner.clone()));
        Sweeper { inner }
    }

    /// A fresh lineage for the next spawn.
    pub fn lineage(&self) -> String {
        let spawn = self.inner.spawns.fetch_add(1, Ordering::Relaxed);
        format!("{}{spawn}", self.inner.prefix)
    }

    /// The instance of `lineage` was reaped: whatever still carries it is a stray.
    pub fn reaped(&self, lineage: String) {
        if let Ok(mut dead) = self.inner.dead.lock() {
            dead.push(lineage);
        }
        self.inner.wake.notify_one();
    }

    /// Every instance is gone: stops the task, then kills anything of this supervisor's
    /// lineage, looking again until a scan finds nothing (a stray may fork while dying).
    /// Returns the pids killed.
    pub async fn finish(&self) -> Vec<u32> {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let prefix = self.inner.prefix.clone();
        let mut killed = Vec::new();
        for _ in 0..5 {
            let prefix = prefix.clone();
            let round = tokio::task::spawn_blocking(move || {
                kill_matching(|lineage| lineage.starts_with(&prefix))
            })
            .await
            .unwrap_or_default();
            if round.is_empty() {
                break;
            }
            killed.extend(round);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
        let killed = tokio::task::spawn_blocking(move || {
            let killed = kill_matching(|lineage| wanted.contains(lineage));
            (killed, wanted)
        })
        .await;
        let Ok((killed, _)) = killed else {
            continue;
        };
        if !killed.is_empty() {
            tracing::warn!(?killed, "killed processes left behind by exited services");
        }
        previous = fresh.into_iter().collect();
    }
}

/// SIGKILLs every process (but this one) whose lineage satisfies `wanted`; their pids.
fn kill_matching(wanted: impl Fn(&str) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Unreadable (another user's, or gone already): not ours to judge.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if lineage_of(&environ).is_some_and(&wanted) {
            // SAFETY: kill takes plain integers; at worst the pid is gone (ESRCH).
            if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                killed.push(pid);
            }
        }
    }
    killed
}

/// The value of [`LINEAGE_ENV`] in a `/proc/PID/environ` image (NUL-separated `KEY=VALUE`).
fn lineage_of(environ: &[u8]) -> Option<&str> {
    environ
        .split(|b| *b == 0)
        .find_map(|entry| {
            entry
                .strip_prefix(LINEAGE_ENV.as_bytes())?
                .strip_prefix(b"=")
        })
        .and_then(|value| std::str::from_utf8(value).ok())
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
        let sweeper = Sweeper::start();
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
        sweeper.reaped(stray_lineage);
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
