//! The SIP endpoint, sans IO: a registrar and a user agent server that
//! answers calls into the dialplan, and the client side the switch needs for
//! bridges, `originate` and upstream registrations.
//!
//! This file holds the dispatch (requests to transactions and handlers,
//! responses to our client transactions), the timers, sending and the call
//! table; `register.rs` (REGISTER and authentication), `invite.rs` (inbound
//! calls and their dialogs), `dial.rs` (outbound legs: bridges and
//! `originate`), `media.rs` (RTP), `gateways.rs` (registrations upstream)
//! and `show.rs` (control-socket views) each add one part of it.
//!
//! Fed with `(now, datagram)` on the signalling socket and on each call's
//! media port, and with timer expiries; polled for datagrams, events and its
//! next deadline, exactly like the IAX2 [`Endpoint`](crate::iax2::endpoint::Endpoint).
//! It decides which media ports exist and the runtime binds them: polled for
//! [`SocketRequest`]s (always before the datagrams that need them), told
//! of a port the host would not bind with [`SipEndpoint::media_socket_failed`].
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
mod gateways;
mod invite;
mod media;
mod media_clock;
mod protocol;
mod register;
mod show;
mod transactions;

pub use dial::SipTarget;
pub use show::{GatewayView, SipChannelView, SipRegistrationView, SipStatsView};
pub use transactions::TransactionUsage;

use super::call::{CallMedia, Dialog, Negotiated, SipCall};
use super::digest::{Authorization, Challenge, CountCheck, NonceCheck, NonceCounts, NonceIssuer};
use super::gateway::{GatewayRegistration, GatewayState, Outcome as GatewayOutcome};
use super::header::{Contact, Method, NameAddr, Via};
use super::message::{reason_phrase, Headers, Message, ParseError, Request, Response};
use super::ports::PortPool;
use super::registrar::{ContactRequest, Refused, Registrar};
use super::sdp::SessionDescription;
use super::transaction::{
    self, AckOutcome, InviteClientTransaction, InviteServerTransaction, NonInviteClientTransaction,
    NonInviteServerTransaction, Timers, TransactionEvent, Transport,
};
use super::uri::Uri;
use crate::config::{SipSettings, SipUser};
use crate::dialplan::{App, Dialplan};
use crate::droplog::{reason_key, DropLog};
use crate::event::Event;
use crate::guard::{Guard, Verdict};
use crate::media::G711;
use crate::protocol::{ResolvedHosts, SocketId, SocketRequest, Transmit};
use crate::rtp::{self, RtpPacket};
use transactions::{drain_events, Client, ClientTxn, Priority, Server, Transactions};

/// How long a nonce stays fresh; older ones get `stale=true`.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// The 20 ms media clock.
const FRAME: Duration = Duration::from_millis(20);
/// `Retry-After` of a REGISTER refused for memory: this many seconds plus up
/// to as many again at random, so refused clients do not return in lockstep.
const REGISTER_RETRY_AFTER: u32 = 10;
/// Distinct reasons counted in `show stats`.
const MAX_DROP_COUNTERS: usize = 64;
/// What we say we are.
pub(crate) const USER_AGENT: &str = concat!("switch/", env!("CARGO_PKG_VERSION"));
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO";

/// Traffic counters for `show stats`.
#[derive(Clone, Debug, Default)]
pub struct SipStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub challenges: u64,
    /// REGISTERs that refreshed a binding without changing it (no event).
    pub refreshes: u64,
    pub dropped: BTreeMap<String, u64>,
}

/// The outcome of checking a request's credentials.
enum Auth {
    Ok(SipUser),
    /// Answered already (challenge or 403): nothing more to do.
    Refused,
}

pub struct SipEndpoint {
    settings: Arc<SipSettings>,
    /// `settings.users` by name: a carrier's hundred thousand phones are
    /// looked up on every authenticated request.
    users: BTreeMap<String, usize>,
    dialplan: Dialplan,
    rng: ChaCha20Rng,
    epoch: Instant,
    timers: Timers,
    nonces: NonceIssuer,
    /// Highest nonce count accepted per recent nonce (replay refusal).
    nonce_counts: NonceCounts,
    /// Authentication failures per source and user: silences and bans.
    guard: Guard,
    drops: DropLog,
    /// Key of the To tags derived by [`Self::to_tag`].
    tag_key: [u8; 16],
    registrar: Registrar,
    /// `[sip.gateways.NAME]`: our registrations upstream.
    gateways: Vec<GatewayRegistration>,
    txns: Transactions,
    calls: BTreeMap<u32, SipCall>,
    /// (Call-ID, our tag) -> call.
    by_dialog: BTreeMap<(String, String), u32>,
    /// Our RTP port -> call.
    by_media_port: BTreeMap<u16, u32>,
    ports: PortPool,
    media_sockets: VecDeque<SocketRequest>,
    /// NAT keepalives: (user, contact) -> (reach address, next OPTIONS).
    /// Bounded by the bindings: an entry whose binding is gone goes at its next ping.
    nat_pings: register::NatPings,
    next_call: u32,
    media_tick: Option<Instant>,
    media_clock: media_clock::MediaClock,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: SipStats,
}

impl SipEndpoint {
    pub fn new(settings: Arc<SipSettings>, resolved: &ResolvedHosts, mut rng: ChaCha20Rng, now: Instant) -> Self {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let mut tag_key = [0u8; 16];
        rng.fill_bytes(&mut tag_key);
        let timers = Timers::default();
        let mut endpoint = SipEndpoint {
            tag_key,
            settings: settings.clone(),
            users: BTreeMap::new(),
            dialplan: Dialplan::default(),
            rng,
            epoch: now,
            timers,
            nonces: NonceIssuer::new(key, NONCE_LIFETIME),
            nonce_counts: NonceCounts::default(),
            guard: Guard::new("sip", settings.guard),
            drops: DropLog::default(),
            registrar: Registrar::default(),
            gateways: Vec::new(),
            // Completed transactions absorb the retransmissions of their
            // first T2 (at T1, 3 T1, 7 T1) before a REGISTER may shed them.
            txns: Transactions::new(settings.transaction_memory, timers.t2, timers.timeout()),
            calls: BTreeMap::new(),
            by_dialog: BTreeMap::new(),
            by_media_port: BTreeMap::new(),
            ports: PortPool::new(settings.rtp_ports.clone(), &[settings.listen.port()]),
            media_sockets: VecDeque::new(),
            nat_pings: register::NatPings::default(),
            next_call: 1,
            media_tick: None,
            media_clock: media_clock::MediaClock::default(),
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
        self.users = settings.users.iter().enumerate().map(|(i, u)| (u.name.clone(), i)).collect();
        for user in self.registrar.retain_users(|u| self.users.contains_key(u)) {
            self.prune_nat_pings(now, &user);
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
        if settings.rtp_ports != self.settings.rtp_ports {
            self.ports.resize(settings.rtp_ports.clone(), &[settings.listen.port()]);
        }
        self.txns.set_budget(settings.transaction_memory);
        self.guard.set_settings(settings.guard);
        let timeout_changed = settings.rtp_timeout != self.settings.rtp_timeout;
        self.settings = settings;
        if timeout_changed {
            self.rewatch_media();
        }
        self.txns.settle(now, &mut self.events);
    }

    pub fn set_dialplan(&mut self, dialplan: Dialplan) {
        self.dialplan = dialplan;
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Sockets to open or close; poll them all before [`Self::poll_transmit`].
    pub fn poll_media_socket(&mut self) -> Option<SocketRequest> {
        self.media_sockets.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> &SipStats {
        &self.stats
    }

    /// What the open transactions hold against `[sip] transaction_memory`.
    pub fn transaction_usage(&self) -> TransactionUsage {
        self.txns.usage()
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) has work.
    /// Transactions are indexed by deadline, so this does not grow with them.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let gateways = self.gateways.iter().filter_map(|g| g.next_attempt);
        let guard = [self.guard.poll_timeout(), self.drops.poll_timeout()].into_iter().flatten();
        gateways
            .chain(self.nat_pings.next())
            .chain(self.txns.next_deadline())
            .chain(self.media_tick)
            .chain(self.registrar.next_expiry())
            .chain(guard)
            .min()
    }

    /// A datagram on the signalling socket.
    pub fn handle_signalling(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        match self.guard.source_verdict(now, from.ip()) {
            Verdict::Allow => {}
            Verdict::Throttled => {
                return self.drop_datagram(now, from, "source throttled after failed authentication".into())
            }
            Verdict::Banned => {
                return self.drop_datagram(now, from, "source banned after failed authentication".into())
            }
        }
        match Message::parse(datagram) {
            Ok(Message::Request(request)) => self.on_request(now, from, request, datagram.len()),
            Ok(Message::Response(response)) => self.on_response(now, response),
            // CRLF keep-alives (RFC 5626 3.5.1 style) need no answer over UDP.
            Err(ParseError::Keepalive) => {}
            Err(e) => self.drop_datagram(now, from, format!("malformed SIP: {e}")),
        }
        self.txns.settle(now, &mut self.events);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.guard.handle_timeout(now, &mut self.events);
        self.drops.handle_timeout(now, &mut self.events);
        for key in self.txns.servers.due(now) {
            self.server_timeout(now, &key);
        }
        self.txns.expire_completed(now);
        for key in self.txns.clients.due(now) {
            let Some(client) = self.txns.clients.get_mut(&key) else { continue };
            let (destination, call) = (client.destination, client.txn.call());
            let (resend, events) = client.txn.handle_timeout(now);
            if events.contains(&TransactionEvent::Terminated) {
                self.txns.clients.remove(&key);
            }
            if let Some(bytes) = resend {
                self.send(SocketId::Listener, destination, bytes);
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
            for (user, none_left) in self.registrar.expire(now) {
                self.prune_nat_pings(now, &user);
                if none_left {
                    self.events.push_back(Event::SipUnregistered { user, reason: "expired".into() });
                }
            }
        }
        self.nat_keepalives(now);
        if self.media_tick.is_some_and(|t| t <= now) {
            self.on_media_tick(now);
        }
        self.txns.end_overload(now, &mut self.events);
        self.txns.settle(now, &mut self.events);
    }

    /// Hangs up every call with a BYE; returns how many.
    pub fn hangup_all(&mut self, now: Instant) -> usize {
        let ids: Vec<u32> = self.calls.keys().copied().collect();
        for &id in &ids {
            self.hang_up(now, id, "hangup all");
        }
        self.txns.settle(now, &mut self.events);
        ids.len()
    }

    // ---- requests ----

    fn on_request(&mut self, now: Instant, from: SocketAddr, request: Request, size: usize) {
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
            return self.drop_datagram(now, from, reason);
        }
        let Ok(via) = request.top_via() else {
            return self.drop_datagram(now, from, "unreadable Via".into());
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
        if let Some(server) = self.txns.servers.get_mut(&key) {
            let destination = server.destination;
            if let Some(bytes) = server.txn.on_request_retransmission(now) {
                self.send(SocketId::Listener, destination, bytes);
            }
            return;
        }
        if let Some((destination, bytes)) = self.txns.completed(&key) {
            return self.send(SocketId::Listener, destination, bytes);
        }
        if request.to().ok().and_then(|t| t.tag().map(str::to_string)).is_some() {
            return self.in_dialog(now, from, key, request, size);
        }
        match request.method {
            // Refused before authentication: a REGISTER that will not get
            // state is not worth a digest computation.
            Method::Register
                if !self.txns.admit(now, Transactions::estimate(&key, size), Priority::Register, &mut self.events) =>
            {
                let mut response = self.response(&request, from, 503);
                let retry = REGISTER_RETRY_AFTER + self.rng.next_u32() % (REGISTER_RETRY_AFTER + 1);
                response.headers.push("Retry-After", retry.to_string());
                self.reply_stateless(from, &response);
            }
            Method::Register => self.on_register(now, from, key, &request),
            Method::Invite => self.on_invite(now, from, key, &request, size),
            Method::Options if self.registrar.is_registered_source(now, from) => {
                let mut response = self.response(&request, from, 200);
                response.headers.push("Allow", ALLOW);
                response.headers.push("Accept", "application/sdp");
                self.reply_stateless(from, &response);
            }
            // Scanners probe with OPTIONS first: strangers learn nothing.
            Method::Options => self.drop_datagram(now, from, "OPTIONS from an address with no registration".into()),
            _ if self.registrar.is_registered_source(now, from) => {
                let mut response = self.response(&request, from, 405);
                response.headers.push("Allow", ALLOW);
                self.reply_stateless(from, &response);
            }
            _ => self.drop_datagram(
                now,
                from,
                format!("{} from an address with no registration", request.method.as_str()),
            ),
        }
    }

    // ---- responses to our requests (INVITE, BYE, CANCEL, REGISTER) ----

    fn on_response(&mut self, now: Instant, response: Response) {
        let Ok(via) = response.top_via() else { return };
        let Some(branch) = via.branch() else { return };
        let Ok(cseq) = response.cseq() else { return };
        let key = format!("{branch}|{}", cseq.method.as_str());
        let Some(client) = self.txns.clients.get_mut(&key) else {
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
                (outcome.pass_up, outcome.send, drain_events(txn), Some(*call))
            }
            ClientTxn::NonInvite(txn) => {
                let new = txn.on_response(now, response.status);
                (new, None, drain_events(txn), None)
            }
        };
        if events.contains(&TransactionEvent::Terminated) {
            self.txns.clients.remove(&key);
        }
        if let Some(bytes) = send {
            self.send(SocketId::Listener, destination, bytes);
        }
        match (new, call) {
            (true, Some(id)) => self.on_callee_response(now, id, &response),
            (true, None) => self.on_gateway_answer(now, &key, Some(&response)),
            _ => {}
        }
    }

    // ---- calls ----

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

    /// Ends an answered call with a BYE saying the dialplan's Q.850 cause
    /// (`Reason: Q.850;cause=17`, RFC 3326), as Asterisk's `Hangup(17)` does.
    pub(super) fn bye_with_cause(&mut self, now: Instant, id: u32, why: &str, cause: u8) {
        let (bye, destination) = self.in_dialog_request(id, Method::Bye, true);
        if let Some(mut bye) = bye {
            bye.headers.push("Reason", format!("Q.850;cause={cause}"));
            self.start_client(now, bye, destination, None);
        }
        self.end_call(now, id, why);
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
        let (txn, first) = match call {
            Some(call) => {
                let mut txn = InviteClientTransaction::new(now, self.timers, Transport::Unreliable, bytes);
                let first = txn.poll_transmit();
                (ClientTxn::Invite { txn, call, invite: Box::new(request) }, first)
            }
            None => {
                let mut txn = NonInviteClientTransaction::new(now, self.timers, Transport::Unreliable, bytes);
                let first = txn.poll_transmit();
                (ClientTxn::NonInvite(txn), first)
            }
        };
        self.txns.insert_client(now, key, Client::new(txn, destination), &mut self.events);
        if let Some(bytes) = first {
            self.send(SocketId::Listener, destination, bytes);
        }
    }

    /// Removes a call from every index and gives its ports back, reporting nothing.
    fn forget(&mut self, now: Instant, id: u32) -> Option<SipCall> {
        let call = self.calls.remove(&id)?;
        self.media_clock.forget(id);
        self.by_dialog.remove(&(call.dialog.call_id.clone(), call.dialog.local_tag.clone()));
        self.release_port(now, id, call.media.local_port);
        if self.calls.is_empty() {
            self.media_tick = None;
        }
        Some(call)
    }

    /// The call is over: its figures are reported, and a bridged other leg is hung up too.
    fn end_call(&mut self, now: Instant, id: u32, cause: &str) {
        let Some(call) = self.forget(now, id) else { return };
        self.report_refused(id, &call.media.strict);
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
        let Some(server) = self.txns.servers.get_mut(key) else { return };
        let (destination, call) = (server.destination, server.call);
        let resend = server.txn.handle_timeout(now);
        let events = drain_events(&mut server.txn);
        if let Some(bytes) = resend {
            self.send(SocketId::Listener, destination, bytes);
        }
        for event in events {
            match event {
                TransactionEvent::NoAckFor2xx => {
                    if let Some(id) = call {
                        self.hang_up(now, id, "no ACK for 200 OK");
                    }
                }
                TransactionEvent::Terminated => {
                    self.txns.servers.remove(key);
                    if let Some(c) = call.and_then(|id| self.calls.get_mut(&id)) {
                        c.invite = None;
                    }
                }
                TransactionEvent::TimedOut | TransactionEvent::TransportError => {}
            }
        }
    }

    /// Sends a response through the INVITE server transaction `key`.
    fn respond(&mut self, now: Instant, key: &str, response: &Response) {
        let Some(server) = self.txns.servers.get_mut(key) else { return };
        let destination = server.destination;
        if let Some(bytes) = server.txn.respond(now, response.status, response.encode()) {
            self.send(SocketId::Listener, destination, bytes);
        }
    }

    /// Answers an authenticated non-INVITE request with a final response in a
    /// new server transaction, kept (memory permitting) so that
    /// retransmissions of the request get the same answer.
    fn reply_in_transaction(&mut self, now: Instant, from: SocketAddr, key: String, response: &Response) {
        let mut txn = NonInviteServerTransaction::new(now, self.timers, Transport::Unreliable);
        let Some(bytes) = txn.respond(now, response.status, response.encode()) else { return };
        self.send(SocketId::Listener, from, bytes);
        let priority = match response.cseq() {
            Ok(c) if c.method == Method::Register => Priority::Register,
            _ => Priority::Call,
        };
        self.txns.complete(now, key, txn, from, priority, &mut self.events);
    }

    fn reply_stateless(&mut self, to: SocketAddr, response: &Response) {
        self.send(SocketId::Listener, to, response.encode());
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

    fn send(&mut self, socket: SocketId, destination: SocketAddr, payload: Vec<u8>) {
        match socket {
            SocketId::Listener => self.stats.datagrams_out += 1,
            SocketId::Media(_) => self.stats.rtp_out += 1,
        }
        self.out.push_back(Transmit { socket, destination, payload });
    }

    fn drop_datagram(&mut self, now: Instant, from: SocketAddr, reason: String) {
        let key = reason_key(&reason);
        // The method of an unknown request is the sender's text: a bounded
        // number of counters, the rest under one key.
        let counters = self.stats.dropped.len();
        let counter = match self.stats.dropped.get_mut(key) {
            Some(n) => n,
            None if counters >= MAX_DROP_COUNTERS => self.stats.dropped.entry("other".into()).or_default(),
            None => self.stats.dropped.entry(key.to_string()).or_default(),
        };
        *counter += 1;
        self.drops.record(now, from, key, &reason, &mut self.events);
    }

    /// `sip unban IP`: lifts a ban or silence; whether there was one.
    pub fn unban(&mut self, source: IpAddr) -> bool {
        self.guard.unban(source, &mut self.events)
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
