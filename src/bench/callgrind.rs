//! Callgrind's client requests, so that a bench run under `valgrind --tool=callgrind` counts
//! the instructions of exactly the window it measures, on every thread: [`Window::open`]
//! zeroes the counts, [`Window::close`] writes those since to a file of their own, named by
//! its label (`callgrind.out.PID.K`, with `desc: Trigger: Client Request: LABEL`). What runs
//! outside the windows (start-up, stopping) is zeroed by the next window, or lands in the
//! last file, written at exit.
//!
//! This machine, like many virtual ones, has no hardware counters for `perf stat -e
//! instructions`; callgrind counts instructions on any machine, exactly and the same from run
//! to run, where CPU time is noisy on a shared machine. See `scripts/growth-callgrind.sh`.
//!
//! A client request is the sequence valgrind's own `valgrind.h` emits: four rotations of
//! `rdi` that add up to 128 bits (`rdi` is left as it was) and `xchg rbx, rbx`. Run natively
//! it does nothing and answers the default; valgrind recognises it and acts on the request in
//! `rax`. Written out here rather than bound from `valgrind.h`, so that building switchboard
//! needs no valgrind headers. On other architectures the requests do nothing.

/// The requests of `callgrind.h`: `VG_USERREQ_TOOL_BASE('C', 'T')` and on.
const TOOL_BASE: u64 = ((b'C' as u64) << 24) | ((b'T' as u64) << 16);
const ZERO_STATS: u64 = TOOL_BASE + 1;
const DUMP_STATS_AT: u64 = TOOL_BASE + 3;

/// Sends one client request with one argument; 0 when not running under valgrind.
#[cfg(target_arch = "x86_64")]
fn request(code: u64, arg: u64) -> u64 {
    let args: [u64; 6] = [code, arg, 0, 0, 0, 0];
    let mut result: u64 = 0;
    // SAFETY: natively the rotations leave `rdi` unchanged and `xchg rbx, rbx` does nothing,
    // so only `rdx` (declared) changes; under valgrind the request reads `args` (alive for
    // the call) and writes its answer to `rdx`.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") result,
            options(nostack),
        );
    }
    result
}

#[cfg(not(target_arch = "x86_64"))]
fn request(_code: u64, _arg: u64) -> u64 {
    0
}

/// A window of instructions counted under callgrind. Natively, opening and closing one costs
/// a few instructions and an allocation, and does nothing else. (Not `TOGGLE_COLLECT`: it acts
/// on the calling thread only, and the console's work runs on the runtime's other threads.)
pub struct Window {
    label: String,
}

impl Window {
    /// Zeroes the counts. `label` names the file the counts go to.
    pub fn open(label: &str) -> Window {
        request(ZERO_STATS, 0);
        Window {
            label: label.to_string(),
        }
    }

    /// Writes the counts since `open` to a file of their own, its label followed by `more`
    /// (what was known only at the end, such as how long the window lasted).
    pub fn close_with(self, more: &str) {
        let label = format!("{} {more}", self.label).replace('\0', "");
        let label = std::ffi::CString::new(label).unwrap_or_default();
        request(DUMP_STATS_AT, label.as_ptr() as u64);
    }
}
