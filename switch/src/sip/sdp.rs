//! SDP session descriptions (RFC 4566), as much as offer/answer for audio
//! needs (RFC 3264): origin, connection, media lines with rtpmap, fmtp,
//! ptime and direction.
//!
//! Parsing is tolerant where peers differ in practice (LF-only line ends,
//! blank lines, unknown line types and attributes, a missing `s=` or `t=`,
//! a malformed rtpmap) and strict only where the result would be useless
//! (no `v=0`, no usable `o=`, unreadable `m=` or `c=`). Unknown lines are
//! kept and written back, so an answer built from an offer loses nothing.

use std::fmt;
use std::net::IpAddr;

/// Largest description accepted (a SIP datagram cannot be larger).
pub const MAX_SDP: usize = 65535;
/// Most `m=` sections accepted.
pub const MAX_MEDIA: usize = 32;
/// Most lines accepted in total.
pub const MAX_LINES: usize = 1024;
/// Most formats on one `m=` line.
pub const MAX_FORMATS: usize = 64;

/// Why a session description is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("session description is empty")]
    Empty,
    #[error("session description is larger than {MAX_SDP} bytes")]
    TooLarge,
    #[error("more than {MAX_LINES} lines")]
    TooManyLines,
    #[error("more than {MAX_MEDIA} media sections")]
    TooManyMedia,
    #[error("line {0} is not 'x=value'")]
    BadLine(usize),
    #[error("first line is not v=0")]
    BadVersion,
    #[error("o= line missing or malformed")]
    BadOrigin,
    #[error("c= line on line {0} is malformed")]
    BadConnection(usize),
    #[error("m= line on line {0} is malformed")]
    BadMedia(usize),
    #[error("t= line on line {0} is malformed")]
    BadTiming(usize),
}

/// `o=<username> <sess-id> <sess-version> IN IP4 <address>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    /// Incremented by the sender whenever the description changes (RFC 3264 8).
    pub version: u64,
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

/// `c=IN IP4 <address>[/ttl[/count]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub net_type: String,
    pub addr_type: String,
    /// As written, including any `/ttl` suffix.
    pub address: String,
}

impl Connection {
    pub fn new(address: IpAddr) -> Connection {
        let addr_type = if address.is_ipv4() { "IP4" } else { "IP6" };
        Connection { net_type: "IN".into(), addr_type: addr_type.into(), address: address.to_string() }
    }

    /// The unicast or multicast address without `/ttl`; `None` for an FQDN.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next().and_then(|a| a.parse().ok())
    }
}

/// Media direction attribute (RFC 4566 6, RFC 3264 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// What the answerer puts for an offered direction (RFC 3264 6.1).
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
}

impl RtpMap {
    fn parse(value: &str) -> Option<RtpMap> {
        let (pt, rest) = value.split_once(' ')?;
        let mut parts = rest.trim().split('/');
        let encoding = parts.next().filter(|e| !e.is_empty())?;
        let clock_rate = parts.next()?.parse().ok()?;
        let channels = match parts.next() {
            Some(c) => Some(c.parse().ok()?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(RtpMap { pt: pt.parse().ok()?, encoding: encoding.to_string(), clock_rate, channels })
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.pt, self.encoding, self.clock_rate)?;
        if let Some(channels) = self.channels {
            write!(f, "/{channels}")?;
        }
        Ok(())
    }
}

/// Encoding and clock rate of the static RTP payload types an audio switch
/// meets (RFC 3551 table 4), used when an offer omits their rtpmap.
pub fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

/// One `m=` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, ...
    pub kind: String,
    /// 0 means the stream is declined or disabled (RFC 3264 6).
    pub port: u16,
    /// `m=audio 49170/2 ...`: number of ports, rare.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub proto: String,
    /// Payload type numbers for RTP, as written.
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:<pt> <params>`, e.g. `(101, "0-16")`.
    pub fmtp: Vec<(u8, String)>,
    pub ptime: Option<u32>,
    pub direction: Option<Direction>,
    /// Other attributes without `a=` (`rtcp:53021`, `maxptime:40`...).
    pub other_attributes: Vec<String>,
    /// Other lines (`b=`, `i=`, `k=`), complete with their `x=`.
    pub other_lines: Vec<String>,
}

impl Media {
    /// The address to send this stream to: the media-level `c=`, else the
    /// session-level one.
    pub fn address(&self, session: &SessionDescription) -> Option<IpAddr> {
        self.connection.as_ref().or(session.connection.as_ref()).and_then(Connection::ip)
    }

    /// The formats that are RTP payload type numbers, in preference order.
    pub fn payload_types(&self) -> Vec<u8> {
        self.formats.iter().filter_map(|f| f.parse().ok()).filter(|pt| *pt < 128).collect()
    }

    /// Encoding name and clock rate for a payload type: its rtpmap, else the
    /// static assignment.
    pub fn encoding(&self, pt: u8) -> Option<(&str, u32)> {
        match self.rtpmaps.iter().find(|m| m.pt == pt) {
            Some(map) => Some((map.encoding.as_str(), map.clock_rate)),
            None => static_payload(pt),
        }
    }

    /// The payload type mapped to `encoding` (case-insensitive), e.g.
    /// `telephone-event` for RFC 4733 DTMF.
    pub fn find_encoding(&self, encoding: &str) -> Option<u8> {
        self.payload_types()
            .into_iter()
            .find(|pt| self.encoding(*pt).is_some_and(|(e, _)| e.eq_ignore_ascii_case(encoding)))
    }

    /// The media direction, falling back to the session level and then to
    /// sendrecv (RFC 4566 6).
    pub fn effective_direction(&self, session: &SessionDescription) -> Direction {
        self.direction.or(session.direction).unwrap_or(Direction::SendRecv)
    }
}

/// A whole session description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    pub connection: Option<Connection>,
    /// `t=<start> <stop>`; `(0, 0)` for an unbounded session, as SIP uses.
    pub timing: (u64, u64),
    /// Session-level direction, which media without their own inherit.
    pub direction: Option<Direction>,
    /// Other session-level attributes without `a=`.
    pub attributes: Vec<String>,
    /// Other session-level lines, complete with their `x=`.
    pub other_lines: Vec<String>,
    pub media: Vec<Media>,
}

/// Position of a line type in the order RFC 4566 5 requires, session level.
fn session_rank(kind: u8) -> u8 {
    match kind {
        b'i' | b'u' | b'e' | b'p' => 0,
        b'b' => 1,
        b'r' | b'z' | b'k' => 2,
        _ => 3,
    }
}

impl SessionDescription {
    pub fn parse(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
        if bytes.len() > MAX_SDP {
            return Err(SdpError::TooLarge);
        }
        let text = String::from_utf8_lossy(bytes);
        if text.split('\n').count() > MAX_LINES {
            return Err(SdpError::TooManyLines);
        }
        let mut lines =
            text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate().filter(|(_, l)| !l.is_empty());
        match lines.next() {
            None => return Err(SdpError::Empty),
            Some((_, "v=0")) => {}
            Some(_) => return Err(SdpError::BadVersion),
        }
        let mut sd = SessionDescription::default();
        let mut origin = None;
        for (index, line) in lines {
            let number = index + 1;
            let (kind, value) = match line.as_bytes() {
                [kind, b'=', ..] if kind.is_ascii_lowercase() => (*kind, line.get(2..).unwrap_or("")),
                _ => return Err(SdpError::BadLine(number)),
            };
            if kind == b'm' {
                if sd.media.len() == MAX_MEDIA {
                    return Err(SdpError::TooManyMedia);
                }
                sd.media.push(parse_media_line(value).ok_or(SdpError::BadMedia(number))?);
                continue;
            }
            if let Some(media) = sd.media.last_mut() {
                match kind {
                    b'c' => media.connection = Some(parse_connection(value).ok_or(SdpError::BadConnection(number))?),
                    b'a' => media_attribute(media, value),
                    _ => media.other_lines.push(line.to_string()),
                }
                continue;
            }
            match kind {
                b'o' => origin = Some(parse_origin(value).ok_or(SdpError::BadOrigin)?),
                b's' => sd.session_name = value.to_string(),
                b'c' => sd.connection = Some(parse_connection(value).ok_or(SdpError::BadConnection(number))?),
                b't' => sd.timing = parse_timing(value).ok_or(SdpError::BadTiming(number))?,
                b'a' => match Direction::parse(value) {
                    Some(direction) => sd.direction = Some(direction),
                    None => sd.attributes.push(value.to_string()),
                },
                _ => sd.other_lines.push(line.to_string()),
            }
        }
        sd.origin = origin.ok_or(SdpError::BadOrigin)?;
        Ok(sd)
    }

    /// The description as SDP text with CRLF line ends, lines in the order
    /// RFC 4566 prescribes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let o = &self.origin;
        emit(&mut out, "v=0");
        emit(
            &mut out,
            &format!("o={} {} {} {} {} {}", o.username, o.session_id, o.version, o.net_type, o.addr_type, o.address),
        );
        emit(&mut out, &format!("s={}", if self.session_name.is_empty() { "-" } else { &self.session_name }));
        let ranked =
            |rank: u8| self.other_lines.iter().filter(move |l| session_rank(l.bytes().next().unwrap_or(0)) == rank);
        for line in ranked(0) {
            emit(&mut out, line);
        }
        if let Some(c) = &self.connection {
            emit_connection(&mut out, c);
        }
        for line in ranked(1) {
            emit(&mut out, line);
        }
        emit(&mut out, &format!("t={} {}", self.timing.0, self.timing.1));
        for line in ranked(2).chain(ranked(3)) {
            emit(&mut out, line);
        }
        for attribute in &self.attributes {
            emit(&mut out, &format!("a={attribute}"));
        }
        if let Some(direction) = self.direction {
            emit(&mut out, &format!("a={}", direction.as_str()));
        }
        for media in &self.media {
            encode_media(&mut out, media);
        }
        out
    }
}

fn encode_media(out: &mut Vec<u8>, m: &Media) {
    let mut line = format!("m={} {}", m.kind, m.port);
    if let Some(count) = m.port_count {
        line.push_str(&format!("/{count}"));
    }
    line.push(' ');
    line.push_str(&m.proto);
    for format in &m.formats {
        line.push(' ');
        line.push_str(format);
    }
    emit(out, &line);
    let is_info = |l: &&String| l.starts_with("i=");
    for line in m.other_lines.iter().filter(is_info) {
        emit(out, line);
    }
    if let Some(c) = &m.connection {
        emit_connection(out, c);
    }
    for line in m.other_lines.iter().filter(|l| !is_info(l)) {
        emit(out, line);
    }
    for map in &m.rtpmaps {
        emit(out, &format!("a=rtpmap:{map}"));
    }
    for (pt, params) in &m.fmtp {
        emit(out, &format!("a=fmtp:{pt} {params}"));
    }
    if let Some(ptime) = m.ptime {
        emit(out, &format!("a=ptime:{ptime}"));
    }
    if let Some(direction) = m.direction {
        emit(out, &format!("a={}", direction.as_str()));
    }
    for attribute in &m.other_attributes {
        emit(out, &format!("a={attribute}"));
    }
}

/// Writes one line. A CR or LF inside a field would start a line of the
/// field's choosing, so they are written as spaces.
fn emit(out: &mut Vec<u8>, line: &str) {
    out.extend(line.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

fn emit_connection(out: &mut Vec<u8>, c: &Connection) {
    emit(out, &format!("c={} {} {}", c.net_type, c.addr_type, c.address));
}

fn parse_origin(value: &str) -> Option<Origin> {
    let mut f = value.split(' ').filter(|w| !w.is_empty());
    let origin = Origin {
        username: f.next()?.to_string(),
        session_id: f.next()?.parse().ok()?,
        version: f.next()?.parse().ok()?,
        net_type: f.next()?.to_string(),
        addr_type: f.next()?.to_string(),
        address: f.next()?.to_string(),
    };
    f.next().is_none().then_some(origin)
}

fn parse_connection(value: &str) -> Option<Connection> {
    let mut f = value.split(' ').filter(|w| !w.is_empty());
    let connection = Connection {
        net_type: f.next()?.to_string(),
        addr_type: f.next()?.to_string(),
        address: f.next()?.to_string(),
    };
    f.next().is_none().then_some(connection)
}

fn parse_timing(value: &str) -> Option<(u64, u64)> {
    let mut f = value.split(' ').filter(|w| !w.is_empty());
    let timing = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
    f.next().is_none().then_some(timing)
}

fn parse_media_line(value: &str) -> Option<Media> {
    let mut f = value.split(' ').filter(|w| !w.is_empty());
    let kind = f.next()?.to_string();
    let port_field = f.next()?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((port, count)) => (port.parse().ok()?, Some(count.parse().ok()?)),
        None => (port_field.parse().ok()?, None),
    };
    let proto = f.next()?.to_string();
    let formats: Vec<String> = f.map(str::to_string).collect();
    if formats.len() > MAX_FORMATS {
        return None;
    }
    Some(Media { kind, port, port_count, proto, formats, ..Media::default() })
}

fn media_attribute(media: &mut Media, value: &str) {
    let (name, arg) = match value.split_once(':') {
        Some((name, arg)) => (name, Some(arg)),
        None => (value, None),
    };
    let known = match (name, arg) {
        ("rtpmap", Some(arg)) => RtpMap::parse(arg).map(|map| media.rtpmaps.push(map)),
        ("fmtp", Some(arg)) => arg
            .split_once(' ')
            .and_then(|(pt, params)| Some((pt.parse::<u8>().ok()?, params.trim().to_string())))
            .map(|fmtp| media.fmtp.push(fmtp)),
        ("ptime", Some(arg)) if media.ptime.is_none() => arg.trim().parse().ok().map(|p| media.ptime = Some(p)),
        (_, None) => Direction::parse(name).map(|d| media.direction = Some(d)),
        _ => None,
    };
    if known.is_none() {
        media.other_attributes.push(value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:49171\r\n";

    #[test]
    fn parses_a_typical_offer() {
        let sd = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sd.origin.session_id, 2890844526);
        assert_eq!(sd.origin.address, "192.0.2.10");
        let m = &sd.media[0];
        assert_eq!((m.kind.as_str(), m.port, m.proto.as_str()), ("audio", 49170, "RTP/AVP"));
        assert_eq!(m.payload_types(), [0, 8, 101]);
        assert_eq!(m.address(&sd), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(m.encoding(8), Some(("PCMA", 8000)));
        assert_eq!(m.find_encoding("TELEPHONE-EVENT"), Some(101));
        assert_eq!(m.fmtp, [(101, "0-16".to_string())]);
        assert_eq!(m.ptime, Some(20));
        assert_eq!(m.direction, Some(Direction::SendRecv));
        assert_eq!(m.other_attributes, ["rtcp:49171"]);
        assert_eq!(String::from_utf8(sd.encode()).unwrap(), OFFER);
    }

    #[test]
    fn tolerant_of_lf_unknown_lines_and_odd_rtpmaps() {
        let text = "v=0\no=- 1 1 IN IP6 2001:db8::1\n\nx=unknown\nb=AS:64\nt=0 0\na=recvonly\n\
m=audio 0 RTP/AVP 31 9\nc=IN IP6 2001:db8::2\na=rtpmap:31 LPC\nb=AS:80\n";
        let sd = SessionDescription::parse(text.as_bytes()).unwrap();
        assert_eq!(sd.session_name, "");
        assert_eq!(sd.other_lines, ["x=unknown", "b=AS:64"]);
        let m = &sd.media[0];
        assert_eq!(m.port, 0);
        assert_eq!(m.other_attributes, ["rtpmap:31 LPC"]);
        assert_eq!(m.other_lines, ["b=AS:80"]);
        assert_eq!(m.address(&sd), Some("2001:db8::2".parse().unwrap()));
        assert_eq!(m.effective_direction(&sd), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
    }

    #[test]
    fn rejects_useless_descriptions() {
        for (text, expected) in [
            ("", SdpError::Empty),
            ("\r\n", SdpError::Empty),
            ("v=1\r\n", SdpError::BadVersion),
            ("v=0\r\ns=-\r\n", SdpError::BadOrigin),
            ("v=0\r\no=a b c IN IP4 h\r\n", SdpError::BadOrigin),
            ("v=0\r\no=a 1 1 IN IP4 h\r\nm =video 3227 RTP/AVP 31\r\n", SdpError::BadLine(3)),
            ("v=0\r\no=a 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n", SdpError::BadMedia(3)),
            ("v=0\r\no=a 1 1 IN IP4 h\r\nm=audio 1\r\n", SdpError::BadMedia(3)),
            ("v=0\r\no=a 1 1 IN IP4 h\r\nc=IN IP4\r\n", SdpError::BadConnection(3)),
        ] {
            assert_eq!(SessionDescription::parse(text.as_bytes()), Err(expected), "{text:?}");
        }
        let many = format!("v=0\r\no=a 1 1 IN IP4 h\r\n{}", "m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1));
        assert_eq!(SessionDescription::parse(many.as_bytes()), Err(SdpError::TooManyMedia));
    }

    #[test]
    fn encode_keeps_fields_on_their_lines() {
        let mut sd = SessionDescription::parse(OFFER.as_bytes()).unwrap();
        sd.session_name = "x\r\nm=video 1 RTP/AVP 0".into();
        let again = SessionDescription::parse(&sd.encode()).unwrap();
        assert_eq!(again.media.len(), 1);
    }

    fn arb_connection() -> impl Strategy<Value = Connection> {
        any::<[u8; 4]>().prop_map(|o| Connection::new(IpAddr::from(o)))
    }

    fn arb_media() -> impl Strategy<Value = Media> {
        (
            any::<u16>(),
            proptest::collection::vec(0u8..128, 1..6),
            proptest::option::of(arb_connection()),
            proptest::option::of(10u32..200),
            proptest::option::of(prop_oneof![
                Just(Direction::SendRecv),
                Just(Direction::SendOnly),
                Just(Direction::RecvOnly),
                Just(Direction::Inactive)
            ]),
            proptest::collection::vec("[a-z]{1,8}:[a-z0-9]{1,8}", 0..3),
            proptest::option::of(1u8..3),
        )
            .prop_map(|(port, pts, connection, ptime, direction, other_attributes, channels)| Media {
                kind: "audio".into(),
                port,
                port_count: None,
                proto: "RTP/AVP".into(),
                formats: pts.iter().map(u8::to_string).collect(),
                connection,
                rtpmaps: pts
                    .iter()
                    .map(|pt| RtpMap { pt: *pt, encoding: format!("enc{pt}"), clock_rate: 8000, channels })
                    .collect(),
                fmtp: pts.first().map(|pt| vec![(*pt, "0-16".to_string())]).unwrap_or_default(),
                ptime,
                direction,
                other_attributes,
                other_lines: vec![],
            })
    }

    proptest! {
        #[test]
        fn encode_parse_round_trips(
            session_id in any::<u64>(),
            name in "[a-zA-Z0-9 -]{0,10}[a-z]",
            connection in proptest::option::of(arb_connection()),
            media in proptest::collection::vec(arb_media(), 0..3),
        ) {
            let sd = SessionDescription {
                origin: Origin {
                    username: "-".into(),
                    session_id,
                    version: session_id / 2,
                    net_type: "IN".into(),
                    addr_type: "IP4".into(),
                    address: "192.0.2.1".into(),
                },
                session_name: name,
                connection,
                media,
                ..SessionDescription::default()
            };
            prop_assert_eq!(SessionDescription::parse(&sd.encode()), Ok(sd));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SessionDescription::parse(&bytes);
        }

        #[test]
        fn never_panics_on_sdp_shaped_text(lines in proptest::collection::vec("[vocstma]=[a-z0-9 :/.=-]{0,30}", 0..12)) {
            let text = format!("v=0\r\n{}", lines.join("\r\n"));
            if let Ok(sd) = SessionDescription::parse(text.as_bytes()) {
                for m in &sd.media {
                    let _ = (m.address(&sd), m.payload_types(), m.find_encoding("PCMU"));
                }
                let _ = SessionDescription::parse(&sd.encode());
            }
        }
    }
}
