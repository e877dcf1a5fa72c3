//! `order-report`: the Python report job (`services/python/order_report.py` and the SDK module
//! it imports), embedded in the binary so the demo stack can run it from any directory.
//!
//! The builtin writes both files into the run directory and `exec`s `python3` on them: the
//! Python process keeps this process's pid, its stdin/stdout pipes and the segment on fd 3,
//! so to the console it is the job it spawned.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
};

const FILES: &[(&str, &str)] = &[
    (
        "switchboard_sdk.py",
        include_str!("../python/switchboard_sdk.py"),
    ),
    ("order_report.py", include_str!("../python/order_report.py")),
];

#[derive(Debug, thiserror::Error)]
pub enum PythonJobError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run python3 (is it installed?): {0}")]
    Exec(std::io::Error),
}

/// Writes the files into `dir`, each through a temporary name and a rename so two runs at
/// once never see a half-written module.
fn materialise(dir: &Path) -> Result<(), PythonJobError> {
    std::fs::create_dir_all(dir).map_err(|source| PythonJobError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, text) in FILES {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|current| current == *text) {
            continue;
        }
        let temporary = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|source| PythonJobError::Write {
                path: path.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Replaces this process with `python3 order_report.py`. Returns only on failure.
pub fn exec_order_report() -> PythonJobError {
    let dir = std::env::var_os("SWITCHBOARD_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("python");
    if let Err(err) = materialise(&dir) {
        return err;
    }
    PythonJobError::Exec(
        std::process::Command::new("python3")
            .arg(dir.join("order_report.py"))
            .exec(),
    )
}
