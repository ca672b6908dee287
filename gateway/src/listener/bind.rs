//! Binding listening sockets: one per worker with SO_REUSEPORT so the kernel spreads connections
//! across workers without a shared accept lock.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog for every listener.
pub const BACKLOG: i32 = 4096;

/// Bind `count` sockets to `addr` with SO_REUSEPORT. Port 0 picks a free port once and binds
/// the others to the same one. IPv6 addresses are dual-stack where the OS allows.
///
/// # Errors
/// The bind error, e.g. the address is in use.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let s = socket(addr)?;
        if addr.port() == 0 {
            addr = s.local_addr()?;
        }
        out.push(s);
    }
    Ok(out)
}

fn socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // Dual stack for [::]: accept IPv4 too.
        let _ = s.set_only_v6(false);
    }
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}
