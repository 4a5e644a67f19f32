//! What the SIP endpoint shows the operator, as data: `sip show
//! registrations`, `sip show channels`, `sip show gateways`, `sip show bans`
//! and its part of `show stats`. The control socket ([`crate::control`])
//! writes the text.

use super::*;
use crate::protocol::BanView;
pub use crate::sip::ports::PortUsage;

/// One registered contact, for `sip show registrations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipRegistrationView {
    pub user: String,
    pub contact: String,
    /// Where the REGISTER came from.
    pub source: SocketAddr,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// One call of `sip show channels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipChannelView {
    pub id: u32,
    pub call_id: String,
    /// Where its RTP goes.
    pub media: SocketAddr,
    /// `PCMU` or `PCMA`.
    pub codec: &'static str,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Seconds since it started.
    pub seconds: u64,
}

/// One upstream registration, for `sip show gateways`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayView {
    pub name: String,
    /// The configured host, and its address once resolved.
    pub host: String,
    pub server: Option<SocketAddr>,
    pub username: String,
    /// `Registered`, `Failed`, ...
    pub state: &'static str,
    /// While registered: seconds left.
    pub expires_in: Option<u64>,
}

/// SIP's counters for `show stats`.
#[derive(Clone, Debug)]
pub struct SipStatsView {
    pub counters: SipStats,
    pub transactions: usize,
    pub calls: usize,
    pub rtp_ports: PortUsage,
}

impl SipEndpoint {
    /// The live bindings, by user.
    pub fn registrations(&self, now: Instant) -> Vec<SipRegistrationView> {
        let mut out = Vec::new();
        for (user, bindings) in self.registrar.iter() {
            for b in bindings.iter().filter(|b| b.expires_at > now) {
                out.push(SipRegistrationView {
                    user: user.to_string(),
                    contact: b.contact.clone(),
                    source: b.source,
                    expires_in: b.expires_at.saturating_duration_since(now).as_secs(),
                });
            }
        }
        out
    }

    /// The calls in progress, by call number.
    pub fn channels(&self, now: Instant) -> Vec<SipChannelView> {
        self.calls
            .values()
            .map(|call| SipChannelView {
                id: call.id,
                call_id: call.dialog.call_id.clone(),
                media: call.media.destination(),
                codec: codec_name(call.media.codec),
                packets_sent: call.media.packets_sent,
                packets_received: call.media.packets_received,
                seconds: now.saturating_duration_since(call.started).as_secs(),
            })
            .collect()
    }

    /// The `[sip.gateways.NAME]` registrations, in configuration order.
    pub fn gateways(&self, now: Instant) -> Vec<GatewayView> {
        self.gateways
            .iter()
            .map(|g| GatewayView {
                name: g.gateway.name.clone(),
                host: g.gateway.host.clone(),
                server: g.server,
                username: g.gateway.username.clone(),
                state: g.state.name(),
                expires_in: match &g.state {
                    GatewayState::Registered { until } => Some(until.saturating_duration_since(now).as_secs()),
                    _ => None,
                },
            })
            .collect()
    }

    /// The counters of `show stats`.
    pub fn stats_view(&self) -> SipStatsView {
        SipStatsView {
            counters: self.stats.clone(),
            transactions: self.txns.len(),
            calls: self.calls.len(),
            rtp_ports: self.ports.usage(),
        }
    }

    /// Sources banned after failed authentication (`sip show bans`).
    pub fn bans(&self, now: Instant) -> Vec<BanView> {
        BanView::list(&self.guard, now)
    }
}
