//! The kernel's socket table through sock_diag netlink (`NETLINK_SOCK_DIAG`, `inet_diag`), in the
//! network namespace of the calling thread.
//!
//! Each socket comes with `INET_DIAG_CGROUP_ID`: the id of the cgroup v2 the socket belongs to
//! (`sk_cgrp_data`, fixed when the socket is created), the same id the kernel programs see through
//! `bpf_skb_cgroup_id`. The attribute is sent for every full socket since Linux 5.8 (kernel commit
//! "inet_diag: add cgroup id attribute", 2020) on kernels with `CONFIG_SOCK_CGROUP_DATA`, which
//! cgroup BPF selects; the project needs 5.10, so attribution never has to guess through
//! `/proc/*/fd`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_CGROUP_ID` (linux/inet_diag.h).
const INET_DIAG_CGROUP_ID: u16 = 21;
/// `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;
const NLMSG_HDRLEN: usize = 16;
/// Flag bits of an attribute type.
const NLA_TYPE_MASK: u16 = !(libc::NLA_F_NESTED as u16 | libc::NLA_F_NET_BYTEORDER as u16);

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_LISTEN: u8 = 10;

/// One socket as inet_diag describes it. Addresses are 16 bytes; IPv4 uses the first 4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub protocol: u8,
    pub family: u8,
    pub state: u8,
    pub src: [u8; 16],
    pub sport: u16,
    pub dst: [u8; 16],
    pub dport: u16,
    pub cgroup_id: Option<u64>,
}

/// All sockets of `protocol` and `family` whose state is in the `states` bit mask (bit n for
/// state n), in the calling thread's network namespace.
pub fn dump(protocol: u8, family: u8, states: u32) -> io::Result<Vec<DiagSocket>> {
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    const SEQ: u32 = 1;
    let request = request(protocol, family, states, SEQ);
    // SAFETY: sockaddr_nl is plain data; zeroed is its "kernel, no groups" value.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: the buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut sockets = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag: the dump ended without NLMSG_DONE",
            ));
        }
        if parse_messages(&buf[..n as usize], SEQ, protocol, &mut sockets)? {
            return Ok(sockets);
        }
    }
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for a dump.
fn request(protocol: u8, family: u8, states: u32, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 56;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48).
    out.extend_from_slice(&[family, protocol, 0, 0]);
    out.extend_from_slice(&states.to_ne_bytes());
    out.resize(len, 0);
    out
}

/// Parses one read of the dump into `out`; true once `NLMSG_DONE` came.
pub(crate) fn parse_messages(
    mut buf: &[u8],
    seq: u32,
    protocol: u8,
    out: &mut Vec<DiagSocket>,
) -> io::Result<bool> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {what}"));
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        let msg_seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(invalid("a message longer than the read"));
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        if msg_seq == seq {
            match i32::from(kind) {
                libc::NLMSG_DONE => return Ok(true),
                libc::NLMSG_ERROR => {
                    let code = payload
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                        .ok_or_else(|| invalid("a short error message"))?;
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                _ if kind == SOCK_DIAG_BY_FAMILY => {
                    if let Some(socket) = parse_socket(payload, protocol) {
                        out.push(socket);
                    }
                }
                _ => {}
            }
        }
        let advance = (len + 3) & !3;
        buf = buf.get(advance..).unwrap_or_default();
    }
    Ok(false)
}

/// One `inet_diag_msg` and its attributes.
fn parse_socket(p: &[u8], protocol: u8) -> Option<DiagSocket> {
    if p.len() < DIAG_MSG_LEN {
        return None;
    }
    let addr = |at: usize| -> [u8; 16] { p[at..at + 16].try_into().expect("16 bytes") };
    let mut socket = DiagSocket {
        protocol,
        family: p[0],
        state: p[1],
        sport: u16::from_be_bytes([p[4], p[5]]),
        dport: u16::from_be_bytes([p[6], p[7]]),
        src: addr(8),
        dst: addr(24),
        cgroup_id: None,
    };
    let mut attrs = &p[DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == INET_DIAG_CGROUP_ID && len >= 12 {
            socket.cgroup_id = Some(u64::from_ne_bytes(
                attrs[4..12].try_into().expect("8 bytes"),
            ));
        }
        let advance = (len + 3) & !3;
        attrs = attrs.get(advance..).unwrap_or_default();
    }
    Some(socket)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `SOCK_DIAG_BY_FAMILY` message as the kernel writes it.
    pub(crate) fn message(seq: u32, s: &DiagSocket) -> Vec<u8> {
        let mut p = vec![s.family, s.state, 0, 0];
        p.extend_from_slice(&s.sport.to_be_bytes());
        p.extend_from_slice(&s.dport.to_be_bytes());
        p.extend_from_slice(&s.src);
        p.extend_from_slice(&s.dst);
        p.resize(DIAG_MSG_LEN, 0);
        // An attribute before ours (INET_DIAG_SHUTDOWN, 1 byte, padded) and the cgroup id.
        p.extend_from_slice(&5u16.to_ne_bytes());
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        if let Some(id) = s.cgroup_id {
            p.extend_from_slice(&12u16.to_ne_bytes());
            p.extend_from_slice(&INET_DIAG_CGROUP_ID.to_ne_bytes());
            p.extend_from_slice(&id.to_ne_bytes());
        }
        header(SOCK_DIAG_BY_FAMILY, seq, &p)
    }

    pub(crate) fn header(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    pub(crate) fn socket(
        state: u8,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
    ) -> DiagSocket {
        let v4 = |a: [u8; 4]| {
            let mut x = [0; 16];
            x[..4].copy_from_slice(&a);
            x
        };
        DiagSocket {
            protocol: libc::IPPROTO_TCP as u8,
            family: libc::AF_INET as u8,
            state,
            src: v4(src),
            sport,
            dst: v4(dst),
            dport,
            cgroup_id: Some(4242),
        }
    }

    #[test]
    fn parses_a_dump_across_reads() {
        let a = socket(TCP_ESTABLISHED, [10, 0, 0, 1], 40000, [198, 18, 0, 10], 443);
        let mut b = socket(TCP_LISTEN, [0; 4], 8080, [0; 4], 0);
        b.cgroup_id = None;
        let mut first = message(1, &a);
        first.extend(message(7, &a)); // another request's: ignored
        let mut out = Vec::new();
        assert!(!parse_messages(&first, 1, 6, &mut out).unwrap());
        let mut second = message(1, &b);
        second.extend(header(libc::NLMSG_DONE as u16, 1, &0i32.to_ne_bytes()));
        assert!(parse_messages(&second, 1, 6, &mut out).unwrap());
        assert_eq!(out, [a, b]);
    }

    #[test]
    fn errors_and_damage_are_errors_not_panics() {
        let err = header(libc::NLMSG_ERROR as u16, 1, &(-libc::EPERM).to_ne_bytes());
        let e = parse_messages(&err, 1, 6, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        let mut long = message(1, &socket(1, [1; 4], 1, [2; 4], 2));
        long[0] = 0xff;
        assert!(parse_messages(&long, 1, 6, &mut Vec::new()).is_err());
        // Truncated attributes and messages are skipped, never read past.
        let mut short = message(1, &socket(1, [1; 4], 1, [2; 4], 2));
        let cut = short.len() - 6;
        short.truncate(cut);
        short[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
        let mut out = Vec::new();
        parse_messages(&short, 1, 6, &mut out).unwrap();
        assert_eq!(out[0].cgroup_id, None);
        assert!(parse_socket(&[0; 10], 6).is_none());
    }

    /// The real kernel: a socket this test connects is in the dump, with its cgroup id.
    #[test]
    fn dumps_this_namespace_with_cgroup_ids() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let local = client.local_addr().unwrap().port();
        let states = 1 << TCP_ESTABLISHED | 1 << TCP_LISTEN;
        let all = dump(libc::IPPROTO_TCP as u8, libc::AF_INET as u8, states).unwrap();
        let ours = all
            .iter()
            .find(|s| s.sport == local && s.dport == port)
            .expect("the connected socket");
        assert_eq!(ours.state, TCP_ESTABLISHED);
        assert_eq!(&ours.dst[..4], &[127, 0, 0, 1]);
        let cgroup = ours.cgroup_id.expect("INET_DIAG_CGROUP_ID");
        // The id is the inode of this process's cgroup v2 directory, as the kernel programs see it.
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let root = crate::cgroup::mount::find_cgroup2_root().unwrap();
        let dir = root.join(path.trim_start_matches('/'));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            cgroup,
            std::fs::metadata(&dir).unwrap().ino(),
            "{}",
            dir.display()
        );
        assert!(all.iter().any(|s| s.sport == port && s.state == TCP_LISTEN));
    }
}
