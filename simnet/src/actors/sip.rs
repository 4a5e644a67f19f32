//! What the actors need of SIP: requests written as a phone's firmware
//! writes them (plain text templates), and a look at what comes back.
//!
//! Parsing reuses the switch's message reader, which the RFC 4475 torture
//! tests and the live SIPp runs hold to the RFC; what the actors *send* is
//! written here, by hand, so a misreading in the switch's writer cannot hide
//! behind the same misreading in its tester.

use std::fmt::Write as _;
use std::net::SocketAddr;

use rand::RngCore;
use switch::sip::digest::{Authorization, Challenge};
use switch::sip::message::{Message, Request, Response};

/// `host:port` as it goes into a URI or Via (brackets around IPv6).
pub(crate) fn hostport(a: SocketAddr) -> String {
    a.to_string()
}

/// The host part of a URI for an address (brackets around IPv6).
pub(crate) fn host(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    }
}

pub(crate) fn token(rng: &mut impl RngCore) -> String {
    format!("{:08x}{:08x}", rng.next_u32(), rng.next_u32())
}

pub(crate) fn branch(rng: &mut impl RngCore) -> String {
    format!("z9hG4bK{}", token(rng))
}

/// One request's header block, before any Authorization and the body.
pub(crate) struct RequestText<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub via: SocketAddr,
    pub branch: &'a str,
    pub rport: bool,
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub contact: Option<&'a str>,
    pub extra: &'a [(&'a str, String)],
}

impl RequestText<'_> {
    pub fn render(&self, authorization: Option<&str>, body: Option<&[u8]>) -> Vec<u8> {
        let mut t = String::with_capacity(512);
        let _ = write!(t, "{} {} SIP/2.0\r\n", self.method, self.uri);
        let _ = write!(
            t,
            "Via: SIP/2.0/UDP {};branch={}{}\r\n",
            hostport(self.via),
            self.branch,
            if self.rport { ";rport" } else { "" }
        );
        t.push_str("Max-Forwards: 70\r\n");
        let _ = write!(t, "From: {}\r\nTo: {}\r\n", self.from, self.to);
        let _ = write!(t, "Call-ID: {}\r\nCSeq: {} {}\r\n", self.call_id, self.cseq, self.method);
        if let Some(c) = self.contact {
            let _ = write!(t, "Contact: {c}\r\n");
        }
        for (name, value) in self.extra {
            let _ = write!(t, "{name}: {value}\r\n");
        }
        if let Some(a) = authorization {
            let _ = write!(t, "{a}\r\n");
        }
        t.push_str("User-Agent: simnet-phone\r\n");
        with_body(t, body)
    }
}

/// A response to `request`, with the headers RFC 3261 8.2.6.2 copies.
pub(crate) fn response(
    request: &Request,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &str,
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut t = format!("SIP/2.0 {status} {reason}\r\n");
    for v in request.headers.get_all("Via") {
        let _ = write!(t, "Via: {v}\r\n");
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(v) = request.headers.get(name) {
            let _ = write!(t, "{name}: {v}\r\n");
        }
    }
    if let Some(to) = request.headers.get("To") {
        match to_tag.filter(|_| !to.contains(";tag=")) {
            Some(tag) => {
                let _ = write!(t, "To: {to};tag={tag}\r\n");
            }
            None => {
                let _ = write!(t, "To: {to}\r\n");
            }
        }
    }
    t.push_str(extra);
    with_body(t, body)
}

/// The header block `head`, then Content-Type and Content-Length and `body`.
fn with_body(head: String, body: Option<&[u8]>) -> Vec<u8> {
    let mut bytes = head.into_bytes();
    match body {
        Some(b) => {
            bytes.extend_from_slice(
                format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes(),
            );
            bytes.extend_from_slice(b);
        }
        None => bytes.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
    bytes
}

/// The `Authorization` (401) or `Proxy-Authorization` (407) header line
/// answering a challenge, or `None` if it cannot be read or answered.
pub(crate) fn answer(
    response: &Response,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    rng: &mut impl RngCore,
) -> Option<String> {
    let header = if response.status == 407 { "Proxy-Authenticate" } else { "WWW-Authenticate" };
    let challenge = Challenge::parse(response.headers.get(header)?).ok()?;
    let name = if response.status == 407 { "Proxy-Authorization" } else { "Authorization" };
    Authorization::answer(&challenge, (user, password), method, uri, 1, rng).ok().map(|a| format!("{name}: {a}"))
}

pub(crate) fn parse(data: &[u8]) -> Option<Message> {
    Message::parse(data).ok()
}

/// An audio offer or answer: PCMU and telephone-event on `rtp`.
pub(crate) fn sdp(session: u64, rtp: SocketAddr) -> Vec<u8> {
    let family = if rtp.is_ipv4() { "IP4" } else { "IP6" };
    let ip = rtp.ip();
    format!(
        "v=0\r\no=- {session} {session} IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
        rtp.port()
    )
    .into_bytes()
}

/// Where the far end of an SDP body wants its audio.
pub(crate) fn sdp_audio(body: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ip = None;
    let mut port = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("c=IN ") {
            ip = c.split_whitespace().nth(1).and_then(|a| a.parse().ok()).or(ip);
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// The URI inside a Contact value (`<sip:...>;params` or a bare URI).
pub(crate) fn contact_uri(value: &str) -> Option<&str> {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => Some(&value[a + 1..b]),
        _ => value.split(';').next().map(str::trim),
    }
}

/// The user part of the URI of a From/To/Request-URI.
pub(crate) fn user_of(value: &str) -> String {
    let start = value.find("sip:").map(|i| i + 4).unwrap_or(0);
    value[start..].split(['@', ';', '>']).next().unwrap_or("").to_string()
}
