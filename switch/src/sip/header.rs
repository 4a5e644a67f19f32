//! Typed SIP header values (RFC 3261 section 20 and the grammar in 25.1):
//! Via, name-addr (From, To, Contact, Route...), Contact, CSeq, Method and
//! SIP-date, plus the list splitting and parameter grammar they share.
//!
//! The message layer keeps header values as text; these types are parsed on
//! demand, so a damaged header only fails the code that needs it and the
//! caller can still answer with 400 Bad Request.

use std::fmt;
use std::str::FromStr;

use super::uri::{self, Params, Uri, UriError, MAX_PARAMS};

/// Most elements accepted in one comma-separated header list (Via, Contact...).
pub const MAX_LIST: usize = 64;

/// Why a header value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    #[error("more than {MAX_LIST} {0} values")]
    TooMany(&'static str),
    #[error("empty header value")]
    Empty,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("'<' without matching '>'")]
    UnclosedAngle,
    #[error("display name is neither tokens nor a quoted string")]
    BadDisplayName,
    #[error("an address with ',', '?' or ';' in its URI must be enclosed in <>")]
    BadAddrSpec,
    #[error("URI: {0}")]
    Uri(#[from] UriError),
    #[error("parameter has an empty name")]
    EmptyParamName,
    #[error("malformed parameter list")]
    BadParams,
    #[error("more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("Via is not SIP/2.0/transport sent-by")]
    BadVia,
    #[error("Via {0} parameter is malformed")]
    BadViaParam(&'static str),
    #[error("CSeq is not a 32-bit sequence number and a method")]
    BadCSeq,
    #[error("method is not a token")]
    BadMethod,
    #[error("value is not a number in range")]
    BadNumber,
    #[error("Call-ID is empty or holds whitespace")]
    BadCallId,
    #[error("Date is not an RFC 1123 date in GMT")]
    BadDate,
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits a header value at top-level commas: commas inside quoted strings
/// and inside `<...>` do not separate list elements. Elements are trimmed;
/// empty ones are kept so typed parsers can reject them.
pub fn split_list(s: &str) -> Result<Vec<&str>, HeaderError> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut in_angle = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if !in_angle => in_quote = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            ',' if !in_angle => {
                if parts.len() == MAX_LIST {
                    return Err(HeaderError::TooMany("list"));
                }
                parts.push(s.get(start..i).unwrap_or("").trim_matches(is_ws));
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quote {
        return Err(HeaderError::UnterminatedQuote);
    }
    if in_angle {
        return Err(HeaderError::UnclosedAngle);
    }
    if parts.len() == MAX_LIST {
        return Err(HeaderError::TooMany("list"));
    }
    parts.push(s.get(start..).unwrap_or("").trim_matches(is_ws));
    Ok(parts)
}

/// Splits `"..."rest` into the quoted string (with its quotes) and the rest.
fn take_quoted(s: &str) -> Result<(&str, &str), HeaderError> {
    let mut chars = s.char_indices();
    if !matches!(chars.next(), Some((_, '"'))) {
        return Err(HeaderError::UnterminatedQuote);
    }
    let mut escaped = false;
    for (i, c) in chars {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                let end = i + 1;
                return Ok((s.get(..end).unwrap_or(""), s.get(end..).unwrap_or("")));
            }
            _ => {}
        }
    }
    Err(HeaderError::UnterminatedQuote)
}

/// The content of a quoted string with quoted-pairs resolved.
fn unquote(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(quoted);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// Writes `s` as a quoted string. CR and LF cannot be quoted (RFC 3261
/// quoted-pair excludes them) and would split the header, so they become
/// spaces; other control characters are escaped.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '\r' | '\n' => f.write_str(" ")?,
            '"' | '\\' => write!(f, "\\{c}")?,
            '\t' => f.write_str("\t")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\{c}")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// Header parameters: `*( SWS ";" SWS name [ SWS "=" SWS value ] )`, where a
/// value is a token, a host, or a quoted string kept with its quotes.
pub fn parse_params(s: &str) -> Result<Params, HeaderError> {
    let mut params = Params::new();
    let mut rest = s.trim_start_matches(is_ws);
    while !rest.is_empty() {
        rest = rest.strip_prefix(';').ok_or(HeaderError::BadParams)?.trim_start_matches(is_ws);
        if params.len() == MAX_PARAMS {
            return Err(HeaderError::TooManyParams);
        }
        let name_len = rest.bytes().take_while(|&b| is_token_char(b)).count();
        let name = rest.get(..name_len).unwrap_or("");
        if name.is_empty() {
            return Err(HeaderError::EmptyParamName);
        }
        rest = rest.get(name_len..).unwrap_or("").trim_start_matches(is_ws);
        let value = match rest.strip_prefix('=') {
            None => None,
            Some(after) => {
                let after = after.trim_start_matches(is_ws);
                let (value, tail) = if after.starts_with('"') {
                    take_quoted(after)?
                } else {
                    let len = after.bytes().take_while(|&b| is_token_char(b) || b"[]:".contains(&b)).count();
                    (after.get(..len).unwrap_or(""), after.get(len..).unwrap_or(""))
                };
                if value.is_empty() {
                    return Err(HeaderError::BadParams);
                }
                rest = tail.trim_start_matches(is_ws);
                Some(value.to_string())
            }
        };
        params.push(name, value);
    }
    Ok(params)
}

/// SIP methods. Names are case-sensitive (RFC 3261 7.1): `invite` is an
/// extension method, not INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Info,
    Message,
    Subscribe,
    Notify,
    Refer,
    Update,
    Prack,
    Publish,
    /// Any other token, as written.
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Register => "REGISTER",
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Message => "MESSAGE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl FromStr for Method {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Method, HeaderError> {
        Ok(match s {
            "REGISTER" => Method::Register,
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "MESSAGE" => Method::Message,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "PUBLISH" => Method::Publish,
            _ if is_token(s) => Method::Other(s.to_string()),
            _ => return Err(HeaderError::BadMethod),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CSeq: 4711 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<CSeq, HeaderError> {
        let mut words = s.split(is_ws).filter(|w| !w.is_empty());
        let (Some(seq), Some(method), None) = (words.next(), words.next(), words.next()) else {
            return Err(HeaderError::BadCSeq);
        };
        Ok(CSeq { seq: parse_decimal(seq).ok_or(HeaderError::BadCSeq)?, method: method.parse()? })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Digits only (no sign, no spaces), fitting in a u32; leading zeros are fine.
pub fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// As written (`UDP`, `TCP`, `TLS`, ...); compare case-insensitively.
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// One Via value (no commas); see [`Via::parse_list`] for a header field.
    pub fn parse(s: &str) -> Result<Via, HeaderError> {
        let s = s.trim_matches(is_ws);
        if s.is_empty() {
            return Err(HeaderError::Empty);
        }
        // sent-protocol allows LWS around each '/' (RFC 4475 wsinv).
        let (protocol, rest) = take_token(s);
        let rest = expect_slash(rest)?;
        let (version, rest) = take_token(rest);
        let rest = expect_slash(rest)?;
        let (transport, rest) = take_token(rest);
        if !protocol.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return Err(HeaderError::BadVia);
        }
        let sent_by_start = rest.trim_start_matches(is_ws);
        if sent_by_start.len() == rest.len() {
            return Err(HeaderError::BadVia);
        }
        let len = sent_by_start.bytes().take_while(|&b| b != b';' && b != b' ' && b != b'\t').count();
        let sent_by = sent_by_start.get(..len).unwrap_or("");
        let (host, port) = uri::parse_host_port(sent_by).map_err(|_| HeaderError::BadVia)?;
        let params = parse_params(sent_by_start.get(len..).unwrap_or(""))?;
        let via = Via { transport: transport.to_string(), host, port, params };
        via.check_params()?;
        Ok(via)
    }

    /// Every value of one Via header field, in order.
    pub fn parse_list(s: &str) -> Result<Vec<Via>, HeaderError> {
        split_list(s)
            .map_err(|e| if let HeaderError::TooMany(_) = e { HeaderError::TooMany("Via") } else { e })?
            .into_iter()
            .map(Via::parse)
            .collect()
    }

    fn check_params(&self) -> Result<(), HeaderError> {
        if let Some(Some(rport)) = self.params.get("rport") {
            uri::parse_port(rport).ok_or(HeaderError::BadViaParam("rport"))?;
        }
        if let Some(received) = self.params.get("received") {
            let received = received.ok_or(HeaderError::BadViaParam("received"))?;
            received.parse::<std::net::IpAddr>().map_err(|_| HeaderError::BadViaParam("received"))?;
        }
        if let Some(branch) = self.params.get("branch") {
            if !branch.is_some_and(is_token) {
                return Err(HeaderError::BadViaParam("branch"));
            }
        }
        Ok(())
    }

    /// The transaction identifier; RFC 3261 branches start with `z9hG4bK`.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }

    /// RFC 3581: `None` absent, `Some(None)` requested (`;rport`),
    /// `Some(Some(port))` filled in by the server.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| v.and_then(uri::parse_port))
    }

    pub fn sent_by(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)
    }
}

fn take_token(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(is_ws);
    let len = s.bytes().take_while(|&b| is_token_char(b)).count();
    (s.get(..len).unwrap_or(""), s.get(len..).unwrap_or(""))
}

fn expect_slash(s: &str) -> Result<&str, HeaderError> {
    s.trim_start_matches(is_ws).strip_prefix('/').ok_or(HeaderError::BadVia)
}

/// `"Display" <uri>;params` or a bare `uri;params` (From, To, Contact,
/// Route, Refer-To...). In the bare form the parameters belong to the
/// header, not the URI (RFC 3261 20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Unquoted, with quoted-pairs resolved.
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr { display: None, uri, params: Params::new() }
    }

    pub fn parse(s: &str) -> Result<NameAddr, HeaderError> {
        let s = s.trim_matches(is_ws);
        if s.is_empty() {
            return Err(HeaderError::Empty);
        }
        let (display, angled) = if s.starts_with('"') {
            let (quoted, rest) = take_quoted(s)?;
            let rest = rest.trim_start_matches(is_ws);
            if !rest.starts_with('<') {
                return Err(HeaderError::BadDisplayName);
            }
            (Some(unquote(quoted)), Some(rest))
        } else if let Some((before, _)) = s.split_once('<') {
            let words: Vec<&str> = before.split(is_ws).filter(|w| !w.is_empty()).collect();
            if !words.iter().all(|w| is_token(w)) {
                return Err(HeaderError::BadDisplayName);
            }
            let display = if words.is_empty() { None } else { Some(words.join(" ")) };
            (display, s.get(before.len()..))
        } else {
            (None, None)
        };
        let (uri_text, rest) = match angled {
            Some(angled) => {
                let inner = angled.strip_prefix('<').ok_or(HeaderError::UnclosedAngle)?;
                inner.split_once('>').ok_or(HeaderError::UnclosedAngle)?
            }
            None => {
                let (uri_text, rest) = match s.find(';') {
                    Some(at) => (s.get(..at).unwrap_or(""), s.get(at..).unwrap_or("")),
                    None => (s, ""),
                };
                let uri_text = uri_text.trim_end_matches(is_ws);
                if uri_text.contains(['?', ',']) {
                    return Err(HeaderError::BadAddrSpec);
                }
                (uri_text, rest)
            }
        };
        Ok(NameAddr { display, uri: Uri::parse(uri_text)?, params: parse_params(rest)? })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    /// The Contact `expires` parameter; `None` when absent or not a valid
    /// delta-seconds (the registrar then falls back to the Expires header).
    pub fn expires(&self) -> Option<u32> {
        self.params.get("expires").flatten().and_then(parse_decimal)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = &self.display {
            write_quoted(f, display)?;
            f.write_str(" ")?;
        }
        // Always angle brackets: safe whatever the URI holds.
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// The Contact header: `*` (only in REGISTER, to remove all bindings) or
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    Star,
    Addrs(Vec<NameAddr>),
}

impl Contact {
    pub fn parse(s: &str) -> Result<Contact, HeaderError> {
        let s = s.trim_matches(is_ws);
        if s == "*" {
            return Ok(Contact::Star);
        }
        let parts =
            split_list(s)
                .map_err(|e| if let HeaderError::TooMany(_) = e { HeaderError::TooMany("Contact") } else { e })?;
        Ok(Contact::Addrs(parts.into_iter().map(NameAddr::parse).collect::<Result<_, _>>()?))
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contact::Star => f.write_str("*"),
            Contact::Addrs(addrs) => {
                for (i, addr) in addrs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{addr}")?;
                }
                Ok(())
            }
        }
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// The Date header: RFC 1123 date, always GMT (RFC 3261 20.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipDate {
    /// 0 = Monday, as written (not checked against the date).
    pub weekday: u8,
    pub day: u8,
    /// 1-12.
    pub month: u8,
    pub year: u16,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl SipDate {
    /// `Sat, 13 Nov 2010 23:29:00 GMT`.
    pub fn parse(s: &str) -> Result<SipDate, HeaderError> {
        let mut words = s.split(is_ws).filter(|w| !w.is_empty());
        let mut next = || words.next().ok_or(HeaderError::BadDate);
        let weekday = next()?.strip_suffix(',').ok_or(HeaderError::BadDate)?;
        let (day, month, year, time, zone) = (next()?, next()?, next()?, next()?, next()?);
        if next().is_ok() || zone != "GMT" || day.len() != 2 || year.len() != 4 {
            return Err(HeaderError::BadDate);
        }
        let position = |names: &[&str], word: &str| names.iter().position(|n| *n == word);
        let weekday = position(&WEEKDAYS, weekday).ok_or(HeaderError::BadDate)?;
        let month = position(&MONTHS, month).ok_or(HeaderError::BadDate)?;
        let number = |s: &str, max: u32| parse_decimal(s).filter(|n| *n <= max).ok_or(HeaderError::BadDate);
        let mut hms = time.split(':');
        let mut part = || {
            let p = hms.next().ok_or(HeaderError::BadDate)?;
            if p.len() != 2 {
                return Err(HeaderError::BadDate);
            }
            Ok(p)
        };
        let (hour, minute, second) = (part()?, part()?, part()?);
        if hms.next().is_some() {
            return Err(HeaderError::BadDate);
        }
        let day = number(day, 31)?;
        if day == 0 {
            return Err(HeaderError::BadDate);
        }
        Ok(SipDate {
            weekday: weekday as u8,
            day: day as u8,
            month: month as u8 + 1,
            year: number(year, 9999)? as u16,
            hour: number(hour, 23)? as u8,
            minute: number(minute, 59)? as u8,
            second: number(second, 60)? as u8,
        })
    }
}

impl fmt::Display for SipDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let weekday = WEEKDAYS.get(usize::from(self.weekday)).copied().unwrap_or("Mon");
        let month = MONTHS.get(usize::from(self.month).wrapping_sub(1)).copied().unwrap_or("Jan");
        write!(
            f,
            "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sip::uri::Scheme;
    use proptest::prelude::*;

    #[test]
    fn via_with_lws_everywhere() {
        let via = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.host, "192.0.2.2");
        assert_eq!(via.branch(), Some("390skdjuw"));
        let list =
            Via::parse_list("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].host, "spindle.example.com");
        assert_eq!(list[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(list[1].transport, "UDP");
        assert_eq!(list[1].branch(), Some("z9hG4bK30239"));
    }

    #[test]
    fn via_rport_received_ipv6() {
        let via = Via::parse("SIP/2.0/UDP [2001:db8::9]:5070;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(via.host, "[2001:db8::9]");
        assert_eq!(via.port, Some(5070));
        assert_eq!(via.rport(), Some(None));
        assert_eq!(via.received(), None);
        let via = Via::parse("SIP/2.0/UDP h;rport=5060;received=2001:db8::1").unwrap();
        assert_eq!(via.rport(), Some(Some(5060)));
        assert_eq!(via.received(), Some("2001:db8::1"));
        assert_eq!(via.to_string(), "SIP/2.0/UDP h;rport=5060;received=2001:db8::1");
    }

    #[test]
    fn via_rejects_damage() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/7.0/UDP host",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP host;rport=x",
            "SIP/2.0/UDP host;received=host.example.com",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host junk",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Via::parse_list("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        let many = vec!["SIP/2.0/UDP h"; MAX_LIST + 1].join(",");
        assert_eq!(Via::parse_list(&many), Err(HeaderError::TooMany("Via")));
    }

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ;  tag = 98asjd8"#).unwrap();
        assert_eq!(a.display.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(a.uri.user.as_deref(), Some("jdrosen"));
        assert_eq!(a.tag(), Some("98asjd8"));
        let b = NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(b.display, None);
        assert_eq!(b.tag(), Some("1918181833n"));
        assert!(b.uri.params.is_empty());
        let c = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(c.display.as_deref(), Some("caller"));
        let d = NameAddr::parse("<sip:u@h;lr>;expires=60").unwrap();
        assert!(d.uri.params.has("lr"));
        assert_eq!(d.expires(), Some(60));
        let e = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(e.params.has("unknownparam"));
        assert!(e.uri.params.is_empty());
        let f = NameAddr::parse(r#""x" <sip:u@h>;p="a;b,c""#).unwrap();
        assert_eq!(f.params.get("p"), Some(Some(r#""a;b,c""#)));
        assert_eq!(NameAddr::parse(&f.to_string()).unwrap(), f);
    }

    #[test]
    fn name_addr_rejects_damage() {
        for bad in [
            "",
            r#""Mr. J. User <sip:j.user@example.com>"#,
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:user@example.com",
            "<sip:u@h>;;",
            "<sip:u@h> junk",
            r#""x" sip:u@h"#,
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn contact_lists() {
        assert_eq!(Contact::parse(" * "), Ok(Contact::Star));
        let Contact::Addrs(addrs) =
            Contact::parse(r#""a,b" <sip:a,z@h;x=1>, sip:b@h;expires=5 ,<tel:+1234>"#).unwrap_or(Contact::Star)
        else {
            panic!("expected addresses");
        };
        assert_eq!(addrs.len(), 3);
        assert_eq!(addrs[0].display.as_deref(), Some("a,b"));
        assert_eq!(addrs[0].uri.user.as_deref(), Some("a,z"));
        assert_eq!(addrs[1].expires(), Some(5));
        assert_eq!(addrs[2].uri.scheme, Scheme::Tel);
        assert!(Contact::parse("<sip:a@h>,").is_err());
    }

    #[test]
    fn cseq_and_method() {
        assert_eq!(CSeq::parse("0009   INVITE"), Ok(CSeq { seq: 9, method: Method::Invite }));
        assert_eq!(CSeq::parse("1 invite").map(|c| c.method), Ok(Method::Other("invite".into())));
        for bad in ["", "1", "INVITE", "-1 INVITE", "36893488147419103232 REGISTER", "1 INVITE x", "1 IN<VITE"] {
            assert!(CSeq::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!("RE%47IST%45R".parse::<Method>(), Ok(Method::Other("RE%47IST%45R".into())));
    }

    #[test]
    fn dates() {
        let date = SipDate::parse("Sat, 15 Oct 2005 04:44:56 GMT").unwrap();
        assert_eq!((date.day, date.month, date.year, date.second), (15, 10, 2005, 56));
        assert_eq!(date.to_string(), "Sat, 15 Oct 2005 04:44:56 GMT");
        assert!(SipDate::parse("Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(SipDate::parse("Fri, 01 Jan 2010 16:00 GMT").is_err());
    }

    fn arb_display() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9 \"\\\\,;<>\u{1}é]{0,12}")
    }

    fn arb_params() -> impl Strategy<Value = Params> {
        proptest::collection::vec(
            ("[a-z][a-z0-9-]{0,6}", proptest::option::of(prop_oneof!["[a-zA-Z0-9.]{1,8}", "\"[a-z ;,]{0,6}\""])),
            0..4,
        )
        .prop_map(|v| {
            let mut p = Params::new();
            for (n, val) in v {
                p.push(n, val);
            }
            p
        })
    }

    pub(crate) fn arb_name_addr() -> impl Strategy<Value = NameAddr> {
        (arb_display(), crate::sip::uri::tests::arb_uri(), arb_params()).prop_map(|(display, uri, params)| NameAddr {
            display,
            uri,
            params,
        })
    }

    pub(crate) fn arb_via() -> impl Strategy<Value = Via> {
        (
            prop_oneof![Just("UDP"), Just("TCP"), Just("TLS"), Just("WS")],
            "[a-z][a-z0-9]{0,8}(\\.[a-z]{2,4})?",
            proptest::option::of(any::<u16>()),
            "z9hG4bK[a-zA-Z0-9]{1,10}",
            any::<bool>(),
        )
            .prop_map(|(transport, host, port, branch, rport)| {
                let mut params = Params::new();
                params.push("branch", Some(branch));
                if rport {
                    params.push("rport", None);
                }
                Via { transport: transport.to_string(), host, port, params }
            })
    }

    proptest! {
        #[test]
        fn name_addr_round_trips(addr in arb_name_addr()) {
            let text = addr.to_string();
            prop_assert_eq!(NameAddr::parse(&text), Ok(addr), "{}", text);
        }

        #[test]
        fn via_round_trips(vias in proptest::collection::vec(arb_via(), 1..5)) {
            let text = vias.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" , ");
            prop_assert_eq!(Via::parse_list(&text), Ok(vias), "{}", text);
        }

        #[test]
        fn header_parsers_never_panic(s in "\\PC{0,100}") {
            let _ = Via::parse_list(&s);
            let _ = NameAddr::parse(&s);
            let _ = Contact::parse(&s);
            let _ = CSeq::parse(&s);
            let _ = SipDate::parse(&s);
            let _ = parse_params(&s);
        }

        #[test]
        fn header_parsers_never_panic_on_sip_shaped_text(s in "[\"<>;,=\\\\ a-z:@/.0-9\t\u{0}é]{0,60}") {
            let _ = Via::parse_list(&s);
            let _ = NameAddr::parse(&s);
            let _ = Contact::parse(&s);
        }
    }
}
