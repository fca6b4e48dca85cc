//! The DNS host: dnsmasq serving a fixed zone, authoritative for `example.test`, forwarding nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::netns::Netns;
use super::{die_with_parent, wait_for, ChildGuard};

/// Names the test zone answers, and what with.
pub const API_NAME: &str = "api.example.test";
/// A CNAME to [`API_NAME`], so that one answer carries a chain of two names.
pub const WWW_NAME: &str = "www.example.test";
/// A name with only an AAAA record.
pub const V6_NAME: &str = "v6.example.test";

/// dnsmasq in the foreground inside a namespace; killed on drop.
pub struct Dnsmasq {
    child: ChildGuard,
    log: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq on `listen` (port 53, UDP and TCP) with the test zone: `api` → `api_v4`,
    /// `www` CNAME `api`, `v6` → `v6_addr`. `dir` holds its pid file and log.
    pub fn start(ns: &Netns, listen: &[&str], api_v4: &str, v6_addr: &str, dir: &Path) -> Dnsmasq {
        let records = [
            format!("--host-record={API_NAME},{api_v4}"),
            format!("--cname={WWW_NAME},{API_NAME}"),
            format!("--host-record={V6_NAME},{v6_addr}"),
        ];
        Dnsmasq::start_with(ns, listen, &records, dir, "dnsmasq")
    }

    /// A dnsmasq on `listen` answering with `records` (dnsmasq options such as `--host-record`,
    /// `--cname`, `--addn-hosts`); `name` tells its pid file and log apart in `dir`.
    pub fn start_with(
        ns: &Netns,
        listen: &[&str],
        records: &[String],
        dir: &Path,
        name: &str,
    ) -> Dnsmasq {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = ns.exec("/usr/sbin/dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            // No /etc/resolv.conf, no /etc/hosts, no upstream: the answers are exactly the records
            // below, whatever the machine's own configuration says.
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            // Unknown names under test. are answered NXDOMAIN here instead of being forwarded.
            "--local=/test/",
            // Stay root: the pid file and log live in a root-only temp dir.
            "--user=root",
            "--group=root",
            "--log-queries",
            // No cache, so that every query the tests make is answered (and logged) afresh.
            "--cache-size=0",
        ]);
        for addr in listen {
            cmd.arg(format!("--listen-address={addr}"));
        }
        cmd.args(records)
            .arg(format!(
                "--pid-file={}",
                dir.join(format!("{name}.pid")).display()
            ))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn dnsmasq");
        let mut dns = Dnsmasq {
            child: ChildGuard {
                name: "dnsmasq".into(),
                child,
            },
            log,
        };
        // dnsmasq logs "started" once its sockets are bound; it exits at once on a bad option.
        wait_for("dnsmasq to start", Duration::from_secs(10), || {
            assert!(
                dns.child.running(),
                "dnsmasq exited during start-up: {}",
                dns.log_text()
            );
            dns.log_text().contains("started").then_some(())
        });
        dns
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// `dig` inside `ns` against `server`, `+short`; `tcp` forces DNS over TCP. Returns the answer lines.
pub fn dig(cmd_ns: &mut Command, server: &str, name: &str, qtype: &str, tcp: bool) -> Vec<String> {
    cmd_ns.args([
        &format!("@{server}"),
        name,
        qtype,
        "+short",
        "+time=2",
        "+tries=2",
    ]);
    if tcp {
        cmd_ns.arg("+tcp");
    }
    let out = super::run(cmd_ns);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
