//! `chat-server`: parse the configuration, run a node until Ctrl-C or SIGTERM.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use chat_server::config::Config;
use chat_server::node;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = Config::parse();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        node::termination_signal().await;
        log::info!("termination signal received");
        signal.cancel();
    });
    node::run(config, shutdown).await
}
