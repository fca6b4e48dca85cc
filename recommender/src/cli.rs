//! Command line of the `recommender` binary.

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    eprintln!("recommender: no command yet");
    2
}
