//! The only thing that differs between a live and a simulated switch: the
//! network underneath the event loop.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// A UDP socket as the event loop needs it.
///
/// `recv_from` must be cancel-safe: the event loop races it against timers.
pub trait DatagramSocket: Send + Sync + 'static {
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> impl Future<Output = io::Result<usize>> + Send;
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    /// A datagram already waiting, or [`io::ErrorKind::WouldBlock`]: the
    /// event loop takes a burst in one go after `recv_from` returned.
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// A network the switch can bind sockets on and resolve host names in.
pub trait Net: Send + Sync + 'static {
    type Socket: DatagramSocket;
    fn bind_udp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Socket>> + Send;
    /// A call's media socket. Many come and go, one pair per call, so the
    /// large receive buffer (and its warning) of [`Net::bind_udp`] is not
    /// wanted; by default it is the same.
    fn bind_media(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Socket>> + Send {
        self.bind_udp(addr)
    }
    /// Resolves a host name or address literal to its addresses, in a stable order.
    fn resolve(&self, host: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;
    /// Seconds since the UNIX epoch, now: the civil time the world tells the
    /// switch (DATETIME IEs). The protocol cores never read a system clock;
    /// a simulated world answers from its own clock, so runs stay reproducible.
    fn unix_time(&self) -> u64;
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn send_to(&self, buf: &[u8], target: SocketAddr) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, buf, target)
    }
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        tokio::net::UdpSocket::try_recv_from(self, buf)
    }
}

/// Receive buffer asked for on the IAX2 socket. A trunk tick of 800 calls is
/// 115 datagrams of ~1.2 kB sent back to back; Linux's default buffer
/// (212992 bytes) holds 92 of them, and the kernel silently drops the rest.
pub const RECV_BUFFER: usize = 4 << 20;

/// The host's real network, through tokio.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioNet;

impl Net for TokioNet {
    type Socket = tokio::net::UdpSocket;

    fn unix_time(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Self::Socket> {
        let socket = tokio::net::UdpSocket::bind(addr).await?;
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(RECV_BUFFER);
        // Linux reports twice what it grants; anything below what we asked
        // means net.core.rmem_max capped it.
        match sock.recv_buffer_size() {
            Ok(granted) if granted < RECV_BUFFER => tracing::warn!(
                "UDP receive buffer is {granted} bytes, not {RECV_BUFFER}: bursts of trunk frames may be dropped \
                 by the kernel. Raise it with: sysctl -w net.core.rmem_max={RECV_BUFFER}"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the UDP receive buffer size: {e}"),
        }
        Ok(socket)
    }

    async fn bind_media(&self, addr: SocketAddr) -> io::Result<Self::Socket> {
        tokio::net::UdpSocket::bind(addr).await
    }

    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut ips: Vec<IpAddr> = tokio::net::lookup_host((host, 0)).await?.map(|a| a.ip()).collect();
        ips.dedup();
        Ok(ips)
    }
}
