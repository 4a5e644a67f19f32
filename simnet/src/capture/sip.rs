//! Just enough SIP to find messages in a capture: the start line, the
//! headers a replay needs (Call-ID, CSeq, tags, branch, Content-Length,
//! Content-Type) and SDP media addresses. Not a SIP stack.

use std::net::{IpAddr, SocketAddr};

/// The first line of a SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// What a replay needs to know about one SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipInfo {
    pub start: StartLine,
    pub call_id: Option<String>,
    pub cseq: Option<(u32, String)>,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    pub branch: Option<String>,
    /// As written; `None` when absent; `Some(Err(text))` when not a number.
    pub content_length: Option<Result<usize, String>>,
    pub content_type: Option<String>,
    pub has_auth: bool,
    pub has_challenge: bool,
    /// Media addresses the SDP body announces (c= address with each m= port).
    pub sdp_media: Vec<SocketAddr>,
    /// Bytes of the message (headers and body as the Content-Length says).
    pub len: usize,
}

impl SipInfo {
    pub fn method(&self) -> &str {
        match &self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => self.cseq.as_ref().map_or("", |(_, m)| m.as_str()),
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// `INVITE` or `200 INVITE`.
    pub fn label(&self) -> String {
        match &self.start {
            StartLine::Request { method, .. } => method.clone(),
            StartLine::Response { code, .. } => format!("{code} {}", self.method()),
        }
    }
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// Parses a start line (without its line end).
pub fn parse_start_line(line: &[u8]) -> Option<StartLine> {
    let line = std::str::from_utf8(line).ok()?;
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return Some(StartLine::Response { code: code.parse().ok()?, reason: reason.to_string() });
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "SIP/2.0" || uri.is_empty() || method.is_empty() {
        return None;
    }
    if !method.bytes().all(is_token_char) || !uri.contains(':') {
        return None;
    }
    Some(StartLine::Request { method: method.to_string(), uri: uri.to_string() })
}

/// The first line of `buf` (up to CRLF or LF), if there is a whole one.
fn first_line(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..end];
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Whether `buf` starts with a SIP start line.
pub fn starts_like_sip(buf: &[u8]) -> bool {
    first_line(buf).and_then(parse_start_line).is_some()
}

/// Where the header block of `buf` ends (the index after the blank line).
pub fn header_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// Parses the SIP message at the start of `buf` (a UDP datagram, or a TCP
/// stream from a message boundary). `None` when it does not start like SIP.
pub fn parse(buf: &[u8]) -> Option<SipInfo> {
    let start = parse_start_line(first_line(buf)?)?;
    let head_end = header_end(buf).unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..head_end]);
    // Unfold continuation lines, then split name: value.
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines().skip(1) {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let get = |long: &str, short: &str| {
        headers.iter().find(|(n, _)| n == long || (!short.is_empty() && n == short)).map(|(_, v)| v.clone())
    };
    let cseq = get("cseq", "").and_then(|v| {
        let (n, m) = v.split_once(char::is_whitespace)?;
        Some((n.trim().parse().ok()?, m.trim().to_string()))
    });
    let content_length = get("content-length", "l").map(|v| v.parse::<usize>().map_err(|_| v.clone()));
    let body_len = match &content_length {
        Some(Ok(n)) => (*n).min(buf.len().saturating_sub(head_end)),
        _ => buf.len().saturating_sub(head_end),
    };
    let body = &buf[head_end.min(buf.len())..head_end.min(buf.len()) + body_len];
    let content_type = get("content-type", "c");
    let is_sdp = content_type.as_deref().is_some_and(|t| t.to_ascii_lowercase().starts_with("application/sdp"));
    let has = |n: &str| headers.iter().any(|(h, _)| h == n);
    Some(SipInfo {
        start,
        call_id: get("call-id", "i"),
        cseq,
        from_tag: get("from", "f").and_then(|v| param(&v, "tag").map(str::to_string)),
        to_tag: get("to", "t").and_then(|v| param(&v, "tag").map(str::to_string)),
        branch: get("via", "v").and_then(|v| param(&v, "branch").map(str::to_string)),
        content_length,
        content_type,
        has_auth: has("authorization") || has("proxy-authorization"),
        has_challenge: has("www-authenticate") || has("proxy-authenticate"),
        sdp_media: if is_sdp { sdp_media(body) } else { Vec::new() },
        len: head_end + body_len,
    })
}

/// The (address, port) of each `m=` line, with the session or media `c=` address.
pub fn sdp_media(body: &[u8]) -> Vec<SocketAddr> {
    let text = String::from_utf8_lossy(body);
    let mut session_addr: Option<IpAddr> = None;
    let mut media: Vec<(u16, Option<IpAddr>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=") {
            let addr = c.split_whitespace().nth(2).and_then(|a| a.split('/').next()?.parse().ok());
            match media.last_mut() {
                Some(m) => m.1 = addr,
                None => session_addr = addr,
            }
        } else if let Some(m) = line.strip_prefix("m=") {
            if let Some(port) = m.split_whitespace().nth(1).and_then(|p| p.split('/').next()?.parse().ok()) {
                media.push((port, None));
            }
        }
    }
    media
        .into_iter()
        .filter(|(port, _)| *port != 0)
        .filter_map(|(port, addr)| addr.or(session_addr).map(|a| SocketAddr::new(a, port)))
        .collect()
}

/// Splits a TCP byte stream into SIP messages by Content-Length.
#[derive(Default)]
pub(crate) struct StreamFramer {
    buf: Vec<u8>,
    /// The stream was found not to be SIP: bytes are dropped from now on.
    pub not_sip: bool,
    /// Whether a message was ever framed on this stream.
    pub framed_any: bool,
}

/// The most a framer holds while waiting for a message to complete.
pub const MAX_SIP_MESSAGE: usize = 256 * 1024;

pub(crate) enum Framed {
    Message(Vec<u8>),
    Problem(String),
}

impl StreamFramer {
    /// Bytes after a gap: the framer must find the next start line itself.
    pub fn gap(&mut self) {
        self.buf.clear();
    }

    pub fn push(&mut self, data: &[u8], out: &mut Vec<Framed>) {
        if self.not_sip {
            return;
        }
        self.buf.extend_from_slice(data);
        loop {
            // CRLF keep-alives between messages (RFC 5626).
            let skip = self.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
            self.buf.drain(..skip);
            if self.buf.is_empty() {
                return;
            }
            if first_line(&self.buf).is_none() {
                if self.buf.len() > MAX_SIP_MESSAGE {
                    self.give_up(out, "no line end in the first 256 KiB");
                }
                return;
            }
            if !starts_like_sip(&self.buf) {
                // Find a later start line (the capture may begin mid-message).
                let next = self
                    .buf
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| w == b"\r\n")
                    .map(|(i, _)| i + 2)
                    .find(|&i| starts_like_sip(&self.buf[i..]));
                match next {
                    Some(i) if self.framed_any => {
                        out.push(Framed::Problem(format!("{i} bytes of non-SIP data in a SIP stream skipped")));
                        self.buf.drain(..i);
                        continue;
                    }
                    _ if !self.framed_any => {
                        self.not_sip = true;
                        self.buf = Vec::new();
                        return;
                    }
                    _ => {
                        if self.buf.len() > MAX_SIP_MESSAGE {
                            self.give_up(out, "no SIP start line found");
                        }
                        return;
                    }
                }
            }
            let Some(head_end) = header_end(&self.buf) else {
                if self.buf.len() > MAX_SIP_MESSAGE {
                    self.give_up(out, "header block longer than 256 KiB");
                }
                return;
            };
            let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
            let cl = head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                matches!(n.trim(), "content-length" | "l").then(|| v.trim().to_string())
            });
            let body = match cl.as_deref().map(str::parse::<usize>) {
                Some(Ok(n)) => n,
                None => 0,
                Some(Err(_)) => {
                    out.push(Framed::Problem(format!(
                        "invalid Content-Length {:?} on a stream: taken as 0",
                        cl.unwrap_or_default()
                    )));
                    0
                }
            };
            if head_end + body > MAX_SIP_MESSAGE {
                self.give_up(out, "message longer than 256 KiB");
                return;
            }
            if self.buf.len() < head_end + body {
                return;
            }
            let msg: Vec<u8> = self.buf.drain(..head_end + body).collect();
            self.framed_any = true;
            out.push(Framed::Message(msg));
        }
    }

    fn give_up(&mut self, out: &mut Vec<Framed>, why: &str) {
        out.push(Framed::Problem(format!("SIP stream resynchronised: {why}; {} bytes dropped", self.buf.len())));
        self.buf.clear();
    }

    /// Bytes still waiting at the end of the capture.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines() {
        assert!(matches!(
            parse_start_line(b"INVITE sip:bob@example.com SIP/2.0"),
            Some(StartLine::Request { method, .. }) if method == "INVITE"
        ));
        assert_eq!(
            parse_start_line(b"SIP/2.0 401 Unauthorized"),
            Some(StartLine::Response { code: 401, reason: "Unauthorized".into() })
        );
        assert!(parse_start_line(b"GET / HTTP/1.1").is_none());
        assert!(parse_start_line(b"SIP/2.0 4294967301 big").is_none());
    }

    #[test]
    fn framer_splits_by_content_length_and_keeps_partial() {
        let a = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 3\r\n\r\nabc";
        let b = b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n";
        let mut stream = a.to_vec();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(b);
        let mut f = StreamFramer::default();
        let mut out = Vec::new();
        f.push(&stream[..10], &mut out);
        assert!(out.is_empty());
        f.push(&stream[10..], &mut out);
        let msgs: Vec<Vec<u8>> = out
            .into_iter()
            .filter_map(|m| match m {
                Framed::Message(m) => Some(m),
                Framed::Problem(_) => None,
            })
            .collect();
        assert_eq!(msgs, vec![a.to_vec(), b.to_vec()]);
        assert_eq!(f.leftover(), 0);
    }

    #[test]
    fn http_is_not_sip() {
        let mut f = StreamFramer::default();
        let mut out = Vec::new();
        f.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out);
        assert!(f.not_sip && out.is_empty());
    }

    #[test]
    fn sdp_addresses() {
        let body = b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n";
        assert_eq!(sdp_media(body), vec!["10.0.0.1:4000".parse().unwrap()]);
    }
}
