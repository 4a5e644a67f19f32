//! An IAX2 call (RFC 5456 section 6): its state, what it plays, its media
//! timestamps and statistics. The signalling flow that drives it lives in the
//! endpoint; this module holds what one call is.

use std::time::{Duration, Instant};

use super::subclass::format;
use crate::config::{CodecPrefs, CodecPriority};
use crate::dialplan::App;
use crate::media::{MediaStats, G711};
use crate::protocol::DialError;

/// Q.850 cause codes the switch sends.
pub mod cause {
    pub const UNALLOCATED: u8 = 1;
    pub const NO_ROUTE_DESTINATION: u8 = 3;
    pub const NORMAL_CLEARING: u8 = 16;
    pub const NO_ANSWER: u8 = 19;
    pub const CALL_REJECTED: u8 = 21;
    pub const FACILITY_REJECTED: u8 = 29;
    pub const NO_CIRCUIT: u8 = 34;
    pub const FACILITY_NOT_SUBSCRIBED: u8 = 50;
    pub const BEARER_NOT_AVAILABLE: u8 = 58;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Outbound: NEW sent, waiting for ACCEPT/AUTHREQ/REJECT.
    NewSent,
    /// Outbound: AUTHREP sent.
    AuthSent,
    /// Inbound: AUTHREQ sent, waiting for AUTHREP.
    Authenticating,
    /// ACCEPT exchanged, not yet answered.
    Accepted,
    Ringing,
    /// Answered: media flows.
    Up,
}

/// `IAX2/[user[:secret]@]peer[:port][/exten[@context][/options]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialString {
    pub username: Option<String>,
    pub secret: Option<String>,
    pub peer: String,
    pub port: Option<u16>,
    pub exten: Option<String>,
    pub context: Option<String>,
    pub options: Option<String>,
}

impl DialString {
    pub fn parse(text: &str) -> Result<DialString, DialError> {
        let rest = text
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("IAX2/"))
            .map(|_| &text[5..])
            .ok_or_else(|| DialError::NotIax2(text.to_string()))?;
        let mut parts = rest.splitn(3, '/');
        let host_part = parts.next().unwrap_or("");
        let exten_part = parts.next();
        let options = parts.next().map(str::to_string);
        let (creds, hostport) = match host_part.rsplit_once('@') {
            Some((creds, hostport)) => (Some(creds), hostport),
            None => (None, host_part),
        };
        let (username, secret) = match creds.map(|c| c.split_once(':').map_or((c, None), |(u, s)| (u, Some(s)))) {
            Some((u, s)) => (Some(u.to_string()), s.map(str::to_string)),
            None => (None, None),
        };
        let (peer, port) = match hostport.rsplit_once(':') {
            // An IPv6 literal is written in brackets: [2001:db8::1]:4569.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port =
                    p.parse::<u16>().map_err(|_| DialError::BadPort { dial: text.to_string(), port: p.to_string() })?;
                (h.trim_matches(|c| c == '[' || c == ']').to_string(), Some(port))
            }
            _ => (hostport.trim_matches(|c| c == '[' || c == ']').to_string(), None),
        };
        if peer.is_empty() {
            return Err(DialError::NoPeer(text.to_string()));
        }
        let (exten, context) = match exten_part.map(|e| e.split_once('@').map_or((e, None), |(x, c)| (x, Some(c)))) {
            Some((x, c)) => (Some(x.to_string()).filter(|x| !x.is_empty()), c.map(str::to_string)),
            None => (None, None),
        };
        Ok(DialString { username, secret, peer, port, exten, context, options })
    }
}

/// Codec names we can carry, and their IAX2 format bits.
pub fn codec_bit(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "ulaw" => format::ULAW,
        "alaw" => format::ALAW,
        _ => return None,
    })
}

/// The G.711 variant of a format bit, if it is one we can generate and measure.
pub fn g711(format_bit: u32) -> Option<G711> {
    match format_bit {
        format::ULAW => Some(G711::Ulaw),
        format::ALAW => Some(G711::Alaw),
        _ => None,
    }
}

/// Our allowed codecs as (bits in preference order, capability mask).
pub fn our_formats(prefs: &CodecPrefs) -> (Vec<u32>, u32) {
    let bits: Vec<u32> = prefs.allowed.iter().filter_map(|n| codec_bit(n)).collect();
    let mask = bits.iter().fold(0, |m, b| m | b);
    (bits, mask)
}

/// Chooses the call's format as chan_iax2's `codecpriority` says.
/// `caller_format` is the NEW's FORMAT, `caller_capability` its CAPABILITY.
pub fn negotiate(
    priority: CodecPriority,
    ours: &CodecPrefs,
    caller_format: u32,
    caller_capability: u32,
) -> Option<u32> {
    let (our_bits, our_mask) = our_formats(ours);
    let common = our_mask & (caller_capability | caller_format);
    match priority {
        CodecPriority::Caller => {
            if common & caller_format != 0 {
                Some(caller_format)
            } else {
                our_bits.into_iter().find(|b| common & b != 0)
            }
        }
        CodecPriority::Host => our_bits.into_iter().find(|b| common & b != 0),
        // Take the caller's choice or nothing.
        CodecPriority::Disabled | CodecPriority::ReqOnly => {
            (caller_format.count_ones() == 1 && our_mask & caller_format != 0).then_some(caller_format)
        }
    }
}

pub use crate::media::Source;

/// How often an accepted call sends PING and LAGRQ (chan_iax2's defaults, 21 s and 10 s).
pub const PING_INTERVAL: Duration = Duration::from_secs(21);
pub const LAGRQ_INTERVAL: Duration = Duration::from_secs(10);

/// A call's `repr(C)` keeps the declared order: the fields the media path
/// reads or writes for every frame and every media tick come first,
/// largest first, and fill about four cache lines; the rest (setup,
/// signalling, keepalive) follows. Each call is cold again 20 ms later, so
/// the lines a frame touches are what a frame costs (docs/performance.md).
#[repr(C)]
pub struct Call {
    pub stats: MediaStats,
    /// Received frames whose timestamps were not 20 ms after the previous one.
    pub ts_irregular: u64,
    /// `created` in nanoseconds on the endpoint's clock, once the media path
    /// has needed it (see [`Call::next_voice_ts_at`]).
    pub created_ns: Option<u64>,
    /// Hang up at this time: originate's hold time (outbound), or the
    /// dialplan's `Wait` before `Hangup` (inbound).
    pub hangup_at: Option<Instant>,
    /// When this side next rotates its transmit key (see `rotate_keys`).
    pub rotate_at: Option<Instant>,
    /// Incoming audio is played out through this when `jitterbuffer=yes`.
    /// Boxed: it is half the size of a call, and most calls have none; the
    /// fields the media path reads for every frame then share fewer cache lines.
    pub jitter: Option<Box<crate::jitterbuffer::JitterBuffer>>,
    pub app: App,
    pub source: Source,
    /// The negotiated format bit (0 until ACCEPT).
    pub format: u32,
    /// Timestamp of the last voice frame we sent, and whether the peer has had a full one.
    pub tx_last_ts: Option<u32>,
    /// Full 32-bit timestamp of the last voice frame received, to extend mini frames' 16 bits.
    pub rx_last_ts: Option<u32>,
    /// The other leg when this call is bridged (`dial`).
    pub bridge: Option<u16>,
    pub state: CallState,
    /// Peer asked us to stop sending audio.
    pub quelched: bool,
    /// Media goes in meta trunk frames to this peer.
    pub trunk: bool,
    /// This side rotates its transmit key (KEYROTATE negotiated), and when next.
    pub rotate_keys: bool,
    /// The configured user/peer this call belongs to, if known.
    pub peer: Option<String>,
    pub exten: String,
    pub context: String,
    pub created: Instant,
    pub answered: Option<Instant>,
    /// Outbound: give up if the NEW draws no answer by then (`autokill`).
    pub autokill_at: Option<Instant>,
    /// Credentials for AUTHREQ (outbound) or the challenge sent (inbound).
    pub username: Option<String>,
    pub secret: Option<String>,
    pub challenge: Option<String>,
    /// Next PING and LAGRQ of our own, once the call is accepted (chan_iax2's
    /// `ping_time` and `lagrq_time`): they keep NAT bindings open and measure the path.
    pub ping_at: Option<Instant>,
    pub lagrq_at: Option<Instant>,
    /// Round trip of the last PING answered, and of the last LAGRQ, in ms.
    pub rtt_ms: Option<u32>,
    pub lag_ms: Option<u32>,
    /// The DATETIME our NEW carries (kept so its resend with a call token is the same NEW).
    pub datetime: Option<u32>,
    /// The NEW's FORMAT and CAPABILITY (inbound), for negotiation.
    pub offered: (u32, u32),
    /// Caller ID (number, name): what the NEW carried (inbound) or what we present (outbound).
    pub calling: (Option<String>, Option<String>),
    /// ENCRYPTION methods we offer (outbound) or the caller offered (inbound).
    pub encryption_offered: u16,
    /// The call's frames are AES-128 encrypted.
    pub encrypted: bool,
    /// Refuse or hang up when encryption is not agreed (`forceencryption`).
    pub force_encryption: bool,
    pub token_sent: bool,
    /// The Q.850 cause sent when `hangup_at` comes (16 unless the dialplan says).
    pub hangup_cause: u8,
    pub direction: Direction,
}

impl Call {
    /// Starts the PING and LAGRQ clocks when the call is accepted (once).
    pub fn start_keepalive(&mut self, now: Instant) {
        self.ping_at.get_or_insert(now + PING_INTERVAL);
        self.lagrq_at.get_or_insert(now + LAGRQ_INTERVAL);
    }

    pub fn new(direction: Direction, now: Instant, exten: String, context: String, app: App, tag: u16) -> Call {
        Call {
            direction,
            state: match direction {
                Direction::Outbound => CallState::NewSent,
                Direction::Inbound => CallState::Accepted,
            },
            peer: None,
            exten,
            context,
            source: Source::for_app(&app, tag),
            app,
            format: 0,
            trunk: false,
            created: now,
            created_ns: None,
            answered: None,
            hangup_at: None,
            hangup_cause: cause::NORMAL_CLEARING,
            autokill_at: None,
            username: None,
            secret: None,
            challenge: None,
            token_sent: false,
            datetime: None,
            rotate_keys: false,
            rotate_at: None,
            ping_at: None,
            lagrq_at: None,
            rtt_ms: None,
            lag_ms: None,
            quelched: false,
            tx_last_ts: None,
            rx_last_ts: None,
            stats: MediaStats::default(),
            ts_irregular: 0,
            bridge: None,
            offered: (0, 0),
            jitter: None,
            calling: (None, None),
            encryption_offered: 0,
            encrypted: false,
            force_encryption: false,
        }
    }

    /// Milliseconds since the call began.
    pub fn elapsed_ms(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.created).as_millis().min(u32::MAX as u128) as u32
    }

    /// The timestamp for the next outgoing voice frame: 20 ms after the
    /// previous one while frames keep coming (arrivals that bunch up or lag a
    /// little, e.g. the first trunked frame after a full one, do not show as
    /// skips), and back on the call's 20 ms clock after a real gap of two
    /// frames or more (silence, loss), so the far end sees both truthfully.
    pub fn next_voice_ts(&mut self, now: Instant) -> u32 {
        self.next_voice_ts_at(self.elapsed_ms(now))
    }

    /// [`Call::next_voice_ts`] with the call's age in ms already known: the
    /// media path reads the clock once for many calls, and subtracting two
    /// `Instant`s for each frame was a measurable share of sending it.
    pub fn next_voice_ts_at(&mut self, elapsed_ms: u32) -> u32 {
        let grid = elapsed_ms / 20 * 20;
        let ts = match self.tx_last_ts {
            Some(last) if grid < last + 60 => last + 20,
            Some(_) => grid,
            None => grid.max(20),
        };
        self.tx_last_ts = Some(ts);
        ts
    }

    /// Whether a voice frame at `ts` must go as a full frame: the first one,
    /// and whenever the 16-bit mini-frame timestamp would wrap (RFC 5456 8.1.2).
    pub fn needs_full_voice(previous: Option<u32>, ts: u32) -> bool {
        match previous {
            None => true,
            Some(prev) => (ts & 0xffff) < (prev & 0xffff) || ts.wrapping_sub(prev) > 0xffff,
        }
    }

    /// Extends a mini frame's 16-bit timestamp with the high bits of the last full one.
    pub fn extend_mini_ts(&self, mini: u16) -> u32 {
        let last = self.rx_last_ts.unwrap_or(0);
        let candidate = (last & 0xffff_0000) | u32::from(mini);
        // A mini timestamp far below the last one has wrapped before its full frame arrived.
        if candidate + 0x8000 < last {
            candidate.wrapping_add(0x1_0000)
        } else {
            candidate
        }
    }

    /// Accounts a received voice frame.
    pub fn media_received(&mut self, ts: u32, payload: &[u8], arrival_us: i64) {
        if let Some(last) = self.rx_last_ts {
            if ts != last.wrapping_add(20) {
                self.ts_irregular += 1;
            }
        }
        self.rx_last_ts = Some(self.rx_last_ts.map_or(ts, |last| last.max(ts)));
        self.stats.received(payload, ts, arrival_us);
    }

    pub fn duration(&self, now: Instant) -> Duration {
        self.answered.map_or(Duration::ZERO, |a| now.saturating_duration_since(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_strings() {
        let d = DialString::parse("IAX2/alice:pw@b:4570/600@iaxinbound/o").unwrap();
        assert_eq!(d.username.as_deref(), Some("alice"));
        assert_eq!(d.secret.as_deref(), Some("pw"));
        assert_eq!((d.peer.as_str(), d.port), ("b", Some(4570)));
        assert_eq!((d.exten.as_deref(), d.context.as_deref()), (Some("600"), Some("iaxinbound")));
        assert_eq!(d.options.as_deref(), Some("o"));
        let d = DialString::parse("iax2/b/600").unwrap();
        assert_eq!((d.peer.as_str(), d.exten.as_deref(), d.username), ("b", Some("600"), None));
        let d = DialString::parse("IAX2/[2001:db8::2]:4569/9196").unwrap();
        assert_eq!((d.peer.as_str(), d.port), ("2001:db8::2", Some(4569)));
        assert!(DialString::parse("SIP/b/600").is_err());
        assert!(DialString::parse("IAX2//600").is_err());
        assert!(DialString::parse("IAX2/b:x/600").is_err());
    }

    #[test]
    fn codecpriority_semantics() {
        let ours = CodecPrefs { allowed: vec!["alaw".into(), "ulaw".into()] };
        let both = format::ULAW | format::ALAW;
        assert_eq!(negotiate(CodecPriority::Host, &ours, format::ULAW, both), Some(format::ALAW));
        assert_eq!(negotiate(CodecPriority::Caller, &ours, format::ULAW, both), Some(format::ULAW));
        assert_eq!(negotiate(CodecPriority::Caller, &ours, format::GSM, both | format::GSM), Some(format::ALAW));
        assert_eq!(negotiate(CodecPriority::ReqOnly, &ours, format::GSM, format::GSM | both), None);
        assert_eq!(negotiate(CodecPriority::Disabled, &ours, format::ULAW, format::ULAW), Some(format::ULAW));
        assert_eq!(negotiate(CodecPriority::Host, &ours, format::GSM, format::GSM), None);
    }

    #[test]
    fn mini_timestamps_extend_across_the_16_bit_wrap() {
        let mut call = Call::new(Direction::Inbound, Instant::now(), "s".into(), "default".into(), App::Echo, 0);
        call.rx_last_ts = Some(0x0001_fff0);
        assert_eq!(call.extend_mini_ts(0xfffa), 0x0001_fffa);
        assert_eq!(call.extend_mini_ts(0x0004), 0x0002_0004, "wrapped before the full frame");
        assert_eq!(call.extend_mini_ts(0xffe0), 0x0001_ffe0, "a late frame from before");
        assert!(Call::needs_full_voice(None, 20));
        assert!(!Call::needs_full_voice(Some(20), 40));
        assert!(Call::needs_full_voice(Some(0xfff0), 0x1_0004));
    }

    #[test]
    fn voice_timestamps_stay_on_a_20_ms_grid() {
        let start = Instant::now();
        let mut call = Call::new(Direction::Outbound, start, "s".into(), "default".into(), App::Echo, 0);
        let at = |ms| start + Duration::from_millis(ms);
        let ts: Vec<u32> = [0, 19, 43, 44, 100, 135, 400].into_iter().map(|ms| call.next_voice_ts(at(ms))).collect();
        // Bunched and late-by-one arrivals keep the cadence; a gap of 13 frames shows.
        assert_eq!(ts, vec![20, 40, 60, 80, 100, 120, 400]);
    }
}
