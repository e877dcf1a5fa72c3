//! The mapping, and word-by-word atomic access to it. Every access goes through an
//! `AtomicU64` at a bounds-checked index: no plain reference into shared memory is ever formed,
//! so a peer writing concurrently cannot cause undefined behaviour on this side, only odd values.

use std::sync::atomic::AtomicU64;

use memmap2::{MmapMut, MmapRaw};

use super::layout::SEGMENT_LEN;

/// Owns the mapping; never read, only kept alive.
#[expect(dead_code, reason = "held to keep the memory mapped")]
enum Backing {
    Shared(MmapRaw),
    Private(MmapMut),
}

pub(crate) struct Mapping {
    // Kept only to keep the memory mapped.
    _backing: Backing,
    base: *mut u64,
    words: usize,
}

// SAFETY: the mapping is only ever accessed through atomics (see `word`), which are safe to
// share between threads; the pointer stays valid for as long as `_backing` lives.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn shared(map: MmapRaw) -> Option<Mapping> {
        if map.len() < SEGMENT_LEN || map.as_ptr().align_offset(8) != 0 {
            return None;
        }
        let base = map.as_mut_ptr().cast::<u64>();
        Some(Mapping {
            _backing: Backing::Shared(map),
            base,
            words: SEGMENT_LEN / 8,
        })
    }

    pub(crate) fn private() -> std::io::Result<Mapping> {
        let mut map = MmapMut::map_anon(SEGMENT_LEN)?;
        let base = map.as_mut_ptr().cast::<u64>();
        Ok(Mapping {
            _backing: Backing::Private(map),
            base,
            words: SEGMENT_LEN / 8,
        })
    }

    /// The word at `index`, or `None` past the end.
    pub(crate) fn word(&self, index: usize) -> Option<&AtomicU64> {
        if index >= self.words {
            return None;
        }
        // SAFETY: `index` is in bounds of a live mapping of SEGMENT_LEN bytes that is 8-byte
        // aligned (page aligned, checked in `shared`), and the memory is only accessed
        // atomically, by this process and the peer alike.
        Some(unsafe { AtomicU64::from_ptr(self.base.add(index)) })
    }
}
