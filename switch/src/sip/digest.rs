//! HTTP Digest authentication for SIP (RFC 3261 22.4, RFC 2617), with MD5 and
//! `qop=auth` as Asterisk, FreeSWITCH and SIPp deploy it.
//!
//! The server side challenges with a [`Challenge`] carrying a stateless nonce
//! from [`NonceIssuer`], then checks the [`Authorization`] the client returns
//! with [`NonceIssuer::check`] and [`Authorization::verify`]. The client side
//! parses a challenge and answers it with [`Authorization::answer`].
//!
//! Header values come from the network, so parsing is bounded, allocation
//! limited and never panics.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use rand::RngCore;

/// Longest challenge or credentials value accepted; real ones are a few hundred bytes.
const MAX_INPUT: usize = 4096;
/// Most auth-params accepted in one value, known or not.
const MAX_PARAMS: usize = 32;

/// Why a challenge or credentials value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("value longer than {MAX_INPUT} bytes")]
    TooLong,
    #[error("not the Digest scheme")]
    NotDigest,
    #[error("malformed auth-param list")]
    Malformed,
    #[error("unterminated quoted string")]
    Unterminated,
    #[error("more than {MAX_PARAMS} auth-params")]
    TooManyParams,
    #[error("missing {0} parameter")]
    Missing(&'static str),
    #[error("duplicate {0} parameter")]
    Duplicate(&'static str),
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
}

/// A `WWW-Authenticate` or `Proxy-Authenticate` value: what a server asks the
/// client to prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    /// Returned unchanged by the client; lets a server keep context without state.
    pub opaque: Option<String>,
    /// `None` means MD5 (RFC 2617 3.2.1).
    pub algorithm: Option<String>,
    /// The qop-options list as sent (e.g. `auth` or `auth,auth-int`); `None`
    /// for the RFC 2069 compatible form without cnonce and nc.
    pub qop: Option<String>,
    /// The previous nonce was authentic but expired: the client retries with
    /// the same credentials instead of asking its user again.
    pub stale: bool,
}

impl Challenge {
    /// The challenge the switch sends: MD5 with `qop="auth"`.
    pub fn new(realm: &str, nonce: String, stale: bool) -> Self {
        Challenge {
            realm: realm.to_string(),
            nonce,
            opaque: None,
            algorithm: Some("MD5".to_string()),
            qop: Some("auth".to_string()),
            stale,
        }
    }

    /// Parses a `WWW-Authenticate`/`Proxy-Authenticate` value. Unknown
    /// parameters (domain, charset...) are ignored.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut stale = None;
        for_each_param(value, |name, v| {
            let (slot, label) = match name.to_ascii_lowercase().as_str() {
                "realm" => (&mut realm, "realm"),
                "nonce" => (&mut nonce, "nonce"),
                "opaque" => (&mut opaque, "opaque"),
                "algorithm" => (&mut algorithm, "algorithm"),
                "qop" => (&mut qop, "qop"),
                "stale" => (&mut stale, "stale"),
                _ => return Ok(()),
            };
            set(slot, label, v)
        })?;
        Ok(Challenge {
            realm: realm.ok_or(DigestError::Missing("realm"))?,
            nonce: nonce.ok_or(DigestError::Missing("nonce"))?,
            opaque,
            algorithm,
            qop,
            stale: stale.is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// Whether the server accepts `qop=auth` (qop-options is a list).
    fn offers_auth(&self) -> bool {
        self.qop.as_deref().is_some_and(|q| q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")))
    }
}

impl fmt::Display for Challenge {
    /// The header value, e.g. `Digest realm="sip.example", nonce="…", algorithm=MD5, qop="auth"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        if let Some(opaque) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, opaque)?;
        }
        if let Some(algorithm) = &self.algorithm {
            f.write_str(", algorithm=")?;
            write_token_or_quoted(f, algorithm)?;
        }
        if let Some(qop) = &self.qop {
            // qop-options is always a quoted string (RFC 2617 3.2.1).
            f.write_str(", qop=")?;
            write_quoted(f, qop)?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

/// An `Authorization` or `Proxy-Authorization` value: the client's proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    /// The digest-uri: the Request-URI the client hashed, as it wrote it.
    pub uri: String,
    /// 32 hex digits.
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<String>,
    /// Nonce count, 8 hex digits, with `qop`.
    pub nc: Option<String>,
}

impl Authorization {
    /// Parses credentials. Missing username, realm, nonce, uri or response and
    /// any duplicated known parameter are errors; whether qop comes with
    /// cnonce and nc is left to [`verify`](Self::verify), which refuses it.
    pub fn parse(value: &str) -> Result<Authorization, DigestError> {
        let mut username = None;
        let mut realm = None;
        let mut nonce = None;
        let mut uri = None;
        let mut response = None;
        let mut algorithm = None;
        let mut cnonce = None;
        let mut opaque = None;
        let mut qop = None;
        let mut nc = None;
        for_each_param(value, |name, v| {
            let (slot, label) = match name.to_ascii_lowercase().as_str() {
                "username" => (&mut username, "username"),
                "realm" => (&mut realm, "realm"),
                "nonce" => (&mut nonce, "nonce"),
                "uri" => (&mut uri, "uri"),
                "response" => (&mut response, "response"),
                "algorithm" => (&mut algorithm, "algorithm"),
                "cnonce" => (&mut cnonce, "cnonce"),
                "opaque" => (&mut opaque, "opaque"),
                "qop" => (&mut qop, "qop"),
                "nc" => (&mut nc, "nc"),
                _ => return Ok(()),
            };
            set(slot, label, v)
        })?;
        Ok(Authorization {
            username: username.ok_or(DigestError::Missing("username"))?,
            realm: realm.ok_or(DigestError::Missing("realm"))?,
            nonce: nonce.ok_or(DigestError::Missing("nonce"))?,
            uri: uri.ok_or(DigestError::Missing("uri"))?,
            response: response.ok_or(DigestError::Missing("response"))?,
            algorithm,
            cnonce,
            opaque,
            qop,
            nc,
        })
    }

    /// Answers `challenge` as a client: `qop=auth` when the server offers it,
    /// with a fresh cnonce from `rng` and `nc` as the nonce count (1 for the
    /// first use of this nonce). Only MD5 is supported.
    pub fn answer(
        challenge: &Challenge,
        credentials: (&str, &str),
        method: &str,
        uri: &str,
        nc: u32,
        rng: &mut impl RngCore,
    ) -> Result<Authorization, DigestError> {
        if let Some(algorithm) = challenge.algorithm.as_deref().filter(|a| !a.eq_ignore_ascii_case("MD5")) {
            return Err(DigestError::UnsupportedAlgorithm(algorithm.to_string()));
        }
        let (username, password) = credentials;
        let (qop, cnonce, nc) = if challenge.offers_auth() {
            let mut salt = [0u8; 8];
            rng.fill_bytes(&mut salt);
            let mut cnonce = String::with_capacity(16);
            push_hex(&mut cnonce, &salt);
            (Some("auth".to_string()), Some(cnonce), Some(format!("{nc:08x}")))
        } else {
            (None, None, None)
        };
        let qop_args = cnonce.as_deref().zip(nc.as_deref()).map(|(c, n)| (n, c));
        let response = response(username, &challenge.realm, password, method, uri, &challenge.nonce, qop_args);
        Ok(Authorization {
            username: username.to_string(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_string(),
            response,
            algorithm: challenge.algorithm.clone(),
            cnonce,
            opaque: challenge.opaque.clone(),
            qop,
            nc,
        })
    }

    /// Whether the credentials prove knowledge of `password` for a request
    /// with `method`. The digest comparison takes the same time wherever the
    /// first difference is.
    ///
    /// This checks the hash only. The caller must also check that the nonce is
    /// one of its own and fresh ([`NonceIssuer::check`]), that the realm is its
    /// own, that `username` is the account whose password it passed, and that
    /// `uri` names the request's Request-URI (RFC 2617 3.2.2.5).
    pub fn verify(&self, method: &str, password: &str) -> bool {
        if self.algorithm.as_deref().is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return false;
        }
        let qop = match self.qop.as_deref() {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => match (self.nc.as_deref(), self.cnonce.as_deref()) {
                (Some(nc), Some(cnonce)) => Some((nc, cnonce)),
                _ => return false,
            },
            // auth-int needs the body hash, which no deployed peer of ours uses.
            Some(_) => return false,
        };
        let expected = response_hex(&self.username, &self.realm, password, method, &self.uri, &self.nonce, qop);
        let given = self.response.as_bytes();
        given.len() == expected.len()
            && given.iter().zip(expected.iter()).fold(0u8, |acc, (g, e)| acc | (g.to_ascii_lowercase() ^ e)) == 0
    }
}

impl fmt::Display for Authorization {
    /// The header value, in the order and quoting SIP user agents use:
    /// `Digest username="…", realm="…", nonce="…", uri="…", response="…",
    /// algorithm=MD5, cnonce="…", qop=auth, nc=00000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest username=")?;
        write_quoted(f, &self.username)?;
        f.write_str(", realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        f.write_str(", uri=")?;
        write_quoted(f, &self.uri)?;
        f.write_str(", response=")?;
        write_quoted(f, &self.response)?;
        if let Some(algorithm) = &self.algorithm {
            f.write_str(", algorithm=")?;
            write_token_or_quoted(f, algorithm)?;
        }
        if let Some(cnonce) = &self.cnonce {
            f.write_str(", cnonce=")?;
            write_quoted(f, cnonce)?;
        }
        if let Some(opaque) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, opaque)?;
        }
        // message-qop and nonce-count are bare tokens (RFC 2617 3.2.2).
        if let Some(qop) = &self.qop {
            f.write_str(", qop=")?;
            write_token_or_quoted(f, qop)?;
        }
        if let Some(nc) = &self.nc {
            f.write_str(", nc=")?;
            write_token_or_quoted(f, nc)?;
        }
        Ok(())
    }
}

/// The request-digest of RFC 2617 3.2.2.1 with MD5, in lower hex: without
/// `qop` the RFC 2069 form `MD5(HA1:nonce:HA2)`, with `qop = Some((nc, cnonce))`
/// the `qop=auth` form `MD5(HA1:nonce:nc:cnonce:auth:HA2)`, where
/// HA1 = MD5(username:realm:password) and HA2 = MD5(method:uri).
pub fn response(
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    response_hex(username, realm, password, method, uri, nonce, qop).iter().map(|&b| char::from(b)).collect()
}

fn response_hex(
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> [u8; 32] {
    let ha1 = md5_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()]);
    let ha2 = md5_hex(&[method.as_bytes(), uri.as_bytes()]);
    match qop {
        None => md5_hex(&[&ha1, nonce.as_bytes(), &ha2]),
        Some((nc, cnonce)) => md5_hex(&[&ha1, nonce.as_bytes(), nc.as_bytes(), cnonce.as_bytes(), b"auth", &ha2]),
    }
}

/// Lower hex MD5 of `parts` joined by colons, on the stack.
fn md5_hex(parts: &[&[u8]]) -> [u8; 32] {
    let mut md5 = Md5::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            md5.update(b":");
        }
        md5.update(part);
    }
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(md5.finalize()) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// What [`NonceIssuer::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and fresh.
    Valid,
    /// Ours but older than the lifetime (or issued in the future, by an
    /// earlier run sharing the key): challenge again with `stale=true`.
    Stale,
    /// Not a nonce we issued: challenge again without `stale`.
    Invalid,
}

/// Issue time (8 bytes) and salt (8 bytes).
const NONCE_PAYLOAD: usize = 16;
/// Truncated MAC bytes appended to the payload.
const NONCE_MAC: usize = 8;
const NONCE_HEX_LEN: usize = 2 * (NONCE_PAYLOAD + NONCE_MAC);

/// Issues and checks stateless nonces: each carries its issue time and a
/// random salt, authenticated with the switch's key, so the switch remembers
/// nothing per challenge and a scanner sending REGISTERs cannot make it store
/// anything.
///
/// The authenticator is MD5(key || payload) truncated to 64 bits, a
/// MAC-by-hash. It is adequate for nonce integrity, which is all it guards
/// (the password check is the digest itself), and it is what Asterisk- and
/// FreeSWITCH-grade nonces offer. The usual weakness of a secret-prefix MAC,
/// length extension, does not apply because [`check`](Self::check) only
/// accepts payloads of exactly one fixed length.
///
/// The MAC also covers the address the challenge was sent to, so a nonce
/// (and credentials computed over it) is only good from that address:
/// credentials captured on the way and replayed from elsewhere get a fresh
/// challenge. Replay from the same address is [`NonceCounts`]' business.
pub struct NonceIssuer {
    key: [u8; 16],
    lifetime: Duration,
}

impl fmt::Debug for NonceIssuer {
    /// Leaves out the key so logs cannot leak it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceIssuer").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

impl NonceIssuer {
    /// `key` should come from the switch's RNG at start; nonces from an
    /// earlier run with another key are then [`NonceCheck::Invalid`].
    pub fn new(key: [u8; 16], lifetime: Duration) -> Self {
        NonceIssuer { key, lifetime }
    }

    /// A fresh nonce: 48 lower hex digits. `now_since_epoch` is the time since
    /// the switch's own epoch (the caller's clock), the same scale later passed
    /// to [`check`](Self::check).
    pub fn issue(&self, now_since_epoch: Duration, client: IpAddr, rng: &mut impl RngCore) -> String {
        let mut payload = [0u8; NONCE_PAYLOAD];
        payload[..8].copy_from_slice(&millis(now_since_epoch).to_be_bytes());
        rng.fill_bytes(&mut payload[8..]);
        let mac = self.mac(&payload, client);
        let mut nonce = String::with_capacity(NONCE_HEX_LEN);
        push_hex(&mut nonce, &payload);
        push_hex(&mut nonce, &mac);
        nonce
    }

    /// Whether `nonce` is one of ours, issued to `client`, and still fresh at
    /// `now_since_epoch`. Does not allocate.
    pub fn check(&self, nonce: &str, now_since_epoch: Duration, client: IpAddr) -> NonceCheck {
        let mut raw = [0u8; NONCE_PAYLOAD + NONCE_MAC];
        if !decode_hex(nonce.as_bytes(), &mut raw) {
            return NonceCheck::Invalid;
        }
        let (payload, mac) = raw.split_at(NONCE_PAYLOAD);
        let expected = self.mac(payload, client);
        if mac.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return NonceCheck::Invalid;
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&payload[..8]);
        let issued = u64::from_be_bytes(issued);
        let now = millis(now_since_epoch);
        match now.checked_sub(issued) {
            Some(age) if u128::from(age) <= self.lifetime.as_millis() => NonceCheck::Valid,
            _ => NonceCheck::Stale,
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn mac(&self, payload: &[u8], client: IpAddr) -> [u8; NONCE_MAC] {
        let client = match client {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mut md5 = Md5::new();
        md5.update(self.key);
        md5.update(payload);
        md5.update(client.octets());
        let digest = md5.finalize();
        let mut mac = [0u8; NONCE_MAC];
        mac.copy_from_slice(&digest[..NONCE_MAC]);
        mac
    }
}

/// What [`NonceCounts::accept`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountCheck {
    /// A nonce count above every one seen with this nonce.
    Fresh,
    /// A count already used (or not above the highest): a replay.
    Replayed,
    /// The nonce is older than what the table still remembers: treat as stale.
    Forgotten,
}

/// Most nonces whose highest count is remembered; beyond it the oldest go.
pub const MAX_COUNTED_NONCES: usize = 16_384;

/// The highest nonce count (RFC 2617 3.2.2 `nc`) accepted with each recent
/// nonce, so a request replayed with its credentials (same nonce, same or
/// lower count) is refused. Credentials without `qop` carry no count and are
/// taken as count 1: such a nonce is good for one request.
///
/// Memory is bounded: entries go when their nonce is past its lifetime, and
/// when the table is full the oldest go and everything issued up to them is
/// answered as stale from then on, so forgetting never lets a replay through.
#[derive(Debug, Default)]
pub struct NonceCounts {
    /// (issue time in ms, salt) -> highest count accepted.
    seen: std::collections::BTreeMap<(u64, u64), u32>,
    /// Nonces issued at or before this (ms) are no longer tracked.
    floor: Option<u64>,
}

impl NonceCounts {
    /// Records `nc` for a nonce [`NonceIssuer::check`] found valid, and says
    /// whether it is new. Call it only once the digest verifies, so a forger
    /// cannot burn an honest client's counts.
    pub fn accept(
        &mut self,
        nonce: &str,
        nc: Option<&str>,
        now_since_epoch: Duration,
        lifetime: Duration,
    ) -> CountCheck {
        let mut raw = [0u8; NONCE_PAYLOAD];
        if nonce.len() < 2 * NONCE_PAYLOAD || !decode_hex(&nonce.as_bytes()[..2 * NONCE_PAYLOAD], &mut raw) {
            return CountCheck::Replayed;
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[..8]);
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&raw[8..]);
        let key = (u64::from_be_bytes(issued), u64::from_be_bytes(salt));
        let count = match nc {
            None => 1,
            Some(nc) if nc.len() == 8 => match u32::from_str_radix(nc, 16) {
                Ok(n) if n > 0 => n,
                _ => return CountCheck::Replayed,
            },
            Some(_) => return CountCheck::Replayed,
        };
        let now = millis(now_since_epoch);
        let oldest_fresh = now.saturating_sub(millis(lifetime));
        while self.seen.first_key_value().is_some_and(|(k, _)| k.0 < oldest_fresh) {
            self.seen.pop_first();
        }
        if let Some(highest) = self.seen.get_mut(&key) {
            if count <= *highest {
                return CountCheck::Replayed;
            }
            *highest = count;
            return CountCheck::Fresh;
        }
        if self.floor.is_some_and(|f| key.0 <= f) {
            return CountCheck::Forgotten;
        }
        if self.seen.len() >= MAX_COUNTED_NONCES {
            if let Some((k, _)) = self.seen.pop_first() {
                self.floor = Some(self.floor.map_or(k.0, |f| f.max(k.0)));
            }
            if self.floor.is_some_and(|f| key.0 <= f) {
                return CountCheck::Forgotten;
            }
        }
        self.seen.insert(key, count);
        CountCheck::Fresh
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Decodes exactly `out.len()` bytes of lower hex; false on any other input.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if hex.len() != 2 * out.len() {
        return false;
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *byte = hi << 4 | lo,
            _ => return false,
        }
    }
    true
}

fn set(slot: &mut Option<String>, label: &'static str, value: String) -> Result<(), DigestError> {
    if slot.is_some() {
        return Err(DigestError::Duplicate(label));
    }
    *slot = Some(value);
    Ok(())
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Characters of an unquoted parameter value. Wider than a token because
/// deployed clients send things like unquoted URIs; stops at the separators.
fn is_bare_value(b: u8) -> bool {
    !(b.is_ascii_control() || b == b' ' || b == b',' || b == b'"')
}

/// Splits `Digest name=value, name="quoted", ...` and hands each parameter
/// (name as written, value unquoted and unescaped) to `f`. Empty list
/// elements are tolerated (RFC 2616's #rule); two parameters without a comma
/// between them are not.
fn for_each_param(input: &str, mut f: impl FnMut(&str, String) -> Result<(), DigestError>) -> Result<(), DigestError> {
    if input.len() > MAX_INPUT {
        return Err(DigestError::TooLong);
    }
    let bytes = input.as_bytes();
    let mut pos = skip(bytes, 0, is_lws);
    let scheme_end = skip(bytes, pos, |b| !is_lws(b));
    if !input[pos..scheme_end].eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    pos = scheme_end;
    let mut count = 0;
    let mut need_comma = false;
    loop {
        pos = skip(bytes, pos, is_lws);
        let Some(&b) = bytes.get(pos) else { return Ok(()) };
        if b == b',' {
            pos += 1;
            need_comma = false;
            continue;
        }
        if need_comma {
            return Err(DigestError::Malformed);
        }
        let name_end = skip(bytes, pos, is_token);
        if name_end == pos {
            return Err(DigestError::Malformed);
        }
        let name = &input[pos..name_end];
        pos = skip(bytes, name_end, is_lws);
        if bytes.get(pos) != Some(&b'=') {
            return Err(DigestError::Malformed);
        }
        pos = skip(bytes, pos + 1, is_lws);
        let value = if bytes.get(pos) == Some(&b'"') {
            let (value, end) = unquote(input, pos + 1)?;
            pos = end;
            value
        } else {
            let end = skip(bytes, pos, is_bare_value);
            if end == pos {
                return Err(DigestError::Malformed);
            }
            // Stops only at ASCII bytes, so `end` is a char boundary.
            let value = input[pos..end].to_string();
            pos = end;
            value
        };
        count += 1;
        if count > MAX_PARAMS {
            return Err(DigestError::TooManyParams);
        }
        f(name, value)?;
        need_comma = true;
    }
}

fn skip(bytes: &[u8], from: usize, while_: impl Fn(u8) -> bool) -> usize {
    bytes.get(from..).map_or(from, |rest| from + rest.iter().take_while(|&&b| while_(b)).count())
}

/// Reads a quoted string whose opening quote ends just before `start`;
/// returns its content and the index after the closing quote. Control
/// characters other than tab are refused, escaped or not: they would end or
/// corrupt the header line.
fn unquote(input: &str, start: usize) -> Result<(String, usize), DigestError> {
    let rest = input.get(start..).ok_or(DigestError::Unterminated)?;
    let mut value = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        let c = match c {
            '"' => return Ok((value, start + i + 1)),
            '\\' => chars.next().map(|(_, c)| c).ok_or(DigestError::Unterminated)?,
            c => c,
        };
        if c.is_control() && c != '\t' {
            return Err(DigestError::Malformed);
        }
        value.push(c);
    }
    Err(DigestError::Unterminated)
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('"')
}

fn write_token_or_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if !s.is_empty() && s.bytes().all(is_token) {
        f.write_str(s)
    } else {
        write_quoted(f, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn rfc2617_mufasa_example() {
        let ha1 = md5_hex(&[b"Mufasa", b"testrealm@host.com", b"Circle Of Life"]);
        assert_eq!(&ha1, b"939e7578ed9e3c518a452acee763bce9");
        let r = response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn sip_register_example() {
        // Computed independently with Python's hashlib.
        let plain = response("alice", "switch.test", "s3cret", "REGISTER", "sip:switch.test", "7f3a9c", None);
        assert_eq!(plain, "5bd12f507e41ac6717296babaaad6135");
        let qop = Some(("00000002", "deadbeef"));
        let with_qop = response("alice", "switch.test", "s3cret", "REGISTER", "sip:switch.test", "7f3a9c", qop);
        assert_eq!(with_qop, "ec8579faaf6e889e6f20f9df39bdbb42");
    }

    const SIPP_AUTH: &str = "Digest username=\"alice\",realm=\"switch.test\",nonce=\"7f3a9c\", \
        uri=\"sip:switch.test\",response=\"ec8579faaf6e889e6f20f9df39bdbb42\",algorithm=MD5,\
        cnonce=\"deadbeef\",qop=auth,nc=00000002";

    #[test]
    fn parses_and_verifies_credentials() {
        let auth = Authorization::parse(SIPP_AUTH).unwrap();
        assert_eq!(auth.username, "alice");
        assert_eq!(auth.uri, "sip:switch.test");
        assert_eq!(auth.qop.as_deref(), Some("auth"));
        assert_eq!(auth.nc.as_deref(), Some("00000002"));
        assert!(auth.verify("REGISTER", "s3cret"));
        assert!(!auth.verify("REGISTER", "s3cres"));
        assert!(!auth.verify("INVITE", "s3cret"));

        let mut upper = auth.clone();
        upper.response = upper.response.to_uppercase();
        assert!(upper.verify("REGISTER", "s3cret"));
        let mut short = auth.clone();
        short.response.pop();
        assert!(!short.verify("REGISTER", "s3cret"));
        let mut no_cnonce = auth.clone();
        no_cnonce.cnonce = None;
        assert!(!no_cnonce.verify("REGISTER", "s3cret"));
        let mut sha = auth.clone();
        sha.algorithm = Some("SHA-256".into());
        assert!(!sha.verify("REGISTER", "s3cret"));
        let mut int = auth;
        int.qop = Some("auth-int".into());
        assert!(!int.verify("REGISTER", "s3cret"));

        let rfc2069 = "digest username=\"alice\", realm=\"switch.test\", nonce=\"7f3a9c\", \
            uri=\"sip:switch.test\", response=\"5bd12f507e41ac6717296babaaad6135\"";
        assert!(Authorization::parse(rfc2069).unwrap().verify("REGISTER", "s3cret"));
    }

    #[test]
    fn prints_credentials_in_the_usual_form() {
        let auth = Authorization::parse(SIPP_AUTH).unwrap();
        assert_eq!(
            auth.to_string(),
            "Digest username=\"alice\", realm=\"switch.test\", nonce=\"7f3a9c\", uri=\"sip:switch.test\", \
             response=\"ec8579faaf6e889e6f20f9df39bdbb42\", algorithm=MD5, cnonce=\"deadbeef\", qop=auth, nc=00000002"
        );
        assert_eq!(Authorization::parse(&auth.to_string()), Ok(auth));
    }

    #[test]
    fn quotes_escapes_and_commas() {
        let v = concat!(
            r#"Digest realm="a, \"b\" \\ c", nonce = "x\yz" , , opaque="", "#,
            r#"qop="auth,auth-int", domain="sip:a sip:b", stale=TRUE"#
        );
        let c = Challenge::parse(v).unwrap();
        assert_eq!(c.realm, r#"a, "b" \ c"#);
        assert_eq!(c.nonce, "xyz");
        assert_eq!(c.opaque.as_deref(), Some(""));
        assert_eq!(c.qop.as_deref(), Some("auth,auth-int"));
        assert!(c.stale);
        assert!(c.offers_auth());
        assert_eq!(
            c.to_string(),
            r#"Digest realm="a, \"b\" \\ c", nonce="xyz", opaque="", qop="auth,auth-int", stale=true"#
        );
        assert_eq!(Challenge::parse(&c.to_string()), Ok(c));
    }

    #[test]
    fn challenge_display_is_the_header_value() {
        let c = Challenge::new("switch.test", "abc".into(), false);
        assert_eq!(c.to_string(), r#"Digest realm="switch.test", nonce="abc", algorithm=MD5, qop="auth""#);
        let stale = Challenge::new("switch.test", "abc".into(), true);
        assert!(stale.to_string().ends_with(", stale=true"));
        assert!(!Challenge::parse(r#"Digest realm="r", nonce="n", stale=false"#).unwrap().stale);
    }

    #[test]
    fn refuses_malformed_values() {
        use DigestError::*;
        let cases: &[(&str, DigestError)] = &[
            ("", NotDigest),
            ("Basic realm=\"x\"", NotDigest),
            ("Digestrealm=\"x\", nonce=\"n\"", NotDigest),
            ("Digest realm=\"x\"", Missing("nonce")),
            ("Digest", Missing("realm")),
            ("Digest realm=\"x\", nonce=\"n\", realm=\"y\"", Duplicate("realm")),
            ("Digest REALM=\"x\", nonce=\"n\", Realm=\"y\"", Duplicate("realm")),
            ("Digest realm=\"x", Unterminated),
            ("Digest realm=\"x\\", Unterminated),
            ("Digest realm=\"x\" nonce=\"n\"", Malformed),
            ("Digest realm", Malformed),
            ("Digest realm=", Malformed),
            ("Digest =x", Malformed),
            ("Digest realm=\"a\nb\", nonce=n", Malformed),
            ("Digest realm=\"a\\\rb\", nonce=n", Malformed),
            ("Digest realm=a\"b\", nonce=n", Malformed),
        ];
        for (input, err) in cases {
            assert_eq!(Challenge::parse(input).as_ref(), Err(err), "{input:?}");
        }
        let many = format!("Digest {}", "x=1,".repeat(MAX_PARAMS + 1));
        assert_eq!(Challenge::parse(&many), Err(TooManyParams));
        let long = format!("Digest realm=\"{}\", nonce=n", "a".repeat(MAX_INPUT));
        assert_eq!(Challenge::parse(&long), Err(TooLong));
        assert_eq!(
            Authorization::parse("Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\""),
            Err(Missing("response"))
        );
    }

    #[test]
    fn client_answers_a_challenge() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut c = Challenge::parse(r#"Digest realm="switch.test", nonce="7f3a9c", opaque="op", qop="auth""#).unwrap();
        let auth =
            Authorization::answer(&c, ("alice", "s3cret"), "INVITE", "sip:100@switch.test", 1, &mut rng).unwrap();
        assert_eq!(auth.nc.as_deref(), Some("00000001"));
        assert_eq!(auth.qop.as_deref(), Some("auth"));
        assert_eq!(auth.opaque.as_deref(), Some("op"));
        assert_eq!(auth.cnonce.as_ref().map(String::len), Some(16));
        assert!(auth.verify("INVITE", "s3cret"));

        c.qop = None;
        let auth = Authorization::answer(&c, ("alice", "s3cret"), "REGISTER", "sip:switch.test", 1, &mut rng).unwrap();
        assert_eq!(auth.response, "5bd12f507e41ac6717296babaaad6135");
        assert_eq!((auth.qop, auth.cnonce, auth.nc), (None, None, None));

        c.algorithm = Some("SHA-256".into());
        let refused = Authorization::answer(&c, ("alice", "s3cret"), "REGISTER", "sip:switch.test", 1, &mut rng);
        assert_eq!(refused, Err(DigestError::UnsupportedAlgorithm("SHA-256".into())));
    }

    #[test]
    fn nonces_valid_stale_forged_truncated() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let issuer = NonceIssuer::new([7; 16], Duration::from_secs(30));
        let t = Duration::from_secs(1000);
        let nonce = issuer.issue(t, CLIENT, &mut rng);
        assert_eq!(nonce.len(), NONCE_HEX_LEN);
        assert_ne!(nonce, issuer.issue(t, CLIENT, &mut rng), "salted");
        assert_eq!(issuer.check(&nonce, t, CLIENT), NonceCheck::Valid);
        assert_eq!(issuer.check(&nonce, t + Duration::from_secs(30), CLIENT), NonceCheck::Valid);
        assert_eq!(issuer.check(&nonce, t + Duration::from_millis(30_001), CLIENT), NonceCheck::Stale);
        assert_eq!(issuer.check(&nonce, t - Duration::from_secs(1), CLIENT), NonceCheck::Stale);

        // Every single-digit change is caught, in payload and MAC alike.
        for i in 0..nonce.len() {
            let mut forged = nonce.clone().into_bytes();
            forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
            let forged = String::from_utf8(forged).unwrap();
            assert_eq!(issuer.check(&forged, t, CLIENT), NonceCheck::Invalid, "digit {i}");
        }
        assert_eq!(issuer.check(&nonce[..NONCE_HEX_LEN - 2], t, CLIENT), NonceCheck::Invalid);
        assert_eq!(issuer.check(&format!("{nonce}00"), t, CLIENT), NonceCheck::Invalid);
        assert_eq!(issuer.check(&nonce.to_uppercase(), t, CLIENT), NonceCheck::Invalid);
        assert_eq!(issuer.check("", t, CLIENT), NonceCheck::Invalid);
        assert_eq!(issuer.check(&"é".repeat(24), t, CLIENT), NonceCheck::Invalid);

        let other = NonceIssuer::new([8; 16], Duration::from_secs(30));
        assert_eq!(other.check(&nonce, t, CLIENT), NonceCheck::Invalid);
        assert!(!format!("{issuer:?}").contains('7'));
    }

    #[test]
    fn a_nonce_is_only_good_from_the_address_it_was_issued_to() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let issuer = NonceIssuer::new([7; 16], Duration::from_secs(30));
        let t = Duration::from_secs(10);
        let nonce = issuer.issue(t, CLIENT, &mut rng);
        assert_eq!(issuer.check(&nonce, t, CLIENT), NonceCheck::Valid);
        assert_eq!(issuer.check(&nonce, t, IpAddr::from([192, 0, 2, 2])), NonceCheck::Invalid);
        assert_eq!(
            issuer.check(&nonce, t, "::ffff:192.0.2.1".parse().unwrap()),
            NonceCheck::Valid,
            "v4-mapped is the same host"
        );
        assert_eq!(issuer.check(&nonce, t, "2001:db8::1".parse().unwrap()), NonceCheck::Invalid);
    }

    #[test]
    fn nonce_counts_must_grow_and_replays_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let issuer = NonceIssuer::new([7; 16], Duration::from_secs(30));
        let life = issuer.lifetime();
        let t = Duration::from_secs(100);
        let nonce = issuer.issue(t, CLIENT, &mut rng);
        let mut counts = NonceCounts::default();
        assert_eq!(counts.accept(&nonce, Some("00000001"), t, life), CountCheck::Fresh);
        assert_eq!(counts.accept(&nonce, Some("00000001"), t, life), CountCheck::Replayed, "same nc again");
        assert_eq!(counts.accept(&nonce, Some("00000003"), t, life), CountCheck::Fresh, "gaps are fine");
        assert_eq!(counts.accept(&nonce, Some("00000002"), t, life), CountCheck::Replayed, "going back is not");
        for bad in ["0", "zzzzzzzz", "00000000", "000000001"] {
            assert_eq!(counts.accept(&nonce, Some(bad), t, life), CountCheck::Replayed, "{bad}");
        }
        // Without qop (no nc) a nonce serves one request.
        let other = issuer.issue(t, CLIENT, &mut rng);
        assert_eq!(counts.accept(&other, None, t, life), CountCheck::Fresh);
        assert_eq!(counts.accept(&other, None, t, life), CountCheck::Replayed);
        assert_eq!(counts.len(), 2);
        // Past their lifetime entries go (the issuer calls such nonces stale anyway).
        let later = issuer.issue(t + life * 2, CLIENT, &mut rng);
        assert_eq!(counts.accept(&later, Some("00000001"), t + life * 2, life), CountCheck::Fresh);
        assert_eq!(counts.len(), 1);
    }

    #[test]
    fn nonce_counts_are_bounded_and_forgetting_never_admits_a_replay() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let life = Duration::from_secs(3600);
        let issuer = NonceIssuer::new([7; 16], life);
        let mut counts = NonceCounts::default();
        let first = issuer.issue(Duration::from_millis(1), CLIENT, &mut rng);
        assert_eq!(counts.accept(&first, Some("00000001"), Duration::from_millis(1), life), CountCheck::Fresh);
        let pending = issuer.issue(Duration::from_millis(2), CLIENT, &mut rng);
        for n in 0..MAX_COUNTED_NONCES as u64 {
            let now = Duration::from_millis(10 + n);
            let nonce = issuer.issue(now, CLIENT, &mut rng);
            assert_eq!(counts.accept(&nonce, None, now, life), CountCheck::Fresh);
        }
        assert_eq!(counts.len(), MAX_COUNTED_NONCES);
        let now = Duration::from_secs(100);
        assert_eq!(
            counts.accept(&first, Some("00000001"), now, life),
            CountCheck::Forgotten,
            "evicted, not replayable"
        );
        assert_eq!(
            counts.accept(&pending, Some("00000001"), now, life),
            CountCheck::Forgotten,
            "older than what is kept"
        );
    }

    #[test]
    fn whole_flow_from_challenge_to_verification() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let issuer = NonceIssuer::new([1; 16], Duration::from_secs(60));
        let now = Duration::from_secs(5);
        let header = Challenge::new("switch.test", issuer.issue(now, CLIENT, &mut rng), false).to_string();
        let challenge = Challenge::parse(&header).unwrap();
        let creds = Authorization::answer(&challenge, ("bob", "pw"), "INVITE", "sip:200@switch.test", 1, &mut rng)
            .unwrap()
            .to_string();
        let auth = Authorization::parse(&creds).unwrap();
        assert_eq!(issuer.check(&auth.nonce, now + Duration::from_secs(1), CLIENT), NonceCheck::Valid);
        assert!(auth.verify("INVITE", "pw"));
    }

    fn opt(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
        proptest::option::of(s)
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*|.*") {
            let _ = Challenge::parse(&s);
            let _ = Authorization::parse(&s);
            let _ = Challenge::parse(&format!("Digest {s}"));
            let _ = Authorization::parse(&format!("Digest realm=\"{s}"));
            let issuer = NonceIssuer::new([0; 16], Duration::from_secs(1));
            let _ = issuer.check(&s, Duration::ZERO, CLIENT);
        }

        #[test]
        fn param_soup_never_panics(
            parts in proptest::collection::vec("[a-z]{1,8}|=|,|\"|\\\\| |\t|\r\n|é|[^\"]{0,5}", 0..40),
        ) {
            let _ = Authorization::parse(&format!("Digest {}", parts.concat()));
        }

        #[test]
        fn authorization_round_trips(
            username in "[^\\p{Cc}]{0,20}", realm in "[^\\p{Cc}]{0,20}", nonce in "[ -~]{0,20}",
            uri in "[ -~]{0,30}", response in "[0-9a-f]{32}", algorithm in opt("[ -~]{0,8}".prop_map(String::from)),
            cnonce in opt("[ -~]{0,10}".prop_map(String::from)), opaque in opt("\\PC{0,10}".prop_map(String::from)),
            qop in opt("[ -~]{0,6}".prop_map(String::from)), nc in opt("[0-9a-f]{8}".prop_map(String::from)),
        ) {
            let auth = Authorization { username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc };
            prop_assert_eq!(Authorization::parse(&auth.to_string()), Ok(auth));
        }

        #[test]
        fn challenge_round_trips(
            realm in "\\PC{0,20}", nonce in "[ -~]{0,20}", opaque in opt("[ -~]{0,10}".prop_map(String::from)),
            algorithm in opt("[ -~]{0,8}".prop_map(String::from)), qop in opt("[ -~]{0,12}".prop_map(String::from)),
            stale in any::<bool>(),
        ) {
            let c = Challenge { realm, nonce, opaque, algorithm, qop, stale };
            prop_assert_eq!(Challenge::parse(&c.to_string()), Ok(c));
        }

        #[test]
        fn issued_nonces_check_valid(ms in 0u64..1 << 50, seed in any::<u64>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let issuer = NonceIssuer::new([seed as u8; 16], Duration::from_secs(10));
            let now = Duration::from_millis(ms);
            let nonce = issuer.issue(now, CLIENT, &mut rng);
            prop_assert_eq!(issuer.check(&nonce, now + Duration::from_secs(10), CLIENT), NonceCheck::Valid);
            prop_assert_eq!(issuer.check(&nonce, now + Duration::from_millis(10_001), CLIENT), NonceCheck::Stale);
        }
    }
}
