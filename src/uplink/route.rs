//! `harmony ground --out ...`: the decoded MAVLink stream to other ground tools (issue #13).
//!
//! Endpoints are given in MAVProxy's convention, with pymavlink connection strings:
//!
//! | `--out`              | what it is                                         | the tool connects with |
//! |----------------------|----------------------------------------------------|------------------------|
//! | `udpout:HOST:PORT`   | datagrams sent to HOST:PORT; replies read from it  | QGroundControl (listens on 14550), pymavlink `udpin:` |
//! | `udpin:HOST:PORT`    | a UDP port we listen on; we answer whoever last sent to it | pymavlink `udpout:` |
//! | `tcpin:HOST:PORT`    | a TCP server (5760 style), up to [`MAX_CLIENTS`] clients | MAVProxy `--master tcp:`, pymavlink `tcp:` |
//!
//! **Down** (air to tools): every frame the station accepts from the radio is written to every
//! endpoint as received, bytes unchanged. With a signing key only correctly signed frames are
//! accepted, so nothing unsigned from the air is forwarded.
//!
//! **Up** (tools to air): frames from the endpoints' clients (COMMAND_LONG,
//! SET_MESSAGE_INTERVAL, heartbeats ...) go up the radio with their own system and component
//! ids; with a key they are signed with it (MAVLink 2), without one they pass unchanged. Each
//! endpoint may send at most [`UP_RATE`] frames/s (burst [`UP_BURST`]): the radio is a few
//! kilobytes per second and the vehicle's commands must still get through; the rest is dropped
//! and counted.
//!
//! **Never blocking the radio loop.** Every socket is non-blocking. A TCP client that does not
//! read has at most [`OUT_CAP`] bytes waiting for it; beyond that frames for it are dropped and
//! counted. A client that goes away is removed and counted; a UDP destination that answers
//! "port unreachable" (ICMP) is counted and written to again later. None of it touches the radio
//! link or the other endpoints.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use mavlink::{MAVLinkMessageRaw, MAVLinkV2MessageRaw, MavHeader};

use super::frame::{Decoder, frame_len, parse};
use super::signing::Signer;

/// Clients one `tcpin` endpoint serves at once (more are accepted and closed, counted).
pub const MAX_CLIENTS: usize = 16;
/// Bytes waiting for one slow TCP client before frames for it are dropped.
pub const OUT_CAP: usize = 64 * 1024;
/// Frames per second one endpoint may send up the radio, sustained.
pub const UP_RATE: f64 = 20.0;
/// ... and in a burst.
pub const UP_BURST: f64 = 40.0;
/// Endpoints at most (a command line is not a place for hundreds).
pub const MAX_ENDPOINTS: usize = 16;

/// Why an endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "--out {0}: expected udpout:HOST:PORT, udpin:HOST:PORT or tcpin:HOST:PORT (pymavlink connection strings)"
    )]
    Syntax(String),
    #[error("--out {spec}: {source}")]
    Io { spec: String, source: io::Error },
    #[error("--out: at most {MAX_ENDPOINTS} endpoints")]
    TooMany,
}

/// What kind of endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    UdpOut,
    UdpIn,
    TcpIn,
}

/// A parsed `--out` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
}

impl Spec {
    pub fn parse(s: &str) -> Result<Spec, RouteError> {
        let bad = || RouteError::Syntax(s.to_owned());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "udpout" | "udp" => Kind::UdpOut,
            "udpin" => Kind::UdpIn,
            "tcpin" => Kind::TcpIn,
            _ => return Err(bad()),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Spec {
            kind,
            host: host.to_owned(),
            port: port.parse().map_err(|_| bad())?,
        })
    }

    fn addr(&self, text: &str) -> Result<SocketAddr, RouteError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| RouteError::Io {
                spec: text.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| RouteError::Syntax(text.to_owned()))
    }
}

/// One endpoint's counters (shown in the UI and the plain `ROUTE` lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames written towards the tool (per TCP client).
    pub down: u64,
    /// Frames not delivered: a slow client's buffer full, a send that failed.
    pub down_dropped: u64,
    /// Frames from the tool sent up the radio.
    pub up: u64,
    /// Frames from the tool not sent: over the rate limit, or the radio not open.
    pub up_dropped: u64,
    /// TCP clients connected now.
    pub clients: u64,
    /// TCP clients that went away, or were refused (too many).
    pub disconnects: u64,
    /// "Port unreachable" answers and other socket errors.
    pub errors: u64,
}

struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    out: VecDeque<u8>,
    decoder: Decoder,
}

enum Socket {
    Udp {
        sock: UdpSocket,
        /// Where frames go: fixed for `udpout`, the last sender for `udpin`.
        peer: Option<SocketAddr>,
        decoder: Decoder,
    },
    Tcp {
        listener: TcpListener,
        clients: Vec<Client>,
    },
}

/// One `--out` endpoint.
pub struct Endpoint {
    /// As given on the command line.
    pub name: String,
    /// The address bound (for `tcpin`/`udpin` with port 0, the port the system chose).
    pub local: Option<SocketAddr>,
    pub counters: Counters,
    socket: Socket,
    tokens: f64,
    refilled: Instant,
}

fn nonblocking_err(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted
}

impl Endpoint {
    /// Opens `text` (`udpout:HOST:PORT` ...).
    pub fn open(text: &str) -> Result<Endpoint, RouteError> {
        let spec = Spec::parse(text)?;
        let addr = spec.addr(text)?;
        let io = |source| RouteError::Io {
            spec: text.to_owned(),
            source,
        };
        let socket = match spec.kind {
            Kind::UdpOut => {
                let any: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let sock = UdpSocket::bind(any).map_err(io)?;
                // Connected: replies from the tool come back here, and an ICMP "port
                // unreachable" shows up as an error on a later call, instead of nothing.
                sock.connect(addr).map_err(io)?;
                sock.set_nonblocking(true).map_err(io)?;
                Socket::Udp {
                    sock,
                    peer: Some(addr),
                    decoder: Decoder::default(),
                }
            }
            Kind::UdpIn => {
                let sock = UdpSocket::bind(addr).map_err(io)?;
                sock.set_nonblocking(true).map_err(io)?;
                Socket::Udp {
                    sock,
                    peer: None,
                    decoder: Decoder::default(),
                }
            }
            Kind::TcpIn => {
                let listener = TcpListener::bind(addr).map_err(io)?;
                listener.set_nonblocking(true).map_err(io)?;
                Socket::Tcp {
                    listener,
                    clients: Vec::new(),
                }
            }
        };
        let local = match &socket {
            Socket::Udp { sock, .. } => sock.local_addr().ok(),
            Socket::Tcp { listener, .. } => listener.local_addr().ok(),
        };
        Ok(Endpoint {
            name: text.to_owned(),
            local,
            counters: Counters::default(),
            socket,
            tokens: UP_BURST,
            refilled: Instant::now(),
        })
    }

    /// Writes one frame towards the tool(s); never blocks.
    fn forward(&mut self, bytes: &[u8]) {
        let c = &mut self.counters;
        match &mut self.socket {
            Socket::Udp { sock, peer, .. } => {
                let Some(to) = *peer else { return };
                let r = if matches!(sock.peer_addr(), Ok(p) if p == to) {
                    sock.send(bytes)
                } else {
                    sock.send_to(bytes, to)
                };
                match r {
                    Ok(_) => c.down += 1,
                    Err(e) => {
                        c.down_dropped += 1;
                        if !nonblocking_err(&e) {
                            c.errors += 1;
                        }
                    }
                }
            }
            Socket::Tcp { clients, .. } => {
                for cl in clients.iter_mut() {
                    if cl.out.len() + bytes.len() > OUT_CAP {
                        c.down_dropped += 1;
                    } else {
                        cl.out.extend(bytes);
                        c.down += 1;
                    }
                }
                Self::flush_clients(clients, c);
            }
        }
    }

    /// Writes what each client has waiting, as far as its socket takes it now; drops the
    /// clients that went away.
    fn flush_clients(clients: &mut Vec<Client>, c: &mut Counters) {
        clients.retain_mut(|cl| {
            while !cl.out.is_empty() {
                let (a, _) = cl.out.as_slices();
                match cl.stream.write(a) {
                    Ok(0) => return Self::gone(c),
                    Ok(n) => {
                        cl.out.drain(..n);
                    }
                    Err(e) if nonblocking_err(&e) => break,
                    Err(_) => return Self::gone(c),
                }
            }
            true
        });
        c.clients = clients.len() as u64;
    }

    fn gone(c: &mut Counters) -> bool {
        c.disconnects += 1;
        false
    }

    fn take_token(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + dt * UP_RATE).min(UP_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Accepts, reads and writes what is ready; frames from the tools go to `up`, which says
    /// whether it could send them.
    fn pump(&mut self, up: &mut dyn FnMut(&MAVLinkMessageRaw) -> bool) {
        let mut buf = [0u8; 2048];
        let mut frames: Vec<MAVLinkMessageRaw> = Vec::new();
        match &mut self.socket {
            Socket::Udp {
                sock,
                peer,
                decoder,
            } => {
                let fixed = sock.peer_addr().is_ok();
                // Bounded: a flood of datagrams cannot keep us here.
                for _ in 0..64 {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if !fixed {
                                *peer = Some(from);
                            }
                            decoder.push(&buf[..n]);
                            while let Some(f) = decoder.next_frame() {
                                frames.push(f);
                            }
                        }
                        Err(e) if nonblocking_err(&e) => break,
                        Err(_) => {
                            // ICMP port unreachable on a connected socket, and the like.
                            self.counters.errors += 1;
                            break;
                        }
                    }
                }
            }
            Socket::Tcp { listener, clients } => {
                for _ in 0..MAX_CLIENTS {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            if clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err()
                            {
                                self.counters.disconnects += 1;
                                continue; // dropped: closed
                            }
                            let _ = stream.set_nodelay(true);
                            clients.push(Client {
                                stream,
                                peer,
                                out: VecDeque::new(),
                                decoder: Decoder::default(),
                            });
                        }
                        Err(_) => break,
                    }
                }
                let c = &mut self.counters;
                clients.retain_mut(|cl| {
                    for _ in 0..16 {
                        match cl.stream.read(&mut buf) {
                            Ok(0) => return Self::gone(c),
                            Ok(n) => {
                                cl.decoder.push(&buf[..n]);
                                while let Some(f) = cl.decoder.next_frame() {
                                    frames.push(f);
                                }
                            }
                            Err(e) if nonblocking_err(&e) => break,
                            Err(_) => return Self::gone(c),
                        }
                    }
                    true
                });
                Self::flush_clients(clients, c);
            }
        }
        for f in frames {
            if self.take_token() && up(&f) {
                self.counters.up += 1;
            } else {
                self.counters.up_dropped += 1;
            }
        }
    }

    /// Addresses of the connected TCP clients.
    pub fn clients(&self) -> Vec<SocketAddr> {
        match &self.socket {
            Socket::Tcp { clients, .. } => clients.iter().map(|c| c.peer).collect(),
            Socket::Udp { peer, .. } => peer.iter().copied().collect(),
        }
    }

    fn fds<'a>(&'a self, out: &mut Vec<BorrowedFd<'a>>) {
        match &self.socket {
            Socket::Udp { sock, .. } => out.push(sock.as_fd()),
            Socket::Tcp { listener, clients } => {
                out.push(listener.as_fd());
                out.extend(clients.iter().map(|c| c.stream.as_fd()));
            }
        }
    }
}

/// Every `--out` endpoint.
#[derive(Default)]
pub struct Router {
    pub endpoints: Vec<Endpoint>,
}

impl Router {
    /// Opens every endpoint (an address that cannot be bound is an error: nothing starts).
    pub fn open(specs: &[String]) -> Result<Router, RouteError> {
        if specs.len() > MAX_ENDPOINTS {
            return Err(RouteError::TooMany);
        }
        Ok(Router {
            endpoints: specs
                .iter()
                .map(|s| Endpoint::open(s))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// A frame from the air, to every endpoint.
    pub fn forward(&mut self, raw: &MAVLinkMessageRaw) {
        let bytes = match raw {
            MAVLinkMessageRaw::V1(r) => r.raw_bytes(),
            MAVLinkMessageRaw::V2(r) => r.raw_bytes(),
        };
        let bytes = &bytes[..frame_len(raw).min(bytes.len())];
        for e in &mut self.endpoints {
            e.forward(bytes);
        }
    }

    /// Services every endpoint (after `poll` said something is ready, or on a tick).
    pub fn pump(&mut self, up: &mut dyn FnMut(&MAVLinkMessageRaw) -> bool) {
        for e in &mut self.endpoints {
            e.pump(up);
        }
    }

    /// The descriptors to wait on.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = Vec::new();
        for e in &self.endpoints {
            e.fds(&mut v);
        }
        v
    }

    /// One short line per endpoint, for the terminal UI.
    pub fn summary(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| {
                let c = e.counters;
                let mut s = format!(
                    "{} down {} up {} dropped {}/{}",
                    e.name, c.down, c.up, c.down_dropped, c.up_dropped
                );
                if matches!(e.socket, Socket::Tcp { .. }) {
                    s.push_str(&format!(" clients {}", c.clients));
                }
                if c.errors > 0 {
                    s.push_str(&format!(" errors {}", c.errors));
                }
                s
            })
            .collect()
    }

    /// One line per endpoint: `ROUTE endpoint=... down=... ...`.
    pub fn lines(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| {
                let c = e.counters;
                format!(
                    "ROUTE endpoint={} down={} down_dropped={} up={} up_dropped={} clients={} disconnects={} errors={}",
                    e.name,
                    c.down,
                    c.down_dropped,
                    c.up,
                    c.up_dropped,
                    c.clients,
                    c.disconnects,
                    c.errors
                )
            })
            .collect()
    }
}

/// The bytes to send up the radio for a frame from a tool: with a signer, the message
/// re-serialized as MAVLink 2 with the tool's ids and sequence and signed with the ground
/// key; without, the frame as it came.
pub fn relay_bytes(raw: &MAVLinkMessageRaw, signer: Option<&mut Signer>) -> Option<Vec<u8>> {
    let Some(signer) = signer else {
        let b = match raw {
            MAVLinkMessageRaw::V1(r) => r.raw_bytes(),
            MAVLinkMessageRaw::V2(r) => r.raw_bytes(),
        };
        return Some(b[..frame_len(raw).min(b.len())].to_vec());
    };
    let msg = parse(raw).ok()?;
    let header = MavHeader {
        system_id: raw.system_id(),
        component_id: raw.component_id(),
        sequence: raw.sequence(),
    };
    let mut out = MAVLinkV2MessageRaw::new();
    out.serialize_message_for_signing(header, &msg);
    signer.sign(&mut out);
    Some(out.raw_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::frame::{Framer, heartbeat};
    use crate::uplink::signing::{Verdict, Verifier};
    use mavlink::dialects::common::{MavState, MavType};
    use std::time::Duration;

    fn raw_of(bytes: &[u8]) -> MAVLinkMessageRaw {
        let mut d = Decoder::default();
        d.push(bytes);
        d.next_frame().unwrap()
    }

    /// Issue #13: the MAVProxy/pymavlink spellings are understood, others refused by name.
    #[test]
    fn specs_parse() {
        let s = Spec::parse("udpout:127.0.0.1:14550").unwrap();
        assert_eq!(
            (s.kind, s.host.as_str(), s.port),
            (Kind::UdpOut, "127.0.0.1", 14550)
        );
        let s = Spec::parse("tcpin:0.0.0.0:5760").unwrap();
        assert_eq!((s.kind, s.port), (Kind::TcpIn, 5760));
        assert_eq!(Spec::parse("udpin:[::1]:0").unwrap().host, "::1");
        for bad in [
            "serial:/dev/ttyUSB0",
            "udpout:host",
            "tcpin::5760",
            "tcpin:h:x",
        ] {
            let e = Spec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("udpout:HOST:PORT"), "{e}");
        }
    }

    /// Issue #13: a tool's frame goes up signed with the ground key, keeping the tool's ids;
    /// the vehicle's verifier accepts it. Without a key it passes unchanged.
    #[test]
    fn frames_from_tools_are_signed_with_the_ground_key() {
        let key = [7u8; 32];
        let mut tool = Framer::new(255, 190, None);
        let bytes = tool
            .frame(&heartbeat(
                MavType::MAV_TYPE_GCS,
                MavState::MAV_STATE_ACTIVE,
            ))
            .to_vec();
        let raw = raw_of(&bytes);
        assert_eq!(relay_bytes(&raw, None).unwrap(), bytes);
        let mut signer = Signer::new(key, 0, 0);
        let up = relay_bytes(&raw, Some(&mut signer)).unwrap();
        let signed = raw_of(&up);
        assert_eq!((signed.system_id(), signed.component_id()), (255, 190));
        let mut v = Verifier::new(key);
        assert!(matches!(
            v.check(&signed, signer.now()),
            Verdict::Accepted(_)
        ));
        assert_eq!(
            Verifier::new([8u8; 32]).check(&signed, signer.now()),
            Verdict::BadSignature
        );
    }

    /// Issue #13: a TCP client that never reads is bounded (its frames dropped and counted,
    /// forwarding never blocks); a UDP endpoint beside it gets every frame; a client that
    /// disconnects is counted and removed; a UDP destination nobody listens on is counted as
    /// errors and disturbs nothing.
    #[test]
    fn slow_and_vanished_clients_disturb_nothing() {
        let udp_peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp_peer
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        // A port with nobody behind it: bind, note, close.
        let dead = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let specs = vec![
            "tcpin:127.0.0.1:0".to_owned(),
            format!("udpout:{}", udp_peer.local_addr().unwrap()),
            format!("udpout:{dead}"),
        ];
        let mut r = Router::open(&specs).unwrap();
        let tcp_addr = r.endpoints[0].local.unwrap();
        // Never reads, with a small receive buffer, so the 12 MB below cannot all fit in the
        // sockets' buffers whatever the kernel's autotuning allows.
        let slow = TcpStream::connect(tcp_addr).unwrap();
        let size: nix::libc::c_int = 4096;
        // SAFETY: setsockopt on an open socket with a pointer to a live c_int and its size.
        let rc = unsafe {
            nix::libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&slow),
                nix::libc::SOL_SOCKET,
                nix::libc::SO_RCVBUF,
                (&size as *const nix::libc::c_int).cast(),
                std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let quitter = TcpStream::connect(tcp_addr).unwrap();
        let mut up = |_: &MAVLinkMessageRaw| true;
        let t0 = Instant::now();
        while r.endpoints[0].counters.clients < 2 && t0.elapsed() < Duration::from_secs(5) {
            r.pump(&mut up);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.endpoints[0].counters.clients, 2);
        drop(quitter);
        let mut framer = Framer::new(1, 191, None);
        let text = "x".repeat(50);
        let frame = framer
            .frame(&crate::uplink::frame::statustext(
                mavlink::dialects::common::MavSeverity::MAV_SEVERITY_INFO,
                &text,
            ))
            .to_vec();
        assert!(frame.len() >= 60, "{}", frame.len());
        let raw = raw_of(&frame);
        let n = 200_000u64;
        let t0 = Instant::now();
        let mut udp_got = 0u64;
        let mut buf = [0u8; 512];
        for i in 0..n {
            r.forward(&raw);
            if i % 64 == 0 {
                r.pump(&mut up);
                // Keep the UDP peer's socket buffer drained so it counts every datagram.
                udp_peer.set_nonblocking(true).unwrap();
                while udp_peer.recv(&mut buf).is_ok() {
                    udp_got += 1;
                }
            }
        }
        let took = t0.elapsed();
        udp_peer.set_nonblocking(false).unwrap();
        while udp_peer.recv(&mut buf).is_ok() {
            udp_got += 1;
        }
        let tcp = r.endpoints[0].counters;
        assert!(
            took < Duration::from_secs(20),
            "forwarding blocked: {took:?}"
        );
        assert!(tcp.down_dropped > 0, "the slow client was bounded: {tcp:?}");
        assert_eq!(tcp.clients, 1, "{tcp:?}");
        assert_eq!(tcp.disconnects, 1, "{tcp:?}");
        let udp = r.endpoints[1].counters;
        assert_eq!(udp.down, n, "{udp:?}");
        assert_eq!(udp.errors, 0);
        assert_eq!(udp_got, n, "the UDP tool got every frame");
        let dead_c = r.endpoints[2].counters;
        assert!(dead_c.errors > 0, "ICMP unreachable counted: {dead_c:?}");
    }

    /// Issue #13: a tool may not flood the radio: beyond the burst, frames are dropped and
    /// counted per endpoint.
    #[test]
    fn tools_are_rate_limited_up_the_radio() {
        let mut r = Router::open(&["udpin:127.0.0.1:0".to_owned()]).unwrap();
        let to = r.endpoints[0].local.unwrap();
        let tool = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut framer = Framer::new(255, 190, None);
        for _ in 0..100 {
            let f = framer
                .frame(&heartbeat(
                    MavType::MAV_TYPE_GCS,
                    MavState::MAV_STATE_ACTIVE,
                ))
                .to_vec();
            tool.send_to(&f, to).unwrap();
        }
        let mut sent = 0;
        let mut up = |_: &MAVLinkMessageRaw| {
            sent += 1;
            true
        };
        for _ in 0..10 {
            r.pump(&mut up);
        }
        let c = r.endpoints[0].counters;
        assert_eq!(c.up + c.up_dropped, 100, "{c:?}");
        assert!(c.up <= UP_BURST as u64 + 2, "{c:?}");
        assert_eq!(sent, c.up);
        // The tool is now the peer: frames from the air go back to it.
        assert_eq!(r.endpoints[0].clients(), vec![tool.local_addr().unwrap()]);
    }
}
