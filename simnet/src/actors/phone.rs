//! A SIP phone: registers with digest and refreshes, keeps its NAT binding
//! alive or not, places and answers calls, sends the numbered test pattern
//! and reports what it heard.
//!
//! It behaves as the phones operators meet do, including what they get wrong
//! ([`PhoneConfig`]'s knobs): it writes its own (private) address in Contact,
//! Via and SDP, may leave `rport` out, may stay silent for a while after the
//! answer, and sends everything to its registrar as its outbound proxy.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use switch::media::{parse_pattern, pattern_frame, G711};
use switch::sip::header::Method;
use switch::sip::message::{Message, Request, Response};

use super::sip::{self as text, RequestText};
use super::{ms, name_tag, Actor, ActorEvent, Transmit};

/// SIP's T1 and the give-up time of a transaction (64*T1).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const GIVE_UP: Duration = Duration::from_secs(32);
const FRAME: Duration = Duration::from_millis(20);
/// The telephone-event payload type the phone offers (`a=rtpmap:101`).
const DTMF_PT: u8 = 101;
/// Each digit: 200 ms of event packets, the last three marking its end.
const DIGIT: Duration = Duration::from_millis(200);
/// How long a phone waits before trying again after a failed registration.
const RETRY_REGISTER: Duration = Duration::from_secs(30);

/// A call the phone places at a given time.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedCall {
    /// Since the start of the run.
    pub at: Duration,
    /// The number dialled (user part of the Request-URI).
    pub to: String,
    /// How long it stays up before the phone hangs up.
    pub hold: Duration,
}

/// Who a phone is and how it behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct PhoneConfig {
    pub name: String,
    pub user: String,
    pub password: String,
    /// The registrar and outbound proxy.
    pub server: SocketAddr,
    /// The phone's own address and SIP port (private, behind a NAT).
    pub local: SocketAddr,
    pub rtp_port: u16,
    /// Whether it registers at all, when, and the interval it asks for.
    pub register: bool,
    pub register_at: Duration,
    pub expires: u32,
    /// CRLF keep-alives to the server at this interval (`None`: none).
    pub keepalive: Option<Duration>,
    /// Put `;rport` in Via (RFC 3581).
    pub rport: bool,
    /// Silence after a call is answered before its first RTP packet.
    pub silence: Duration,
    /// Ringing time before the phone answers a call.
    pub answer_after: Duration,
    pub calls: Vec<PlannedCall>,
    /// RFC 4733 digits it keys, one every 200 ms, from a second after its
    /// audio starts on each answered call.
    pub dtmf: String,
    /// A re-INVITE this long after each call it places is answered, moving
    /// its media to `rtp_port + 2` (a late re-INVITE, as after a transfer or
    /// a network change).
    pub reinvite_after: Option<Duration>,
    /// Pattern tags of the other phones in the world, to name what it hears.
    pub others: BTreeMap<u16, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Inviting,
    Ringing,
    Up,
}

/// What the phone's ear heard on one call.
#[derive(Clone, Debug, Default)]
struct Ear {
    received: u64,
    plain: u64,
    /// RFC 4733 telephone-event packets (not audio).
    events: u64,
    /// Pattern tag -> (frames, highest sequence number + 1, lowest seen).
    tags: BTreeMap<u16, (u64, u32, u32)>,
    first_audio: Option<Duration>,
}

struct Call {
    label: String,
    outgoing: bool,
    peer: String,
    call_id: String,
    local_tag: String,
    /// The far end's To/From value (with its tag once known).
    remote: String,
    local: String,
    cseq: u32,
    state: State,
    /// When the first INVITE went out (or came in).
    began: Instant,
    /// The INVITE in flight (text, branch) and its retransmission timer.
    invite: Option<Vec<u8>>,
    invite_branch: String,
    /// A request or 2xx being retransmitted: (next send, interval, give up at).
    resend: Option<(Instant, Duration, Instant)>,
    resend_bytes: Vec<u8>,
    /// The incoming INVITE, for the final answer.
    incoming: Option<Request>,
    answer_at: Option<Instant>,
    hangup_at: Option<Instant>,
    authorised: bool,
    remote_media: Option<SocketAddr>,
    /// Our media port on this call (it moves with a re-INVITE).
    rtp_port: u16,
    reinvite_at: Option<Instant>,
    /// A re-INVITE of ours is in flight.
    reinviting: bool,
    /// Digits still to key, and when the current one started.
    dtmf: std::collections::VecDeque<char>,
    dtmf_from: Option<Instant>,
    media_from: Option<Instant>,
    next_frame: Option<Instant>,
    seq: u16,
    frame: u32,
    timestamp: u32,
    ssrc: u32,
    sent: u64,
    ear: Ear,
}

/// A SIP phone as an [`Actor`].
pub struct Phone {
    config: PhoneConfig,
    rng: ChaCha20Rng,
    start: Instant,
    tag: u16,
    reg_call_id: String,
    reg_cseq: u32,
    reg_branch: String,
    reg_authorised: bool,
    register_at: Option<Instant>,
    reg_resend: Option<(Instant, Duration, Instant)>,
    reg_bytes: Vec<u8>,
    keepalive_at: Option<Instant>,
    planned: VecDeque<PlannedCall>,
    call: Option<Call>,
    calls_made: u32,
    calls_taken: u32,
    /// How long the call being placed stays up once answered.
    hold_for: Duration,
    out: VecDeque<Transmit>,
    events: VecDeque<ActorEvent>,
}

impl Phone {
    pub fn new(config: PhoneConfig, seed: u64, now: Instant) -> Phone {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let reg_call_id = format!("{}@{}", text::token(&mut rng), text::host(config.local));
        let mut planned: Vec<PlannedCall> = config.calls.clone();
        planned.sort_by_key(|c| c.at);
        Phone {
            tag: name_tag(&config.name),
            register_at: config.register.then_some(now + config.register_at),
            keepalive_at: config.keepalive.map(|k| now + config.register_at + k),
            planned: planned.into(),
            rng,
            start: now,
            reg_call_id,
            reg_cseq: 0,
            reg_branch: String::new(),
            reg_authorised: false,
            reg_resend: None,
            reg_bytes: Vec::new(),
            call: None,
            calls_made: 0,
            calls_taken: 0,
            hold_for: Duration::ZERO,
            out: VecDeque::new(),
            events: VecDeque::new(),
            config,
        }
    }

    fn domain(&self) -> String {
        text::host(self.config.server)
    }

    fn aor(&self) -> String {
        format!("<sip:{}@{}>", self.config.user, self.domain())
    }

    fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.config.user, text::hostport(self.config.local))
    }

    fn send(&mut self, port: u16, to: SocketAddr, payload: Vec<u8>) {
        self.out.push_back(Transmit { port, to, payload });
    }

    fn signal(&mut self, payload: Vec<u8>) {
        let (port, to) = (self.config.local.port(), self.config.server);
        self.send(port, to, payload);
    }

    // ---- registration ----

    fn register(&mut self, now: Instant, authorization: Option<String>) {
        self.reg_cseq += 1;
        self.reg_branch = text::branch(&mut self.rng);
        let uri = format!("sip:{}", self.domain());
        let (aor, contact) = (self.aor(), self.contact());
        let from = format!("{aor};tag={:04x}{}", self.tag, self.reg_cseq);
        let extra = [("Expires", self.config.expires.to_string())];
        let request = RequestText {
            method: "REGISTER",
            uri: &uri,
            via: self.config.local,
            branch: &self.reg_branch,
            rport: self.config.rport,
            from: &from,
            to: &aor,
            call_id: &self.reg_call_id,
            cseq: self.reg_cseq,
            contact: Some(&contact),
            extra: &extra,
        };
        self.reg_authorised = authorization.is_some();
        self.reg_bytes = request.render(authorization.as_deref(), None);
        self.reg_resend = Some((now + T1, T1, now + GIVE_UP));
        self.signal(self.reg_bytes.clone());
    }

    fn on_register_response(&mut self, now: Instant, response: &Response) {
        if response.status < 200 {
            self.reg_resend = None;
            return;
        }
        self.reg_resend = None;
        let user = self.config.user.clone();
        match response.status {
            200..=299 => {
                let granted = response
                    .headers
                    .get("Contact")
                    .and_then(|c| c.split(";expires=").nth(1))
                    .and_then(|e| e.split([';', ',', ' ']).next())
                    .and_then(|e| e.parse::<u32>().ok())
                    .or_else(|| response.headers.get("Expires").and_then(|e| e.trim().parse().ok()))
                    .unwrap_or(self.config.expires);
                self.events.push_back(ActorEvent::PhoneRegistered { user, expires: granted });
                self.register_at = Some(now + Duration::from_secs(u64::from(granted.max(2) / 2)));
            }
            401 | 407 if !self.reg_authorised => {
                let uri = format!("sip:{}", self.domain());
                let (u, p) = (self.config.user.clone(), self.config.password.clone());
                match text::answer(response, &u, &p, "REGISTER", &uri, &mut self.rng) {
                    Some(a) => self.register(now, Some(a)),
                    None => self.registration_failed(now, response.status, "unreadable challenge".into()),
                }
            }
            status => self.registration_failed(now, status, response.reason.clone()),
        }
    }

    fn registration_failed(&mut self, now: Instant, status: u16, reason: String) {
        let user = self.config.user.clone();
        self.events.push_back(ActorEvent::PhoneRegistrationFailed { user, status, reason });
        self.register_at = Some(now + RETRY_REGISTER);
    }

    // ---- calls ----

    fn place(&mut self, now: Instant, planned: PlannedCall) {
        if self.call.is_some() {
            return; // one line: a second call waits for nothing, it is not placed
        }
        self.calls_made += 1;
        let call_id = format!("{}@{}", text::token(&mut self.rng), text::host(self.config.local));
        let local_tag = text::token(&mut self.rng);
        let remote = format!("<sip:{}@{}>", planned.to, self.domain());
        let local = format!("{};tag={local_tag}", self.aor());
        let mut call =
            self.new_call(now, format!("out-{}", self.calls_made), true, planned.to.clone(), call_id, local_tag);
        call.remote = remote;
        call.local = local;
        call.hangup_at = None;
        self.call = Some(call);
        self.hold_for = planned.hold;
        self.invite(now, None);
    }

    fn new_call(
        &mut self,
        now: Instant,
        label: String,
        outgoing: bool,
        peer: String,
        call_id: String,
        local_tag: String,
    ) -> Call {
        Call {
            rtp_port: self.config.rtp_port,
            reinvite_at: None,
            reinviting: false,
            dtmf: self.config.dtmf.chars().collect(),
            dtmf_from: None,
            began: now,
            label,
            outgoing,
            peer,
            call_id,
            local_tag,
            remote: String::new(),
            local: String::new(),
            cseq: 0,
            state: State::Inviting,
            invite: None,
            invite_branch: String::new(),
            resend: None,
            resend_bytes: Vec::new(),
            incoming: None,
            answer_at: None,
            hangup_at: None,
            authorised: false,
            remote_media: None,
            media_from: None,
            next_frame: None,
            seq: self.rng.next_u32() as u16,
            frame: 0,
            timestamp: self.rng.next_u32(),
            ssrc: self.rng.next_u32(),
            sent: 0,
            ear: Ear::default(),
        }
    }

    /// The call's INVITE, or a re-INVITE of an answered one.
    fn invite(&mut self, now: Instant, authorization: Option<String>) {
        let session = u64::from(self.rng.next_u32());
        let contact = self.contact();
        let (via, rport) = (self.config.local, self.config.rport);
        let branch = text::branch(&mut self.rng);
        let local_ip = self.config.local.ip();
        let Some(call) = self.call.as_mut() else { return };
        let rtp = SocketAddr::new(local_ip, call.rtp_port);
        call.cseq += 1;
        call.invite_branch = branch;
        call.authorised = authorization.is_some();
        let uri = format!("sip:{}@{}", call.peer, text::host(self.config.server));
        let request = RequestText {
            method: "INVITE",
            uri: &uri,
            via,
            branch: &call.invite_branch,
            rport,
            from: &call.local,
            to: &call.remote,
            call_id: &call.call_id,
            cseq: call.cseq,
            contact: Some(&contact),
            extra: &[],
        };
        let bytes = request.render(authorization.as_deref(), Some(&text::sdp(session, rtp)));
        call.invite = Some(bytes.clone());
        call.resend = Some((now + T1, T1, now + GIVE_UP));
        call.resend_bytes = bytes.clone();
        self.signal(bytes);
    }

    /// ACK for a final answer to our INVITE: in the INVITE's transaction for
    /// a failure (RFC 3261 17.1.1.3), a new one for a 2xx (13.2.2.4).
    fn ack(&mut self, response: &Response) {
        let (via, rport) = (self.config.local, self.config.rport);
        let branch = if response.status >= 300 {
            self.call.as_ref().map(|c| c.invite_branch.clone()).unwrap_or_default()
        } else {
            text::branch(&mut self.rng)
        };
        let Some(call) = self.call.as_ref() else { return };
        let to = response.headers.get("To").unwrap_or(&call.remote).to_string();
        let uri = if response.status < 300 {
            response.headers.get("Contact").and_then(text::contact_uri).unwrap_or("").to_string()
        } else {
            format!("sip:{}@{}", call.peer, text::host(self.config.server))
        };
        let bytes = dialog_request(call, "ACK", &uri, (via, rport), &branch, &to);
        self.signal(bytes);
    }

    fn on_invite_response(&mut self, now: Instant, response: &Response) {
        let Some(call) = self.call.as_mut() else { return };
        let ours = response.cseq().is_ok_and(|c| c.seq == call.cseq);
        if call.reinviting && ours {
            return self.on_reinvite_response(now, response);
        }
        if !call.outgoing || call.state == State::Up && response.status >= 200 {
            // A retransmitted 2xx: our ACK was lost.
            if (200..300).contains(&response.status) {
                self.ack(response);
            }
            return;
        }
        call.resend = None;
        match response.status {
            100..=199 => call.state = State::Ringing,
            200..=299 => {
                call.state = State::Up;
                call.remote = response.headers.get("To").unwrap_or(&call.remote).to_string();
                call.remote_media = text::sdp_audio(&response.body);
                call.media_from = Some(now + self.config.silence);
                call.next_frame = call.media_from;
                call.hangup_at = Some(now + self.hold_for);
                call.reinvite_at = self.config.reinvite_after.map(|d| now + d);
                call.dtmf_from = call.media_from.map(|t| t + Duration::from_secs(1));
                let (label, peer) = (call.label.clone(), call.peer.clone());
                let setup_ms = ms(now.saturating_duration_since(call.began));
                self.ack(response);
                self.events.push_back(ActorEvent::PhoneCallAnswered {
                    call: label,
                    direction: "out".into(),
                    peer,
                    setup_ms,
                });
            }
            401 | 407 if !call.authorised => {
                let uri = format!("sip:{}@{}", call.peer, text::host(self.config.server));
                self.ack(response);
                let (u, p) = (self.config.user.clone(), self.config.password.clone());
                match text::answer(response, &u, &p, "INVITE", &uri, &mut self.rng) {
                    Some(a) => self.invite(now, Some(a)),
                    None => self.call_failed(response.status, "unreadable challenge".into()),
                }
            }
            status => {
                self.ack(response);
                self.call_failed(status, response.reason.clone());
            }
        }
    }

    fn on_reinvite_response(&mut self, now: Instant, response: &Response) {
        let Some(call) = self.call.as_mut() else { return };
        match response.status {
            100..=199 => call.resend = None,
            401 | 407 if !call.authorised => {
                call.resend = None;
                let uri = format!("sip:{}@{}", call.peer, text::host(self.config.server));
                self.ack(response);
                let (u, p) = (self.config.user.clone(), self.config.password.clone());
                if let Some(a) = text::answer(response, &u, &p, "INVITE", &uri, &mut self.rng) {
                    self.invite(now, Some(a));
                }
            }
            status => {
                call.resend = None;
                call.reinviting = false;
                if (200..300).contains(&status) {
                    call.remote_media = text::sdp_audio(&response.body).or(call.remote_media);
                } else {
                    // Refused: the media stays where it was.
                    call.rtp_port = self.config.rtp_port;
                }
                self.ack(response);
            }
        }
    }

    /// A late re-INVITE: the media moves to the phone's second port.
    fn reinvite(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else { return };
        call.reinvite_at = None;
        call.reinviting = true;
        call.rtp_port = self.config.rtp_port + 2;
        self.invite(now, None);
    }

    fn call_failed(&mut self, status: u16, reason: String) {
        if let Some(call) = self.call.take() {
            let direction = if call.outgoing { "out" } else { "in" }.to_string();
            self.events.push_back(ActorEvent::PhoneCallFailed {
                call: call.label,
                direction,
                peer: call.peer,
                status,
                reason,
            });
        }
    }

    fn end_call(&mut self, by: &str) {
        let Some(call) = self.call.take() else { return };
        let own = call.ear.tags.get(&self.tag).map_or(0, |t| t.0);
        let heard: Vec<String> = call
            .ear
            .tags
            .keys()
            .filter(|t| **t != self.tag)
            .map(|t| self.config.others.get(t).cloned().unwrap_or_else(|| format!("tag {t}")))
            .collect();
        let other = call.ear.tags.iter().filter(|(t, _)| **t != self.tag).map(|(_, v)| v.0).sum();
        // Loss in the pattern heard most: the span of its sequence numbers minus what arrived.
        let lost = call
            .ear
            .tags
            .values()
            .max_by_key(|v| v.0)
            .map_or(0, |(n, high, low)| u64::from(high.saturating_sub(*low)).saturating_sub(*n));
        self.events.push_back(ActorEvent::PhoneCallEnded {
            call: call.label,
            direction: if call.outgoing { "out" } else { "in" }.into(),
            peer: call.peer,
            by: by.into(),
            sent: call.sent,
            received: call.ear.received,
            own,
            other,
            heard,
            lost,
            plain: call.ear.plain,
            first_audio_ms: call.ear.first_audio.map(ms),
        });
    }

    fn bye(&mut self) {
        let (via, rport) = (self.config.local, self.config.rport);
        let branch = text::branch(&mut self.rng);
        let Some(call) = self.call.as_mut() else { return };
        call.cseq += 1;
        let uri = format!("sip:{}@{}", call.peer, text::host(self.config.server));
        let bytes = dialog_request(call, "BYE", &uri, (via, rport), &branch, &call.remote);
        self.signal(bytes);
        self.end_call("phone");
    }

    fn on_request(&mut self, now: Instant, from: SocketAddr, request: Request) {
        let reply_to = from;
        let port = self.config.local.port();
        match request.method {
            Method::Invite => {
                let call_id = request.headers.get("Call-ID").unwrap_or("").to_string();
                if let Some(call) = self.call.as_ref() {
                    let reply = if call.call_id == call_id {
                        // A re-INVITE (or a retransmission): answer with our SDP again.
                        let rtp = SocketAddr::new(self.config.local.ip(), self.config.rtp_port);
                        let contact = format!("Contact: {}\r\n", self.contact());
                        let tag = call.local_tag.clone();
                        text::response(&request, 200, "OK", Some(&tag), &contact, Some(&text::sdp(1, rtp)))
                    } else {
                        text::response(&request, 486, "Busy Here", Some("busy"), "", None)
                    };
                    return self.send(port, reply_to, reply);
                }
                self.calls_taken += 1;
                let local_tag = text::token(&mut self.rng);
                let peer = text::user_of(request.headers.get("From").unwrap_or(""));
                let mut call = self.new_call(now, format!("in-{}", self.calls_taken), false, peer, call_id, local_tag);
                call.state = State::Ringing;
                call.remote = request.headers.get("From").unwrap_or("").to_string();
                call.local = format!("{};tag={}", request.headers.get("To").unwrap_or(""), call.local_tag);
                call.remote_media = text::sdp_audio(&request.body);
                call.answer_at = Some(now + self.config.answer_after);
                let ringing = text::response(&request, 180, "Ringing", Some(&call.local_tag), "", None);
                call.incoming = Some(request);
                self.call = Some(call);
                self.send(port, reply_to, ringing);
            }
            Method::Ack => {
                if let Some(call) = self.call.as_mut() {
                    call.resend = None;
                }
            }
            Method::Bye | Method::Cancel => {
                let ok = text::response(&request, 200, "OK", None, "", None);
                self.send(port, reply_to, ok);
                let same =
                    self.call.as_ref().is_some_and(|c| Some(c.call_id.as_str()) == request.headers.get("Call-ID"));
                if same {
                    if request.method == Method::Cancel {
                        if let Some(invite) = self.call.as_ref().and_then(|c| c.incoming.clone()) {
                            let tag = self.call.as_ref().map(|c| c.local_tag.clone());
                            let terminated =
                                text::response(&invite, 487, "Request Terminated", tag.as_deref(), "", None);
                            self.send(port, reply_to, terminated);
                        }
                        self.call_failed(487, "cancelled by the caller".into());
                    } else {
                        self.end_call("remote");
                    }
                }
            }
            // OPTIONS keep-alives and anything else: a phone says OK.
            _ => {
                let ok = text::response(&request, 200, "OK", Some("opt"), "", None);
                self.send(port, reply_to, ok);
            }
        }
    }

    fn answer(&mut self, now: Instant) {
        let rtp = SocketAddr::new(self.config.local.ip(), self.config.rtp_port);
        let contact = format!("Contact: {}\r\n", self.contact());
        let silence = self.config.silence;
        let server = self.config.server;
        let Some(call) = self.call.as_mut() else { return };
        let Some(invite) = call.incoming.as_ref() else { return };
        let ok = text::response(invite, 200, "OK", Some(&call.local_tag), &contact, Some(&text::sdp(7, rtp)));
        call.answer_at = None;
        call.state = State::Up;
        call.media_from = Some(now + silence);
        call.next_frame = call.media_from;
        call.resend = Some((now + T1, T1, now + GIVE_UP));
        call.resend_bytes = ok.clone();
        let (label, peer) = (call.label.clone(), call.peer.clone());
        let setup_ms = ms(now.saturating_duration_since(call.began));
        self.events.push_back(ActorEvent::PhoneCallAnswered { call: label, direction: "in".into(), peer, setup_ms });
        let port = self.config.local.port();
        self.send(port, server, ok);
    }

    fn on_rtp(&mut self, now: Instant, data: &[u8]) {
        let start = self.start;
        let Some(call) = self.call.as_mut() else { return };
        if data.len() < 12 || data[0] >> 6 != 2 {
            return;
        }
        let csrc = usize::from(data[0] & 0x0f) * 4;
        let Some(payload) = data.get(12 + csrc..) else { return };
        let ear = &mut call.ear;
        if data[1] & 0x7f == DTMF_PT {
            ear.events += 1;
            return;
        }
        ear.received += 1;
        ear.first_audio.get_or_insert(now.saturating_duration_since(start));
        match parse_pattern(payload) {
            Some((tag, seq)) => {
                let entry = ear.tags.entry(tag).or_insert((0, seq, seq));
                entry.0 += 1;
                entry.1 = entry.1.max(seq + 1);
                entry.2 = entry.2.min(seq);
            }
            None => ear.plain += 1,
        }
    }

    fn media_tick(&mut self, now: Instant) {
        let tag = self.tag;
        let Some(call) = self.call.as_mut() else { return };
        let Some(at) = call.next_frame.filter(|t| *t <= now) else { return };
        call.next_frame = Some(at + FRAME);
        let Some(to) = call.remote_media else { return };
        let mut packet = Vec::with_capacity(172);
        // While a digit is keyed its event packets replace the audio (RFC 4733 2.5).
        let digit = call.dtmf_from.filter(|t| *t <= now).and_then(|started| Some((started, *call.dtmf.front()?)));
        match digit.and_then(|(started, d)| Some((started, switch::rtp::char_event(d)?))) {
            Some((started, event)) => {
                let elapsed = now.saturating_duration_since(started);
                let end = elapsed + FRAME * 3 >= DIGIT;
                let first = elapsed < FRAME;
                packet.extend_from_slice(&[0x80, DTMF_PT | if first { 0x80 } else { 0 }]);
                packet.extend_from_slice(&call.seq.to_be_bytes());
                packet.extend_from_slice(&call.timestamp.to_be_bytes());
                packet.extend_from_slice(&call.ssrc.to_be_bytes());
                let duration = u16::try_from((elapsed.as_millis() as u64 + 20) * 8).unwrap_or(u16::MAX);
                switch::rtp::TelephoneEvent { event, end, volume: 10, duration }.write(&mut packet);
                if elapsed + FRAME >= DIGIT {
                    // The digit is over: the next starts after it, audio resumes meanwhile.
                    call.dtmf.pop_front();
                    call.dtmf_from = Some(now + FRAME + DIGIT);
                    call.timestamp = call.timestamp.wrapping_add(u32::from(duration));
                }
            }
            None => {
                packet.extend_from_slice(&[0x80, 0]);
                packet.extend_from_slice(&call.seq.to_be_bytes());
                packet.extend_from_slice(&call.timestamp.to_be_bytes());
                packet.extend_from_slice(&call.ssrc.to_be_bytes());
                pattern_frame(tag, call.frame, G711::Ulaw, &mut packet);
                call.timestamp = call.timestamp.wrapping_add(160);
                call.frame += 1;
                call.sent += 1;
            }
        }
        call.seq = call.seq.wrapping_add(1);
        let port = call.rtp_port;
        self.send(port, to, packet);
    }
}

/// A request inside `call`'s dialog (ACK of a 2xx, BYE): no body, no Contact.
fn dialog_request(call: &Call, method: &str, uri: &str, via: (SocketAddr, bool), branch: &str, to: &str) -> Vec<u8> {
    let request = RequestText {
        method,
        uri,
        via: via.0,
        branch,
        rport: via.1,
        from: &call.local,
        to,
        call_id: &call.call_id,
        cseq: call.cseq,
        contact: None,
        extra: &[],
    };
    request.render(None, None)
}

impl Actor for Phone {
    fn ports(&self) -> Vec<u16> {
        let mut ports = vec![self.config.local.port(), self.config.rtp_port];
        if self.config.reinvite_after.is_some() {
            ports.push(self.config.rtp_port + 2);
        }
        ports
    }

    fn handle_input(&mut self, now: Instant, port: u16, from: SocketAddr, data: &[u8]) {
        if port != self.config.local.port() {
            return self.on_rtp(now, data);
        }
        match text::parse(data) {
            Some(Message::Request(request)) => self.on_request(now, from, request),
            Some(Message::Response(response)) => {
                let Ok(cseq) = response.cseq() else { return };
                match cseq.method {
                    Method::Register if response.headers.get("Call-ID") == Some(self.reg_call_id.as_str()) => {
                        self.on_register_response(now, &response)
                    }
                    Method::Invite => self.on_invite_response(now, &response),
                    _ => {}
                }
            }
            None => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.register_at.is_some_and(|t| t <= now) {
            self.register_at = None;
            self.register(now, None);
        }
        if let Some((at, interval, give_up)) = self.reg_resend.filter(|r| r.0 <= now) {
            if now >= give_up {
                self.reg_resend = None;
                self.registration_failed(now, 0, "no answer (timer F)".into());
            } else {
                let next = (interval * 2).min(T2);
                self.reg_resend = Some((at + next, next, give_up));
                self.signal(self.reg_bytes.clone());
            }
        }
        if let Some(k) = self.config.keepalive.filter(|_| self.keepalive_at.is_some_and(|t| t <= now)) {
            self.keepalive_at = Some(now + k);
            self.signal(b"\r\n\r\n".to_vec());
        }
        while self.planned.front().is_some_and(|c| self.start + c.at <= now) {
            let planned = self.planned.pop_front().expect("front checked");
            self.place(now, planned);
        }
        let mut resend = None;
        let mut timed_out = false;
        if let Some(call) = self.call.as_mut() {
            if let Some((at, interval, give_up)) = call.resend.filter(|r| r.0 <= now) {
                if now >= give_up {
                    call.resend = None;
                    timed_out = true;
                } else {
                    let next = (interval * 2).min(if call.state == State::Inviting { GIVE_UP } else { T2 });
                    call.resend = Some((at + next, next, give_up));
                    resend = Some(call.resend_bytes.clone());
                }
            }
        }
        if let Some(bytes) = resend {
            self.signal(bytes);
        }
        if timed_out {
            self.call_failed(408, "no answer (timer B)".into());
        }
        if self.call.as_ref().and_then(|c| c.answer_at).is_some_and(|t| t <= now) {
            self.answer(now);
        }
        if self.call.as_ref().and_then(|c| c.reinvite_at).is_some_and(|t| t <= now) {
            self.reinvite(now);
        }
        if self.call.as_ref().and_then(|c| c.hangup_at).is_some_and(|t| t <= now) {
            self.bye();
        }
        self.media_tick(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let call = self.call.as_ref();
        [
            self.register_at,
            self.reg_resend.map(|r| r.0),
            self.keepalive_at.filter(|_| self.config.keepalive.is_some()),
            self.planned.front().map(|c| self.start + c.at),
            call.and_then(|c| c.resend.map(|r| r.0)),
            call.and_then(|c| c.answer_at),
            call.and_then(|c| c.hangup_at),
            call.and_then(|c| c.reinvite_at),
            call.and_then(|c| c.next_frame),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll_event(&mut self) -> Option<ActorEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use switch::sip::digest::Authorization;

    use super::*;

    fn config() -> PhoneConfig {
        PhoneConfig {
            name: "alice".into(),
            user: "1001".into(),
            password: "alice-long-secret".into(),
            server: "192.168.0.1:5060".parse().unwrap(),
            local: "10.1.0.2:5060".parse().unwrap(),
            rtp_port: 4000,
            register: true,
            register_at: Duration::from_secs(1),
            expires: 300,
            keepalive: None,
            rport: true,
            silence: Duration::ZERO,
            answer_after: Duration::from_secs(1),
            calls: vec![PlannedCall { at: Duration::from_secs(5), to: "9196".into(), hold: Duration::from_secs(2) }],
            dtmf: String::new(),
            reinvite_after: None,
            others: BTreeMap::new(),
        }
    }

    fn request(t: &Transmit) -> Request {
        match Message::parse(&t.payload).expect("the phone writes parseable SIP") {
            Message::Request(r) => r,
            Message::Response(r) => panic!("expected a request, got {}", r.status),
        }
    }

    /// A response to `r` as a server writes it.
    fn answer(r: &Request, status: u16, extra: &str, body: &str) -> Vec<u8> {
        let mut t = format!("SIP/2.0 {status} X\r\n");
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            t.push_str(&format!("{name}: {}\r\n", r.headers.get(name).unwrap()));
        }
        t.push_str(&format!(
            "To: {};tag=srv\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            r.headers.get("To").unwrap(),
            body.len()
        ));
        t.into_bytes()
    }

    fn drain(p: &mut Phone) -> Vec<Transmit> {
        std::iter::from_fn(|| p.poll_transmit()).collect()
    }

    #[test]
    fn registers_with_digest_calls_and_hears_its_echo() {
        let t0 = Instant::now();
        let server: SocketAddr = "192.168.0.1:5060".parse().unwrap();
        let mut p = Phone::new(config(), 1, t0);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        p.handle_timeout(t0 + Duration::from_secs(1));
        let out = drain(&mut p);
        let register = request(&out[0]);
        assert_eq!(out[0].to, server);
        assert!(register.headers.get("Via").unwrap().contains(";rport"));
        assert_eq!(register.headers.get("Contact"), Some("<sip:1001@10.1.0.2:5060>"), "its own, private address");
        let challenge = "WWW-Authenticate: Digest realm=\"switch\", nonce=\"abc123\", qop=\"auth\", algorithm=MD5\r\n";
        p.handle_input(t0 + Duration::from_millis(1040), 5060, server, &answer(&register, 401, challenge, ""));
        let out = drain(&mut p);
        let authorised = request(&out[0]);
        let credentials = Authorization::parse(authorised.headers.get("Authorization").unwrap()).unwrap();
        assert!(credentials.verify("REGISTER", "alice-long-secret"));
        p.handle_input(
            t0 + Duration::from_millis(1080),
            5060,
            server,
            &answer(&authorised, 200, "Expires: 300\r\n", ""),
        );
        assert!(matches!(p.poll_event(), Some(ActorEvent::PhoneRegistered { expires: 300, .. })));

        p.handle_timeout(t0 + Duration::from_secs(5));
        let invite = request(&drain(&mut p)[0]);
        assert_eq!(invite.uri.to_string(), "sip:9196@192.168.0.1");
        let challenge = "Proxy-Authenticate: Digest realm=\"switch\", nonce=\"n2\", qop=\"auth\"\r\n";
        p.handle_input(t0 + Duration::from_millis(5040), 5060, server, &answer(&invite, 407, challenge, ""));
        let out = drain(&mut p);
        assert_eq!(request(&out[0]).method, Method::Ack, "the 407 is acknowledged in its transaction");
        let invite = request(&out[1]);
        let credentials = Authorization::parse(invite.headers.get("Proxy-Authorization").unwrap()).unwrap();
        assert!(credentials.verify("INVITE", "alice-long-secret"));
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 192.168.0.1\r\ns=-\r\nc=IN IP4 192.168.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";
        let contact = "Contact: <sip:9196@192.168.0.1:5060>\r\nContent-Type: application/sdp\r\n";
        let answered = t0 + Duration::from_millis(5080);
        p.handle_input(answered, 5060, server, &answer(&invite, 200, contact, sdp));
        assert_eq!(request(&drain(&mut p)[0]).method, Method::Ack);
        assert!(matches!(p.poll_event(), Some(ActorEvent::PhoneCallAnswered { setup_ms: 80, .. })));

        // Two seconds of the pattern to the SDP's address, each echoed back.
        let media: SocketAddr = "192.168.0.1:20000".parse().unwrap();
        let mut now = answered;
        while now < answered + Duration::from_secs(2) {
            p.handle_timeout(now);
            for t in drain(&mut p) {
                if t.port == 4000 {
                    assert_eq!(t.to, media);
                    p.handle_input(now, 4000, media, &t.payload);
                }
            }
            now = p.poll_timeout().unwrap();
        }
        p.handle_timeout(now);
        assert_eq!(request(&drain(&mut p)[0]).method, Method::Bye);
        match p.poll_event() {
            Some(ActorEvent::PhoneCallEnded { own, sent, lost, other, .. }) => {
                assert_eq!((own, lost, other), (sent, 0, 0));
                assert!(sent >= 99, "{sent} frames in 2 s");
            }
            e => panic!("{e:?}"),
        }
    }
}
