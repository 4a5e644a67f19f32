//! Parties that are not our switch: phones, attackers and crowds.
//!
//! Each one is a small sans-IO state machine, as the switch is: fed the time
//! and the datagrams that reach its ports, polled for datagrams to send, its
//! next deadline and what it has to report. [`drive`] is the one event loop
//! that runs any of them on a simulated host, through the same [`SimNet`] the
//! switch uses, so NATs, link conditions and the capture apply to them alike.
//! All their randomness comes from a seed derived from the run's seed.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use switch::net::{DatagramSocket, Net};

use crate::net::SimNet;

pub mod attack;
pub mod phone;
mod sip;

/// A datagram an actor wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The local port it leaves from (one of [`Actor::ports`]).
    pub port: u16,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// A party in the simulated world.
pub trait Actor: Send {
    /// The UDP ports it binds when its host starts.
    fn ports(&self) -> Vec<u16>;
    /// A datagram arrived on `port`.
    fn handle_input(&mut self, now: Instant, port: u16, from: SocketAddr, data: &[u8]);
    /// The deadline of [`poll_timeout`](Self::poll_timeout) has passed.
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_event(&mut self) -> Option<ActorEvent>;
}

/// What the parties report, as the trace shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ActorEvent {
    /// The phone's REGISTER was accepted.
    PhoneRegistered { user: String, expires: u32 },
    /// The phone's REGISTER was refused or got no answer (`status` 0).
    PhoneRegistrationFailed { user: String, status: u16, reason: String },
    /// A call of the phone was answered (`direction` `out`, after `setup_ms`
    /// from its first INVITE) or it answered one (`in`).
    PhoneCallAnswered { call: String, direction: String, peer: String, setup_ms: u64 },
    /// A call of the phone failed before it was answered.
    PhoneCallFailed { call: String, direction: String, peer: String, status: u16, reason: String },
    /// A call of the phone ended; what its ear heard. `own` frames are the
    /// phone's own numbered pattern coming back (echo), `other` frames carry
    /// other phones' patterns (`heard` names whose), `lost` are gaps in the
    /// sequence of the pattern it heard most, `plain` frames are audio
    /// without a pattern (music, tones).
    PhoneCallEnded {
        call: String,
        direction: String,
        peer: String,
        by: String,
        sent: u64,
        received: u64,
        own: u64,
        other: u64,
        heard: Vec<String>,
        lost: u64,
        plain: u64,
        first_audio_ms: Option<u64>,
    },
    /// An attacker's or crowd's totals, at the end of its run (see [`attack`]).
    AttackReport {
        kind: String,
        sent: u64,
        answered: u64,
        #[serde(flatten)]
        values: BTreeMap<String, u64>,
        /// How many users (scanner) or passwords (cracker) it found, and which.
        found: u64,
        found_items: Vec<String>,
    },
}

impl ActorEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ActorEvent::PhoneRegistered { .. } => "phone_registered",
            ActorEvent::PhoneRegistrationFailed { .. } => "phone_registration_failed",
            ActorEvent::PhoneCallAnswered { .. } => "phone_call_answered",
            ActorEvent::PhoneCallFailed { .. } => "phone_call_failed",
            ActorEvent::PhoneCallEnded { .. } => "phone_call_ended",
            ActorEvent::AttackReport { .. } => "attack_report",
        }
    }
}

/// The event names actors report, for scenario validation and the docs.
pub const ACTOR_EVENTS: &[&str] = &[
    "phone_registered",
    "phone_registration_failed",
    "phone_call_answered",
    "phone_call_failed",
    "phone_call_ended",
    "attack_report",
];

/// The wildcard address of `ip`'s family.
pub(crate) fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Runs `actor` on the current simulated host until the simulation ends.
pub async fn drive_simulated(net: SimNet, actor: Box<dyn Actor>, sink: impl Fn(ActorEvent)) -> io::Result<()> {
    let any = unspecified(net.address()?);
    drive(&net, any, actor, sink).await
}

/// Runs `actor` with its ports bound on `ip`, over any [`Net`]: the
/// simulator's, or the host's real sockets (`switch::net::TokioNet`), so an
/// actor can be checked live against the real party it stands for. Returns
/// when every socket has failed.
pub async fn drive<N: Net>(net: &N, ip: IpAddr, mut actor: Box<dyn Actor>, sink: impl Fn(ActorEvent)) -> io::Result<()>
where
    N::Socket: 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u16, SocketAddr, Vec<u8>)>();
    let mut sockets = BTreeMap::new();
    for port in actor.ports() {
        let socket = Arc::new(net.bind_udp(SocketAddr::new(ip, port)).await?);
        let (reader, tx) = (socket.clone(), tx.clone());
        // One reader per socket; turmoil runs them all on this host's thread,
        // in a fixed order, so the interleaving is the same every run.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, from)) = reader.recv_from(&mut buf).await {
                if tx.send((port, from, buf[..len].to_vec())).is_err() {
                    break;
                }
            }
        });
        sockets.insert(port, socket);
    }
    drop(tx);
    loop {
        while let Some(t) = actor.poll_transmit() {
            if let Some(socket) = sockets.get(&t.port) {
                // UDP: what cannot be sent is lost, as on a real network.
                let _ = socket.send_to(&t.payload, t.to).await;
            }
        }
        while let Some(e) = actor.poll_event() {
            sink(e);
        }
        let deadline = actor.poll_timeout().map(tokio::time::Instant::from_std);
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            received = rx.recv() => match received {
                Some((port, from, data)) => actor.handle_input(tokio::time::Instant::now().into_std(), port, from, &data),
                None => return Ok(()),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                if deadline.is_some() {
                    actor.handle_timeout(tokio::time::Instant::now().into_std());
                }
            }
        }
    }
}

/// A small deterministic identifier from the actor's name (call tags, SSRCs).
pub(crate) fn name_tag(name: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as u16
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
