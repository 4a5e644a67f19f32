//! What each remote party will do: its captured IAX2 datagrams, the dialogs
//! they belong to, and which of its ACKs answer which of the switch's frames.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use switch::iax2::frame::{Frame, FullFrame};
use switch::iax2::ie::id;
use switch::iax2::subclass::{FrameType, IaxSubclass};

use crate::capture::{Capture, Proto};

/// A dialog-opening request.
pub(crate) fn is_opener(f: &FullFrame) -> bool {
    f.dst_call == 0
        && matches!(f.iax(), Some(IaxSubclass::New | IaxSubclass::RegReq | IaxSubclass::RegRel | IaxSubclass::Poke))
}

/// Frames the receiver does not sequence (RFC 5456 7: ACK, INVAL, VNAK, TXCNT, TXACC).
pub(crate) fn is_unsequenced(f: &FullFrame) -> bool {
    switch::iax2::dialog::is_unsequenced(f)
}

/// A source call number that no dialog uses: 0, or 1, which chan_iax2 (and
/// this switch) never allocates and sends its stateless answers from.
pub(crate) fn stateless_source(call: u16) -> bool {
    call <= 1
}

/// A stateless answer: from call 0, or from call 1 a CALLTOKEN, REJECT or
/// REGREJ (what chan_iax2 sends without keeping the dialog). A PONG from
/// call 1 is answered like any dialog frame (it is ACKed to call 1), so it
/// is not one here.
pub(crate) fn is_stateless(f: &FullFrame) -> bool {
    f.src_call == 0
        || (stateless_source(f.src_call)
            && matches!(f.iax(), Some(IaxSubclass::CallToken | IaxSubclass::Reject | IaxSubclass::RegRej)))
}

/// (type, subclass): what a frame is, for matching a replayed frame to a captured one.
pub(crate) type Kind = (FrameType, u32);

pub(crate) fn kind(f: &FullFrame) -> Kind {
    (f.frame_type, f.subclass)
}

/// What makes the remote party send a captured datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// At its captured time (relative to the start of the conversation).
    At,
    /// When the switch sends the frame this ACK acknowledges: the frame with
    /// this sequence number and kind in the dialog.
    AckOf { oseqno: u8, kind: Kind },
}

/// One datagram the remote party sent in the capture.
#[derive(Clone, Debug)]
pub(crate) struct Stimulus {
    /// Index into the capture's messages.
    pub msg: usize,
    /// Frame number in the capture.
    pub frame_no: usize,
    /// Captured time since the start of the replayed conversation.
    pub at: Duration,
    pub frame: Frame,
    pub bytes: Vec<u8>,
    /// The dialog it belongs to (full frames).
    pub instance: Option<usize>,
    pub trigger: Trigger,
    /// CALLTOKENs the captured switch had sent this party before it: a
    /// datagram carrying a token waits until the replayed switch has sent as many.
    pub tokens_before: usize,
}

/// One dialog of the capture, as seen between the remote party and the switch.
#[derive(Clone, Debug, Default)]
pub(crate) struct Instance {
    /// The remote party's call number in it.
    pub r_call: Option<u16>,
    /// The captured switch's call number in it.
    pub captured_s: Option<u16>,
    /// Opened by the switch (its REGREQ, NEW or POKE) rather than by the remote.
    pub by_switch: bool,
    pub opener: Option<IaxSubclass>,
    /// The switch's sequenced frames in it, in the capture: (oseqno, kind).
    pub switch_frames: Vec<(u8, Kind)>,
    /// USERNAME the dialog carries, for the MD5 secret.
    pub username: Option<String>,
    /// Whether the captured switch accepted (ACCEPT/REGACK) or refused (REJECT/REGREJ).
    pub accepted: Option<bool>,
    /// The challenge the captured switch sent in it (AUTHREQ/REGAUTH).
    pub challenge: Option<String>,
}

/// The replayed conversation of one remote party with the switch.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub remote: SocketAddr,
    pub stimuli: Vec<Stimulus>,
    /// Captured datagrams from the switch to this remote: (message index, time).
    pub answers: Vec<(usize, Duration)>,
    pub instances: Vec<Instance>,
}

/// Builds the plan of every remote party talking IAX2 to `switch`, with
/// times relative to `t0`.
pub(crate) fn plans(capture: &Capture, switch: SocketAddr, remotes: &[SocketAddr], t0: Duration) -> Vec<Plan> {
    remotes.iter().map(|r| plan(capture, switch, *r, t0)).collect()
}

fn plan(capture: &Capture, switch: SocketAddr, remote: SocketAddr, t0: Duration) -> Plan {
    let mut p = Plan { remote, stimuli: Vec::new(), answers: Vec::new(), instances: Vec::new() };
    // Current dialog per remote call number, and per captured switch call number.
    let mut by_r: BTreeMap<u16, usize> = BTreeMap::new();
    let mut by_s: BTreeMap<u16, usize> = BTreeMap::new();
    // For ACK matching: per instance, the switch's frames as (timestamp, oseqno, kind).
    let mut sent_by_switch: Vec<Vec<(u32, u8, Kind)>> = Vec::new();
    let mut tokens = 0;
    for (i, m) in capture.messages.iter().enumerate() {
        let Proto::Iax2(frame) = &m.proto else { continue };
        let to_switch = m.src == remote && m.dst == switch;
        let from_switch = m.src == switch && m.dst == remote;
        if !to_switch && !from_switch {
            continue;
        }
        let at = m.ts.saturating_sub(t0);
        if from_switch {
            p.answers.push((i, at));
            let Frame::Full(f) = frame else { continue };
            if f.iax() == Some(IaxSubclass::CallToken) {
                tokens += 1;
            }
            let inst = if is_opener(f) {
                let n = new_instance(&mut p, &mut sent_by_switch);
                p.instances[n].by_switch = true;
                p.instances[n].opener = f.iax();
                p.instances[n].captured_s = Some(f.src_call);
                by_s.insert(f.src_call, n);
                Some(n)
            } else {
                let n = by_r.get(&f.dst_call).copied();
                if let Some(n) = n {
                    let inst = &mut p.instances[n];
                    if inst.captured_s.is_none() && !is_stateless(f) {
                        inst.captured_s = Some(f.src_call);
                        by_s.insert(f.src_call, n);
                    }
                }
                n
            };
            let Some(n) = inst else { continue };
            if !is_unsequenced(f) && !is_stateless(f) {
                p.instances[n].switch_frames.push((f.oseqno, kind(f)));
                sent_by_switch[n].push((f.timestamp, f.oseqno, kind(f)));
            }
            if let (FrameType::Iax, Some(ch)) = (f.frame_type, raw_ie(&f.payload, id::CHALLENGE)) {
                p.instances[n].challenge = Some(String::from_utf8_lossy(ch).into_owned());
                // A NEW without USERNAME (Asterisk calling a peer by address):
                // the user is the one the switch's AUTHREQ names.
                if p.instances[n].username.is_none() {
                    p.instances[n].username =
                        raw_ie(&f.payload, id::USERNAME).map(|u| String::from_utf8_lossy(u).into_owned());
                }
            }
            match f.iax() {
                Some(IaxSubclass::Accept | IaxSubclass::RegAck) => p.instances[n].accepted = Some(true),
                Some(IaxSubclass::Reject | IaxSubclass::RegRej) if !is_stateless(f) => {
                    p.instances[n].accepted.get_or_insert(false);
                }
                _ => {}
            }
            continue;
        }
        // From the remote party.
        let mut stimulus = Stimulus {
            msg: i,
            frame_no: m.frame,
            at,
            frame: frame.clone(),
            bytes: m.payload.clone(),
            instance: None,
            trigger: Trigger::At,
            tokens_before: tokens,
        };
        if let Frame::Full(f) = frame {
            // A stateless answer (source call 0 or 1, e.g. CALLTOKEN) to a request of the switch
            // belongs to the switch's dialog it is addressed to, not to an earlier one of call 0.
            if is_stateless(f) && f.dst_call != 0 && !is_opener(f) {
                stimulus.instance = by_s.get(&f.dst_call).copied();
                p.stimuli.push(stimulus);
                continue;
            }
            let current = by_r.get(&f.src_call).copied();
            let established = current.is_some_and(|n| p.instances[n].captured_s.is_some());
            let inst = if is_opener(f) && (current.is_none() || established) && !f.retransmitted {
                let n = new_instance(&mut p, &mut sent_by_switch);
                p.instances[n].opener = f.iax();
                p.instances[n].r_call = Some(f.src_call);
                by_r.insert(f.src_call, n);
                Some(n)
            } else if let Some(n) = current {
                Some(n)
            } else if f.dst_call != 0 {
                // The remote's first frame in a dialog the switch opened.
                let n = by_s.get(&f.dst_call).copied();
                if let Some(n) = n {
                    p.instances[n].r_call = Some(f.src_call);
                    by_r.insert(f.src_call, n);
                }
                n
            } else {
                None
            };
            if let (Some(n), Ok(ies)) = (inst, f.ies()) {
                if f.frame_type == FrameType::Iax && p.instances[n].username.is_none() {
                    use switch::iax2::ie::IeLookup;
                    p.instances[n].username = ies.username().map(str::to_owned);
                }
            }
            stimulus.instance = inst;
            if f.iax() == Some(IaxSubclass::Ack) {
                if let Some(n) = inst {
                    // The switch frame it acknowledges: same timestamp and, among
                    // frames sent in the same millisecond, the one just before the
                    // ACK's iseqno; else the latest with that timestamp.
                    let same_ts = || sent_by_switch[n].iter().rev().filter(|(ts, _, _)| *ts == f.timestamp);
                    let acked = same_ts().find(|(_, o, _)| o.wrapping_add(1) == f.iseqno).or_else(|| same_ts().next());
                    if let Some((_, oseqno, kind)) = acked {
                        stimulus.trigger = Trigger::AckOf { oseqno: *oseqno, kind: *kind };
                    }
                }
            }
        }
        p.stimuli.push(stimulus);
    }
    p
}

fn new_instance(p: &mut Plan, sent: &mut Vec<Vec<(u32, u8, Kind)>>) -> usize {
    p.instances.push(Instance::default());
    sent.push(Vec::new());
    p.instances.len() - 1
}

/// The value of the first IE `ie` in an IAX payload, if the payload parses.
pub(crate) fn raw_ie(payload: &[u8], ie: u8) -> Option<&[u8]> {
    let mut at = 0;
    while at + 2 <= payload.len() {
        let (i, len) = (payload[at], usize::from(payload[at + 1]));
        let value = payload.get(at + 2..at + 2 + len)?;
        if i == ie {
            return Some(value);
        }
        at += 2 + len;
    }
    None
}

/// The payload with every IE `ie` given `value`; appended when absent and `add`.
pub(crate) fn with_ie(payload: &[u8], ie: u8, value: &[u8], add: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + value.len() + 2);
    let mut at = 0;
    let mut found = false;
    while at + 2 <= payload.len() {
        let (i, len) = (payload[at], usize::from(payload[at + 1]));
        let Some(v) = payload.get(at + 2..at + 2 + len) else { break };
        if i == ie {
            found = true;
            out.extend_from_slice(&[i, value.len().min(255) as u8]);
            out.extend_from_slice(&value[..value.len().min(255)]);
        } else {
            out.extend_from_slice(&[i, len as u8]);
            out.extend_from_slice(v);
        }
        at += 2 + len;
    }
    out.extend_from_slice(&payload[at.min(payload.len())..]);
    if !found && add {
        out.extend_from_slice(&[ie, value.len().min(255) as u8]);
        out.extend_from_slice(&value[..value.len().min(255)]);
    }
    out
}

/// IE ids whose values are the switch's own random or clock values.
pub(crate) fn is_random_ie(ie: u8) -> bool {
    matches!(
        ie,
        id::CHALLENGE
            | id::CALLTOKEN
            | id::DATETIME
            | id::RR_JITTER
            | id::RR_LOSS
            | id::RR_PKTS
            | id::RR_DELAY
            | id::RR_DROPPED
            | id::RR_OOO
            | id::TRANSFERID
            | id::ENCKEY
    )
}

/// A call the captured requesting party placed (`--role client`): replayed
/// with `originate` at its captured time.
#[derive(Clone, Debug)]
pub(crate) struct ClientCall {
    /// Capture time of its first NEW.
    pub ts: Duration,
    pub called: Option<String>,
    pub username: Option<String>,
    /// From the party's reaction to the remote party's ANSWER to its HANGUP, when both are captured.
    pub hold: Option<Duration>,
}

/// The calls `party` placed in the capture: each NEW it sent that is not a
/// retransmission nor the resend carrying a call token.
pub(crate) fn client_calls(capture: &Capture, party: SocketAddr) -> Vec<ClientCall> {
    let full = |m: &crate::capture::Message| match &m.proto {
        Proto::Iax2(Frame::Full(f)) => Some(f.clone()),
        _ => None,
    };
    let mut calls = Vec::new();
    for (i, m) in capture.messages.iter().enumerate() {
        let Some(f) = full(m).filter(|_| m.src == party) else { continue };
        if !is_opener(&f) || f.iax() != Some(IaxSubclass::New) || f.retransmitted {
            continue;
        }
        if raw_ie(&f.payload, id::CALLTOKEN).is_some_and(|t| !t.is_empty()) {
            continue;
        }
        let ies = f.ies().ok();
        use switch::iax2::ie::IeLookup;
        let called = ies.as_ref().and_then(|i| i.called_number().map(str::to_owned));
        let username = ies.as_ref().and_then(|i| i.username().map(str::to_owned));
        // The ANSWER that follows (to any call number of the party), then the party's HANGUP in that call.
        let answer = capture.messages[i + 1..].iter().find_map(|a| {
            let g = full(a).filter(|_| a.dst == party)?;
            (g.frame_type == FrameType::Control && g.subclass == CONTROL_ANSWER).then_some((a.ts, g.dst_call))
        });
        // The party got the ANSWER when it reacted to it (its next datagram): the capture
        // has the send times, and the hold time counts from the reception.
        let answer = answer.map(|(at, call)| {
            let got = capture.messages[i + 1..].iter().find(|r| r.src == party && r.ts >= at).map_or(at, |r| r.ts);
            (got, call)
        });
        let hold = answer.and_then(|(at, call)| {
            capture.messages[i + 1..].iter().find_map(|h| {
                let g = full(h).filter(|_| h.src == party && h.ts >= at)?;
                (g.src_call == call && g.iax() == Some(IaxSubclass::Hangup)).then(|| h.ts.saturating_sub(at))
            })
        });
        calls.push(ClientCall { ts: m.ts, called, username, hold });
    }
    calls
}

/// Control subclass ANSWER (RFC 5456 8.3).
const CONTROL_ANSWER: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ie_patching_keeps_other_bytes() {
        let payload = [0x0b, 2, 0, 2, 0x36, 0, 0xff, 1, 9];
        assert_eq!(raw_ie(&payload, 0x36), Some(&[][..]));
        assert_eq!(raw_ie(&payload, 0xff), Some(&[9][..]));
        assert_eq!(
            with_ie(&payload, 0x36, b"1?ab", false),
            [0x0b, 2, 0, 2, 0x36, 4, b'1', b'?', b'a', b'b', 0xff, 1, 9]
        );
        assert_eq!(with_ie(&payload[..4], 0x36, b"", true), [0x0b, 2, 0, 2, 0x36, 0]);
        assert_eq!(with_ie(&payload[..4], 0x36, b"", false), payload[..4]);
    }
}
