//! A hostile network on loopback, for the integration tests of both binaries and for `cargo
//! xtask bench --hostile`: many connections that never finish their request head (slowloris)
//! or their TLS handshake, from one or many peer addresses (Linux routes all of 127/8 to
//! loopback), held open while one legitimate request is timed. Blocking std sockets: the
//! attack must not depend on the runtime of what it attacks.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// What each held connection sends before it stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// An HTTP request head without its final empty line.
    HalfHead,
    /// The first bytes of a TLS ClientHello record, never the rest.
    TlsHello,
    /// Nothing at all after connecting.
    Silent,
}

impl Stall {
    fn bytes(self) -> &'static [u8] {
        match self {
            Stall::HalfHead => b"GET / HTTP/1.1\r\nHost: x\r\n",
            // Record header (handshake, TLS 1.0 record version, 512 bytes) and the start of a
            // ClientHello: the server waits for the other 508 bytes.
            Stall::TlsHello => b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc",
            Stall::Silent => b"",
        }
    }
}

/// Connections held open until dropped (those the kernel or the server refused while opening
/// are left out).
#[derive(Debug)]
pub struct Held {
    streams: Vec<TcpStream>,
}

impl Held {
    /// How many of the held connections the server has not closed (a read would not see EOF).
    pub fn still_open(&mut self) -> usize {
        let mut open = 0;
        for s in &mut self.streams {
            let _ = s.set_nonblocking(true);
            let mut b = [0u8; 1];
            if matches!(s.read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                open += 1;
            }
        }
        open
    }
}

/// The loopback addresses 127.0.0.1 … 127.0.0.`n`.
pub fn loopback_peers(n: u8) -> Vec<Ipv4Addr> {
    (1..=n.max(1))
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect()
}

/// Opens `count` connections to `target`, spread round-robin over `peers`, each sending
/// `stall`'s bytes and then nothing.
pub fn hold(target: SocketAddr, peers: &[Ipv4Addr], count: usize, stall: Stall) -> Held {
    let mut held = Held {
        streams: Vec::with_capacity(count),
    };
    for i in 0..count {
        let peer = peers[i % peers.len().max(1)];
        let stalled = connect_from(peer, target).and_then(|mut s| {
            s.write_all(stall.bytes())?;
            Ok(s)
        });
        held.streams.extend(stalled.ok());
    }
    held
}

fn connect_from(peer: Ipv4Addr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((peer, 0)).into())?;
    socket.connect_timeout(&target.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// Sends `request` (a whole HTTP/1.1 request with `Connection: close`) from 127.0.0.1 and
/// reads the answer to its end. Returns the time to the complete answer and the status code.
pub fn timed_request(
    target: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> io::Result<(Duration, u16)> {
    let started = Instant::now();
    let mut s = connect(target, timeout)?;
    let answer = exchange(&mut s, request)?;
    Ok((started.elapsed(), status_of(&answer)?))
}

/// As [`timed_request`], over TLS to a server whose certificate is `cert` (DER, from
/// [`SelfSigned`]), for the name `localhost`.
pub fn timed_tls_request(
    target: SocketAddr,
    cert: &[u8],
    request: &[u8],
    timeout: Duration,
) -> io::Result<(Duration, u16)> {
    let invalid = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.to_vec()))
        .map_err(invalid)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost")
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let started = Instant::now();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(invalid)?;
    let mut tls = rustls::StreamOwned::new(conn, connect(target, timeout)?);
    let answer = exchange(&mut tls, request)?;
    Ok((started.elapsed(), status_of(&answer)?))
}

fn connect(target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&target, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

fn exchange(s: &mut impl ReadWrite, request: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(request)?;
    let mut answer = Vec::new();
    // A TLS peer that closes without close_notify is an error after a complete answer.
    match s.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        Err(_) if !answer.is_empty() => Ok(answer),
        Err(e) => Err(e),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn status_of(answer: &[u8]) -> io::Result<u16> {
    answer
        .get(9..12)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status line"))
}

/// A self-signed server certificate for `localhost` and 127.0.0.1, written as `server.pem`
/// and `server.key` into a directory, for the servers under test.
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate in DER, for [`timed_tls_request`].
    pub der: Vec<u8>,
}

impl SelfSigned {
    pub fn write_into(dir: &Path) -> io::Result<SelfSigned> {
        let other = |e: rcgen::Error| io::Error::other(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(other)?;
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(other)?
                .self_signed(&key)
                .map_err(other)?;
        std::fs::write(dir.join("server.pem"), cert.pem())?;
        std::fs::write(dir.join("server.key"), key.serialize_pem())?;
        Ok(SelfSigned {
            der: cert.der().to_vec(),
        })
    }
}

/// The web configuration (exporter-toolkit) that serves `server.pem`/`server.key` of the same
/// directory: the format pi-exporter, alert-relay and node_exporter read.
pub const TLS_WEB_CONFIG: &str =
    "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

/// Input no server should choke on, each named: garbage, a TLS record on a plain port, a
/// 200 kB header, a 100 kB request line, a NUL in the request line, a missing Host.
pub fn malformed_requests() -> Vec<(&'static str, Vec<u8>)> {
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    vec![
        ("garbage", b"\x00\xff\x13garbage\r\n\r\n".to_vec()),
        (
            "a TLS ClientHello on a plain port",
            Stall::TlsHello.bytes().repeat(64),
        ),
        ("a 200 kB header", big_header.into_bytes()),
        ("a 100 kB request line", long_line.into_bytes()),
        (
            "a NUL in the request line",
            b"GET /\0 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        ),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec()),
    ]
}

/// Sends `bytes` and reads what comes back until the server closes or 5 s pass: the status
/// of an answer, or `None` when the server closed without one. A reset counts as closed.
pub fn send_raw(target: SocketAddr, bytes: &[u8]) -> io::Result<Option<u16>> {
    let mut s = connect(target, Duration::from_secs(5))?;
    // The server may close before reading everything it was sent.
    let _ = s.write_all(bytes);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    Ok(status_of(&answer).ok())
}

/// `GET path` with `Connection: close` and extra header lines (each ending in `\r\n`).
pub fn get(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

/// The peak resident set (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
