//! What the IAX2 endpoint shows the operator, as data: `iax2 show peers`,
//! `iax2 show registry`, `iax2 show channels`, `iax2 show bans` and its part
//! of `show stats`. The control socket ([`crate::control`]) writes the text.

use super::*;
use crate::iax2::call::CallState;
use crate::iax2::subclass::format;
use crate::protocol::BanView;

/// One peer of `iax2 show peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub name: String,
    /// Where it is now (static host, or its registration); `None`: unknown.
    pub addr: Option<SocketAddr>,
    /// `host=dynamic`.
    pub dynamic: bool,
    /// Its qualify state and last round trip; `None`: not qualified (`qualify=no`).
    pub qualify: Option<(PeerState, Option<u32>)>,
    pub description: String,
}

/// One of our registrations, for `iax2 show registry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryView {
    /// The server's address, or the `register =>` host while unresolved.
    pub host: String,
    pub username: String,
    /// Our address as the server sees it (REGACK's APPARENT ADDR).
    pub perceived: Option<SocketAddr>,
    /// While registered: the granted refresh, and the seconds it has left.
    pub refresh: Option<(u16, u64)>,
    /// `Registered`, `Rejected`, ...
    pub state: &'static str,
}

/// One call of `iax2 show channels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelView {
    /// Our call number.
    pub call: u16,
    /// `Inbound` or `Outbound`.
    pub direction: &'static str,
    pub peer: Option<String>,
    pub remote: SocketAddr,
    pub state: CallState,
    /// The negotiated format's name, once there is one.
    pub format: Option<&'static str>,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub lost: u64,
}

/// IAX2's counters for `show stats`.
#[derive(Clone, Debug)]
pub struct IaxStatsView {
    pub counters: Stats,
    pub call_numbers_in_use: usize,
}

impl Endpoint {
    /// The configured peers (not users), in configuration order.
    pub fn peers(&self) -> Vec<PeerView> {
        let peers = self.config.peers.iter().filter(|p| p.kind.is_peer());
        peers
            .map(|peer| PeerView {
                name: peer.name.clone(),
                addr: self.peer_addr(&peer.name),
                dynamic: matches!(peer.host, Host::Dynamic { .. }),
                qualify: self.qualify.get(&peer.name).map(|q| (q.state, q.latency_ms)),
                description: peer.description.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Our registrations (`register =>`), in configuration order.
    pub fn registry(&self, now: Instant) -> Vec<RegistryView> {
        self.registrations
            .iter()
            .map(|reg| RegistryView {
                host: reg.server.map_or_else(|| reg.label(), |a| a.to_string()),
                username: reg.line.username.clone(),
                perceived: reg.apparent,
                refresh: match reg.state {
                    RegState::Registered { refresh, until } => {
                        Some((refresh, until.saturating_duration_since(now).as_secs()))
                    }
                    _ => None,
                },
                state: reg.state.name(),
            })
            .collect()
    }

    /// The calls in progress, by call number.
    pub fn channels(&self) -> Vec<ChannelView> {
        self.dialogs
            .iter()
            .filter_map(|(local, e)| {
                let Role::Call(c) = &e.role else { return None };
                (!e.dialog.is_finished()).then(|| ChannelView {
                    call: *local,
                    direction: c.direction.name(),
                    peer: c.peer.clone(),
                    remote: e.dialog.remote_addr,
                    state: c.state,
                    format: format::name(c.format),
                    frames_sent: c.stats.frames_sent,
                    frames_received: c.stats.frames_received,
                    lost: c.stats.lost,
                })
            })
            .collect()
    }

    /// The counters of `show stats`.
    pub fn stats_view(&self) -> IaxStatsView {
        IaxStatsView { counters: self.stats.clone(), call_numbers_in_use: self.callnos.in_use() }
    }

    /// Sources banned after failed authentication (`iax2 show bans`).
    pub fn bans(&self, now: Instant) -> Vec<BanView> {
        BanView::list(&self.guard, now)
    }
}
