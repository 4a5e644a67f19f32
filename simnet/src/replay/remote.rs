//! The scripted remote party: a small simulated host that sends the captured
//! datagrams of one remote endpoint to the switch at their captured times,
//! rewriting what depends on the switch's own earlier answers, and logs
//! everything it sends and receives.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switch::iax2::auth;
use switch::iax2::frame::{self, Frame, FullFrame};
use switch::iax2::ie::id;
use switch::iax2::subclass::IaxSubclass;

use super::party;
pub(crate) use super::schedule::DEPENDENCY_WAIT;
use super::schedule::{Schedule, SharedSlip};
use super::script::{self, is_opener, is_unsequenced, kind, Plan, Trigger};
use crate::SimNet;

/// What a captured datagram waits for: something it carries that only an
/// answer of the switch gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// The switch's call number of the dialog (destination call number).
    CallNumber,
    /// A CALLTOKEN of the switch (the captured datagram carries one).
    Token,
    /// The switch's request this answers, in a dialog the switch opened (the
    /// captured `iseqno` counts a frame of the switch not yet received).
    Request,
    /// The switch's challenge of the dialog (the datagram carries an MD5 result).
    Challenge,
}

/// What the remote party did and saw, in order.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// A captured datagram, sent (rewritten where the notes say).
    Sent { at: Duration, stimulus: usize, bytes: Vec<u8>, notes: Vec<String> },
    /// A datagram the capture does not have, sent to keep the replay going.
    Adapted { at: Duration, bytes: Vec<u8>, why: String },
    /// A captured datagram that could not be sent.
    NotSent { at: Duration, stimulus: usize, why: String },
    /// From the switch; `adaptation` says why it is not compared, when it is not.
    Received { at: Duration, bytes: Vec<u8>, adaptation: Option<String> },
}

impl Entry {
    pub fn at(&self) -> Duration {
        match self {
            Entry::Sent { at, .. }
            | Entry::Adapted { at, .. }
            | Entry::NotSent { at, .. }
            | Entry::Received { at, .. } => *at,
        }
    }
}

pub(crate) type Log = Arc<Mutex<Vec<Entry>>>;

/// A datagram due: (time, stimulus, for a reactive ACK the acknowledged timestamp and iseqno).
type Due = (Duration, usize, Option<(u32, u8)>);

/// Everything the remote host needs; cloned into each start of the host.
#[derive(Clone)]
pub(crate) struct Setup {
    pub plan: Plan,
    pub net: SimNet,
    /// The port to bind (the captured remote port).
    pub port: u16,
    /// The switch as this replay reaches it.
    pub switch: SocketAddr,
    /// Captured time 0 happens this long after the start.
    pub lead: Duration,
    /// Secrets by lower-case user name, from the switch's configuration.
    pub secrets: BTreeMap<String, Vec<String>>,
    pub log: Log,
    /// How far this party's schedule slipped waiting for answers.
    pub slip: SharedSlip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dance {
    None,
    /// We resent the opener asking for a call token.
    Asked,
}

#[derive(Clone, Debug)]
struct InstState {
    replay_s: Option<u16>,
    iseq: u8,
    oseq: u8,
    challenge: Option<String>,
    /// The opener as last sent (for the call-token dance).
    opener: Option<FullFrame>,
    dance: Dance,
    /// The switch ended the dialog (REJECT, REGREJ, HANGUP): what still
    /// waits for its call number will never get it.
    ended: bool,
}

struct Remote {
    setup: Setup,
    inst: Vec<InstState>,
    by_rcall: BTreeMap<u16, usize>,
    sent: Vec<bool>,
    /// Stimuli waiting for the switch's call number: (stimulus, give up at).
    waiting: Vec<(usize, Duration)>,
    next: usize,
    token: Option<Vec<u8>>,
    /// Switch-opened dialogs seen so far, per opener subclass.
    switch_openers: BTreeMap<u32, usize>,
    /// Reactive ACKs to send once the datagrams that arrived together are all
    /// read: (stimulus, timestamp of the acknowledged frame, iseqno then).
    deferred: Vec<(usize, u32, u8)>,
    /// Reactive ACKs due at a time: not before their captured time, so they
    /// keep their captured order among the other datagrams.
    acks: Vec<(Duration, usize, u32, u8)>,
    /// Captured ACKs not sent yet, by what they acknowledge: (dialog, oseqno, type, subclass).
    reactive: BTreeMap<(usize, u8, u8, u32), VecDeque<usize>>,
    out: Vec<Vec<u8>>,
    schedule: Schedule,
    /// CALLTOKENs the switch has sent so far.
    tokens_received: usize,
}

fn encode(f: &FullFrame) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = f.encode(&mut out) {
        tracing::warn!("replay: cannot encode {f:?}: {e}");
    }
    out
}

fn md5_wrong(challenge: &str, secret: &str) -> String {
    auth::md5_response(challenge, &format!("{secret}\u{0}not-the-secret"))
}

/// Runs the remote party until the simulation ends.
pub(crate) async fn run(setup: Setup) -> Result<(), Box<dyn std::error::Error>> {
    let sockets = party::Sockets {
        net: setup.net.clone(),
        v4: setup.switch.is_ipv4(),
        port: setup.port,
        media: Vec::new(),
        switch_ip: setup.switch.ip(),
    };
    party::run(sockets, Remote::new(setup)).await
}

impl Remote {
    fn new(setup: Setup) -> Remote {
        let n = setup.plan.instances.len();
        let stimuli = setup.plan.stimuli.len();
        let schedule = Schedule::new(setup.lead, setup.slip.clone());
        let mut r = Remote {
            setup,
            schedule,
            tokens_received: 0,
            inst: vec![
                InstState {
                    replay_s: None,
                    iseq: 0,
                    oseq: 0,
                    challenge: None,
                    opener: None,
                    dance: Dance::None,
                    ended: false
                };
                n
            ],
            by_rcall: BTreeMap::new(),
            sent: vec![false; stimuli],
            waiting: Vec::new(),
            next: 0,
            token: None,
            switch_openers: BTreeMap::new(),
            deferred: Vec::new(),
            acks: Vec::new(),
            reactive: BTreeMap::new(),
            out: Vec::new(),
        };
        for (i, st) in r.setup.plan.stimuli.iter().enumerate() {
            if let (Trigger::AckOf { oseqno, kind: (t, sub) }, Some(n)) = (&st.trigger, st.instance) {
                // By kind, in order: the switch may number its frames otherwise (a RINGING
                // Asterisk does not send before the ANSWER); the oseqno is not the key.
                let _ = oseqno;
                r.reactive.entry((n, 0, t.as_u8(), *sub)).or_default().push_back(i);
            }
        }
        r
    }
}

impl party::Party for Remote {
    fn due(&mut self, now: Duration) {
        Remote::due(self, now);
    }

    fn take_out(&mut self) -> Vec<party::Out> {
        std::mem::take(&mut self.out).into_iter().map(|bytes| (None, self.setup.switch, bytes)).collect()
    }

    fn next_deadline(&self) -> Option<Duration> {
        Remote::next_deadline(self)
    }

    fn received(&mut self, now: Duration, bytes: &[u8]) {
        Remote::received(self, now, bytes);
    }

    const READS_BURSTS: bool = true;

    /// Reactive ACKs leave once the datagrams that arrived together are all
    /// read, not before their (slipped) captured time.
    fn burst_read(&mut self, now: Duration) {
        for (i, ts, iseq) in std::mem::take(&mut self.deferred) {
            let captured = self.schedule.due_at(self.setup.plan.stimuli[i].at);
            self.acks.push((captured.max(now), i, ts, iseq));
        }
    }
}

impl Remote {
    fn log(&self, e: Entry) {
        self.setup.log.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    fn next_deadline(&self) -> Option<Duration> {
        let scheduled = match self.schedule.held() {
            Some((_, give_up)) => Some(give_up),
            None => self.setup.plan.stimuli[self.next..]
                .iter()
                .find(|s| s.trigger == Trigger::At)
                .map(|s| self.schedule.due_at(s.at)),
        };
        let waiting = self.waiting.iter().map(|(_, at)| *at);
        let acks = self.acks.iter().map(|(at, ..)| *at);
        scheduled.into_iter().chain(waiting).chain(acks).min()
    }

    /// Sends what is due by `now`, and gives up on what waited too long.
    fn due(&mut self, now: Duration) {
        // Scheduled datagrams and ready ACKs, in captured order.
        let mut batch: Vec<Due> = Vec::new();
        while let Some(s) = self.setup.plan.stimuli.get(self.next) {
            let i = self.next;
            if s.trigger == Trigger::At {
                let (at, due) = (s.at, self.schedule.due_at(s.at));
                let held = self.schedule.held().is_some_and(|(h, _)| h == i);
                if due > now && !held {
                    break;
                }
                match self.unmet(i) {
                    None => {
                        if held {
                            self.schedule.release(at, now, false);
                        }
                        batch.push((due.min(now), i, None));
                    }
                    // The switch ended that dialog: its call number will never come.
                    Some(Need::CallNumber) if self.instance_ended(i) => {
                        let why = "the switch ended the dialog it belongs to before giving it a call number".into();
                        self.log(Entry::NotSent { at: now, stimulus: i, why });
                        self.sent[i] = true;
                        if held {
                            self.schedule.release(at, now, true);
                        }
                    }
                    Some(need) => {
                        match self.schedule.held() {
                            Some((_, give_up)) if held && now >= give_up => {
                                self.schedule.release(at, now, true);
                                if need == Need::CallNumber {
                                    let why = "the switch never answered the dialog it belongs to (no call number to send it to)".to_string();
                                    self.log(Entry::NotSent { at: now, stimulus: i, why });
                                    self.sent[i] = true;
                                } else {
                                    // Sent without it: the rewrite notes say what it lacked.
                                    batch.push((now, i, None));
                                }
                            }
                            _ => {
                                self.schedule.hold(i, now);
                                break;
                            }
                        }
                    }
                }
            }
            self.next += 1;
        }
        self.acks.retain(|&(at, i, ts, iseq)| {
            if at <= now {
                batch.push((at, i, Some((ts, iseq))));
            }
            at > now
        });
        batch.sort_by_key(|(at, i, _)| (*at, *i));
        for (_, i, ack) in batch {
            self.try_send(now, i, ack);
        }
        let expired: Vec<usize> = self.waiting.iter().filter(|(_, at)| *at <= now).map(|(i, _)| *i).collect();
        self.waiting.retain(|(_, at)| *at > now);
        for i in expired {
            let why = "the switch never answered the dialog it belongs to (no call number to send it to)".to_string();
            self.log(Entry::NotSent { at: now, stimulus: i, why });
            self.sent[i] = true;
        }
    }

    /// What stimulus `i` still lacks of the switch's answers, if anything.
    fn unmet(&self, i: usize) -> Option<Need> {
        let s = &self.setup.plan.stimuli[i];
        let Frame::Full(f) = &s.frame else { return None };
        let n = s.instance?;
        if f.dst_call != 0 && self.inst[n].replay_s.is_none() {
            return Some(Need::CallNumber);
        }
        if f.frame_type != switch::iax2::subclass::FrameType::Iax {
            return None;
        }
        let plan = &self.setup.plan.instances[n];
        let token = script::raw_ie(&f.payload, id::CALLTOKEN).is_some_and(|t| !t.is_empty());
        if token && !plan.by_switch && self.tokens_received < s.tokens_before {
            return Some(Need::Token);
        }
        let md5 = script::raw_ie(&f.payload, id::MD5_RESULT).is_some();
        if md5 && plan.challenge.is_some() && self.inst[n].challenge.is_none() {
            return Some(Need::Challenge);
        }
        // An answer (ACCEPT after the switch's AUTHREP) waits for what it answers.
        let ahead = f.iseqno.wrapping_sub(self.inst[n].iseq) as i8 > 0;
        if plan.by_switch && ahead && !script::is_unsequenced(f) {
            return Some(Need::Request);
        }
        None
    }

    fn instance_ended(&self, i: usize) -> bool {
        self.setup.plan.stimuli[i].instance.is_some_and(|n| self.inst[n].ended)
    }

    /// Sends stimulus `i`, rewritten; `ack` is the timestamp of the frame a
    /// reactive ACK acknowledges and the iseqno when it arrived.
    fn try_send(&mut self, now: Duration, i: usize, ack: Option<(u32, u8)>) {
        let s = self.setup.plan.stimuli[i].clone();
        let Frame::Full(f) = &s.frame else {
            self.sent[i] = true;
            self.out.push(s.bytes.clone());
            self.log(Entry::Sent { at: now, stimulus: i, bytes: s.bytes, notes: Vec::new() });
            return;
        };
        let mut notes = Vec::new();
        let mut g = f.clone();
        if let Some(n) = s.instance {
            if f.dst_call != 0 {
                match self.inst[n].replay_s {
                    Some(call) => g.dst_call = call,
                    None => {
                        if !self.waiting.iter().any(|(w, _)| *w == i) {
                            self.waiting.push((i, self.setup.lead + s.at + DEPENDENCY_WAIT));
                        }
                        return;
                    }
                }
            }
            g.iseqno = self.inst[n].iseq;
        }
        if let Some((ts, iseq)) = ack {
            g.timestamp = ts;
            g.iseqno = iseq;
        }
        if g.frame_type == switch::iax2::subclass::FrameType::Iax {
            self.rewrite_ies(&mut g, s.instance, &mut notes);
        }
        if g.dst_call != f.dst_call {
            notes.push(format!("destination call {} -> {}", f.dst_call, g.dst_call));
        }
        if g.iseqno != f.iseqno {
            notes.push(format!("iseqno {} -> {}", f.iseqno, g.iseqno));
        }
        if let Some(n) = s.instance {
            if is_opener(f) {
                self.by_rcall.insert(f.src_call, n);
                self.inst[n].opener = Some(g.clone());
            }
            if !is_unsequenced(&g) {
                self.inst[n].oseq = g.oseqno.wrapping_add(1);
            }
        }
        let bytes = encode(&g);
        self.sent[i] = true;
        self.waiting.retain(|(w, _)| *w != i);
        self.out.push(bytes.clone());
        self.log(Entry::Sent { at: now, stimulus: i, bytes, notes });
    }

    fn rewrite_ies(&mut self, g: &mut FullFrame, instance: Option<usize>, notes: &mut Vec<String>) {
        // In a dialog the switch opened, the remote party issues the tokens: they stay as captured.
        let switch_opened = instance.is_some_and(|n| self.setup.plan.instances[n].by_switch);
        if let Some(token) = script::raw_ie(&g.payload, id::CALLTOKEN).map(<[u8]>::to_vec) {
            if !token.is_empty() && !switch_opened {
                let ours = self.token.clone().unwrap_or_default();
                g.payload = script::with_ie(&g.payload, id::CALLTOKEN, &ours, false);
                notes.push(if ours.is_empty() {
                    "call token emptied: the switch issued none".into()
                } else {
                    "call token replaced by the one the switch issued".into()
                });
            }
        }
        let Some(captured) =
            script::raw_ie(&g.payload, id::MD5_RESULT).map(|v| String::from_utf8_lossy(v).into_owned())
        else {
            return;
        };
        let inst = instance.map(|n| (&self.setup.plan.instances[n], &self.inst[n]));
        let challenge = inst.and_then(|(_, st)| st.challenge.clone());
        let captured_challenge = inst.and_then(|(i, _)| i.challenge.clone());
        let accepted = inst.and_then(|(i, _)| i.accepted);
        let user = script::raw_ie(&g.payload, id::USERNAME)
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .or_else(|| inst.and_then(|(i, _)| i.username.clone()));
        let Some(challenge) = challenge else {
            notes.push("MD5 result sent as captured: the switch sent no challenge".into());
            return;
        };
        let secrets = user.as_ref().and_then(|u| self.setup.secrets.get(&u.to_ascii_lowercase()));
        let user = user.unwrap_or_else(|| "(no user name)".into());
        let answer = match secrets.and_then(|s| s.first()) {
            Some(secret) => {
                let checks = captured_challenge.as_deref().is_some_and(|c| auth::md5_response(c, secret) == captured);
                if checks || accepted != Some(false) {
                    let why = if checks { "the captured one checks with it" } else { "the capture's switch accepted" };
                    notes.push(format!(
                        "MD5 result recomputed for the switch's challenge with the secret of {user} ({why})"
                    ));
                    auth::md5_response(&challenge, secret)
                } else {
                    notes.push(format!(
                        "MD5 result: the captured one was wrong and refused; a wrong one is sent again for {user}"
                    ));
                    md5_wrong(&challenge, secret)
                }
            }
            None if accepted == Some(false) => {
                notes.push(format!(
                    "MD5 result: no secret for {user}; the capture's switch refused, so a wrong one is sent"
                ));
                md5_wrong(&challenge, "")
            }
            None => {
                notes.push(format!("MD5 result sent as captured: the configuration has no secret for {user}"));
                return;
            }
        };
        g.payload = script::with_ie(&g.payload, id::MD5_RESULT, answer.as_bytes(), false);
    }

    fn adapt(&mut self, now: Duration, frame: &FullFrame, why: String) {
        let bytes = encode(frame);
        self.out.push(bytes.clone());
        self.log(Entry::Adapted { at: now, bytes, why });
    }

    fn received(&mut self, now: Duration, bytes: &[u8]) {
        let Ok(Frame::Full(g)) = frame::decode(bytes) else {
            self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None });
            return;
        };
        if is_opener(&g) {
            // A dialog the switch opens: the k-th of its kind in the capture.
            let k = self.switch_openers.entry(g.subclass).or_insert(0);
            let ordinal = *k;
            *k += 1;
            let found = self
                .setup
                .plan
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| i.by_switch && i.opener.map(IaxSubclass::as_u32) == Some(g.subclass))
                .nth(ordinal)
                .map(|(n, i)| (n, i.r_call));
            if let Some((n, r_call)) = found {
                self.inst[n].replay_s = Some(g.src_call);
                // The opener is the switch's first sequenced frame in the dialog.
                self.inst[n].iseq = g.oseqno.wrapping_add(1);
                if let Some(r) = r_call {
                    self.by_rcall.insert(r, n);
                }
            }
            self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None });
            if let Some((n, _)) = found {
                // A captured ACK of the opener (a NEW accepted without a call token).
                self.acknowledge(now, n, &g);
            }
            self.retry_waiting(now);
            return;
        }
        let Some(&n) = self.by_rcall.get(&g.dst_call) else {
            self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None });
            return;
        };
        if script::is_stateless(&g) {
            return self.stateless(now, n, &g, bytes);
        }
        self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None });
        let st = &mut self.inst[n];
        st.replay_s.get_or_insert(g.src_call);
        if matches!(g.iax(), Some(IaxSubclass::Reject | IaxSubclass::RegRej | IaxSubclass::Hangup)) {
            st.ended = true;
        }
        if let Some(ch) = script::raw_ie(&g.payload, id::CHALLENGE) {
            if g.frame_type == switch::iax2::subclass::FrameType::Iax {
                st.challenge = Some(String::from_utf8_lossy(ch).into_owned());
            }
        }
        if !is_unsequenced(&g) {
            if g.oseqno == st.iseq {
                st.iseq = st.iseq.wrapping_add(1);
            }
            self.acknowledge(now, n, &g);
        }
        self.retry_waiting(now);
    }

    /// The switch answered a sequenced frame: ACK it as the capture did, or
    /// as any IAX2 peer would when the capture has no counterpart.
    fn acknowledge(&mut self, now: Duration, n: usize, g: &FullFrame) {
        let k = kind(g);
        if !g.retransmitted {
            let key = (n, 0, k.0.as_u8(), k.1);
            if let Some(i) = self.reactive.get_mut(&key).and_then(|q| q.pop_front()) {
                self.deferred.push((i, g.timestamp, self.inst[n].iseq));
                return;
            }
        }
        let counterpart = self.setup.plan.instances[n].switch_frames.contains(&(g.oseqno, k));
        if counterpart && !g.retransmitted {
            return; // acknowledged implicitly by the next frame, as in the capture
        }
        let Some(r_call) = self.setup.plan.instances[n].r_call else { return };
        let st = &self.inst[n];
        let ack = FullFrame::new_iax(r_call, g.src_call, g.timestamp, st.oseq, st.iseq, IaxSubclass::Ack, &[]);
        let why = if g.retransmitted {
            format!("acknowledged a retransmitted {}", crate::capture::flows::full_name(g))
        } else {
            format!("acknowledged {}, which has no counterpart in the capture", crate::capture::flows::full_name(g))
        };
        self.adapt(now, &ack, why);
    }

    /// CALLTOKEN, or a refusal for want of one, for a dialog we opened.
    fn stateless(&mut self, now: Duration, n: usize, g: &FullFrame, bytes: &[u8]) {
        let st = self.inst[n].clone();
        let opener = st.opener.clone();
        match g.iax() {
            Some(IaxSubclass::CallToken) => {
                self.tokens_received += 1;
                let token = script::raw_ie(&g.payload, id::CALLTOKEN).map(<[u8]>::to_vec);
                self.token = token.clone();
                if let (Dance::Asked, Some(mut o), Some(t)) = (st.dance, opener, token) {
                    o.payload = script::with_ie(&o.payload, id::CALLTOKEN, &t, true);
                    o.oseqno = 0;
                    o.iseqno = 0;
                    self.inst[n].dance = Dance::None;
                    self.inst[n].opener = Some(o.clone());
                    let why = format!(
                        "resent {} with the call token the switch issued",
                        crate::capture::flows::full_name(&o)
                    );
                    let note = "call token issued for the adapted request".to_string();
                    self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: Some(note) });
                    self.adapt(now, &o, why);
                } else {
                    self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None });
                }
            }
            Some(IaxSubclass::Reject | IaxSubclass::RegRej) => {
                let cause = g
                    .ies()
                    .ok()
                    .and_then(|ies| {
                        use switch::iax2::ie::IeLookup;
                        ies.cause().map(str::to_owned)
                    })
                    .unwrap_or_default();
                let wants_token = cause.to_ascii_lowercase().contains("calltoken");
                let had_token = opener.as_ref().is_some_and(|o| script::raw_ie(&o.payload, id::CALLTOKEN).is_some());
                match (wants_token, had_token, st.dance, opener) {
                    (true, false, Dance::None, Some(mut o)) => {
                        o.payload = script::with_ie(&o.payload, id::CALLTOKEN, &[], true);
                        o.oseqno = 0;
                        o.iseqno = 0;
                        self.inst[n].dance = Dance::Asked;
                        self.inst[n].opener = Some(o.clone());
                        let note = format!("the switch requires a call token ({cause:?})");
                        self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: Some(note) });
                        let why = format!(
                            "resent {} asking for a call token (empty CALLTOKEN IE), which the capture did not need",
                            crate::capture::flows::full_name(&o)
                        );
                        self.adapt(now, &o, why);
                    }
                    _ => {
                        self.inst[n].ended = true;
                        self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None })
                    }
                }
            }
            _ => self.log(Entry::Received { at: now, bytes: bytes.to_vec(), adaptation: None }),
        }
    }

    fn retry_waiting(&mut self, now: Duration) {
        let ready: Vec<usize> = self
            .waiting
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| self.setup.plan.stimuli[*i].instance.is_some_and(|n| self.inst[n].replay_s.is_some()))
            .collect();
        for i in ready {
            self.try_send(now, i, None);
        }
    }
}
