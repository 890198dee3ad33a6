//! Listeners and streams for every [`Address`] kind: vsock (production), TCP and Unix
//! sockets (development, tests, and a parent-side proxy on TCP).

use std::io;
use std::path::Path;

use kmstool_core::address::{Address, UNIX_PEER, vsock_peer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

/// A connected stream of any kind.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
    /// vsock.
    Vsock(VsockStream),
}

/// A listening socket of any kind.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket.
    Unix(UnixListener),
    /// vsock.
    Vsock(VsockListener),
}

impl Listener {
    /// Binds `address`. A stale Unix socket file is replaced.
    pub async fn bind(address: &Address) -> io::Result<Self> {
        match address {
            Address::Tcp { host, port } => {
                Ok(Self::Tcp(TcpListener::bind((host.as_str(), *port)).await?))
            }
            Address::Unix(path) => Ok(Self::Unix(UnixListener::bind(unlink_stale(path)?)?)),
            Address::Vsock { cid, port } => Ok(Self::Vsock(VsockListener::bind(VsockAddr::new(
                *cid, *port,
            ))?)),
        }
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_address(&self) -> io::Result<Address> {
        match self {
            Self::Tcp(l) => Ok(l.local_addr()?.into()),
            Self::Unix(l) => Address::unix_bound(l.local_addr()?.as_pathname()),
            Self::Vsock(l) => l.local_addr().map(|a| Address::vsock(a.cid(), a.port())),
        }
    }

    /// Waits for a connection; returns it with a printable peer address.
    pub async fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::tcp(s)?, peer.to_string()))
            }
            Self::Unix(l) => Ok((Stream::Unix(l.accept().await?.0), UNIX_PEER.to_owned())),
            Self::Vsock(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Vsock(s), vsock_peer(peer.cid(), peer.port())))
            }
        }
    }
}

/// Connects to `address`.
pub async fn connect(address: &Address) -> io::Result<Stream> {
    match address {
        Address::Tcp { host, port } => {
            Stream::tcp(TcpStream::connect((host.as_str(), *port)).await?)
        }
        Address::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        Address::Vsock { cid, port } => Ok(Stream::Vsock(
            VsockStream::connect(VsockAddr::new(*cid, *port)).await?,
        )),
    }
}

impl Stream {
    /// A TCP stream, with Nagle's algorithm off: a request or an answer is one small write.
    fn tcp(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self::Tcp(stream))
    }
}

/// Removes a Unix socket file left by an earlier server at `path`, so that `path` can be bound.
fn unlink_stale(path: &Path) -> io::Result<&Path> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    Ok(path)
}

impl AsyncRead for Stream {
    kmstool_core::forward_to_socket! {
        fn poll_read(buf: &mut ReadBuf<'_>) -> ();
    }
}

impl AsyncWrite for Stream {
    kmstool_core::forward_to_socket! {
        fn poll_write(buf: &[u8]) -> usize;
        fn poll_flush() -> ();
        fn poll_shutdown() -> ();
    }
}
