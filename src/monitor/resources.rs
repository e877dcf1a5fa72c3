//! Per-process CPU% and RSS, sampled about once a second on a dedicated thread, for the pids in
//! the registry only (`ProcessesToUpdate::Some`): sysinfo makes blocking syscalls, and a full
//! process scan would cost far more than reading a few `/proc/<pid>` files.

use std::{
    sync::{Arc, Mutex, Weak},
    time::Duration,
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

/// Starts the sampler thread. It ends by itself once the registry is dropped.
pub fn start(registry: Weak<std::sync::RwLock<Registry>>) -> Arc<Mutex<OwnUsage>> {
    let own = Arc::new(Mutex::new(OwnUsage::default()));
    let own_out = own.clone();
    let spawned = std::thread::Builder::new()
        .name("resources".into())
        .spawn(move || sample_loop(&registry, &own));
    if let Err(err) = spawned {
        tracing::warn!(cause = %err, "no CPU and memory figures: cannot start the sampler");
    }
    own_out
}

fn sample_loop(registry: &Weak<std::sync::RwLock<Registry>>, own: &Mutex<OwnUsage>) {
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
        let Some(shared) = registry.upgrade() else {
            return;
        };
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
