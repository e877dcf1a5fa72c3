//! Creating a segment on the console side: an anonymous memory file of the segment's size,
//! with its header written, sealed so that it can never shrink or grow under a reader.

use std::{
    fs::File,
    os::fd::{AsFd, OwnedFd},
    sync::atomic::Ordering,
};

use memmap2::MmapOptions;
use rustix::fs::{MemfdFlags, SealFlags};

use super::{
    SegmentError,
    layout::{HEADER, SEGMENT_LEN},
    memory::Mapping,
    reader::SegmentReader,
};

/// Creates a sealed memfd with the header written. Returns the fd (close-on-exec: the spawner
/// moves it to fd 3 in the child) and a read-only reader over it.
pub fn create_segment(name: &str) -> Result<(OwnedFd, SegmentReader), SegmentError> {
    let name: String = format!("switchboard:{name}")
        .chars()
        .filter(|c| *c != '\0')
        .take(200)
        .collect();
    let fd = rustix::fs::memfd_create(
        name.as_str(),
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, SEGMENT_LEN as u64)?;
    let file = File::from(fd);
    {
        let map = MmapOptions::new().len(SEGMENT_LEN).map_raw(&file)?;
        let mapping = Mapping::shared(map)
            .ok_or_else(|| SegmentError::BadHeader("mapping too small or misaligned".into()))?;
        for (index, value) in HEADER.iter().enumerate() {
            if let Some(word) = mapping.word(index) {
                word.store(*value, Ordering::Release);
            }
        }
    }
    rustix::fs::fcntl_add_seals(&file, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    let reader = SegmentReader::from_fd(file.as_fd())?;
    Ok((OwnedFd::from(file), reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_against_resizing() {
        let (fd, reader) = create_segment("test").unwrap();
        assert!(
            rustix::fs::ftruncate(&fd, 0).is_err(),
            "shrinking must be refused"
        );
        assert!(
            rustix::fs::ftruncate(&fd, 8192).is_err(),
            "growing must be refused"
        );
        assert!(reader.read().header_ok);
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW));
    }
}
