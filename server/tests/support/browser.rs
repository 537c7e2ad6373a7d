//! The browser test script, `browser-test/chat.test.mjs` (Node.js driving Debian's headless
//! chromium through playwright-core), run as a child of a test that owns the nodes it visits.
//!
//! The script runs in a process group of its own, so that a failing or stuck run takes the
//! browser down with it. It asks the test for what only the test can do (restart a node) with
//! `@<request>` lines on stdout, each answered with one line on its stdin; its other stdout
//! lines are progress, echoed into the test's output. Its stderr goes to a log whose tail a
//! failing test prints.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Process, TempDir, log_file, wait_for_exit};

/// The npm project with the script and its pinned playwright-core.
fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../browser-test")
}

/// Where the script saves screenshots: beside the build output, never committed.
pub(crate) fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser-test")
}

pub(crate) struct BrowserScript {
    process: Process,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    exited: bool,
    _dir: TempDir,
}

impl BrowserScript {
    /// Starts the script with `env` added to its environment.
    pub(crate) fn start(env: &[(&str, String)]) -> BrowserScript {
        let project = project_dir();
        assert!(
            project.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed: run `npm ci` in {} (scripts/test.sh does)",
            project.display()
        );
        let dir = TempDir::new("browser");
        let log = dir.path().join("script.log");
        let mut child = Command::new("node")
            .arg("chat.test.mjs")
            .current_dir(&project)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(&log))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node: {e} (is Node.js installed?)"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        BrowserScript {
            process: Process {
                label: format!("browser script pid {}", child.id()),
                child: Some(child),
                log,
            },
            stdin,
            lines,
            exited: false,
            _dir: dir,
        }
    }

    /// The script's next request, or `None` once it has closed its stdout (it is exiting).
    /// Panics at `deadline`.
    pub(crate) async fn next_request(&mut self, deadline: Instant) -> Option<String> {
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => panic!("the browser script did not finish in time"),
                Ok(None) => return None,
                Ok(Some(line)) => match line.strip_prefix('@') {
                    Some(request) => return Some(request.to_owned()),
                    None => eprintln!("{line}"),
                },
            }
        }
    }

    /// Answers the request the script is waiting on.
    pub(crate) fn answer(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("answer the browser script: {e}"));
    }

    /// Waits for the script to exit by itself.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_for_exit(&mut self.process, timeout).await;
        self.exited = true;
        status
    }
}

impl Drop for BrowserScript {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        if let Some(pid) = self
            .process
            .pid()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
        {
            // The group is the script and the browser it started; the script is not reaped
            // yet, so the group id still names them.
            let _ = super::kill(-pid, libc::SIGKILL);
        }
    }
}
