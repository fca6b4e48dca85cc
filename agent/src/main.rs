use std::process::ExitCode;

use clap::Parser;

use agent::cli::{Cli, Command};

fn main() -> ExitCode {
    // Bad flags: clap prints the error and exits with code 2.
    let cli = Cli::parse();
    // Logs go to stderr: stdout may carry the flow records.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("agent: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let Command::Run(args) = cli.command;
    match runtime.block_on(agent::run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("agent: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
