//! The JavaScript client library's tests (`clients/js/test/*.test.mjs`, run by `node --test`
//! with the pinned `ws` package), run as a child of a Rust test that owns the Redis and nodes
//! they talk to and passes their addresses in the environment. The run gets a process group
//! of its own, so a stuck run is killed whole; its output goes to a log printed on failure.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{Process, TempDir, kill, log_file};

/// The npm package of the library, with its tests and pinned dev dependencies.
fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

/// Runs every test file of the library with `env` added to the environment; returns the exit
/// status and the run's output.
pub(crate) async fn run_node_tests(
    env: &[(&str, String)],
    timeout: Duration,
) -> (ExitStatus, String) {
    let package = package_dir();
    assert!(
        package.join("node_modules/ws").is_dir(),
        "the ws package is not installed: run `npm ci` in {} (scripts/test.sh does)",
        package.display()
    );
    let dir = TempDir::new("js-client");
    let log = dir.path().join("node-test.log");
    // The test files by name: Node 20 would take every module under a directory for one.
    let mut files: Vec<String> = std::fs::read_dir(package.join("test"))
        .expect("clients/js/test")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    let child = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .args(&files)
        .current_dir(&package)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log_file(&log))
        .stderr(log_file(&log))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn node: {e} (is Node.js installed?)"));
    let pid = child.id();
    let mut process = Process {
        label: format!("node --test pid {pid}"),
        child: Some(child),
        log: log.clone(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = process.try_wait() {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            // `node --test` runs each file in a child of its own: end the whole group.
            if let Ok(group) = libc::pid_t::try_from(pid) {
                let _ = kill(-group, libc::SIGKILL);
            }
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("node --test did not finish within {timeout:?}; its output:\n{output}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    (status, output)
}
