//! Adaptive busy polling: a process that expects a message soon keeps polling its pipes for a
//! short while instead of sleeping in `epoll_wait`. The console polls after routing a message;
//! a service polls while it waits for the answers to a few calls of its own.
//!
//! Why: a routed request crosses four pipes (A → console → B → console → A), and a process
//! that sleeps has to be woken at the other end of each one. On a virtual machine waking a
//! sleeping process costs tens of microseconds, paid by the writer (the wakeup IPI) and the
//! woken side (the context switch), and more when the woken process's CPU has gone idle and
//! halted. While the console polls, a service writing to it wakes nobody. While the caller
//! polls too, its CPU never halts between its request and the answer: the callee, woken on
//! that CPU, runs at the caller's next yield, and the answer is read without a wakeup. With
//! one request in flight the routed round trip halves (`switchboard bench --only routing`).
//!
//! Polling burns CPU, so it is bounded three ways:
//! - The window adapts, as Linux's haltpoll cpuidle governor does: it grows when the process
//!   went to sleep and the next message came within the longest window (polling longer would
//!   have caught it), and shrinks when the next message came later than that (no window would
//!   have). A poll that runs out just before the message arrives is no reason to shrink:
//!   shrinking then made a window that sat just under a service's turnaround halve and double
//!   in turn, and never grow past it. Traffic that comes in bursts with short gaps (a caller
//!   waiting for its answer, a pipeline) is polled for; sparse traffic (the demo's steady
//!   trickle, an idle stack) is not, and costs nothing.
//! - Each message earns [`CREDIT_PER_MESSAGE`] of polling, and polling spends it: the CPU
//!   spent polling is at most that much per message, whatever the traffic's shape.
//! - Polling never holds a CPU another process wants: each round yields the CPU
//!   (`sched_yield`), so a service that shares it (often the very one the answer comes from)
//!   runs at once. And a service polls only while it waits for answers of its own: one
//!   that only answers never polls.
//! - Polling stops while the CPU is contended: an idle round that took [`CONTENDED_ROUND`]
//!   means `sched_yield` handed the CPU to a process that kept it (a CPU-bound neighbour).
//!   A poller is then always runnable and waits behind it for whole time slices, where a
//!   process asleep in `epoll_wait` is woken by the next message ahead of it. So the poller
//!   sleeps for [`CONTENDED_PAUSE`] and tries again. With a `yes` on each of two cores the
//!   console routed 2.5× more requests with 64 in flight without polling than with it
//!   (`switchboard bench --only routing`, same run), before this rule.
//!
//! A caller with many calls out polls too. It used to stop at 16: answers then come in
//! batches and each wakeup serves many, so polling seemed only to take the CPU from the
//! services the answers come from. Once the console and the SDK spent less per message
//! (session of 2026-12-03), polling at any count ran 64 calls in flight 15–20 % faster and
//! 32 in flight 35–45 % faster, and 1 to 16 no slower (`switchboard bench --only routing`,
//! alternating runs): a caller that sleeps between batches pays a wakeup per batch, and its
//! CPU halts while it waits.
//!
//! The poller never holds the runtime either: each round is one `yield_now`, so every other
//! task runs in between, and the runtime polls its I/O without blocking (`epoll_wait` with a
//! zero timeout) while the poller has yielded. It only runs where there is a spare CPU
//! ([`enabled_here`]).

use std::{
    sync::{
        Weak,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// The longest a poll lasts after the last message: Linux's own bound for the same trade
/// (haltpoll's `guest_halt_poll_ns` and KVM's `halt_poll_ns` both default to 200 µs). A
/// service's turnaround (woken, handles a small request, writes its answer) is 10–30 µs, but
/// a window sized just above it is fragile: once one poll misses, the next gaps include
/// wakeups (20–40 µs each on a VM), so they overshoot the window, the window shrinks, and
/// the console settles into sleeping. With 100 µs the routed round trip of the bench ran at
/// 91–114 µs in most runs; with 200 µs (and the credit below) at 41–46 µs in every run.
pub const MAX_WINDOW: Duration = Duration::from_micros(200);
/// Polling earned by each message (routed, by the console; a call or an answer, by a service).
/// A caller with one request in flight makes two messages per round trip, and the console must
/// poll for the whole trip (it waits first for the callee, then for the caller's next request)
/// or a wakeup lands on the path: at 20 µs the credit of a 40–50 µs round trip ran out before
/// it ended.
pub const CREDIT_PER_MESSAGE: Duration = Duration::from_micros(50);
/// Credit saved up at most, so a burst does not pay for a long poll after it.
const MAX_CREDIT: Duration = Duration::from_millis(1);
/// Where a growing window starts from zero.
const START_WINDOW: Duration = Duration::from_micros(20);
/// An idle polling round (one `sched_yield`) this long means another process kept the CPU:
/// a service woken on it runs for 10–30 µs and blocks again, a CPU-bound process keeps it for
/// its time slice (milliseconds).
pub const CONTENDED_ROUND: Duration = Duration::from_millis(1);
/// How long polling stays off once the CPU was found contended.
pub const CONTENDED_PAUSE: Duration = Duration::from_millis(250);

/// Busy polling needs a spare CPU: on one (an affinity mask, a cgroup quota) the poller would
/// only delay the process it is waiting for. `SWITCHBOARD_BUSY_POLL=0` turns it off, in the
/// console and in the services it starts (to measure without it, or where every spare cycle
/// counts more than latency).
pub fn enabled_here() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    cpus > 1 && std::env::var_os("SWITCHBOARD_BUSY_POLL").is_none_or(|v| v != "0")
}

/// What a process polls for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PollFor {
    /// Any message: the console, after routing one.
    #[default]
    Messages,
    /// The answers to its own calls, while it waits for at least one.
    Answers,
}

/// What a process tells its poller; owned by whoever moves the messages.
#[derive(Default)]
pub struct Activity {
    poll_for: PollFor,
    /// Messages so far; the poller watches it move.
    messages: AtomicU64,
    /// Answers the process waits for (with [`PollFor::Answers`]).
    awaited: AtomicUsize,
    /// Time spent in polling rounds that found nothing, in nanoseconds: what polling cost.
    polled_ns: AtomicU64,
    /// Times polling paused because another process kept the CPU.
    contended: AtomicU64,
    /// The poller is asleep and waits to be told of the next message worth polling for.
    parked: AtomicBool,
    wake: Notify,
    /// Turned off (see [`enabled_here`]): the poller never starts.
    disabled: bool,
}

impl Activity {
    pub fn new(enabled: bool, poll_for: PollFor) -> Activity {
        Activity {
            poll_for,
            disabled: !enabled,
            ..Activity::default()
        }
    }

    /// Called for every message routed, sent or received: cheap unless the poller sleeps and
    /// the message is worth waking it for.
    pub fn message(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        if self.parked.load(Ordering::Relaxed)
            && self.wanted()
            && self.parked.swap(false, Ordering::AcqRel)
        {
            self.wake.notify_one();
        }
    }

    /// Whether polling now could catch a message the process waits for.
    fn wanted(&self) -> bool {
        match self.poll_for {
            PollFor::Messages => true,
            PollFor::Answers => self.awaited() > 0,
        }
    }

    /// How many answers the process now waits for.
    pub fn set_awaited(&self, answers: usize) {
        self.awaited.store(answers, Ordering::Relaxed);
    }

    fn awaited(&self) -> usize {
        self.awaited.load(Ordering::Relaxed)
    }

    /// Time spent in polling rounds that found nothing (wall time: it includes what other
    /// processes ran during its `sched_yield`s, so it bounds the CPU polling took).
    pub fn polled(&self) -> Duration {
        Duration::from_nanos(self.polled_ns.load(Ordering::Relaxed))
    }

    /// Times polling paused for [`CONTENDED_PAUSE`] because another process kept the CPU.
    pub fn contended_pauses(&self) -> u64 {
        self.contended.load(Ordering::Relaxed)
    }
}

/// Whether an idle round says the CPU is contended (see [`CONTENDED_ROUND`]); a round that
/// found messages may have run the process's own work, and says nothing.
fn contended(idle: bool, round: Duration) -> bool {
    idle && round >= CONTENDED_ROUND
}

/// The adaptive window, kept apart from the task so that its rules can be tested.
#[derive(Debug, Clone, Copy)]
struct Window {
    current: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            current: START_WINDOW,
        }
    }
}

impl Window {
    fn current(self) -> Duration {
        self.current
    }

    /// The next message came `gap` after the one before it, while the process slept.
    fn slept(&mut self, gap: Duration) {
        if gap > MAX_WINDOW {
            // No window would have caught it: poll less.
            self.current /= 2;
            if self.current < START_WINDOW {
                self.current = Duration::ZERO;
            }
        } else if gap > self.current {
            // A longer poll would have caught it.
            self.current = (self.current * 2).clamp(START_WINDOW, MAX_WINDOW);
        }
    }
}

/// Polling time earned by messages.
#[derive(Debug, Default, Clone, Copy)]
struct Credit {
    left: Duration,
}

impl Credit {
    fn earn(&mut self, messages: u64) {
        let earned = CREDIT_PER_MESSAGE.saturating_mul(u32::try_from(messages).unwrap_or(u32::MAX));
        self.left = self.left.saturating_add(earned).min(MAX_CREDIT);
    }

    /// Spends `polled`; false once the credit is gone.
    fn spend(&mut self, polled: Duration) -> bool {
        self.left = self.left.saturating_sub(polled);
        !self.left.is_zero()
    }
}

/// Polls while messages keep coming and one is wanted (see [`PollFor`]); sleeps (and costs
/// nothing) otherwise. Ends when the `Activity` is dropped.
pub async fn run(activity: Weak<Activity>) {
    let mut window = Window::default();
    let mut credit = Credit::default();
    let mut earned_at = 0;
    loop {
        let Some(shared) = activity.upgrade() else {
            return;
        };
        if shared.disabled {
            return;
        }
        // Poll as long as messages keep arriving within the window, and credit lasts.
        let mut seen = shared.messages.load(Ordering::Relaxed);
        let mut last = Instant::now();
        let mut round = last;
        let mut pause = false;
        while shared.wanted() && !window.current().is_zero() {
            tokio::task::yield_now().await;
            let mut messages = shared.messages.load(Ordering::Relaxed);
            let idle = messages == seen;
            if idle {
                // Polling idly: let whoever waits for this CPU run. A caller's answer is often
                // being computed on its own CPU, by the callee it woke; a service the console
                // routes to may be queued behind the console's poll. For the console this
                // costs 2–4 µs on the routed round trip's p50 and halves its p99 (one in
                // flight, two CPUs). Rounds that found messages skip it: a busy console
                // yielding every round ran 15–20% fewer requests with 64 in flight.
                std::thread::yield_now();
                messages = shared.messages.load(Ordering::Relaxed);
            }
            let now = Instant::now();
            credit.earn(messages.wrapping_sub(earned_at));
            earned_at = messages;
            let spent = now.saturating_duration_since(round);
            if idle {
                shared.polled_ns.fetch_add(
                    u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            if contended(idle, spent) {
                pause = true;
                break;
            }
            if !credit.spend(spent) {
                break;
            }
            round = now;
            if messages != seen {
                seen = messages;
                last = now;
            } else if now.saturating_duration_since(last) >= window.current() {
                break;
            }
        }
        if pause {
            // Not parked: messages meanwhile do not wake the poller (nothing to poll for), and
            // the window keeps what it learnt before the CPU was taken.
            shared.contended.fetch_add(1, Ordering::Relaxed);
            drop(shared);
            tokio::time::sleep(CONTENDED_PAUSE).await;
            continue;
        }
        // Sleep until the next message. A message after `parked` is set leaves a permit in
        // `wake`, so none is missed. Re-checked every second so the task ends soon after the
        // activity is dropped; a second without messages counts as a long gap. Only a sleep
        // through a wanted wait says anything about the window: a caller with no calls out
        // has nothing to poll for.
        let waited_for = shared.wanted();
        shared.parked.store(true, Ordering::Release);
        if shared.messages.load(Ordering::Relaxed) == seen {
            let woken = tokio::time::timeout(Duration::from_secs(1), shared.wake.notified()).await;
            if waited_for {
                window.slept(match woken {
                    Ok(()) => last.elapsed(),
                    Err(_) => Duration::MAX,
                });
            }
        }
        shared.parked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn polls_only_while_a_message_is_wanted() {
        let activity = Arc::new(Activity::new(true, PollFor::Answers));
        let poller = tokio::spawn(run(Arc::downgrade(&activity)));
        // Nothing awaited (a service that only answers): messages wake it, it never polls.
        for _ in 0..3 {
            activity.message();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(activity.polled(), Duration::ZERO);

        // Many answers awaited (a caller with 64 calls out): the next message starts a poll.
        activity.set_awaited(64);
        activity.message();
        let started = tokio::time::timeout(Duration::from_secs(5), async {
            while activity.polled().is_zero() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(started.is_ok(), "no poll while answers were awaited");

        // None awaited any more: it goes back to sleep, and messages do not wake it to poll.
        activity.set_awaited(0);
        activity.message();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = activity.polled();
        for _ in 0..3 {
            activity.message();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(activity.polled(), before);

        // The poller ends once the activity is gone.
        drop(activity);
        let ended = tokio::time::timeout(Duration::from_secs(5), poller).await;
        assert!(ended.is_ok(), "the poller outlived its activity");
    }

    #[test]
    fn only_a_long_idle_round_means_contention() {
        assert!(contended(true, CONTENDED_ROUND));
        assert!(contended(true, Duration::from_millis(4)), "a time slice");
        assert!(
            !contended(true, Duration::from_micros(30)),
            "a service ran and blocked"
        );
        assert!(
            !contended(false, Duration::from_millis(4)),
            "own work, not a neighbour"
        );
    }

    /// With another thread keeping this CPU busy (both pinned to one CPU), the poller finds
    /// the CPU contended and pauses instead of polling behind it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cpu_bound_neighbour_pauses_polling() {
        let cpu = rustix::thread::sched_getcpu();
        let mut one = rustix::thread::CpuSet::new();
        one.set(cpu);
        if rustix::thread::sched_setaffinity(None, &one).is_err() {
            eprintln!("skipped: cannot pin to one CPU here");
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let hog = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let _ = rustix::thread::sched_setaffinity(None, &one);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let activity = Arc::new(Activity::new(true, PollFor::Messages));
        let poller = tokio::spawn(run(Arc::downgrade(&activity)));
        // Messages 30 µs apart teach the window to poll, then stop: the poller polls idly,
        // yields to the hog, and gets the CPU back only at the end of the hog's slice.
        let paused = tokio::time::timeout(Duration::from_secs(20), async {
            while activity.contended_pauses() == 0 {
                for _ in 0..20 {
                    activity.message();
                    let until = Instant::now() + Duration::from_micros(30);
                    while Instant::now() < until {
                        tokio::task::yield_now().await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        let _ = hog.join();
        drop(activity);
        let _ = poller.await;
        assert!(
            paused.is_ok(),
            "the poller never noticed the CPU-bound neighbour"
        );
    }

    #[test]
    fn credit_bounds_polling_per_message() {
        let mut credit = Credit::default();
        assert!(
            !credit.spend(Duration::from_micros(1)),
            "nothing earned yet"
        );
        credit.earn(2);
        assert!(credit.spend(Duration::from_micros(30)));
        assert!(
            !credit.spend(CREDIT_PER_MESSAGE * 2 - Duration::from_micros(30)),
            "two messages' credit spent"
        );
        credit.earn(1_000_000);
        assert!(credit.spend(MAX_CREDIT - Duration::from_micros(1)));
        assert!(
            !credit.spend(Duration::from_micros(1)),
            "saved credit is capped"
        );
    }

    #[test]
    fn window_grows_when_sleeping_missed_a_close_message() {
        let mut window = Window::default();
        window.slept(Duration::from_micros(30));
        assert_eq!(window.current(), START_WINDOW * 2);
        for _ in 0..10 {
            window.slept(MAX_WINDOW - Duration::from_micros(1));
        }
        assert_eq!(window.current(), MAX_WINDOW);
    }

    #[test]
    fn window_holds_when_it_would_have_caught_the_message() {
        let mut window = Window::default();
        window.slept(Duration::from_micros(30));
        window.slept(Duration::from_micros(35));
        assert_eq!(
            window.current(),
            START_WINDOW * 2,
            "40 µs would have caught 35"
        );
    }

    #[test]
    fn window_settles_above_a_steady_turnaround() {
        // A caller with one request in flight: the next message comes 25 µs after the last,
        // just past the starting window. The window must end above it and stay there.
        let mut window = Window::default();
        for _ in 0..20 {
            if window.current() < Duration::from_micros(25) {
                window.slept(Duration::from_micros(25));
            }
        }
        assert!(window.current() >= Duration::from_micros(25), "{window:?}");
    }

    #[test]
    fn window_shrinks_to_zero_on_long_gaps_and_restarts_from_start() {
        let mut window = Window::default();
        window.slept(Duration::from_millis(5));
        assert_eq!(
            window.current(),
            Duration::ZERO,
            "sparse traffic is not polled for"
        );
        window.slept(Duration::MAX);
        assert_eq!(window.current(), Duration::ZERO);
        window.slept(Duration::from_micros(10));
        assert_eq!(window.current(), START_WINDOW);
        for _ in 0..10 {
            window.slept(MAX_WINDOW - Duration::from_micros(1));
        }
        window.slept(Duration::from_millis(1));
        assert_eq!(window.current(), MAX_WINDOW / 2);
    }
}
