//! Exchanges (one datagram of the remote party and the switch's answers up
//! to its next one) on both sides, and their comparison with what
//! legitimately differs normalised away.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use switch::iax2::frame::{self, Frame, FullFrame};
use switch::iax2::ie::{self, id};
use switch::iax2::subclass::{FrameType, IaxSubclass};

use super::remote::Entry;
use super::script::{self, Plan, Trigger};
use crate::capture::flows::full_name;
use crate::capture::Capture;

/// One datagram from the switch, captured or replayed.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Captured: since the start of the conversation; replayed: since captured time 0 of the replay.
    pub at: Duration,
    pub bytes: Vec<u8>,
    /// Frame number in the capture (captured answers).
    pub frame_no: Option<usize>,
}

/// What the remote party sent to open an exchange.
#[derive(Clone, Debug)]
pub struct StimulusView {
    pub frame_no: usize,
    pub label: String,
    /// Captured time since the start of the conversation.
    pub captured_at: Duration,
    /// When the replay sent it (same clock), or why it did not.
    pub sent: Result<Duration, String>,
    /// Rewrites applied.
    pub notes: Vec<String>,
    pub captured_bytes: Vec<u8>,
    pub sent_bytes: Option<Vec<u8>>,
}

/// Something the replay did or saw that the capture has no counterpart for.
#[derive(Clone, Debug)]
pub struct Adaptation {
    pub at: Duration,
    /// Sent by the remote party (else received from the switch).
    pub sent: bool,
    pub label: String,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Matched,
    /// The first field that differs, with both values.
    Diverged {
        field: String,
        captured: String,
        replayed: String,
    },
    /// The capture has answers, the switch sent none.
    Missing,
    /// The switch answered where the capture has no answer.
    Extra,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Matched => "matched",
            Verdict::Diverged { .. } => "diverged",
            Verdict::Missing => "missing",
            Verdict::Extra => "extra",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Diverged { field, captured, replayed } => {
                write!(f, "diverged: {field}: captured {captured}, replayed {replayed}")
            }
            v => f.write_str(v.name()),
        }
    }
}

/// One exchange of one remote party with the switch.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// 1-based, in captured time order across all remote parties.
    pub n: usize,
    pub remote: SocketAddr,
    /// `None` for what the switch sent before the remote party's first datagram.
    pub stimulus: Option<StimulusView>,
    pub captured: Vec<Answer>,
    pub replayed: Vec<Answer>,
    pub adaptations: Vec<Adaptation>,
    pub verdict: Verdict,
    /// Normalisations applied in the comparison.
    pub normalised: Vec<String>,
}

/// How the comparison normalises.
#[derive(Clone, Debug)]
pub struct Tolerance {
    /// Timestamps of the switch's frames may differ by this much.
    pub timestamp: Duration,
}

/// The label of an IAX2 datagram (`ACCEPT`, `CONTROL ANSWER`, `mini ts 84`) or
/// of a SIP message (`INVITE`, `407 INVITE`).
pub fn label(bytes: &[u8]) -> String {
    if let Some(sip) = super::sip::label(bytes) {
        return sip;
    }
    match frame::decode(bytes) {
        Ok(Frame::Full(f)) => full_name(&f),
        Ok(Frame::Mini(m)) => format!("mini ts {}", m.timestamp),
        Ok(Frame::MiniVideo(m)) => format!("mini video ts {}", m.timestamp),
        Ok(Frame::Trunk(t)) => format!("trunk ({} entries)", t.entries.len()),
        Err(_) => format!("undecodable ({} bytes)", bytes.len()),
    }
}

/// The header fields of an IAX2 datagram (or a SIP message's Call-ID and CSeq), for tables.
pub fn header(bytes: &[u8]) -> String {
    if let Some(sip) = super::sip::header(bytes) {
        return sip;
    }
    match frame::decode(bytes) {
        Ok(Frame::Full(f)) => format!(
            "{}→{} ts {} seq {}/{}{}",
            f.src_call,
            f.dst_call,
            f.timestamp,
            f.oseqno,
            f.iseqno,
            if f.retransmitted { " R" } else { "" }
        ),
        Ok(Frame::Mini(m)) => format!("call {}, {} bytes", m.src_call, m.payload.len()),
        Ok(_) | Err(_) => format!("{} bytes", bytes.len()),
    }
}

/// Builds and judges every exchange.
pub(crate) fn exchanges(
    capture: &Capture,
    plans: &[Plan],
    logs: &[Vec<Entry>],
    lead: Duration,
    replay_remotes: &[SocketAddr],
    tol: &Tolerance,
) -> Vec<Exchange> {
    let mut all = Vec::new();
    for ((plan, log), replay_remote) in plans.iter().zip(logs).zip(replay_remotes) {
        all.extend(of_remote(capture, plan, log, lead, *replay_remote, tol));
    }
    // In captured time order; a remote's exchange 0 (switch first) at its first answer.
    all.sort_by_key(|e| {
        let t = e.stimulus.as_ref().map(|s| s.captured_at).or(e.captured.first().map(|a| a.at)).unwrap_or_default();
        (t, e.remote)
    });
    for (i, e) in all.iter_mut().enumerate() {
        e.n = i + 1;
    }
    all
}

fn of_remote(
    capture: &Capture,
    plan: &Plan,
    log: &[Entry],
    lead: Duration,
    replay_remote: SocketAddr,
    tol: &Tolerance,
) -> Vec<Exchange> {
    let rel = |at: Duration| at.saturating_sub(lead);
    // Captured side: the answers between one stimulus and the next.
    let mut captured: Vec<Vec<Answer>> = vec![Vec::new(); plan.stimuli.len() + 1];
    {
        let mut current = 0; // 0: before the first stimulus
        let mut si = 0;
        let mut ai = 0;
        while si < plan.stimuli.len() || ai < plan.answers.len() {
            let next_stim = plan.stimuli.get(si).map(|s| s.msg);
            let next_ans = plan.answers.get(ai).map(|a| a.0);
            match (next_stim, next_ans) {
                (Some(s), Some(a)) if s < a => {
                    si += 1;
                    current = si;
                }
                (Some(_), None) => {
                    si += 1;
                    current = si;
                }
                (_, Some(a)) => {
                    let m = &capture.messages[a];
                    captured[current].push(Answer {
                        at: plan.answers[ai].1,
                        bytes: m.payload.clone(),
                        frame_no: Some(m.frame),
                    });
                    ai += 1;
                }
                (None, None) => break,
            }
        }
    }
    // Replayed side, from the remote party's log.
    let mut replayed: Vec<Vec<Answer>> = vec![Vec::new(); plan.stimuli.len() + 1];
    let mut adaptations: Vec<Vec<Adaptation>> = vec![Vec::new(); plan.stimuli.len() + 1];
    let mut sent: Vec<Option<Result<Duration, String>>> = vec![None; plan.stimuli.len()];
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); plan.stimuli.len()];
    let mut sent_bytes: Vec<Option<Vec<u8>>> = vec![None; plan.stimuli.len()];
    // The capture's end (and the replay's, by the schedule's slip): what the
    // switch sends later than AFTER_END past it has no captured counterpart.
    let last_captured = plan.stimuli.iter().map(|s| s.at).chain(plan.answers.iter().map(|a| a.1)).max();
    let last_sent = log.iter().filter_map(|e| match e {
        Entry::Sent { at, .. } => Some(rel(*at)),
        _ => None,
    });
    let end = last_captured.into_iter().chain(last_sent).max().unwrap_or_default() + AFTER_END;
    let mut current = 0;
    for e in log {
        match e {
            Entry::Received { at, bytes, adaptation: None } if rel(*at) > end => {
                adaptations[current].push(Adaptation {
                    at: rel(*at),
                    sent: false,
                    label: label(bytes),
                    why: "after the end of the capture: nothing to compare it with".into(),
                })
            }
            Entry::Sent { at, stimulus, bytes, notes: n } => {
                current = stimulus + 1;
                sent[*stimulus] = Some(Ok(rel(*at)));
                notes[*stimulus] = n.clone();
                sent_bytes[*stimulus] = Some(bytes.clone());
            }
            Entry::NotSent { stimulus, why, .. } => sent[*stimulus] = Some(Err(why.clone())),
            Entry::Adapted { at, bytes, why } => adaptations[current].push(Adaptation {
                at: rel(*at),
                sent: true,
                label: label(bytes),
                why: why.clone(),
            }),
            Entry::Received { at, bytes, adaptation: Some(why) } => adaptations[current].push(Adaptation {
                at: rel(*at),
                sent: false,
                label: label(bytes),
                why: why.clone(),
            }),
            Entry::Received { at, bytes, adaptation: None } => {
                replayed[current].push(Answer { at: rel(*at), bytes: bytes.clone(), frame_no: None })
            }
        }
    }
    realign(&captured, &mut replayed);
    let mut norm = Norm {
        calls: BTreeMap::new(),
        skipped: BTreeMap::new(),
        captured_remote: plan.remote,
        replay_remote,
        tol: tol.clone(),
        notes: Vec::new(),
    };
    let mut out = Vec::new();
    for k in 0..=plan.stimuli.len() {
        let stimulus = k.checked_sub(1).map(|i| {
            let s = &plan.stimuli[i];
            let sent = sent[i].clone().unwrap_or_else(|| {
                Err(match &s.trigger {
                    Trigger::AckOf { kind, .. } => {
                        format!("the switch never sent the {} it acknowledges", kind_name(*kind))
                    }
                    Trigger::At => "not reached before the end of the replay".to_string(),
                })
            });
            StimulusView {
                frame_no: s.frame_no,
                label: label(&s.bytes),
                captured_at: s.at,
                sent,
                notes: notes[i].clone(),
                captured_bytes: s.bytes.clone(),
                sent_bytes: sent_bytes[i].clone(),
            }
        });
        if k == 0 && captured[0].is_empty() && replayed[0].is_empty() && adaptations[0].is_empty() {
            continue;
        }
        norm.notes.clear();
        let acks_indication = k.checked_sub(1).is_some_and(|i| {
            matches!(plan.stimuli[i].trigger, Trigger::AckOf { kind: (FrameType::Control, 3 | 0xffff_ffff), .. })
        });
        let verdict = match stimulus.as_ref().map(|s| &s.sent) {
            Some(Err(_)) if acks_indication && captured[k].iter().all(|a| is_media(&a.bytes)) => {
                norm.notes.push(
                    "the captured ACK of a progress indication the switch does not send (an implementation's \
                     choice) is not sent"
                        .into(),
                );
                Verdict::Matched
            }
            Some(Err(why)) => Verdict::Diverged {
                field: "stimulus".into(),
                captured: "sent".into(),
                replayed: format!("not sent ({why})"),
            },
            _ => judge(&captured[k], &replayed[k], &mut norm),
        };
        out.push(Exchange {
            n: 0,
            remote: plan.remote,
            stimulus,
            captured: std::mem::take(&mut captured[k]),
            replayed: std::mem::take(&mut replayed[k]),
            adaptations: std::mem::take(&mut adaptations[k]),
            verdict,
            normalised: std::mem::take(&mut norm.notes),
        });
    }
    out
}

fn kind_name((t, sub): script::Kind) -> String {
    let f = FullFrame {
        src_call: 0,
        dst_call: 0,
        retransmitted: false,
        timestamp: 0,
        oseqno: 0,
        iseqno: 0,
        frame_type: t,
        subclass: sub,
        payload: vec![],
    };
    full_name(&f)
}

/// Comparison state of one remote party's conversation.
struct Norm {
    /// (remote call, captured switch call) -> replayed switch call.
    calls: BTreeMap<(u16, u16), u16>,
    /// (captured side, remote's call) -> progress indications dropped so far.
    skipped: BTreeMap<(bool, u16), u8>,
    captured_remote: SocketAddr,
    replay_remote: SocketAddr,
    tol: Tolerance,
    notes: Vec<String>,
}

fn is_ack(bytes: &[u8]) -> Option<FullFrame> {
    match frame::decode(bytes) {
        Ok(Frame::Full(f)) if f.iax() == Some(IaxSubclass::Ack) => Some(f),
        _ => None,
    }
}

/// An explicit ACK the same list acknowledges implicitly anyway: a later
/// sequenced frame of the same dialog carries at least its iseqno.
fn covered(list: &[Answer], i: usize, ack: &FullFrame) -> bool {
    list[i + 1..].iter().any(|a| match frame::decode(&a.bytes) {
        Ok(Frame::Full(f)) => {
            f.iax() != Some(IaxSubclass::Ack) && f.dst_call == ack.dst_call && f.iseqno.wrapping_sub(ack.iseqno) < 128
        }
        _ => false,
    })
}

/// How long after the capture's last datagram the switch's answers are still compared.
const AFTER_END: Duration = Duration::from_secs(2);

/// Media (trunk, mini and mini video frames): their pace is the switch's
/// media clock, not an answer to the remote's datagram.
fn is_media(bytes: &[u8]) -> bool {
    matches!(frame::decode(bytes), Ok(Frame::Trunk(_) | Frame::Mini(_) | Frame::MiniVideo(_)))
}

/// Voice and video the switch sent in `answers`: trunk entries and mini frames.
pub fn media_frames(answers: &[Answer]) -> usize {
    answers
        .iter()
        .map(|a| match frame::decode(&a.bytes) {
            Ok(Frame::Trunk(t)) => t.entries.len(),
            Ok(Frame::Mini(_) | Frame::MiniVideo(_)) => 1,
            _ => 0,
        })
        .sum()
}

/// A retransmission: the same frame again, for want of the remote's answer in time.
fn is_retransmission(bytes: &[u8]) -> bool {
    matches!(frame::decode(bytes), Ok(Frame::Full(f)) if f.retransmitted)
}

/// What pairs a replayed frame with a captured one regardless of the window
/// it fell in: its label and the remote's call number it goes to (the remote
/// keeps its captured call numbers).
fn align_key(bytes: &[u8]) -> Option<(String, u16)> {
    match frame::decode(bytes) {
        Ok(Frame::Full(f)) if !f.retransmitted => Some((full_name(&f), f.dst_call)),
        _ => None,
    }
}

/// How many exchanges a replayed answer may move to meet its captured counterpart.
const REALIGN_WINDOWS: usize = 8;

/// A capture's answers can be faster than the simulated link (loopback: 0.1
/// ms): the replayed answer then arrives after the remote's next datagram, in
/// the next exchange. The k-th replayed frame of a kind to a call of the
/// remote is moved to the exchange of the k-th captured one when that is at
/// most [`REALIGN_WINDOWS`] earlier (or the next one); each exchange's answers are then ordered
/// dialog by dialog (the interleaving of independent dialogs is timing).
fn realign(captured: &[Vec<Answer>], replayed: &mut [Vec<Answer>]) {
    let mut where_captured: BTreeMap<(String, u16), std::collections::VecDeque<usize>> = BTreeMap::new();
    let mut where_at: BTreeMap<(String, u16), std::collections::VecDeque<(Duration, usize)>> = BTreeMap::new();
    for (k, w) in captured.iter().enumerate() {
        for a in w {
            if let Some(key) = align_key(&a.bytes) {
                where_at.entry(key.clone()).or_default().push_back((a.at, k));
                where_captured.entry(key).or_default().push_back(k);
            }
        }
    }
    let mut moved: Vec<Vec<Answer>> = vec![Vec::new(); replayed.len()];
    for (k, w) in replayed.iter_mut().enumerate() {
        for a in std::mem::take(w) {
            let target = align_key(&a.bytes).and_then(|key| {
                let t = *where_captured.get(&key)?.front()?;
                // Late answers move back; earlier ones forward when within 50 ms of the captured one.
                let (ct, _) = where_at.get(&key)?.front().copied()?;
                let early = t > k && ct.saturating_sub(a.at) <= Duration::from_millis(50);
                let late = t <= k && k - t <= REALIGN_WINDOWS;
                (early || late || t == k + 1).then(|| {
                    where_at.get_mut(&key).and_then(|q| q.pop_front());
                    where_captured.get_mut(&key).and_then(|q| q.pop_front())
                })?
            });
            moved[target.unwrap_or(k)].push(a);
        }
    }
    let dialog = |a: &Answer| match frame::decode(&a.bytes) {
        Ok(Frame::Full(f)) => f.dst_call,
        _ => u16::MAX,
    };
    for (w, m) in replayed.iter_mut().zip(moved) {
        *w = m;
        w.sort_by_key(|a| a.at);
        w.sort_by_key(dialog);
    }
}

fn judge(captured: &[Answer], replayed: &[Answer], norm: &mut Norm) -> Verdict {
    // Media is compared per call, not per exchange; retransmissions are the link's timing.
    let compared = |l: &[Answer]| -> Vec<Answer> {
        let mut l: Vec<Answer> =
            l.iter().filter(|a| !is_media(&a.bytes) && !is_retransmission(&a.bytes)).cloned().collect();
        l.sort_by_key(|a| match frame::decode(&a.bytes) {
            Ok(Frame::Full(f)) => f.dst_call,
            _ => u16::MAX,
        });
        l
    };
    let (mut cc, mut rc) = (compared(captured), compared(replayed));
    let (c_ind, r_ind) = (norm.indications(&mut cc, true), norm.indications(&mut rc, false));
    if c_ind || r_ind {
        norm.notes.push(
            "call progress indications (the switch's RINGING before ANSWER, Asterisk's CONTROL -1 stopping \
             indications) are an implementation's choice: not compared, later sequence numbers of the call \
             counted without them"
                .into(),
        );
    }
    if cc.len() != captured.len() || rc.len() != replayed.len() {
        norm.notes.push(
            "media (trunk and mini frames) and retransmissions are not compared exchange by exchange; frames of \
             different dialogs are compared dialog by dialog"
                .into(),
        );
    }
    let (captured, replayed) = (&cc[..], &rc[..]);
    match (captured.is_empty(), replayed.is_empty()) {
        (true, true) => return Verdict::Matched,
        (false, true) => return Verdict::Missing,
        (true, false) => return Verdict::Extra,
        _ => {}
    }
    // Explicit versus implicit acknowledgement is the switch's choice.
    let acks = |l: &[Answer]| l.iter().filter(|a| is_ack(&a.bytes).is_some()).count();
    let (mut c, mut r): (Vec<&Answer>, Vec<&Answer>) = (captured.iter().collect(), replayed.iter().collect());
    if acks(captured) != acks(replayed) {
        fn keep(l: &[Answer]) -> Vec<&Answer> {
            l.iter()
                .enumerate()
                .filter(|(i, a)| !is_ack(&a.bytes).is_some_and(|f| covered(l, *i, &f)))
                .map(|(_, a)| a)
                .collect()
        }
        let (c2, r2) = (keep(captured), keep(replayed));
        if c2.len() != c.len() || r2.len() != r.len() {
            norm.notes.push("explicit ACKs that a following frame acknowledges anyway are not compared".into());
        }
        (c, r) = (c2, r2);
    }
    for k in 0..c.len().max(r.len()) {
        let field = |f: &str| format!("answer {} {f}", k + 1);
        match (c.get(k), r.get(k)) {
            (Some(a), Some(b)) => {
                if let Some((f, x, y)) = compare(&a.bytes, &b.bytes, norm) {
                    return Verdict::Diverged { field: field(&f), captured: x, replayed: y };
                }
            }
            (Some(a), None) => {
                return Verdict::Diverged {
                    field: field("frame"),
                    captured: label(&a.bytes),
                    replayed: "nothing".into(),
                };
            }
            (None, Some(b)) => {
                return Verdict::Diverged {
                    field: field("frame"),
                    captured: "nothing".into(),
                    replayed: label(&b.bytes),
                };
            }
            (None, None) => {}
        }
    }
    Verdict::Matched
}

fn within(a: u32, b: u32, tol: Duration) -> bool {
    u128::from(a.abs_diff(b)) <= tol.as_millis()
}

/// The first field in which a replayed datagram differs from the captured one.
fn compare(c: &[u8], r: &[u8], norm: &mut Norm) -> Option<(String, String, String)> {
    let diff = |f: &str, x: String, y: String| Some((f.to_string(), x, y));
    let (cf, rf) = match (frame::decode(c), frame::decode(r)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(_), Err(_)) => return (c != r).then(|| ("bytes".into(), format!("{c:02x?}"), format!("{r:02x?}"))),
        (a, b) => {
            let name = |x: &Result<Frame, _>, bytes: &[u8]| if x.is_ok() { label(bytes) } else { "undecodable".into() };
            return diff("frame", name(&a, c), name(&b, r));
        }
    };
    match (cf, rf) {
        (Frame::Full(a), Frame::Full(b)) => compare_full(&a, &b, norm),
        (Frame::Mini(a), Frame::Mini(b)) => {
            if let Some(d) = norm.call("source call", 0, a.src_call, b.src_call) {
                return Some(d);
            }
            let dt = a.timestamp.wrapping_sub(b.timestamp) as i16;
            if u128::from(dt.unsigned_abs()) > norm.tol.timestamp.as_millis() {
                return diff("timestamp", a.timestamp.to_string(), b.timestamp.to_string());
            }
            None
        }
        (a, b) => {
            let kind = |f: &Frame| match f {
                Frame::Full(_) => "full frame",
                Frame::Mini(_) => "mini frame",
                Frame::MiniVideo(_) => "mini video frame",
                Frame::Trunk(_) => "trunk frame",
            };
            (kind(&a) != kind(&b)).then(|| {
                ("frame".into(), format!("{} ({})", label(c), kind(&a)), format!("{} ({})", label(r), kind(&b)))
            })
        }
    }
}

/// CONTROL RINGING and CONTROL -1 (stop indications, 0xffffffff).
fn is_indication(f: &FullFrame) -> bool {
    f.frame_type == FrameType::Control && matches!(f.subclass, 3 | 0xffff_ffff)
}

impl Norm {
    /// Drops progress indications from `list` and renumbers the later
    /// frames of their dialog as if they had not been sent; whether any was
    /// dropped here.
    fn indications(&mut self, list: &mut Vec<Answer>, captured: bool) -> bool {
        let mut dropped = false;
        let mut out = Vec::with_capacity(list.len());
        for a in list.drain(..) {
            let Ok(Frame::Full(mut f)) = frame::decode(&a.bytes) else {
                out.push(a);
                continue;
            };
            let key = (captured, f.dst_call);
            if is_indication(&f) && !f.retransmitted {
                *self.skipped.entry(key).or_default() += 1;
                dropped = true;
                continue;
            }
            let skip = self.skipped.get(&key).copied().unwrap_or(0);
            if skip == 0 || f.iax() == Some(IaxSubclass::Ack) {
                out.push(a);
                continue;
            }
            f.oseqno = f.oseqno.wrapping_sub(skip);
            let mut bytes = Vec::new();
            if Frame::Full(f).encode(&mut bytes).is_ok() {
                out.push(Answer { bytes, ..a });
            } else {
                out.push(a);
            }
        }
        *list = out;
        dropped
    }

    /// Switch call numbers are the switch's choice: the same captured one must
    /// map to the same replayed one throughout a dialog.
    fn call(
        &mut self,
        field: &str,
        remote_call: u16,
        captured: u16,
        replayed: u16,
    ) -> Option<(String, String, String)> {
        // 0 and 1 both mean "no dialog" (stateless answers come from either,
        // depending on the implementation): equivalent, not compared further.
        if script::stateless_source(captured) && script::stateless_source(replayed) {
            return None;
        }
        if (captured == 0) != (replayed == 0) {
            return Some((field.into(), captured.to_string(), replayed.to_string()));
        }
        match self.calls.get(&(remote_call, captured)) {
            Some(&known) if known != replayed => {
                Some((field.into(), format!("{captured} (replayed as {known} so far)"), replayed.to_string()))
            }
            Some(_) => None,
            None => {
                self.calls.insert((remote_call, captured), replayed);
                None
            }
        }
    }
}

fn tlvs(payload: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= payload.len() {
        let (i, len) = (payload[at], usize::from(payload[at + 1]));
        let Some(v) = payload.get(at + 2..at + 2 + len) else { break };
        out.push((i, v));
        at += 2 + len;
    }
    out
}

fn show_ie(ie_id: u8, value: &[u8]) -> String {
    let mut raw = vec![ie_id, value.len() as u8];
    raw.extend_from_slice(value);
    match ie::decode_ies(&raw).ok().and_then(|v| v.into_iter().next()) {
        Some(ie::Ie::Unknown { .. }) | None => format!("{value:02x?}"),
        Some(x) => format!("{x:?}"),
    }
}

fn compare_full(a: &FullFrame, b: &FullFrame, norm: &mut Norm) -> Option<(String, String, String)> {
    let diff = |f: &str, x: String, y: String| Some((f.to_string(), x, y));
    if (a.frame_type, a.subclass) != (b.frame_type, b.subclass) {
        return diff("frame", full_name(a), full_name(b));
    }
    if a.dst_call != b.dst_call {
        return diff("destination call", a.dst_call.to_string(), b.dst_call.to_string());
    }
    if let Some(d) = norm.call("source call", a.dst_call, a.src_call, b.src_call) {
        return Some(d);
    }
    if a.oseqno != b.oseqno {
        return diff("oseqno", a.oseqno.to_string(), b.oseqno.to_string());
    }
    if a.iseqno != b.iseqno {
        return diff("iseqno", a.iseqno.to_string(), b.iseqno.to_string());
    }
    if a.retransmitted != b.retransmitted {
        return diff("retransmission flag", a.retransmitted.to_string(), b.retransmitted.to_string());
    }
    if !within(a.timestamp, b.timestamp, norm.tol.timestamp) {
        return diff(
            &format!("timestamp (tolerance {} ms)", norm.tol.timestamp.as_millis()),
            a.timestamp.to_string(),
            b.timestamp.to_string(),
        );
    }
    match a.frame_type {
        FrameType::Iax => compare_ies(&a.payload, &b.payload, norm),
        FrameType::Text | FrameType::Html if a.payload != b.payload => diff(
            "payload",
            String::from_utf8_lossy(&a.payload).into_owned(),
            String::from_utf8_lossy(&b.payload).into_owned(),
        ),
        // Media payloads are the other party's own audio or video.
        _ => None,
    }
}

/// IEs one implementation sends and the other leaves out without changing
/// the meaning: Asterisk's codec preference string, ADSI capability,
/// language, an empty CALLTOKEN (call tokens supported) on requests that
/// need none, the CAUSE text next to CAUSECODE, DATETIME, the calling
/// presentation, type of number and transit network (defaults), the 64-bit
/// FORMAT2/CAPABILITY2 that repeat FORMAT/CAPABILITY (older peers omit them).
fn optional_ie(ie_id: u8, value: &[u8]) -> bool {
    matches!(
        ie_id,
        id::CODEC_PREFS
            | id::ADSICPE
            | id::LANGUAGE
            | id::CAUSE
            | id::DATETIME
            | id::CALLINGPRES
            | id::CALLINGTON
            | id::CALLINGTNS
            | id::CALLINGANI2
            | id::FORMAT2
            | id::CAPABILITY2
    ) || (ie_id == id::CALLTOKEN && value.is_empty())
}

fn compare_ies(a: &[u8], b: &[u8], norm: &mut Norm) -> Option<(String, String, String)> {
    let (mut ca, mut cb) = (tlvs(a), tlvs(b));
    // Present on one side only: an implementation's choice, not compared.
    let only = |x: &[(u8, &[u8])], y: &[(u8, &[u8])]| -> Vec<u8> {
        x.iter().filter(|(i, v)| optional_ie(*i, v) && !y.iter().any(|(j, _)| j == i)).map(|(i, _)| *i).collect()
    };
    let dropped: Vec<u8> = only(&ca, &cb).into_iter().chain(only(&cb, &ca)).collect();
    if !dropped.is_empty() {
        let names: Vec<&str> = dropped.iter().map(|i| ie::ie_name(*i)).collect();
        norm.notes.push(format!("IE(s) {} sent by one side only are an implementation's choice", names.join(", ")));
        ca.retain(|(i, _)| !dropped.contains(i));
        cb.retain(|(i, _)| !dropped.contains(i));
    }
    let mut used = vec![false; cb.len()];
    for (k, (i, v)) in ca.iter().enumerate() {
        let nth = ca[..k].iter().filter(|(j, _)| j == i).count();
        let found = cb.iter().enumerate().filter(|(_, (j, _))| j == i).nth(nth).map(|(p, (_, w))| (p, *w));
        let name = format!("IE {}", ie::ie_name(*i));
        let Some((p, w)) = found else {
            return Some((name, show_ie(*i, v), "absent".into()));
        };
        used[p] = true;
        if !ie_equal(*i, v, w, norm) {
            return Some((name, show_ie(*i, v), show_ie(*i, w)));
        }
    }
    cb.iter()
        .zip(&used)
        .find(|(_, u)| !**u)
        .map(|((i, w), _)| (format!("IE {}", ie::ie_name(*i)), "absent".into(), show_ie(*i, w)))
}

fn ie_equal(ie_id: u8, a: &[u8], b: &[u8], norm: &mut Norm) -> bool {
    if a == b {
        return true;
    }
    if script::is_random_ie(ie_id) {
        let same_presence = a.is_empty() == b.is_empty();
        if same_presence {
            norm.notes.push(format!("IE {} values are the switch's own", ie::ie_name(ie_id)));
        }
        return same_presence;
    }
    if ie_id == id::APPARENT_ADDR {
        let addr = |v: &[u8]| {
            let mut raw = vec![ie_id, v.len() as u8];
            raw.extend_from_slice(v);
            match ie::decode_ies(&raw).ok()?.into_iter().next()? {
                ie::Ie::ApparentAddr(s) => Some(s),
                _ => None,
            }
        };
        if addr(a) == Some(norm.captured_remote) && addr(b) == Some(norm.replay_remote) {
            norm.notes.push("APPARENT ADDRESS is the remote party's address on each side".into());
            return true;
        }
    }
    false
}

/// Counts of verdicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub exchanges: usize,
    pub matched: usize,
    pub diverged: usize,
    pub missing: usize,
    pub extra: usize,
}

impl Counts {
    pub fn of(exchanges: &[Exchange]) -> Counts {
        let mut c = Counts { exchanges: exchanges.len(), ..Counts::default() };
        for e in exchanges {
            match e.verdict {
                Verdict::Matched => c.matched += 1,
                Verdict::Diverged { .. } => c.diverged += 1,
                Verdict::Missing => c.missing += 1,
                Verdict::Extra => c.extra += 1,
            }
        }
        c
    }

    /// The report's last line.
    pub fn line(&self) -> String {
        format!(
            "replay: exchanges={} matched={} diverged={} missing={} extra={}",
            self.exchanges, self.matched, self.diverged, self.missing, self.extra
        )
    }
}
