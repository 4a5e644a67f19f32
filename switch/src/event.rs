//! What the switch reports about itself: the normalised event trace.
//!
//! Protocol cores push [`Event`]s; the runtime hands them to an [`EventSink`].
//! Live, the sink logs them; in the simulator it timestamps them with
//! simulated time for `events.jsonl`, reports and scenario expectations.
//! Events carry no wall-clock time and no random values that change between
//! seeds unless the value itself is the point, so traces can be pinned.

use serde::Serialize;
use std::net::{IpAddr, SocketAddr};

/// Peer reachability as `iax2 show peers` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerState {
    /// Qualified, but not yet poked (or no address known yet).
    Unknown,
    Ok,
    Lagged,
    Unreachable,
    Unmonitored,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerState::Unknown => "UNKNOWN",
            PeerState::Ok => "OK",
            PeerState::Lagged => "LAGGED",
            PeerState::Unreachable => "UNREACHABLE",
            PeerState::Unmonitored => "UNMONITORED",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The switch bound its socket and is serving.
    Started { bind: SocketAddr },
    /// Configuration (re)loaded; `problems` counts recognised-but-unsupported notes.
    ConfigLoaded { peers: usize, registrations: usize, problems: usize },
    /// A reload was refused; the running configuration stays.
    ConfigRejected { error: String },

    // Client role: our `register =>` lines.
    /// A REGREQ went out (`attempt` counts since the last success).
    RegistrationSent { server: String, username: String, attempt: u32 },
    /// REGACK received: registered for `refresh` seconds.
    Registered { server: String, username: String, refresh: u32 },
    /// REGREJ received; `cause` is the server's text.
    RegistrationRejected { server: String, username: String, cause: String },
    /// No answer to a REGREQ; the next try is in `retry_in_ms`.
    RegistrationTimeout { server: String, username: String, retry_in_ms: u64 },

    // Server role: peers registering to us.
    /// We sent REGACK to `peer`.
    PeerRegistered { peer: String, addr: SocketAddr, expiry: u32 },
    /// We sent REGREJ (or dropped the REGREQ, see `cause`).
    PeerRegistrationRefused { peer: String, addr: SocketAddr, cause: String },
    /// A registration expired or was released.
    PeerUnregistered { peer: String, reason: String },
    /// At start, a registration saved before the restart was taken back
    /// (`[state] dir`); `remaining_s` is what is left of it.
    PeerRestored { peer: String, addr: SocketAddr, remaining_s: u64 },

    // Qualify.
    /// The peer's reachability changed.
    PeerStateChanged { peer: String, from: PeerState, to: PeerState, latency_ms: Option<u32> },

    // Calls.
    /// A call began: an inbound NEW accepted for routing, or an outbound NEW sent.
    CallStarted { call: u16, direction: String, peer: String, exten: String, context: String, caller: String },
    /// The call was answered; media flows in `format`.
    CallAnswered { call: u16, format: String, encrypted: bool },
    /// The call was refused before it was answered (by us or by the far end).
    CallRejected { call: u16, direction: String, peer: String, exten: String, cause: String, code: u8 },
    /// The call ended, with its media statistics (frames we received).
    CallEnded {
        call: u16,
        direction: String,
        peer: String,
        cause: String,
        code: u8,
        duration_ms: u64,
        frames_sent: u64,
        frames_received: u64,
        lost: u64,
        reordered: u64,
        duplicated: u64,
        late: u64,
        concealed: u64,
        jitter_ms: u64,
        ts_irregular: u64,
    },
    /// A DTMF digit arrived on a call.
    Dtmf { call: u16, digit: String },

    // SIP (`[sip]` in switch.toml).
    /// A user's contact was bound (`expires` > 0) or removed (0).
    SipRegistered { user: String, contact: String, addr: SocketAddr, expires: u32 },
    /// A REGISTER was refused after authentication (status and reason as sent).
    SipRegistrationRefused { user: String, addr: SocketAddr, status: u16, reason: String },
    /// A request was challenged (401/407) or its credentials refused (403).
    /// `user` is what the credentials named; unknown and wrong look the same on the wire.
    SipAuthFailed { method: String, user: String, addr: SocketAddr, status: u16 },
    /// Every binding of a user expired or was removed.
    SipUnregistered { user: String, reason: String },
    /// An authenticated INVITE was routed; `call` numbers SIP calls in order.
    SipCallStarted { call: u32, user: String, exten: String, context: String, caller: String },
    /// We answered with 200 OK; media flows in `codec`.
    SipCallAnswered { call: u32, codec: String },
    /// The INVITE got a final error response from us, or was cancelled.
    SipCallRejected { call: u32, exten: String, status: u16, reason: String },
    /// The call ended; `cause` says how; RTP figures are RFC 3550's.
    SipCallEnded {
        call: u32,
        cause: String,
        duration_ms: u64,
        packets_sent: u64,
        packets_received: u64,
        lost: i64,
        duplicated: u64,
        jitter_ms: u64,
        /// Test-pattern frames missing (the `pattern` application's own count).
        pattern_lost: u64,
    },
    /// An RFC 4733 telephone-event ended on a SIP call.
    SipDtmf { call: u32, digit: String },
    /// Our registration to `[sip.gateways.NAME]` succeeded for `expires` seconds.
    SipGatewayRegistered { gateway: String, expires: u32 },
    /// The gateway refused our REGISTER (or challenged credentials it then refused).
    SipGatewayRefused { gateway: String, status: u16, retry_in_ms: u64 },
    /// The gateway did not answer our REGISTER.
    SipGatewayTimeout { gateway: String, retry_in_ms: u64 },
    /// A REGISTER showed the phone behind NAT (first time, or a new mapping):
    /// requests to `contact` go to `source`, and it gets keepalives.
    SipNatDetected { user: String, contact: String, source: SocketAddr },
    /// Strict RTP took `source` as the call's media source.
    RtpSourceLearned { call: u32, source: SocketAddr },
    /// At the end of a call: RTP from `source` that strict RTP dropped.
    /// `source` 0.0.0.0:0 sums the sources past the first eight.
    RtpSourceRefused { call: u32, source: SocketAddr, packets: u64 },
    /// The host would not bind media port `port` (or the RTCP port above
    /// it); it is not used again, and the call that got it fails.
    RtpPortUnavailable { port: u16, reason: String },
    /// SIP transaction memory reached `[sip] transaction_memory`: completed
    /// transactions are being shed or requests refused. Once per period;
    /// `transactions` and `bytes` are what was held when it began.
    SipOverloadStarted { reason: String, transactions: u64, bytes: u64 },
    /// The overload period is over (5 s without shedding or refusing), with
    /// what it cost: REGISTERs and INVITEs answered 503, completed transactions shed.
    SipOverloadEnded { duration_ms: u64, refused_register: u64, refused_invite: u64, shed: u64 },

    // Robustness.
    /// A datagram was dropped; `reason` says why (malformed, unknown call, ACL, ...).
    DatagramDropped { from: SocketAddr, reason: String },
    /// Drops of one reason after the first, gathered over `for_ms`: how many,
    /// the first source, how many sources, and the busiest as `ip=count`.
    DatagramsDropped {
        reason: String,
        count: u64,
        for_ms: u64,
        first: Option<SocketAddr>,
        sources: u64,
        top: Vec<String>,
    },
    /// A new dialog was refused before it used any resources (call token, limits).
    CallTokenRequired { from: SocketAddr },

    // Brute-force defence (`crate::guard`).
    /// After `failures` refused proofs in a row, requests from `source`
    /// (`scope` = `source`) or naming `user` (`scope` = `user`) go unanswered for `for_ms`.
    AuthThrottled { protocol: String, scope: String, source: IpAddr, user: String, failures: u32, for_ms: u64 },
    /// Everything from `source` is dropped unanswered for `for_ms`.
    SourceBanned { protocol: String, source: IpAddr, failures: u32, for_ms: u64 },
    /// The ban ended (`expired`) or the operator lifted it (`operator`).
    SourceUnbanned { protocol: String, source: IpAddr, reason: String },
    /// A listener could not bind what was configured and bound `bound` instead.
    ListenerFallback { listener: String, requested: SocketAddr, bound: SocketAddr, error: String },
}

impl Event {
    /// The event's name as it appears in `events.jsonl` and scenario expectations.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::ConfigLoaded { .. } => "config_loaded",
            Event::ConfigRejected { .. } => "config_rejected",
            Event::RegistrationSent { .. } => "registration_sent",
            Event::Registered { .. } => "registered",
            Event::RegistrationRejected { .. } => "registration_rejected",
            Event::RegistrationTimeout { .. } => "registration_timeout",
            Event::PeerRegistered { .. } => "peer_registered",
            Event::PeerRegistrationRefused { .. } => "peer_registration_refused",
            Event::PeerUnregistered { .. } => "peer_unregistered",
            Event::PeerRestored { .. } => "peer_restored",
            Event::PeerStateChanged { .. } => "peer_state_changed",
            Event::CallStarted { .. } => "call_started",
            Event::CallAnswered { .. } => "call_answered",
            Event::CallRejected { .. } => "call_rejected",
            Event::CallEnded { .. } => "call_ended",
            Event::Dtmf { .. } => "dtmf",
            Event::SipRegistered { .. } => "sip_registered",
            Event::SipRegistrationRefused { .. } => "sip_registration_refused",
            Event::SipAuthFailed { .. } => "sip_auth_failed",
            Event::SipUnregistered { .. } => "sip_unregistered",
            Event::SipCallStarted { .. } => "sip_call_started",
            Event::SipCallAnswered { .. } => "sip_call_answered",
            Event::SipCallRejected { .. } => "sip_call_rejected",
            Event::SipCallEnded { .. } => "sip_call_ended",
            Event::SipDtmf { .. } => "sip_dtmf",
            Event::SipGatewayRegistered { .. } => "sip_gateway_registered",
            Event::SipGatewayRefused { .. } => "sip_gateway_refused",
            Event::SipGatewayTimeout { .. } => "sip_gateway_timeout",
            Event::SipNatDetected { .. } => "sip_nat_detected",
            Event::RtpSourceLearned { .. } => "rtp_source_learned",
            Event::RtpSourceRefused { .. } => "rtp_source_refused",
            Event::RtpPortUnavailable { .. } => "rtp_port_unavailable",
            Event::SipOverloadStarted { .. } => "sip_overload_started",
            Event::SipOverloadEnded { .. } => "sip_overload_ended",
            Event::DatagramDropped { .. } => "datagram_dropped",
            Event::DatagramsDropped { .. } => "datagrams_dropped",
            Event::CallTokenRequired { .. } => "call_token_required",
            Event::AuthThrottled { .. } => "auth_throttled",
            Event::SourceBanned { .. } => "source_banned",
            Event::SourceUnbanned { .. } => "source_unbanned",
            Event::ListenerFallback { .. } => "listener_fallback",
        }
    }
}

/// Receives every event the switch emits, in order.
pub trait EventSink: Send + 'static {
    fn emit(&mut self, event: &Event);
}

/// The live sink: events become structured log lines.
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn emit(&mut self, event: &Event) {
        match serde_json::to_string(event) {
            Ok(json) => tracing::info!(target: "switch::event", "{json}"),
            Err(e) => tracing::warn!("unserialisable event {event:?}: {e}"),
        }
    }
}

impl<F: FnMut(&Event) + Send + 'static> EventSink for F {
    fn emit(&mut self, event: &Event) {
        self(event)
    }
}
