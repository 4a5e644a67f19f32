//! The client role of SIP registration: one [`GatewayRegistration`] per
//! `[sip.gateways.NAME]`, keeping the switch registered upstream for as long
//! as it runs (RFC 3261 10.2), as a FreeSWITCH gateway does.
//!
//! Sans IO: it builds REGISTER requests and reads the responses; the
//! endpoint carries each request in a client transaction and tells it when
//! one timed out. Like the IAX2 registration it never gives up: silence and
//! refusals lead to a bounded, jittered back-off, and a 401/407 challenge is
//! answered once per request (a second challenge for the same credentials
//! means they are wrong).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use super::digest::{Authorization, Challenge};
use super::header::Method;
use super::message::{Headers, Request, Response};
use super::transaction;
use super::uri::Uri;
use crate::config::SipGateway;

/// First retry after silence; doubles per failure up to [`MAX_BACKOFF`].
const TIMEOUT_BACKOFF: Duration = Duration::from_secs(2);
/// First retry after a refusal: a wrong password will not fix itself quickly.
const REFUSED_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where a gateway registration stands, as `sip show gateways` says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayState {
    /// Waiting for the next attempt.
    Idle,
    /// A REGISTER is out; its client transaction key.
    Trying {
        key: String,
    },
    Registered {
        until: Instant,
    },
    Refused {
        status: u16,
    },
    TimedOut,
    /// The proxy's host name did not resolve.
    Unresolved,
    /// `register = false`: used for calls only.
    NoRegister,
}

impl GatewayState {
    pub fn name(&self) -> &'static str {
        match self {
            GatewayState::Idle => "Idle",
            GatewayState::Trying { .. } => "Trying",
            GatewayState::Registered { .. } => "Registered",
            GatewayState::Refused { .. } => "Refused",
            GatewayState::TimedOut => "Timeout",
            GatewayState::Unresolved => "Unresolved",
            GatewayState::NoRegister => "NOREG",
        }
    }
}

/// What a response did to the registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Registered for this many seconds.
    Registered { expires: u32 },
    /// Challenged: send this REGISTER with credentials now.
    Retry(Box<Request>),
    /// Refused; the next attempt is in `retry_in`.
    Refused { status: u16, retry_in: Duration },
    /// A provisional or unrelated response.
    Nothing,
}

pub struct GatewayRegistration {
    pub gateway: SipGateway,
    pub server: Option<SocketAddr>,
    pub state: GatewayState,
    pub next_attempt: Option<Instant>,
    call_id: String,
    tag: String,
    cseq: u32,
    failures: u32,
    /// Credentials were sent with the request now out.
    answered_challenge: bool,
}

impl GatewayRegistration {
    pub fn new(gateway: SipGateway, server: Option<SocketAddr>, now: Instant, rng: &mut impl RngCore) -> Self {
        let state = match (server, gateway.register) {
            (None, _) => GatewayState::Unresolved,
            (Some(_), false) => GatewayState::NoRegister,
            (Some(_), true) => GatewayState::Idle,
        };
        GatewayRegistration {
            call_id: transaction::new_call_id(rng, ""),
            tag: transaction::new_tag(rng),
            cseq: 0,
            next_attempt: server.filter(|_| gateway.register).map(|_| now),
            gateway,
            server,
            state,
            failures: 0,
            answered_challenge: false,
        }
    }

    /// The REGISTER to send now, if one is due. `local` is our address as
    /// written in Via and Contact; `port` our SIP port.
    pub fn poll_request(&mut self, now: Instant, local: IpAddr, port: u16, rng: &mut impl RngCore) -> Option<Request> {
        if self.next_attempt.is_none_or(|t| t > now) || self.server.is_none() {
            return None;
        }
        self.next_attempt = None;
        self.answered_challenge = false;
        Some(self.register(local, port, None, rng))
    }

    /// Records the key of the transaction carrying the request just built.
    pub fn sent(&mut self, key: String) {
        self.state = GatewayState::Trying { key };
    }

    /// The final (or provisional) response to our REGISTER.
    pub fn on_response(
        &mut self,
        now: Instant,
        response: &Response,
        local: IpAddr,
        port: u16,
        rng: &mut impl RngCore,
    ) -> Outcome {
        match response.status {
            100..=199 => Outcome::Nothing,
            200..=299 => {
                let expires = granted(response, self.gateway.expires);
                self.failures = 0;
                let until = now + Duration::from_secs(u64::from(expires));
                self.state = GatewayState::Registered { until };
                // Refresh well before the binding lapses, as Asterisk does at 5/6.
                self.next_attempt = Some(now + Duration::from_secs(u64::from(expires)) * 5 / 6);
                Outcome::Registered { expires }
            }
            401 | 407 if !self.answered_challenge => {
                let header = if response.status == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
                let Some(challenge) = response.headers.get(header).and_then(|v| Challenge::parse(v).ok()) else {
                    return self.refused(now, response.status, rng);
                };
                self.answered_challenge = true;
                Outcome::Retry(Box::new(self.register(local, port, Some((&challenge, response.status == 407)), rng)))
            }
            status => self.refused(now, status, rng),
        }
    }

    /// Our REGISTER's transaction timed out.
    pub fn on_timeout(&mut self, now: Instant, rng: &mut impl RngCore) -> Duration {
        self.failures += 1;
        self.state = GatewayState::TimedOut;
        let wait = backoff(TIMEOUT_BACKOFF, self.failures, rng);
        self.next_attempt = Some(now + wait);
        wait
    }

    fn refused(&mut self, now: Instant, status: u16, rng: &mut impl RngCore) -> Outcome {
        self.failures += 1;
        self.state = GatewayState::Refused { status };
        let retry_in = backoff(REFUSED_BACKOFF, self.failures, rng);
        self.next_attempt = Some(now + retry_in);
        Outcome::Refused { status, retry_in }
    }

    fn register(
        &mut self,
        local: IpAddr,
        port: u16,
        challenge: Option<(&Challenge, bool)>,
        rng: &mut impl RngCore,
    ) -> Request {
        self.cseq = self.cseq.wrapping_add(1);
        let g = &self.gateway;
        let domain = if g.host.contains(':') { format!("[{}]", g.host) } else { g.host.clone() };
        let uri = if g.port == 5060 { format!("sip:{domain}") } else { format!("sip:{domain}:{}", g.port) };
        let ours = SocketAddr::new(local, port);
        let aor = format!("<sip:{}@{domain}>", g.username);
        let mut headers = Headers::default();
        headers.push("Via", format!("SIP/2.0/UDP {ours};branch={};rport", transaction::new_branch(rng)));
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{aor};tag={}", self.tag));
        headers.push("To", aor);
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{} REGISTER", self.cseq));
        headers.push("Contact", format!("<sip:{}@{ours}>", g.username));
        headers.push("Expires", g.expires.to_string());
        headers.push("User-Agent", super::endpoint::USER_AGENT);
        if let Some((challenge, proxy)) = challenge {
            let answer = Authorization::answer(challenge, (&g.username, &g.password), "REGISTER", &uri, 1, rng);
            if let Ok(answer) = answer {
                headers.push(if proxy { "Proxy-Authorization" } else { "Authorization" }, answer.to_string());
            }
        }
        let uri = Uri::parse(&uri).unwrap_or_else(|_| Uri::sip(None, domain));
        Request { method: Method::Register, uri, headers, body: Vec::new() }
    }
}

/// The interval the registrar granted: our Contact's `expires` in the 200,
/// else its Expires header, else what we asked.
fn granted(response: &Response, asked: u32) -> u32 {
    let from_contact = match response.contact() {
        Ok(Some(super::header::Contact::Addrs(addrs))) => addrs.iter().filter_map(|a| a.expires()).min(),
        _ => None,
    };
    from_contact.or(response.expires()).filter(|e| *e > 0).unwrap_or(asked).max(1)
}

/// `first × 2^(failures-1)`, capped, with ±20 % jitter so gateways that failed
/// together do not retry together.
fn backoff(first: Duration, failures: u32, rng: &mut impl RngCore) -> Duration {
    let base = first.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    base.mul_f64(rng.gen_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn gateway() -> SipGateway {
        SipGateway {
            name: "provider".into(),
            host: "192.0.2.50".into(),
            port: 5060,
            username: "4411".into(),
            password: "pw".into(),
            expires: 600,
            register: true,
        }
    }

    fn reply(request: &Request, status: u16, extra: &[(&str, &str)]) -> Response {
        let mut r = Response::to_request(request, status, "x");
        for (k, v) in extra {
            r.headers.push(*k, *v);
        }
        // Through the wire and back, as the endpoint sees it.
        match Message::parse(&r.encode()) {
            Ok(Message::Response(r)) => r,
            _ => panic!("response does not parse"),
        }
    }

    #[test]
    fn challenge_answer_register_and_refresh() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let t0 = Instant::now();
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        let server = Some("192.0.2.50:5060".parse().unwrap());
        let mut g = GatewayRegistration::new(gateway(), server, t0, &mut rng);
        let first = g.poll_request(t0, local, 5060, &mut rng).unwrap();
        assert_eq!(first.uri.to_string(), "sip:192.0.2.50");
        assert!(first.headers.get("Authorization").is_none());
        assert!(g.poll_request(t0, local, 5060, &mut rng).is_none(), "one at a time");

        let challenge = "Digest realm=\"p\", nonce=\"abc\", qop=\"auth\"";
        let Outcome::Retry(second) =
            g.on_response(t0, &reply(&first, 401, &[("WWW-Authenticate", challenge)]), local, 5060, &mut rng)
        else {
            panic!("expected a retry")
        };
        assert_eq!(second.cseq().unwrap().seq, 2);
        assert_eq!(second.call_id().unwrap(), first.call_id().unwrap(), "one Call-ID for the registration");
        let auth = Authorization::parse(second.headers.get("Authorization").unwrap()).unwrap();
        assert!(auth.verify("REGISTER", "pw"));

        // A second challenge for the same credentials: refused, retried later.
        let again = g.on_response(t0, &reply(&second, 401, &[("WWW-Authenticate", challenge)]), local, 5060, &mut rng);
        assert!(matches!(again, Outcome::Refused { status: 401, .. }), "{again:?}");

        let third = g.poll_request(t0 + Duration::from_secs(40), local, 5060, &mut rng).unwrap();
        let ok = reply(&third, 200, &[("Contact", "<sip:4411@192.0.2.1:5060>;expires=120")]);
        assert_eq!(g.on_response(t0, &ok, local, 5060, &mut rng), Outcome::Registered { expires: 120 });
        assert_eq!(g.next_attempt, Some(t0 + Duration::from_secs(100)), "refresh at 5/6");
    }

    #[test]
    fn silence_backs_off_and_never_gives_up() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let t0 = Instant::now();
        let mut g = GatewayRegistration::new(gateway(), Some("192.0.2.50:5060".parse().unwrap()), t0, &mut rng);
        let mut waits = Vec::new();
        for _ in 0..12 {
            waits.push(g.on_timeout(t0, &mut rng));
        }
        assert!(waits[0] >= Duration::from_millis(1600) && waits[0] <= Duration::from_millis(2400), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF.mul_f64(1.2)), "{waits:?}");
        assert!(g.next_attempt.is_some());
        let unresolved = GatewayRegistration::new(gateway(), None, t0, &mut rng);
        assert_eq!(unresolved.state, GatewayState::Unresolved);
        let calls_only = SipGateway { register: false, ..gateway() };
        let mut g = GatewayRegistration::new(calls_only, Some("192.0.2.50:5060".parse().unwrap()), t0, &mut rng);
        assert_eq!((g.state.name(), g.next_attempt), ("NOREG", None));
        assert!(g.poll_request(t0, "192.0.2.1".parse().unwrap(), 5060, &mut rng).is_none());
    }
}
