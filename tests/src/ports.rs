//! Ports held for the length of a test, so that no other process can take them meanwhile.

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// A TCP port on 127.0.0.1 where nothing answers: a socket is bound to it and never
/// listens, so connections to it are refused, and no other socket can bind the port while
/// this guard lives (a port bound and released instead could be taken by anyone, and then
/// something would answer).
#[derive(Debug)]
pub struct ClosedPort {
    _socket: Socket,
    port: u16,
}

impl ClosedPort {
    /// Binds a fresh port and holds it.
    pub fn new() -> Self {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .expect("creating a TCP socket");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("binding a port on 127.0.0.1");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .expect("the bound address")
            .port();
        Self {
            _socket: socket,
            port,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}
