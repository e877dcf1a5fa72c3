//! The mapping, and word-by-word atomic access to it. Every access goes through an
//! `AtomicU64` at a bounds-checked index: no plain reference into shared memory is ever formed,
//! so a peer writing concurrently cannot cause undefined behaviour on this side, only odd values.

use std::sync::atomic::AtomicU64;

use memmap2::{MmapMut, MmapRaw};

use super::layout::SEGMENT_LEN;

pub(crate) struct Mapping {
    // `MmapRaw` rather than `Mmap`/`MmapMut`: those hand out `&[u8]`, which would assert that
    // nobody else changes the bytes, and the peer does (memmap2#135).
    // The console's mapping is read-only: only loads are ever made through it.
    map: MmapRaw,
}

// SAFETY: the mapping is only ever accessed through atomics (see `word`), which are safe to
// share between threads; the pointer stays valid for as long as `map` lives.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Wraps a mapping of a segment file; `None` if it is too short or misaligned for u64
    /// words (mappings are page aligned, so only a broken platform would fail that).
    pub(crate) fn shared(map: MmapRaw) -> Option<Mapping> {
        if map.len() < SEGMENT_LEN || map.as_ptr().align_offset(8) != 0 {
            return None;
        }
        Some(Mapping { map })
    }

    /// Private anonymous memory, zeroed, for a writer nobody reads from another process.
    pub(crate) fn private() -> std::io::Result<Mapping> {
        let map = MmapRaw::from(MmapMut::map_anon(SEGMENT_LEN)?);
        Ok(Mapping { map })
    }

    /// The word at `index`, or `None` past the end. Callers on a read-only mapping only load.
    pub(crate) fn word(&self, index: usize) -> Option<&AtomicU64> {
        if index >= SEGMENT_LEN / 8 {
            return None;
        }
        // SAFETY: `index` is in bounds of a live mapping of at least SEGMENT_LEN bytes that is
        // 8-byte aligned (checked in `shared`; anonymous maps are page aligned), and this
        // memory is only ever accessed atomically, by this process and the peer alike, so the
        // `AtomicU64::from_ptr` requirements hold for the lifetime of `&self`.
        Some(unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().cast::<u64>().add(index)) })
    }

    /// A relaxed load of the word at `index`; 0 past the end.
    pub(crate) fn load(&self, index: usize) -> u64 {
        self.word(index)
            .map_or(0, |w| w.load(std::sync::atomic::Ordering::Relaxed))
    }
}
