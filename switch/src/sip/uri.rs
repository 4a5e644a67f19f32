//! SIP and SIPS URIs (RFC 3261 section 19.1), tel URIs (RFC 3966) and, opaquely,
//! any other scheme.
//!
//! Components are kept exactly as written on the wire (still %-escaped), so
//! that a parsed URI prints back to the same text; [`unescape`] decodes a
//! component when a comparison needs it (RFC 3261 19.1.4). Parsing checks the
//! characters each component may hold, because a URI is where hostile input
//! tries to smuggle spaces, angle brackets or line breaks into other headers.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest URI accepted; a header line is capped at 8 KiB anyway.
pub const MAX_URI_LEN: usize = 8192;
/// Most parameters accepted on one URI or header value.
pub const MAX_PARAMS: usize = 64;

/// Why a URI was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("URI is empty")]
    Empty,
    #[error("URI is longer than {MAX_URI_LEN} bytes")]
    TooLong,
    #[error("URI has no scheme")]
    MissingScheme,
    #[error("URI scheme is not valid")]
    BadScheme,
    #[error("URI has a character not allowed in its {0}")]
    BadChar(&'static str),
    #[error("URI has a malformed %-escape")]
    BadEscape,
    #[error("URI has no host")]
    MissingHost,
    #[error("URI host is not a valid host name or IP address")]
    BadHost,
    #[error("URI port is not a number in 0-65535")]
    BadPort,
    #[error("URI parameter has an empty name")]
    EmptyParamName,
    #[error("URI has more than {MAX_PARAMS} parameters")]
    TooManyParams,
}

/// The URI scheme. `sip`, `sips` and `tel` are understood; anything else is
/// carried opaquely so the caller can answer 416 Unsupported URI Scheme.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// As written, e.g. `http` or `soap.beep`.
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `;name[=value]` parameters, in the order written. Names compare
/// case-insensitively (RFC 3261 19.1.4, 7.3.1); values are kept as written
/// (a quoted header parameter keeps its quotes so it prints back unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, Option<String>)>);

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// `None`: absent; `Some(None)`: present without value (`;lr`);
    /// `Some(Some(v))`: `;name=v`. The first occurrence wins.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Replaces the first parameter of that name (keeping its position) and
    /// drops any others, or appends a new one.
    pub fn set(&mut self, name: impl Into<String>, value: Option<String>) {
        let name = name.into();
        match self.0.iter().position(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some(at) => {
                if let Some(slot) = self.0.get_mut(at) {
                    *slot = (name.clone(), value);
                }
                let mut index = 0;
                self.0.retain(|(n, _)| {
                    let keep = index <= at || !n.eq_ignore_ascii_case(&name);
                    index += 1;
                    keep
                });
            }
            None => self.0.push((name, value)),
        }
    }

    /// Appends without looking for an existing parameter of that name.
    pub fn push(&mut self, name: impl Into<String>, value: Option<String>) {
        self.0.push((name.into(), value));
    }

    /// Removes every parameter of that name.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.0 {
            write!(f, ";{name}")?;
            if let Some(value) = value {
                write!(f, "={value}")?;
            }
        }
        Ok(())
    }
}

/// A parsed URI.
///
/// For `tel` the number is in `user` and `host` is empty; for schemes other
/// than sip, sips and tel, `host` holds everything after the colon, unparsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    /// Still %-escaped; see [`Uri::user_unescaped`].
    pub user: Option<String>,
    pub password: Option<String>,
    /// A host name, an IPv4 address, or an IPv6 reference with brackets.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// The text after `?`, without it (`name=value&...`).
    pub headers: Option<String>,
}

impl Uri {
    /// A `sip:` URI with only user and host, the usual thing to build.
    pub fn sip(user: Option<&str>, host: impl Into<String>) -> Uri {
        Uri {
            scheme: Scheme::Sip,
            user: user.map(str::to_string),
            password: None,
            host: host.into(),
            port: None,
            params: Params::new(),
            headers: None,
        }
    }

    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if s.len() > MAX_URI_LEN {
            return Err(UriError::TooLong);
        }
        let (scheme, rest) = s.split_once(':').ok_or(UriError::MissingScheme)?;
        if !is_scheme(scheme) {
            return Err(UriError::BadScheme);
        }
        let scheme = if scheme.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other(scheme.to_string())
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => parse_sip(scheme, rest),
            Scheme::Tel => parse_tel(rest),
            Scheme::Other(_) => {
                if rest.is_empty() {
                    return Err(UriError::MissingHost);
                }
                check(rest, "opaque part", |b| is_unreserved(b) || b"/?:@&=+$,;[]#".contains(&b))?;
                Ok(Uri {
                    scheme,
                    user: None,
                    password: None,
                    host: rest.to_string(),
                    port: None,
                    params: Params::new(),
                    headers: None,
                })
            }
        }
    }

    /// `host[:port]`, as used in Via sent-by and for resolving the target.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// The user part with %-escapes decoded (RFC 3261 19.1.4 compares it so).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(unescape)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(password) = &self.password {
                write!(f, ":{password}")?;
            }
            if self.scheme != Scheme::Tel {
                f.write_str("@")?;
            }
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(headers) = &self.headers {
            write!(f, "?{headers}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Uri, UriError> {
        Uri::parse(s)
    }
}

fn parse_sip(scheme: Scheme, rest: &str) -> Result<Uri, UriError> {
    // '@' cannot appear unescaped after the userinfo, so the first one ends it
    // even when the user part itself holds ';', '?' or ':' (RFC 4475 intmeth).
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((userinfo, hostpart)) => (Some(userinfo), hostpart),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return Err(UriError::BadChar("user"));
            }
            check(user, "user", |b| is_unreserved(b) || b"&=+$,;?/".contains(&b))?;
            if let Some(password) = password {
                check(password, "password", |b| is_unreserved(b) || b"&=+$,".contains(&b))?;
            }
            (Some(user.to_string()), password.map(str::to_string))
        }
    };
    let (hostport, after) = split_at_any(hostpart, b";?");
    let (host, port) = parse_host_port(hostport)?;
    let (params_text, headers) = match after.split_once('?') {
        Some((params, headers)) => (params, Some(headers)),
        None => (after, None),
    };
    let params = parse_uri_params(params_text, |b| is_unreserved(b) || b"[]/:&+$".contains(&b))?;
    if let Some(headers) = headers {
        if headers.is_empty() {
            return Err(UriError::BadChar("headers"));
        }
        check(headers, "headers", |b| is_unreserved(b) || b"[]/?:+$&=".contains(&b))?;
    }
    Ok(Uri { scheme, user, password, host, port, params, headers: headers.map(str::to_string) })
}

fn parse_tel(rest: &str) -> Result<Uri, UriError> {
    let (number, params_text) = split_at_any(rest, b";");
    if number.is_empty() {
        return Err(UriError::MissingHost);
    }
    check(number, "telephone number", |b| b.is_ascii_alphanumeric() || b"*#+-.()".contains(&b))?;
    let params = parse_uri_params(params_text, |b| is_unreserved(b) || b"[]/:&+$".contains(&b))?;
    Ok(Uri {
        scheme: Scheme::Tel,
        user: Some(number.to_string()),
        password: None,
        host: String::new(),
        port: None,
        params,
        headers: None,
    })
}

/// `host[:port]` where host may be an IPv6 reference in brackets. Shared with
/// Via's sent-by, which has the same grammar.
pub(crate) fn parse_host_port(s: &str) -> Result<(String, Option<u16>), UriError> {
    if s.is_empty() {
        return Err(UriError::MissingHost);
    }
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (address, after) = inner.split_once(']').ok_or(UriError::BadHost)?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(UriError::BadHost);
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UriError::BadHost)?),
        };
        (s.get(..address.len() + 2).ok_or(UriError::BadHost)?, port)
    } else if s.bytes().filter(|b| *b == b':').count() >= 2 {
        return unbracketed_ipv6(s);
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if !host.starts_with('[') {
        if host.is_empty() {
            return Err(UriError::MissingHost);
        }
        // '_' is not in the grammar but real deployments use it in names.
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
            return Err(UriError::BadHost);
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<Ipv4Addr>().is_err() {
            return Err(UriError::BadHost);
        }
    }
    let port = match port {
        None => None,
        Some(port) => Some(parse_port(port).ok_or(UriError::BadPort)?),
    };
    Ok((host.to_string(), port))
}

/// An IPv6 address written without the brackets RFC 3261 requires, as some
/// phones do (`sip:4321@fec0::216:d3ff:fe0d:22c:5060` in a public capture).
/// RFC 5118 4.10 lets a parser recover: the whole is the address if it parses
/// as one, else the part after the last colon is the port. Kept bracketed.
fn unbracketed_ipv6(s: &str) -> Result<(String, Option<u16>), UriError> {
    if s.parse::<Ipv6Addr>().is_ok() {
        return Ok((format!("[{s}]"), None));
    }
    let (address, port) = s.rsplit_once(':').ok_or(UriError::BadHost)?;
    if address.parse::<Ipv6Addr>().is_err() {
        return Err(UriError::BadHost);
    }
    Ok((format!("[{address}]"), Some(parse_port(port).ok_or(UriError::BadPort)?)))
}

pub(crate) fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `;a=b;c` with no whitespace anywhere (unlike header parameters).
fn parse_uri_params(s: &str, allowed: impl Fn(u8) -> bool) -> Result<Params, UriError> {
    let mut params = Params::new();
    if s.is_empty() {
        return Ok(params);
    }
    let Some(s) = s.strip_prefix(';') else {
        return Err(UriError::BadChar("parameters"));
    };
    for param in s.split(';') {
        if params.len() == MAX_PARAMS {
            return Err(UriError::TooManyParams);
        }
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (param, None),
        };
        if name.is_empty() {
            return Err(UriError::EmptyParamName);
        }
        check(name, "parameter", &allowed)?;
        if let Some(value) = value {
            check(value, "parameter", &allowed)?;
        }
        params.push(name, value.map(str::to_string));
    }
    Ok(params)
}

/// Checks every byte against `allowed`, also accepting well-formed `%HH`.
fn check(s: &str, what: &'static str, allowed: impl Fn(u8) -> bool) -> Result<(), UriError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |at: usize| bytes.get(at).is_some_and(|b| b.is_ascii_hexdigit());
            if !hex(i + 1) || !hex(i + 2) {
                return Err(UriError::BadEscape);
            }
            i += 3;
        } else if allowed(b) {
            i += 1;
        } else {
            return Err(UriError::BadChar(what));
        }
    }
    Ok(())
}

fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
}

/// RFC 3261 `unreserved`: alphanum and mark.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

/// Splits before the first of `stops`; the second part keeps the stop byte.
fn split_at_any<'a>(s: &'a str, stops: &[u8]) -> (&'a str, &'a str) {
    match s.bytes().position(|b| stops.contains(&b)) {
        // The stop bytes are ASCII, so both indices are char boundaries.
        Some(at) => (s.get(..at).unwrap_or(s), s.get(at..).unwrap_or("")),
        None => (s, ""),
    }
}

/// Decodes `%HH` escapes; malformed escapes are kept literally and bytes that
/// are not UTF-8 after decoding are replaced, since this is for comparison
/// and display, not for re-encoding.
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_sip_uri() {
        let uri = Uri::parse("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&x=y").unwrap();
        assert_eq!(uri.scheme, Scheme::Sips);
        assert_eq!(uri.user.as_deref(), Some("alice"));
        assert_eq!(uri.password.as_deref(), Some("secret"));
        assert_eq!(uri.host, "[2001:db8::1]");
        assert_eq!(uri.port, Some(5061));
        assert_eq!(uri.params.get("TRANSPORT"), Some(Some("tcp")));
        assert_eq!(uri.params.get("lr"), Some(None));
        assert_eq!(uri.params.get("maddr"), None);
        assert_eq!(uri.headers.as_deref(), Some("subject=hi&x=y"));
        assert_eq!(uri.host_port(), "[2001:db8::1]:5061");
        assert_eq!(uri.to_string(), "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&x=y");
    }

    #[test]
    fn user_may_hold_separators() {
        let uri = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(uri.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(uri.host, "example.com");
        assert!(uri.params.is_empty());
        assert_eq!(uri.user_unescaped().as_deref(), Some("user;par=u@example.net"));
    }

    #[test]
    fn tel_and_other_schemes() {
        let tel = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(tel.scheme, Scheme::Tel);
        assert_eq!(tel.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(tel.to_string(), "tel:+1-201-555-0123;phone-context=example.com");
        let other = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(other.scheme, Scheme::Other("soap.beep".into()));
        assert_eq!(other.to_string(), "soap.beep://192.0.2.103:3002");
    }

    #[test]
    fn rejects_damaged_uris() {
        for bad in [
            "",
            "sip:",
            "sip:user@",
            "<sip:user@example.com>",
            " sip:user@example.com",
            "sip:user@example.com ",
            "sip:user@host:99999",
            "sip:user@host:",
            "sip:user@[::1",
            "sip:user@[nonsense]",
            "sip:@host",
            "sip:us er@host",
            "sip:user@host;",
            "sip:user@host;=x",
            "sip:user@host?",
            "sip:u%zz@host",
            "sip:u%4@host",
            "sip:user@ho\r\nst",
            "sip:user@999.1.1.1",
            "1sip:x",
            "tel:",
            "x:",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn params_edit() {
        let mut params = Params::new();
        params.push("a", Some("1".into()));
        params.push("b", None);
        params.push("A", Some("2".into()));
        params.set("a", Some("3".into()));
        assert_eq!(params.to_string(), ";a=3;b");
        params.set("c", None);
        params.remove("B");
        assert_eq!(params.to_string(), ";a=3;c");
        assert!(params.has("C"));
        assert_eq!(params.iter().count(), 2);
    }

    #[test]
    fn unescape_decodes_and_keeps_bad_escapes() {
        assert_eq!(unescape("sips%3Auser%40example.com"), "sips:user@example.com");
        assert_eq!(unescape("a%zz%4"), "a%zz%4");
        assert_eq!(unescape("null-%00-null"), "null-\0-null");
    }

    pub(crate) fn arb_uri() -> impl Strategy<Value = Uri> {
        let host = prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,6}){0,3}",
            any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
            any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
        ];
        let param = ("[a-z][a-z0-9-]{0,8}", proptest::option::of("[a-zA-Z0-9.-]{1,8}|%[0-9A-F]{2}"));
        (
            prop_oneof![Just(Scheme::Sip), Just(Scheme::Sips)],
            proptest::option::of("[a-zA-Z0-9+._-]{1,12}"),
            proptest::option::of("[a-z0-9]{0,6}"),
            host,
            proptest::option::of(any::<u16>()),
            proptest::collection::vec(param, 0..4),
            proptest::option::of("[a-z]{1,5}=[a-z0-9]{0,5}"),
        )
            .prop_map(|(scheme, user, password, host, port, params, headers)| {
                let mut p = Params::new();
                for (n, v) in params {
                    p.push(n, v);
                }
                let password = if user.is_some() { password } else { None };
                Uri { scheme, user, password, host, port, params: p, headers }
            })
    }

    proptest! {
        #[test]
        fn display_round_trips(uri in arb_uri()) {
            let text = uri.to_string();
            prop_assert_eq!(Uri::parse(&text), Ok(uri), "{}", text);
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = Uri::parse(&s);
            let _ = unescape(&s);
        }
    }

    #[test]
    fn unbracketed_ipv6_is_recovered() {
        let u = Uri::parse("sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[fec0:0:0:0:216:d3ff:fe0d:22c]", Some(5060)));
        let u = Uri::parse("sip:4321@2001:db8::1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[2001:db8::1]", None));
        assert!(Uri::parse("sip:4321@a:b:c").is_err());
    }
}
