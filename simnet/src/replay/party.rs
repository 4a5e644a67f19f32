//! The one event loop of every scripted party (IAX2, SIP in either role).
//!
//! What differs per protocol — how a captured datagram is adapted to the
//! switch's answers, what waits for what — lives behind [`Party`], a sans-IO
//! state machine fed `(now, datagram)`, as the switch's own endpoints are.
//! This loop only owns the sockets and the clock: it asks the party what is
//! due, sends it, and sleeps until the party's next deadline or the next
//! datagram from the switch.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use switch::net::{DatagramSocket, Net};

use crate::SimNet;

/// A datagram to send: from which media port (`None`: the signalling
/// socket), to where, what.
pub(crate) type Out = (Option<u16>, SocketAddr, Vec<u8>);

/// A scripted party, sans IO.
pub(crate) trait Party {
    /// Decides what is due by `now` (captured datagrams, adapted; answers
    /// to the switch's requests) and queues it.
    fn due(&mut self, now: Duration);
    /// What to send now, in order.
    fn take_out(&mut self) -> Vec<Out>;
    /// When `due` should run next, absent a datagram.
    fn next_deadline(&self) -> Option<Duration>;
    /// A datagram from the switch's signalling address.
    fn received(&mut self, now: Duration, bytes: &[u8]);
    /// IAX2 reads every datagram that arrived in one instant before reacting,
    /// as a peer's event loop would (its ACKs then acknowledge the last of
    /// them); SIP user agents react to each.
    const READS_BURSTS: bool = false;
    /// Called after such a burst was read.
    fn burst_read(&mut self, _now: Duration) {}
}

/// Where the party listens.
pub(crate) struct Sockets {
    pub net: SimNet,
    /// The address family of the switch.
    pub v4: bool,
    /// The signalling port (the captured one).
    pub port: u16,
    /// Media ports, each with what to do per datagram received on it.
    pub media: Vec<(u16, Arc<dyn Fn() + Send + Sync>)>,
    /// Only datagrams from this address are the switch's.
    pub switch_ip: IpAddr,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Runs `party` until the simulation ends.
pub(crate) async fn run<P: Party>(s: Sockets, mut party: P) -> Result<(), Box<dyn std::error::Error>> {
    let any = if s.v4 { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    let signalling = s.net.bind_udp(SocketAddr::new(any, s.port)).await?;
    let mut media = BTreeMap::new();
    for (port, on_receive) in s.media {
        let socket = Arc::new(s.net.bind_udp(SocketAddr::new(any, port)).await?);
        let rx = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while rx.recv_from(&mut buf).await.is_ok() {
                on_receive();
            }
        });
        media.insert(port, socket);
    }
    let start = tokio::time::Instant::now();
    let mut buf = vec![0u8; 65_535];
    loop {
        party.due(now());
        for (port, to, bytes) in party.take_out() {
            let sent = match port.and_then(|p| media.get(&p)) {
                Some(socket) => socket.send_to(&bytes, to).await,
                None => signalling.send_to(&bytes, to).await,
            };
            if let Err(e) = sent {
                tracing::warn!("replay: cannot send to {to}: {e}");
            }
        }
        let deadline = party.next_deadline().map(|d| start + d);
        tokio::select! {
            received = signalling.recv_from(&mut buf) => {
                let (len, from) = received?;
                if from.ip() == s.switch_ip {
                    party.received(now(), &buf[..len]);
                }
                if P::READS_BURSTS {
                    loop {
                        let more = tokio::select! {
                            biased;
                            received = signalling.recv_from(&mut buf) => Some(received?),
                            _ = std::future::ready(()) => None,
                        };
                        let Some((len, from)) = more else { break };
                        if from.ip() == s.switch_ip {
                            party.received(now(), &buf[..len]);
                        }
                    }
                    party.burst_read(now());
                }
            }
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
