//! Calls on the endpoint (RFC 5456 section 6): NEW with call token and
//! authentication, ACCEPT/RINGING/ANSWER, HANGUP/REJECT, PING/LAGRQ, DTMF,
//! QUELCH, transfers refused; media in full and mini frames or trunked; the
//! dialplan applications (echo, tone, music, pattern, dial/bridge).

use super::*;
use crate::dialplan::App;
use crate::iax2::call::{self, cause, Call, CallState, DialString, Direction};
use crate::iax2::crypto::{self, IaxCipher};
use crate::iax2::frame::{MiniFrame, TrunkEntries};
use crate::iax2::ie::IeLookup;
use crate::iax2::subclass::{format, ControlSubclass};
use crate::iax2::trunk::TrunkQueue;
use crate::jitterbuffer::{JitterBuffer, JitterConfig, Playout};
use crate::media::FRAME_SAMPLES;
use crate::protocol::{Originate, OriginateError};

/// One voice frame of G.711 every 20 ms: what `trunkmaxsize` is counted in.
const FRAME_BYTES: u32 = FRAME_SAMPLES as u32;
pub(super) const MEDIA_TICK: Duration = Duration::from_millis(20);

impl Endpoint {
    /// Places a call. Returns the local call number.
    pub fn originate(&mut self, now: Instant, req: &Originate) -> Result<u16, OriginateError> {
        let dial = DialString::parse(&req.dial)?;
        let peer = self.config.peers.iter().find(|p| p.kind.is_peer() && p.name.eq_ignore_ascii_case(&dial.peer));
        let addr = self.dial_addr(&dial)?;
        // Who we are to that peer: the dial string; else the peer's `username=`
        // with its secret; else the credentials we register to that host with.
        let reg = self.registrations.iter().find(|r| r.server.map(|s| s.ip()) == Some(addr.ip()));
        let peer_secret = || peer.and_then(|p| p.secrets.first().cloned());
        let (username, secret) = match (&dial.username, peer.and_then(|p| p.username.clone()), reg) {
            (Some(u), _, _) => (Some(u.clone()), dial.secret.clone().or_else(peer_secret)),
            (None, Some(u), _) => (Some(u), peer_secret()),
            (None, None, Some(r)) => (Some(r.line.username.clone()), r.line.secret.clone()),
            (None, None, None) => (None, peer_secret()),
        };
        let g = &self.config.general;
        let encryption = peer.map_or(g.encryption, |p| p.encryption || p.forceencryption);
        let force_encryption = peer.map_or(g.forceencryption, |p| p.forceencryption);
        // Trunk frames are never encrypted (chan_iax2 neither), so encrypted calls go untrunked.
        let trunk = peer.is_some_and(PeerConfig::trunked);
        let peer_name = peer.map_or(dial.peer.clone(), |p| p.name.clone());
        if trunk {
            self.check_trunk_capacity(addr)?;
        }
        let codecs = peer.and_then(|p| p.codecs.clone()).unwrap_or_else(|| self.config.general.codecs.clone());
        let (prefs, capability) = call::our_formats(&codecs);
        let preferred = *prefs
            .first()
            .ok_or_else(|| OriginateError::Refused("no codec we can carry is allowed (allow=ulaw or alaw)".into()))?;

        let local = self
            .callnos
            .allocate(&mut self.rng, &self.config, addr.ip(), Validation::Validated)
            .map_err(|e| OriginateError::Refused(format!("no call number: {e:?}")))?;
        let exten = dial.exten.clone().unwrap_or_else(|| "s".into());
        let context = dial.context.clone().unwrap_or_default();
        let mut c = Call::new(Direction::Outbound, now, exten.clone(), context.clone(), req.app.clone(), local);
        c.peer = Some(peer_name.clone());
        c.calling = match &req.calling {
            (None, None) => (
                peer.and_then(|p| p.callerid_number.clone()).or_else(|| username.clone()),
                peer.and_then(|p| p.callerid_name.clone()),
            ),
            given => given.clone(),
        };
        c.username = username;
        c.secret = secret;
        c.trunk = trunk;
        c.format = preferred;
        c.offered = (preferred, capability);
        // AES-128 with key rotation, as chan_iax2 offers for encryption=yes.
        c.encryption_offered = if encryption { crypto::method::ASTERISK_DEFAULT } else { 0 };
        c.force_encryption = force_encryption;
        c.hangup_at = req.hold.map(|h| now + h); // moved to answer time once answered
        c.autokill_at = self.config.general.autokill.map(|d| now + d);
        c.jitter = self.jitter_buffer(peer);
        c.datetime = self.datetime(now);
        let ies = new_ies(&c, Some(Vec::new()));
        let mut dialog = Dialog::new(local, 0, addr, now);
        dialog.send(now, IaxSubclass::New, &ies, &mut self.out);
        if trunk {
            self.trunks.queue(addr).calls += 1;
        }
        self.events.push_back(Event::CallStarted {
            call: local,
            direction: Direction::Outbound.name().into(),
            peer: peer_name,
            exten,
            context,
            caller: c.calling.0.clone().unwrap_or_default(),
        });
        self.dialogs.insert(local, Entry { dialog, role: Role::Call(Box::new(c)) });
        self.dialogs.reschedule();
        Ok(local)
    }

    /// A jitter buffer for a call with `peer`, when `jitterbuffer=yes` applies.
    fn jitter_buffer(&self, peer: Option<&PeerConfig>) -> Option<Box<JitterBuffer>> {
        let g = &self.config.general;
        let on = peer.and_then(|p| p.jitterbuffer).unwrap_or(g.jitterbuffer);
        on.then(|| {
            Box::new(JitterBuffer::new(JitterConfig {
                max_ms: g.maxjitterbuffer,
                resync_threshold_ms: g.resyncthreshold,
                max_interps: g.maxjitterinterps,
                target_extra_ms: g.jittertargetextra,
            }))
        })
    }

    /// Where a dial string's calls go: a peer's known address, else an address or resolved name.
    pub(super) fn dial_addr(&self, dial: &DialString) -> Result<SocketAddr, OriginateError> {
        let peer = self.config.peers.iter().find(|p| p.kind.is_peer() && p.name.eq_ignore_ascii_case(&dial.peer));
        let addr = match peer {
            Some(p) => self.peer_addr(&p.name).ok_or_else(|| OriginateError::PeerUnreachable(p.name.clone()))?,
            None => match dial.peer.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, 4569),
                Err(_) => self
                    .resolved
                    .addr(&dial.peer, 4569)
                    .ok_or_else(|| OriginateError::UnknownPeer(dial.peer.clone()))?,
            },
        };
        Ok(dial.port.map_or(addr, |port| SocketAddr::new(addr.ip(), port)))
    }

    /// Whether one more trunked call to `addr` fits `trunkmaxsize`, counting calls queued for it.
    pub(super) fn check_trunk_capacity(&self, addr: SocketAddr) -> Result<(), OriginateError> {
        let calls = (self.trunks.get(&addr).map_or(0, |t| t.calls) + self.queued_to(addr)) as u32;
        let max = self.config.general.trunkmaxsize;
        if (calls + 1) * FRAME_BYTES > max {
            return Err(OriginateError::TrunkFull { addr, calls, frame_bytes: FRAME_BYTES, max });
        }
        Ok(())
    }

    /// An admitted NEW (call token checked): identify the caller, then authenticate or route.
    pub(super) fn new_call(&mut self, now: Instant, from: SocketAddr, f: FullFrame, validation: Validation) {
        let ies = f.ies().unwrap_or_default();
        let local = match self.callnos.allocate(&mut self.rng, &self.config, from.ip(), validation) {
            Ok(n) => n,
            Err(e) => return self.drop_datagram(now, from, &format!("no call number: {e:?}")),
        };
        let exten = ies.called_number().unwrap_or("s").to_string();
        let context = ies.called_context().unwrap_or_default().to_string();
        let username = ies.username().map(str::to_owned);
        let offered_format = ies.format();
        let capability = ies.capability();

        let mut c = Call::new(Direction::Inbound, now, exten.clone(), context.clone(), App::Echo, local);
        c.offered = (offered_format.unwrap_or(0), capability.unwrap_or(0));
        c.calling = (ies.calling_number().map(str::to_owned), ies.calling_name().map(str::to_owned));
        c.encryption_offered = ies.encryption().unwrap_or(0);
        let mut dialog = Dialog::new(local, f.src_call, from, now);
        dialog.receive(now, &f, &mut self.out);
        self.by_remote.insert(from, f.src_call, local);

        let user = self.find_user(username.as_deref(), from).cloned();
        c.peer = user.as_ref().map(|u| u.name.clone()).or(username.clone());
        c.username = username;
        let peer_label = c.peer.clone().unwrap_or_default();
        // The context the call will be routed in: the one asked for, else the user's.
        let context = match &user {
            Some(u) if context.is_empty() => u.context.clone(),
            _ => context,
        };
        let caller = c.calling.0.clone().unwrap_or_default();
        self.events.push_back(Event::CallStarted {
            call: local,
            direction: Direction::Inbound.name().into(),
            peer: peer_label,
            exten,
            context,
            caller,
        });
        self.dialogs.insert(local, Entry { dialog, role: Role::Call(Box::new(c)) });

        let Some(user) = user else {
            return self.reject(now, local, "No authority found", cause::FACILITY_NOT_SUBSCRIBED, "no user matches");
        };
        let ours = if user.encryption || user.forceencryption { crypto::method::ASTERISK_DEFAULT } else { 0 };
        let Some(Entry { role: Role::Call(c), .. }) = self.dialogs.get_mut(&local) else { return };
        let negotiated = crypto::negotiate(ours, c.encryption_offered);
        let encrypt = negotiated.encrypt && !user.secrets.is_empty();
        c.rotate_keys = encrypt && negotiated.rotate_keys;
        if user.forceencryption && !encrypt {
            let why = "forceencryption=yes and the caller offered no AES-128 (or the user has no secret)";
            return self.reject(now, local, "Encryption required", cause::FACILITY_REJECTED, why);
        }
        if user.secrets.is_empty() {
            return self.route_call(now, local);
        }
        let methods = user.auth.bits() & 0x03;
        if methods == 0 {
            return self.reject(now, local, "No authority found", cause::FACILITY_NOT_SUBSCRIBED, "no auth method");
        }
        if user.maxauthreq > 0 && self.unauthenticated_from(&user.name) >= usize::from(user.maxauthreq) {
            let why = format!("maxauthreq={} calls of {} already await authentication", user.maxauthreq, user.name);
            return self.reject(now, local, "Unauthenticated call limit reached", cause::CALL_REJECTED, &why);
        }
        let challenge = auth::new_challenge(&mut self.rng);
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        if let Role::Call(c) = &mut entry.role {
            c.state = CallState::Authenticating;
            c.challenge = Some(challenge.clone());
        }
        let mut ies = vec![Ie::AuthMethods(methods), Ie::Challenge(challenge.clone()), Ie::Username(user.name.clone())];
        if encrypt {
            // What chan_iax2's `merge_encryption` leaves: the one method, without the
            // KEYROTATE bit, so the caller does not rotate its key while we rotate ours.
            ies.push(Ie::Encryption(crypto::method::AES128));
        }
        entry.dialog.send(now, IaxSubclass::AuthReq, &ies, &mut self.out);
        if encrypt {
            // From here on the caller encrypts; we answer encrypted once we have decrypted it.
            entry.dialog.rx_cipher = Some(IaxCipher::from_challenge(&challenge, &user.secrets[0]));
            if let Role::Call(c) = &mut entry.role {
                c.encrypted = true;
            }
        }
    }

    /// The user a NEW is from: named by USERNAME, else the first secret-less
    /// user whose ACL admits the source (Asterisk's "guest").
    fn find_user(&self, username: Option<&str>, from: SocketAddr) -> Option<&PeerConfig> {
        let mut users = self.config.peers.iter().filter(|p| p.kind.is_user() && p.acl.permits(from.ip()));
        match username {
            Some(name) => users.find(|p| p.name.eq_ignore_ascii_case(name)),
            // A NEW without a username (chan_iax2 sends none for a peer
            // without `username=`) takes the best user the source may be, by
            // chan_iax2's ranking: no secret beats a secret, an ACL that
            // admitted the source beats none; the first in the file on a tie.
            None => users
                .enumerate()
                .max_by_key(|(i, p)| {
                    let rank = match (p.secrets.is_empty(), p.acl.rules.is_empty()) {
                        (true, false) => 4,
                        (true, true) => 3,
                        (false, false) => 2,
                        (false, true) => 1,
                    };
                    (rank, std::cmp::Reverse(*i))
                })
                .map(|(_, p)| p),
        }
    }

    /// Dialplan, codec and trunk capacity; then ACCEPT and what the extension does.
    fn route_call(&mut self, now: Instant, local: u16) {
        let Some(Entry { role: Role::Call(c), dialog, .. }) = self.dialogs.get(&local) else { return };
        let addr = dialog.remote_addr;
        let user = c.peer.as_ref().and_then(|n| self.config.peers.iter().find(|p| &p.name == n && p.kind.is_user()));
        let Some(user) = user else { return };
        // The caller may pick one of its contexts; otherwise its first.
        let allowed = |x: &String| *x == user.context || user.contexts.contains(x);
        let context =
            if !c.context.is_empty() && allowed(&c.context) { c.context.clone() } else { user.context.clone() };
        let Some(route) = self.dialplan.route(&context, &c.exten) else {
            let why = format!("no extension {} in context {context}", c.exten);
            return self.reject(now, local, "No such context/extension", cause::NO_ROUTE_DESTINATION, &why);
        };
        let app = route.app;
        if let App::Hangup { cause } = app {
            return self.reject(now, local, "Rejected by dialplan", cause, "dialplan hangup()");
        }
        let codecs = user.codecs.clone().unwrap_or_else(|| self.config.general.codecs.clone());
        let Some(chosen) = call::negotiate(user.codecpriority, &codecs, c.offered.0, c.offered.1) else {
            let why = format!("offered {:#x} capability {:#x}", c.offered.0, c.offered.1);
            return self.reject(now, local, "Unable to negotiate codec", cause::BEARER_NOT_AVAILABLE, &why);
        };
        let jitter = self.jitter_buffer(Some(user));
        let trunk = user.trunk && !c.encrypted;
        if trunk {
            if let Err(why) = self.check_trunk_capacity(addr) {
                return self.reject(now, local, "Trunk capacity exceeded", cause::NO_CIRCUIT, &why.to_string());
            }
            self.trunks.queue(addr).calls += 1;
        }
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        let Role::Call(c) = &mut entry.role else { return };
        c.context = context;
        c.jitter = jitter;
        c.format = chosen;
        c.trunk = trunk;
        c.source = call::Source::for_app(&app, local);
        c.app = app.clone();
        c.state = CallState::Accepted;
        c.start_keepalive(now);
        // FORMAT2 repeats the format in 64 bits, as chan_iax2 sends and prefers since 1.8.
        entry.dialog.send(now, IaxSubclass::Accept, &[Ie::Format(chosen), Ie::Format2(chosen.into())], &mut self.out);
        match app {
            App::Dial { target } => {
                let req = Originate { dial: target, app: App::Echo, hold: None, calling: c.calling.clone() };
                match self.originate(now, &req) {
                    Ok(other) => self.link(local, other),
                    Err(why) => self.reject(now, local, "Dial failed", cause::NO_ROUTE_DESTINATION, &why.to_string()),
                }
            }
            _ => {
                self.answer(now, local);
                if let (Some(h), Some(Entry { role: Role::Call(c), .. })) = (route.hangup, self.dialogs.get_mut(&local))
                {
                    c.hangup_at = Some(now + h.after);
                    c.hangup_cause = h.cause;
                }
            }
        }
    }

    fn link(&mut self, a: u16, b: u16) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(Entry { role: Role::Call(c), .. }) = self.dialogs.get_mut(&x) {
                c.bridge = Some(y);
                c.app = App::Dial { target: String::new() };
            }
        }
    }

    fn answer(&mut self, now: Instant, local: u16) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        let Role::Call(c) = &mut entry.role else { return };
        let control = |s: ControlSubclass| s.as_u32();
        entry.dialog.send_full(now, FrameType::Control, control(ControlSubclass::Ringing), vec![], None, &mut self.out);
        entry.dialog.send_full(now, FrameType::Control, control(ControlSubclass::Answer), vec![], None, &mut self.out);
        c.state = CallState::Up;
        c.answered = Some(now);
        let format = format::name(c.format).unwrap_or("unknown").to_string();
        self.events.push_back(Event::CallAnswered { call: local, format, encrypted: c.encrypted });
        self.media_tick.get_or_insert(now + MEDIA_TICK);
    }

    /// Refuses a call that is not up: REJECT with a cause, and the reason in the trace.
    pub(super) fn reject(&mut self, now: Instant, local: u16, text: &str, code: u8, why: &str) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        let Role::Call(c) = &mut entry.role else { return };
        self.events.push_back(Event::CallRejected {
            call: local,
            direction: c.direction.name().into(),
            peer: c.peer.clone().unwrap_or_default(),
            exten: c.exten.clone(),
            cause: format!("{text}: {why}"),
            code,
        });
        entry.dialog.send(now, IaxSubclass::Reject, &[Ie::Cause(text.into()), Ie::CauseCode(code)], &mut self.out);
        entry.dialog.finish(now, LINGER);
        self.release_trunk_slot(local);
    }

    /// Ends a call that was set up (or being set up by us), with its statistics.
    pub(super) fn end_call(&mut self, now: Instant, local: u16, text: &str, code: u8, send_hangup: bool) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        if entry.dialog.is_finished() {
            return;
        }
        let Role::Call(c) = &mut entry.role else { return };
        if c.answered.is_none() && c.direction == Direction::Outbound {
            self.events.push_back(Event::CallRejected {
                call: local,
                direction: c.direction.name().into(),
                peer: c.peer.clone().unwrap_or_default(),
                exten: c.exten.clone(),
                cause: text.into(),
                code,
            });
        } else {
            if let Some(jb) = &c.jitter {
                c.stats.late = jb.stats().late;
                c.stats.concealed = jb.stats().interpolated;
            }
            let s = &c.stats;
            self.events.push_back(Event::CallEnded {
                call: local,
                direction: c.direction.name().into(),
                peer: c.peer.clone().unwrap_or_default(),
                cause: text.into(),
                code,
                duration_ms: c.duration(now).as_millis() as u64,
                frames_sent: s.frames_sent,
                frames_received: s.frames_received,
                lost: s.lost,
                reordered: s.reordered,
                duplicated: s.duplicated,
                late: s.late,
                concealed: s.concealed,
                jitter_ms: s.jitter_us / 1000,
                ts_irregular: c.ts_irregular,
            });
        }
        let bridge = c.bridge.take();
        if send_hangup {
            let ies = [Ie::Cause(text.into()), Ie::CauseCode(code)];
            entry.dialog.send(now, IaxSubclass::Hangup, &ies, &mut self.out);
        }
        entry.dialog.finish(now, LINGER);
        self.release_trunk_slot(local);
        if let Some(other) = bridge {
            self.end_call(now, other, text, code, true);
        }
    }

    fn release_trunk_slot(&mut self, local: u16) {
        let Some(Entry { role: Role::Call(c), dialog, .. }) = self.dialogs.get_mut(&local) else { return };
        if std::mem::take(&mut c.trunk) {
            if let Some(t) = self.trunks.get_mut(&dialog.remote_addr) {
                t.calls = t.calls.saturating_sub(1);
            }
        }
    }

    /// Hangs up every call (operator command).
    pub fn hangup_all(&mut self, now: Instant) -> usize {
        let calls: Vec<u16> = self.call_numbers();
        for &local in &calls {
            self.end_call(now, local, "Normal Clearing", cause::NORMAL_CLEARING, true);
        }
        self.dialogs.reschedule();
        calls.len()
    }

    fn call_numbers(&self) -> Vec<u16> {
        self.dialogs
            .iter()
            .filter(|(_, e)| matches!(e.role, Role::Call(_)) && !e.dialog.is_finished())
            .map(|(n, _)| *n)
            .collect()
    }

    /// A full frame, in sequence, on a call's dialog.
    pub(super) fn call_frame(&mut self, now: Instant, local: u16, f: &FullFrame) {
        let Some(entry) = self.dialogs.get_mut(&local) else { return };
        let Role::Call(c) = &mut entry.role else { return };
        c.autokill_at = None;
        if entry.dialog.remote_call != 0 {
            self.by_remote.insert(entry.dialog.remote_addr, entry.dialog.remote_call, local);
        }
        let ies = || f.ies().unwrap_or_default();
        match f.frame_type {
            FrameType::Voice => {
                entry.dialog.ack(f, &mut self.out);
                if f.subclass != 0 && f.subclass.count_ones() == 1 {
                    c.format = f.subclass;
                }
                c.rx_last_ts = Some(c.rx_last_ts.map_or(f.timestamp, |t| t.max(f.timestamp)));
                return self.media_in(now, local, f.timestamp, &f.payload, true);
            }
            FrameType::Dtmf | FrameType::DtmfBegin => {
                entry.dialog.ack(f, &mut self.out);
                if f.frame_type == FrameType::Dtmf {
                    let digit = char::from_u32(f.subclass).map_or("?".into(), |d| d.to_string());
                    self.events.push_back(Event::Dtmf { call: local, digit });
                }
                return;
            }
            FrameType::Control => {
                entry.dialog.ack(f, &mut self.out);
                return match f.control() {
                    Some(ControlSubclass::Answer) if c.direction == Direction::Outbound => {
                        c.state = CallState::Up;
                        c.answered = Some(now);
                        // The hold time counts from the answer.
                        c.hangup_at = c.hangup_at.map(|at| now + at.saturating_duration_since(c.created));
                        let format = format::name(c.format).unwrap_or("unknown").to_string();
                        let bridge = c.bridge;
                        self.events.push_back(Event::CallAnswered { call: local, format, encrypted: c.encrypted });
                        self.media_tick.get_or_insert(now + MEDIA_TICK);
                        if let Some(other) = bridge {
                            self.answer(now, other);
                        }
                    }
                    Some(ControlSubclass::Ringing) if c.state != CallState::Up => c.state = CallState::Ringing,
                    Some(ControlSubclass::Hangup) => {
                        self.end_call(now, local, "Normal Clearing", cause::NORMAL_CLEARING, false)
                    }
                    _ => {}
                };
            }
            FrameType::Iax => {}
            _ => return entry.dialog.ack(f, &mut self.out),
        }
        match f.iax() {
            Some(IaxSubclass::Accept) => {
                entry.dialog.ack(f, &mut self.out);
                if let Some(fmt) = ies().format() {
                    c.format = fmt;
                }
                if c.state != CallState::Up {
                    c.state = CallState::Accepted;
                }
                c.start_keepalive(now);
            }
            Some(IaxSubclass::AuthReq) => {
                let ies = ies();
                let methods = ies.auth_methods();
                let challenge = ies.challenge().map(str::to_owned);
                let reply = match (&c.secret, methods.unwrap_or(0), challenge.clone()) {
                    (Some(secret), m, Some(ch)) if m & 0x02 != 0 => Ie::Md5Result(auth::md5_response(&ch, secret)),
                    (Some(secret), m, _) if m & 0x01 != 0 => Ie::Password(secret.clone()),
                    _ => {
                        entry.dialog.ack(f, &mut self.out);
                        return self.end_call(now, local, "No credentials for AUTHREQ", cause::FACILITY_REJECTED, true);
                    }
                };
                let theirs = ies.encryption();
                let negotiated = crypto::negotiate(c.encryption_offered, theirs.unwrap_or(0));
                let encrypt = negotiated.encrypt;
                c.rotate_keys = negotiated.rotate_keys;
                if c.force_encryption && !encrypt {
                    entry.dialog.ack(f, &mut self.out);
                    let text = "Encryption required: the peer did not agree to AES-128";
                    return self.end_call(now, local, text, cause::FACILITY_REJECTED, true);
                }
                if let (true, Some(secret), Some(ch)) = (encrypt, &c.secret, &challenge) {
                    let cipher = IaxCipher::from_challenge(ch, secret);
                    entry.dialog.rx_cipher = Some(cipher.clone());
                    entry.dialog.encrypt_with(cipher, self.rng.next_u64());
                    c.encrypted = true;
                }
                c.state = CallState::AuthSent;
                entry.dialog.send(now, IaxSubclass::AuthRep, &[reply], &mut self.out);
            }
            Some(IaxSubclass::AuthRep) => {
                let ies = ies();
                let user = c.peer.as_ref().and_then(|n| self.config.peers.iter().find(|p| &p.name == n));
                let ok = match (user, &c.challenge) {
                    (Some(user), Some(ch)) => ies.iter().any(|ie| match ie {
                        Ie::Md5Result(r) => user.auth.md5 && auth::md5_matches(ch, r, &user.secrets),
                        Ie::Password(p) => user.auth.plaintext && auth::plaintext_matches(p, &user.secrets),
                        _ => false,
                    }),
                    _ => false,
                };
                if ok {
                    self.route_call(now, local);
                } else {
                    let name = c.peer.clone().or_else(|| c.username.clone()).unwrap_or_default();
                    let from = entry.dialog.remote_addr;
                    self.auth_failed(now, from, &name);
                    self.reject(now, local, "No authority found", cause::FACILITY_NOT_SUBSCRIBED, "wrong secret");
                }
            }
            // The far end ends the call; its cause, or the usual one for the frame.
            Some(sub @ (IaxSubclass::Reject | IaxSubclass::Hangup)) => {
                entry.dialog.ack(f, &mut self.out);
                let (default_text, default_code) = match sub {
                    IaxSubclass::Reject => ("Rejected", cause::CALL_REJECTED),
                    _ => ("Normal Clearing", cause::NORMAL_CLEARING),
                };
                let ies = ies();
                let text = ies.cause().unwrap_or(default_text).to_owned();
                self.end_call(now, local, &text, ies.cause_code().unwrap_or(default_code), false);
            }
            // PONG and LAGRP answer with the request's timestamp, so the asker can time the round trip.
            Some(IaxSubclass::Ping) => reply_with_ts(&mut entry.dialog, now, IaxSubclass::Pong, f, &mut self.out),
            Some(IaxSubclass::LagRq) => reply_with_ts(&mut entry.dialog, now, IaxSubclass::LagRp, f, &mut self.out),
            // The peer's new transmit key; ours is untouched (chan_iax2's RTKEY).
            Some(IaxSubclass::RtKey) => {
                entry.dialog.ack(f, &mut self.out);
                match crypto::rtkey_key(&f.payload) {
                    Ok(key) if entry.dialog.rx_cipher.is_some() => {
                        entry.dialog.rx_cipher = Some(IaxCipher::from_key(key));
                    }
                    _ => {
                        self.count_drop("RTKEY without a key, or on a call in clear");
                    }
                }
            }
            // Answers to our own PING and LAGRQ carry their timestamps back.
            Some(IaxSubclass::Pong) => {
                c.rtt_ms = Some(entry.dialog.elapsed_ms(now).saturating_sub(f.timestamp));
                entry.dialog.ack(f, &mut self.out);
            }
            Some(IaxSubclass::LagRp) => {
                c.lag_ms = Some(entry.dialog.elapsed_ms(now).saturating_sub(f.timestamp));
                entry.dialog.ack(f, &mut self.out);
            }
            Some(IaxSubclass::Quelch) => {
                c.quelched = true;
                entry.dialog.ack(f, &mut self.out);
            }
            Some(IaxSubclass::Unquelch) => {
                c.quelched = false;
                entry.dialog.ack(f, &mut self.out);
            }
            // Native transfers are not offered: say so instead of leaving the peer waiting.
            Some(IaxSubclass::TxReq) => entry.dialog.send(now, IaxSubclass::TxRej, &[], &mut self.out),
            _ => entry.dialog.ack(f, &mut self.out),
        }
    }

    /// The server's CALLTOKEN for our NEW: resend it carrying the token, once.
    pub(super) fn call_token_for_new(&mut self, now: Instant, local: u16, f: &FullFrame) {
        let Some(Entry { role: Role::Call(c), dialog, .. }) = self.dialogs.get_mut(&local) else { return };
        let token = f.ies().ok().and_then(|ies| ies.call_token().map(<[u8]>::to_vec));
        let Some(token) = token.filter(|_| c.direction == Direction::Outbound && !c.token_sent) else {
            self.count_drop("unexpected call token");
            return;
        };
        c.token_sent = true;
        let ies = new_ies(c, Some(token));
        dialog.restart();
        dialog.send(now, IaxSubclass::New, &ies, &mut self.out);
    }

    pub(super) fn mini_frame(&mut self, now: Instant, from: SocketAddr, m: MiniFrame) {
        let Some(local) = self.by_remote.get(from, m.src_call) else {
            return self.drop_datagram(now, from, "media for no call");
        };
        let Some(Entry { role: Role::Call(c), .. }) = self.dialogs.get(&local) else { return };
        let ts = c.extend_mini_ts(m.timestamp);
        self.media_in(now, local, ts, &m.payload, false);
    }

    pub(super) fn trunk_frame(&mut self, now: Instant, from: SocketAddr, entries: TrunkEntries<'_>) {
        // Every entry is another call, whose state was last touched 20 ms ago
        // and has left the cache since. Finding them all first and reading a
        // word of each makes those loads independent of one another, so the
        // CPU waits for their cache misses together rather than one per entry
        // (docs/performance.md). Handling an entry adds or removes no call,
        // so the calls found stay the ones to handle.
        let mut locals = std::mem::take(&mut self.trunk_locals);
        locals.clear();
        let mut warm = 0u32;
        let calls = self.by_remote.from(from);
        let mut cursor = 0;
        for &(call, _, _) in &entries {
            let local = calls.and_then(|c| c.get_after(call, &mut cursor));
            if let Some(Entry { role: Role::Call(c), .. }) = local.and_then(|l| self.dialogs.get(&l)) {
                warm ^= c.rx_last_ts.unwrap_or(0);
            }
            locals.push(local);
        }
        std::hint::black_box(warm);
        let now_ns = self.nanos_since_epoch(now);
        for (&(_, timestamp, payload), &local) in entries.iter().zip(&locals) {
            let Some(local) = local else {
                self.count_drop("trunk entry for no call");
                continue;
            };
            let Some(Entry { role: Role::Call(c), .. }) = self.dialogs.get(&local) else { continue };
            // Without per-call timestamps the frames are assumed to follow each other.
            let ts = match timestamp {
                Some(ts) => c.extend_mini_ts(ts),
                None => c.rx_last_ts.map_or(20, |t| t + 20),
            };
            self.media_in_at(now, now_ns, local, ts, payload, false);
        }
        self.trunk_locals = locals;
    }

    /// Voice arrived on a call: count it, and echo or bridge it.
    fn media_in(&mut self, now: Instant, local: u16, ts: u32, payload: &[u8], full: bool) {
        let now_ns = self.nanos_since_epoch(now);
        self.media_in_at(now, now_ns, local, ts, payload, full);
    }

    /// [`Endpoint::media_in`] with the clock already read: a trunk
    /// datagram's entries all arrived at once.
    fn media_in_at(&mut self, now: Instant, now_ns: u64, local: u16, ts: u32, payload: &[u8], full: bool) {
        let arrival_us = (now_ns / 1000) as i64;
        // Receive accounting and the jitter buffer move none of the call's timers.
        let Some(Entry { role: Role::Call(c), dialog, .. }) = self.dialogs.peek_mut(&local) else { return };
        if dialog.is_finished() {
            return;
        }
        if full {
            c.rx_last_ts = None; // a full frame resets the timestamp base
        }
        c.media_received(ts, payload, arrival_us);
        if let Some(jb) = &mut c.jitter {
            // Played out by the media clock instead of right away.
            let mut frame = self.voice_pool.pop().unwrap_or_default();
            frame.clear();
            frame.extend_from_slice(payload);
            jb.put(ts, frame, arrival_us / 1000);
            return;
        }
        match (&c.app, c.bridge) {
            // The echo goes back on the call at hand, without looking it up again.
            (App::Echo, _) => {
                let out = voice_out!(self, now_ns);
                if out.send(now, local, c, dialog, payload) {
                    self.dialogs.touch(&local);
                }
            }
            (_, Some(other)) => self.send_voice(now, other, payload),
            _ => {}
        }
    }

    fn nanos_since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Audio ready to play on `local`: echo it back or pass it across the bridge.
    fn deliver(&mut self, now: Instant, local: u16, payload: &[u8]) {
        let Some(Entry { role: Role::Call(c), .. }) = self.dialogs.get(&local) else { return };
        let target = match (&c.app, c.bridge) {
            (App::Echo, _) => Some(local),
            (_, Some(other)) => Some(other),
            _ => None,
        };
        if let Some(target) = target {
            self.send_voice(now, target, payload);
        }
    }

    /// Sends one voice frame on a call (see [`VoiceOut::send`]).
    fn send_voice(&mut self, now: Instant, local: u16, payload: &[u8]) {
        let now_ns = self.nanos_since_epoch(now);
        let Some(Entry { role: Role::Call(c), dialog, .. }) = self.dialogs.peek_mut(&local) else { return };
        let out = voice_out!(self, now_ns);
        if out.send(now, local, c, dialog, payload) {
            self.dialogs.touch(&local);
        }
    }

    /// The 20 ms media clock: every answered call with a source of its own
    /// sends its next frame.
    pub(super) fn media_tick(&mut self, now: Instant) {
        let Some(at) = self.media_tick else { return };
        if at > now {
            return;
        }
        let mut any = false;
        let now_ns = self.nanos_since_epoch(now);
        let now_ms = (now_ns / 1_000_000) as i64;
        let mut locals = std::mem::take(&mut self.tick_calls);
        self.dialogs.keys_into(&mut locals);
        let mut generated = std::mem::take(&mut self.voice_scratch);
        for &local in &locals {
            // The hangup goes through end_call, which touches; playout and
            // the source move none of the call's timers.
            let Some(Entry { role: Role::Call(c), dialog }) = self.dialogs.peek_mut(&local) else { continue };
            if dialog.is_finished() || c.state != CallState::Up {
                continue;
            }
            any = true;
            if c.hangup_at.is_some_and(|h| h <= now) {
                let code = c.hangup_cause;
                self.end_call(now, local, hangup_text(code), code, true);
                continue;
            }
            let played = match c.jitter.as_mut().map(|jb| jb.get(now_ms)) {
                Some(Playout::Voice { payload, .. }) => Some(payload),
                _ => None,
            };
            let Some(codec) = call::g711(c.format) else { continue };
            generated.clear();
            let any_generated = c.source.next_frame_into(codec, &mut generated);
            match played {
                None if any_generated => {
                    let out = voice_out!(self, now_ns);
                    if out.send(now, local, c, dialog, &generated) {
                        self.dialogs.touch(&local);
                    }
                }
                None => {}
                Some(payload) => {
                    self.deliver(now, local, &payload);
                    if self.voice_pool.len() < VOICE_POOL_MAX {
                        self.voice_pool.push(payload);
                    }
                    if any_generated {
                        self.send_voice(now, local, &generated);
                    }
                }
            }
        }
        self.voice_scratch = generated;
        self.tick_calls = locals;
        self.media_tick = any.then(|| at + MEDIA_TICK);
    }

    /// The trunk clock (`trunkfreq`): everything queued goes out.
    pub(super) fn trunk_tick(&mut self, now: Instant) {
        let Some(at) = self.trunk_tick else { return };
        if at > now {
            return;
        }
        let ts = now.saturating_duration_since(self.epoch).as_millis() as u32;
        let g = &self.config.general;
        let mut active = false;
        for (addr, queue) in self.trunks.iter_mut() {
            active |= queue.calls > 0;
            let interval = g.trunkfreq.as_millis() as u32;
            for payload in queue.flush(ts, interval, g.trunkmtu, g.trunktimestamps) {
                self.out.push_back(Transmit { destination: *addr, payload });
            }
        }
        self.trunks.retain(|q: &TrunkQueue| q.calls > 0 || !q.is_empty());
        self.trunk_tick = active.then(|| at + g.trunkfreq);
    }

    /// A call's own timers: autokill of an unanswered NEW, and the scheduled hangup.
    pub(super) fn call_timers(&mut self, now: Instant, local: u16) {
        let Some(Entry { role: Role::Call(c), dialog, .. }) = self.dialogs.get(&local) else { return };
        if dialog.is_finished() {
            return;
        }
        if c.autokill_at.is_some_and(|at| at <= now) {
            let text = "autokill: no answer to NEW in time";
            self.end_call(now, local, text, cause::NO_ANSWER, false);
            if let Some(entry) = self.dialogs.get_mut(&local) {
                entry.dialog.abandon(now);
            }
        } else if c.state == CallState::Up && c.hangup_at.is_some_and(|at| at <= now) {
            let code = c.hangup_cause;
            self.end_call(now, local, hangup_text(code), code, true);
        } else {
            self.keepalive(now, local);
        }
    }

    /// Sends the call's PING and LAGRQ when due (see [`Call::ping_at`]).
    fn keepalive(&mut self, now: Instant, local: u16) {
        let Some(Entry { role: Role::Call(c), dialog, .. }) = self.dialogs.get_mut(&local) else { return };
        if c.ping_at.is_some_and(|at| at <= now) {
            c.ping_at = Some(now + call::PING_INTERVAL);
            dialog.send(now, IaxSubclass::Ping, &[], &mut self.out);
        }
        if c.lagrq_at.is_some_and(|at| at <= now) {
            c.lagrq_at = Some(now + call::LAGRQ_INTERVAL);
            dialog.send(now, IaxSubclass::LagRq, &[], &mut self.out);
        }
        if c.rotate_at.is_some_and(|at| at <= now) {
            let key = crypto::new_rotation_key(&mut self.rng);
            dialog.rotate_tx_key(now, key, &mut self.out);
            c.rotate_at = Some(now + next_rotation(&mut self.rng));
        }
    }
}

/// Played frames kept for reuse by the jitter buffers' next arrivals.
const VOICE_POOL_MAX: usize = 4096;

/// When the next key rotation is due: 120 to 300 s on, as `iax2_key_rotate` schedules.
fn next_rotation(rng: &mut impl rand::Rng) -> Duration {
    Duration::from_millis(120_000 + rng.gen_range(0..=180_000))
}

fn reply_with_ts(
    dialog: &mut Dialog,
    now: Instant,
    sub: IaxSubclass,
    request: &FullFrame,
    out: &mut VecDeque<Transmit>,
) {
    let payload = FullFrame::new_iax(0, 0, 0, 0, 0, sub, &[]).payload;
    dialog.send_full(now, FrameType::Iax, sub.as_u32(), payload, Some(request.timestamp), out);
}

/// The IEs of a NEW for `c`; `token` is `Some(empty)` to ask for a call token.
fn new_ies(c: &Call, token: Option<Vec<u8>>) -> Vec<Ie> {
    let mut ies = vec![Ie::Version(2), Ie::CalledNumber(c.exten.clone())];
    if !c.context.is_empty() {
        ies.push(Ie::CalledContext(c.context.clone()));
    }
    if let Some(u) = &c.username {
        ies.push(Ie::Username(u.clone()));
    }
    ies.extend(c.calling.0.clone().map(Ie::CallingNumber));
    ies.extend(c.calling.1.clone().map(Ie::CallingName));
    ies.push(Ie::Format(c.offered.0));
    ies.push(Ie::Format2(c.offered.0.into()));
    ies.push(Ie::Capability(c.offered.1));
    ies.push(Ie::Capability2(c.offered.1.into()));
    ies.extend(c.datetime.map(Ie::DateTime));
    if c.encryption_offered != 0 {
        ies.push(Ie::Encryption(c.encryption_offered));
    }
    ies.extend(token.map(Ie::CallToken));
    ies
}

/// The CAUSE text of a scheduled hangup.
fn hangup_text(code: u8) -> &'static str {
    match code {
        cause::NORMAL_CLEARING => "Normal Clearing",
        17 => "User busy",
        cause::NO_CIRCUIT => "No circuit/channel available",
        _ => "Hangup by dialplan",
    }
}

/// The endpoint's [`VoiceOut`], borrowed field by field so that the dialog
/// table stays free for the call being sent on.
macro_rules! voice_out {
    ($endpoint:expr, $now_ns:expr) => {
        VoiceOut {
            trunks: &mut $endpoint.trunks,
            trunk_tick: &mut $endpoint.trunk_tick,
            trunkfreq: $endpoint.config.general.trunkfreq,
            out: &mut $endpoint.out,
            rng: &mut $endpoint.rng,
            epoch: $endpoint.epoch,
            now_ns: $now_ns,
        }
    };
}
use voice_out;

/// What sending a voice frame needs of the endpoint besides the call itself,
/// borrowed apart from the dialog table so that a call found once per frame
/// is not looked up again to send.
struct VoiceOut<'a> {
    trunks: &'a mut Trunks,
    trunk_tick: &'a mut Option<Instant>,
    trunkfreq: Duration,
    out: &'a mut VecDeque<Transmit>,
    rng: &'a mut ChaCha20Rng,
    /// The endpoint's clock (its epoch, and now in ns on it), for the
    /// calls' voice timestamps.
    epoch: Instant,
    now_ns: u64,
}

impl VoiceOut<'_> {
    /// Sends one voice frame on a call: full frame first and on timestamp
    /// wrap, then mini frames, or trunk entries for a trunk peer. True when
    /// the call's timers moved (the caller touches its entry): a key rotation
    /// and a full frame (retransmitted until ACKed) do; mini frames and trunk
    /// entries do not.
    fn send(self, now: Instant, local: u16, c: &mut Call, dialog: &mut Dialog, payload: &[u8]) -> bool {
        if c.quelched || c.state != CallState::Up || dialog.is_finished() {
            return false;
        }
        let mut timers_moved = false;
        if c.rotate_keys && c.rotate_at.is_none() {
            // chan_iax2 rotates its key first with its first voice frame, then every 2 to 5 minutes.
            let key = crypto::new_rotation_key(self.rng);
            dialog.rotate_tx_key(now, key, self.out);
            c.rotate_at = Some(now + next_rotation(self.rng));
            timers_moved = true;
        }
        let previous = c.tx_last_ts;
        let epoch = self.epoch;
        let created_ns =
            *c.created_ns.get_or_insert_with(|| c.created.saturating_duration_since(epoch).as_nanos() as u64);
        let elapsed_ms = (self.now_ns.saturating_sub(created_ns) / 1_000_000).min(u64::from(u32::MAX)) as u32;
        let ts = c.next_voice_ts_at(elapsed_ms);
        c.stats.frames_sent += 1;
        if Call::needs_full_voice(previous, ts) {
            dialog.send_full(now, FrameType::Voice, c.format, payload.to_vec(), Some(ts), self.out);
            timers_moved = true;
        } else if c.trunk {
            self.trunks.queue(dialog.remote_addr).push(local, ts as u16, payload);
            self.trunk_tick.get_or_insert(now + self.trunkfreq);
        } else {
            let mini = MiniFrame { src_call: local, timestamp: ts as u16, payload: payload.to_vec() };
            let mut bytes = Vec::with_capacity(4 + mini.payload.len());
            if mini.encode(&mut bytes).is_ok() {
                let payload = dialog.seal(bytes);
                self.out.push_back(Transmit { destination: dialog.remote_addr, payload });
            }
        }
        timers_moved
    }
}
