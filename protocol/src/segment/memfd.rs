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

/// The longest memfd name the kernel accepts, in bytes.
const MEMFD_NAME_MAX: usize = 249;

/// Creates a sealed memfd with the header written. Returns the fd (close-on-exec: the spawner
/// moves it to fd 3 in the child) and a read-only reader over it.
pub fn create_segment(name: &str) -> Result<(OwnedFd, SegmentReader), SegmentError> {
    // The name only shows in /proc/<pid>/fd and /proc/<pid>/maps, for whoever debugs; the
    // kernel refuses names over 249 bytes and names with a NUL, so cut at a char boundary.
    let mut name: String = format!("switchboard:{name}").replace('\0', "");
    let mut end = name.len().min(MEMFD_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
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
        assert!(
            rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE).is_err(),
            "the seals themselves are sealed"
        );
    }

    #[test]
    fn odd_names_are_accepted() {
        let long = "é".repeat(300);
        for name in ["", "a\0b", long.as_str()] {
            let (_fd, reader) = create_segment(name).unwrap();
            assert!(reader.read().header_ok);
        }
    }
}
