//! Listeners and streams for every [`Address`] kind on smol: vsock (an `AF_VSOCK` socket in
//! `async_io::Async`), TCP and Unix sockets.

use std::io;
use std::path::Path;

use async_io::Async;
use kmstool_core::address::{Address, UNIX_PEER, vsock_peer};
use smol::io::{AsyncRead, AsyncWrite};
use smol::net::unix::{UnixListener, UnixStream};
use smol::net::{TcpListener, TcpStream};

/// A connected stream of any kind.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
    /// vsock. The connected socket is held as a `UnixStream`: reads and writes on a stream
    /// socket are the same system calls whatever its family, and `async-io` only drives
    /// socket types it knows to be IO-safe.
    Vsock(Async<std::os::unix::net::UnixStream>),
}

/// A listening socket of any kind.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket.
    Unix(UnixListener),
    /// vsock.
    Vsock(Async<vsock::VsockListener>),
}

impl Listener {
    /// Binds `address`. A stale Unix socket file is replaced.
    pub async fn bind(address: &Address) -> io::Result<Self> {
        match address {
            Address::Tcp { host, port } => {
                Ok(Self::Tcp(TcpListener::bind((host.as_str(), *port)).await?))
            }
            Address::Unix(path) => Ok(Self::Unix(UnixListener::bind(unlink_stale(path)?)?)),
            Address::Vsock { cid, port } => {
                let listener = vsock::VsockListener::bind_with_cid_port(*cid, *port)?;
                Ok(Self::Vsock(Async::new(listener)?))
            }
        }
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_address(&self) -> io::Result<Address> {
        match self {
            Self::Tcp(l) => Ok(l.local_addr()?.into()),
            Self::Unix(l) => Address::unix_bound(l.local_addr()?.as_pathname()),
            Self::Vsock(l) => {
                let addr = l.get_ref().local_addr()?;
                Ok(Address::vsock(addr.cid(), addr.port()))
            }
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
                let (s, peer) = l.read_with(|l| l.accept()).await?;
                Ok((Stream::vsock(s)?, vsock_peer(peer.cid(), peer.port())))
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
        Address::Vsock { cid, port } => {
            let (cid, port) = (*cid, *port);
            // The vsock crate connects blocking; keep it off the executor.
            let stream =
                smol::unblock(move || vsock::VsockStream::connect_with_cid_port(cid, port)).await?;
            Stream::vsock(stream)
        }
    }
}

impl Stream {
    /// A TCP stream, with Nagle's algorithm off: a request or an answer is one small write.
    fn tcp(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self::Tcp(stream))
    }

    /// A vsock stream, held as a `UnixStream` (see [`Stream::Vsock`]).
    fn vsock(stream: vsock::VsockStream) -> io::Result<Self> {
        let fd = std::os::fd::OwnedFd::from(stream);
        let stream = std::os::unix::net::UnixStream::from(fd);
        Ok(Self::Vsock(Async::new(stream)?))
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
        fn poll_read(buf: &mut [u8]) -> usize;
    }
}

impl AsyncWrite for Stream {
    kmstool_core::forward_to_socket! {
        fn poll_write(buf: &[u8]) -> usize;
        fn poll_flush() -> ();
        fn poll_close() -> ();
    }
}
