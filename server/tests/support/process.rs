//! Child processes and temporary directories that clean up after themselves.
//!
//! Every process is owned by a guard whose `Drop` kills it by PID and waits for it, so nothing
//! outlives a test, also when it fails; a failing test prints the tail of each process's log.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::unique;

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "chat-it-{}-{}",
            std::process::id(),
            unique(&format!("{label}-"))
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed (SIGKILL) and reaped on drop; its output goes to `log`,
/// whose tail is printed when the test is failing.
pub(crate) struct Process {
    pub label: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    /// Spawns `command` with stdout and stderr appended to `log`; `label` and the pid name it.
    pub(crate) fn spawn(
        command: &mut Command,
        label: &str,
        log: &Path,
    ) -> std::io::Result<Process> {
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file(log))
            .stderr(log_file(log))
            .spawn()?;
        Ok(Process {
            label: format!("{label} pid {}", child.id()),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended (and is reaped), without blocking.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("{}: try_wait: {e}", self.label))
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` does not signal a child that has already been reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    pub(crate) fn print_log_tail(&self) {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!(
            "----- last {} lines of {} ({}) -----\n{}\n----- end of {} -----",
            tail.len(),
            self.label,
            self.log.display(),
            tail.join("\n"),
            self.label
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.print_log_tail();
        }
    }
}

pub(crate) fn log_file(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Sends SIGTERM to `pid`.
pub(super) fn sigterm(pid: u32) {
    signal(pid, libc::SIGTERM);
}

/// Sends `signal` to `pid`, a process this harness started.
pub(super) fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    if let Err(error) = kill(pid, signal) {
        panic!("kill -{signal} {pid}: {error}");
    }
}

/// kill(2): `signal` to the process `target`, or to the process group `-target`, which this
/// harness started. The one unsafe call of the tests: libc offers no safe wrapper.
#[allow(unsafe_code)]
pub(crate) fn kill(target: libc::pid_t, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(target, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits for `process` to exit by itself; panics (and the guard kills it) after `timeout`.
pub(crate) async fn wait_for_exit(process: &mut Process, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.try_wait() {
            return status;
        }
        if Instant::now() >= deadline {
            panic!("{} did not exit within {timeout:?}", process.label);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
