//! `ws-client`: the load generator for the chat cluster.
//!
//! Simulated clients connect to one or more nodes, join rooms and send stamped messages on a
//! schedule; every delivery is checked against what each member was owed, so a run reports
//! throughput and latency and proves that nothing went missing or arrived twice. In idle mode
//! they only join and hold (some leaving and coming back, with churn), and the run checks that
//! they all joined and agree on their room's count. The exit code is non-zero when a check
//! failed.

mod churn;
mod client;
mod config;
mod connect;
mod ingest;
mod ledger;
mod membership;
mod payload;
mod quick;
mod report;
mod room_report;
mod run;
mod seqset;
mod session;
mod stats;
mod view;

use std::process::ExitCode;

use clap::Parser as _;

use crate::config::Args;

fn main() -> ExitCode {
    match run_cli(Args::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ws-client: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_cli(args: Args) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    // Every connection is a file; take as many as the system allows and say how many that is.
    let open_file_limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|error| {
        eprintln!("ws-client: cannot raise the open-file limit: {error}");
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
    });
    println!(
        "ws-client: {} mode against {}, open-file limit {open_file_limit}",
        plan.mode.name(),
        plan.urls.join(", ")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run::run(plan, open_file_limit))?;
    // Stragglers (clients that missed the collection deadline) must not hold the exit.
    runtime.shutdown_background();

    print!("{}", report.summary.render());
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    if let Some(path) = &args.csv {
        report.write_csv(path)?;
    }
    Ok(match report.summary.verdict() {
        Ok(checked) => {
            println!("verdict: ok, {checked}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            println!("verdict: FAILED, {problem}");
            ExitCode::FAILURE
        }
    })
}
