//! The Python package (`services/python`): its launcher watches the C conformance job with no
//! console running (`services/python/tests/test_launcher.py`, which also drives the progress
//! example's model and its terminal bar) and reads what the C, Java and Node SDKs write into a
//! segment (labels, backlog); and it installs with pip into a fresh venv.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `sdks/c/examples/NAME.c`, compiled into `dir`.
fn c_program(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    run(Command::new("gcc")
        .args(["-Wall", "-Werror", "-std=c99", "-I"])
        .arg(repo().join("sdks/c"))
        .arg(repo().join(format!("sdks/c/examples/{name}.c")))
        .arg("-o")
        .arg(&out));
    out
}

/// The segment-only program of each job SDK, as a JSON list of command lines.
fn segment_only(dir: &Path) -> String {
    let classes = dir.join("java");
    run(Command::new("javac")
        .args(["-Xlint:all", "-Werror", "-d"])
        .arg(&classes)
        .arg(repo().join("sdks/java/Switchboard.java"))
        .arg(repo().join("sdks/java/SegmentOnly.java")));
    let path = |p: PathBuf| p.to_str().unwrap().to_string();
    serde_json::json!([
        [path(c_program(dir, "segment_only"))],
        ["java", "-cp", path(classes), "SegmentOnly"],
        ["node", path(repo().join("sdks/node/segment_only.js"))],
    ])
    .to_string()
}

#[test]
fn the_python_launcher_watches_a_c_job_with_no_console() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(Command::new("python3")
        .args([
            "-m",
            "unittest",
            "-v",
            "services/python/tests/test_launcher.py",
        ])
        .env(
            "SWITCHBOARD_C_JOB",
            c_program(dir.path(), "conformance_job"),
        )
        .env("SWITCHBOARD_SEGMENT_ONLY", segment_only(dir.path()))
        .current_dir(repo()));
    let report = String::from_utf8_lossy(&output.stderr);
    // Not vacuous: every test ran (none skipped for want of the job).
    assert!(report.contains("Ran 5 tests"), "{report}");
    assert!(!report.contains("skipped"), "{report}");
}

/// `pip install ./services/python` in a fresh venv, then both modules import from elsewhere.
/// pip fetches the build backend (setuptools) as for any pyproject package.
#[test]
fn the_python_package_installs_into_a_venv() {
    let dir = tempfile::tempdir().unwrap();
    // Installed from a copy of the package's files: setuptools leaves `build/` behind in the
    // source directory, and a stale one could stand in for the real package.
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    for entry in std::fs::read_dir(repo().join("services/python")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, source.join(path.file_name().unwrap())).unwrap();
        }
    }
    let venv = dir.path().join("venv");
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(&source));
    let output = run(Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import switchboard_sdk, switchboard_launcher; print(switchboard_launcher.__file__)",
        ])
        .current_dir(dir.path()));
    let path = String::from_utf8_lossy(&output.stdout);
    assert!(path.contains("site-packages"), "{path}");
}
