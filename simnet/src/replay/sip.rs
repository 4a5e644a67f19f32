//! SIP replay, server role: the switch takes the place of the captured party
//! that answered REGISTER/INVITE, and one scripted remote party per captured
//! endpoint that talked SIP to it sends its captured messages (and its RTP)
//! at their captured times, rewritten where they depend on the switch's own
//! earlier answers:
//!
//! - **To tags** of in-dialog requests (ACK, BYE, re-INVITE) carry the tag
//!   of the switch's own 2xx (or, for the ACK of a failure, of its final
//!   response); a request of a dialog the switch never established is not
//!   sent, as no user agent would send it.
//! - **Digest credentials** are recomputed for the switch's latest challenge
//!   with the password of `[sip.users]` (a placeholder without one, which
//!   the switch refuses with 403: the capture does not hold passwords).
//! - **Addresses**: the captured addresses of both parties in headers, the
//!   Request-URI and SDP become the simulated ones when they differ; Via's
//!   transport becomes UDP for SIP captured over TCP (the switch serves UDP).
//! - **RTP** goes to the media address the switch announced in its SDP in
//!   the same Call-ID (the switch echoes it); without one it is not sent.
//! - **Responses** the remote party gave to the switch's own requests (BYE,
//!   OPTIONS) answer the switch's requests of the replay, headers copied
//!   from them.
//!
//! An exchange is one transaction: a request of the remote party (Call-ID,
//! CSeq number and method, retransmissions included) and the switch's
//! responses to it, or a request of the switch and its retransmissions. The
//! responses are compared after normalising what legitimately differs (tags,
//! nonces, branches, Server/User-Agent, Contact, Via received/rport, SDP
//! origin, addresses and ports, 100 Trying present or not, retransmissions).
//!
//! Captured gaps longer than [`MAX_GAP`] are shortened to it: captures span
//! hours (or, with broken clocks, years) and the switch's transaction timers
//! are all over by then.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use switch::sip::digest::{Authorization, Challenge};
use switch::sip::header::NameAddr;
use switch::sip::message::{Headers, Message, Request, Response};
use switch::sip::sdp::SessionDescription;
use switch::sip::uri::Uri;

use super::compare::{Adaptation, Answer, Exchange, Verdict};
use super::party;
use super::remote::{Entry, Log, DEPENDENCY_WAIT};
use super::schedule::{Schedule, SharedSlip};
use super::{config, sip_common, ReplayError, ReplayOptions, ReplayOutcome, LEAD, TAIL};
use crate::capture::{self, Capture, Proto, RoleChoice, SipInfo, Transport};
use crate::trace::TimedEvent;
use crate::{derive_seed, SimNet};

/// Captured gaps longer than this are shortened to it: longer than every
/// SIP transaction timer of the switch (64·T1 = 32 s), so each transaction
/// is over before the next message, as it was in the capture.
pub const MAX_GAP: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------
// The plan: what each remote party will send, from the capture (sans IO).
// ---------------------------------------------------------------------------

/// What an exchange is about: a transaction of the remote party, one of the
/// switch, or a datagram no transaction can be told for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    /// A request of the remote party: Call-ID, CSeq number, method.
    Remote(String, u32, String),
    /// A request of the switch: Call-ID, method, its k-th distinct CSeq in that Call-ID.
    Switch(String, String, usize),
    /// A datagram without Call-ID or CSeq (or not SIP at all): stimulus index.
    Lone(usize),
}

/// The transaction key of a SIP message, from the side that sent the request.
fn remote_key(info: &SipInfo) -> Option<(String, u32, String)> {
    let (seq, method) = info.cseq.clone()?;
    Some((info.call_id.clone()?, seq, method.to_ascii_uppercase()))
}

/// Counts the switch's requests per (Call-ID, method) by distinct CSeq, so the
/// k-th request of the replay is matched to the k-th of the capture.
#[derive(Default)]
struct Occurrences(BTreeMap<(String, String), Vec<u32>>);

impl Occurrences {
    fn key(&mut self, call_id: &str, method: &str, seq: u32) -> Key {
        let seen = self.0.entry((call_id.to_string(), method.to_string())).or_default();
        let k = seen.iter().position(|s| *s == seq).unwrap_or_else(|| {
            seen.push(seq);
            seen.len() - 1
        });
        Key::Switch(call_id.to_string(), method.to_string(), k)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StimKind {
    /// A request of the remote party (or a datagram that is not SIP), sent at its time.
    Request,
    /// The remote party's response to a request of the switch: sent when the
    /// switch sends the matching request in the replay.
    Response,
    /// RTP of the call with this Call-ID, sent at its time to the switch's media address.
    Rtp { call_id: String },
}

#[derive(Clone, Debug)]
pub(crate) struct Stimulus {
    pub msg: usize,
    pub frame_no: usize,
    /// Captured time on the replay's clock (gaps shortened).
    pub at: Duration,
    pub bytes: Vec<u8>,
    pub kind: StimKind,
    pub key: Key,
    /// The source port (RTP leaves from its captured port).
    pub port: u16,
    /// For a request with credentials: the (Call-ID, CSeq) of the request
    /// the captured switch challenged before it in the same call. It waits
    /// for the replayed switch's final response to that request, so it
    /// answers the switch's nonce, not an older one (or none).
    pub answers_challenge: Option<(String, u32)>,
}

/// Where a To tag the capture's switch gave came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TagSource {
    /// Its 2xx to INVITE with this CSeq: the dialog.
    Dialog(u32),
    /// Another response to INVITE with this CSeq (a failure, or provisional).
    Invite(u32),
}

#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub remote: SocketAddr,
    pub stimuli: Vec<Stimulus>,
    /// The captured switch's SIP messages to this remote: (message index, time, key).
    pub answers: Vec<(usize, Duration, Key)>,
    /// (Call-ID, captured To tag of the switch) -> where it came from.
    tags: BTreeMap<(String, String), TagSource>,
    /// INVITE transactions whose captured ACK acknowledges a failure (same branch).
    failure_acks: BTreeSet<(String, u32)>,
    /// Transactions the captured switch refused with 403.
    refused: BTreeSet<(String, u32, String)>,
    /// Ports the remote party receives media on (RTP source ports, SDP ports).
    pub media_ports: BTreeSet<u16>,
    pub tcp: bool,
}

/// Maps capture time to the replay's clock: relative to `t0`, with gaps
/// longer than [`MAX_GAP`] shortened to it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timeline {
    t0: Duration,
    /// (capture time a shortened gap ends at, time removed up to there).
    cuts: Vec<(Duration, Duration)>,
}

impl Timeline {
    pub(crate) fn new(mut times: Vec<Duration>) -> Timeline {
        times.sort();
        let t0 = times.first().copied().unwrap_or_default();
        let mut removed = Duration::ZERO;
        let mut cuts = Vec::new();
        for w in times.windows(2) {
            let gap = w[1].saturating_sub(w[0]);
            if gap > MAX_GAP {
                removed += gap - MAX_GAP;
                cuts.push((w[1], removed));
            }
        }
        Timeline { t0, cuts }
    }

    pub(crate) fn at(&self, ts: Duration) -> Duration {
        let removed = self.cuts.iter().rev().find(|(end, _)| *end <= ts).map_or(Duration::ZERO, |c| c.1);
        ts.saturating_sub(self.t0).saturating_sub(removed)
    }

    pub(crate) fn removed(&self) -> Duration {
        self.cuts.last().map_or(Duration::ZERO, |c| c.1)
    }

    pub(crate) fn cuts_empty(&self) -> bool {
        self.cuts.is_empty()
    }
}

pub(crate) fn sip_info(m: &capture::Message) -> Option<&SipInfo> {
    match &m.proto {
        Proto::Sip(s) => Some(s),
        _ => None,
    }
}

/// The messages a replay with `switch` and `remotes` involves, for the timeline.
fn conversation_times(capture: &Capture, switch: SocketAddr, remotes: &[SocketAddr]) -> Vec<Duration> {
    let plans: Vec<Plan> = remotes.iter().map(|r| plan(capture, switch, *r, &Timeline::default())).collect();
    let mut times: Vec<Duration> = plans
        .iter()
        .flat_map(|p| p.stimuli.iter().map(|s| s.msg).chain(p.answers.iter().map(|a| a.0)))
        .map(|i| capture.messages[i].ts)
        .collect();
    times.sort();
    times
}

/// Builds the plan of the remote party `remote` talking SIP to `switch`.
pub(crate) fn plan(capture: &Capture, switch: SocketAddr, remote: SocketAddr, timeline: &Timeline) -> Plan {
    let mut p = Plan {
        remote,
        stimuli: Vec::new(),
        answers: Vec::new(),
        tags: BTreeMap::new(),
        failure_acks: BTreeSet::new(),
        refused: BTreeSet::new(),
        media_ports: BTreeSet::new(),
        tcp: false,
    };
    let mut occ = Occurrences::default();
    let mut invite_branch: BTreeMap<(String, u32), String> = BTreeMap::new();
    // Media addresses the switch announced, with the Call-ID they belong to.
    let mut announced: Vec<(SocketAddr, String)> = Vec::new();
    // Call-ID -> the CSeq number of the switch's latest challenge in it.
    let mut challenged: BTreeMap<String, u32> = BTreeMap::new();
    for (i, m) in capture.messages.iter().enumerate() {
        let at = timeline.at(m.ts);
        if m.src == switch && m.dst == remote {
            let Some(s) = sip_info(m) else { continue };
            if let (true, false, Some(c), Some((seq, _))) = (s.has_challenge, s.is_request(), &s.call_id, &s.cseq) {
                challenged.insert(c.clone(), *seq);
            }
            if let Some(c) = &s.call_id {
                announced.extend(s.sdp_media.iter().map(|a| (*a, c.clone())));
            }
            let Some((call_id, seq, method)) = remote_key(s) else { continue };
            let key = if s.is_request() {
                occ.key(&call_id, &method, seq)
            } else {
                note_response(&mut p, s, &call_id, seq, &method);
                Key::Remote(call_id, seq, method)
            };
            p.answers.push((i, at, key));
            continue;
        }
        if m.src == remote && m.dst == switch {
            let stimulus = |kind, key| Stimulus {
                msg: i,
                frame_no: m.frame,
                at,
                bytes: m.payload.clone(),
                kind,
                key,
                port: m.src.port(),
                answers_challenge: sip_info(m)
                    .filter(|s| s.has_auth && s.is_request())
                    .and_then(|s| s.call_id.as_ref())
                    .and_then(|c| challenged.get(c).map(|seq| (c.clone(), *seq))),
            };
            let n = p.stimuli.len();
            match sip_info(m) {
                Some(s) => {
                    p.tcp |= m.transport == Transport::Tcp;
                    p.media_ports.extend(s.sdp_media.iter().filter(|a| a.ip() == remote.ip()).map(|a| a.port()));
                    let Some((call_id, seq, method)) = remote_key(s) else {
                        p.stimuli.push(stimulus(StimKind::Request, Key::Lone(n)));
                        continue;
                    };
                    if s.is_request() {
                        if method == "INVITE" {
                            if let Some(b) = &s.branch {
                                invite_branch.entry((call_id.clone(), seq)).or_insert_with(|| b.clone());
                            }
                        }
                        if method == "ACK"
                            && s.branch.is_some()
                            && invite_branch.get(&(call_id.clone(), seq)) == s.branch.as_ref()
                        {
                            p.failure_acks.insert((call_id.clone(), seq));
                        }
                        p.stimuli.push(stimulus(StimKind::Request, Key::Remote(call_id, seq, method)));
                    } else {
                        let key = occ.key(&call_id, &method, seq);
                        p.stimuli.push(stimulus(StimKind::Response, key));
                    }
                }
                // Datagrams that are not SIP, to the switch's SIP port: sent as captured.
                None if m.transport == Transport::Udp && matches!(m.proto, Proto::Other) => {
                    p.stimuli.push(stimulus(StimKind::Request, Key::Lone(n)));
                }
                None => {}
            }
            continue;
        }
        // RTP of the remote party to a media address the switch announced (or to its address).
        if let (Proto::Rtp(_), true) = (&m.proto, m.src.ip() == remote.ip()) {
            let call = announced.iter().rev().find(|(a, _)| *a == m.dst).map(|(_, c)| c.clone());
            let call = call
                .or_else(|| (m.dst.ip() == switch.ip()).then(|| announced.last().map(|(_, c)| c.clone())).flatten());
            if let Some(call_id) = call {
                p.media_ports.insert(m.src.port());
                let n = p.stimuli.len();
                let s = Stimulus {
                    msg: i,
                    frame_no: m.frame,
                    at,
                    bytes: m.payload.clone(),
                    kind: StimKind::Rtp { call_id },
                    key: Key::Lone(n),
                    port: m.src.port(),
                    answers_challenge: None,
                };
                p.stimuli.push(s);
            }
        }
    }
    p.media_ports.remove(&remote.port());
    p
}

/// Learns from a captured response of the switch: where its To tag came from, refusals.
fn note_response(p: &mut Plan, s: &SipInfo, call_id: &str, seq: u32, method: &str) {
    let capture::StartLine::Response { code, .. } = s.start else { return };
    if code == 403 {
        p.refused.insert((call_id.to_string(), seq, method.to_string()));
    }
    let (Some(tag), "INVITE") = (&s.to_tag, method) else { return };
    let source = if (200..300).contains(&code) { TagSource::Dialog(seq) } else { TagSource::Invite(seq) };
    let slot = p.tags.entry((call_id.to_string(), tag.clone())).or_insert(source);
    if matches!(source, TagSource::Dialog(_)) && !matches!(slot, TagSource::Dialog(_)) {
        *slot = source;
    }
}

// ---------------------------------------------------------------------------
// The scripted remote party (sans IO core, thin async loop).
// ---------------------------------------------------------------------------

/// The password the remote party answers challenges with when `--config`
/// gives none for the user (always with the built-in configuration, whose
/// users have [`config::BUILTIN_SIP_PASSWORD`]): the capture does not hold
/// passwords, so the switch answers 403.
pub const PLACEHOLDER_PASSWORD: &str = "replay-placeholder";

/// What the switch's RTP did, per remote party.
#[derive(Clone, Debug, Default)]
pub(crate) struct RtpStats {
    pub captured: usize,
    pub sent: usize,
    pub not_sent: usize,
    pub received: usize,
    /// Where it went: the switch's announced media addresses.
    pub to: BTreeSet<SocketAddr>,
}

#[derive(Clone)]
pub(crate) struct Setup {
    pub plan: Plan,
    pub net: SimNet,
    pub switch: SocketAddr,
    pub lead: Duration,
    /// Password per SIP user name, from the switch's configuration.
    pub passwords: BTreeMap<String, String>,
    /// Captured address -> replay address, where they differ.
    pub addresses: Vec<(IpAddr, IpAddr)>,
    pub seed: u64,
    pub log: Log,
    pub rtp: Arc<Mutex<RtpStats>>,
    /// How far this party's schedule slipped waiting for answers.
    pub slip: SharedSlip,
}

/// What a held request waits for.
enum Wait {
    /// An answer without which it cannot be sent (a dialog's 2xx, a final
    /// response): given up after the bound, not sent.
    Answer(String),
    /// The switch's final response (its challenge, in the capture) to the
    /// request before it, whose nonce its credentials answer: sent after the
    /// bound with what the switch gave (or as captured).
    Challenge,
}

/// What sending a stimulus now gives.
enum Prep {
    Send(Vec<u8>, Vec<String>),
    /// Depends on an answer of the switch not seen yet.
    Wait(String),
    /// Can never be sent.
    Never(String),
}

/// A datagram to send: (source port, destination, bytes).
type Out = (u16, SocketAddr, Vec<u8>);

pub(crate) struct Remote {
    setup: Setup,
    next: usize,
    sent: Vec<bool>,
    schedule: Schedule,
    /// (Call-ID, CSeq) of every request the switch gave a final response to.
    finals_seen: BTreeSet<(String, u32)>,
    /// Responses to the switch's requests due: (time, stimulus, the switch's request).
    replies: Vec<(Duration, usize, Request)>,
    www: Option<Challenge>,
    proxy: Option<Challenge>,
    nonce_uses: BTreeMap<String, u32>,
    /// (Call-ID, CSeq) of an INVITE -> the switch's tag in its 2xx.
    dialogs: BTreeMap<(String, u32), String>,
    /// (Call-ID, CSeq) of an INVITE -> the switch's final status and tag.
    finals: BTreeMap<(String, u32), (u16, Option<String>)>,
    /// INVITEs as sent, for the ACK of a failure.
    invites: BTreeMap<(String, u32), Request>,
    /// Call-ID -> the media address the switch announced.
    media: BTreeMap<String, SocketAddr>,
    occ: Occurrences,
    rng: ChaCha20Rng,
    out: Vec<Out>,
}

impl Remote {
    pub(crate) fn new(setup: Setup) -> Remote {
        let n = setup.plan.stimuli.len();
        let rng = ChaCha20Rng::seed_from_u64(setup.seed);
        let schedule = Schedule::new(setup.lead, setup.slip.clone());
        Remote {
            setup,
            next: 0,
            sent: vec![false; n],
            schedule,
            finals_seen: BTreeSet::new(),
            replies: Vec::new(),
            www: None,
            proxy: None,
            nonce_uses: BTreeMap::new(),
            dialogs: BTreeMap::new(),
            finals: BTreeMap::new(),
            invites: BTreeMap::new(),
            media: BTreeMap::new(),
            occ: Occurrences::default(),
            rng,
            out: Vec::new(),
        }
    }

    fn log(&self, e: Entry) {
        self.setup.log.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    fn rtp<R>(&self, f: impl FnOnce(&mut RtpStats) -> R) -> R {
        f(&mut self.setup.rtp.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn take_out(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        let scheduled = match self.schedule.held() {
            Some((_, give_up)) => Some(give_up),
            None => self.setup.plan.stimuli[self.next..]
                .iter()
                .find(|s| s.kind != StimKind::Response)
                .map(|s| self.schedule.due_at(s.at)),
        };
        let replies = self.replies.iter().map(|r| r.0);
        scheduled.into_iter().chain(replies).min()
    }

    /// Sends what is due by `now`; gives up on what waited too long.
    ///
    /// A request that waits for an answer of the switch holds everything
    /// after it (the captured gaps are kept relative to it), at most
    /// [`DEPENDENCY_WAIT`].
    pub(crate) fn due(&mut self, now: Duration) {
        while let Some(s) = self.setup.plan.stimuli.get(self.next) {
            let i = self.next;
            if s.kind != StimKind::Response {
                let at = s.at;
                let held = self.schedule.held().is_some_and(|(h, _)| h == i);
                if self.schedule.due_at(at) > now && !held {
                    break;
                }
                if let Some(why) = self.try_send(now, i) {
                    match self.schedule.held() {
                        Some((_, give_up)) if held && now >= give_up => {
                            self.schedule.release(at, now, true);
                            match why {
                                Wait::Answer(why) => {
                                    self.sent[i] = true;
                                    self.log(Entry::NotSent { at: now, stimulus: i, why });
                                }
                                // Sent without it: the rewrite notes say what it lacked.
                                Wait::Challenge => self.send_now(now, i),
                            }
                        }
                        _ => {
                            self.schedule.hold(i, now);
                            break;
                        }
                    }
                } else if held {
                    self.schedule.release(at, now, false);
                }
            }
            self.next += 1;
        }
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.replies).into_iter().partition(|r| r.0 <= now);
        self.replies = later;
        for (_, i, request) in ready {
            self.send_reply(now, i, &request);
        }
    }

    /// Sends request `i` whatever it still lacks.
    fn send_now(&mut self, now: Duration, i: usize) {
        let s = self.setup.plan.stimuli[i].clone();
        let (bytes, notes) = match self.prepare(&s) {
            Prep::Send(bytes, notes) => (bytes, notes),
            Prep::Wait(_) | Prep::Never(_) => (s.bytes.clone(), vec!["sent as captured".to_string()]),
        };
        self.sent[i] = true;
        self.out.push((self.setup.plan.remote.port(), self.setup.switch, bytes.clone()));
        self.log(Entry::Sent { at: now, stimulus: i, bytes, notes });
    }

    /// Sends stimulus `i` when it can be; what it waits for when not.
    fn try_send(&mut self, now: Duration, i: usize) -> Option<Wait> {
        let s = self.setup.plan.stimuli[i].clone();
        if let StimKind::Rtp { call_id } = &s.kind {
            self.sent[i] = true;
            match self.media.get(call_id) {
                Some(to) => {
                    let to = *to;
                    self.out.push((s.port, to, s.bytes));
                    self.rtp(|r| {
                        r.sent += 1;
                        r.to.insert(to);
                    });
                }
                None => self.rtp(|r| r.not_sent += 1),
            }
            return None;
        }
        if s.answers_challenge.as_ref().is_some_and(|k| !self.finals_seen.contains(k)) {
            return Some(Wait::Challenge);
        }
        match self.prepare(&s) {
            Prep::Send(bytes, notes) => {
                self.sent[i] = true;
                self.out.push((self.setup.plan.remote.port(), self.setup.switch, bytes.clone()));
                self.log(Entry::Sent { at: now, stimulus: i, bytes, notes });
                None
            }
            Prep::Wait(why) => Some(Wait::Answer(why)),
            Prep::Never(why) => {
                self.sent[i] = true;
                self.log(Entry::NotSent { at: now, stimulus: i, why });
                None
            }
        }
    }

    /// A captured request, rewritten for this replay.
    fn prepare(&mut self, s: &Stimulus) -> Prep {
        let mut req = match Message::parse(&s.bytes) {
            Ok(Message::Request(req)) => req,
            Ok(Message::Response(_)) => return Prep::Send(s.bytes.clone(), Vec::new()),
            Err(e) => {
                let why =
                    format!("sent as captured: the switch's parser does not read it ({e}), so nothing is rewritten");
                let notes = if capture::sip::parse(&s.bytes).is_some() { vec![why] } else { Vec::new() };
                return Prep::Send(s.bytes.clone(), notes);
            }
        };
        let mut notes = Vec::new();
        let mut changed = self.rewrite_addresses(&mut req, &mut notes);
        if self.setup.plan.tcp {
            changed |= via_to_udp(&mut req.headers, &mut notes);
        }
        match self.rewrite_to_tag(&mut req, &mut notes) {
            Ok(c) => changed |= c,
            Err(p) => return p,
        }
        changed |= self.rewrite_credentials(&mut req, &s.key, &mut notes);
        if let (Ok(call_id), Ok(cseq)) = (req.headers.call_id(), req.headers.cseq()) {
            if req.method.as_str() == "INVITE" {
                self.invites.insert((call_id.to_string(), cseq.seq), req.clone());
            }
        }
        let bytes = if changed { req.encode() } else { s.bytes.clone() };
        Prep::Send(bytes, notes)
    }

    fn replace_addresses(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (from, to) in &self.setup.addresses {
            t = t.replace(&from.to_string(), &to.to_string());
        }
        t
    }

    /// The captured addresses of both parties become the simulated ones.
    fn rewrite_addresses(&self, req: &mut Request, notes: &mut Vec<String>) -> bool {
        if self.setup.addresses.is_empty() {
            return false;
        }
        let mut changed = false;
        let mut headers = Headers::new();
        for (name, value) in req.headers.iter() {
            let v = self.replace_addresses(value);
            changed |= v != value;
            headers.push(name, v);
        }
        req.headers = headers;
        let uri = self.replace_addresses(&req.uri.to_string());
        if uri != req.uri.to_string() {
            if let Ok(u) = Uri::parse(&uri) {
                req.uri = u;
                changed = true;
            }
        }
        if let Ok(body) = std::str::from_utf8(&req.body) {
            let b = self.replace_addresses(body);
            if b != body {
                req.body = b.into_bytes();
                changed = true;
            }
        }
        if changed {
            notes.push("captured addresses replaced by the simulated ones (headers, Request-URI, SDP)".into());
        }
        changed
    }

    /// In-dialog requests carry the switch's tag from its own answer.
    fn rewrite_to_tag(&self, req: &mut Request, notes: &mut Vec<String>) -> Result<bool, Prep> {
        let Some(mut to) = req.headers.get("To").and_then(|t| NameAddr::parse(t).ok()) else { return Ok(false) };
        let Some(tag) = to.tag().map(str::to_string) else { return Ok(false) };
        let Ok(call_id) = req.headers.call_id().map(str::to_string) else { return Ok(false) };
        let replay_tag = match self.setup.plan.tags.get(&(call_id.clone(), tag.clone())) {
            None => {
                notes.push(format!("To tag {tag} kept: no captured response of the switch carries it"));
                return Ok(false);
            }
            Some(TagSource::Dialog(seq)) => {
                match (self.dialogs.get(&(call_id.clone(), *seq)), self.finals.get(&(call_id, *seq))) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some((status, _))) if *status >= 300 => {
                        return Err(Prep::Never(format!(
                        "the switch answered INVITE CSeq {seq} with {status}, not 2xx: there is no dialog to send it in"
                    )))
                    }
                    (None, _) => {
                        return Err(Prep::Wait(format!(
                            "the switch never answered INVITE CSeq {seq} with 2xx: there is no dialog to send it in"
                        )))
                    }
                }
            }
            Some(TagSource::Invite(seq)) => match self.finals.get(&(call_id, *seq)) {
                Some((_, t)) => t.clone(),
                None => return Err(Prep::Wait(format!("the switch never gave a final response to INVITE CSeq {seq}"))),
            },
        };
        match &replay_tag {
            Some(t) => to.params.set("tag", Some(t.clone())),
            None => to.params.remove("tag"),
        }
        if replay_tag.as_deref() == Some(tag.as_str()) {
            return Ok(false);
        }
        req.headers.set("To", to.to_string());
        notes.push(match replay_tag {
            Some(t) => format!("To tag {tag} -> {t} (the switch's)"),
            None => format!("To tag {tag} removed (the switch's response had none)"),
        });
        Ok(true)
    }

    /// Digest credentials recomputed for the switch's latest challenge.
    fn rewrite_credentials(&mut self, req: &mut Request, key: &Key, notes: &mut Vec<String>) -> bool {
        let mut changed = false;
        for (header, proxy) in [("Authorization", false), ("Proxy-Authorization", true)] {
            let Some(captured) = req.headers.get(header).and_then(|v| Authorization::parse(v).ok()) else { continue };
            let challenge = if proxy { self.proxy.clone() } else { self.www.clone() };
            let Some(challenge) = challenge else {
                notes.push(format!("{header} sent as captured: the switch sent no challenge"));
                continue;
            };
            let method = req.method.as_str().to_string();
            let user = captured.username.clone();
            let (password, why) = match self.setup.passwords.get(&user) {
                Some(p) => {
                    let checks = captured.verify(&method, p);
                    let refused = matches!(key, Key::Remote(c, n, m) if self.setup.plan.refused.contains(&(c.clone(), *n, m.clone())));
                    if !checks && refused {
                        (format!("{p}\u{0}not-the-password"), "a wrong password: the captured answer does not check with the configured one and the capture's switch refused it")
                    } else {
                        (p.clone(), "the password of [sip.users]")
                    }
                }
                None => (
                    PLACEHOLDER_PASSWORD.to_string(),
                    "a placeholder password: the capture does not hold it (expect 403)",
                ),
            };
            let uses = self.nonce_uses.entry(challenge.nonce.clone()).or_insert(0);
            *uses += 1;
            let nc = *uses;
            match Authorization::answer(&challenge, (&user, &password), &method, &captured.uri, nc, &mut self.rng) {
                Ok(a) => {
                    req.headers.set(header, a.to_string());
                    notes.push(format!("{header} recomputed for the switch's nonce as {user} with {why}"));
                    changed = true;
                }
                Err(e) => notes.push(format!("{header} sent as captured: {e}")),
            }
        }
        changed
    }

    /// The remote party's captured response to a request of the switch.
    fn send_reply(&mut self, now: Duration, i: usize, request: &Request) {
        let s = &self.setup.plan.stimuli[i];
        let Ok(Message::Response(mut resp)) = Message::parse(&s.bytes) else {
            let bytes = s.bytes.clone();
            self.sent[i] = true;
            self.out.push((self.setup.plan.remote.port(), self.setup.switch, bytes.clone()));
            self.log(Entry::Sent { at: now, stimulus: i, bytes, notes: Vec::new() });
            return;
        };
        let captured_tag =
            resp.headers.get("To").and_then(|t| NameAddr::parse(t).ok()).and_then(|t| t.tag().map(str::to_string));
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            resp.headers.remove(name);
        }
        let mut copied = Response::to_request(request, resp.status, &resp.reason).headers;
        if let (Some(tag), Some(mut to)) = (captured_tag, copied.get("To").and_then(|t| NameAddr::parse(t).ok())) {
            if to.tag().is_none() {
                to.params.set("tag", Some(tag));
                copied.set("To", to.to_string());
            }
        }
        for (name, value) in resp.headers.iter() {
            copied.push(name, value);
        }
        resp.headers = copied;
        let bytes = resp.encode();
        self.sent[i] = true;
        self.out.push((self.setup.plan.remote.port(), self.setup.switch, bytes.clone()));
        let notes = vec!["Via, From, To, Call-ID and CSeq copied from the switch's request of the replay".into()];
        self.log(Entry::Sent { at: now, stimulus: i, bytes, notes });
    }

    /// A datagram from the switch's signalling address.
    pub(crate) fn received(&mut self, now: Duration, bytes: &[u8]) {
        self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None });
        match Message::parse(bytes) {
            Ok(Message::Response(r)) => self.on_response(now, &r),
            Ok(Message::Request(r)) => self.on_request(now, r),
            Err(_) => {}
        }
        // A request held for this answer goes now, and what follows it after its gap.
        self.due(now);
    }

    fn on_response(&mut self, now: Duration, r: &Response) {
        if let Some(v) = r.headers.get("WWW-Authenticate").and_then(|v| Challenge::parse(v).ok()) {
            self.www = Some(v);
        }
        if let Some(v) = r.headers.get("Proxy-Authenticate").and_then(|v| Challenge::parse(v).ok()) {
            self.proxy = Some(v);
        }
        let (Ok(call_id), Ok(cseq)) = (r.headers.call_id(), r.headers.cseq()) else { return };
        let call_id = call_id.to_string();
        if r.status >= 200 {
            self.finals_seen.insert((call_id.clone(), cseq.seq));
        }
        if let Some(media) = sdp_media(&r.body) {
            self.media.insert(call_id.clone(), media);
        }
        if cseq.method.as_str() != "INVITE" || r.status < 200 {
            return;
        }
        let tag = r.headers.get("To").and_then(|t| NameAddr::parse(t).ok()).and_then(|t| t.tag().map(str::to_string));
        let key = (call_id.clone(), cseq.seq);
        if (200..300).contains(&r.status) {
            if let Some(t) = &tag {
                self.dialogs.insert(key.clone(), t.clone());
            }
        }
        self.finals.insert(key.clone(), (r.status, tag));
        if r.status >= 300 && !self.setup.plan.failure_acks.contains(&key) {
            self.ack_failure(now, &key, r);
        }
    }

    /// Every user agent acknowledges a failure to its INVITE (RFC 3261
    /// 17.1.1.3); when the capture has no such ACK (its switch did not fail),
    /// the remote party sends one, as an adaptation.
    fn ack_failure(&mut self, now: Duration, key: &(String, u32), r: &Response) {
        let Some(invite) = self.invites.get(key) else { return };
        let mut ack = Request {
            method: switch::sip::header::Method::Ack,
            uri: invite.uri.clone(),
            headers: Headers::new(),
            body: Vec::new(),
        };
        if let Some(via) = invite.headers.get("Via") {
            ack.headers.push("Via", via);
        }
        ack.headers.push("Max-Forwards", "70");
        for name in ["From", "To", "Call-ID"] {
            let v = if name == "To" { r.headers.get(name) } else { invite.headers.get(name) };
            if let Some(v) = v {
                ack.headers.push(name, v);
            }
        }
        ack.headers.push("CSeq", format!("{} ACK", key.1));
        let bytes = ack.encode();
        self.out.push((self.setup.plan.remote.port(), self.setup.switch, bytes.clone()));
        let why = format!("ACK of the switch's {} (the capture has no ACK of a failure for this INVITE)", r.status);
        self.log(Entry::Adapted { at: now, bytes, why });
    }

    fn on_request(&mut self, now: Duration, r: Request) {
        let (Ok(call_id), Ok(cseq)) = (r.headers.call_id(), r.headers.cseq()) else { return };
        let method = r.method.as_str().to_ascii_uppercase();
        if method == "ACK" {
            return;
        }
        let key = self.occ.key(call_id, &method, cseq.seq);
        let captured: Vec<usize> = (0..self.setup.plan.stimuli.len())
            .filter(|&i| self.setup.plan.stimuli[i].key == key && !self.sent[i])
            .filter(|&i| !self.replies.iter().any(|p| p.1 == i))
            .collect();
        let known = self.setup.plan.answers.iter().any(|a| a.2 == key);
        if captured.is_empty() && !known {
            // A request the capture's switch never sent: answer as any user agent would.
            let resp = Response::to_request(&r, 200, "OK");
            let bytes = resp.encode();
            self.out.push((self.setup.plan.remote.port(), self.setup.switch, bytes.clone()));
            let why = format!("200 to the switch's {method}, which the capture does not have");
            self.log(Entry::Adapted { at: now, bytes, why });
            return;
        }
        for i in captured {
            let due = self.schedule.due_at(self.setup.plan.stimuli[i].at).max(now);
            self.replies.push((due, i, r.clone()));
        }
    }
}

/// The first audio stream's address in an SDP body.
fn sdp_media(body: &[u8]) -> Option<SocketAddr> {
    if body.is_empty() {
        return None;
    }
    let sdp = SessionDescription::parse(body).ok()?;
    let m = sdp.media.iter().find(|m| m.kind == "audio" && m.port != 0)?;
    Some(SocketAddr::new(m.address(&sdp)?, m.port))
}

/// `SIP/2.0/TCP` becomes `SIP/2.0/UDP` in the remote party's Via headers.
pub(crate) fn via_to_udp(headers: &mut Headers, notes: &mut Vec<String>) -> bool {
    let vias: Vec<String> = headers.get_all("Via").map(str::to_string).collect();
    if !vias.iter().any(|v| v.to_ascii_uppercase().contains("SIP/2.0/TCP")) {
        return false;
    }
    let mut rebuilt = Headers::new();
    for (name, value) in headers.iter() {
        if switch::sip::message::same_name(name, "Via") {
            let upper = value.to_ascii_uppercase();
            let v = match upper.find("SIP/2.0/TCP") {
                Some(at) => format!("{}SIP/2.0/UDP{}", &value[..at], &value[at + 11..]),
                None => value.to_string(),
            };
            rebuilt.push(name, v);
        } else {
            rebuilt.push(name, value);
        }
    }
    *headers = rebuilt;
    notes.push("Via transport TCP -> UDP (the switch serves SIP on UDP only)".into());
    true
}

/// Runs the remote party until the simulation ends.
pub(crate) async fn run(setup: Setup) -> Result<(), Box<dyn std::error::Error>> {
    let media = setup
        .plan
        .media_ports
        .iter()
        .map(|port| {
            let stats = setup.rtp.clone();
            let count: Arc<dyn Fn() + Send + Sync> =
                Arc::new(move || stats.lock().unwrap_or_else(|p| p.into_inner()).received += 1);
            (*port, count)
        })
        .collect();
    let sockets = party::Sockets {
        net: setup.net.clone(),
        v4: setup.switch.is_ipv4(),
        port: setup.plan.remote.port(),
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
        Remote::take_out(self).into_iter().map(|(port, to, bytes)| (Some(port), to, bytes)).collect()
    }

    fn next_deadline(&self) -> Option<Duration> {
        Remote::next_deadline(self)
    }

    fn received(&mut self, now: Duration, bytes: &[u8]) {
        Remote::received(self, now, bytes);
    }
}

// ---------------------------------------------------------------------------
// Exchanges and their comparison (sans IO).
// ---------------------------------------------------------------------------

/// The label of a SIP message: `INVITE`, `407 INVITE`.
pub(crate) fn label(bytes: &[u8]) -> Option<String> {
    capture::sip::parse(bytes).map(|s| s.label())
}

/// Call-ID and CSeq of a SIP message, for tables.
pub(crate) fn header(bytes: &[u8]) -> Option<String> {
    let s = capture::sip::parse(bytes)?;
    let cseq = s.cseq.as_ref().map_or("-".to_string(), |(n, m)| format!("{n} {m}"));
    Some(format!("Call-ID {} CSeq {cseq}", s.call_id.as_deref().unwrap_or("-")))
}

/// How a stimulus went out: when (or why not), its rewrites, its bytes.
type SentAs = (Result<Duration, String>, Vec<String>, Option<Vec<u8>>);

/// One exchange being assembled.
struct Slot {
    remote: SocketAddr,
    stimuli: Vec<usize>,
    captured: Vec<Answer>,
    replayed: Vec<Answer>,
    adaptations: Vec<Adaptation>,
}

/// Builds and judges every exchange of every remote party.
pub(crate) fn exchanges(capture: &Capture, plans: &[Plan], logs: &[Vec<Entry>], lead: Duration) -> Vec<Exchange> {
    let mut all = Vec::new();
    for (plan, log) in plans.iter().zip(logs) {
        all.extend(of_remote(capture, plan, log, lead));
    }
    sip_common::in_order(all)
}

fn slot_of(slots: &mut Vec<Slot>, index: &mut BTreeMap<Key, usize>, remote: SocketAddr, key: &Key) -> usize {
    *index.entry(key.clone()).or_insert_with(|| {
        slots.push(Slot {
            remote,
            stimuli: Vec::new(),
            captured: Vec::new(),
            replayed: Vec::new(),
            adaptations: Vec::new(),
        });
        slots.len() - 1
    })
}

fn of_remote(capture: &Capture, plan: &Plan, log: &[Entry], lead: Duration) -> Vec<Exchange> {
    let rel = |at: Duration| at.saturating_sub(lead);
    let mut slots: Vec<Slot> = Vec::new();
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    // Captured side, in capture order.
    let mut events: Vec<(usize, bool, usize)> = plan
        .stimuli
        .iter()
        .enumerate()
        .filter(|(_, s)| !matches!(s.kind, StimKind::Rtp { .. }))
        .map(|(i, s)| (s.msg, true, i))
        .collect();
    events.extend(plan.answers.iter().enumerate().map(|(i, a)| (a.0, false, i)));
    events.sort();
    for (_, is_stimulus, i) in events {
        if is_stimulus {
            let s = &plan.stimuli[i];
            let k = slot_of(&mut slots, &mut index, plan.remote, &s.key);
            if s.kind != StimKind::Response {
                slots[k].stimuli.push(i);
            }
        } else {
            let (msg, at, key) = &plan.answers[i];
            let k = slot_of(&mut slots, &mut index, plan.remote, key);
            let m = &capture.messages[*msg];
            slots[k].captured.push(Answer { at: *at, bytes: m.payload.clone(), frame_no: Some(m.frame) });
        }
    }
    // Replayed side.
    let mut occ = Occurrences::default();
    let mut sent: BTreeMap<usize, SentAs> = BTreeMap::new();
    for e in log {
        match e {
            Entry::Sent { at, stimulus, bytes, notes } => {
                sent.insert(*stimulus, (Ok(rel(*at)), notes.clone(), Some(bytes.clone())));
                // The remote party's captured answer to a request of the switch: shown with that request.
                if let Some(s) = plan.stimuli.get(*stimulus).filter(|s| s.kind == StimKind::Response) {
                    let k = slot_of(&mut slots, &mut index, plan.remote, &s.key);
                    slots[k].adaptations.push(Adaptation {
                        at: rel(*at),
                        sent: true,
                        label: label(bytes).unwrap_or_default(),
                        why: format!(
                            "the remote party's captured response (#{}), Via/From/To/Call-ID/CSeq copied from the \
                             switch's request",
                            s.frame_no
                        ),
                    });
                }
            }
            Entry::NotSent { stimulus, why, .. } => {
                sent.insert(*stimulus, (Err(why.clone()), Vec::new(), None));
            }
            Entry::Adapted { at, bytes, why } => {
                let info = capture::sip::parse(bytes);
                let key = info.as_ref().and_then(remote_key).map(|(c, n, m)| {
                    if m == "ACK" {
                        Key::Remote(c, n, "INVITE".into())
                    } else {
                        occ.key(&c, &m, n)
                    }
                });
                if let Some(key) = key {
                    let k = slot_of(&mut slots, &mut index, plan.remote, &key);
                    let label = label(bytes).unwrap_or_default();
                    slots[k].adaptations.push(Adaptation { at: rel(*at), sent: true, label, why: why.clone() });
                }
            }
            Entry::Received { at, bytes, .. } => {
                let info = capture::sip::parse(bytes);
                let key = match info.as_ref().and_then(|s| remote_key(s).map(|k| (s.is_request(), k))) {
                    Some((true, (c, n, m))) => occ.key(&c, &m, n),
                    Some((false, (c, n, m))) => Key::Remote(c, n, m),
                    None => Key::Lone(usize::MAX - slots.len()),
                };
                let k = slot_of(&mut slots, &mut index, plan.remote, &key);
                slots[k].replayed.push(Answer { at: rel(*at), bytes: bytes.clone(), frame_no: None });
            }
        }
    }
    slots
        .into_iter()
        .map(|slot| {
            let stimulus = slot.stimuli.first().map(|&i| {
                let s = &plan.stimuli[i];
                let (sent_at, mut notes, sent_bytes) = sent
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| (Err("not reached before the end of the replay".into()), Vec::new(), None));
                let repeats: Vec<String> = slot.stimuli[1..]
                    .iter()
                    .map(|j| {
                        let frame = plan.stimuli[*j].frame_no;
                        match sent.get(j) {
                            Some((Ok(_), _, _)) => format!("#{frame} sent"),
                            _ => format!("#{frame} not sent"),
                        }
                    })
                    .collect();
                if !repeats.is_empty() {
                    notes.push(format!("retransmissions of the same request: {}", repeats.join(", ")));
                }
                sip_common::stimulus_view(s.frame_no, &s.bytes, s.at, sent_at, notes, sent_bytes)
            });
            let mut normalised = Vec::new();
            let verdict = match stimulus.as_ref().map(|s| &s.sent) {
                Some(Err(why)) => sip_common::not_sent(why),
                _ => judge(&slot.captured, &slot.replayed, &mut normalised),
            };
            Exchange {
                n: 0,
                remote: slot.remote,
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

/// What of a SIP message is compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// `407` for a response, `BYE` for a request.
    what: String,
    challenge: Option<&'static str>,
    content_type: Option<String>,
    pub(crate) sdp: Option<String>,
}

pub(crate) fn shape(bytes: &[u8]) -> Shape {
    let msg = Message::parse(bytes).ok();
    let what = match (&msg, capture::sip::parse(bytes)) {
        (Some(Message::Response(r)), _) => r.status.to_string(),
        (Some(Message::Request(r)), _) => r.method.as_str().to_string(),
        (None, Some(s)) => match s.start {
            capture::StartLine::Response { code, .. } => code.to_string(),
            capture::StartLine::Request { method, .. } => method,
        },
        (None, None) => format!("{} bytes, not SIP", bytes.len()),
    };
    let headers = msg.as_ref().map(Message::headers);
    let challenge = headers.and_then(|h| {
        if h.contains("WWW-Authenticate") {
            Some("WWW-Authenticate")
        } else if h.contains("Proxy-Authenticate") {
            Some("Proxy-Authenticate")
        } else {
            None
        }
    });
    let content_type =
        headers.and_then(|h| h.content_type()).map(|t| t.split(';').next().unwrap_or(t).trim().to_ascii_lowercase());
    let sdp =
        msg.as_ref().filter(|m| !m.body().is_empty() && content_type.as_deref() == Some("application/sdp")).map(|m| {
            match SessionDescription::parse(m.body()) {
                Ok(s) => s
                    .media
                    .iter()
                    .map(|m| format!("{} PT {}", m.kind, m.formats.first().map_or("-", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(_) => "unparsable SDP".into(),
            }
        });
    Shape { what, challenge, content_type, sdp }
}

/// The answers that are compared: 100 Trying dropped, retransmissions collapsed.
fn compared(list: &[Answer], bytes_of: impl Fn(&Answer) -> Vec<u8>, notes: &mut Vec<String>) -> Vec<(Shape, String)> {
    let mut out: Vec<(Shape, String)> = Vec::new();
    for a in list {
        let bytes = bytes_of(a);
        let s = shape(&bytes);
        if s.what == "100" {
            notes.push("100 Trying present or not is not compared".into());
            continue;
        }
        if out.last().is_some_and(|(l, _)| *l == s) {
            notes.push("retransmissions are not compared".into());
            continue;
        }
        out.push((s, label(&bytes).unwrap_or_default()));
    }
    out
}

fn judge_shapes(captured: &[Answer], replayed: &[Answer], notes: &mut Vec<String>) -> Verdict {
    let c = compared(captured, |a| a.bytes.clone(), notes);
    let r = compared(replayed, |a| a.bytes.clone(), notes);
    match (c.is_empty(), r.is_empty()) {
        (true, true) => return Verdict::Matched,
        (false, true) => return Verdict::Missing,
        (true, false) => return Verdict::Extra,
        _ => {}
    }
    notes.push(
        "tags, nonces, branches, Server/User-Agent, Contact, Via received/rport, SDP origin, addresses and ports are not compared"
            .into(),
    );
    for k in 0..c.len().max(r.len()) {
        let field = |f: &str| if k == 0 { f.to_string() } else { format!("response {} {f}", k + 1) };
        let (a, b) = match (c.get(k), r.get(k)) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => {
                return Verdict::Diverged { field: field("message"), captured: a.1.clone(), replayed: "nothing".into() }
            }
            (None, Some(b)) => {
                return Verdict::Diverged { field: field("message"), captured: "nothing".into(), replayed: b.1.clone() }
            }
            (None, None) => break,
        };
        let (x, y) = (&a.0, &b.0);
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "absent".into());
        let diff = if x.what != y.what {
            Some((if x.what.parse::<u16>().is_ok() { "status" } else { "method" }, x.what.clone(), y.what.clone()))
        } else if x.challenge != y.challenge {
            Some(("challenge", x.challenge.unwrap_or("none").into(), y.challenge.unwrap_or("none").into()))
        } else if x.content_type != y.content_type {
            Some(("Content-Type", opt(&x.content_type), opt(&y.content_type)))
        } else if x.sdp != y.sdp {
            Some(("SDP media", opt(&x.sdp), opt(&y.sdp)))
        } else {
            None
        };
        if let Some((f, cv, rv)) = diff {
            return Verdict::Diverged { field: field(f), captured: cv, replayed: rv };
        }
    }
    Verdict::Matched
}

pub(crate) fn judge(captured: &[Answer], replayed: &[Answer], notes: &mut Vec<String>) -> Verdict {
    let v = judge_shapes(captured, replayed, notes);
    notes.dedup();
    v
}

// ---------------------------------------------------------------------------
// The replay.
// ---------------------------------------------------------------------------

/// The SIP role when no REGISTER/INVITE was answered: the endpoint most
/// requests went to (a capture of requests alone still drives the switch).
pub(crate) fn fallback_role(capture: &Capture) -> Option<RoleChoice> {
    let mut to: BTreeMap<SocketAddr, (usize, BTreeSet<SocketAddr>)> = BTreeMap::new();
    for m in &capture.messages {
        if sip_info(m).is_some_and(SipInfo::is_request) {
            let e = to.entry(m.dst).or_default();
            e.0 += 1;
            e.1.insert(m.src);
        }
    }
    let (switch, (n, remotes)) = to.into_iter().max_by_key(|(a, (n, _))| (*n, std::cmp::Reverse(*a)))?;
    Some(RoleChoice {
        proto: capture::FlowProto::Sip,
        switch,
        remotes: remotes.into_iter().collect(),
        reason: format!("no REGISTER or INVITE was answered; {switch} received the most SIP requests ({n})"),
    })
}

/// What the built-in SIP configuration is made of, from the capture.
fn builtin_inputs(
    capture: &Capture,
    role: &RoleChoice,
) -> (Option<String>, BTreeSet<String>, BTreeSet<String>, Option<u16>) {
    let mut realm = None;
    let mut users = BTreeSet::new();
    let mut extens = BTreeSet::new();
    let mut media_port = None;
    for m in &capture.messages {
        let Some(s) = sip_info(m) else { continue };
        let Ok(msg) = Message::parse(&m.payload) else { continue };
        let h = msg.headers();
        if m.src == role.switch {
            for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
                if let (None, Some(c)) = (&realm, h.get(name).and_then(|v| Challenge::parse(v).ok())) {
                    realm = Some(c.realm);
                }
            }
            if media_port.is_none() {
                media_port = s.sdp_media.iter().find(|a| a.ip() == role.switch.ip()).map(|a| a.port());
            }
            continue;
        }
        if m.dst != role.switch {
            continue;
        }
        for name in ["Authorization", "Proxy-Authorization"] {
            if let Some(a) = h.get(name).and_then(|v| Authorization::parse(v).ok()) {
                users.insert(a.username);
            }
        }
        if let Message::Request(r) = &msg {
            match r.method.as_str() {
                "REGISTER" => {
                    if let Some(u) = r.headers.from().ok().and_then(|f| f.uri.user_unescaped()) {
                        users.insert(u);
                    }
                }
                "INVITE" => {
                    extens.insert(r.uri.user_unescaped().unwrap_or_else(|| "s".into()));
                }
                _ => {}
            }
        }
    }
    (realm, users, extens, media_port)
}

/// The files the switch runs with, and the text of what the replay added.
fn configuration(
    capture: &Capture,
    role: &RoleChoice,
    listen: SocketAddr,
    opts: &ReplayOptions,
) -> Result<(BTreeMap<String, String>, Option<String>), ReplayError> {
    let given = opts.config.clone();
    if let Some(files) = &given {
        let loaded = config::load(files).map_err(ReplayError::Config)?;
        if loaded.switch.sip.is_some() {
            return Ok((files.clone(), None));
        }
    }
    let (realm, users, extens, media_port) = builtin_inputs(capture, role);
    let sip = config::builtin_sip(listen, media_port, realm.as_deref(), &users, &extens);
    let mut files = given
        .unwrap_or_else(|| BTreeMap::from([("iax.conf".to_string(), config::builtin_sip_iax(listen, media_port))]));
    let toml = files.entry("switch.toml".to_string()).or_default();
    if !toml.is_empty() && !toml.ends_with('\n') {
        toml.push('\n');
    }
    toml.push_str(&sip);
    let text = match opts.config {
        Some(_) => format!("switch.toml (appended to --config's):\n{sip}"),
        None => format!("iax.conf:\n{}\nswitch.toml:\n{}", files.get("iax.conf").map_or("", String::as_str), sip),
    };
    Ok((files, Some(text)))
}

/// Replays the SIP conversation of `capture`, the switch in `role`.
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

    let (files, config_text) = configuration(capture, &role, SocketAddr::new(switch_ip, role.switch.port()), opts)?;
    let sip_common::SipConfig { files, address_note, sip } = sip_common::load_sip(files, opts, &role, &hosts)?;
    // The remote party knows the passwords `--config` gives, not the built-in ones.
    let passwords: BTreeMap<String, String> = match config_text {
        Some(_) => BTreeMap::new(),
        None => sip.users.iter().map(|u| (u.name.clone(), u.password.clone())).collect(),
    };
    let switch_addr = SocketAddr::new(switch_ip, sip.listen.port());

    let timeline = Timeline::new(conversation_times(capture, role.switch, &role.remotes));
    let plans: Vec<Plan> = role.remotes.iter().map(|r| plan(capture, role.switch, *r, &timeline)).collect();
    let last = plans
        .iter()
        .flat_map(|p| p.stimuli.iter().map(|s| s.at).chain(p.answers.iter().map(|a| a.1)))
        .max()
        .unwrap_or_default();
    let end = LEAD + last + DEPENDENCY_WAIT + TAIL;

    let (mut sim, world) = super::replay_world(opts.seed, v4, end);

    let trace: Arc<Mutex<Vec<TimedEvent>>> = Arc::new(Mutex::new(Vec::new()));
    let switch_name = switch_ip.to_string();
    super::spawn_switch(&mut sim, &world, &switch_name, &files, derive_seed(opts.seed, "switch", 0), &trace, None);

    let logs: Vec<Log> = plans.iter().map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let rtp: Vec<Arc<Mutex<RtpStats>>> = plans
        .iter()
        .map(|p| {
            let captured = p.stimuli.iter().filter(|s| matches!(s.kind, StimKind::Rtp { .. })).count();
            Arc::new(Mutex::new(RtpStats { captured, ..RtpStats::default() }))
        })
        .collect();
    let remote_names: Vec<String> = remote_ips.iter().map(IpAddr::to_string).collect();
    let slips: Vec<SharedSlip> = plans.iter().map(|_| SharedSlip::default()).collect();
    for (k, ((plan, name), log)) in plans.iter().zip(&remote_names).zip(&logs).enumerate() {
        world.add_host(name);
        let addresses = sip_common::addresses(&role, switch_ip, plan.remote.ip(), remote_ips[k]);
        let setup = Setup {
            plan: plan.clone(),
            net: world.net(name),
            switch: switch_addr,
            lead: LEAD,
            passwords: passwords.clone(),
            addresses,
            seed: derive_seed(opts.seed, "sip-remote", k as u64),
            log: log.clone(),
            rtp: rtp[k].clone(),
            slip: slips[k].clone(),
        };
        sim.host(name.as_str(), move || run(setup.clone()));
    }

    let builtin_sip = opts.config.is_none() || config_text.is_some();
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
        let exchanges = exchanges(capture, &plans, logs, LEAD);
        let rtp: Vec<RtpStats> = rtp.iter().map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect();
        let section = sip_section(capture, &plans, &timeline, &rtp, &remote_names, builtin_sip, &sip.realm);
        (exchanges, section)
    })
}

/// The report's SIP section: what was adapted for the whole replay.
fn sip_section(
    capture: &Capture,
    plans: &[Plan],
    timeline: &Timeline,
    rtp: &[RtpStats],
    remotes: &[String],
    builtin_sip: bool,
    realm: &str,
) -> String {
    let mut s = String::new();
    let messages: usize = plans
        .iter()
        .map(|p| p.stimuli.iter().filter(|x| !matches!(x.kind, StimKind::Rtp { .. })).count() + p.answers.len())
        .sum();
    let _ = writeln!(
        s,
        "SIP replayed: {messages} of the capture's {} SIP message(s) are between the switch and its remote parties; \
         each exchange is one transaction (Call-ID, CSeq number and method).\n",
        capture.count("SIP")
    );
    if plans.iter().any(|p| p.tcp) {
        let _ = writeln!(
            s,
            "- The SIP was captured over TCP and is replayed over UDP (the switch serves SIP on UDP only); Via's \
             transport is rewritten to UDP."
        );
    }
    if !timeline.cuts.is_empty() {
        let _ = writeln!(
            s,
            "- {} captured gap(s) longer than {} s were shortened to {} s ({} removed): the switch's transaction \
             timers are over by then. Times in this report are on the shortened clock.",
            timeline.cuts.len(),
            MAX_GAP.as_secs(),
            MAX_GAP.as_secs(),
            crate::units::fmt_time(timeline.removed())
        );
    }
    if builtin_sip {
        let _ = writeln!(
            s,
            "- The capture does not hold the users' passwords: the built-in `[sip]` configuration (below) gives \
             every captured user the password `{}`, and the remote party, which does not know it, recomputes its \
             credentials with the placeholder password `{PLACEHOLDER_PASSWORD}`. The switch refuses them with 403 \
             where the captured server accepted them; that divergence is expected and honest. Give `--config` with \
             the users' passwords (`[sip.users]`) to replay authentication. Realm: `{realm}`.",
            config::BUILTIN_SIP_PASSWORD
        );
    }
    let _ = writeln!(
        s,
        "- The switch authenticates every REGISTER and INVITE (401/407, stateless); its challenges, tags and \
         Server header are its own."
    );
    for ((stats, name), plan) in rtp.iter().zip(remotes).zip(plans) {
        if stats.captured == 0 && stats.received == 0 {
            continue;
        }
        let to: Vec<String> = stats.to.iter().map(SocketAddr::to_string).collect();
        let _ = writeln!(
            s,
            "- RTP of {} (replayed as {name}): {} captured packet(s) to the switch's media; {} sent{}, {} not sent \
             (no media address announced by the switch in that call); {} packet(s) received from the switch \
             (not compared: the switch's media is its own).",
            plan.remote,
            stats.captured,
            stats.sent,
            if to.is_empty() { String::new() } else { format!(" to {}", to.join(", ")) },
            stats.not_sent,
            stats.received
        );
    }
    let rtcp = capture.count("RTCP");
    if rtcp > 0 {
        let _ = writeln!(s, "- RTCP ({rtcp} packet(s) in the capture) is not replayed.");
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_shortens_long_gaps() {
        let s = Duration::from_secs;
        let t = Timeline::new(vec![s(100), s(101), s(1000), s(1001)]);
        assert_eq!(t.at(s(101)), s(1));
        assert_eq!(t.at(s(1000)), s(1) + MAX_GAP);
        assert_eq!(t.at(s(1001)), s(2) + MAX_GAP);
    }

    #[test]
    fn via_transport_becomes_udp() {
        let mut h = Headers::new();
        h.push("Via", "SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1");
        h.push("From", "<sip:a@b>;tag=1");
        let mut notes = Vec::new();
        assert!(via_to_udp(&mut h, &mut notes));
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"));
    }
}
