//! The SIP endpoint: a registrar and a user agent server that answers calls
//! into the dialplan, sans IO.
//!
//! Fed with `(now, datagram)` on the signalling socket and on the one media
//! socket, and with timer expiries; polled for datagrams, events and its next
//! deadline, exactly like the IAX2 [`Endpoint`](crate::iax2::endpoint::Endpoint).
//!
//! What a stranger can make it do is bounded: until a request carries valid
//! digest credentials the switch answers it statelessly (a challenge no
//! larger than a few hundred bytes, never retransmitted, so a spoofed source
//! cannot be flooded), keeps nothing, and answers OPTIONS only to addresses
//! with a registration. As FreeSWITCH's `internal` profile does, every
//! REGISTER and INVITE is authenticated.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rand::RngCore;
use rand_chacha::ChaCha20Rng;

mod dial;

pub use dial::SipTarget;

use super::call::{CallMedia, Dialog, Negotiated, SipCall};
use super::digest::{Authorization, Challenge, NonceCheck, NonceIssuer};
use super::gateway::{GatewayRegistration, GatewayState, Outcome as GatewayOutcome};
use super::header::{Contact, Method, NameAddr, Via};
use super::message::{reason_phrase, Headers, Message, ParseError, Request, Response};
use super::registrar::{ContactRequest, Refused, Registrar};
use super::sdp::SessionDescription;
use super::transaction::{
    self, AckOutcome, InviteClientTransaction, InviteServerTransaction, NonInviteClientTransaction,
    NonInviteServerTransaction, Timers, TransactionEvent, Transport,
};
use super::uri::Uri;
use crate::config::{SipSettings, SipUser};
use crate::dialplan::{App, Dialplan};
use crate::event::Event;
use crate::iax2::endpoint::ResolvedHosts;
use crate::media::G711;
use crate::rtp::{self, RtpPacket};

/// How long a nonce stays fresh; older ones get `stale=true`.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// The 20 ms media clock.
const FRAME: Duration = Duration::from_millis(20);
/// Server transactions alive at once; beyond it new requests are dropped.
const MAX_TRANSACTIONS: usize = 16_384;
/// What we say we are.
pub(crate) const USER_AGENT: &str = concat!("switch/", env!("CARGO_PKG_VERSION"));
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO";

/// Which of the two sockets a datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipSocket {
    Signalling,
    Media,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipTransmit {
    pub socket: SipSocket,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// Traffic counters for `sip show stats`.
#[derive(Clone, Debug, Default)]
pub struct SipStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub challenges: u64,
    pub dropped: BTreeMap<String, u64>,
}

enum ServerTxn {
    Invite { txn: InviteServerTransaction, call: Option<u32> },
    NonInvite(NonInviteServerTransaction),
}

struct Server {
    txn: ServerTxn,
    destination: SocketAddr,
}

enum ClientTxn {
    /// Our INVITE to the callee leg `call`, kept for its ACK and CANCEL.
    Invite {
        txn: InviteClientTransaction,
        call: u32,
        invite: Box<Request>,
    },
    NonInvite(NonInviteClientTransaction),
}

struct Client {
    txn: ClientTxn,
    destination: SocketAddr,
}

impl ClientTxn {
    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            ClientTxn::Invite { txn, .. } => txn.poll_timeout(),
            ClientTxn::NonInvite(txn) => txn.poll_timeout(),
        }
    }
}

/// The outcome of checking a request's credentials.
enum Auth {
    Ok(SipUser),
    /// Answered already (challenge or 403): nothing more to do.
    Refused,
}

pub struct SipEndpoint {
    settings: Arc<SipSettings>,
    dialplan: Dialplan,
    rng: ChaCha20Rng,
    epoch: Instant,
    timers: Timers,
    nonces: NonceIssuer,
    /// Key of the To tags derived by [`Self::to_tag`].
    tag_key: [u8; 16],
    registrar: Registrar,
    /// `[sip.gateways.NAME]`: our registrations upstream.
    gateways: Vec<GatewayRegistration>,
    servers: BTreeMap<String, Server>,
    clients: BTreeMap<String, Client>,
    calls: BTreeMap<u32, SipCall>,
    /// (Call-ID, our tag) -> call.
    by_dialog: BTreeMap<(String, String), u32>,
    /// Latched RTP source -> call.
    by_media_source: BTreeMap<SocketAddr, u32>,
    next_call: u32,
    media_tick: Option<Instant>,
    out: VecDeque<SipTransmit>,
    events: VecDeque<Event>,
    stats: SipStats,
}

impl SipEndpoint {
    pub fn new(settings: Arc<SipSettings>, resolved: &ResolvedHosts, mut rng: ChaCha20Rng, now: Instant) -> Self {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let mut tag_key = [0u8; 16];
        rng.fill_bytes(&mut tag_key);
        let mut endpoint = SipEndpoint {
            tag_key,
            settings: settings.clone(),
            dialplan: Dialplan::default(),
            rng,
            epoch: now,
            timers: Timers::default(),
            nonces: NonceIssuer::new(key, NONCE_LIFETIME),
            registrar: Registrar::default(),
            gateways: Vec::new(),
            servers: BTreeMap::new(),
            clients: BTreeMap::new(),
            calls: BTreeMap::new(),
            by_dialog: BTreeMap::new(),
            by_media_source: BTreeMap::new(),
            next_call: 1,
            media_tick: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: SipStats::default(),
        };
        endpoint.reconfigure(now, settings, resolved);
        endpoint
    }

    /// Applies a reloaded `[sip]`: users removed lose their registrations;
    /// calls in progress go on. The sockets are not rebound (restart for that).
    /// Gateways whose settings and address are unchanged keep their registration.
    pub fn reconfigure(&mut self, now: Instant, settings: Arc<SipSettings>, resolved: &ResolvedHosts) {
        for user in self.registrar.retain_users(|u| settings.users.iter().any(|c| c.name == u)) {
            self.events.push_back(Event::SipUnregistered { user, reason: "removed from configuration".into() });
        }
        let mut old = std::mem::take(&mut self.gateways);
        for gateway in &settings.gateways {
            let server =
                resolved.0.get(&gateway.host).and_then(|ips| ips.first()).map(|ip| SocketAddr::new(*ip, gateway.port));
            match old.iter().position(|g| &g.gateway == gateway && g.server == server) {
                Some(i) => self.gateways.push(old.remove(i)),
                None => self.gateways.push(GatewayRegistration::new(gateway.clone(), server, now, &mut self.rng)),
            }
        }
        self.settings = settings;
    }

    /// `sip show gateways`.
    pub fn show_gateways(&self, now: Instant) -> String {
        let mut out =
            format!("{:<16} {:<28} {:<16} {:<12} {:>8}\n", "Gateway", "Proxy", "Username", "State", "Expires");
        for g in &self.gateways {
            let proxy = g.server.map_or_else(|| format!("{} (unresolved)", g.gateway.host), |a| a.to_string());
            let left = match &g.state {
                GatewayState::Registered { until } => until.saturating_duration_since(now).as_secs().to_string(),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<16} {proxy:<28} {:<16} {:<12} {left:>8}",
                g.gateway.name,
                g.gateway.username,
                g.state.name()
            );
        }
        let _ = writeln!(out, "{} gateway(s)", self.gateways.len());
        out
    }

    /// The address written in Via and Contact of our own REGISTERs.
    fn gateway_local_ip(&self) -> IpAddr {
        self.settings.external_ip.unwrap_or(self.settings.listen.ip())
    }

    /// Sends the REGISTERs that are due.
    fn poll_gateways(&mut self, now: Instant) {
        let (local, port) = (self.gateway_local_ip(), self.settings.listen.port());
        for i in 0..self.gateways.len() {
            let Some(request) = self.gateways[i].poll_request(now, local, port, &mut self.rng) else { continue };
            self.send_gateway_request(now, i, request);
        }
    }

    fn send_gateway_request(&mut self, now: Instant, i: usize, request: Request) {
        let Some(server) = self.gateways[i].server else { return };
        let Some(branch) = request.top_via().ok().and_then(|v| v.branch().map(str::to_string)) else { return };
        self.gateways[i].sent(format!("{branch}|REGISTER"));
        self.start_client(now, request, server, None);
    }

    /// A new response (or a timeout, `None`) for a client transaction: a gateway's, if `key` is one.
    fn on_gateway_answer(&mut self, now: Instant, key: &str, response: Option<&Response>) {
        let Some(i) = self.gateways.iter().position(|g| g.state == GatewayState::Trying { key: key.to_string() })
        else {
            return;
        };
        let name = self.gateways[i].gateway.name.clone();
        let Some(response) = response else {
            let wait = self.gateways[i].on_timeout(now, &mut self.rng);
            self.events.push_back(Event::SipGatewayTimeout { gateway: name, retry_in_ms: wait.as_millis() as u64 });
            return;
        };
        let (local, port) = (self.gateway_local_ip(), self.settings.listen.port());
        match self.gateways[i].on_response(now, response, local, port, &mut self.rng) {
            GatewayOutcome::Registered { expires } => {
                self.events.push_back(Event::SipGatewayRegistered { gateway: name, expires })
            }
            GatewayOutcome::Retry(request) => self.send_gateway_request(now, i, *request),
            GatewayOutcome::Refused { status, retry_in } => self.events.push_back(Event::SipGatewayRefused {
                gateway: name,
                status,
                retry_in_ms: retry_in.as_millis() as u64,
            }),
            GatewayOutcome::Nothing => {}
        }
    }

    pub fn set_dialplan(&mut self, dialplan: Dialplan) {
        self.dialplan = dialplan;
    }

    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> &SipStats {
        &self.stats
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let servers = self.servers.values().filter_map(|s| match &s.txn {
            ServerTxn::Invite { txn, .. } => txn.poll_timeout(),
            ServerTxn::NonInvite(txn) => txn.poll_timeout(),
        });
        let clients = self.clients.values().filter_map(|c| c.txn.poll_timeout());
        let gateways = self.gateways.iter().filter_map(|g| g.next_attempt);
        servers.chain(clients).chain(gateways).chain(self.media_tick).chain(self.registrar.next_expiry()).min()
    }

    /// A datagram on the signalling socket.
    pub fn handle_signalling(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        match Message::parse(datagram) {
            Ok(Message::Request(request)) => self.on_request(now, from, request),
            Ok(Message::Response(response)) => self.on_response(now, response),
            // CRLF keep-alives (RFC 5626 3.5.1 style) need no answer over UDP.
            Err(ParseError::Keepalive) => {}
            Err(e) => self.drop_datagram(from, format!("malformed SIP: {e}")),
        }
    }

    /// A datagram on the media socket.
    pub fn handle_media(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.rtp_in += 1;
        if rtp::is_rtcp(datagram) {
            // Reports are read for validity only; our figures come from the RTP itself.
            if let Err(e) = rtp::parse_rtcp(datagram) {
                self.drop_datagram(from, format!("malformed RTCP: {e}"));
            }
            return;
        }
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(e) => return self.drop_datagram(from, format!("malformed RTP: {e}")),
        };
        let Some(id) = self.media_call(from) else {
            return self.drop_datagram(from, "RTP from no call's address".into());
        };
        let since = now.saturating_duration_since(self.epoch);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let result = call.media.on_rtp(now, since, &packet);
        let destination = call.media.destination();
        // A bridge relays the packet as it came, so DTMF and timing pass untouched.
        if let Some(peer) = call.peer.and_then(|p| self.calls.get_mut(&p)) {
            if peer.answered && peer.media.offered.port() != 0 {
                peer.media.packets_sent += 1;
                let to = peer.media.destination();
                self.send(SipSocket::Media, to, datagram.to_vec());
            }
        }
        if let Some(digit) = result.digit {
            self.events.push_back(Event::SipDtmf { call: id, digit: digit.to_string() });
        }
        if let Some(reply) = result.reply {
            self.send(SipSocket::Media, destination, reply);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, s)| {
                match &s.txn {
                    ServerTxn::Invite { txn, .. } => txn.poll_timeout(),
                    ServerTxn::NonInvite(txn) => txn.poll_timeout(),
                }
                .is_some_and(|t| t <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.server_timeout(now, &key);
        }
        let due: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, c)| c.txn.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(client) = self.clients.get_mut(&key) else { continue };
            let destination = client.destination;
            let (resend, events, call) = match &mut client.txn {
                ClientTxn::Invite { txn, call, .. } => {
                    (txn.handle_timeout(now), std::iter::from_fn(|| txn.poll_event()).collect::<Vec<_>>(), Some(*call))
                }
                ClientTxn::NonInvite(txn) => {
                    (txn.handle_timeout(now), std::iter::from_fn(|| txn.poll_event()).collect::<Vec<_>>(), None)
                }
            };
            if events.contains(&TransactionEvent::Terminated) {
                self.clients.remove(&key);
            }
            if let Some(bytes) = resend {
                self.send(SipSocket::Signalling, destination, bytes);
            }
            if events.contains(&TransactionEvent::TimedOut) {
                match call {
                    Some(id) => self.callee_failed(now, id, 408, "the callee did not answer (timer B)"),
                    None => self.on_gateway_answer(now, &key, None),
                }
            }
        }
        self.poll_gateways(now);
        if self.registrar.next_expiry().is_some_and(|t| t <= now) {
            for user in self.registrar.expire(now) {
                self.events.push_back(Event::SipUnregistered { user, reason: "expired".into() });
            }
        }
        if self.media_tick.is_some_and(|t| t <= now) {
            self.on_media_tick(now);
        }
    }

    /// Hangs up every call with a BYE; returns how many.
    pub fn hangup_all(&mut self, now: Instant) -> usize {
        let ids: Vec<u32> = self.calls.keys().copied().collect();
        for &id in &ids {
            self.hang_up(now, id, "hangup all");
        }
        ids.len()
    }

    /// `sip show registrations`.
    pub fn show_registrations(&self, now: Instant) -> String {
        let mut out = format!("{:<16} {:<40} {:<24} {:>7}\n", "User", "Contact", "Source", "Expires");
        let mut n = 0;
        for (user, bindings) in self.registrar.iter() {
            for b in bindings.iter().filter(|b| b.expires_at > now) {
                n += 1;
                let left = b.expires_at.saturating_duration_since(now).as_secs();
                let _ = writeln!(out, "{user:<16} {:<40} {:<24} {left:>7}", b.contact, b.source.to_string());
            }
        }
        let _ = writeln!(out, "{n} registration(s)");
        out
    }

    /// `sip show channels`.
    pub fn show_channels(&self, now: Instant) -> String {
        let mut out = format!(
            "{:>5} {:<16} {:<24} {:<6} {:>8} {:>8} {:>8}\n",
            "Call", "Call-ID", "Media", "Codec", "Sent", "Recv", "Secs"
        );
        for call in self.calls.values() {
            let id: String = call.dialog.call_id.chars().take(16).collect();
            let _ = writeln!(
                out,
                "{:>5} {id:<16} {:<24} {:<6} {:>8} {:>8} {:>8}",
                call.id,
                call.media.destination().to_string(),
                codec_name(call.media.codec),
                call.media.packets_sent,
                call.media.packets_received,
                now.saturating_duration_since(call.started).as_secs()
            );
        }
        let _ = writeln!(out, "{} active SIP call(s)", self.calls.len());
        out
    }

    /// `sip show stats`.
    pub fn show_stats(&self) -> String {
        let s = &self.stats;
        let mut out = format!(
            "sip datagrams_in={} datagrams_out={} rtp_in={} rtp_out={} challenges={} transactions={} calls={}\n",
            s.datagrams_in,
            s.datagrams_out,
            s.rtp_in,
            s.rtp_out,
            s.challenges,
            self.servers.len() + self.clients.len(),
            self.calls.len()
        );
        for (reason, n) in &s.dropped {
            let _ = writeln!(out, "sip dropped {n:>8} {reason}");
        }
        out
    }

    // ---- requests ----

    fn on_request(&mut self, now: Instant, from: SocketAddr, request: Request) {
        if let Err(e) = request.validate_mandatory() {
            let reason = format!("{} without what RFC 3261 8.1.1 requires: {e}", request.method.as_str());
            // A 400 needs the headers that route it back and match it to the
            // request (RFC 3261 8.2.6); without them there is nothing to answer.
            let answerable = request.top_via().is_ok()
                && request.call_id().is_ok()
                && request.cseq().is_ok()
                && request.from().is_ok()
                && request.to().is_ok();
            if answerable && request.method != Method::Ack {
                let mut response = self.response(&request, from, 400);
                response.reason = format!("Bad Request ({})", e.reason());
                self.reply_stateless(from, &response);
            }
            return self.drop_datagram(from, reason);
        }
        let Ok(via) = request.top_via() else {
            return self.drop_datagram(from, "unreadable Via".into());
        };
        let key = transaction_key(
            &request,
            &via,
            if request.method == Method::Ack || request.method == Method::Cancel {
                Method::Invite
            } else {
                request.method.clone()
            },
        );
        match request.method {
            Method::Ack => return self.on_ack(now, &key, &request),
            Method::Cancel => return self.on_cancel(now, from, &key, &request),
            _ => {}
        }
        if let Some(server) = self.servers.get_mut(&key) {
            let destination = server.destination;
            let resend = match &mut server.txn {
                ServerTxn::Invite { txn, .. } => txn.on_request_retransmission(now),
                ServerTxn::NonInvite(txn) => txn.on_request_retransmission(now),
            };
            if let Some(bytes) = resend {
                self.send(SipSocket::Signalling, destination, bytes);
            }
            return;
        }
        if request.to().ok().and_then(|t| t.tag().map(str::to_string)).is_some() {
            return self.in_dialog(now, from, key, request);
        }
        match request.method {
            Method::Register => self.on_register(now, from, key, &request),
            Method::Invite => self.on_invite(now, from, key, &request),
            Method::Options if self.registrar.is_registered_source(now, from) => {
                let mut response = self.response(&request, from, 200);
                response.headers.push("Allow", ALLOW);
                response.headers.push("Accept", "application/sdp");
                self.reply_stateless(from, &response);
            }
            // Scanners probe with OPTIONS first: strangers learn nothing.
            Method::Options => self.drop_datagram(from, "OPTIONS from an address with no registration".into()),
            _ if self.registrar.is_registered_source(now, from) => {
                let mut response = self.response(&request, from, 405);
                response.headers.push("Allow", ALLOW);
                self.reply_stateless(from, &response);
            }
            _ => self.drop_datagram(from, format!("{} from an address with no registration", request.method.as_str())),
        }
    }

    fn on_register(&mut self, now: Instant, from: SocketAddr, key: String, request: &Request) {
        let Auth::Ok(user) = self.authenticate(now, from, request, false) else { return };
        let to_user = request.to().ok().and_then(|t| t.uri.user_unescaped());
        if to_user.as_deref() != Some(user.name.as_str()) {
            return self.refuse_registration(now, from, key, request, &user.name, 403, "To names another user");
        }
        let (Ok(call_id), Ok(cseq)) = (request.call_id(), request.cseq()) else { return };
        let contacts = match request.contact() {
            Ok(c) => c,
            Err(_) => return self.refuse_registration(now, from, key, request, &user.name, 400, "unreadable Contact"),
        };
        match contacts {
            None => {}
            Some(Contact::Star) => {
                if request.expires() != Some(0) {
                    return self.refuse_registration(
                        now,
                        from,
                        key,
                        request,
                        &user.name,
                        400,
                        "Contact: * needs Expires: 0",
                    );
                }
                if self.registrar.remove_all(&user.name) > 0 {
                    self.events
                        .push_back(Event::SipUnregistered { user: user.name.clone(), reason: "Contact: *".into() });
                }
            }
            Some(Contact::Addrs(addrs)) => {
                let mut wanted = Vec::new();
                for addr in &addrs {
                    let asked = addr.expires().or(request.expires()).unwrap_or(self.settings.max_expires);
                    if asked > 0 && asked < self.settings.min_expires {
                        let mut response = self.response(request, from, 423);
                        response.headers.push("Min-Expires", self.settings.min_expires.to_string());
                        self.events.push_back(Event::SipRegistrationRefused {
                            user: user.name.clone(),
                            addr: from,
                            status: 423,
                            reason: format!("asked {asked} s, below min_expires"),
                        });
                        return self.reply_in_transaction(now, from, key, &response);
                    }
                    wanted.push(ContactRequest {
                        contact: addr.uri.to_string(),
                        expires: asked.min(self.settings.max_expires),
                    });
                }
                match self.registrar.update(now, &user.name, from, call_id, cseq.seq, &wanted) {
                    Ok(()) => {
                        for c in &wanted {
                            self.events.push_back(Event::SipRegistered {
                                user: user.name.clone(),
                                contact: c.contact.clone(),
                                addr: from,
                                expires: c.expires,
                            });
                        }
                    }
                    Err(Refused::OutOfOrder) => {
                        return self.refuse_registration(now, from, key, request, &user.name, 500, "out-of-order CSeq")
                    }
                    Err(Refused::TooMany) => {
                        return self.refuse_registration(now, from, key, request, &user.name, 403, "too many contacts")
                    }
                }
            }
        }
        let mut response = self.response(request, from, 200);
        for b in self.registrar.bindings(now, &user.name) {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            response.headers.push("Contact", format!("<{}>;expires={left}", b.contact));
        }
        self.reply_in_transaction(now, from, key, &response);
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse_registration(
        &mut self,
        now: Instant,
        from: SocketAddr,
        key: String,
        request: &Request,
        user: &str,
        status: u16,
        reason: &str,
    ) {
        self.events.push_back(Event::SipRegistrationRefused {
            user: user.to_string(),
            addr: from,
            status,
            reason: reason.to_string(),
        });
        let response = self.response(request, from, status);
        self.reply_in_transaction(now, from, key, &response);
    }

    fn on_invite(&mut self, now: Instant, from: SocketAddr, key: String, request: &Request) {
        if request.max_forwards() == Some(0) {
            let response = self.response(request, from, 483);
            return self.reply_stateless(from, &response);
        }
        let Auth::Ok(user) = self.authenticate(now, from, request, true) else { return };
        if self.calls.len() >= self.settings.max_calls || self.servers.len() >= MAX_TRANSACTIONS {
            let mut response = self.response(request, from, 503);
            response.headers.push("Retry-After", "5");
            return self.reply_stateless(from, &response);
        }
        let id = self.next_call;
        self.next_call = self.next_call.wrapping_add(1).max(1);
        let exten = request.uri.user_unescaped().unwrap_or_else(|| "s".into());
        let context = user.context.clone().unwrap_or_else(|| self.settings.context.clone());
        let caller = request.from().map(|f| f.uri.user_unescaped().unwrap_or_default()).unwrap_or_default();
        self.events.push_back(Event::SipCallStarted {
            call: id,
            user: user.name.clone(),
            exten: exten.clone(),
            context: context.clone(),
            caller,
        });

        let txn = InviteServerTransaction::new(now, self.timers, Transport::Unreliable);
        self.servers.insert(key.clone(), Server { txn: ServerTxn::Invite { txn, call: None }, destination: from });
        let trying = self.response(request, from, 100);
        self.respond(now, &key, &trying);

        let app = self.dialplan.lookup(&context, &exten);
        let refusal = match &app {
            None => Some((404, format!("no extension {exten} in context {context}"))),
            Some(App::Hangup { cause }) => Some((q850_to_sip(*cause), format!("hangup({cause})"))),
            Some(App::Dial { target }) if dial::sip_user(target).is_none() => {
                Some((501, format!("dial({target}) from SIP: only SIP/user targets are supported")))
            }
            Some(_) => None,
        };
        if let Some((status, reason)) = refusal {
            return self.reject_invite(now, from, &key, request, id, &exten, status, &reason);
        }
        let Some(app) = app else { return };
        let offer = match SessionDescription::parse(&request.body) {
            Ok(sdp) if !request.body.is_empty() => sdp,
            _ => return self.reject_invite(now, from, &key, request, id, &exten, 488, "no SDP offer"),
        };
        let Some(chosen) = negotiate(&offer) else {
            return self.reject_invite(now, from, &key, request, id, &exten, 488, "no PCMU or PCMA in the offer");
        };

        let local_ip = self.advertised_ip(request, from);
        let local_tag = self.to_tag(request);
        let Ok(to) = request.to() else { return };
        let Ok(caller) = request.from() else { return };
        let remote_target = match request.contact() {
            Ok(Some(Contact::Addrs(a))) if !a.is_empty() => a[0].uri.to_string(),
            _ => caller.uri.to_string(),
        };
        let (Ok(call_id), Ok(cseq)) = (request.call_id(), request.cseq()) else { return };
        let dialog = Dialog {
            call_id: call_id.to_string(),
            local_tag: local_tag.clone(),
            remote_tag: caller.tag().unwrap_or_default().to_string(),
            local_uri: without_tag(&to),
            remote_uri: without_tag(&caller),
            remote_target,
            signalling: from,
            local_ip,
            local_cseq: self.rng.next_u32() & 0x7fff_ffff,
            remote_cseq: cseq.seq,
        };
        let media = CallMedia::new(now, &chosen, &app, id as u16, &mut self.rng);
        let local_sdp = self.sdp(local_ip, &chosen);
        if let Some(Server { txn: ServerTxn::Invite { call, .. }, .. }) = self.servers.get_mut(&key) {
            *call = Some(id);
        }
        self.by_dialog.insert((dialog.call_id.clone(), local_tag), id);
        let call = SipCall {
            id,
            exten,
            dialog,
            media,
            started: now,
            answered: false,
            confirmed: false,
            invite: Some(key),
            pending: Some(request.clone()),
            outbound: None,
            peer: None,
            local_sdp,
            hangup_at: None,
        };
        self.calls.insert(id, call);
        match &app {
            App::Dial { target } => self.dial(now, id, target, &chosen),
            _ => self.answer_inbound(now, id),
        }
    }

    /// Sends the 200 with our SDP for a pending inbound call.
    fn answer_inbound(&mut self, now: Instant, id: u32) {
        let port = self.settings.listen.port();
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(request) = call.pending.take() else { return };
        call.answered = true;
        call.media.last_received = now;
        let (from, key) = (call.dialog.signalling, call.invite.clone().unwrap_or_default());
        let contact = format!("<sip:{}@{}>", exten_for_uri(&call.exten), host_port(call.dialog.local_ip, port));
        let (tag, sdp, codec) = (call.dialog.local_tag.clone(), call.local_sdp.clone(), codec_name(call.media.codec));
        let mut ok = self.response(&request, from, 200);
        set_to_tag(&mut ok, &tag);
        ok.headers.push("Contact", contact);
        ok.headers.push("Allow", ALLOW);
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = sdp;
        self.respond(now, &key, &ok);
        self.events.push_back(Event::SipCallAnswered { call: id, codec: codec.into() });
        self.expect_media(id);
        self.media_tick_from(now);
    }

    /// Starts the 20 ms media clock if it is not running.
    fn media_tick_from(&mut self, now: Instant) {
        self.media_tick.get_or_insert(now + FRAME);
    }

    /// Ends a pending inbound call with a final error response.
    fn reject_inbound(&mut self, now: Instant, id: u32, status: u16, reason: &str) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let Some(request) = call.pending.take() else { return };
        let (from, key, exten) = (call.dialog.signalling, call.invite.clone().unwrap_or_default(), call.exten.clone());
        let peer = self.forget(id).and_then(|c| c.peer);
        self.reject_invite(now, from, &key, &request, id, &exten, status, reason);
        if let Some(peer) = peer {
            self.hang_up(now, peer, reason);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reject_invite(
        &mut self,
        now: Instant,
        from: SocketAddr,
        key: &str,
        request: &Request,
        id: u32,
        exten: &str,
        status: u16,
        reason: &str,
    ) {
        self.events.push_back(Event::SipCallRejected {
            call: id,
            exten: exten.to_string(),
            status,
            reason: reason.to_string(),
        });
        let response = self.response(request, from, status);
        self.respond(now, key, &response);
    }

    fn on_ack(&mut self, now: Instant, key: &str, request: &Request) {
        // The ACK of a non-2xx shares the INVITE's branch; the ACK of our 2xx
        // is a new transaction inside the dialog (RFC 3261 17.1.1.3, 13.2.2.4).
        if let Some(Server { txn: ServerTxn::Invite { txn, .. }, .. }) = self.servers.get_mut(key) {
            if txn.on_ack(now) != AckOutcome::Unexpected {
                return;
            }
        }
        let Some(id) = self.dialog_of(request) else { return };
        let Some(call) = self.calls.get_mut(&id) else { return };
        call.confirmed = true;
        if let Some(invite) = call.invite.clone() {
            if let Some(Server { txn: ServerTxn::Invite { txn, .. }, .. }) = self.servers.get_mut(&invite) {
                txn.on_ack(now);
            }
        }
    }

    fn on_cancel(&mut self, now: Instant, from: SocketAddr, invite_key: &str, request: &Request) {
        let call = match self.servers.get(invite_key) {
            Some(Server { txn: ServerTxn::Invite { call, .. }, .. }) => *call,
            _ => None,
        };
        let status = if self.servers.contains_key(invite_key) { 200 } else { 481 };
        let response = self.response(request, from, status);
        self.reply_stateless(from, &response);
        // Only a call still ringing its callee can be cancelled; an answered
        // one is ended by the caller's BYE (RFC 3261 9.2).
        if let Some(id) = call.filter(|id| self.calls.get(id).is_some_and(|c| c.pending.is_some())) {
            self.reject_inbound(now, id, 487, "cancelled by the caller");
        }
    }

    fn in_dialog(&mut self, now: Instant, from: SocketAddr, key: String, request: Request) {
        let Some(id) = self.dialog_of(&request) else {
            let response = self.response(&request, from, 481);
            return self.reply_stateless(from, &response);
        };
        let cseq = request.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(call) = self.calls.get_mut(&id) else { return };
        if cseq <= call.dialog.remote_cseq && request.method != Method::Invite {
            let response = self.response(&request, from, 500);
            return self.reply_stateless(from, &response);
        }
        call.dialog.remote_cseq = call.dialog.remote_cseq.max(cseq);
        match request.method {
            Method::Bye => {
                let response = self.response(&request, from, 200);
                self.reply_in_transaction(now, from, key, &response);
                self.end_call(now, id, "remote BYE");
            }
            Method::Invite => {
                // A re-INVITE (session refresh, hold): keep our answer.
                if let Ok(offer) = SessionDescription::parse(&request.body) {
                    if let Some(chosen) = negotiate(&offer) {
                        call.media.offered = chosen.remote;
                        call.media.latched = None;
                    }
                }
                self.expect_media(id);
                let mut ok = self.response(&request, from, 200);
                if let Some(call) = self.calls.get(&id) {
                    ok.headers.push("Content-Type", "application/sdp");
                    ok.body = call.local_sdp.clone();
                }
                let txn = InviteServerTransaction::new(now, self.timers, Transport::Unreliable);
                self.servers
                    .insert(key.clone(), Server { txn: ServerTxn::Invite { txn, call: None }, destination: from });
                self.respond(now, &key, &ok);
            }
            Method::Info | Method::Options => {
                let response = self.response(&request, from, 200);
                self.reply_in_transaction(now, from, key, &response);
            }
            _ => {
                let mut response = self.response(&request, from, 501);
                response.headers.push("Allow", ALLOW);
                self.reply_in_transaction(now, from, key, &response);
            }
        }
    }

    // ---- responses (to our BYEs) ----

    fn on_response(&mut self, now: Instant, response: Response) {
        let Ok(via) = response.top_via() else { return };
        let Some(branch) = via.branch() else { return };
        let Ok(cseq) = response.cseq() else { return };
        let key = format!("{branch}|{}", cseq.method.as_str());
        let Some(client) = self.clients.get_mut(&key) else {
            // A 2xx to our INVITE after its transaction ended: our ACK was lost.
            if cseq.method == Method::Invite && (200..300).contains(&response.status) {
                self.resend_ack(&response);
            }
            return;
        };
        let destination = client.destination;
        let (new, send, events, call) = match &mut client.txn {
            ClientTxn::Invite { txn, call, invite } => {
                let ack = || dial::ack_for_failure(invite, &response);
                let outcome = txn.on_response(now, response.status, ack);
                (
                    outcome.pass_up,
                    outcome.send,
                    std::iter::from_fn(|| txn.poll_event()).collect::<Vec<_>>(),
                    Some(*call),
                )
            }
            ClientTxn::NonInvite(txn) => {
                let new = txn.on_response(now, response.status);
                (new, None, std::iter::from_fn(|| txn.poll_event()).collect::<Vec<_>>(), None)
            }
        };
        if events.contains(&TransactionEvent::Terminated) {
            self.clients.remove(&key);
        }
        if let Some(bytes) = send {
            self.send(SipSocket::Signalling, destination, bytes);
        }
        match (new, call) {
            (true, Some(id)) => self.on_callee_response(now, id, &response),
            (true, None) => self.on_gateway_answer(now, &key, Some(&response)),
            _ => {}
        }
    }

    // ---- authentication ----

    /// Checks digest credentials; when they are missing, stale or wrong it
    /// answers statelessly and returns [`Auth::Refused`].
    fn authenticate(&mut self, now: Instant, from: SocketAddr, request: &Request, proxy: bool) -> Auth {
        let (header, challenge_header, challenge_status) = if proxy {
            ("Proxy-Authorization", "Proxy-Authenticate", 407)
        } else {
            ("Authorization", "WWW-Authenticate", 401)
        };
        let since = now.saturating_duration_since(self.epoch);
        let method = request.method.as_str().to_string();
        let credentials = request
            .headers
            .get_all(header)
            .filter_map(|v| Authorization::parse(v).ok())
            .find(|a| a.realm == self.settings.realm);
        let mut stale = false;
        if let Some(auth) = credentials {
            match self.nonces.check(&auth.nonce, since) {
                NonceCheck::Valid => {
                    let user = self.settings.users.iter().find(|u| u.name == auth.username).cloned();
                    // Unknown users and wrong passwords get the same 403, so
                    // scanners (svwar) cannot tell which names exist.
                    return match user {
                        Some(user) if auth.verify(&method, &user.password) => Auth::Ok(user),
                        _ => {
                            self.events.push_back(Event::SipAuthFailed {
                                method,
                                user: auth.username,
                                addr: from,
                                status: 403,
                            });
                            let response = self.response(request, from, 403);
                            self.reply_stateless(from, &response);
                            Auth::Refused
                        }
                    };
                }
                NonceCheck::Stale => stale = true,
                NonceCheck::Invalid => {}
            }
        }
        let nonce = self.nonces.issue(since, &mut self.rng);
        let challenge = Challenge::new(&self.settings.realm, nonce, stale);
        let mut response = self.response(request, from, challenge_status);
        response.headers.push(challenge_header, challenge.to_string());
        self.stats.challenges += 1;
        let user = request.from().ok().and_then(|f| f.uri.user_unescaped()).unwrap_or_default();
        self.events.push_back(Event::SipAuthFailed { method, user, addr: from, status: challenge_status });
        self.reply_stateless(from, &response);
        Auth::Refused
    }

    // ---- calls ----

    fn dialog_of(&self, request: &Request) -> Option<u32> {
        let call_id = request.call_id().ok()?;
        let to = request.to().ok()?;
        self.by_dialog.get(&(call_id.to_string(), to.tag()?.to_string())).copied()
    }

    /// The call an RTP packet from `from` belongs to, latching it on the first one.
    fn media_call(&mut self, from: SocketAddr) -> Option<u32> {
        let id = match self.by_media_source.get(&from) {
            Some(id) => *id,
            // Not where any SDP said: a phone behind NAT sends from another
            // port (or address) than it offered. Latch the first call still
            // waiting for media from that host.
            None => {
                let id = self
                    .calls
                    .values()
                    .filter(|c| c.media.latched.is_none())
                    .find(|c| c.media.offered.ip() == from.ip() || c.dialog.signalling.ip() == from.ip())?
                    .id;
                self.by_media_source.insert(from, id);
                id
            }
        };
        if let Some(call) = self.calls.get_mut(&id) {
            call.media.latched.get_or_insert(from);
        }
        Some(id)
    }

    /// Routes RTP from the address call `id`'s SDP named to it. A newer offer
    /// of the same address wins over an older call's latch: that phone has
    /// moved on (RFC 3264: the offer says where the offerer receives).
    fn expect_media(&mut self, id: u32) {
        let Some(offered) = self.calls.get(&id).map(|c| c.media.offered).filter(|a| a.port() != 0) else { return };
        if let Some(old) = self.by_media_source.insert(offered, id).filter(|old| *old != id) {
            if let Some(call) = self.calls.get_mut(&old) {
                call.media.latched = None;
            }
        }
    }

    fn on_media_tick(&mut self, now: Instant) {
        let timeout = Duration::from_secs(u64::from(self.settings.rtp_timeout));
        let mut silent = Vec::new();
        let mut packets = Vec::new();
        let mut held = Vec::new();
        // Legs still ringing have no media yet, and no RTP to miss.
        for call in self.calls.values_mut().filter(|c| c.answered) {
            if call.hangup_at.is_some_and(|t| t <= now) {
                held.push(call.id);
                continue;
            }
            if !timeout.is_zero() && now.saturating_duration_since(call.media.last_received) >= timeout {
                silent.push(call.id);
                continue;
            }
            if let Some(packet) = call.media.tick() {
                packets.push((call.media.destination(), packet));
            }
        }
        for (destination, packet) in packets {
            self.send(SipSocket::Media, destination, packet);
        }
        for id in silent {
            self.hang_up(now, id, "RTP timeout");
        }
        for id in held {
            self.hang_up(now, id, "hold time over");
        }
        self.media_tick = if self.calls.is_empty() {
            None
        } else {
            // Keep the 20 ms grid; after a stall, skip ahead rather than burst.
            let next = self.media_tick.unwrap_or(now) + FRAME;
            Some(if next <= now { now + FRAME } else { next })
        };
    }

    /// Ends a call from our side: a BYE in its own client transaction (or a
    /// CANCEL, or a final error, for a leg not answered yet).
    fn hang_up(&mut self, now: Instant, id: u32, cause: &str) {
        let Some(call) = self.calls.get(&id) else { return };
        if call.pending.is_some() {
            return self.reject_inbound(now, id, 480, cause);
        }
        if !call.answered && call.outbound.is_some() {
            self.cancel(now, id);
            return self.end_call(now, id, cause);
        }
        let (bye, destination) = self.in_dialog_request(id, Method::Bye, true);
        if let Some(bye) = bye {
            self.start_client(now, bye, destination, None);
        }
        self.end_call(now, id, cause);
    }

    /// A request inside call `id`'s dialog: BYE (a new CSeq) or the ACK of a 2xx (the INVITE's CSeq).
    fn in_dialog_request(&mut self, id: u32, method: Method, next_cseq: bool) -> (Option<Request>, SocketAddr) {
        let port = self.settings.listen.port();
        let branch = transaction::new_branch(&mut self.rng);
        let Some(call) = self.calls.get_mut(&id) else { return (None, SocketAddr::from(([0, 0, 0, 0], 0))) };
        if next_cseq {
            call.dialog.local_cseq = call.dialog.local_cseq.wrapping_add(1);
        }
        let d = &call.dialog;
        let target = Uri::parse(&d.remote_target).unwrap_or_else(|_| Uri::sip(None, d.signalling.ip().to_string()));
        let mut headers = Headers::default();
        headers.push("Via", format!("SIP/2.0/UDP {};branch={branch};rport", host_port(d.local_ip, port)));
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{};tag={}", d.local_uri, d.local_tag));
        headers.push("To", format!("{};tag={}", d.remote_uri, d.remote_tag));
        headers.push("Call-ID", &d.call_id);
        headers.push("CSeq", format!("{} {}", d.local_cseq, method.as_str()));
        headers.push("User-Agent", USER_AGENT);
        (Some(Request { method, uri: target, headers, body: Vec::new() }), d.signalling)
    }

    /// Sends `request` in a new client transaction; `call` is set for an INVITE to a callee leg.
    fn start_client(&mut self, now: Instant, request: Request, destination: SocketAddr, call: Option<u32>) {
        let Some(branch) = request.top_via().ok().and_then(|v| v.branch().map(str::to_string)) else { return };
        let key = format!("{branch}|{}", request.method.as_str());
        let bytes = request.encode();
        let txn = match call {
            Some(call) => {
                let mut txn = InviteClientTransaction::new(now, self.timers, Transport::Unreliable, bytes);
                let first = txn.poll_transmit();
                let invite = Box::new(request);
                self.clients.insert(key, Client { txn: ClientTxn::Invite { txn, call, invite }, destination });
                first
            }
            None => {
                let mut txn = NonInviteClientTransaction::new(now, self.timers, Transport::Unreliable, bytes);
                let first = txn.poll_transmit();
                self.clients.insert(key, Client { txn: ClientTxn::NonInvite(txn), destination });
                first
            }
        };
        if let Some(bytes) = txn {
            self.send(SipSocket::Signalling, destination, bytes);
        }
    }

    /// Removes a call from every index, reporting nothing.
    fn forget(&mut self, id: u32) -> Option<SipCall> {
        let call = self.calls.remove(&id)?;
        self.by_dialog.remove(&(call.dialog.call_id.clone(), call.dialog.local_tag.clone()));
        self.by_media_source.retain(|_, owner| *owner != id);
        if self.calls.is_empty() {
            self.media_tick = None;
        }
        Some(call)
    }

    /// The call is over: its figures are reported, and a bridged other leg is hung up too.
    fn end_call(&mut self, now: Instant, id: u32, cause: &str) {
        let Some(call) = self.forget(id) else { return };
        let m = &call.media;
        self.events.push_back(Event::SipCallEnded {
            call: id,
            cause: cause.to_string(),
            duration_ms: now.saturating_duration_since(call.started).as_millis() as u64,
            packets_sent: m.packets_sent,
            packets_received: m.packets_received,
            lost: m.receiver.lost(),
            duplicated: m.receiver.duplicates(),
            jitter_ms: m.receiver.jitter_duration().as_millis() as u64,
            pattern_lost: m.pattern.lost,
        });
        if let Some(peer) = call.peer {
            self.hang_up(now, peer, &format!("other leg ended: {cause}"));
        }
    }

    // ---- transactions and sending ----

    fn server_timeout(&mut self, now: Instant, key: &str) {
        let Some(server) = self.servers.get_mut(key) else { return };
        let destination = server.destination;
        let (resend, events, call) = match &mut server.txn {
            ServerTxn::Invite { txn, call } => {
                let resend = txn.handle_timeout(now);
                (resend, std::iter::from_fn(|| txn.poll_event()).collect::<Vec<_>>(), *call)
            }
            ServerTxn::NonInvite(txn) => {
                let resend = txn.handle_timeout(now);
                (resend, std::iter::from_fn(|| txn.poll_event()).collect::<Vec<_>>(), None)
            }
        };
        if let Some(bytes) = resend {
            self.send(SipSocket::Signalling, destination, bytes);
        }
        for event in events {
            match event {
                TransactionEvent::NoAckFor2xx => {
                    if let Some(id) = call {
                        self.hang_up(now, id, "no ACK for 200 OK");
                    }
                }
                TransactionEvent::Terminated => {
                    self.servers.remove(key);
                    if let Some(c) = call.and_then(|id| self.calls.get_mut(&id)) {
                        c.invite = None;
                    }
                }
                TransactionEvent::TimedOut | TransactionEvent::TransportError => {}
            }
        }
    }

    /// Sends a response through the server transaction `key`.
    fn respond(&mut self, now: Instant, key: &str, response: &Response) {
        let Some(server) = self.servers.get_mut(key) else { return };
        let destination = server.destination;
        let bytes = response.encode();
        let sent = match &mut server.txn {
            ServerTxn::Invite { txn, .. } => txn.respond(now, response.status, bytes),
            ServerTxn::NonInvite(txn) => txn.respond(now, response.status, bytes),
        };
        if let Some(bytes) = sent {
            self.send(SipSocket::Signalling, destination, bytes);
        }
    }

    /// Answers an authenticated non-INVITE request in a new server
    /// transaction, so its retransmissions get the same answer.
    fn reply_in_transaction(&mut self, now: Instant, from: SocketAddr, key: String, response: &Response) {
        if self.servers.len() >= MAX_TRANSACTIONS {
            return self.reply_stateless(from, response);
        }
        let txn = NonInviteServerTransaction::new(now, self.timers, Transport::Unreliable);
        self.servers.insert(key.clone(), Server { txn: ServerTxn::NonInvite(txn), destination: from });
        self.respond(now, &key, response);
    }

    fn reply_stateless(&mut self, to: SocketAddr, response: &Response) {
        self.send(SipSocket::Signalling, to, response.encode());
    }

    /// A response to `request`, back to where it came from (RFC 3581 rport,
    /// RFC 3261 18.2.2 received), with our User-Agent.
    fn response(&self, request: &Request, from: SocketAddr, status: u16) -> Response {
        let mut response = Response::to_request(request, status, reason_phrase(status));
        if let Ok(mut vias) = request.vias() {
            if let Some(top) = vias.first_mut() {
                if top.host.trim_matches(|c| c == '[' || c == ']') != from.ip().to_string() {
                    top.params.set("received", Some(from.ip().to_string()));
                }
                if top.rport().is_some() {
                    top.params.set("rport", Some(from.port().to_string()));
                }
                response.headers.remove("Via");
                for via in &vias {
                    response.headers.push("Via", via.to_string());
                }
            }
        }
        if status > 100 {
            set_to_tag(&mut response, &self.to_tag(request));
        }
        response.headers.push("Server", USER_AGENT);
        response
    }

    /// Our To tag for a request's dialog (RFC 3261 8.2.6.2: every response but
    /// 100 carries one). Derived from Call-ID and From tag under a key, so a
    /// stateless answer to a retransmission carries the same tag and nothing
    /// needs storing, yet strangers cannot predict it.
    fn to_tag(&self, request: &Request) -> String {
        let call_id = request.call_id().unwrap_or_default();
        let from_tag = request.from().ok().and_then(|f| f.tag().map(str::to_string)).unwrap_or_default();
        let digest = Md5::new()
            .chain_update(self.tag_key)
            .chain_update(call_id)
            .chain_update([0])
            .chain_update(from_tag)
            .finalize();
        digest.iter().take(8).fold(String::with_capacity(16), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    fn send(&mut self, socket: SipSocket, destination: SocketAddr, payload: Vec<u8>) {
        match socket {
            SipSocket::Signalling => self.stats.datagrams_out += 1,
            SipSocket::Media => self.stats.rtp_out += 1,
        }
        self.out.push_back(SipTransmit { socket, destination, payload });
    }

    fn drop_datagram(&mut self, from: SocketAddr, reason: String) {
        let key: String = reason.split(':').next().unwrap_or(&reason).to_string();
        *self.stats.dropped.entry(key).or_default() += 1;
        tracing::debug!(%from, "dropped SIP datagram: {reason}");
        self.events.push_back(Event::DatagramDropped { from, reason });
    }

    // ---- SDP ----

    /// The address written into Contact and SDP: `external_ip`, else a bound
    /// address, else the one the caller used to reach us.
    fn advertised_ip(&self, request: &Request, from: SocketAddr) -> IpAddr {
        if let Some(ip) = self.settings.external_ip {
            return ip;
        }
        for ip in [self.settings.rtp.ip(), self.settings.listen.ip()] {
            if !ip.is_unspecified() {
                return ip;
            }
        }
        let host = request.uri.host.trim_matches(|c| c == '[' || c == ']');
        match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv4() == from.is_ipv4() => ip,
            _ if from.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            _ => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    }

    fn sdp(&mut self, ip: IpAddr, chosen: &Negotiated) -> Vec<u8> {
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let session = self.rng.next_u32();
        let mut formats = chosen.payload_type.to_string();
        let mut attributes = format!("a=rtpmap:{} {}/8000\r\n", chosen.payload_type, codec_name(chosen.codec));
        if let Some(pt) = chosen.dtmf {
            let _ = write!(formats, " {pt}");
            let _ = write!(attributes, "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n");
        }
        format!(
            "v=0\r\no=switch {session} 1 IN {family} {ip}\r\ns=switch\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP {formats}\r\n{attributes}a=ptime:20\r\na=sendrecv\r\n",
            self.settings.rtp.port()
        )
        .into_bytes()
    }
}

/// The first audio stream with a port, its first PCMU/PCMA format (the
/// offerer's preference order) and its telephone-event type.
fn negotiate(offer: &SessionDescription) -> Option<Negotiated> {
    let media = offer.media.iter().find(|m| m.kind == "audio" && m.port != 0)?;
    let ip = media.address(offer)?;
    let mut codec = None;
    let mut dtmf = None;
    for pt in media.payload_types() {
        let encoding =
            media.rtpmaps.iter().find(|r| r.pt == pt).map(|r| r.encoding.to_ascii_uppercase()).or_else(|| match pt {
                0 => Some("PCMU".into()),
                8 => Some("PCMA".into()),
                _ => None,
            });
        match encoding.as_deref() {
            Some("PCMU") if codec.is_none() => codec = Some((G711::Ulaw, pt)),
            Some("PCMA") if codec.is_none() => codec = Some((G711::Alaw, pt)),
            Some("TELEPHONE-EVENT") if dtmf.is_none() => dtmf = Some(pt),
            _ => {}
        }
    }
    let (codec, payload_type) = codec?;
    Some(Negotiated { codec, payload_type, dtmf, remote: SocketAddr::new(ip, media.port) })
}

fn codec_name(codec: G711) -> &'static str {
    match codec {
        G711::Ulaw => "PCMU",
        G711::Alaw => "PCMA",
    }
}

/// Q.850 cause to SIP status, after RFC 3398 section 7.2.4.1.
fn q850_to_sip(cause: u8) -> u16 {
    match cause {
        1 | 3 => 404,
        17 => 486,
        18 | 19 => 480,
        21 => 403,
        22 => 410,
        27 => 502,
        28 => 484,
        29 => 501,
        31 => 480,
        34 | 38 | 41 | 42 | 47 => 503,
        55 | 57 => 403,
        58 | 65 | 79 => 488,
        88 => 488,
        102 => 504,
        _ => 500,
    }
}

/// Transaction key (RFC 3261 17.2.3): branch, sent-by and method for RFC 3261
/// peers; for RFC 2543 ones, what identifies the request without a magic branch.
fn transaction_key(request: &Request, via: &Via, method: Method) -> String {
    match via.branch().filter(|b| transaction::is_rfc3261_branch(b)) {
        Some(branch) => format!("{branch}|{}|{}", via.sent_by(), method.as_str()),
        None => format!(
            "2543|{}|{}|{}|{}",
            request.call_id().unwrap_or_default(),
            request.cseq().map(|c| c.seq).unwrap_or(0),
            request.from().ok().and_then(|f| f.tag().map(str::to_string)).unwrap_or_default(),
            method.as_str()
        ),
    }
}

fn set_to_tag(response: &mut Response, tag: &str) {
    if let Some(to) = response.headers.get("To").map(str::to_string) {
        if let Ok(mut to) = NameAddr::parse(&to) {
            if to.tag().is_none() {
                to.params.set("tag", Some(tag.to_string()));
                response.headers.set("To", to.to_string());
            }
        }
    }
}

fn without_tag(addr: &NameAddr) -> String {
    let mut addr = addr.clone();
    addr.params.remove("tag");
    addr.to_string()
}

fn host_port(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// An extension as a URI user part: only characters that need no escaping.
fn exten_for_uri(exten: &str) -> String {
    exten.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.!~*+".contains(*c)).collect()
}
