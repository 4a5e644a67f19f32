//! The IAX2 endpoint: one UDP socket's worth of protocol state, sans IO.
//!
//! Fed with `(now, datagram)` and timer expiries; polled for datagrams to
//! send, events to report and the next deadline. It demultiplexes frames to
//! dialogs by call number, applies call-token and call-number limits before a
//! source may hold any state, and runs registration (both roles) and qualify.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use rand_chacha::ChaCha20Rng;

mod calls;
mod pacing;
mod protocol;
mod remote;
mod saved;
mod table;
mod views;

pub use crate::protocol::{Originate, Placement, ResolvedHosts};
pub use views::{ChannelView, IaxStatsView, PeerView, RegistryView};

use super::auth;
use super::call::{self, Call};
use super::callno::{CallNumbers, Validation, STATELESS_CALL_NUMBER};
use super::calltoken::CallTokens;
use super::dialog::{Dialog, GaveUp, Receipt};
use super::frame::{self, Frame, FullFrame};
use super::ie::{self, Ie, IeLookup};
use super::qualify::PeerQualify;
use super::registrar::{self, Refusal, Registrar};
use super::registration::{RegState, Registration};
use super::subclass::{FrameType, IaxSubclass};
use super::trunk::Trunks;
use super::Transmit;
use crate::config::{CallTokenRequirement, Host, IaxConfig, PeerConfig};
use crate::dialplan::Dialplan;
use crate::event::{Event, PeerState};
use crate::guard::{Guard, GuardSettings, Verdict};
use remote::RemoteCalls;

/// How long an ended dialog stays to re-ACK retransmissions of its last frames.
const LINGER: Duration = Duration::from_secs(10);
/// `delayreject=yes`: REGREJ waits this long, slowing down password guessing.
const DELAY_REJECT: Duration = Duration::from_secs(1);

/// What each dialog is for.
enum Role {
    /// A peer registering to us.
    Registrar(RegistrarExchange),
    /// Our REGREQ to a server: the registration whose dialog this is.
    Registrant,
    /// Our POKE to a qualified peer.
    Poke { peer: String },
    /// A call, either way.
    Call(Box<Call>),
}

struct RegistrarExchange {
    challenge: Option<String>,
    /// A REGREJ held back by `delayreject`.
    reject_at: Option<Instant>,
}

struct Entry {
    dialog: Dialog,
    role: Role,
}

/// Traffic counters, for `show stats` and load reports.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// UDP payload bytes (add the IP and UDP headers for bytes on the wire).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped: BTreeMap<String, u64>,
    pub call_tokens_issued: u64,
    pub pongs_sent: u64,
}

pub struct Endpoint {
    config: Arc<IaxConfig>,
    resolved: ResolvedHosts,
    rng: ChaCha20Rng,
    epoch: Instant,
    /// UNIX time at `epoch`, when the runtime has told us (DATETIME IEs).
    unix_at_epoch: Option<u64>,
    tokens: CallTokens,
    callnos: CallNumbers,
    dialogs: table::DialogTable,
    /// Dialogs by (source, its call number): new-dialog requests, to
    /// recognise their retransmissions, and the calls of mini frames and
    /// trunk entries.
    by_remote: RemoteCalls,
    /// Scratch for [`Endpoint::trunk_frame`]: each entry's call, found before any is handled.
    trunk_locals: Vec<Option<u16>>,
    /// Buffers reused for voice: the frame a call's source generates, and
    /// frames on their way through a jitter buffer (one allocation per
    /// frame otherwise).
    voice_scratch: Vec<u8>,
    voice_pool: Vec<Vec<u8>>,
    /// Scratch for [`Endpoint::media_tick`]: the calls it visits.
    tick_calls: Vec<u16>,
    registrar: Registrar,
    registrations: Vec<Registration>,
    qualify: BTreeMap<String, PeerQualify>,
    /// Peers that have sent a call token: `requirecalltoken=auto` requires one from them from then on.
    token_capable: BTreeSet<String>,
    dialplan: Dialplan,
    /// Voice waiting for the next trunk tick, per trunk peer.
    trunks: Trunks,
    /// Next 20 ms media tick, while any call is up.
    media_tick: Option<Instant>,
    /// Next `trunkfreq` tick, while any trunk carries calls.
    trunk_tick: Option<Instant>,
    /// Originated calls waiting for their peer to have room (see [`pacing`]).
    queued: VecDeque<pacing::Queued>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    drops: crate::droplog::DropLog,
    /// Authentication failures per source and peer name: silences and bans.
    guard: Guard,
    stats: Stats,
}

impl Endpoint {
    pub fn new(config: Arc<IaxConfig>, resolved: ResolvedHosts, mut rng: ChaCha20Rng, now: Instant) -> Self {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let mut endpoint = Endpoint {
            config: Arc::new(IaxConfig {
                general: config.general.clone(),
                peers: Vec::new(),
                registrations: Vec::new(),
                callnumberlimits: Vec::new(),
            }),
            resolved: ResolvedHosts::default(),
            rng,
            epoch: now,
            unix_at_epoch: None,
            tokens: CallTokens::new(key),
            callnos: CallNumbers::default(),
            dialogs: table::DialogTable::default(),
            by_remote: RemoteCalls::default(),
            trunk_locals: Vec::new(),
            voice_scratch: Vec::new(),
            voice_pool: Vec::new(),
            tick_calls: Vec::new(),
            registrar: Registrar::default(),
            registrations: Vec::new(),
            qualify: BTreeMap::new(),
            token_capable: BTreeSet::new(),
            dialplan: Dialplan::default(),
            trunks: Trunks::default(),
            media_tick: None,
            trunk_tick: None,
            queued: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            drops: Default::default(),
            guard: Guard::new("iax2", GuardSettings::default()),
            stats: Stats::default(),
        };
        endpoint.reconfigure(now, config, resolved);
        endpoint
    }

    /// Applies a new configuration without dropping what still holds: unchanged
    /// registrations and observed peer states survive; changed ones restart now.
    pub fn reconfigure(&mut self, now: Instant, config: Arc<IaxConfig>, resolved: ResolvedHosts) {
        let mut old = std::mem::take(&mut self.registrations);
        for line in &config.registrations {
            let server = resolved.addr(&line.host, line.port);
            match old.iter().position(|r| &r.line == line && r.server == server) {
                Some(i) => self.registrations.push(old.remove(i)),
                None => self.registrations.push(Registration::new(line.clone(), server, now)),
            }
        }
        for gone in old {
            if let Some(call) = gone.call() {
                self.remove_dialog(call);
            }
        }

        for name in self.registrar.retain_configured(&config) {
            self.events.push_back(Event::PeerUnregistered { peer: name, reason: "removed from configuration".into() });
        }

        let mut qualify = BTreeMap::new();
        for peer in config.peers.iter().filter(|p| p.kind.is_peer()) {
            let entry = match self.qualify.remove(&peer.name) {
                Some(mut q) => {
                    q.update(peer);
                    Some(q)
                }
                None => PeerQualify::new(peer).map(|mut q| {
                    q.next_poke = Some(now);
                    q
                }),
            };
            if let Some(q) = entry {
                qualify.insert(peer.name.clone(), q);
            }
        }
        for (_, q) in std::mem::take(&mut self.qualify) {
            if let Some((call, _)) = q.in_flight {
                self.remove_dialog(call);
            }
        }
        self.qualify = qualify;
        self.config = config;
        self.resolved = resolved;
        self.dialogs.reschedule();
    }

    /// Tells the endpoint the civil time at `now` (from the runtime's world),
    /// which it sends in DATETIME IEs as chan_iax2 does in REGACK and NEW.
    pub fn set_unix_time(&mut self, now: Instant, unix_secs: u64) {
        let since_epoch = now.saturating_duration_since(self.epoch).as_secs();
        self.unix_at_epoch = Some(unix_secs.saturating_sub(since_epoch));
    }

    /// The DATETIME IE value for `now`, if the civil time is known.
    fn datetime(&self, now: Instant) -> Option<u32> {
        let unix = self.unix_at_epoch? + now.saturating_duration_since(self.epoch).as_secs();
        Some(ie::datetime(unix))
    }

    /// Replaces the dialplan (from `switch.toml`); calls in progress keep their application.
    pub fn set_dialplan(&mut self, dialplan: Dialplan) {
        self.dialplan = dialplan;
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.datagram(now, from, data);
        self.start_queued(now);
        self.dialogs.reschedule();
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let data = match self.decrypt(from, data) {
            Ok(data) => data,
            Err(reason) => return self.drop_datagram(now, from, reason),
        };
        if let Some(trunk) = frame::decode_trunk_entries(&data) {
            return match trunk {
                Ok(entries) => self.trunk_frame(now, from, entries),
                Err(e) => self.drop_datagram(now, from, &format!("malformed: {e}")),
            };
        }
        match frame::decode(&data) {
            Ok(Frame::Full(f)) => self.handle_full(now, from, f),
            Ok(Frame::Mini(m)) => self.mini_frame(now, from, m),
            Ok(Frame::Trunk(t)) => {
                let entries = t.entries.iter().map(|e| (e.call, e.timestamp, &e.payload[..])).collect();
                self.trunk_frame(now, from, entries)
            }
            Ok(Frame::MiniVideo(_)) => self.drop_datagram(now, from, "video is not supported"),
            Err(e) => self.drop_datagram(now, from, &format!("malformed: {e}")),
        }
    }

    /// Decrypts a datagram of an encrypted call, found by its clear call
    /// numbers as chan_iax2 does; anything else passes through untouched.
    fn decrypt<'d>(&mut self, from: SocketAddr, data: &'d [u8]) -> Result<Cow<'d, [u8]>, &'static str> {
        let word = |i: usize| data.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) & 0x7fff);
        let local = match data.first() {
            Some(b) if b & 0x80 != 0 => word(2).filter(|dst| *dst != 0),
            Some(_) => word(0).filter(|src| *src != 0).and_then(|src| self.by_remote.get(from, src)),
            None => None,
        };
        let Some(entry) = local.and_then(|l| self.dialogs.get_mut(&l)) else { return Ok(Cow::Borrowed(data)) };
        let Some(cipher) = entry.dialog.rx_cipher.as_ref().filter(|_| entry.dialog.remote_addr == from) else {
            return Ok(Cow::Borrowed(data));
        };
        let plain = cipher.decrypt_datagram(data).map_err(|_| "cannot decrypt")?;
        if frame::decode(&plain).is_err() {
            return Err("decrypts to garbage (wrong key?)");
        }
        if !entry.dialog.is_encrypting() {
            // The callee answers encrypted once the caller's first encrypted frame checks out.
            let cipher = cipher.clone();
            let seed = self.rng.next_u64();
            if let Some(entry) = local.and_then(|l| self.dialogs.get_mut(&l)) {
                entry.dialog.encrypt_with(cipher, seed);
            }
        }
        Ok(Cow::Owned(plain))
    }

    fn handle_full(&mut self, now: Instant, from: SocketAddr, f: FullFrame) {
        if f.dst_call != 0 {
            match self.dialogs.get(&f.dst_call) {
                Some(e) if e.dialog.remote_addr == from => self.handle_dialog_frame(now, f.dst_call, f),
                Some(_) => self.drop_datagram(now, from, "call number belongs to another address"),
                // The ACK of a stateless PONG, or of a dialog already gone: expected, not news.
                None if f.iax() == Some(IaxSubclass::Ack) => {
                    self.count_drop("acknowledgement for no call");
                }
                None => self.drop_datagram(now, from, "frame for unknown call"),
            }
            return;
        }
        if let Some(local) = self.by_remote.get(from, f.src_call) {
            return self.handle_dialog_frame(now, local, f);
        }
        if f.frame_type != FrameType::Iax {
            return self.drop_datagram(now, from, "non-IAX full frame for no call");
        }
        match f.iax() {
            Some(IaxSubclass::Poke) => self.pong(from, &f),
            Some(IaxSubclass::RegReq | IaxSubclass::RegRel | IaxSubclass::New) => {
                // A guesser starts no new exchange while silenced or banned;
                // calls and registrations already up go on, so a trunk
                // partner with a wrong secret still answers our requests.
                match self.guard.source_verdict(now, from.ip()) {
                    Verdict::Allow => self.new_dialog(now, from, f),
                    Verdict::Throttled => self.drop_datagram(now, from, "source throttled after failed authentication"),
                    Verdict::Banned => self.drop_datagram(now, from, "source banned after failed authentication"),
                }
            }
            Some(IaxSubclass::Ack | IaxSubclass::Inval | IaxSubclass::Vnak) => {
                self.count_drop("acknowledgement for no call");
            }
            _ => self.drop_datagram(now, from, "unexpected frame for no call"),
        }
    }

    /// Answers a POKE without keeping any state, as `nmap --script iax2-version`
    /// expects. The PONG is no larger than the POKE and is never retransmitted,
    /// so a spoofed POKE cannot be turned into amplified traffic.
    fn pong(&mut self, to: SocketAddr, poke: &FullFrame) {
        let pong = FullFrame::new_iax(
            STATELESS_CALL_NUMBER,
            poke.src_call,
            poke.timestamp,
            0,
            poke.oseqno.wrapping_add(1),
            IaxSubclass::Pong,
            &[],
        );
        self.stats.pongs_sent += 1;
        self.send_stateless(to, &pong);
    }

    fn send_stateless(&mut self, to: SocketAddr, frame: &FullFrame) {
        let mut payload = Vec::with_capacity(12 + frame.payload.len());
        if frame.encode(&mut payload).is_ok() {
            self.out.push_back(Transmit { destination: to, payload });
        }
    }

    /// A REGREQ, REGREL or NEW opening a dialog: call token and limits first, state after.
    fn new_dialog(&mut self, now: Instant, from: SocketAddr, f: FullFrame) {
        let ies = match f.ies() {
            Ok(ies) => ies,
            Err(e) => return self.drop_datagram(now, from, &format!("malformed IEs: {e}")),
        };
        let username = ies.username().map(str::to_owned);
        let token = ies.call_token().map(<[u8]>::to_vec);
        let validation = match token {
            Some(t) if t.is_empty() => {
                let token = self.tokens.issue(from, now - self.epoch);
                let reply = FullFrame::new_iax(
                    STATELESS_CALL_NUMBER,
                    f.src_call,
                    f.timestamp,
                    0,
                    f.oseqno.wrapping_add(1),
                    IaxSubclass::CallToken,
                    &[Ie::CallToken(token)],
                );
                self.stats.call_tokens_issued += 1;
                return self.send_stateless(from, &reply);
            }
            Some(t) => {
                if !self.tokens.validate(&t, from, now - self.epoch, self.config.general.calltokenexpiration) {
                    return self.drop_datagram(now, from, "invalid or expired call token");
                }
                if let Some(u) = &username {
                    self.token_capable.insert(u.to_ascii_lowercase());
                }
                Validation::Validated
            }
            None => {
                if self.token_required(username.as_deref(), from) {
                    self.events.push_back(Event::CallTokenRequired { from });
                    let refusal = if f.iax() == Some(IaxSubclass::New) {
                        IaxSubclass::Reject
                    } else {
                        self.events.push_back(Event::PeerRegistrationRefused {
                            peer: username.unwrap_or_default(),
                            addr: from,
                            cause: Refusal::CallTokenRequired.reason().into(),
                        });
                        IaxSubclass::RegRej
                    };
                    let rej = FullFrame::new_iax(
                        STATELESS_CALL_NUMBER,
                        f.src_call,
                        f.timestamp,
                        0,
                        f.oseqno.wrapping_add(1),
                        refusal,
                        &[
                            Ie::Cause("CallToken support required".into()),
                            Ie::CauseCode(call::cause::FACILITY_REJECTED),
                        ],
                    );
                    return self.send_stateless(from, &rej);
                }
                Validation::Unvalidated
            }
        };
        if f.iax() == Some(IaxSubclass::New) {
            return self.new_call(now, from, f, validation);
        }
        let local = match self.callnos.allocate(&mut self.rng, &self.config, from.ip(), validation) {
            Ok(n) => n,
            Err(e) => return self.drop_datagram(now, from, &format!("no call number: {e:?}")),
        };
        let dialog = Dialog::new(local, f.src_call, from, now);
        let role = Role::Registrar(RegistrarExchange { challenge: None, reject_at: None });
        self.dialogs.insert(local, Entry { dialog, role });
        self.by_remote.insert(from, f.src_call, local);
        self.handle_dialog_frame(now, local, f);
    }

    /// Whether a source that sent no CALLTOKEN IE must be refused.
    fn token_required(&self, username: Option<&str>, from: SocketAddr) -> bool {
        if self.config.general.calltokenoptional.iter().any(|net| net.contains(from.ip())) {
            return false;
        }
        let requirement = username
            .and_then(|u| self.config.peers.iter().find(|p| p.name.eq_ignore_ascii_case(u)))
            .map_or(self.config.general.defaults.requirecalltoken, |p| p.requirecalltoken);
        match requirement {
            CallTokenRequirement::Yes => true,
            CallTokenRequirement::No => false,
            CallTokenRequirement::Auto => {
                username.is_some_and(|u| self.token_capable.contains(&u.to_ascii_lowercase()))
            }
        }
    }

    fn handle_dialog_frame(&mut self, now: Instant, local: u16, f: FullFrame) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        if f.iax() == Some(IaxSubclass::CallToken) {
            if matches!(entry.role, Role::Call(_)) {
                return self.call_token_for_new(now, local, &f);
            }
            return self.registrant_call_token(now, local, &f);
        }
        match entry.dialog.receive(now, &f, &mut self.out) {
            Receipt::InOrder => {}
            Receipt::Unsequenced | Receipt::Duplicate | Receipt::OutOfOrder => return,
        }
        if entry.dialog.is_finished() {
            return entry.dialog.ack(&f, &mut self.out);
        }
        if f.iax() == Some(IaxSubclass::Inval) {
            return self.dialog_failed(now, local);
        }
        match entry.role {
            Role::Registrar(_) => self.registrar_frame(now, local, &f),
            Role::Registrant => self.registrant_frame(now, local, &f),
            Role::Poke { .. } => self.poke_frame(now, local, &f),
            Role::Call(_) => self.call_frame(now, local, &f),
        }
    }

    fn registrar_frame(&mut self, now: Instant, local: u16, f: &FullFrame) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        let release = match f.iax() {
            Some(IaxSubclass::RegReq) => false,
            Some(IaxSubclass::RegRel) => true,
            _ => return entry.dialog.ack(f, &mut self.out),
        };
        let from = entry.dialog.remote_addr;
        let ies = match f.ies() {
            Ok(ies) => ies,
            Err(e) => return self.refuse(now, local, "", &format!("malformed IEs: {e}"), false),
        };
        let Some(username) = ies.username().map(str::to_owned) else {
            return self.refuse(now, local, "", Refusal::NoUsername.reason(), true);
        };
        let md5 = ies.md5_result().map(str::to_owned);
        let password = ies.password().map(str::to_owned);
        let refresh = ies.refresh();
        let Role::Registrar(exchange) = &mut entry.role else { return };
        let challenge = exchange.challenge.clone();

        let peer = match registrar::find_peer(&self.config, &username, from) {
            Ok(peer) => peer,
            // Unknown names get a challenge like known ones, so the answer
            // does not tell a scanner which names exist.
            Err(Refusal::NoSuchPeer) if challenge.is_none() => {
                return self.challenge(now, local, &username, 0x02);
            }
            Err(refusal) => {
                // A name that does not exist, answered with a proof: a guess.
                if refusal == Refusal::NoSuchPeer {
                    self.auth_failed(now, from, &username);
                }
                return self.refuse(now, local, &username, refusal.reason(), true);
            }
        };
        let secrets = peer.secrets.clone();
        let methods = peer.auth.bits() & 0x03;
        let peer_name = peer.name.clone();
        let authenticated = if secrets.is_empty() {
            true
        } else if let (Some(response), Some(challenge)) = (&md5, &challenge) {
            peer.auth.md5 && auth::md5_matches(challenge, response, &secrets)
        } else if let Some(password) = &password {
            peer.auth.plaintext && auth::plaintext_matches(password, &secrets)
        } else if challenge.is_none() {
            if methods == 0 {
                return self.refuse(now, local, &username, Refusal::NoAuthMethod.reason(), true);
            }
            return self.challenge(now, local, &username, methods);
        } else {
            false
        };
        if !authenticated {
            self.auth_failed(now, from, &username);
            return self.refuse(now, local, &username, Refusal::WrongSecret.reason(), true);
        }

        let expiry = if release { 0 } else { registrar::granted_expiry(&self.config.general, refresh) };
        // chan_iax2's order: username, date and time, refresh, apparent address.
        let mut ies = vec![Ie::Username(username)];
        ies.extend(self.datetime(now).map(Ie::DateTime));
        ies.extend([Ie::Refresh(expiry), Ie::ApparentAddr(from)]);
        if let Some(entry) = self.dialogs.get_mut(&local) {
            entry.dialog.send(now, IaxSubclass::RegAck, &ies, &mut self.out);
            entry.dialog.finish(now, LINGER);
        }
        if release {
            if self.registrar.unregister(&peer_name).is_some() {
                self.events.push_back(Event::PeerUnregistered { peer: peer_name.clone(), reason: "released".into() });
            }
            if let Some(q) = self.qualify.get_mut(&peer_name) {
                q.lost_address(&mut self.events);
            }
            return;
        }
        let moved = self.registrar.register(now, &peer_name, from, expiry);
        self.events.push_back(Event::PeerRegistered { peer: peer_name.clone(), addr: from, expiry: expiry.into() });
        if let Some(q) = self.qualify.get_mut(&peer_name) {
            if (moved || q.state != PeerState::Ok) && q.in_flight.is_none() {
                q.next_poke = Some(now);
            }
        }
    }

    fn challenge(&mut self, now: Instant, local: u16, username: &str, methods: u16) {
        let challenge = auth::new_challenge(&mut self.rng);
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        if let Role::Registrar(exchange) = &mut entry.role {
            exchange.challenge = Some(challenge.clone());
        }
        let ies = [Ie::AuthMethods(methods), Ie::Challenge(challenge), Ie::Username(username.to_string())];
        entry.dialog.send(now, IaxSubclass::RegAuth, &ies, &mut self.out);
    }

    /// Refuses a registration: REGREJ, now or after `delayreject`'s pause.
    fn refuse(&mut self, now: Instant, local: u16, username: &str, reason: &str, may_delay: bool) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        self.events.push_back(Event::PeerRegistrationRefused {
            peer: username.to_string(),
            addr: entry.dialog.remote_addr,
            cause: reason.to_string(),
        });
        if self.config.general.authdebug {
            tracing::info!("registration of {username:?} from {} refused: {reason}", entry.dialog.remote_addr);
        }
        // chan_iax2 acknowledges the refused REGREQ before its REGREJ, at once or
        // after `delayreject`'s pause; the peer stops retransmitting meanwhile.
        entry.dialog.ack_latest(now, &mut self.out);
        if may_delay && self.config.general.delayreject {
            if let Role::Registrar(exchange) = &mut entry.role {
                exchange.reject_at = Some(now + DELAY_REJECT);
                return;
            }
        }
        send_regrej(now, &mut entry.dialog, &mut self.out);
    }

    fn registrant_call_token(&mut self, now: Instant, local: u16, f: &FullFrame) {
        let Some(reg) = self.registrations.iter_mut().find(|r| r.call() == Some(local)) else {
            self.count_drop("call token for no request");
            return;
        };
        let token = f.ies().ok().and_then(|ies| ies.call_token().map(<[u8]>::to_vec));
        let (Some(token), true) = (token, reg.take_token()) else {
            self.count_drop("unexpected call token");
            return;
        };
        let ies = reg.regreq_ies(Some(token), None);
        if let Some(entry) = self.dialogs.get_mut(&local) {
            entry.dialog.restart();
            entry.dialog.send(now, IaxSubclass::RegReq, &ies, &mut self.out);
        }
    }

    fn registrant_frame(&mut self, now: Instant, local: u16, f: &FullFrame) {
        let Some(reg) = self.registrations.iter_mut().find(|r| r.call() == Some(local)) else {
            return self.remove_dialog(local);
        };
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        let ies = f.ies().unwrap_or_default();
        match f.iax() {
            Some(IaxSubclass::RegAuth) => {
                let methods = ies.auth_methods();
                let challenge = ies.challenge().map(str::to_owned);
                match reg.auth_response(methods.unwrap_or(0), challenge.as_deref().unwrap_or("")) {
                    Ok(auth) => {
                        let ies = reg.regreq_ies(None, auth);
                        entry.dialog.send(now, IaxSubclass::RegReq, &ies, &mut self.out);
                    }
                    Err(cause) => {
                        entry.dialog.ack(f, &mut self.out);
                        entry.dialog.finish(now, LINGER);
                        reg.rejected(now, cause, &mut self.rng, &mut self.events);
                    }
                }
            }
            Some(IaxSubclass::RegAck) => {
                entry.dialog.ack(f, &mut self.out);
                entry.dialog.finish(now, LINGER);
                let refresh = ies.refresh();
                let apparent = ies.apparent_addr();
                let keepalive =
                    self.config.general.natkeepalive.filter(|_| behind_nat(self.config.general.bind, apparent));
                reg.registered(
                    now,
                    refresh.unwrap_or(super::registration::DEFAULT_REFRESH),
                    apparent,
                    keepalive,
                    &mut self.events,
                );
            }
            Some(IaxSubclass::RegRej) => {
                entry.dialog.ack(f, &mut self.out);
                entry.dialog.finish(now, LINGER);
                let cause = ies.cause().map(str::to_owned);
                reg.rejected(now, cause.unwrap_or_else(|| "no cause given".into()), &mut self.rng, &mut self.events);
            }
            _ => entry.dialog.ack(f, &mut self.out),
        }
    }

    fn poke_frame(&mut self, now: Instant, local: u16, f: &FullFrame) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        entry.dialog.ack(f, &mut self.out);
        if f.iax() != Some(IaxSubclass::Pong) {
            return;
        }
        entry.dialog.finish(now, Duration::ZERO);
        let Role::Poke { peer } = &entry.role else { return };
        let addr = entry.dialog.remote_addr;
        let Some(q) = self.qualify.get_mut(peer) else { return };
        if q.in_flight.map(|(call, _)| call) != Some(local) {
            return;
        }
        let was = q.state;
        q.pong(now, &mut self.events);
        // A server that was unreachable may have restarted and forgotten us:
        // register again now rather than at the next refresh.
        if was == PeerState::Unreachable && q.state != PeerState::Unreachable {
            for reg in self.registrations.iter_mut().filter(|r| r.server == Some(addr)) {
                reg.retry_now(now);
            }
        }
    }

    /// A dialog's peer stopped answering (or said INVAL).
    fn dialog_failed(&mut self, now: Instant, local: u16) {
        let Some(entry) = self.dialogs.get(&local) else { return };
        match &entry.role {
            Role::Registrant => {
                if let Some(reg) = self.registrations.iter_mut().find(|r| r.call() == Some(local)) {
                    reg.timed_out(now, &mut self.rng, &mut self.events);
                }
            }
            Role::Poke { peer } => {
                if let Some(q) = self.qualify.get_mut(peer) {
                    if q.in_flight.map(|(call, _)| call) == Some(local) {
                        q.no_answer(now, &mut self.events);
                    }
                }
            }
            Role::Registrar(_) => {}
            Role::Call(_) => {
                self.end_call(now, local, "no response from the peer", call::cause::NO_ANSWER, false);
            }
        }
        self.remove_dialog(local);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.timeout(now);
        self.start_queued(now);
        self.dialogs.reschedule();
    }

    fn timeout(&mut self, now: Instant) {
        self.drops.handle_timeout(now, &mut self.events);
        self.guard.handle_timeout(now, &mut self.events);
        self.media_tick(now);
        self.trunk_tick(now);
        for local in self.dialogs.due(now) {
            let Some(entry) = self.dialogs.get_mut(&local) else { continue };
            if let Role::Registrar(exchange) = &mut entry.role {
                if exchange.reject_at.is_some_and(|at| at <= now) {
                    exchange.reject_at = None;
                    send_regrej(now, &mut entry.dialog, &mut self.out);
                }
            }
            match entry.dialog.handle_timeout(now, &mut self.out) {
                Err(GaveUp) => self.dialog_failed(now, local),
                Ok(()) if entry.dialog.is_done(now) => self.remove_dialog(local),
                Ok(()) => self.call_timers(now, local),
            }
        }

        for name in self.registrar.expire(now) {
            self.events.push_back(Event::PeerUnregistered { peer: name.clone(), reason: "expired".into() });
            if let Some(q) = self.qualify.get_mut(&name) {
                q.lost_address(&mut self.events);
            }
        }

        for i in 0..self.registrations.len() {
            if self.registrations[i].next_attempt.is_some_and(|at| at <= now) {
                self.start_registration(now, i);
            }
            self.nat_keepalive(now, i);
        }

        let names: Vec<String> = self.qualify.keys().cloned().collect();
        for name in names {
            self.qualify_tick(now, &name);
        }
    }

    fn start_registration(&mut self, now: Instant, index: usize) {
        let reg = &mut self.registrations[index];
        let Some(server) = reg.server else {
            reg.state = RegState::Unresolved;
            reg.next_attempt = None;
            return;
        };
        if let Some(old) = reg.call() {
            self.remove_dialog(old);
        }
        let local = match self.callnos.allocate(&mut self.rng, &self.config, server.ip(), Validation::Validated) {
            Ok(n) => n,
            Err(_) => {
                self.registrations[index].timed_out(now, &mut self.rng, &mut self.events);
                return;
            }
        };
        let reg = &mut self.registrations[index];
        let mut dialog = Dialog::new(local, 0, server, now);
        dialog.send(now, IaxSubclass::RegReq, &reg.regreq_ies(Some(Vec::new()), None), &mut self.out);
        reg.started(local, &mut self.events);
        self.dialogs.insert(local, Entry { dialog, role: Role::Registrant });
    }

    /// A POKE to the server of registration `index` when its NAT binding
    /// needs one: the PONG coming back through the NAT is all it takes.
    fn nat_keepalive(&mut self, now: Instant, index: usize) {
        let reg = &mut self.registrations[index];
        let (Some(at), Some(server), Some(interval)) = (reg.keepalive_at, reg.server, self.config.general.natkeepalive)
        else {
            return;
        };
        if at > now {
            return;
        }
        reg.keepalive_at = Some(now + interval);
        let Ok(local) = self.callnos.allocate(&mut self.rng, &self.config, server.ip(), Validation::Validated) else {
            return;
        };
        let mut dialog = Dialog::new(local, 0, server, now);
        dialog.send(now, IaxSubclass::Poke, &[], &mut self.out);
        // A POKE of no peer: its PONG or silence changes no qualify state.
        self.dialogs.insert(local, Entry { dialog, role: Role::Poke { peer: String::new() } });
    }

    fn qualify_tick(&mut self, now: Instant, name: &str) {
        let Some(q) = self.qualify.get_mut(name) else { return };
        if let Some((call, sent)) = q.in_flight {
            if sent + q.answer_timeout() <= now {
                q.no_answer(now, &mut self.events);
                self.remove_dialog(call);
            }
            return;
        }
        if q.next_poke.is_none_or(|at| at > now) {
            return;
        }
        let Some(addr) = self.peer_addr(name) else {
            if let Some(q) = self.qualify.get_mut(name) {
                q.next_poke = None;
            }
            return;
        };
        let Ok(local) = self.callnos.allocate(&mut self.rng, &self.config, addr.ip(), Validation::Validated) else {
            return;
        };
        let mut dialog = Dialog::new(local, 0, addr, now);
        dialog.send(now, IaxSubclass::Poke, &[], &mut self.out);
        self.dialogs.insert(local, Entry { dialog, role: Role::Poke { peer: name.to_string() } });
        if let Some(q) = self.qualify.get_mut(name) {
            q.poke_sent(local, now);
        }
    }

    /// Where a peer is: its registration for `host=dynamic`, else its resolved host.
    fn peer_addr(&self, name: &str) -> Option<SocketAddr> {
        let peer = self.config.peers.iter().find(|p| p.name == name)?;
        match &peer.host {
            Host::Dynamic { .. } => self.registrar.get(name).map(|r| r.addr),
            Host::Static(host) => self.resolved.addr(host, peer.port),
        }
    }

    fn remove_dialog(&mut self, local: u16) {
        if let Some(entry) = self.dialogs.remove(&local) {
            self.by_remote.remove(entry.dialog.remote_addr, entry.dialog.remote_call);
            self.callnos.release(local);
        }
    }

    /// A refused MD5 or plaintext proof from `from` for `name` (REGREQ or NEW).
    pub(super) fn auth_failed(&mut self, now: Instant, from: SocketAddr, name: &str) {
        let exempt = self.registrar.get(name).is_some_and(|r| r.addr.ip() == from.ip());
        self.guard.failure(now, from.ip(), name, exempt, &mut self.events);
    }

    /// `iax2 unban IP`.
    pub fn unban(&mut self, source: std::net::IpAddr) -> bool {
        self.guard.unban(source, &mut self.events)
    }

    fn drop_datagram(&mut self, now: Instant, from: SocketAddr, reason: &str) {
        self.count_drop(reason);
        // Counters stay exact; the trace and the log get one line per reason
        // per interval, so a flood cannot flood the log too.
        self.drops.record(now, from, crate::droplog::reason_key(reason), reason, &mut self.events);
    }

    fn count_drop(&mut self, reason: &str) -> u64 {
        let n = self.stats.dropped.entry(reason.to_string()).or_default();
        *n += 1;
        *n
    }

    /// The next datagram to send; IAX2 sends everything from its one socket.
    pub fn poll_transmit(&mut self) -> Option<crate::protocol::Transmit> {
        let t = self.out.pop_front()?;
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += t.payload.len() as u64;
        Some(crate::protocol::Transmit {
            socket: crate::protocol::SocketId::Listener,
            destination: t.destination,
            payload: t.payload,
        })
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let registrations = self.registrations.iter().flat_map(|r| [r.next_attempt, r.keepalive_at]);
        let qualify = self.qualify.values().map(|q| q.deadline());
        let clocks = [
            self.dialogs.next_deadline(),
            self.registrar.next_expiry(),
            self.media_tick,
            self.trunk_tick,
            self.drops.poll_timeout(),
            self.guard.poll_timeout(),
        ];
        registrations.chain(qualify).chain(clocks).flatten().min()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn send_regrej(now: Instant, dialog: &mut Dialog, out: &mut VecDeque<Transmit>) {
    let ies = [Ie::Cause("Registration Refused".into()), Ie::CauseCode(call::cause::FACILITY_REJECTED)];
    dialog.send(now, IaxSubclass::RegRej, &ies, out);
    dialog.finish(now, LINGER);
}

/// Whether a REGACK's apparent address shows a NAT between us and the
/// server: it names another port than ours, or another address than the one
/// we bound (a wildcard bind can only be told by its port).
fn behind_nat(bind: SocketAddr, apparent: Option<SocketAddr>) -> bool {
    let Some(seen) = apparent else { return false };
    let unmapped = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    seen.port() != bind.port() || (!bind.ip().is_unspecified() && unmapped(seen.ip()) != unmapped(bind.ip()))
}

#[cfg(test)]
mod nat_tests {
    use super::behind_nat;

    #[test]
    fn a_regack_shows_nat_by_its_apparent_address() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(!behind_nat(a("10.0.0.2:4569"), Some(a("10.0.0.2:4569"))));
        assert!(behind_nat(a("10.0.0.2:4569"), Some(a("203.0.113.7:4569"))), "another address");
        assert!(behind_nat(a("0.0.0.0:4569"), Some(a("203.0.113.7:61000"))), "wildcard: another port");
        assert!(!behind_nat(a("0.0.0.0:4569"), Some(a("203.0.113.7:4569"))), "wildcard, port kept: cannot tell");
        assert!(!behind_nat(a("10.0.0.2:4569"), Some(a("[::ffff:10.0.0.2]:4569"))), "v4-mapped is the same");
        assert!(!behind_nat(a("10.0.0.2:4569"), None), "no APPARENT ADDR: assume none");
    }
}
