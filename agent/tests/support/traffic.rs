//! Traffic from inside a pod: a small python3 client that performs a list of actions and fails on
//! any unexpected result, so that the flows a test asserts are flows that really happened.

use std::process::Command;

/// Actions, one per argument, words separated by spaces:
/// - `tcp HOST PORT`: connect, expect the server's `ok`;
/// - `refused HOST PORT`: connect, expect a reset (connection refused);
/// - `timeout HOST PORT`: connect, expect no answer within a second, then give up (close);
/// - `resolve NAME 4|6 PORT`: getaddrinfo through the pod's resolver, then `tcp` to the answer;
/// - `udp-sendto HOST PORT`: one datagram with sendto on an unconnected socket;
/// - `udp-connect HOST PORT`: connect a UDP socket, then send one datagram;
/// - `udp-ask HOST PORT`: one datagram with sendto, then expect it echoed back;
/// - `serve PORT`: listen on TCP and UDP `PORT`, print `{"ready": PORT}`, then answer one TCP
///   connection (`ok`) and echo one datagram with sendto (a reply, not egress), and return.
///
/// Each action prints one JSON line. getaddrinfo is asked for SOCK_STREAM only: with several
/// results glibc sorts them by RFC 6724, which connects a UDP socket to each candidate address, and
/// the kernel hooks would rightly see those connects as UDP flows that the test did not mean to make.
const CLIENT_PY: &str = r#"
import json, select, socket, sys
def tcp(host, port):
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((host, port))
        data = b''
        while True:
            chunk = s.recv(64)
            if not chunk:
                break
            data += chunk
        if data != b'ok\n':
            raise SystemExit(f'tcp {host} {port}: unexpected reply {data!r}')
for action in sys.argv[1:]:
    words = action.split()
    op, result = words[0], {'action': action}
    if op == 'tcp':
        tcp(words[1], int(words[2]))
    elif op == 'refused':
        fam = socket.AF_INET6 if ':' in words[1] else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            try:
                s.connect((words[1], int(words[2])))
            except ConnectionRefusedError:
                pass
            else:
                raise SystemExit(f'{action}: connected, expected a refusal')
    elif op == 'timeout':
        fam = socket.AF_INET6 if ':' in words[1] else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            try:
                s.connect((words[1], int(words[2])))
            except TimeoutError:
                pass
            else:
                raise SystemExit(f'{action}: connected, expected no answer')
    elif op == 'resolve':
        fam = socket.AF_INET6 if words[2] == '6' else socket.AF_INET
        infos = socket.getaddrinfo(words[1], int(words[3]), fam, socket.SOCK_STREAM)
        addrs = sorted({info[4][0] for info in infos})
        result['addrs'] = addrs
        tcp(addrs[0], int(words[3]))
    elif op in ('udp-sendto', 'udp-connect'):
        host, port = words[1], int(words[2])
        fam = socket.AF_INET6 if ':' in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            if op == 'udp-sendto':
                s.sendto(b'hello', (host, port))
            else:
                s.connect((host, port))
                s.send(b'hello')
    elif op == 'udp-ask':
        host, port = words[1], int(words[2])
        fam = socket.AF_INET6 if ':' in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b'hello', (host, port))
            data, _ = s.recvfrom(64)
            if data != b'hello':
                raise SystemExit(f'{action}: unexpected echo {data!r}')
    elif op == 'serve':
        port = int(words[1])
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(('0.0.0.0', port))
        t.listen(8)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(('0.0.0.0', port))
        print(json.dumps({'ready': port}), flush=True)
        pending = {t, u}
        while pending:
            ready, _, _ = select.select(list(pending), [], [], 30)
            if not ready:
                raise SystemExit(f'{action}: nobody came')
            for sock in ready:
                if sock is t:
                    c, _ = t.accept()
                    c.sendall(b'ok\n')
                    c.close()
                else:
                    data, peer = u.recvfrom(64)
                    u.sendto(data, peer)
                pending.discard(sock)
    else:
        raise SystemExit(f'unknown action {action!r}')
    print(json.dumps(result), flush=True)
"#;

/// Runs the client with `actions` through `cmd` (a python3 command already placed in a pod's netns
/// and cgroup) and returns one JSON value per action. Panics with the client's error on failure.
pub fn run_client(mut cmd: Command, actions: &[String]) -> Vec<serde_json::Value> {
    cmd.args(["-c", CLIENT_PY]).args(actions);
    let out = super::run(&mut cmd);
    let values: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("client prints JSON lines"))
        .collect();
    assert_eq!(values.len(), actions.len(), "one result per action");
    values
}

/// A `serve PORT` client running in the background until it has answered one TCP connection and
/// one datagram.
pub struct Server {
    child: super::ChildGuard,
}

impl Server {
    /// Starts `serve port` through `cmd` and waits (bounded) until it listens.
    pub fn start(mut cmd: Command, port: u16) -> Server {
        use std::io::BufRead;
        cmd.args(["-c", CLIENT_PY, &format!("serve {port}")])
            .stdout(std::process::Stdio::piped());
        super::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn the pod's server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so that the final line never blocks the server.
            for _ in lines {}
        });
        let first = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the pod's server to listen within 10 s");
        let line = first.and_then(Result::ok).unwrap_or_default();
        assert_eq!(line, format!("{{\"ready\": {port}}}"), "server start-up");
        Server {
            child: super::ChildGuard {
                name: "pod server".into(),
                child,
            },
        }
    }

    /// Waits (bounded) for the server to have served its two peers, and checks it succeeded.
    pub fn finish(mut self) {
        let status =
            super::agent::wait_exit(&mut self.child.child, std::time::Duration::from_secs(10))
                .expect("the pod's server to finish within 10 s");
        assert!(status.success(), "the pod's server failed: {status}");
    }
}
