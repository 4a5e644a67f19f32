//! Calls as the trace tells them: each `call_started` with what became of it
//! (`call_answered`, `call_rejected`, `call_ended`), for reports and metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use switch::event::Event;

use crate::trace::{TimedEvent, TraceEvent};

/// The media statistics of a `call_ended` event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Media {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub late: u64,
    pub concealed: u64,
    pub jitter_ms: u64,
    pub ts_irregular: u64,
}

/// One call on one host (a call between two switches is two records).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CallRecord {
    pub host: String,
    pub call: u16,
    pub direction: String,
    pub peer: String,
    pub exten: String,
    pub context: String,
    pub started: Option<Duration>,
    pub answered: Option<Duration>,
    pub format: String,
    pub encrypted: bool,
    /// When it was rejected or ended.
    pub finished: Option<Duration>,
    pub rejected: bool,
    pub cause: String,
    pub code: Option<u8>,
    pub media: Option<Media>,
}

impl CallRecord {
    /// When the call began: its `call_started`, else the first event seen of it.
    pub fn begin(&self) -> Duration {
        self.started.or(self.answered).or(self.finished).unwrap_or_default()
    }

    /// Answered and not finished during `[from, until]`.
    pub fn up_throughout(&self, from: Duration, until: Duration) -> bool {
        self.answered.is_some_and(|a| a <= from) && !matches!(self.finished, Some(f) if f < until)
    }
}

/// The calls of a trace, in the order they began (ties: trace order).
pub(crate) fn calls(events: &[TimedEvent]) -> Vec<CallRecord> {
    let mut out: Vec<CallRecord> = Vec::new();
    // (host, call number) -> index in `out` of the call still open under that number.
    let mut open: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for e in events {
        let TraceEvent::Switch(ev) = &e.event else { continue };
        let host = e.host.as_str();
        let call = match ev {
            Event::CallStarted { call, .. }
            | Event::CallAnswered { call, .. }
            | Event::CallRejected { call, .. }
            | Event::CallEnded { call, .. } => *call,
            _ => continue,
        };
        let mut slot = |out: &mut Vec<CallRecord>, fresh: bool| -> usize {
            match open.get(&(host, call)) {
                Some(i) if !fresh => *i,
                _ => {
                    out.push(CallRecord { host: host.to_string(), call, ..CallRecord::default() });
                    open.insert((host, call), out.len() - 1);
                    out.len() - 1
                }
            }
        };
        match ev {
            Event::CallStarted { direction, peer, exten, context, .. } => {
                let i = slot(&mut out, true);
                let r = &mut out[i];
                r.started = Some(e.at);
                (r.direction, r.peer, r.exten, r.context) =
                    (direction.clone(), peer.clone(), exten.clone(), context.clone());
            }
            Event::CallAnswered { format, encrypted, .. } => {
                let i = slot(&mut out, false);
                let r = &mut out[i];
                r.answered = Some(e.at);
                (r.format, r.encrypted) = (format.clone(), *encrypted);
            }
            Event::CallRejected { direction, peer, exten, cause, code, .. } => {
                let i = slot(&mut out, false);
                open.remove(&(host, call));
                let r = &mut out[i];
                r.finished = Some(e.at);
                r.rejected = true;
                (r.cause, r.code) = (cause.clone(), Some(*code));
                for (mine, theirs) in [(&mut r.direction, direction), (&mut r.peer, peer), (&mut r.exten, exten)] {
                    if mine.is_empty() {
                        mine.clone_from(theirs);
                    }
                }
            }
            Event::CallEnded {
                direction,
                peer,
                cause,
                code,
                frames_sent,
                frames_received,
                lost,
                reordered,
                duplicated,
                late,
                concealed,
                jitter_ms,
                ts_irregular,
                ..
            } => {
                let i = slot(&mut out, false);
                open.remove(&(host, call));
                let r = &mut out[i];
                r.finished = Some(e.at);
                (r.cause, r.code) = (cause.clone(), Some(*code));
                for (mine, theirs) in [(&mut r.direction, direction), (&mut r.peer, peer)] {
                    if mine.is_empty() {
                        mine.clone_from(theirs);
                    }
                }
                r.media = Some(Media {
                    frames_sent: *frames_sent,
                    frames_received: *frames_received,
                    lost: *lost,
                    reordered: *reordered,
                    duplicated: *duplicated,
                    late: *late,
                    concealed: *concealed,
                    jitter_ms: *jitter_ms,
                    ts_irregular: *ts_irregular,
                });
            }
            _ => {}
        }
    }
    // Stable: calls that began at the same time keep their trace order.
    out.sort_by_key(CallRecord::begin);
    out
}
