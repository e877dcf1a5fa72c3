//! Per-service log files, written by one background thread so that a slow disk never stalls a
//! service's stderr reader.
//!
//! Lines reach the thread through a bounded queue. When it is full the line is dropped from the
//! file (it is still in the in-memory ring) and counted.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
};

use super::store::{LogLine, Stream};

/// A file is rotated when it passes this size.
pub const ROTATE_BYTES: u64 = 8 * 1024 * 1024;
/// Rotated files kept: NAME.log.1 … NAME.log.N.
pub const ROTATIONS_KEPT: u32 = 3;
const QUEUE: usize = 16 * 1024;

pub struct FileSink {
    queue: mpsc::SyncSender<Arc<LogLine>>,
    dropped: Arc<AtomicU64>,
}

impl FileSink {
    pub fn start(dir: &Path) -> std::io::Result<FileSink> {
        fs::create_dir_all(dir)?;
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let dir = dir.to_owned();
        std::thread::Builder::new()
            .name("log-files".into())
            .spawn(move || write_loop(&dir, &lines))?;
        Ok(FileSink {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn write(&self, line: Arc<LogLine>) {
        if self.queue.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Each open log file's buffer. Every batch is flushed, so a buffer holds one batch's lines of
/// one service; std's default 8 KiB was 4 MiB of the console's memory at 500 services.
const FILE_BUFFER: usize = 1024;

struct OpenLog {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
}

fn write_loop(dir: &Path, lines: &mpsc::Receiver<Arc<LogLine>>) {
    let mut files: HashMap<Arc<str>, OpenLog> = HashMap::new();
    // Write whatever is queued, then flush as soon as the queue runs dry: a line reaches the
    // file within one batch, and a console that exits right after cannot take it with it.
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(line) = next {
            if let Err(err) = append(dir, &mut files, &line) {
                tracing::warn!(service = %line.service, cause = %err, "cannot write log file");
                files.remove(&line.service);
            }
            next = lines.try_recv().ok();
        }
        for log in files.values_mut() {
            let _ = log.out.flush();
        }
    }
}

fn append(
    dir: &Path,
    files: &mut HashMap<Arc<str>, OpenLog>,
    line: &LogLine,
) -> std::io::Result<()> {
    if !files.contains_key(&line.service) {
        let path = dir.join(format!("{}.log", sanitize(&line.service)));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        files.insert(
            line.service.clone(),
            OpenLog {
                path,
                out: BufWriter::with_capacity(FILE_BUFFER, file),
                size,
            },
        );
    }
    let Some(log) = files.get_mut(&line.service) else {
        return Ok(());
    };
    let at = crate::api::human::rfc3339(line.at);
    let stream = match line.stream {
        Stream::Stdout => "out",
        Stream::Stderr => "err",
        Stream::Console => "console",
        Stream::Dropped => "dropped",
    };
    let text = format!(
        "{at} {}#{} {stream} {}\n",
        line.service, line.replica, line.text
    );
    log.out.write_all(text.as_bytes())?;
    log.size += text.len() as u64;
    if log.size >= ROTATE_BYTES {
        log.out.flush()?;
        rotate(&log.path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log.path)?;
        log.out = BufWriter::with_capacity(FILE_BUFFER, file);
        log.size = 0;
    }
    Ok(())
}

/// NAME.log → NAME.log.1 → … → NAME.log.N (dropped).
fn rotate(path: &Path) -> std::io::Result<()> {
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let _ = fs::remove_file(numbered(ROTATIONS_KEPT));
    for n in (1..ROTATIONS_KEPT).rev() {
        let _ = fs::rename(numbered(n), numbered(n + 1));
    }
    fs::rename(path, numbered(1))
}

/// Service names come from the stack file; keep them from escaping the log directory.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("sb-logs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut files = HashMap::new();
        let service: Arc<str> = Arc::from("svc");
        let text = "x".repeat(1024 * 1024);
        for seq in 0..20 {
            let line = LogLine {
                seq,
                at: SystemTime::now(),
                service: service.clone(),
                replica: 0,
                stream: Stream::Stderr,
                text: text.clone(),
            };
            append(&dir, &mut files, &line).unwrap();
        }
        drop(files);
        assert!(dir.join("svc.log.1").exists());
        assert!(dir.join("svc.log.2").exists());
        assert!(!dir.join("svc.log.4").exists());
        assert!(fs::metadata(dir.join("svc.log.1")).unwrap().len() >= ROTATE_BYTES);
        assert_eq!(sanitize("../etc"), "___etc");
        let _ = fs::remove_dir_all(&dir);
    }
}
