//! The listen address syntax of `--web.listen-address`, shared by the server (`http`), the
//! doctor's exposure check and the flags (`cli`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A `--web.listen-address` value. `:9831` (no host) means every interface, as in Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    AllInterfaces(u16),
    Socket(SocketAddr),
}

impl ListenAddress {
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(port) = text.strip_prefix(':') {
            return port
                .parse()
                .map(Self::AllInterfaces)
                .map_err(|_| format!("invalid port in {text:?}"));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Socket(addr));
        }
        // `localhost:9831`: the only host name worth resolving without DNS.
        if let Some(port) = text.strip_prefix("localhost:") {
            let port = port
                .parse()
                .map_err(|_| format!("invalid port in {text:?}"))?;
            return Ok(Self::Socket(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
        Err(format!(
            "{text:?} is not HOST:PORT or :PORT (host must be an IP address or localhost)"
        ))
    }

    /// Addresses to try, in order: all interfaces is IPv6 dual-stack, else IPv4 where IPv6 is off.
    pub fn candidates(self) -> Vec<SocketAddr> {
        match self {
            Self::AllInterfaces(port) => vec![
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            ],
            Self::Socket(addr) => vec![addr],
        }
    }
}
