//! `gantry`: the one binary. The CLI is a client of the controller's HTTP
//! API; `gantry server` is the controller, `gantry router` the data plane
//! (started by the controller), and `gantry sample-service` the demo's
//! workload.

mod audit;
mod cli;
mod cli_docs;
mod client;
mod cluster;
mod commands;
mod demo;
mod demo_fleet;
mod deployments;
mod exit_code;
mod fleet_progress;
mod governance;
mod hosts;
mod incidents;
mod output;
mod release_notes;
mod releases;
mod sample;
mod term;
mod time;

use clap::Parser;
use cli::Cli;
use exit_code::ExitCode;
use term::errln;

fn main() {
    // `gantry confine ...` starts an instance confined, in the controller's
    // stead. Its arguments are the controller's own format, not a CLI, and it
    // runs before any thread starts: it changes user and execs the instance.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == gantry_server::confine::SUBCOMMAND)
    {
        std::process::exit(gantry_server::confine::launch(&argv[2..]));
    }
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // clap's own `exit` would do the same; the status is named here.
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::Usage.exit()
        }
        ExitCode::Success.exit()
    });
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log file, or a fleet
    // host's stderr carried into the controller's log, gets plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // A reader gone mid-export: end as quietly as a print would.
            for cause in e.chain() {
                if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                    term::exit_if_broken_pipe(io);
                }
            }
            errln!("error: {e:#}");
            ExitCode::Error
        }
    };
    // Do not wait for background tasks (e.g. a router's accept loop) on the way out.
    runtime.shutdown_background();
    code.exit()
}
