//! Load generators the benchmark runs inside its hosts (`cargo xtask bench-worker ...`, started by
//! the benchmark in a pod's cgroup and network namespace; not meant to be run by hand).
//!
//! Plain blocking sockets from the standard library, one connection at a time: the point is a
//! steady, repeatable load whose every connection goes through the whole life the agent watches
//! (connect, handshake, accept, close on both sides), not the highest rate a tuned load generator
//! could reach.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use anyhow::{Context, Result};

#[derive(clap::Subcommand)]
pub enum Worker {
    /// A loopback storm: `connects` times connect to a local listener, let it accept and close,
    /// read the close, close. Prints `{"connects":N,"seconds":S,"cpu_seconds":C,"port":P}`, where
    /// C is the CPU time of its two threads (the client and the server), kernel work done on their
    /// behalf included: the agent's programs run there, and CPU time is far less sensitive than
    /// wall time to what else runs on the machine.
    ConnectStorm {
        #[arg(long)]
        connects: u32,
    },
}

pub fn run(worker: &Worker) -> Result<()> {
    match worker {
        Worker::ConnectStorm { connects } => connect_storm(*connects),
    }
}

fn connect_storm(connects: u32) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the storm's listener")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<u64> {
        let cpu = thread_cpu_ns();
        for _ in 0..connects {
            // Accepted and closed at once: the server side of the connection's life.
            let (stream, _) = listener.accept()?;
            drop(stream);
        }
        Ok(thread_cpu_ns() - cpu)
    });
    let cpu = thread_cpu_ns();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    for _ in 0..connects {
        let mut stream = TcpStream::connect(addr).context("storm connect")?;
        // The server's close: the client sees end of stream, then closes its side.
        while stream.read(&mut buf)? > 0 {}
    }
    let seconds = started.elapsed().as_secs_f64();
    let client_cpu = thread_cpu_ns() - cpu;
    let server_cpu = server
        .join()
        .map_err(|_| anyhow::anyhow!("the storm's server panicked"))??;
    let cpu_seconds = (client_cpu + server_cpu) as f64 / 1e9;
    println!(
        "{}",
        serde_json::json!({
            "connects": connects,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "port": addr.port(),
        })
    );
    Ok(())
}

/// CPU time of the calling thread so far, ns (first field of its schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
