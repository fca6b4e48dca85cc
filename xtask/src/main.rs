//! Project tasks. `cargo xtask setup | test | lab | bench | fuzz`; each does its own set-up first,
//! idempotently.

mod bench;
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
    /// Measure what the agent costs a node, side by side with bare runs and a peer (see
    /// BENCHMARKS.md); `--only PART` runs one part.
    Bench(bench::BenchArgs),
    /// A load generator of the benchmark, run inside its pods.
    #[command(hide = true)]
    BenchWorker {
        #[command(subcommand)]
        worker: bench::worker::Worker,
    },
    /// A container of the lab (HTTP, database and DNS clients and servers), run inside its pod.
    #[command(hide = true)]
    LabPod(lab::pod::PodArgs),
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
        Task::LabPod(args) => lab::pod::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::BenchWorker { worker } => bench::worker::run(&worker),
        Task::Fuzz { target, seconds } => {
            setup::run().and_then(|tools| test::fuzz(&tools, &target, seconds))
        }
    };
    if let Err(error) = result {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}
