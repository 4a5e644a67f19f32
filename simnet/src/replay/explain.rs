//! Divergences in an operator's words.
//!
//! The exchange table says which field differed ("status: captured 200,
//! replayed 404"); an operator wants to know why the switch did what it did
//! ("extension 9196 is not in context sip-replay"). The why comes from the
//! switch's own events around the exchange, which name the extension, the
//! user, the cause; the capture alone cannot say it.

use std::time::Duration;

use switch::event::Event;

use super::compare::{label, Exchange, Verdict};
use crate::trace::{TimedEvent, TraceEvent};

/// How long after a datagram was sent an event of the switch is taken to be
/// its consequence.
const WINDOW: Duration = Duration::from_secs(5);

/// What the explanation needs besides the exchange.
pub(crate) struct Context<'a> {
    /// The switch's events, in simulated time order.
    pub events: &'a [TimedEvent],
    /// Captured time 0 in simulated time.
    pub lead: Duration,
    /// The party the switch plays, as the operator calls it: "server" or "client".
    pub party: &'static str,
    /// The SIP dialplan context callers land in, when SIP was replayed.
    pub sip_context: Option<&'a str>,
}

/// One sentence for a divergent, missing or extra exchange; `None` when it matched.
pub(crate) fn explain(x: &Exchange, cx: &Context<'_>) -> Option<String> {
    let labels = |l: &[super::compare::Answer]| l.iter().map(|a| label(&a.bytes)).collect::<Vec<_>>().join(", ");
    let party = cx.party;
    let headline = match &x.verdict {
        Verdict::Matched => return None,
        Verdict::Missing => format!("the switch sent nothing where the captured {party} sent {}", labels(&x.captured)),
        Verdict::Extra => format!("the switch sent {} where the captured {party} sent nothing", labels(&x.replayed)),
        Verdict::Diverged { field, captured, replayed } => match field.as_str() {
            "status" => format!("the switch answered {replayed} where the captured {party} answered {captured}"),
            f if f.starts_with("stimulus") => format!("the remote party's datagram was {replayed}"),
            f if f.contains("frame") || f == "method" => {
                format!("the switch sent {replayed} where the captured {party} sent {captured}")
            }
            f if f.contains("timestamp") => {
                format!("the switch's timestamp was {replayed} where the captured {party}'s was {captured} (beyond the tolerance)")
            }
            f if f.ends_with("IE FORMAT") => format!(
                "the switch prefers {} where the captured {party} preferred {} in its call request (the preferred \
                 format is the caller's choice: Asterisk puts its channel's own format first; both offer formats \
                 the other carries, and the call is set up all the same)",
                format_name(replayed),
                format_name(captured)
            ),
            f if f.ends_with("iseqno") || f.ends_with("oseqno") => format!(
                "the switch's {f} was {replayed} where the captured {party}'s was {captured}: sequence numbers count \
                 a call's frames, so one side had sent or received one frame more at that point (frame order at the \
                 start of media)"
            ),
            f => format!("the switch's {f} was {replayed} where the captured {party}'s was {captured}"),
        },
    };
    Some(match cause(x, cx) {
        Some(why) => format!("{headline}: {why}"),
        None => headline,
    })
}

/// What the switch's events say about the exchange.
fn cause(x: &Exchange, cx: &Context<'_>) -> Option<String> {
    let from = cx.lead + x.stimulus.as_ref().and_then(|s| s.sent.as_ref().ok().copied())?;
    let status = match &x.verdict {
        Verdict::Diverged { field, replayed, .. } if field == "status" => replayed.parse::<u16>().ok(),
        _ => None,
    };
    let context = cx.sip_context.map_or_else(|| "the caller's context".to_string(), |c| format!("context {c}"));
    cx.events.iter().filter(|e| e.at >= from && e.at <= from + WINDOW).find_map(|e| {
        let TraceEvent::Switch(event) = &e.event else { return None };
        match event {
            Event::SipCallRejected { exten, status: s, reason, .. } if status.is_none_or_eq(*s) => Some(match s {
                404 => format!("extension {exten} is not in {context}"),
                480 => format!("extension {exten} is a user that is not registered with the switch"),
                _ => format!("the switch rejected the call to {exten} ({reason})"),
            }),
            Event::SipAuthFailed { method, user, status: 403, .. } if status.is_none_or_eq(403) => Some(format!(
                "the switch refused {user}'s credentials for {method}: the password it has for {user} is not the one \
                 the captured client used (without --config it is a placeholder)"
            )),
            Event::SipAuthFailed { method, status: s @ (401 | 407), .. } if status == Some(*s) => Some(format!(
                "the switch asks for credentials on every {method}, and this one carried none it could check"
            )),
            Event::SipRegistrationRefused { user, status: s, reason, .. } if status.is_none_or_eq(*s) => {
                Some(format!("the switch refused the registration of {user} ({reason})"))
            }
            Event::CallRejected { exten, peer, cause, .. } => {
                Some(format!("the switch rejected the call to {exten} from {peer}: {cause}"))
            }
            Event::PeerRegistrationRefused { peer, cause, .. } => {
                Some(format!("the switch refused the registration of {peer}: {cause}"))
            }
            _ => None,
        }
    })
}

/// `None` matches any status.
trait StatusFilter {
    fn is_none_or_eq(&self, s: u16) -> bool;
}

impl StatusFilter for Option<u16> {
    fn is_none_or_eq(&self, s: u16) -> bool {
        !matches!(self, Some(x) if *x != s)
    }
}

/// `Format(4)` as an operator reads it: `ulaw (Format(4))`.
fn format_name(shown: &str) -> String {
    let n = shown.trim_start_matches("Format(").trim_end_matches(')').parse::<u64>().ok();
    let name = match n {
        Some(1) => "G.723.1",
        Some(2) => "GSM",
        Some(4) => "ulaw",
        Some(8) => "alaw",
        Some(64) => "signed linear",
        Some(256) => "LPC10",
        Some(0x800) => "iLBC",
        _ => return shown.to_string(),
    };
    format!("{name} ({shown})")
}
