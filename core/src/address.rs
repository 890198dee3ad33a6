//! Socket addresses as kmstool's command lines spell them: `vsock:CID:PORT`,
//! `tcp:HOST:PORT`, `unix:PATH`. Parsing is shared by both runtimes; they do the connecting.

use std::fmt;
use std::path::PathBuf;
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
