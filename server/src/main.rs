//! `chat-server`: parse the configuration, bind, run a node until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use chat_server::config::Config;
use chat_server::node::{self, Node};

/// With `--features dhat-heap`, every allocation is recorded and `dhat-heap.json` is written
/// when the node exits (after SIGTERM): see the README's Performance section.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    // Listening for signals starts first, so a SIGTERM right after the `listening on` line
    // already means a graceful shutdown.
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        node::termination_signal().await;
        log::info!("termination signal received");
        signal.cancel();
    });
    let node = Node::build(&config)?;
    let listener =
        node::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    // The one line on stdout: scripts and tests read the bound port from it.
    println!("listening on {}", listener.local_addr()?);
    Ok(node.serve(listener, shutdown.cancelled_owned()).await?)
}
