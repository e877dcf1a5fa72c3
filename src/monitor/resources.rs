//! Per-process CPU% and RSS, sampled about once a second on a dedicated thread, for the pids in
//! the registry only (`ProcessesToUpdate::Some`): sysinfo makes blocking syscalls, and a full
//! process scan would cost far more than reading a few `/proc/<pid>` files.
//!
//! Only while someone looks: the figures are read through [`Usage::own`] (the console's view,
//! an attached console's stream, a `/metrics` scrape), and [`LOOKED_AT_FOR`] after the last
//! look the sampler sleeps until the next. A headless or detached stack that nobody watches
//! then does no periodic work per process at all; sampling was most of its idle CPU (100
//! plain programs: 0.33 % of a core, against supervisord's 0.07 %).

use std::{
    sync::{Arc, Condvar, Mutex, Weak},
    time::{Duration, Instant},
};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::registry::{self, Registry};

/// How often the sampler runs, with up to [`PIDS_PER_SECOND`] processes.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Past this many processes the sampler spaces its rounds out (500 processes: every 2.5 s), so
/// that its cost stays near this many processes a second: sysinfo reads several `/proc` files
/// per process, and at 500 services sampling every second was most of the console's idle CPU.
pub const PIDS_PER_SECOND: usize = 200;

/// The pause before the next round, for `pids` processes.
pub fn pause_for(pids: usize) -> Duration {
    SAMPLE_EVERY.max(Duration::from_secs_f64(
        pids as f64 / PIDS_PER_SECOND as f64,
    ))
}

/// The console's own usage, for the header and `switchboard bench`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OwnUsage {
    /// Percent of one core.
    pub cpu_percent: f32,
    pub rss_bytes: u64,
}

/// How long sampling goes on after the figures were last read.
pub const LOOKED_AT_FOR: Duration = Duration::from_secs(10);

/// The figures, and whether anyone reads them. Cheap to clone.
#[derive(Clone)]
pub struct Usage {
    own: Arc<Mutex<OwnUsage>>,
    demand: Arc<Demand>,
}

struct Demand {
    /// When the figures were last read (`None`: never yet).
    asked: Mutex<Option<Instant>>,
    wake: Condvar,
}

impl Usage {
    /// The console's own usage. Reading it (or, through the same view, the services' CPU and
    /// RSS in the registry) keeps the sampler going for [`LOOKED_AT_FOR`].
    pub fn own(&self) -> OwnUsage {
        self.looked_at();
        self.own.lock().map(|u| *u).unwrap_or_default()
    }

    /// Someone reads the figures: sample (again, if the sampler slept).
    pub fn looked_at(&self) {
        if let Ok(mut asked) = self.demand.asked.lock() {
            *asked = Some(Instant::now());
        }
        self.demand.wake.notify_one();
    }
}

impl Demand {
    /// Blocks until the figures were read within [`LOOKED_AT_FOR`]; false if the lock is gone.
    fn wait_until_wanted(&self) -> bool {
        let Ok(mut asked) = self.asked.lock() else {
            return false;
        };
        loop {
            if asked.is_some_and(|at| at.elapsed() < LOOKED_AT_FOR) {
                return true;
            }
            // Bounded, so that the thread also notices when its registry is gone.
            match self.wake.wait_timeout(asked, Duration::from_secs(60)) {
                Ok((guard, timeout)) => {
                    asked = guard;
                    if timeout.timed_out() {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

/// Starts the sampler thread. It ends by itself once the registry is dropped.
pub fn start(registry: Weak<std::sync::RwLock<Registry>>) -> Usage {
    let usage = Usage {
        own: Arc::new(Mutex::new(OwnUsage::default())),
        demand: Arc::new(Demand {
            asked: Mutex::new(None),
            wake: Condvar::new(),
        }),
    };
    let sampler = usage.clone();
    let spawned = std::thread::Builder::new()
        .name("resources".into())
        .spawn(move || sample_loop(&registry, &sampler));
    if let Err(err) = spawned {
        tracing::warn!(cause = %err, "no CPU and memory figures: cannot start the sampler");
    }
    usage
}

fn sample_loop(registry: &Weak<std::sync::RwLock<Registry>>, usage: &Usage) {
    let own = &usage.own;
    let mut system = match System::new() {
        Ok(system) => system,
        Err(err) => {
            tracing::warn!(cause = %err, "no CPU and memory figures");
            return;
        }
    };
    let me = Pid::from_u32(std::process::id());
    let mut pause = SAMPLE_EVERY;
    loop {
        std::thread::sleep(pause);
        // Timed out waiting (nobody looked for a minute) also comes here: then only to see
        // whether the registry is still there.
        let wanted = usage.demand.wait_until_wanted();
        let Some(shared) = registry.upgrade() else {
            return;
        };
        if !wanted
            || !usage
                .demand
                .asked
                .lock()
                .is_ok_and(|a| a.is_some_and(|at| at.elapsed() < LOOKED_AT_FOR))
        {
            continue;
        }
        let mut pids: Vec<Pid> = registry::read(&shared)
            .pids()
            .into_iter()
            .map(Pid::from_u32)
            .collect();
        pids.push(me);
        pause = pause_for(pids.len());
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let usage = |pid: u32| {
            system
                .process(Pid::from_u32(pid))
                .map(|p| (p.cpu_usage(), p.memory()))
        };
        if let Some((cpu, rss)) = usage(std::process::id())
            && let Ok(mut own) = own.lock()
        {
            *own = OwnUsage {
                cpu_percent: cpu,
                rss_bytes: rss,
            };
        }
        let mut registry = registry::write(&shared);
        for instance in registry
            .services
            .iter_mut()
            .filter(|s| !s.remote)
            .flat_map(|s| s.instances.iter_mut())
        {
            match instance.pid.and_then(usage) {
                Some((cpu, rss)) => {
                    // sysinfo reports percent of one core, so a busy multi-threaded process can
                    // exceed 100; that is what htop shows too.
                    instance.cpu_percent = cpu;
                    instance.rss_bytes = rss;
                }
                None => {
                    instance.cpu_percent = 0.0;
                    instance.rss_bytes = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_space_out_past_the_budget() {
        assert_eq!(pause_for(10), SAMPLE_EVERY);
        assert_eq!(pause_for(PIDS_PER_SECOND), SAMPLE_EVERY);
        assert_eq!(pause_for(500), Duration::from_millis(2500));
    }
}
