//! Transparent huge pages, turned off for the console and left as they were for its services.
//!
//! Why: mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), so wherever the kernel
//! allows them on request (THP `madvise` mode, this machine's), every 2 MiB of heap the console
//! touched was zeroed and kept resident whole. At 500 idle services the console's RSS was
//! 46 MiB with them and 25 MiB without, measured in the same session; the console's heap is
//! small objects touched at random, not a large hot array that huge pages would serve.
//!
//! `PR_SET_THP_DISABLE` is inherited across `fork` and kept across `exec`, so the spawner
//! turns it back off in each child before `exec` ([`restore_in_child`]): a service's use of
//! huge pages is the service's business (builtins get `MIMALLOC_ALLOW_THP=0` in their
//! environment instead, see `launch`).

use std::sync::atomic::{AtomicBool, Ordering};

/// The console turned huge pages off itself (they were on when it started).
static TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// Turns transparent huge pages off for this process, from now on. Call it first thing in a
/// console (not in a builtin service: its environment decides).
pub fn turn_off_for_console() {
    // SAFETY: prctl with these options takes plain integers and touches no memory of ours.
    let was_off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    if was_off == 0 {
        // SAFETY: as above.
        let set = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        TURNED_OFF.store(set == 0, Ordering::Relaxed);
    }
}

/// Whether a child must have huge pages turned back on before `exec` (read before the fork).
pub fn restore_in_child() -> bool {
    TURNED_OFF.load(Ordering::Relaxed)
}
