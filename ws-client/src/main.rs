//! `ws-client`: the load generator for the chat cluster. Not built yet: this binary only says so.

fn main() -> std::process::ExitCode {
    eprintln!("ws-client: the load generator is not available in this version");
    std::process::ExitCode::from(2)
}
