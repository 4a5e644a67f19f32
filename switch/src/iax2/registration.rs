//! The client role of registration: one [`Registration`] per `register =>`
//! line, keeping us registered to a remote server for as long as we run.
//!
//! It never gives up: silence and rejection both lead to a retry after a
//! bounded, jittered backoff, and a changed configuration restarts it at once,
//! so no failure ever needs a restart of the switch to recover from.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use super::auth;
use super::ie::Ie;
use crate::config::RegisterLine;
use crate::event::Event;

/// REFRESH we ask for, as Asterisk's default registration interval.
pub const DEFAULT_REFRESH: u16 = 60;
/// First retry after silence; doubles per failure up to [`Registration::backoff_cap`].
const TIMEOUT_BACKOFF: Duration = Duration::from_secs(2);
/// First retry after a rejection: slower, a wrong secret will not fix itself quickly.
const REJECT_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// Waiting for `next_attempt`.
    Idle,
    /// A REGREQ exchange is under way on dialog `call`.
    Requesting {
        call: u16,
    },
    Registered {
        refresh: u16,
        until: Instant,
    },
    Rejected {
        cause: String,
    },
    TimedOut,
    /// The server's host name did not resolve.
    Unresolved,
}

impl RegState {
    pub fn name(&self) -> &'static str {
        match self {
            RegState::Idle => "Idle",
            RegState::Requesting { .. } => "Request Sent",
            RegState::Registered { .. } => "Registered",
            RegState::Rejected { .. } => "Rejected",
            RegState::TimedOut => "Timeout",
            RegState::Unresolved => "Unresolved",
        }
    }
}

pub struct Registration {
    pub line: RegisterLine,
    pub server: Option<SocketAddr>,
    pub state: RegState,
    /// Failures since the last success.
    failures: u32,
    /// Attempts since the last success (for the trace).
    attempts: u32,
    pub next_attempt: Option<Instant>,
    /// Whether the current exchange already carried a call token.
    token_sent: bool,
    /// The server's address as it saw us, from the last REGACK.
    pub apparent: Option<SocketAddr>,
    /// When to POKE the server next to keep a NAT binding open (only when
    /// the REGACK showed that one is on the way).
    pub keepalive_at: Option<Instant>,
}

impl Registration {
    pub fn new(line: RegisterLine, server: Option<SocketAddr>, now: Instant) -> Self {
        let state = if server.is_some() { RegState::Idle } else { RegState::Unresolved };
        Registration {
            line,
            server,
            state,
            failures: 0,
            attempts: 0,
            next_attempt: Some(now),
            token_sent: false,
            apparent: None,
            keepalive_at: None,
        }
    }

    pub fn label(&self) -> String {
        format!("{}:{}", self.line.host, self.line.port)
    }

    pub fn call(&self) -> Option<u16> {
        match self.state {
            RegState::Requesting { call } => Some(call),
            _ => None,
        }
    }

    /// The IEs of a REGREQ; `token` is `Some(empty)` to ask for a call token.
    pub fn regreq_ies(&self, token: Option<Vec<u8>>, auth: Option<Ie>) -> Vec<Ie> {
        let mut ies = vec![Ie::Username(self.line.username.clone()), Ie::Refresh(DEFAULT_REFRESH)];
        ies.extend(auth);
        ies.extend(token.map(Ie::CallToken));
        ies
    }

    /// A REGREQ exchange starts on dialog `call`.
    pub fn started(&mut self, call: u16, events: &mut VecDeque<Event>) {
        self.state = RegState::Requesting { call };
        self.next_attempt = None;
        self.token_sent = false;
        self.attempts += 1;
        events.push_back(Event::RegistrationSent {
            server: self.label(),
            username: self.line.username.clone(),
            attempt: self.attempts,
        });
    }

    /// The server sent a CALLTOKEN: the request is to be resent carrying it, once.
    pub fn take_token(&mut self) -> bool {
        !std::mem::replace(&mut self.token_sent, true)
    }

    /// The answer to REGAUTH: MD5 if offered, else plaintext if offered.
    pub fn auth_response(&self, methods: u16, challenge: &str) -> Result<Option<Ie>, String> {
        let Some(secret) = &self.line.secret else {
            return Err("server asks for authentication but the register line has no secret".into());
        };
        if methods & 0x02 != 0 {
            Ok(Some(Ie::Md5Result(auth::md5_response(challenge, secret))))
        } else if methods & 0x01 != 0 {
            Ok(Some(Ie::Password(secret.clone())))
        } else {
            Err(format!("server offers no authentication method we support (AUTHMETHODS {methods:#x})"))
        }
    }

    /// A REGACK granted `refresh` seconds; `keepalive` is the interval at
    /// which to keep a NAT binding open, when the REGACK showed one.
    pub fn registered(
        &mut self,
        now: Instant,
        refresh: u16,
        apparent: Option<SocketAddr>,
        keepalive: Option<Duration>,
        events: &mut VecDeque<Event>,
    ) {
        self.keepalive_at = keepalive.map(|k| now + k);
        let refresh = refresh.max(1);
        self.state = RegState::Registered { refresh, until: now + Duration::from_secs(refresh.into()) };
        // Refresh well before the server lets the registration expire.
        self.next_attempt = Some(now + Duration::from_secs(u64::from(refresh)) * 5 / 6);
        self.failures = 0;
        self.attempts = 0;
        self.apparent = apparent;
        events.push_back(Event::Registered {
            server: self.label(),
            username: self.line.username.clone(),
            refresh: refresh.into(),
        });
    }

    pub fn rejected(&mut self, now: Instant, cause: String, rng: &mut impl Rng, events: &mut VecDeque<Event>) {
        events.push_back(Event::RegistrationRejected {
            server: self.label(),
            username: self.line.username.clone(),
            cause: cause.clone(),
        });
        self.state = RegState::Rejected { cause };
        self.schedule_retry(now, REJECT_BACKOFF, rng);
    }

    pub fn timed_out(&mut self, now: Instant, rng: &mut impl Rng, events: &mut VecDeque<Event>) {
        self.state = RegState::TimedOut;
        let retry_in = self.schedule_retry(now, TIMEOUT_BACKOFF, rng);
        events.push_back(Event::RegistrationTimeout {
            server: self.label(),
            username: self.line.username.clone(),
            retry_in_ms: retry_in.as_millis() as u64,
        });
    }

    /// Retry soon: the server came back (its qualify went OK again) and may
    /// have lost our registration.
    pub fn retry_now(&mut self, now: Instant) {
        if !matches!(self.state, RegState::Requesting { .. }) {
            self.next_attempt = Some(now);
        }
    }

    fn schedule_retry(&mut self, now: Instant, base: Duration, rng: &mut impl Rng) -> Duration {
        self.failures += 1;
        let exp = base.saturating_mul(1u32 << self.failures.saturating_sub(1).min(16));
        let delay = exp.min(Self::backoff_cap());
        // Up to 10% jitter so that many registrations do not retry in lockstep.
        let jitter = delay.mul_f64(rng.gen_range(0.0..0.1));
        let delay = delay + jitter;
        self.next_attempt = Some(now + delay);
        delay
    }

    /// Longest wait between attempts: half the refresh interval, so a server that
    /// comes back is registered to again within one refresh interval.
    pub fn backoff_cap() -> Duration {
        Duration::from_secs(u64::from(DEFAULT_REFRESH) / 2)
    }
}
