//! SIP replay, client role (`--role client`): the switch takes the place of
//! the captured party that SENT the REGISTERs/INVITEs, and one scripted
//! remote party per captured server plays that server's answers.
//!
//! - **The switch** gets one `[sip.gateways.NAME]` per captured server the
//!   client registered to or called (it REGISTERs at its start and answers
//!   a challenge once with the gateway's credentials), and a control line
//!   `originate SIP/NAME/EXTEN app=pattern hold=S` at each captured INVITE's
//!   time (EXTEN the Request-URI user; S the captured time from the 200 to
//!   the client's BYE, when the client sent one).
//! - **The remote party** answers each request of the switch with the
//!   captured responses to the corresponding captured request (the k-th
//!   REGISTER transaction of the switch is the k-th captured one; in a call,
//!   the k-th CSeq of a method is the k-th captured one; the switch's n-th
//!   call is the captured n-th Call-ID), after the captured delay, adapted:
//!   Via, From, Call-ID and CSeq copied from the switch's request, To with
//!   the captured server tag, Contact and SDP at the remote's simulated
//!   address and a media port it binds; challenges keep the captured nonce
//!   (the switch computes its own answer). It sends the captured server's
//!   own requests (a BYE) at their times in the switch's dialog.
//! - **Compared**: the switch's requests with the captured client's, one
//!   exchange per transaction (method, Request-URI user, presence of
//!   credentials, SDP media), and its responses to the server's requests as
//!   in the server role.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switch::sip::header::NameAddr;
use switch::sip::message::{Headers, Message, Request, Response};

use super::compare::{Adaptation, Answer, Exchange, Verdict};
use super::party;
use super::remote::{Entry, Log, DEPENDENCY_WAIT};
use super::schedule::{Schedule, SharedSlip};
use super::sip::{judge, label, shape, sip_info, via_to_udp, Timeline};
use super::{config, sip_common, ReplayError, ReplayOptions, ReplayOutcome, LEAD, TAIL};
use crate::capture::{self, Capture, Proto, RoleChoice, Transport};
use crate::trace::TimedEvent;
use crate::{derive_seed, SimNet};

/// The password of the built-in gateways: the capture does not hold it.
pub const PLACEHOLDER_GATEWAY_PASSWORD: &str = "replay-unknown-password";

/// The gateway name of the k-th remote party (0-based).
fn gateway_name(k: usize) -> String {
    if k == 0 {
        config::BUILTIN_PEER.to_string()
    } else {
        format!("{}-{}", config::BUILTIN_PEER, k + 1)
    }
}

// ---------------------------------------------------------------------------
// Keys: which captured transaction a request of the switch stands for.
// ---------------------------------------------------------------------------

/// What an exchange is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    /// The k-th REGISTER transaction (distinct Call-ID and CSeq) of the client.
    Register(usize),
    /// In the client's n-th call (Call-ID), its k-th distinct CSeq of a method.
    Client(usize, String, usize),
    /// In the n-th call, the server's k-th distinct CSeq of a method.
    Server(usize, String, usize),
    /// A message no transaction can be told for.
    Lone(usize),
}

/// Assigns keys in message order; the same algorithm runs on the capture and
/// on the replay, so the k-th of each side meet.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keys {
    registers: Vec<(String, u32)>,
    calls: Vec<String>,
    client: BTreeMap<(usize, String), Vec<u32>>,
    server: BTreeMap<(usize, String), Vec<u32>>,
    /// (Call-ID, CSeq, method) -> key, for responses.
    known: BTreeMap<(String, u32, String), Key>,
}

fn nth(list: &mut Vec<u32>, seq: u32) -> usize {
    list.iter().position(|s| *s == seq).unwrap_or_else(|| {
        list.push(seq);
        list.len() - 1
    })
}

impl Keys {
    /// A request of the client (the switch in the replay).
    fn client_request(&mut self, call_id: &str, seq: u32, method: &str) -> Key {
        let key = if method == "REGISTER" {
            let id = (call_id.to_string(), seq);
            let k = self.registers.iter().position(|r| *r == id).unwrap_or_else(|| {
                self.registers.push(id);
                self.registers.len() - 1
            });
            Key::Register(k)
        } else {
            let n = self.calls.iter().position(|c| c == call_id).unwrap_or_else(|| {
                self.calls.push(call_id.to_string());
                self.calls.len() - 1
            });
            Key::Client(n, method.to_string(), nth(self.client.entry((n, method.to_string())).or_default(), seq))
        };
        self.known.insert((call_id.to_string(), seq, method.to_string()), key.clone());
        key
    }

    /// A request of the server in a call of the client, `None` outside one.
    fn server_request(&mut self, call_id: &str, seq: u32, method: &str) -> Option<Key> {
        let n = self.calls.iter().position(|c| c == call_id)?;
        let key = Key::Server(n, method.to_string(), nth(self.server.entry((n, method.to_string())).or_default(), seq));
        self.known.insert((call_id.to_string(), seq, method.to_string()), key.clone());
        Some(key)
    }

    fn lookup(&self, call_id: &str, seq: u32, method: &str) -> Option<Key> {
        self.known.get(&(call_id.to_string(), seq, method.to_string())).cloned()
    }
}

fn cseq_of(s: &capture::SipInfo) -> Option<(String, u32, String)> {
    let (seq, method) = s.cseq.clone()?;
    Some((s.call_id.clone()?, seq, method.to_ascii_uppercase()))
}

// ---------------------------------------------------------------------------
// The plan (sans IO).
// ---------------------------------------------------------------------------

/// A captured message of the server.
#[derive(Clone, Debug)]
pub(crate) struct Stimulus {
    pub msg: usize,
    pub frame_no: usize,
    pub at: Duration,
    pub bytes: Vec<u8>,
    /// A response to a request of the client (else a request of the server).
    pub response: bool,
    pub key: Key,
}

/// A call the captured client placed.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub at: Duration,
    pub exten: String,
    pub hold: Option<Duration>,
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub remote: SocketAddr,
    /// The captured client's requests to this server: (message, time, key).
    pub requests: Vec<(usize, Duration, Key)>,
    /// When each client request was first sent.
    first_at: BTreeMap<Key, Duration>,
    pub stimuli: Vec<Stimulus>,
    /// The captured client's responses to the server's requests.
    pub answers: Vec<(usize, Duration, Key)>,
    pub media_ports: BTreeSet<u16>,
    pub tcp: bool,
    /// For the gateway: user name, Expires asked, whether it registered or called.
    pub username: Option<String>,
    pub expires: Option<u32>,
    pub used: bool,
    /// The client REGISTERed to this server (else it only called it).
    pub registers: bool,
    pub calls: Vec<Call>,
}

fn exten_ok(e: &str) -> bool {
    !e.is_empty() && e.len() <= 64 && e.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+*#".contains(c))
}

pub(crate) fn plan(capture: &Capture, client: SocketAddr, remote: SocketAddr, timeline: &Timeline) -> Plan {
    let mut p = Plan {
        remote,
        requests: Vec::new(),
        first_at: BTreeMap::new(),
        stimuli: Vec::new(),
        answers: Vec::new(),
        media_ports: BTreeSet::new(),
        tcp: false,
        username: None,
        expires: None,
        registers: false,
        used: false,
        calls: Vec::new(),
    };
    let mut keys = Keys::default();
    let mut from_user = None;
    let mut auth_user = None;
    // Per call index: first INVITE (time, exten), first 2xx to INVITE, first BYE of the client.
    let mut invites: BTreeMap<usize, (Duration, String)> = BTreeMap::new();
    let mut answered: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut byes: BTreeMap<usize, Duration> = BTreeMap::new();
    for (i, m) in capture.messages.iter().enumerate() {
        let Some(s) = sip_info(m) else { continue };
        let at = timeline.at(m.ts);
        let parsed = Message::parse(&m.payload).ok();
        if m.src == client && m.dst == remote {
            p.tcp |= m.transport == Transport::Tcp;
            let Some((call_id, seq, method)) = cseq_of(s) else { continue };
            if s.is_request() {
                let key = keys.client_request(&call_id, seq, &method);
                p.first_at.entry(key.clone()).or_insert(at);
                if let Some(Message::Request(r)) = &parsed {
                    for name in ["Authorization", "Proxy-Authorization"] {
                        if let Some(a) =
                            r.headers.get(name).and_then(|v| switch::sip::digest::Authorization::parse(v).ok())
                        {
                            auth_user.get_or_insert(a.username);
                        }
                    }
                    if method == "REGISTER" || method == "INVITE" {
                        p.used = true;
                        if let Some(u) = r.headers.from().ok().and_then(|f| f.uri.user_unescaped()) {
                            if method == "REGISTER" || from_user.is_none() {
                                from_user.get_or_insert(u);
                            }
                        }
                    }
                    if method == "REGISTER" {
                        p.registers = true;
                    }
                    if method == "REGISTER" && p.expires.is_none() {
                        p.expires = r.expires().or_else(|| match r.contact() {
                            Ok(Some(switch::sip::header::Contact::Addrs(a))) => a.iter().find_map(|c| c.expires()),
                            _ => None,
                        });
                    }
                    if let Key::Client(n, _, _) = &key {
                        if method == "INVITE" {
                            let exten = r.uri.user_unescaped().filter(|u| exten_ok(u)).unwrap_or_else(|| "s".into());
                            invites.entry(*n).or_insert((at, exten));
                        }
                        if method == "BYE" {
                            byes.entry(*n).or_insert(at);
                        }
                    }
                }
                p.requests.push((i, at, key));
            } else if let Some(key) = keys.lookup(&call_id, seq, &method).filter(|k| matches!(k, Key::Server(..))) {
                p.answers.push((i, at, key));
            }
            continue;
        }
        if m.src == remote && m.dst == client {
            p.tcp |= m.transport == Transport::Tcp;
            p.media_ports.extend(s.sdp_media.iter().map(|a| a.port()).filter(|p| *p != 0));
            let n = p.stimuli.len();
            let stimulus =
                |response, key| Stimulus { msg: i, frame_no: m.frame, at, bytes: m.payload.clone(), response, key };
            let Some((call_id, seq, method)) = cseq_of(s) else {
                p.stimuli.push(stimulus(false, Key::Lone(n)));
                continue;
            };
            if s.is_request() {
                let key = keys.server_request(&call_id, seq, &method).unwrap_or(Key::Lone(n));
                p.stimuli.push(stimulus(false, key));
            } else if let Some(key) = keys.lookup(&call_id, seq, &method).filter(|k| !matches!(k, Key::Server(..))) {
                if let (Key::Client(n, meth, _), capture::StartLine::Response { code, .. }) = (&key, &s.start) {
                    if meth == "INVITE" && (200..300).contains(code) {
                        answered.entry(*n).or_insert(at);
                    }
                }
                p.stimuli.push(stimulus(true, key));
            }
        }
    }
    p.media_ports.remove(&remote.port());
    p.username = auth_user.or(from_user);
    for (n, (at, exten)) in invites {
        let hold = match (answered.get(&n), byes.get(&n)) {
            (Some(a), Some(b)) if b >= a => Some(*b - *a),
            _ => None,
        };
        p.calls.push(Call { at, exten, hold });
    }
    p
}

// ---------------------------------------------------------------------------
// The scripted server (sans IO core, thin async loop).
// ---------------------------------------------------------------------------

#[derive(Clone)]
pub(crate) struct Setup {
    pub plan: Plan,
    pub net: SimNet,
    pub switch: SocketAddr,
    /// The remote party's own simulated signalling address.
    pub me: SocketAddr,
    pub lead: Duration,
    /// Captured address -> replay address, where they differ.
    pub addresses: Vec<(IpAddr, IpAddr)>,
    pub log: Log,
    pub rtp_received: Arc<Mutex<usize>>,
    /// How far this party's schedule slipped waiting for answers.
    pub slip: SharedSlip,
}

type Out = (SocketAddr, Vec<u8>);

pub(crate) struct Remote {
    setup: Setup,
    keys: Keys,
    /// Keys of the switch's requests already answered (or being).
    answered: BTreeSet<Key>,
    sent: Vec<bool>,
    /// Responses due: (time, stimulus, the switch's request).
    replies: Vec<(Duration, usize, Request)>,
    /// The server's requests, in time order, not yet due.
    next: usize,
    schedule: Schedule,
    /// Call index -> the switch's INVITE, and whether a 2xx was sent to it.
    dialogs: BTreeMap<usize, (Request, bool)>,
    out: Vec<Out>,
}

impl Remote {
    pub(crate) fn new(setup: Setup) -> Remote {
        let n = setup.plan.stimuli.len();
        let schedule = Schedule::new(setup.lead, setup.slip.clone());
        Remote {
            setup,
            keys: Keys::default(),
            answered: BTreeSet::new(),
            sent: vec![false; n],
            replies: Vec::new(),
            next: 0,
            schedule,
            dialogs: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    fn log(&self, e: Entry) {
        self.setup.log.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    fn emit(&mut self, bytes: Vec<u8>) {
        self.out.push((self.setup.switch, bytes));
    }

    fn replace_addresses(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (from, to) in &self.setup.addresses {
            t = t.replace(&from.to_string(), &to.to_string());
        }
        t
    }

    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let scheduled = match self.schedule.held() {
            Some((_, give_up)) => Some(give_up),
            None => {
                self.setup.plan.stimuli[self.next..].iter().find(|s| !s.response).map(|s| self.schedule.due_at(s.at))
            }
        };
        scheduled.into_iter().chain(self.replies.iter().map(|r| r.0)).min()
    }

    /// Sends what is due; a request of the captured server that waits for
    /// the switch's dialog holds what follows it (the causal schedule).
    pub(crate) fn due(&mut self, now: Duration) {
        while let Some(s) = self.setup.plan.stimuli.get(self.next) {
            let i = self.next;
            if !s.response {
                let at = s.at;
                let held = self.schedule.held().is_some_and(|(h, _)| h == i);
                if self.schedule.due_at(at) > now && !held {
                    break;
                }
                match self.try_send(now, i) {
                    None if held => self.schedule.release(at, now, false),
                    None => {}
                    Some(why) => match self.schedule.held() {
                        Some((_, give_up)) if held && now >= give_up => {
                            self.schedule.release(at, now, true);
                            self.sent[i] = true;
                            self.log(Entry::NotSent { at: now, stimulus: i, why });
                        }
                        _ => {
                            self.schedule.hold(i, now);
                            break;
                        }
                    },
                }
            }
            self.next += 1;
        }
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.replies).into_iter().partition(|r| r.0 <= now);
        self.replies = later;
        for (_, i, request) in ready {
            self.reply(now, i, &request);
        }
    }

    /// A request of the captured server, in the switch's dialog; why it
    /// cannot be sent yet, when it cannot.
    fn try_send(&mut self, now: Duration, i: usize) -> Option<String> {
        let s = self.setup.plan.stimuli[i].clone();
        let prepared = match &s.key {
            Key::Server(n, _, _) => match self.dialogs.get(n) {
                Some((invite, true)) => self.in_dialog(&s, invite),
                _ => Err(format!("the switch has no call #{} with a 2xx from the remote party to send it in", n + 1)),
            },
            _ => Ok(self.as_captured(&s)),
        };
        match prepared {
            Ok((bytes, notes)) => {
                self.sent[i] = true;
                self.emit(bytes.clone());
                self.log(Entry::Sent { at: now, stimulus: i, bytes, notes });
                None
            }
            Err(why) => Some(why),
        }
    }

    fn as_captured(&self, s: &Stimulus) -> (Vec<u8>, Vec<String>) {
        let Ok(Message::Request(mut req)) = Message::parse(&s.bytes) else { return (s.bytes.clone(), Vec::new()) };
        let mut notes = Vec::new();
        self.rewrite_request_addresses(&mut req, &mut notes);
        if self.setup.plan.tcp {
            via_to_udp(&mut req.headers, &mut notes);
        }
        (req.encode(), notes)
    }

    fn rewrite_request_addresses(&self, req: &mut Request, notes: &mut Vec<String>) {
        if self.setup.addresses.is_empty() {
            return;
        }
        let mut headers = Headers::new();
        for (name, value) in req.headers.iter() {
            headers.push(name, self.replace_addresses(value));
        }
        req.headers = headers;
        if let Ok(u) = switch::sip::uri::Uri::parse(&self.replace_addresses(&req.uri.to_string())) {
            req.uri = u;
        }
        notes.push("captured addresses replaced by the simulated ones".into());
    }

    /// The server's captured request (a BYE) in the switch's dialog: Request-URI
    /// the switch's Contact, To the switch's From, the switch's Call-ID.
    fn in_dialog(&self, s: &Stimulus, invite: &Request) -> Result<(Vec<u8>, Vec<String>), String> {
        let Ok(Message::Request(mut req)) = Message::parse(&s.bytes) else { return Ok((s.bytes.clone(), Vec::new())) };
        let mut notes = Vec::new();
        self.rewrite_request_addresses(&mut req, &mut notes);
        if self.setup.plan.tcp {
            via_to_udp(&mut req.headers, &mut notes);
        }
        let contact = invite
            .headers
            .get("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri)
            .or_else(|| invite.headers.from().ok().map(|f| f.uri));
        if let Some(uri) = contact {
            req.uri = uri;
        }
        for (name, value) in [("To", invite.headers.get("From")), ("Call-ID", invite.headers.get("Call-ID"))] {
            if let Some(v) = value {
                req.headers.set(name, v.to_string());
            }
        }
        req.body = sdp_at(&req.body, self.setup.me.ip());
        notes.push("in the switch's dialog: Request-URI its Contact, To its From (its tag), its Call-ID".into());
        Ok((req.encode(), notes))
    }

    /// A datagram from the switch.
    pub(crate) fn received(&mut self, now: Duration, bytes: &[u8]) {
        self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None });
        if let Ok(Message::Request(r)) = Message::parse(bytes) {
            self.on_request(now, r);
        }
        // A request held for this answer goes now, and what follows it after its gap.
        self.due(now);
    }

    fn on_request(&mut self, now: Duration, r: Request) {
        let (Ok(call_id), Ok(cseq)) = (r.headers.call_id().map(str::to_string), r.headers.cseq()) else { return };
        let method = r.method.as_str().to_ascii_uppercase();
        let key = self.keys.client_request(&call_id, cseq.seq, &method);
        if let (Key::Client(n, _, _), "INVITE") = (&key, method.as_str()) {
            let confirmed = self.dialogs.get(n).is_some_and(|d| d.1);
            self.dialogs.insert(*n, (r.clone(), confirmed));
        }
        if method == "ACK" || !self.answered.insert(key.clone()) {
            return;
        }
        let first = self.setup.plan.first_at.get(&key).copied();
        let captured: Vec<usize> = (0..self.setup.plan.stimuli.len())
            .filter(|&i| self.setup.plan.stimuli[i].response && self.setup.plan.stimuli[i].key == key)
            .collect();
        if captured.is_empty() {
            self.adapt(now, &r, &method);
            return;
        }
        for i in captured {
            let delay = self.setup.plan.stimuli[i].at.saturating_sub(first.unwrap_or_default());
            self.replies.push((now + delay, i, r.clone()));
        }
        self.replies.sort_by_key(|x| (x.0, x.1));
    }

    /// A request of the switch the capture has no counterpart for.
    fn adapt(&mut self, now: Duration, r: &Request, method: &str) {
        if method == "INVITE" {
            return; // no captured answer to play; inventing one would be the replay's, not the server's
        }
        let mut resp = Response::to_request(r, 200, "OK");
        if let Some(mut to) = resp.headers.get("To").and_then(|t| NameAddr::parse(t).ok()) {
            if to.tag().is_none() {
                to.params.set("tag", Some("replay".into()));
                resp.headers.set("To", to.to_string());
            }
        }
        if method == "REGISTER" {
            if let Some(c) = r.headers.get("Contact") {
                let expires = r.headers.get("Expires").unwrap_or("3600").to_string();
                resp.headers.push("Contact", format!("{c};expires={expires}"));
            }
        }
        let bytes = resp.encode();
        self.emit(bytes.clone());
        let why = format!("200 to the switch's {method}, which the capture has no counterpart for");
        self.log(Entry::Adapted { at: now, bytes, why });
    }

    /// The captured response `i` to the switch's `request`.
    fn reply(&mut self, now: Duration, i: usize, request: &Request) {
        let s = self.setup.plan.stimuli[i].clone();
        let Ok(Message::Response(captured)) = Message::parse(&s.bytes) else {
            self.sent[i] = true;
            self.emit(s.bytes.clone());
            self.log(Entry::Sent { at: now, stimulus: i, bytes: s.bytes, notes: Vec::new() });
            return;
        };
        let tag =
            captured.headers.get("To").and_then(|t| NameAddr::parse(t).ok()).and_then(|t| t.tag().map(str::to_string));
        let mut resp = Response::to_request(request, captured.status, &captured.reason);
        let mut notes = vec!["Via, From, To, Call-ID and CSeq copied from the switch's request".to_string()];
        if let (Some(tag), Some(mut to)) = (tag, resp.headers.get("To").and_then(|t| NameAddr::parse(t).ok())) {
            if to.tag().is_none() {
                to.params.set("tag", Some(tag.clone()));
                resp.headers.set("To", to.to_string());
                notes.push(format!("To tag {tag} (the captured server's)"));
            }
        }
        let invite = request.method.as_str().eq_ignore_ascii_case("INVITE");
        for (name, value) in captured.headers.iter() {
            let skip = ["Via", "From", "To", "Call-ID", "CSeq", "Content-Length"]
                .iter()
                .any(|n| switch::sip::message::same_name(name, n));
            if skip {
                continue;
            }
            if invite && switch::sip::message::same_name(name, "Contact") {
                let user = NameAddr::parse(value).ok().and_then(|c| c.uri.user.clone());
                let host = match self.setup.me {
                    SocketAddr::V4(a) => a.to_string(),
                    SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
                };
                let v = match user {
                    Some(u) => format!("<sip:{u}@{host}>"),
                    None => format!("<sip:{host}>"),
                };
                resp.headers.push(name, v);
                notes.push("Contact at the remote party's simulated address".into());
                continue;
            }
            resp.headers.push(name, self.replace_addresses(value));
        }
        if !captured.body.is_empty() {
            resp.body = sdp_at(&captured.body, self.setup.me.ip());
            notes.push("SDP addresses at the remote party's simulated address".into());
        }
        if invite && (200..300).contains(&captured.status) {
            if let Key::Client(n, _, _) = &s.key {
                if let Some(d) = self.dialogs.get_mut(n) {
                    d.1 = true;
                }
            }
        }
        let bytes = resp.encode();
        self.sent[i] = true;
        self.emit(bytes.clone());
        self.log(Entry::Sent { at: now, stimulus: i, bytes, notes });
    }
}

/// An SDP body with every connection and origin address at `ip` (ports kept).
fn sdp_at(body: &[u8], ip: IpAddr) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else { return body.to_vec() };
    if !text.starts_with("v=") {
        return body.to_vec();
    }
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let (content, end) = match line.strip_suffix("\r\n") {
            Some(c) => (c, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(c) => (c, "\n"),
                None => (line, ""),
            },
        };
        if content.starts_with("c=IN ") {
            let _ = write!(out, "c=IN {family} {ip}{end}");
        } else if let Some(rest) = content.strip_prefix("o=") {
            let parts: Vec<&str> = rest.split(' ').collect();
            if parts.len() == 6 {
                let _ = write!(out, "o={} {} {} IN {family} {ip}{end}", parts[0], parts[1], parts[2]);
            } else {
                out.push_str(line);
            }
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

pub(crate) async fn run(setup: Setup) -> Result<(), Box<dyn std::error::Error>> {
    let media = setup
        .plan
        .media_ports
        .iter()
        .map(|port| {
            let received = setup.rtp_received.clone();
            let count: Arc<dyn Fn() + Send + Sync> =
                Arc::new(move || *received.lock().unwrap_or_else(|p| p.into_inner()) += 1);
            (*port, count)
        })
        .collect();
    let sockets = party::Sockets {
        net: setup.net.clone(),
        v4: setup.me.is_ipv4(),
        port: setup.me.port(),
        media,
        switch_ip: setup.switch.ip(),
    };
    party::run(sockets, Remote::new(setup)).await
}

impl party::Party for Remote {
    fn due(&mut self, now: Duration) {
        Remote::due(self, now);
    }

    fn take_out(&mut self) -> Vec<party::Out> {
        std::mem::take(&mut self.out).into_iter().map(|(to, bytes)| (None, to, bytes)).collect()
    }

    fn next_deadline(&self) -> Option<Duration> {
        Remote::next_deadline(self)
    }

    fn received(&mut self, now: Duration, bytes: &[u8]) {
        Remote::received(self, now, bytes);
    }
}

// ---------------------------------------------------------------------------
// Exchanges (sans IO).
// ---------------------------------------------------------------------------

/// What of a request is compared.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RequestShape {
    method: String,
    user: String,
    credentials: &'static str,
    sdp: String,
}

fn request_shape(bytes: &[u8]) -> RequestShape {
    let sdp = shape(bytes).sdp.unwrap_or_else(|| "none".into());
    match Message::parse(bytes) {
        Ok(Message::Request(r)) => RequestShape {
            method: r.method.as_str().to_string(),
            user: r.uri.user_unescaped().unwrap_or_else(|| "none".into()),
            credentials: if r.headers.contains("Proxy-Authorization") {
                "Proxy-Authorization"
            } else if r.headers.contains("Authorization") {
                "Authorization"
            } else {
                "none"
            },
            sdp,
        },
        _ => RequestShape { method: label(bytes).unwrap_or_default(), user: "none".into(), credentials: "none", sdp },
    }
}

fn judge_requests(captured: &[Answer], replayed: &[Answer], notes: &mut Vec<String>) -> Verdict {
    let collapse = |l: &[Answer], notes: &mut Vec<String>| {
        let mut out: Vec<RequestShape> = Vec::new();
        for a in l {
            let s = request_shape(&a.bytes);
            if out.last() == Some(&s) {
                notes.push("retransmissions are not compared".into());
                continue;
            }
            out.push(s);
        }
        out
    };
    let c = collapse(captured, notes);
    let r = collapse(replayed, notes);
    match (c.is_empty(), r.is_empty()) {
        (true, true) => return Verdict::Matched,
        (false, true) => return Verdict::Missing,
        (true, false) => return Verdict::Extra,
        _ => {}
    }
    notes.push(
        "tags, branches, Call-IDs, nonces, cnonce/response (credentials are compared for presence only), Contact, \
         User-Agent, addresses and CSeq numbers are not compared"
            .into(),
    );
    notes.dedup();
    for k in 0..c.len().max(r.len()) {
        let field = |f: &str| if k == 0 { f.to_string() } else { format!("request {} {f}", k + 1) };
        let (x, y) = match (c.get(k), r.get(k)) {
            (Some(x), Some(y)) => (x, y),
            (Some(x), None) => {
                return Verdict::Diverged {
                    field: field("message"),
                    captured: x.method.clone(),
                    replayed: "nothing".into(),
                }
            }
            (None, Some(y)) => {
                return Verdict::Diverged {
                    field: field("message"),
                    captured: "nothing".into(),
                    replayed: y.method.clone(),
                }
            }
            (None, None) => break,
        };
        let diff = if x.method != y.method {
            Some(("method", x.method.clone(), y.method.clone()))
        } else if x.user != y.user {
            Some(("Request-URI user", x.user.clone(), y.user.clone()))
        } else if x.credentials != y.credentials {
            Some(("credentials", x.credentials.to_string(), y.credentials.to_string()))
        } else if x.sdp != y.sdp {
            Some(("SDP media", x.sdp.clone(), y.sdp.clone()))
        } else {
            None
        };
        if let Some((f, cv, rv)) = diff {
            return Verdict::Diverged { field: field(f), captured: cv, replayed: rv };
        }
    }
    Verdict::Matched
}

struct Slot {
    stimuli: Vec<usize>,
    captured: Vec<Answer>,
    replayed: Vec<Answer>,
    adaptations: Vec<Adaptation>,
}

type SentAs = (Result<Duration, String>, Vec<String>, Option<Vec<u8>>);

fn of_remote(capture: &Capture, plan: &Plan, replayed_as: SocketAddr, log: &[Entry], lead: Duration) -> Vec<Exchange> {
    let _ = replayed_as;
    let rel = |at: Duration| at.saturating_sub(lead);
    let mut slots: Vec<Slot> = Vec::new();
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    let mut slot = |slots: &mut Vec<Slot>, key: &Key| -> usize {
        *index.entry(key.clone()).or_insert_with(|| {
            slots.push(Slot {
                stimuli: Vec::new(),
                captured: Vec::new(),
                replayed: Vec::new(),
                adaptations: Vec::new(),
            });
            slots.len() - 1
        })
    };
    // Captured side, in capture order.
    let mut events: Vec<(usize, u8, usize)> = plan.requests.iter().enumerate().map(|(i, r)| (r.0, 0, i)).collect();
    events.extend(plan.answers.iter().enumerate().map(|(i, a)| (a.0, 1, i)));
    events.extend(plan.stimuli.iter().enumerate().filter(|(_, s)| !s.response).map(|(i, s)| (s.msg, 2, i)));
    events.sort();
    for (_, kind, i) in events {
        let (msg, at, key) = match kind {
            0 => plan.requests[i].clone(),
            1 => plan.answers[i].clone(),
            _ => {
                let k = slot(&mut slots, &plan.stimuli[i].key);
                slots[k].stimuli.push(i);
                continue;
            }
        };
        let k = slot(&mut slots, &key);
        let m = &capture.messages[msg];
        slots[k].captured.push(Answer { at, bytes: m.payload.clone(), frame_no: Some(m.frame) });
    }
    // Replayed side: the same keys, from the switch's requests in arrival order.
    let mut keys = Keys::default();
    let mut sent: BTreeMap<usize, SentAs> = BTreeMap::new();
    for (n, e) in log.iter().enumerate() {
        match e {
            Entry::Sent { at, stimulus, bytes, notes } => {
                let s = &plan.stimuli[*stimulus];
                if s.response {
                    let k = slot(&mut slots, &s.key);
                    slots[k].adaptations.push(Adaptation {
                        at: rel(*at),
                        sent: true,
                        label: label(bytes).unwrap_or_default(),
                        why: format!("the captured server's response (#{}), adapted: {}", s.frame_no, notes.join("; ")),
                    });
                } else {
                    sent.insert(*stimulus, (Ok(rel(*at)), notes.clone(), Some(bytes.clone())));
                    if let Some((c, q, m)) = capture::sip::parse(bytes).as_ref().and_then(cseq_of) {
                        keys.known.insert((c, q, m), s.key.clone());
                    }
                }
            }
            Entry::NotSent { stimulus, why, .. } => {
                sent.insert(*stimulus, (Err(why.clone()), Vec::new(), None));
            }
            Entry::Adapted { at, bytes, why } => {
                let key =
                    capture::sip::parse(bytes).as_ref().and_then(cseq_of).and_then(|(c, q, m)| keys.lookup(&c, q, &m));
                if let Some(key) = key {
                    let k = slot(&mut slots, &key);
                    let label = label(bytes).unwrap_or_default();
                    slots[k].adaptations.push(Adaptation { at: rel(*at), sent: true, label, why: why.clone() });
                }
            }
            Entry::Received { at, bytes, .. } => {
                let info = capture::sip::parse(bytes);
                let key = match info.as_ref().and_then(|s| cseq_of(s).map(|k| (s.is_request(), k))) {
                    Some((true, (c, q, m))) => keys.client_request(&c, q, &m),
                    Some((false, (c, q, m))) => keys.lookup(&c, q, &m).unwrap_or(Key::Lone(usize::MAX - n)),
                    None => Key::Lone(usize::MAX - n),
                };
                let k = slot(&mut slots, &key);
                slots[k].replayed.push(Answer { at: rel(*at), bytes: bytes.clone(), frame_no: None });
            }
        }
    }
    slots
        .into_iter()
        .map(|slot| {
            let stimulus = slot.stimuli.first().map(|&i| {
                let s = &plan.stimuli[i];
                let (sent_at, notes, sent_bytes) = sent
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| (Err("not reached before the end of the replay".into()), Vec::new(), None));
                sip_common::stimulus_view(s.frame_no, &s.bytes, s.at, sent_at, notes, sent_bytes)
            });
            let mut normalised = Vec::new();
            let verdict = match stimulus.as_ref().map(|s| &s.sent) {
                Some(Err(why)) => sip_common::not_sent(why),
                Some(Ok(_)) => judge(&slot.captured, &slot.replayed, &mut normalised),
                None => judge_requests(&slot.captured, &slot.replayed, &mut normalised),
            };
            Exchange {
                n: 0,
                remote: plan.remote,
                stimulus,
                captured: slot.captured,
                replayed: slot.replayed,
                adaptations: slot.adaptations,
                verdict,
                normalised,
            }
        })
        .collect()
}

fn exchanges(capture: &Capture, plans: &[Plan], replayed: &[SocketAddr], logs: &[Vec<Entry>]) -> Vec<Exchange> {
    let mut all = Vec::new();
    for ((plan, log), r) in plans.iter().zip(logs).zip(replayed) {
        all.extend(of_remote(capture, plan, *r, log, LEAD));
    }
    sip_common::in_order(all)
}

// ---------------------------------------------------------------------------
// The replay.
// ---------------------------------------------------------------------------

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The built-in configuration of the client role (switch.toml text).
fn builtin(listen: SocketAddr, media: Option<u16>, gateways: &[(String, SocketAddr, String, u32, bool)]) -> String {
    // Media takes a port pair per call from the default rtp_ports.
    let _ = media;
    let mut t = format!(
        "\n# Built-in SIP replay configuration for --role client (docs/replay.md).\n[sip]\nlisten = \"{listen}\"\n\
         rtp = \"{}\"\ncontext = \"{}\"\n",
        listen.ip(),
        config::BUILTIN_SIP_CONTEXT
    );
    for (name, proxy, user, expires, registers) in gateways {
        let _ = write!(
            t,
            "\n# A captured server the client registered to or called.\n[sip.gateways.{name}]\nproxy = \"{proxy}\"\n\
             username = {}\npassword = \"{PLACEHOLDER_GATEWAY_PASSWORD}\"   # the capture does not hold the real one\n\
             expires = {expires}\n{}",
            toml_str(user),
            if *registers { "" } else { "register = false   # the client only called it\n" }
        );
    }
    let _ = write!(t, "\n[dialplan.{}]\n\"_.\" = \"echo\"\n", config::BUILTIN_SIP_CONTEXT);
    t
}

/// The gateway `originate` uses for a remote party: the built-in one, else the
/// `--config` gateway whose proxy is the remote's address, else the first.
fn gateway_for(sip: &switch::config::SipSettings, builtin: bool, k: usize, addrs: &[SocketAddr]) -> Option<String> {
    if builtin {
        return Some(gateway_name(k));
    }
    let host_is = |g: &switch::config::SipGateway| {
        addrs.iter().any(|a| g.host.parse::<IpAddr>().ok() == Some(a.ip()) && g.port == a.port())
    };
    sip.gateways.iter().find(|g| host_is(g)).or(sip.gateways.first()).map(|g| g.name.clone())
}

pub(crate) fn replay(
    capture: &Capture,
    opts: &ReplayOptions,
    summary: &str,
    role: RoleChoice,
) -> Result<ReplayOutcome, ReplayError> {
    let v4 = role.switch.is_ipv4();
    let hosts = match super::hosts::assign(role.switch, &role.remotes) {
        Ok(h) => h,
        Err(why) => return Ok(super::not_replayable(capture, opts, summary, Some(&role), why)),
    };
    let (switch_ip, remote_ips) = (hosts.switch, hosts.remotes.clone());
    let replay_remotes: Vec<SocketAddr> =
        role.remotes.iter().zip(&remote_ips).map(|(r, ip)| SocketAddr::new(*ip, r.port())).collect();

    // The conversation.
    let raw: Vec<Plan> = role.remotes.iter().map(|r| plan(capture, role.switch, *r, &Timeline::default())).collect();
    let mut times: Vec<Duration> = raw
        .iter()
        .flat_map(|p| {
            p.requests.iter().map(|r| r.0).chain(p.answers.iter().map(|a| a.0)).chain(p.stimuli.iter().map(|s| s.msg))
        })
        .map(|i| capture.messages[i].ts)
        .collect();
    times.sort();
    let timeline = Timeline::new(times);
    let plans: Vec<Plan> = role.remotes.iter().map(|r| plan(capture, role.switch, *r, &timeline)).collect();

    // The configuration.
    let listen = SocketAddr::new(switch_ip, role.switch.port());
    let media = capture
        .messages
        .iter()
        .filter(|m| m.src == role.switch)
        .filter_map(sip_info)
        .find_map(|s| s.sdp_media.iter().find(|a| a.ip() == role.switch.ip()).map(|a| a.port()));
    let gateways: Vec<(String, SocketAddr, String, u32, bool)> = plans
        .iter()
        .enumerate()
        .filter(|(_, p)| p.used)
        .map(|(k, p)| {
            let user = p.username.clone().filter(|u| !u.is_empty() && !u.contains(char::is_control));
            (
                gateway_name(k),
                replay_remotes[k],
                user.unwrap_or_else(|| "replay".into()),
                p.expires.unwrap_or(3600).clamp(60, 86_400),
                p.registers,
            )
        })
        .collect();
    let given_sip = match &opts.config {
        Some(files) => config::load(files).map_err(ReplayError::Config)?.switch.sip.is_some(),
        None => false,
    };
    let (files, config_text) = if given_sip {
        (opts.config.clone().unwrap_or_default(), None)
    } else {
        let sip = builtin(listen, media, &gateways);
        let mut files = opts
            .config
            .clone()
            .unwrap_or_else(|| BTreeMap::from([("iax.conf".to_string(), config::builtin_sip_iax(listen, media))]));
        let toml = files.entry("switch.toml".to_string()).or_default();
        if !toml.is_empty() && !toml.ends_with('\n') {
            toml.push('\n');
        }
        toml.push_str(&sip);
        let text = match opts.config {
            Some(_) => format!("switch.toml (appended to --config's):\n{sip}"),
            None => format!("iax.conf:\n{}\nswitch.toml:\n{sip}", files.get("iax.conf").map_or("", String::as_str)),
        };
        (files, Some(text))
    };
    let sip_common::SipConfig { files, address_note, sip } = sip_common::load_sip(files, opts, &role, &hosts)?;
    let switch_addr = SocketAddr::new(switch_ip, sip.listen.port());

    // The calls, as control lines at their captured times.
    let mut originates: Vec<(Duration, String)> = Vec::new();
    for (k, p) in plans.iter().enumerate() {
        let Some(gw) = gateway_for(&sip, config_text.is_some(), k, &[p.remote, replay_remotes[k]]) else { continue };
        for c in &p.calls {
            let hold = c.hold.map(|h| format!(" hold={:.3}", h.as_secs_f64())).unwrap_or_default();
            originates.push((c.at, format!("originate SIP/{gw}/{} app=pattern{hold}", c.exten)));
        }
    }
    originates.sort();

    let last = plans
        .iter()
        .flat_map(|p| {
            p.requests.iter().map(|r| r.1).chain(p.stimuli.iter().map(|s| s.at)).chain(p.answers.iter().map(|a| a.1))
        })
        .max()
        .unwrap_or_default();
    let end = LEAD + last + DEPENDENCY_WAIT + TAIL;

    let (mut sim, world) = super::replay_world(opts.seed, v4, end);

    let trace: Arc<Mutex<Vec<TimedEvent>>> = Arc::new(Mutex::new(Vec::new()));
    let switch_name = switch_ip.to_string();
    let lines = Some((originates, super::LEAD));
    super::spawn_switch(&mut sim, &world, &switch_name, &files, derive_seed(opts.seed, "switch", 0), &trace, lines);

    let logs: Vec<Log> = plans.iter().map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let rtp: Vec<Arc<Mutex<usize>>> = plans.iter().map(|_| Arc::new(Mutex::new(0))).collect();
    let slips: Vec<SharedSlip> = plans.iter().map(|_| SharedSlip::default()).collect();
    let remote_names: Vec<String> = remote_ips.iter().map(IpAddr::to_string).collect();
    for (k, plan) in plans.iter().enumerate() {
        world.add_host(&remote_names[k]);
        let addresses = sip_common::addresses(&role, switch_ip, plan.remote.ip(), remote_ips[k]);
        let setup = Setup {
            plan: plan.clone(),
            net: world.net(&remote_names[k]),
            switch: switch_addr,
            me: replay_remotes[k],
            lead: LEAD,
            addresses,
            log: logs[k].clone(),
            rtp_received: rtp[k].clone(),
            slip: slips[k].clone(),
        };
        sim.host(remote_names[k].as_str(), move || run(setup.clone()));
    }

    let builtin = config_text.is_some();
    let run = sip_common::Run {
        capture,
        opts,
        summary,
        role: &role,
        switch_addr,
        replay_remotes: &replay_remotes,
        remote_names: &remote_names,
        config_text,
        address_note,
        sip_context: sip.context.clone(),
    };
    run.finish(sim, &world, end, &trace, (&logs, &slips), |logs| {
        let exchanges = exchanges(capture, &plans, &replay_remotes, logs);
        let rtp: Vec<usize> = rtp.iter().map(|r| *r.lock().unwrap_or_else(|p| p.into_inner())).collect();
        let section = section(capture, &plans, &timeline, &rtp, &remote_names, builtin);
        (exchanges, section)
    })
}

/// The report's SIP section for the client role.
fn section(
    capture: &Capture,
    plans: &[Plan],
    timeline: &Timeline,
    rtp: &[usize],
    remotes: &[String],
    builtin: bool,
) -> String {
    let mut s = String::new();
    let messages: usize = plans.iter().map(|p| p.requests.len() + p.answers.len() + p.stimuli.len()).sum();
    let _ = writeln!(
        s,
        "SIP replayed, client role: {messages} of the capture's {} SIP message(s) are between the switch (the \
         captured client) and the captured servers, played by the remote parties. Each exchange is one transaction \
         of the switch (its k-th REGISTER is the captured k-th; in its n-th call the k-th CSeq of a method is the \
         captured k-th), or a request of the captured server and the switch's responses.\n",
        capture.count("SIP")
    );
    let _ = writeln!(
        s,
        "- Compared: each request's method, Request-URI user, credentials (present or not, and which header: they \
         are compared for presence only, as the switch computes its own digest answer to the captured nonce) and \
         SDP media (kind, first payload type). Tags, branches, Call-IDs, nonces, cnonce/response, Contact, \
         User-Agent, addresses and CSeq numbers are not compared."
    );
    let _ = writeln!(
        s,
        "- The remote party answers each request of the switch with the captured server's responses to the \
         corresponding captured request, after the captured delays: Via, From, Call-ID and CSeq copied from the \
         switch's request, To with the captured server's tag, Contact and SDP at the remote party's simulated \
         address (it listens on the captured media ports), challenges with the captured nonces. A REGISTER or \
         in-dialog request the capture has no counterpart for gets a 200 (an adaptation); such an INVITE gets \
         nothing."
    );
    if builtin {
        let _ = writeln!(
            s,
            "- The capture does not hold the client's passwords: the built-in gateways use the placeholder \
             `{PLACEHOLDER_GATEWAY_PASSWORD}`. The switch's authenticated requests are still sent (credentials \
             present) and the captured server's answers to them are played back; give `--config` with a `[sip]` \
             and the real `[sip.gateways]` passwords to send the client's own digests."
        );
    }
    if plans.iter().any(|p| p.tcp) {
        let _ = writeln!(
            s,
            "- The SIP was captured over TCP and is replayed over UDP (the switch serves SIP on UDP only)."
        );
    }
    if !timeline.cuts_empty() {
        let _ = writeln!(
            s,
            "- Captured gaps longer than {} s were shortened to {} s ({} removed). The gateway's own timers \
             (challenge answered at once, refresh at 5/6 of the granted expiry, back-off after a refusal) are the \
             switch's, not the captured client's.",
            super::sip::MAX_GAP.as_secs(),
            super::sip::MAX_GAP.as_secs(),
            crate::units::fmt_time(timeline.removed())
        );
    }
    let ignored: usize = capture
        .messages
        .iter()
        .filter(|m| plans.iter().any(|p| m.dst == p.remote) && matches!(m.proto, Proto::Other))
        .count();
    if ignored > 0 {
        let _ = writeln!(s, "- {ignored} datagram(s) of the captured client that are not SIP (keep-alives) are not compared: the switch sends none.");
    }
    for ((n, name), plan) in rtp.iter().zip(remotes).zip(plans) {
        if plan.media_ports.is_empty() && *n == 0 {
            continue;
        }
        let ports: Vec<String> = plan.media_ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            s,
            "- RTP: the remote party {} (replayed as {name}) listened on port(s) {} and received {n} packet(s) from \
             the switch (not compared); the captured server's RTP is not sent.",
            plan.remote,
            if ports.is_empty() { "none".into() } else { ports.join(", ") }
        );
    }
    s.push('\n');
    s
}
