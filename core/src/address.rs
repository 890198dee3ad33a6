//! Socket addresses as kmstool's command lines spell them: `vsock:CID:PORT`,
//! `tcp:HOST:PORT`, `unix:PATH`. Parsing is shared by both runtimes; they do the connecting.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The CID of the parent instance as seen from an enclave.
pub const PARENT_CID: u32 = 3;
/// `VMADDR_CID_ANY`: listen on every CID.
pub const ANY_CID: u32 = u32::MAX;

/// Where to listen or connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// AF_VSOCK. Ports are 32 bits (the upstream C stack once broke above 65535).
    Vsock {
        /// Context id (3 = parent, `u32::MAX` = any).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// TCP; `host` is a name or an IP literal (IPv6 without brackets).
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix stream socket.
    Unix(PathBuf),
}

/// An address that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address {:?}: {} (expected vsock:CID:PORT, tcp:HOST:PORT or unix:PATH)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for AddressError {}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| AddressError {
            input: input.to_owned(),
            reason,
        };
        let (scheme, rest) = input.split_once(':').ok_or_else(|| error("no scheme"))?;
        match scheme {
            "vsock" => {
                let (cid, port) = rest.split_once(':').ok_or_else(|| error("no port"))?;
                let cid = match cid {
                    "any" | "-1" => ANY_CID,
                    "parent" => PARENT_CID,
                    _ => cid
                        .parse()
                        .map_err(|_| error("CID is not a 32-bit number"))?,
                };
                let port = port
                    .parse()
                    .map_err(|_| error("port is not a 32-bit number"))?;
                Ok(Self::Vsock { cid, port })
            }
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| error("no port"))?;
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                if host.is_empty() {
                    return Err(error("empty host"));
                }
                if host.contains(':') && !rest.starts_with('[') {
                    return Err(error("put an IPv6 host in brackets"));
                }
                let port = port
                    .parse()
                    .map_err(|_| error("port is not a 16-bit number"))?;
                Ok(Self::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            "unix" if !rest.is_empty() => Ok(Self::Unix(PathBuf::from(rest))),
            "unix" => Err(error("empty path")),
            _ => Err(error("unknown scheme")),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Self::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Self::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for Address {
    /// The TCP address of a socket, as its listener reports it.
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl Address {
    /// A vsock address, from a socket's CID and port.
    pub const fn vsock(cid: u32, port: u32) -> Self {
        Self::Vsock { cid, port }
    }

    /// The address of a bound Unix socket, from its path as the listener reports it; an
    /// unnamed socket (no path) has no address kmstool can name.
    pub fn unix_bound(path: Option<&Path>) -> io::Result<Self> {
        let path = path.ok_or_else(|| io::Error::other("unnamed unix socket"))?;
        Ok(Self::Unix(path.to_owned()))
    }
}

/// How a connection's peer on a Unix socket is logged (its address is mostly unnamed).
pub const UNIX_PEER: &str = "unix";

/// How a connection's peer on vsock is logged: `vsock:CID:PORT`.
pub fn vsock_peer(cid: u32, port: u32) -> String {
    Address::vsock(cid, port).to_string()
}

/// Writes the `poll_*` methods of an IO trait for an enum with one variant per [`Address`]
/// kind — `Tcp`, `Unix` and `Vsock`, each holding a socket of that kind — so that each method
/// forwards to whichever socket the value holds. Both runtimes' `Stream`s use it for their own
/// `AsyncRead` and `AsyncWrite` traits (the trait must be in scope), so that the list of
/// kinds, and how a call reaches each, is written once. Each method is named with its
/// arguments after the context and the type its `io::Result` carries:
///
/// ```ignore
/// impl AsyncWrite for Stream {
///     kmstool_core::forward_to_socket! {
///         fn poll_write(buf: &[u8]) -> usize;
///         fn poll_flush() -> ();
///     }
/// }
/// ```
#[macro_export]
macro_rules! forward_to_socket {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(
            fn $name(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                $($arg: $ty),*
            ) -> ::std::task::Poll<::std::io::Result<$out>> {
                match self.get_mut() {
                    Self::Tcp(socket) => ::std::pin::Pin::new(socket).$name(cx, $($arg),*),
                    Self::Unix(socket) => ::std::pin::Pin::new(socket).$name(cx, $($arg),*),
                    Self::Vsock(socket) => ::std::pin::Pin::new(socket).$name(cx, $($arg),*),
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(
            "vsock:3:8000".parse(),
            Ok(Address::Vsock { cid: 3, port: 8000 })
        );
        assert_eq!(
            "vsock:16:4294967295".parse(),
            Ok(Address::Vsock {
                cid: 16,
                port: u32::MAX
            })
        );
        assert_eq!(
            "vsock:any:5000".parse(),
            Ok(Address::Vsock {
                cid: ANY_CID,
                port: 5000
            })
        );
        assert_eq!(
            "tcp:127.0.0.1:5000".parse(),
            Ok(Address::Tcp {
                host: "127.0.0.1".into(),
                port: 5000
            })
        );
        assert_eq!(
            "tcp:[::1]:443".parse(),
            Ok(Address::Tcp {
                host: "::1".into(),
                port: 443
            })
        );
        assert_eq!(
            "unix:/run/kms.sock".parse(),
            Ok(Address::Unix("/run/kms.sock".into()))
        );
    }

    #[test]
    fn round_trips_through_display() {
        for text in [
            "vsock:3:8000",
            "tcp:localhost:1",
            "tcp:[::1]:443",
            "unix:/tmp/a b",
        ] {
            let address: Address = text.parse().expect(text);
            assert_eq!(address.to_string(), text);
        }
    }

    #[test]
    fn names_bound_sockets_and_peers() {
        let tcp: SocketAddr = "[::1]:443".parse().expect("literal");
        assert_eq!(
            Address::from(tcp),
            Address::Tcp {
                host: "::1".into(),
                port: 443
            }
        );
        assert_eq!(
            Address::unix_bound(Some(Path::new("/run/k.sock"))).ok(),
            Some(Address::Unix("/run/k.sock".into()))
        );
        let unnamed = Address::unix_bound(None).expect_err("unnamed");
        assert_eq!(unnamed.to_string(), "unnamed unix socket");
        assert_eq!(vsock_peer(16, 5000), "vsock:16:5000");
        assert_eq!(UNIX_PEER, "unix");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "3:8000",
            "vsock:3",
            "vsock:x:1",
            "vsock:3:-1",
            "vsock:3:4294967296",
            "tcp:host",
            "tcp::80",
            "tcp:::1:80",
            "tcp:h:65536",
            "unix:",
            "http://x",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
