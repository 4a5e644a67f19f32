//! SIP messages (RFC 3261 section 7): parsing one datagram into a request or
//! a response, and encoding one back.
//!
//! Parsing is strict about framing (start line, header lines, Content-Length,
//! size limits) and lazy about header values: they are kept as unfolded text
//! and parsed into typed values only when asked, so a damaged header fails
//! only the code that needs it and the caller can still answer 400. Nothing
//! here panics or allocates more than a small multiple of the input, whatever
//! the bytes.

use std::fmt;

use super::header::{self, CSeq, Contact, HeaderError, Method, NameAddr, Via, MAX_LIST};
use super::uri::{Uri, UriError};

/// Largest datagram accepted (the UDP limit; RFC 3261 18.1.1 keeps most
/// messages far below).
pub const MAX_MESSAGE: usize = 65535;
/// Most header fields in one message.
pub const MAX_HEADERS: usize = 128;
/// Longest header line, after unfolding, and longest start line.
pub const MAX_LINE: usize = 8192;

/// Why a datagram is not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty datagram")]
    Empty,
    /// Only CRLFs: a keep-alive (RFC 5626 section 3.5.1), not an error to log.
    #[error("keep-alive (CRLF only)")]
    Keepalive,
    #[error("message of {0} bytes is larger than {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("header section is not terminated by an empty line")]
    Unterminated,
    #[error("a line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("CR not followed by LF")]
    BareCr,
    #[error("request line is not 'Method SP Request-URI SP SIP/2.0'")]
    BadRequestLine,
    #[error("method is not a token")]
    BadMethod,
    #[error("Request-URI: {0}")]
    BadRequestUri(UriError),
    #[error("SIP version is not SIP/2.0")]
    BadVersion,
    #[error("status line is not 'SIP/2.0 SP code SP reason'")]
    BadStatusLine,
    #[error("status code is not three digits in 100-699")]
    BadStatusCode,
    #[error("header line has no ':'")]
    MissingColon,
    #[error("header name is not a token")]
    BadHeaderName,
    #[error("continuation line before any header")]
    FoldWithoutHeader,
    #[error("Content-Length is not a decimal number")]
    BadContentLength,
    #[error("several Content-Length headers disagree")]
    ConflictingContentLength,
    #[error("Content-Length {declared} but only {available} body bytes")]
    BodyTruncated { declared: usize, available: usize },
}

/// Compact forms (RFC 3261 7.3.3 and the extensions that define one).
const COMPACT: [(&str, &str); 15] = [
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("u", "Allow-Events"),
    ("x", "Session-Expires"),
];

/// The long form of a header name (`v` -> `Via`); other names unchanged.
pub fn long_name(name: &str) -> &str {
    // Every lookup comes through here: only one-letter names can be compact.
    if name.len() != 1 {
        return name;
    }
    COMPACT.iter().find(|(short, _)| short.eq_ignore_ascii_case(name)).map_or(name, |(_, long)| long)
}

/// Whether two header names denote the same header: case-insensitive, with
/// compact forms expanded.
pub fn same_name(a: &str, b: &str) -> bool {
    long_name(a).eq_ignore_ascii_case(long_name(b))
}

/// Header fields in message order, names as written, values unfolded and
/// trimmed. Lookups ignore case and compact forms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The first field of that name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| same_name(n, name)).map(|(_, v)| v.as_str())
    }

    /// Every field of that name, in order. A field may itself hold a
    /// comma-separated list (Via, Contact...); see [`header::split_list`].
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.0.iter().filter(move |(n, _)| same_name(n, name)).map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every field of that name by one, at the place of the first
    /// (or at the end if there was none).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter().position(|(n, _)| same_name(n, &name)) {
            Some(at) => {
                let mut index = 0;
                self.0.retain(|(n, _)| {
                    let keep = index <= at || !same_name(n, &name);
                    index += 1;
                    keep
                });
                if let Some(slot) = self.0.get_mut(at) {
                    *slot = (name, value);
                }
            }
            None => self.0.push((name, value)),
        }
    }

    /// Removes every field of that name.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !same_name(n, name));
    }

    /// Inserts a field before all others (a proxy adding its Via).
    pub fn push_front(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(0, (name.into(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The only field of that name: a second one is an error for headers
    /// that hold a single value (RFC 4475 multi01).
    fn single(&self, name: &'static str) -> Result<&str, HeaderError> {
        let mut all = self.get_all(name);
        let first = all.next().ok_or(HeaderError::Missing(name))?;
        if all.next().is_some() {
            return Err(HeaderError::Duplicate(name));
        }
        Ok(first)
    }

    /// Every Via value of every Via field, top first.
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        let mut vias = Vec::new();
        for field in self.get_all("Via") {
            for via in Via::parse_list(field)? {
                if vias.len() == MAX_LIST {
                    return Err(HeaderError::TooMany("Via"));
                }
                vias.push(via);
            }
        }
        Ok(vias)
    }

    /// The topmost Via, parsing no more than it needs.
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let field = self.get("Via").ok_or(HeaderError::Missing("Via"))?;
        let first = header::split_list(field)?.into_iter().next().ok_or(HeaderError::Empty)?;
        Via::parse(first)
    }

    pub fn from(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.single("From")?)
    }

    pub fn to(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.single("To")?)
    }

    pub fn call_id(&self) -> Result<&str, HeaderError> {
        let call_id = self.single("Call-ID")?;
        if call_id.is_empty() || call_id.contains([' ', '\t']) {
            return Err(HeaderError::BadCallId);
        }
        Ok(call_id)
    }

    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.single("CSeq")?)
    }

    /// All Contact fields merged; `*` must stand alone (RFC 3261 10.2.2).
    pub fn contact(&self) -> Result<Option<Contact>, HeaderError> {
        let mut merged: Option<Contact> = None;
        for field in self.get_all("Contact") {
            merged = Some(match (merged, Contact::parse(field)?) {
                (None, contact) => contact,
                (Some(Contact::Addrs(mut a)), Contact::Addrs(b)) => {
                    if a.len() + b.len() > MAX_LIST {
                        return Err(HeaderError::TooMany("Contact"));
                    }
                    a.extend(b);
                    Contact::Addrs(a)
                }
                _ => return Err(HeaderError::Duplicate("Contact")),
            });
        }
        Ok(merged)
    }

    /// Expires as delta-seconds; `None` when absent or malformed.
    pub fn expires(&self) -> Option<u32> {
        self.single("Expires").ok().and_then(header::parse_decimal)
    }

    /// `None` when absent or malformed; the range 0-255 is checked by
    /// [`Request::validate_mandatory`].
    pub fn max_forwards(&self) -> Option<u32> {
        self.single("Max-Forwards").ok().and_then(header::parse_decimal)
    }

    /// The media type (`application/sdp`) without parameters; the full value
    /// is `get("Content-Type")`.
    pub fn content_type(&self) -> Option<&str> {
        let value = self.get("Content-Type")?;
        Some(value.split(';').next().unwrap_or(value).trim())
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// One parsed datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Typed accessors shared by requests, responses and messages; each
/// forwards to the same method of [`Headers`].
macro_rules! header_accessors {
    ($t:ty) => {
        impl $t {
            pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
                self.headers().vias()
            }
            pub fn top_via(&self) -> Result<Via, HeaderError> {
                self.headers().top_via()
            }
            pub fn from(&self) -> Result<NameAddr, HeaderError> {
                self.headers().from()
            }
            pub fn to(&self) -> Result<NameAddr, HeaderError> {
                self.headers().to()
            }
            pub fn call_id(&self) -> Result<&str, HeaderError> {
                self.headers().call_id()
            }
            pub fn cseq(&self) -> Result<CSeq, HeaderError> {
                self.headers().cseq()
            }
            pub fn contact(&self) -> Result<Option<Contact>, HeaderError> {
                self.headers().contact()
            }
            pub fn expires(&self) -> Option<u32> {
                self.headers().expires()
            }
            pub fn max_forwards(&self) -> Option<u32> {
                self.headers().max_forwards()
            }
            pub fn content_type(&self) -> Option<&str> {
                self.headers().content_type()
            }
        }
    };
}

header_accessors!(Request);
header_accessors!(Response);
header_accessors!(Message);

/// What [`Request::validate_mandatory`] found wrong; the caller answers 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("{name}: {error}")]
    Header { name: &'static str, error: HeaderError },
    #[error("CSeq method {cseq} does not match request method {request}")]
    CSeqMethodMismatch { request: Method, cseq: Method },
    #[error("Max-Forwards is not a number in 0-255")]
    BadMaxForwards,
    /// RFC 3261 19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri).
    #[error("Request-URI carries header fields")]
    RequestUriHeaders,
}

impl InvalidRequest {
    /// A reason phrase for the 400 response that tells the sender what to fix.
    pub fn reason(&self) -> String {
        match self {
            InvalidRequest::Header { error: HeaderError::Missing(name), .. } => format!("Missing {name}"),
            InvalidRequest::Header { name, .. } => format!("Bad {name}"),
            InvalidRequest::CSeqMethodMismatch { .. } => "CSeq Method Mismatch".to_string(),
            InvalidRequest::BadMaxForwards => "Bad Max-Forwards".to_string(),
            InvalidRequest::RequestUriHeaders => "Bad Request-URI".to_string(),
        }
    }
}

/// The mandatory headers of a valid request (RFC 3261 8.1.1), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mandatory {
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: CSeq,
    pub top_via: Via,
    /// `None` when absent: RFC 2543 clients omit it and RFC 3261 8.2 lets a
    /// UAS accept that; a proxy would insert 70.
    pub max_forwards: Option<u8>,
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request { method, uri, headers: Headers::new(), body: Vec::new() }
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Checks To, From, Call-ID, CSeq (whose method must be the request's),
    /// Via and, if present, Max-Forwards, each parsed and single where RFC 3261
    /// allows only one.
    pub fn validate_mandatory(&self) -> Result<Mandatory, InvalidRequest> {
        let wrap = |name: &'static str| move |error| InvalidRequest::Header { name, error };
        let to = self.headers.to().map_err(wrap("To"))?;
        let from = self.headers.from().map_err(wrap("From"))?;
        let call_id = self.headers.call_id().map_err(wrap("Call-ID"))?.to_string();
        let cseq = self.headers.cseq().map_err(wrap("CSeq"))?;
        let vias = self.headers.vias().map_err(wrap("Via"))?;
        let top_via = vias
            .into_iter()
            .next()
            .ok_or(InvalidRequest::Header { name: "Via", error: HeaderError::Missing("Via") })?;
        let max_forwards = match self.headers.get_all("Max-Forwards").count() {
            0 => None,
            1 => Some(
                self.headers.max_forwards().and_then(|n| u8::try_from(n).ok()).ok_or(InvalidRequest::BadMaxForwards)?,
            ),
            _ => {
                return Err(InvalidRequest::Header {
                    name: "Max-Forwards",
                    error: HeaderError::Duplicate("Max-Forwards"),
                })
            }
        };
        if cseq.method != self.method {
            return Err(InvalidRequest::CSeqMethodMismatch { request: self.method.clone(), cseq: cseq.method });
        }
        if self.uri.headers.is_some() {
            return Err(InvalidRequest::RequestUriHeaders);
        }
        Ok(Mandatory { from, to, call_id, cseq, top_via, max_forwards })
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(&format!("{} {} SIP/2.0", self.method, self.uri), &self.headers, &self.body)
    }
}

impl Response {
    pub fn new(status: u16, reason: impl Into<String>) -> Response {
        Response { status, reason: reason.into(), headers: Headers::new(), body: Vec::new() }
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// A response to `req` carrying the headers RFC 3261 8.2.6 says to copy:
    /// every Via in order, From, To, Call-ID, CSeq, and Timestamp for 100.
    /// Adding a To tag is left to the caller, which owns the randomness.
    pub fn to_request(req: &Request, status: u16, reason: &str) -> Response {
        let mut response = Response::new(status, reason);
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for value in req.headers.get_all(name) {
                response.headers.push(name, value);
            }
        }
        if status == 100 {
            if let Some(timestamp) = req.headers.get("Timestamp") {
                response.headers.push("Timestamp", timestamp);
            }
        }
        response
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(&format!("SIP/2.0 {:03} {}", self.status, self.reason), &self.headers, &self.body)
    }
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// Parses one datagram. Leading CRLFs are skipped; bytes after the body
    /// that Content-Length declares are ignored; without Content-Length the
    /// body is the rest of the datagram (RFC 3261 18.3).
    pub fn parse(datagram: &[u8]) -> Result<Message, ParseError> {
        if datagram.is_empty() {
            return Err(ParseError::Empty);
        }
        if datagram.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge(datagram.len()));
        }
        let start = datagram.iter().position(|b| *b != b'\r' && *b != b'\n').ok_or(ParseError::Keepalive)?;
        let mut lines = Lines { rest: datagram.get(start..).unwrap_or_default() };
        let start_line = lines.next_line()?;
        let mut headers = Headers::new();
        let mut current: Option<Vec<u8>> = None;
        loop {
            let line = lines.next_line()?;
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                // Folded continuation (RFC 3261 7.3.1): one SP replaces CRLF and WS.
                let field = current.as_mut().ok_or(ParseError::FoldWithoutHeader)?;
                let tail = trim_bytes(line);
                if field.len() + 1 + tail.len() > MAX_LINE {
                    return Err(ParseError::LineTooLong);
                }
                field.push(b' ');
                field.extend_from_slice(tail);
                continue;
            }
            if let Some(field) = current.take() {
                if headers.len() == MAX_HEADERS {
                    return Err(ParseError::TooManyHeaders);
                }
                let (name, value) = split_field(&field)?;
                headers.push(name, value);
            }
            if line.is_empty() {
                break;
            }
            current = Some(line.to_vec());
        }
        let body = take_body(&headers, lines.rest)?;
        if start_line.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
            // The reason phrase is free text; a non-UTF-8 one is no reason to drop the response.
            let (status, reason) = parse_status_line(&String::from_utf8_lossy(start_line))?;
            Ok(Message::Response(Response { status, reason, headers, body }))
        } else {
            let line = std::str::from_utf8(start_line).map_err(|_| ParseError::BadRequestLine)?;
            let (method, uri) = parse_request_line(line)?;
            Ok(Message::Request(Request { method, uri, headers, body }))
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.encode(),
            Message::Response(r) => r.encode(),
        }
    }
}

impl fmt::Display for Message {
    /// The message as text, for logs (a binary body is shown lossily).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.encode()))
    }
}

/// Reads lines ending in CRLF (or a bare LF, which some senders use).
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Result<&'a [u8], ParseError> {
        let end = self.rest.iter().position(|b| *b == b'\n').ok_or(ParseError::Unterminated)?;
        let line = self.rest.get(..end).unwrap_or_default();
        self.rest = self.rest.get(end + 1..).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            return Err(ParseError::LineTooLong);
        }
        if line.contains(&b'\r') {
            return Err(ParseError::BareCr);
        }
        Ok(line)
    }
}

fn trim_bytes(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `name SWS ":" value`; the value is decoded lossily (RFC 3261 wants UTF-8,
/// but a stray Latin-1 display name should not cost the whole message).
fn split_field(field: &[u8]) -> Result<(String, String), ParseError> {
    let colon = field.iter().position(|b| *b == b':').ok_or(ParseError::MissingColon)?;
    let name = trim_bytes(field.get(..colon).unwrap_or_default());
    if name.is_empty() || !name.iter().all(|b| header::is_token_char(*b)) {
        return Err(ParseError::BadHeaderName);
    }
    let value = trim_bytes(field.get(colon + 1..).unwrap_or_default());
    // Token characters are ASCII, so the name is valid UTF-8.
    Ok((String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned()))
}

fn take_body(headers: &Headers, rest: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut declared: Option<usize> = None;
    for value in headers.get_all("Content-Length") {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadContentLength);
        }
        // Leading zeros are legal; anything longer than MAX_MESSAGE's digits is not.
        let significant = value.trim_start_matches('0');
        if significant.len() > 5 {
            return Err(ParseError::BadContentLength);
        }
        let length = if significant.is_empty() {
            0
        } else {
            significant.parse::<usize>().map_err(|_| ParseError::BadContentLength)?
        };
        if declared.is_some_and(|d| d != length) {
            return Err(ParseError::ConflictingContentLength);
        }
        declared = Some(length);
    }
    match declared {
        None => Ok(rest.to_vec()),
        Some(length) => match rest.get(..length) {
            Some(body) => Ok(body.to_vec()),
            None => Err(ParseError::BodyTruncated { declared: length, available: rest.len() }),
        },
    }
}

/// `Method SP Request-URI SP SIP-Version`, exactly one SP each (RFC 4475
/// lwsstart, trws and lwsruri are malformed).
fn parse_request_line(line: &str) -> Result<(Method, Uri), ParseError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::BadRequestLine);
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::BadVersion);
    }
    let method = method.parse::<Method>().map_err(|_| ParseError::BadMethod)?;
    let uri = Uri::parse(uri).map_err(ParseError::BadRequestUri)?;
    Ok((method, uri))
}

/// `SIP/2.0 SP 3DIGIT SP Reason-Phrase`; the reason may be empty and the
/// SP before it missing (RFC 4475 noreason).
fn parse_status_line(line: &str) -> Result<(u16, String), ParseError> {
    let (version, rest) = line.split_once(' ').ok_or(ParseError::BadStatusLine)?;
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::BadVersion);
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadStatusCode);
    }
    let status = code.parse::<u16>().map_err(|_| ParseError::BadStatusCode)?;
    if !(100..=699).contains(&status) {
        return Err(ParseError::BadStatusCode);
    }
    Ok((status, reason.to_string()))
}

/// Writes start line, headers in order with exactly one correct
/// Content-Length (at the place of the first one, else last), and the body.
/// CR and LF inside names or values would let a value forge headers, so they
/// are written as spaces.
fn encode(start_line: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    push_clean(&mut out, start_line);
    out.extend_from_slice(b"\r\n");
    let mut wrote_length = false;
    for (name, value) in headers.iter() {
        if same_name(name, "Content-Length") {
            if wrote_length {
                continue;
            }
            wrote_length = true;
            push_clean(&mut out, name);
            out.extend_from_slice(format!(": {}\r\n", body.len()).as_bytes());
            continue;
        }
        push_clean(&mut out, name);
        out.extend_from_slice(b": ");
        push_clean(&mut out, value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn push_clean(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
}

/// The RFC 3261 (and common extension) reason phrase for a status code, or
/// a generic one for its class.
pub fn reason_phrase(status: u16) -> &'static str {
    known_reason(status).unwrap_or(match status / 100 {
        1 => "Progress",
        2 => "Success",
        3 => "Redirection",
        4 => "Client Error",
        5 => "Server Error",
        _ => "Global Failure",
    })
}

fn known_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::tests::{arb_name_addr, arb_via};
    use crate::sip::uri::tests::arb_uri;
    use proptest::prelude::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn request(bytes: &[u8]) -> Request {
        match Message::parse(bytes) {
            Ok(Message::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_plain_invite() {
        let r = request(INVITE);
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.host, "biloxi.example.com");
        assert_eq!(r.body, b"v=0\n");
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(r.to().unwrap().display.as_deref(), Some("Bob"));
        assert_eq!(r.call_id(), Ok("a84b4c76e66710@pc33.atlanta.example.com"));
        assert_eq!(r.cseq().unwrap().seq, 314159);
        assert_eq!(r.max_forwards(), Some(70));
        assert_eq!(r.content_type(), Some("application/sdp"));
        assert!(matches!(r.contact(), Ok(Some(Contact::Addrs(a))) if a.len() == 1));
        let mandatory = r.validate_mandatory().unwrap();
        assert_eq!(mandatory.max_forwards, Some(70));
        assert_eq!(Message::parse(&r.encode()), Ok(Message::Request(r)));
    }

    #[test]
    fn compact_names_folding_and_lookup() {
        let r = request(
            b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h1;branch=z9hG4bK1,\r\n SIP/2.0/UDP h2\r\n\
i: x@y\r\nVIA: SIP/2.0/TCP h3\r\nSubject:\r\n\t folded  \r\nl: 0\r\n\r\n",
        );
        assert_eq!(r.headers.get("call-id"), Some("x@y"));
        assert_eq!(r.headers.get("Subject"), Some("folded"));
        assert_eq!(r.headers.get_all("via").count(), 2);
        let vias = r.vias().unwrap();
        assert_eq!(vias.iter().map(|v| v.host.as_str()).collect::<Vec<_>>(), ["h1", "h2", "h3"]);
        assert_eq!(r.headers.get("v"), Some("SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/UDP h2"));
    }

    #[test]
    fn headers_edit() {
        let mut h = Headers::new();
        h.push("Via", "a");
        h.push("To", "t");
        h.push("v", "b");
        h.set("VIA", "c");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("VIA", "c"), ("To", "t")]);
        h.push_front("Via", "z");
        h.remove("via");
        assert_eq!(h.len(), 1);
        h.set("Max-Forwards", "70");
        assert_eq!(h.get("max-forwards"), Some("70"));
    }

    #[test]
    fn framing_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Empty),
            (b"\r\n\r\n", ParseError::Keepalive),
            (b"\r\n", ParseError::Keepalive),
            (b"OPTIONS sip:a@b SIP/2.0\r\nTo: x\r\n", ParseError::Unterminated),
            (b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\n\r\n", ParseError::FoldWithoutHeader),
            (b"OPTIONS sip:a@b SIP/2.0\r\nNoColon\r\n\r\n", ParseError::MissingColon),
            (b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", ParseError::BadHeaderName),
            (b"OPTIONS sip:a@b SIP/2.0\r\nTo: a\rb\r\n\r\n", ParseError::BareCr),
            (b"OPTIONS sip:a@b SIP/2.0\r\nl: -1\r\n\r\n", ParseError::BadContentLength),
            (b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999\r\n\r\n", ParseError::BadContentLength),
            (
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 0000000000003\r\n\r\nab",
                ParseError::BodyTruncated { declared: 3, available: 2 },
            ),
            (b"OPTIONS sip:a@b SIP/2.0\r\nl: 1 2\r\n\r\nab", ParseError::BadContentLength),
            (b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab", ParseError::ConflictingContentLength),
            (b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nab", ParseError::BodyTruncated { declared: 3, available: 2 }),
            (b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n", ParseError::BadRequestLine),
            (b"OPTIONS sip:a@b SIP/2.0 \r\n\r\n", ParseError::BadRequestLine),
            (b"OPTIONS sip:a@b SIP/3.0\r\n\r\n", ParseError::BadVersion),
            (b"OPT<IONS sip:a@b SIP/2.0\r\n\r\n", ParseError::BadMethod),
            (b"OPTIONS <sip:a@b> SIP/2.0\r\n\r\n", ParseError::BadRequestUri(UriError::BadScheme)),
            (b"SIP/2.0 99 Low\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0 700 High\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0 2000 OK\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0\r\n\r\n", ParseError::BadStatusLine),
            (b"SIP/1.0 200 OK\r\n\r\n", ParseError::BadVersion),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Message::parse(bytes).as_ref().err(), Some(expected), "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn limits() {
        let big = vec![b'a'; MAX_MESSAGE + 1];
        assert_eq!(Message::parse(&big), Err(ParseError::TooLarge(MAX_MESSAGE + 1)));
        let mut many = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(Message::parse(&many), Err(ParseError::TooManyHeaders));
        let long = format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n\r\n", "y".repeat(MAX_LINE));
        assert_eq!(Message::parse(long.as_bytes()), Err(ParseError::LineTooLong));
        let folded = format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}\r\n {}\r\n\r\n", "y".repeat(5000), "z".repeat(5000));
        assert_eq!(Message::parse(folded.as_bytes()), Err(ParseError::LineTooLong));
        let vias = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "Via: SIP/2.0/UDP h\r\n".repeat(MAX_LIST + 1));
        assert_eq!(request(vias.as_bytes()).vias(), Err(HeaderError::TooMany("Via")));
    }

    #[test]
    fn body_rules() {
        let r = request(b"\r\n\r\nMESSAGE sip:a@b SIP/2.0\r\n\r\nrest of datagram");
        assert_eq!(r.body, b"rest of datagram");
        let r = request(b"MESSAGE sip:a@b SIP/2.0\nl: 4\n\nbodyEXTRA");
        assert_eq!(r.body, b"body");
        let encoded = String::from_utf8(r.encode()).unwrap();
        assert_eq!(encoded, "MESSAGE sip:a@b SIP/2.0\r\nl: 4\r\n\r\nbody");
    }

    #[test]
    fn response_line_and_to_request() {
        let resp = match Message::parse(b"SIP/2.0 100 \r\nl: 0\r\n\r\n") {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!((resp.status, resp.reason.as_str()), (100, ""));
        let mut req = request(INVITE);
        req.headers.push("Via", "SIP/2.0/UDP second.example.com");
        req.headers.push("Timestamp", "54");
        let trying = Response::to_request(&req, 100, reason_phrase(100));
        assert_eq!(trying.vias().unwrap().len(), 2);
        assert_eq!(trying.headers.get("Timestamp"), Some("54"));
        assert_eq!(trying.from(), req.from());
        assert_eq!(trying.to(), req.to());
        assert_eq!(trying.cseq(), req.cseq());
        assert_eq!(trying.call_id(), req.call_id());
        assert!(Response::to_request(&req, 180, "Ringing").headers.get("Timestamp").is_none());
        let text = String::from_utf8(trying.encode()).unwrap();
        assert!(text.starts_with("SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP pc33"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }

    #[test]
    fn validate_mandatory_errors() {
        let base = String::from_utf8(INVITE.to_vec()).unwrap();
        let without = |name: &str| {
            let mut r = request(base.as_bytes());
            r.headers.remove(name);
            r.validate_mandatory()
        };
        for name in ["To", "From", "Call-ID", "CSeq", "Via"] {
            assert!(
                matches!(without(name), Err(InvalidRequest::Header { error: HeaderError::Missing(_), .. })),
                "{name}"
            );
        }
        assert_eq!(without("Max-Forwards").map(|m| m.max_forwards), Ok(None));
        let mut r = request(INVITE);
        r.headers.set("Max-Forwards", "256");
        assert_eq!(r.validate_mandatory(), Err(InvalidRequest::BadMaxForwards));
        let mut r = request(INVITE);
        r.headers.set("CSeq", "1 BYE");
        assert!(matches!(r.validate_mandatory(), Err(InvalidRequest::CSeqMethodMismatch { .. })));
        let mut r = request(INVITE);
        r.headers.push("To", "sip:other@example.com");
        assert_eq!(
            r.validate_mandatory(),
            Err(InvalidRequest::Header { name: "To", error: HeaderError::Duplicate("To") })
        );
        assert_eq!(InvalidRequest::BadMaxForwards.reason(), "Bad Max-Forwards");
    }

    #[test]
    fn encode_never_lets_a_value_forge_a_header() {
        let mut r = Request::new(Method::Options, Uri::sip(Some("a"), "b"));
        r.headers.push("Subject", "hi\r\nVia: SIP/2.0/UDP evil");
        r.headers.push("Content-Length", "999");
        r.headers.push("l", "5");
        let parsed = request(&r.encode());
        assert_eq!(parsed.headers.get_all("Via").count(), 0);
        assert_eq!(parsed.headers.get_all("Content-Length").collect::<Vec<_>>(), ["0"]);
        assert_eq!(reason_phrase(486), "Busy Here");
        assert_eq!(reason_phrase(499), "Client Error");
    }

    fn arb_header() -> impl Strategy<Value = (String, String)> {
        ("[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,15}", prop_oneof!["", "[!-~]([ -~\u{e9}\u{4e2d}]{0,30}[!-~])?"])
            .prop_filter("encode rewrites Content-Length", |(n, _)| !same_name(n, "Content-Length"))
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let method = "[A-Z]{3,9}|!interesting-Method0123456789_*+`.%indeed'~"
            .prop_map(|m| m.parse::<Method>().unwrap_or(Method::Options));
        let headers = || {
            (
                proptest::collection::vec(arb_header(), 0..12),
                proptest::collection::vec(arb_via(), 0..3),
                arb_name_addr(),
            )
                .prop_map(|(extra, vias, to)| {
                    let mut h = Headers::new();
                    for via in vias {
                        h.push("Via", via.to_string());
                    }
                    h.push("To", to.to_string());
                    for (n, v) in extra {
                        h.push(n, v);
                    }
                    h
                })
        };
        let body = || proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            (method, arb_uri(), headers(), body()).prop_map(|(method, uri, headers, body)| Message::Request(Request {
                method,
                uri,
                headers,
                body
            })),
            (100u16..700, "([!-~][ -~]{0,20})?", headers(), body()).prop_map(|(status, reason, headers, body)| {
                Message::Response(Response { status, reason, headers, body })
            }),
        ]
    }

    /// Runs every typed accessor, so fuzzing reaches the header parsers too.
    fn exercise(message: &Message) {
        let _ = message.vias();
        let _ = message.top_via();
        let _ = message.from();
        let _ = message.to();
        let _ = message.call_id();
        let _ = message.cseq();
        let _ = message.contact();
        let _ = message.expires();
        let _ = message.max_forwards();
        let _ = message.content_type();
        let _ = message.to_string();
        if let Message::Request(r) = message {
            let _ = r.validate_mandatory();
            let _ = Response::to_request(r, 400, "Bad Request").encode();
        }
        let _ = crate::sip::sdp::SessionDescription::parse(message.body());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(message) = Message::parse(&bytes) {
                exercise(&message);
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8),
        ) {
            let mut bytes = INVITE.to_vec();
            for (at, kind, byte) in edits {
                let i = at.index(bytes.len().max(1));
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i.min(bytes.len()), byte),
                    2 if i < bytes.len() => { bytes.remove(i); }
                    _ => bytes.truncate(i),
                }
            }
            if let Ok(message) = Message::parse(&bytes) {
                exercise(&message);
            }
        }

        #[test]
        fn sip_shaped_lines_never_panic(
            lines in proptest::collection::vec("[A-Za-z:;,<>\"\\\\ \t=@/.0-9-]{0,40}", 0..10),
        ) {
            let text = format!("INVITE sip:a@b SIP/2.0\r\n{}\r\n\r\n", lines.join("\r\n"));
            if let Ok(message) = Message::parse(text.as_bytes()) {
                exercise(&message);
            }
        }

        #[test]
        fn parse_encode_round_trips(message in arb_message()) {
            let bytes = message.encode();
            let mut expected = message.clone();
            let length = expected.body().len().to_string();
            expected.headers_mut().set("Content-Length", length);
            prop_assert_eq!(Message::parse(&bytes), Ok(expected), "{}", String::from_utf8_lossy(&bytes));
        }
    }
}
