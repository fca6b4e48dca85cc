//! Project tasks. `cargo xtask setup | test | lab | fuzz`; each does its own set-up first, idempotently.

mod bench_agent;
mod cmd;
mod lab;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "egress-recommender project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and tests need: nightly rust-src, bpf-linker, cargo-fuzz, Debian
    /// packages, the Kubernetes schema validator. Idempotent; everything lands under target/tools.
    Setup,
    /// Set up, then run formatting and lint checks, a bounded fuzz run and every test.
    Test {
        /// Seconds of fuzzing for each fuzz target.
        #[arg(long, default_value_t = 60)]
        fuzz_seconds: u64,
    },
    /// Set up, then run the whole system on this machine and show what it learned.
    Lab(lab::LabArgs),
    /// Measure what the kernel programs cost per run under the lab's traffic (see BENCHMARKS.md).
    BenchAgent(bench_agent::BenchAgentArgs),
    /// Fuzz one target for a while (`cargo xtask fuzz dns_answer --seconds 600`).
    Fuzz {
        #[arg(default_value = "dns_answer")]
        target: String,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(|_| ()),
        Task::Test { fuzz_seconds } => test::run(fuzz_seconds),
        Task::Lab(args) => lab::run(&args),
        Task::BenchAgent(args) => bench_agent::run(&args),
        Task::Fuzz { target, seconds } => {
            setup::run().and_then(|tools| test::fuzz(&tools, &target, seconds))
        }
    };
    if let Err(error) = result {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}
