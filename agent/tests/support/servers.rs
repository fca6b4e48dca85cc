//! Real servers on the "external" hosts: TCP listeners on several ports (IPv4 and IPv6) and UDP
//! receivers, in one python3 process inside the world namespace.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::netns::Netns;
use super::{die_with_parent, wait_for, ChildGuard};

/// Listens on every given port on all addresses of its namespace, v4 and v6 (v6-only sockets, so
/// both families can bind the same port). Each accepted connection gets `ok\n` and is closed; each
/// event is reported as one stdout line (`tcp v4 80 10.244.1.10`, `udp v4 9999 10.244.1.11 5`) so
/// that tests can check what arrived. It exits when its stdin closes, which happens when the test
/// process dies, however it dies.
const SERVERS_PY: &str = r#"
import socket, sys, threading
tcp_ports = [int(p) for p in sys.argv[1].split(',') if p]
udp_ports = [int(p) for p in sys.argv[2].split(',') if p]
lock = threading.Lock()
def say(*words):
    with lock:
        print(*words, flush=True)
def serve_tcp(s, fam, port):
    while True:
        c, peer = s.accept()
        say('tcp', fam, port, peer[0])
        try:
            c.sendall(b'ok\n')
        except OSError:
            pass
        c.close()
def serve_udp(s, fam, port):
    while True:
        data, peer = s.recvfrom(65535)
        say('udp', fam, port, peer[0], len(data))
def bind(fam, kind, port):
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(('::', port))
    else:
        s.bind(('0.0.0.0', port))
    return s
for port in tcp_ports:
    for fam, name in ((socket.AF_INET, 'v4'), (socket.AF_INET6, 'v6')):
        s = bind(fam, socket.SOCK_STREAM, port)
        s.listen(128)
        threading.Thread(target=serve_tcp, args=(s, name, port), daemon=True).start()
for port in udp_ports:
    for fam, name in ((socket.AF_INET, 'v4'), (socket.AF_INET6, 'v6')):
        s = bind(fam, socket.SOCK_DGRAM, port)
        threading.Thread(target=serve_udp, args=(s, name, port), daemon=True).start()
say('ready')
sys.stdin.read()
"#;

/// The server process and what it has reported so far.
pub struct Servers {
    child: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Servers {
    pub fn start(ns: &Netns, tcp_ports: &[u16], udp_ports: &[u16]) -> Servers {
        let join = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut cmd = ns.exec("python3");
        cmd.args(["-u", "-c", SERVERS_PY, &join(tcp_ports), &join(udp_ports)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn python3 servers");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut servers = Servers {
            child: ChildGuard {
                name: "servers".into(),
                child,
            },
            lines,
        };
        wait_for("the servers to listen", Duration::from_secs(10), || {
            assert!(servers.child.running(), "the python3 servers exited");
            servers.saw(|l| l == "ready").then_some(())
        });
        servers
    }

    /// Whether any reported line satisfies `pred`.
    pub fn saw(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.lines.lock().unwrap().iter().any(|l| pred(l))
    }

    /// Waits (bounded) until a reported line equals `line`, e.g. `udp v4 9999 10.244.1.11 5`.
    pub fn expect_line(&self, line: &str) {
        wait_for(
            &format!("servers to report {line:?}"),
            Duration::from_secs(5),
            || self.saw(|l| l == line).then_some(()),
        );
    }
}
