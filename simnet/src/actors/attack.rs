//! Attackers and crowds: what an exposed SIP server meets every day.
//!
//! - [`Kind::Scanner`] sweeps extensions as svwar does: it learns how the
//!   server answers a user that surely does not exist, then reports every
//!   extension answered differently as found.
//! - [`Kind::Cracker`] guesses one user's password as svcrack does: a
//!   REGISTER, its challenge, an answer with the next guess, at a fixed rate.
//! - [`Kind::Sprayer`] sprays RTP at a range of media ports (rtpbleed) and
//!   counts what comes back to it.
//! - [`Kind::Flood`] sends junk datagrams.
//! - [`Kind::Storm`] is a crowd of real users re-registering at a fixed rate.
//!
//! Each reports its totals once, at `stop`, as an `attack_report` event.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use switch::sip::message::{Message, Response};

use super::sip::{self as text, RequestText};
use super::{Actor, ActorEvent, Transmit};

/// What an attacker does.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Probes `extensions` with `method` (`REGISTER`, `INVITE` or `OPTIONS`).
    Scanner { method: String, extensions: Vec<String> },
    /// Guesses `user`'s password among `guesses`.
    Cracker { user: String, guesses: Vec<String> },
    /// RTP at every even port of `ports` on the target host.
    Sprayer { ports: std::ops::RangeInclusive<u16> },
    /// Random datagrams of up to `max_len` bytes.
    Flood { max_len: usize },
    /// `users` (name, password) registering in turn.
    Storm { users: Vec<(String, String)> },
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Scanner { .. } => "scanner",
            Kind::Cracker { .. } => "cracker",
            Kind::Sprayer { .. } => "sprayer",
            Kind::Flood { .. } => "flood",
            Kind::Storm { .. } => "storm",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttackConfig {
    pub name: String,
    pub kind: Kind,
    /// The attacker's own address and port.
    pub local: SocketAddr,
    /// The target (a SIP listener; for the sprayer, only its IP counts).
    pub target: SocketAddr,
    /// Since the start of the run.
    pub start: Duration,
    pub stop: Duration,
    /// Datagrams (probes, guesses, REGISTERs) per second.
    pub rate: u32,
}

/// One outstanding request of a scanner, cracker or storm, by Call-ID.
#[derive(Clone, Debug)]
struct Pending {
    /// What it was about: the extension, the guess or the user.
    subject: String,
    /// The password to answer a challenge with (cracker: the guess).
    password: Option<String>,
    answered_challenge: bool,
    cseq: u32,
}

pub struct Attacker {
    config: AttackConfig,
    rng: ChaCha20Rng,
    next: Option<Instant>,
    stop_at: Instant,
    /// Position in the extension, guess or user list; datagrams for the others.
    cursor: usize,
    sent: u64,
    answered: u64,
    values: BTreeMap<String, u64>,
    found: BTreeSet<String>,
    pending: BTreeMap<String, Pending>,
    /// Scanner: how the server answers a user that does not exist.
    baseline: Option<u16>,
    reported: bool,
    out: VecDeque<Transmit>,
    events: VecDeque<ActorEvent>,
}

/// Outstanding requests remembered at most (oldest forgotten first).
const MAX_PENDING: usize = 4096;

impl Attacker {
    pub fn new(config: AttackConfig, seed: u64, now: Instant) -> Attacker {
        Attacker {
            rng: ChaCha20Rng::seed_from_u64(seed),
            next: Some(now + config.start),
            stop_at: now + config.stop,
            cursor: 0,
            sent: 0,
            answered: 0,
            values: BTreeMap::new(),
            found: BTreeSet::new(),
            pending: BTreeMap::new(),
            baseline: None,
            reported: false,
            out: VecDeque::new(),
            events: VecDeque::new(),
            config,
        }
    }

    fn count(&mut self, key: &str) {
        *self.values.entry(key.to_string()).or_default() += 1;
    }

    fn send(&mut self, to: SocketAddr, payload: Vec<u8>) {
        self.sent += 1;
        self.out.push_back(Transmit { port: self.config.local.port(), to, payload });
    }

    fn request(&mut self, method: &str, user: &str, authorization: Option<String>, call_id: &str, cseq: u32) {
        let domain = text::host(self.config.target);
        let uri = if method == "REGISTER" { format!("sip:{domain}") } else { format!("sip:{user}@{domain}") };
        let aor = format!("<sip:{user}@{domain}>");
        let from = format!("{aor};tag={}", text::token(&mut self.rng));
        let contact = format!("<sip:{user}@{}>", text::hostport(self.config.local));
        let branch = text::branch(&mut self.rng);
        let request = RequestText {
            method,
            uri: &uri,
            via: self.config.local,
            branch: &branch,
            rport: true,
            from: &from,
            to: &aor,
            call_id,
            cseq,
            contact: Some(&contact),
            extra: &[],
        };
        let bytes = request.render(authorization.as_deref(), None);
        let target = self.config.target;
        self.send(target, bytes);
    }

    /// Starts one probe, guess or registration.
    fn begin(&mut self, subject: String, password: Option<String>, method: &str) {
        let call_id = text::token(&mut self.rng);
        if self.pending.len() >= MAX_PENDING {
            let oldest = self.pending.keys().next().cloned();
            if let Some(k) = oldest {
                self.pending.remove(&k);
            }
        }
        self.pending.insert(
            call_id.clone(),
            Pending { subject: subject.clone(), password, answered_challenge: false, cseq: 1 },
        );
        self.request(method, &subject, None, &call_id, 1);
    }

    /// Runs `f` with the attack's kind borrowed apart from the rest of the
    /// state (long guess lists are never copied).
    fn with_kind(&mut self, f: impl FnOnce(&mut Attacker, &Kind)) {
        let kind = std::mem::replace(&mut self.config.kind, Kind::Flood { max_len: 0 });
        f(self, &kind);
        self.config.kind = kind;
    }

    fn fire(&mut self) {
        self.with_kind(Attacker::fire_kind);
    }

    fn fire_kind(&mut self, kind: &Kind) {
        match kind {
            Kind::Scanner { method, extensions } => {
                if self.baseline.is_none() && self.cursor == 0 {
                    // svwar's first probe: a user no one has.
                    let fake = format!("nonexistent{}", self.rng.next_u32() % 100_000);
                    self.cursor = 1;
                    return self.begin(fake, None, method);
                }
                let Some(ext) = extensions.get(self.cursor - 1).cloned() else { return };
                self.cursor += 1;
                self.begin(ext, None, method);
            }
            Kind::Cracker { user, guesses } => {
                let Some(guess) = guesses.get(self.cursor).cloned() else { return };
                self.cursor += 1;
                self.count("guesses");
                let call_id = text::token(&mut self.rng);
                self.pending.insert(
                    call_id.clone(),
                    Pending { subject: user.clone(), password: Some(guess), answered_challenge: false, cseq: 1 },
                );
                self.request("REGISTER", user, None, &call_id, 1);
            }
            Kind::Storm { users } => {
                if users.is_empty() {
                    return;
                }
                let (user, password) = users[self.cursor % users.len()].clone();
                self.cursor += 1;
                self.begin(user, Some(password), "REGISTER");
            }
            Kind::Sprayer { ports } => {
                let span = (u32::from(*ports.end()) - u32::from(*ports.start())) / 2 + 1;
                let port = *ports.start() + ((self.cursor as u32 % span) * 2) as u16;
                self.cursor += 1;
                let mut packet = vec![0x80, 0];
                packet.extend_from_slice(&(self.rng.next_u32() as u16).to_be_bytes());
                packet.extend_from_slice(&self.rng.next_u32().to_be_bytes());
                packet.extend_from_slice(&self.rng.next_u32().to_be_bytes());
                packet.resize(172, 0xff);
                let to = SocketAddr::new(self.config.target.ip(), port);
                self.send(to, packet);
            }
            Kind::Flood { max_len } => {
                let len = self.rng.gen_range(1..=(*max_len).max(1));
                let mut junk = vec![0u8; len];
                self.rng.fill_bytes(&mut junk);
                let target = self.config.target;
                self.send(target, junk);
            }
        }
    }

    fn on_response(&mut self, response: &Response) {
        let Some(call_id) = response.headers.get("Call-ID").map(str::to_string) else { return };
        let Some(mut p) = self.pending.remove(&call_id) else { return };
        if response.status < 200 {
            self.pending.insert(call_id, p);
            return;
        }
        self.answered += 1;
        let cracking = matches!(self.config.kind, Kind::Cracker { .. });
        match &self.config.kind {
            Kind::Scanner { .. } => match self.baseline {
                None => self.baseline = Some(response.status),
                Some(b) if b != response.status => {
                    self.found.insert(p.subject);
                }
                Some(_) => {}
            },
            Kind::Cracker { .. } | Kind::Storm { .. } => match response.status {
                401 | 407 if !p.answered_challenge => {
                    let password = p.password.clone().unwrap_or_default();
                    let uri = format!("sip:{}", text::host(self.config.target));
                    let Some(auth) = text::answer(response, &p.subject, &password, "REGISTER", &uri, &mut self.rng)
                    else {
                        return;
                    };
                    p.answered_challenge = true;
                    p.cseq += 1;
                    let (subject, cseq) = (p.subject.clone(), p.cseq);
                    self.pending.insert(call_id.clone(), p);
                    self.request("REGISTER", &subject, Some(auth), &call_id, cseq);
                }
                200..=299 => {
                    self.count("accepted");
                    if cracking {
                        self.found.insert(p.password.unwrap_or_default());
                    }
                }
                503 => self.count("refused_503"),
                _ => self.count("refused"),
            },
            _ => {}
        }
    }

    fn report(&mut self) {
        if self.reported {
            return;
        }
        self.reported = true;
        self.events.push_back(ActorEvent::AttackReport {
            kind: self.config.kind.name().to_string(),
            sent: self.sent,
            answered: self.answered,
            values: std::mem::take(&mut self.values),
            found: self.found.len() as u64,
            found_items: std::mem::take(&mut self.found).into_iter().collect(),
        });
    }
}

impl Actor for Attacker {
    fn ports(&self) -> Vec<u16> {
        vec![self.config.local.port()]
    }

    fn handle_input(&mut self, _now: Instant, _port: u16, _from: SocketAddr, data: &[u8]) {
        match self.config.kind {
            Kind::Sprayer { .. } | Kind::Flood { .. } => {
                self.answered += 1;
                self.count("received");
            }
            _ => {
                if let Ok(Message::Response(r)) = Message::parse(data) {
                    self.on_response(&r);
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.stop_at {
            self.next = None;
            return self.report();
        }
        let Some(at) = self.next.filter(|t| *t <= now) else { return };
        let gap = Duration::from_secs(1) / self.config.rate.max(1);
        // At high rates several datagrams fall in one step: send them all.
        let mut at = at;
        while at <= now {
            self.fire();
            at += gap;
        }
        self.next = Some(at);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.reported {
            return None;
        }
        Some(self.next.map_or(self.stop_at, |n| n.min(self.stop_at)))
    }

    fn poll_event(&mut self) -> Option<ActorEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attacker(kind: Kind, rate: u32) -> Attacker {
        let config = AttackConfig {
            name: "mallory".into(),
            kind,
            local: "192.168.0.9:5060".parse().unwrap(),
            target: "192.168.0.1:5060".parse().unwrap(),
            start: Duration::from_secs(1),
            stop: Duration::from_secs(3),
            rate,
        };
        Attacker::new(config, 7, Instant::now())
    }

    fn run(a: &mut Attacker, answer: impl Fn(&[u8]) -> Option<Vec<u8>>) -> ActorEvent {
        while let Some(t) = a.poll_timeout() {
            a.handle_timeout(t);
            while let Some(out) = a.poll_transmit() {
                if let Some(reply) = answer(&out.payload) {
                    a.handle_input(t, out.port, out.to, &reply);
                }
            }
            if let Some(e) = a.poll_event() {
                return e;
            }
        }
        panic!("no report")
    }

    fn reply(request: &[u8], status: u16, extra: &str) -> Vec<u8> {
        let Ok(Message::Request(r)) = Message::parse(request) else { panic!("not a request") };
        let mut t = format!("SIP/2.0 {status} X\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            t.push_str(&format!("{name}: {}\r\n", r.headers.get(name).unwrap()));
        }
        t.push_str(extra);
        t.push_str("Content-Length: 0\r\n\r\n");
        t.into_bytes()
    }

    #[test]
    fn sends_at_its_rate_between_start_and_stop() {
        let mut a = attacker(Kind::Flood { max_len: 64 }, 500);
        let ActorEvent::AttackReport { sent, answered, .. } = run(&mut a, |_| None) else { panic!() };
        assert_eq!((sent, answered), (1000, 0), "500/s for 2 s");
    }

    #[test]
    fn a_scanner_reports_extensions_answered_unlike_a_missing_user() {
        let kind = Kind::Scanner { method: "REGISTER".into(), extensions: vec!["1000".into(), "1001".into()] };
        let mut a = attacker(kind, 10);
        // A server that tells users apart: 401 for 1001, 404 for the rest.
        let e = run(&mut a, |req| {
            let text = String::from_utf8_lossy(req);
            Some(reply(req, if text.contains("To: <sip:1001@") { 401 } else { 404 }, ""))
        });
        let ActorEvent::AttackReport { found, found_items, .. } = e else { panic!() };
        assert_eq!((found, found_items), (1, vec!["1001".to_string()]));
    }

    #[test]
    fn a_cracker_answers_each_challenge_with_its_guess() {
        let kind = Kind::Cracker { user: "1001".into(), guesses: (0..30).map(|n| format!("{n:04}")).collect() };
        let mut a = attacker(kind, 10);
        let challenge = "WWW-Authenticate: Digest realm=\"x\", nonce=\"n\", qop=\"auth\"\r\n";
        let e = run(&mut a, |req| {
            let Ok(Message::Request(r)) = Message::parse(req) else { return None };
            match r.headers.get("Authorization") {
                None => Some(reply(req, 401, challenge)),
                Some(h) => {
                    let ok = switch::sip::digest::Authorization::parse(h).unwrap().verify("REGISTER", "0017");
                    Some(reply(req, if ok { 200 } else { 403 }, ""))
                }
            }
        });
        let ActorEvent::AttackReport { found_items, values, .. } = e else { panic!() };
        assert_eq!(found_items, vec!["0017".to_string()]);
        assert_eq!(values.get("guesses"), Some(&20), "10/s for 2 s");
    }
}
