//! The test world of the kernel tests (`kernel_probes.rs`, `kernel_udp_connect.rs`,
//! `kernel_udp_replies.rs`): a network namespace, kubelet-style pod cgroups, servers and clients,
//! all removed on drop; and reading what the probes recorded.
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use agent::kernel::Probes;
use agent_common::FlowValue;

pub const V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xe5, 0, 0, 0, 0, 0, 1);

/// Servers: a dual-stack listener (8080), a listener whose accept queue is full after one
/// connection (8082, so the next SYN is dropped: a timeout), and DNS over UDP and TCP on port 53.
const SERVERS: &str = r#"
import socket, struct, sys, threading
V4 = sys.argv[1]
def answer(q):
    # Canned answer: same id and question, one A record 198.18.0.10; 300 records (4.8 kB, more
    # than the kernel copies) when the name starts with "big".
    qid = q[:2]
    question = q[12:]
    n = 300 if question[1:4] == b"big" else 1
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([198, 18, 0, 10])
    return qid + b"\x81\x80" + struct.pack(">HHHH", 1, n, 0, 0) + question + rr * n
conns = []
def accept_forever(s):
    while True:
        c, _ = s.accept()
        conns.append(c)
l = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
l.bind(("::", 8080)); l.listen(64)
threading.Thread(target=accept_forever, args=(l,), daemon=True).start()
try:
    m = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
except OSError:
    m = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
m.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
m.bind((V4, 8083)); m.listen(8)
threading.Thread(target=accept_forever, args=(m,), daemon=True).start()
full = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
full.bind((V4, 8082)); full.listen(0)
def udp_dns(u):
    while True:
        q, peer = u.recvfrom(2048)
        u.sendto(answer(q), peer)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((V4, 53))
threading.Thread(target=udp_dns, args=(u,), daemon=True).start()
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.bind((sys.argv[2], 53))
threading.Thread(target=udp_dns, args=(u6,), daemon=True).start()
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((V4, 53)); t.listen(8)
def tcp_dns():
    while True:
        c, _ = t.accept()
        n = struct.unpack(">H", c.recv(2))[0]
        q = b""
        while len(q) < n:
            q += c.recv(n - len(q))
        a = answer(q)
        c.sendall(struct.pack(">H", len(a)) + a)
        c.close()
threading.Thread(target=tcp_dns, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"#;

/// The pod's traffic. Prints one line per step so that the test can check what the application saw.
const CLIENT: &str = r#"
import socket, struct, sys
V4, V6, what = sys.argv[1], sys.argv[2], sys.argv[3]
def tcp(family, addr, port, timeout=5.0):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
        return s, "established"
    except ConnectionRefusedError:
        s.close(); return None, "refused"
    except socket.timeout:
        s.close(); return None, "timeout"
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x03api\x07example\x04test\x00" + struct.pack(">HH", 1, 1)
if what == "flows":
    keep = []
    for _ in range(2):
        s, r = tcp(socket.AF_INET, V4, 8080); print("8080", r); keep.append(s)
    s, r = tcp(socket.AF_INET6, V6, 8080); print("v6-8080", r); keep.append(s)
    s, r = tcp(socket.AF_INET6, "::ffff:" + V4, 8080); print("mapped-8080", r); keep.append(s)
    s, r = tcp(socket.AF_INET, V4, 8081); print("8081", r)
    # MPTCP where the kernel has it (plain TCP otherwise): recorded as TCP, outcome included.
    try:
        m = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    except OSError:
        m = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    m.connect((V4, 8083)); print("mptcp-8083 established"); keep.append(m)
    s, r = tcp(socket.AF_INET6, V6, 8081); print("v6-8081", r)
    s, r = tcp(socket.AF_INET, V4, 8082); print("8082a", r); keep.append(s)
    s, r = tcp(socket.AF_INET, V4, 8082, timeout=1.0); print("8082b", r)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", (V4, 9999)); u.sendto(b"y", (V4, 9999)); print("9999 sent")
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # One datagram only: the ICMP port unreachable it triggers fails the next send.
    c.connect((V4, 9998)); c.send(b"z"); print("9998 sent")
    for s in keep:
        if s: s.close()
elif what == "many":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for port in range(20000, 20040):
        u.sendto(b"x", (V4, port))
    print("many sent")
elif what == "dns":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5.0)
    u.sendto(query, (V4, 53))
    a, _ = u.recvfrom(2048)
    print("udp", a.hex())
    u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u6.settimeout(5.0)
    u6.sendto(query, (V6, 53))
    a, _ = u6.recvfrom(2048)
    print("udp6", a.hex())
    big = query.replace(b"\x03api", b"\x03big")
    u.sendto(big, (V4, 53))
    a, _ = u.recvfrom(65535)
    print("big", a.hex())
    s, r = tcp(socket.AF_INET, V4, 53)
    s.sendall(struct.pack(">H", len(query)) + query)
    buf = b""
    while True:
        d = s.recv(4096)
        if not d: break
        buf += d
    s.close()
    print("tcp", buf.hex())
"#;

/// Everything a test created; removed on drop, in reverse order, ignoring what is already gone.
pub struct World {
    netns: String,
    /// cgroup directories created by the test, outermost first.
    cgroups: Vec<PathBuf>,
    servers: Option<Child>,
}

impl World {
    pub fn new(tag: &str) -> World {
        let id = format!("{}{}", std::process::id(), tag);
        let mut world = World {
            netns: format!("er-k-{id}"),
            cgroups: Vec::new(),
            servers: None,
        };
        // Clean up leftovers of an earlier run with the same pid (the guard may have been killed).
        let _ = Command::new("ip")
            .args(["netns", "del", &world.netns])
            .output();
        run("ip", &["netns", "add", &world.netns]);
        let ns = world.netns.clone();
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        // No dummy driver on the build machines: a veth pair with both ends inside the namespace.
        run(
            "ip",
            &[
                "-n", &ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
            ],
        );
        run(
            "ip",
            &["-n", &ns, "addr", "add", "198.18.0.1/24", "dev", "d0"],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                "fd00:e5::1/64",
                "dev",
                "d0",
                "nodad",
            ],
        );
        run("ip", &["-n", &ns, "link", "set", "d0", "up"]);
        run("ip", &["-n", &ns, "link", "set", "d1", "up"]);

        // A kubelet-style (systemd driver, containerd) pod cgroup, under a per-test top directory
        // so that parallel tests never remove each other's parents.
        let root = agent::cgroup::mount::find_cgroup2_root().expect("cgroup2 root");
        let (uid, container) = pod_uid_and_container(tag.len(), 0);
        let mut dir = root.join(format!("er-k-{id}.slice"));
        for part in [
            "kubepods.slice".to_string(),
            "kubepods-besteffort.slice".to_string(),
            format!("kubepods-besteffort-pod{uid}.slice"),
            format!("cri-containerd-{container}.scope"),
        ] {
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            world.cgroups.push(dir.clone());
            dir = dir.join(part);
        }
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        world.cgroups.push(dir);
        world
    }

    /// The first pod's container cgroup (the fifth directory `new` creates).
    pub fn pod_cgroup(&self) -> &Path {
        &self.cgroups[4]
    }

    /// The cgroup id the kernel reports: the inode number of the cgroup v2 directory.
    pub fn pod_cgroup_id(&self) -> u64 {
        cgroup_id(self.pod_cgroup())
    }

    pub fn start_servers(&mut self) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "python3", "-c", SERVERS])
            .args([V4.to_string(), V6.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn servers");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.servers = Some(child);
        assert_eq!(line.trim(), "ready", "servers did not start");
    }

    /// Runs the client inside the netns, in the pod cgroup from its first instruction on.
    pub fn run_client(&self, what: &str) -> BTreeMap<String, String> {
        self.run_script(CLIENT, &[what])
    }

    /// Runs the Python `script` like the client: in the netns and the pod cgroup, with the
    /// addresses and then `args` as arguments; returns its "key value" output lines.
    pub fn run_script(&self, script: &str, args: &[&str]) -> BTreeMap<String, String> {
        let argv: Vec<String> = [V4.to_string(), V6.to_string()]
            .into_iter()
            .chain(args.iter().map(|a| a.to_string()))
            .collect();
        let mut cmd = self.python(script, &argv);
        in_cgroup(&mut cmd, self.pod_cgroup());
        client_output(cmd)
    }

    /// The directory above every cgroup of this world (attach there to see only its pods).
    pub fn top_cgroup(&self) -> &Path {
        &self.cgroups[0]
    }

    /// Another pod cgroup beside the first one, named the same way; removed on drop.
    pub fn add_pod(&mut self, tag: &str) -> PathBuf {
        // Other numbers than the first pod's, so that its names differ even within a nanosecond.
        let (uid, container) = pod_uid_and_container(tag.len() + 0x100, 1);
        let mut dir = self.cgroups[2].join(format!("kubepods-besteffort-pod{uid}.slice"));
        for last in [false, true] {
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            self.cgroups.push(dir.clone());
            if !last {
                dir = dir.join(format!("cri-containerd-{container}.scope"));
            }
        }
        dir
    }

    /// `python3 -c script args...` inside the netns, stdin and stdout piped, not yet started.
    pub fn python(&self, script: &str, args: &[String]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "python3", "-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        cmd
    }
}

/// A pod uid (with `_` for `-`, as in the slice name) and a container id in the kubelet's shape,
/// unique to this process, `n` and the time; the container id's time is `nanos_bump` ahead.
fn pod_uid_and_container(n: usize, nanos_bump: u128) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let uid = format!(
        "{:08x}_{:04x}_4000_8000_{:012x}",
        std::process::id(),
        n,
        nanos & 0xffff_ffff_ffff
    );
    let container = format!("{:032x}{:032x}", nanos + nanos_bump, std::process::id());
    (uid, container)
}

/// The cgroup id the kernel reports for the cgroup v2 directory `dir`: its inode number.
pub fn cgroup_id(dir: &Path) -> u64 {
    std::fs::metadata(dir).unwrap().ino()
}

/// Runs a client `cmd` to its end, asserts it succeeded, and returns its "key value" lines.
pub fn client_output(mut cmd: Command) -> BTreeMap<String, String> {
    let out = cmd.output().expect("run client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_lines(&out.stdout)
}

/// Makes `cmd` run in the cgroup `dir` from its first instruction on.
pub fn in_cgroup(cmd: &mut Command, dir: &Path) {
    let procs = CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: only async-signal-safe calls between fork and exec. Writing "0" to cgroup.procs
    // moves the writing process itself.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
}

/// "key value" lines, as the scripts print them.
pub fn parse_lines(stdout: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut s) = self.servers.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        for dir in self.cgroups.iter().rev() {
            // A cgroup is removable once its last process has been reaped; retry briefly.
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
        }
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Number of programs attached to the cgroup `dir` for `attach_type` (BPF_PROG_QUERY).
pub fn attached(dir: &Path, attach_type: u32) -> u32 {
    // The `query` member of `union bpf_attr`: target_fd, attach_type, query_flags, attach_flags,
    // prog_ids (u64), prog_cnt, then fields this query leaves zero.
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _rest: [u32; 9],
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    let dir = std::fs::File::open(dir).unwrap();
    let mut q = Query {
        target_fd: std::os::fd::AsRawFd::as_raw_fd(&dir) as u32,
        attach_type,
        ..Query::default()
    };
    // SAFETY: `q` is a valid, zero-padded prefix of bpf_attr, and the kernel writes only prog_cnt
    // and attach_flags when prog_ids is null.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut q as *mut Query,
            size_of::<Query>() as u32,
        )
    };
    assert_eq!(rc, 0, "BPF_PROG_QUERY: {}", std::io::Error::last_os_error());
    q.prog_cnt
}

/// Probes attached at the cgroup2 root, so that they see every test's cgroups.
pub fn attach() -> Probes {
    let root = agent::cgroup::mount::find_cgroup2_root().expect("cgroup2 root");
    Probes::attach(&root).unwrap_or_else(|e| panic!("attach: {e}"))
}

/// A flow table key without its cgroup: (family, address, port, protocol).
pub type Destination = (u8, [u8; 16], u16, u8);

/// The flows of one cgroup, by destination.
pub type Flows = BTreeMap<Destination, FlowValue>;

/// The flows the probes recorded for `cgroup_id`.
pub fn flows_of(probes: &Probes, cgroup_id: u64) -> Flows {
    probes
        .flow_table()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.cgroup_id == cgroup_id)
        .map(|(k, v)| ((k.family, k.daddr, k.dport, k.protocol), v))
        .collect()
}

/// Decodes the hex the client prints.
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

impl World {
    /// The network namespace's name (for `ip -n` and `/etc/netns/<name>`).
    #[allow(dead_code)] // Not every test binary that includes this module uses it.
    pub fn netns(&self) -> &str {
        &self.netns
    }
}
