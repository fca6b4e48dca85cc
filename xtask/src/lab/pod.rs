//! `xtask lab-pod`: the lab's containers. One small program plays every role of the lab's
//! application, the way its YAML asks: an HTTP server (optionally reading a database on each
//! request), a database speaking a line-based query protocol, and a client that calls URLs by
//! name over and over, resolving them through the pod's resolver (the cluster DNS) every time.
//!
//! The protocol of the database: the client sends `QUERY <text>\n`, the server answers
//! `ROW <n> <text>\n` lines and `OK <rows>\n`; `QUIT\n` closes the session.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

#[derive(clap::Args, Debug)]
pub struct PodArgs {
    /// Serve HTTP on this port.
    #[arg(long)]
    http: Option<u16>,
    /// With --http: read this database (`db://HOST:PORT`) for every request.
    #[arg(long)]
    backend: Option<String>,
    /// Serve the database protocol on this port.
    #[arg(long)]
    db: Option<u16>,
    /// Call these URLs (`http://HOST[:PORT]/PATH`, `db://HOST:PORT`), all of them every round.
    #[arg(long)]
    call: Vec<String>,
    /// Milliseconds between two rounds of calls.
    #[arg(long, default_value_t = 500)]
    every: u64,
    /// Rounds of calls before exiting (default: until killed).
    #[arg(long)]
    times: Option<u64>,
}

const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(args: &PodArgs) -> Result<()> {
    let mut servers = Vec::new();
    if let Some(port) = args.http {
        let listener = listen(port)?;
        let backend = args.backend.clone();
        servers.push(std::thread::spawn(move || {
            accept(listener, move |s| http_session(s, backend.as_deref()))
        }));
    }
    if let Some(port) = args.db {
        let listener = listen(port)?;
        servers.push(std::thread::spawn(move || accept(listener, db_session)));
    }
    if !args.call.is_empty() {
        let mut round = 0u64;
        while args.times.is_none_or(|t| round < t) {
            for url in &args.call {
                if let Err(e) = call(url) {
                    eprintln!("lab-pod: {url}: {e:#}");
                    if args.times.is_some() {
                        return Err(e);
                    }
                }
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(args.every));
        }
        return Ok(());
    }
    if servers.is_empty() {
        bail!("nothing to do: give --http, --db or --call");
    }
    for s in servers {
        let _ = s.join();
    }
    Ok(())
}

fn listen(port: u16) -> Result<TcpListener> {
    TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("listening on port {port}"))
}

fn accept(
    listener: TcpListener,
    session: impl Fn(TcpStream) -> Result<()> + Send + Clone + 'static,
) {
    for stream in listener.incoming().flatten() {
        let session = session.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(TIMEOUT));
            if let Err(e) = session(stream) {
                eprintln!("lab-pod: session: {e:#}");
            }
        });
    }
}

/// One HTTP/1.1 request per connection (`Connection: close`).
fn http_session(stream: TcpStream, backend: Option<&str>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    let (status, body) = match backend {
        Some(db) => match query(db, &format!("SELECT * FROM orders -- {path}")) {
            Ok(rows) => (
                "200 OK",
                format!("{{\"path\":\"{path}\",\"rows\":{rows}}}\n"),
            ),
            Err(e) => ("502 Bad Gateway", format!("{{\"error\":\"{e}\"}}\n")),
        },
        None => ("200 OK", format!("{{\"path\":\"{path}\"}}\n")),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// Answers queries until `QUIT` or the end of the connection.
fn db_session(stream: TcpStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let mut line = String::new();
    while {
        line.clear();
        reader.read_line(&mut line)? > 0
    } {
        let line = line.trim();
        if line == "QUIT" {
            break;
        }
        match line.strip_prefix("QUERY ") {
            Some(text) => write!(stream, "ROW 1 {text}\nROW 2 {text}\nOK 2\n")?,
            None => writeln!(stream, "ERR unknown command")?,
        }
    }
    Ok(())
}

/// Resolves `host:port` through the pod's resolver, every time (as a client library would).
fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{host}: no IPv4 address"))
}

/// Splits `scheme://host[:port][/path]`.
fn parse_url(url: &str) -> Result<(&str, &str, u16, &str)> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| format!("{url}: not a URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let default = if scheme == "http" { 80 } else { 0 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().with_context(|| format!("{url}: bad port"))?),
        None => (authority, default),
    };
    if port == 0 {
        bail!("{url}: no port");
    }
    Ok((scheme, host, port, path))
}

fn call(url: &str) -> Result<()> {
    match parse_url(url)? {
        ("http", host, port, path) => {
            let mut stream = TcpStream::connect_timeout(&resolve(host, port)?, TIMEOUT)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            if !response.starts_with("HTTP/1.1 200") {
                bail!("{}", response.lines().next().unwrap_or("no response"));
            }
            Ok(())
        }
        ("db", _, _, _) => query(url, "SELECT count(*) FROM ledger").map(|_| ()),
        (scheme, ..) => bail!("{url}: unknown scheme {scheme}"),
    }
}

/// One database session: a query, its rows, `QUIT`.
fn query(url: &str, text: &str) -> Result<usize> {
    let (_, host, port, _) = parse_url(url)?;
    let stream = TcpStream::connect_timeout(&resolve(host, port)?, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    writeln!(writer, "QUERY {text}")?;
    let mut rows = 0;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line.starts_with("ROW ") {
            rows += 1;
        } else if line.starts_with("OK ") {
            writeln!(writer, "QUIT")?;
            return Ok(rows);
        } else {
            bail!("{url}: {line}");
        }
    }
    bail!("{url}: the session ended before OK")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://a.b/x").unwrap(),
            ("http", "a.b", 80, "/x")
        );
        assert_eq!(
            parse_url("db://l.p:5432").unwrap(),
            ("db", "l.p", 5432, "/")
        );
        assert!(parse_url("db://l.p").is_err());
    }

    #[test]
    fn http_and_database_over_loopback() {
        let db = TcpListener::bind("127.0.0.1:0").unwrap();
        let db_url = format!("db://127.0.0.1:{}", db.local_addr().unwrap().port());
        std::thread::spawn(move || accept(db, db_session));
        let web = TcpListener::bind("127.0.0.1:0").unwrap();
        let web_url = format!(
            "http://127.0.0.1:{}/orders",
            web.local_addr().unwrap().port()
        );
        let backend = db_url.clone();
        std::thread::spawn(move || accept(web, move |s| http_session(s, Some(&backend))));
        assert_eq!(query(&db_url, "SELECT 1").unwrap(), 2);
        call(&web_url).unwrap();
    }
}
