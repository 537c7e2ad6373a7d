//! The README's first command, run exactly as a newcomer types it: `cargo run` of the "Run"
//! section from the workspace root, with no `CHAT_*` variables, then the page it promises at
//! <http://127.0.0.1:8080>, two clients chatting through it, and a graceful stop.
//!
//! The command is read from README.md rather than copied here, so the manual and the test can
//! never drift apart. It binds the fixed address the README names, so the test fails with a
//! clear message when something else holds port 8080.

mod support;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use support::{Client, exchange, http_get, unique};

/// Where the README says the node listens.
const README_ADDRESS: &str = "127.0.0.1:8080";
/// `cargo run --release` may compile the whole node first on a fresh machine.
const BUILD_AND_START: Duration = Duration::from_secs(20 * 60);
/// The node's own shutdown deadline is 5 s; allow for the drain on top.
const STOP: Duration = Duration::from_secs(15);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_owned()
}

/// The command of the first `sh` block under `## Run`.
fn run_command(readme: &str) -> String {
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with("Run\n"))
        .expect("README has a `## Run` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("`## Run` opens with a ```sh block");
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "`## Run` shows one command: {lines:?}");
    lines[0].trim().to_owned()
}

/// Variables a newcomer's shell does not have: the node's own, and those `cargo test` sets for
/// this test. Build scripts watch some of them (ring's, `CARGO_MANIFEST_DIR`), so passing them
/// on would rebuild the release profile here and again for whoever runs it next.
fn set_by_cargo_test(name: &str) -> bool {
    const PREFIXES: [&str; 4] = ["CHAT_", "CARGO_PKG_", "CARGO_BIN_", "CARGO_MANIFEST_"];
    const NAMES: [&str; 5] = [
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|prefix| name.starts_with(prefix)) || NAMES.contains(&name)
}

/// The command's process group, ended on drop even when the test fails.
struct Started {
    child: Child,
}

impl Started {
    fn signal_group(&self, signal: libc::c_int) {
        let group = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // The group this test created for the command, and nothing else.
        let _ = support::kill(-group, signal);
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not stop within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_run_command_serves_the_page_and_chat() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    let command = run_command(&readme);
    assert!(
        !command.contains(['|', '&', ';', '$', '>', '<', '`', '\'', '"']),
        "the first command is a plain one: {command}"
    );
    if let Err(error) = TcpListener::bind(README_ADDRESS) {
        panic!("{README_ADDRESS} is taken ({error}): the README's command needs it free");
    }

    let words: Vec<&str> = command.split_whitespace().collect();
    let mut process = Command::new(words[0]);
    process
        .args(&words[1..])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own group, so the stop reaches the node whether or not cargo replaced itself.
        .process_group(0);
    for (name, _) in std::env::vars_os() {
        if set_by_cargo_test(&name.to_string_lossy()) {
            process.env_remove(name);
        }
    }
    let mut started = Started {
        child: process.spawn().expect("spawn the README's command"),
    };

    let stdout = started.child.stdout.take().expect("piped stdout");
    let rx = support::listening_line(stdout);
    let address = tokio::time::timeout(BUILD_AND_START, rx)
        .await
        .unwrap_or_else(|_| panic!("`{command}` printed no `listening on` in {BUILD_AND_START:?}"))
        .unwrap_or_else(|_| panic!("`{command}` ended without listening"));
    assert_eq!(address, README_ADDRESS, "the README promises this address");
    let address = address.parse().expect("a socket address");

    let page = http_get(address, "/").await;
    assert_eq!(page.status, 200, "GET /: {}", page.body);
    assert!(page.body.contains("<html"), "the chat page: {}", page.body);

    let url = |name: &str| format!("ws://{README_ADDRESS}/ws?name={name}");
    let mut ada = Client::connect(&url("ada")).await;
    let mut bob = Client::connect(&url("bob")).await;
    let room = unique("readme-");
    ada.join(&room).await;
    bob.join(&room).await;
    exchange(&mut ada, &room, "hello from the README", &mut [&mut bob]).await;
    exchange(&mut bob, &room, "hello back", &mut [&mut ada]).await;

    started.signal_group(libc::SIGTERM);
    assert_eq!(ada.expect_close().await, chat_protocol::close::GOING_AWAY);
    let status = started.wait(STOP);
    assert!(
        status.success(),
        "the node exits cleanly on SIGTERM: {status}"
    );
}
