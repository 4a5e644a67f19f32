//! The one shape of every protocol core, and the types the cores share.
//!
//! A protocol core (IAX2's [`Endpoint`](crate::iax2::endpoint::Endpoint), SIP's
//! [`SipEndpoint`](crate::sip::endpoint::SipEndpoint)) is a sans-IO state
//! machine, in the manner of quinn-proto's `Endpoint` and str0m's `Rtc`: it
//! owns no socket, no timer and no clock. The runtime drives every core the
//! same way through [`ProtocolCore`]:
//!
//! ```text
//!   datagram on a socket ──> handle_input(now, socket, from, bytes)
//!   deadline reached     ──> handle_timeout(now)
//!   after every input:       poll_event()          -> EventSink
//!                            poll_socket_request() -> bind / close media sockets
//!                            poll_transmit()       -> socket.send_to
//!                            poll_event()          -> EventSink
//!   before sleeping:         poll_timeout()        -> the next deadline
//! ```
//!
//! Each core has one listener socket (bound by the runtime from the core's
//! configuration) and may ask for media sockets of its own
//! ([`SocketRequest`]); a [`Transmit`] names the socket it leaves from.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::LoadedConfig;
use crate::dialplan::App;
use crate::event::Event;

/// Which of a core's sockets a datagram arrived on or leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketId {
    /// The core's listener (IAX2's `bindaddr`, SIP's `[sip] listen`).
    Listener,
    /// A media socket the core asked for with [`SocketRequest::Open`], by
    /// local port (the RTP port, or the RTCP port above it).
    Media(u16),
}

/// A datagram a core wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send it from.
    pub socket: SocketId,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// What a core asks the runtime to do with its media sockets. Requests are
/// polled before the datagrams that need them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketRequest {
    /// Bind this RTP port and the RTCP port above it, and feed both to
    /// [`ProtocolCore::handle_input`] as [`SocketId::Media`]; then tell the
    /// core with [`ProtocolCore::socket_opened`], or with
    /// [`ProtocolCore::socket_failed`] when the host will not bind them.
    Open(u16),
    /// The call on this pair is over: close both.
    Close(u16),
}

/// Host names from the configuration, resolved by the runtime once per load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedHosts(pub BTreeMap<String, Vec<IpAddr>>);

impl ResolvedHosts {
    /// The first address of `host`, at `port`.
    pub fn addr(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.0.get(host).and_then(|ips| ips.first()).map(|ip| SocketAddr::new(*ip, port))
    }
}

/// A source banned after failed authentication (`iax2 show bans`, `sip show bans`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanView {
    pub source: IpAddr,
    /// Failed proofs counted against it.
    pub failures: u32,
    /// Seconds until the ban ends.
    pub seconds_left: u64,
}

impl BanView {
    /// The bans `guard` holds at `now`.
    pub(crate) fn list(guard: &crate::guard::Guard, now: Instant) -> Vec<BanView> {
        guard
            .bans(now)
            .map(|(source, ban)| BanView {
                source,
                failures: ban.failures,
                seconds_left: ban.until.saturating_duration_since(now).as_secs(),
            })
            .collect()
    }
}

/// A call the operator (or a scenario) asks the switch to place.
#[derive(Debug, Clone)]
pub struct Originate {
    /// `IAX2/[user[:secret]@]peer[:port]/exten[@context]`, `SIP/user` or `SIP/gateway/exten`.
    pub dial: String,
    /// What our side of the call plays.
    pub app: App,
    /// Hang up this long after the answer.
    pub hold: Option<Duration>,
    /// Caller ID (number, name) to present; unset: the peer's `callerid=`, else our username.
    pub calling: (Option<String>, Option<String>),
}

/// What became of an originate request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The call is on its way.
    Started,
    /// Waiting for earlier calls to the same peer (IAX2's `maxauthreq`).
    Queued,
}

/// Why a dial string does not parse. The text is what the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// Neither `IAX2/...` nor `SIP/...`.
    #[error("`{0}`: expected IAX2/... or SIP/...")]
    UnknownTech(String),
    #[error("`{0}`: a dial string starts with IAX2/")]
    NotIax2(String),
    #[error("`{dial}`: bad port `{port}`")]
    BadPort { dial: String, port: String },
    #[error("`{0}`: no peer, e.g. IAX2/b/600")]
    NoPeer(String),
    #[error("`{0}`: expected SIP/user or SIP/gateway/exten")]
    NotSipTarget(String),
}

/// Why a call could not be placed. The text is what the operator reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    /// The dial string does not parse.
    #[error(transparent)]
    InvalidDial(#[from] DialError),
    /// No core takes this dial string because its protocol is not configured.
    #[error("{protocol} is off: {hint}")]
    ProtocolOff { protocol: &'static str, hint: &'static str },
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    #[error("peer {0} has no known address (not registered?)")]
    PeerUnreachable(String),
    #[error("trunk to {addr} is full: {calls} calls x {frame_bytes} bytes per frame reach trunkmaxsize={max}")]
    TrunkFull { addr: SocketAddr, calls: u32, frame_bytes: u32, max: u32 },
    #[error("max_calls={0} reached")]
    MaxCalls(usize),
    #[error("{0}: USER_NOT_REGISTERED")]
    UserNotRegistered(String),
    #[error("no [sip.gateways.{0}]")]
    UnknownGateway(String),
    #[error("gateway {gateway}: {host} does not resolve")]
    GatewayUnresolved { gateway: String, host: String },
    #[error("no free RTP port in rtp_ports {first}-{last}")]
    NoMediaPort { first: u16, last: u16 },
    /// Refused for a reason of the core's own.
    #[error("{0}")]
    Refused(String),
}

/// A sans-IO protocol core as the runtime drives it.
///
/// Every input carries its own `now`; the core never reads a clock. After
/// each input the runtime drains [`poll_event`](Self::poll_event),
/// [`poll_socket_request`](Self::poll_socket_request) and
/// [`poll_transmit`](Self::poll_transmit), then sleeps until
/// [`poll_timeout`](Self::poll_timeout) or the next datagram.
pub trait ProtocolCore {
    /// The protocol's name as operators write it (`IAX2`, `SIP`).
    fn name(&self) -> &'static str;

    /// A datagram that arrived on `socket` from `from`.
    fn handle_input(&mut self, now: Instant, socket: SocketId, from: SocketAddr, bytes: &[u8]);

    /// The deadline from [`poll_timeout`](Self::poll_timeout) has passed (or
    /// another core's has: a core does what is due at `now` and nothing else).
    fn handle_timeout(&mut self, now: Instant);

    /// The next datagram to send, in order.
    fn poll_transmit(&mut self) -> Option<Transmit>;

    /// The next media socket to open or close. Drain these before each
    /// [`poll_transmit`](Self::poll_transmit): a transmit may need the socket.
    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        None
    }

    /// The host bound the media pair at `port` ([`SocketRequest::Open`]): a
    /// core holds back what names the port (an SDP) until it hears this.
    fn socket_opened(&mut self, now: Instant, port: u16) {
        let _ = (now, port);
    }

    /// The host would not bind the media pair at `port` ([`SocketRequest::Open`]).
    fn socket_failed(&mut self, now: Instant, port: u16, error: &str) {
        let _ = (now, port, error);
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) has work.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event to report, in order.
    fn poll_event(&mut self) -> Option<Event>;

    /// Applies a reloaded configuration (the part of it that is this core's)
    /// with the host names it mentions resolved. Sockets are not rebound.
    fn reconfigure(&mut self, now: Instant, loaded: &LoadedConfig, resolved: &ResolvedHosts);

    /// Whether `dial` is a dial string of this protocol (`IAX2/...`, `SIP/...`).
    fn accepts_dial(&self, dial: &str) -> bool;

    /// Places a call to `request.dial` (one [`accepts_dial`](Self::accepts_dial) took).
    fn originate(&mut self, now: Instant, request: &Originate) -> Result<Placement, OriginateError>;

    /// Hangs up every call; returns how many.
    fn hangup_all(&mut self, now: Instant) -> usize;
}

/// Whether `dial` starts with `tech/`, in any case.
pub fn dial_has_tech(dial: &str, tech: &str) -> bool {
    dial.len() > tech.len()
        && dial.as_bytes()[tech.len()] == b'/'
        && dial.get(..tech.len()).is_some_and(|t| t.eq_ignore_ascii_case(tech))
}
