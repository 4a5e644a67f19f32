//! SIP transactions (RFC 3261 section 17), with the "Accepted" state RFC 6026
//! adds to the INVITE server transaction.
//!
//! A transaction is what makes SIP work over lossy UDP: it retransmits
//! requests (client side) or the last response (server side), absorbs the
//! peer's retransmissions, and tells its user (the TU: a call, a
//! registration) once about each new response and about how it ended.
//!
//! Like the rest of the switch these are sans-IO state machines: they are fed
//! `(now, input)`, return the bytes to send, and are asked for their next
//! deadline with `poll_timeout` and woken with `handle_timeout`. They hold
//! messages as opaque encoded bytes, so they do not depend on the message
//! parser; the caller extracts the few facts they need (status codes) and
//! matches messages to transactions (branch, method, sent-by: see
//! [`is_rfc3261_branch`]).
//!
//! The four kinds are one type, [`Transaction`]: what RFC 3261 gives them all
//! (a message one timer resends, a timer that ends each state, the events,
//! the termination) is written once, and each [`Kind`] adds its states and
//! its transition rules.
//!
//! Every transaction reports its end exactly once with
//! [`TransactionEvent::Terminated`], preceded by [`TransactionEvent::TimedOut`],
//! [`TransactionEvent::NoAckFor2xx`] or [`TransactionEvent::TransportError`]
//! when it ended abnormally; the caller can drop it after that event. After
//! termination a transaction never produces output again.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use rand::RngCore;

/// The magic cookie that marks a branch built by RFC 3261 rules (section 8.1.1.7).
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// RFC 3261 17.2.1: an INVITE server transaction whose TU has not answered
/// within this long should send a "100 Trying". The transaction does not do
/// it itself because it cannot build a response; the caller does, through
/// [`InviteServerTransaction::respond`].
pub const TRYING_DELAY: Duration = Duration::from_millis(200);

/// Timer D (RFC 3261 17.1.1.2): how long an INVITE client transaction waits
/// for retransmitted final responses over an unreliable transport, to re-ACK
/// them. "At least 32 s"; with a T1 above the default it is 64*T1, to cover
/// the server's Timer H.
pub const TIMER_D: Duration = Duration::from_secs(32);

/// The RFC 3261 timer base values (table 4). Every other timer derives from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate: first retransmission interval; 64*T1 bounds a transaction.
    pub t1: Duration,
    /// Cap on the retransmission interval of non-INVITE requests and of responses.
    pub t2: Duration,
    /// How long a message may linger in the network.
    pub t4: Duration,
}

impl Default for Timers {
    /// The RFC's recommended values: 500 ms, 4 s, 5 s.
    fn default() -> Self {
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl Timers {
    /// 64*T1, the lifetime bound behind Timers B, F, H, J and L.
    pub fn timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Whether the transport delivers reliably (TCP, TLS) or not (UDP). A reliable
/// transport does the retransmitting itself, so Timers A, E and G are not used
/// and the linger Timers D, I, J and K are zero (RFC 3261 table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unreliable,
    Reliable,
}

/// How a transaction ended, or that it did; polled with `poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionEvent {
    /// No answer: Timer B or F on a client (the request got no final response,
    /// which the TU treats as a 408), Timer H on an INVITE server (no ACK for a
    /// final non-2xx response).
    TimedOut,
    /// Timer L fired and the 2xx to an INVITE was never acknowledged; the UAS
    /// should end the dialog with a BYE (RFC 3261 13.3.1.4).
    NoAckFor2xx,
    /// The caller reported that the transport could not send (RFC 3261 17.1.4, 17.2.4).
    TransportError,
    /// The transaction is over: reported exactly once, last; it can be dropped.
    Terminated,
}

/// What an ACK did to an INVITE server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The ACK for our final non-2xx response: the transaction is confirmed.
    /// Nothing for the TU; the call had already failed.
    Confirmed,
    /// The first ACK for our 2xx: the call is established (RFC 6026). The TU
    /// should treat it as the ACK of the dialog.
    Acknowledged2xx,
    /// A retransmitted ACK, absorbed by the transaction.
    Absorbed,
    /// No ACK was expected in this state (no final response yet, or the
    /// transaction is over): the caller decides (usually: drop it).
    Unexpected,
}

/// What a response did to an INVITE client transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOutcome {
    /// The response is new: hand it to the TU. For a 2xx the transaction has
    /// terminated and the TU builds and sends the ACK itself (RFC 3261 13.2.2.4).
    pub pass_up: bool,
    /// Bytes to send now: the ACK for a final non-2xx response, the first time
    /// or again because the response was retransmitted.
    pub send: Option<Vec<u8>>,
}

impl ClientOutcome {
    fn ignored() -> Self {
        ClientOutcome { pass_up: false, send: None }
    }
}

/// `now + d`, without the panic `Instant + Duration` has on overflow (a huge
/// configured T1): a deadline that far out is as good as never.
fn deadline(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d).or_else(|| now.checked_add(FAR)).unwrap_or(now)
}

/// A retransmission timer with doubling interval (Timers A, E, G and the 2xx
/// retransmission of RFC 3261 13.3.1.4).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    at: Instant,
    interval: Duration,
    /// T2 for everything but Timer A, which doubles without bound.
    cap: Option<Duration>,
}

impl Backoff {
    fn start(now: Instant, first: Duration, cap: Option<Duration>) -> Self {
        Backoff { at: deadline(now, first), interval: first, cap }
    }

    /// Schedules the next firing after one at `now`. Measured from `now`
    /// rather than the previous deadline so a late wake-up does not cause a burst.
    fn advance(&mut self, now: Instant) {
        let doubled = self.interval.saturating_mul(2);
        self.interval = match self.cap {
            Some(cap) => doubled.min(cap),
            None => doubled,
        };
        self.at = deadline(now, self.interval);
    }

    /// Leaves the pending firing where it is and makes every later interval
    /// the cap (a doubled cap, capped, is the cap).
    fn hold_at_cap(&mut self) {
        if let Some(cap) = self.cap {
            self.interval = cap;
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn is_provisional(status: u16) -> bool {
    (100..=199).contains(&status)
}

fn is_success(status: u16) -> bool {
    (200..=299).contains(&status)
}

fn is_failure(status: u16) -> bool {
    (300..=699).contains(&status)
}

/// One of the four kinds of transaction of RFC 3261 17: its state diagram,
/// and what it holds besides the message [`Transaction`] retransmits.
pub trait Kind {
    type State: Copy + Eq + fmt::Debug;
    /// The state every transaction ends in, and never leaves.
    const TERMINATED: Self::State;

    /// Bytes held besides the retransmitted message, for memory accounting.
    fn held_bytes(&self) -> usize {
        0
    }

    /// Lets go of what it holds at termination, so that nothing is sent again.
    fn clear(&mut self) {}
}

/// A transaction of kind `K`: what the four kinds share, after quinn-proto's
/// timer table. RFC 3261 17 gives every transaction the same two timers, one
/// that resends a message (A, E, G, or RFC 6026's 2xx retransmission) and one
/// that ends the current state (B, D, F, H, I, J, K, L), so they live here,
/// with the message, the termination and the events for the TU; the
/// `impl Transaction<...>` of each kind holds only its transition rules.
/// Time is what the caller passes in: there is no clock.
#[derive(Debug)]
pub struct Transaction<K: Kind> {
    timers: Timers,
    transport: Transport,
    state: K::State,
    /// What the retransmission timer resends: our request on a client; on a
    /// server the latest response, which also answers a retransmitted request.
    message: Option<Vec<u8>>,
    retransmit: Option<Backoff>,
    end: Option<Instant>,
    /// What the end timer firing tells the TU before [`TransactionEvent::Terminated`]:
    /// an end is abnormal for Timers B, F, H, and for L until the ACK.
    end_report: Option<TransactionEvent>,
    events: VecDeque<TransactionEvent>,
    kind: K,
}

impl<K: Kind> Transaction<K> {
    fn with(timers: Timers, transport: Transport, state: K::State, message: Option<Vec<u8>>, kind: K) -> Self {
        Transaction {
            timers,
            transport,
            state,
            message,
            retransmit: None,
            end: None,
            end_report: None,
            events: VecDeque::new(),
            kind,
        }
    }

    pub fn state(&self) -> K::State {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == K::TERMINATED
    }

    /// Message bytes held, for memory accounting: the latest response; the
    /// request, its unsent first copy and an INVITE's ACK.
    pub fn held_bytes(&self) -> usize {
        self.message.as_ref().map_or(0, Vec::capacity) + self.kind.held_bytes()
    }

    /// The transport failed to send: the transaction ends (RFC 3261 17.1.4,
    /// 17.2.4); a client's TU treats it as a 503.
    pub fn on_transport_error(&mut self) {
        if !self.is_terminated() {
            self.events.push_back(TransactionEvent::TransportError);
            self.terminate();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_terminated() {
            return None;
        }
        earliest(self.retransmit.map(|b| b.at), self.end)
    }

    /// Runs the timers due at `now`; returns a retransmission to send. When
    /// both are due the end wins: nothing is resent by a transaction that is over.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.is_terminated() {
            return None;
        }
        if self.end.is_some_and(|end| now >= end) {
            if let Some(event) = self.end_report.take() {
                self.events.push_back(event);
            }
            self.terminate();
            return None;
        }
        let backoff = self.retransmit.as_mut().filter(|b| now >= b.at)?;
        backoff.advance(now);
        self.message.clone()
    }

    /// The next thing the TU should learn about how the transaction ended.
    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    /// Starts retransmitting at T1, doubling up to `cap`. Only over an
    /// unreliable transport: a reliable one retransmits by itself.
    fn retransmit_from(&mut self, now: Instant, cap: Option<Duration>) {
        self.retransmit = (self.transport == Transport::Unreliable).then(|| Backoff::start(now, self.timers.t1, cap));
    }

    fn end_after(&mut self, now: Instant, after: Duration, report: Option<TransactionEvent>) {
        self.end = Some(deadline(now, after));
        self.end_report = report;
    }

    fn terminate(&mut self) {
        self.state = K::TERMINATED;
        self.retransmit = None;
        self.end = None;
        self.end_report = None;
        self.message = None;
        self.kind.clear();
        self.events.push_back(TransactionEvent::Terminated);
    }
}

/// State of an [`InviteServerTransaction`] (RFC 6026 figure 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    Proceeding,
    /// A 2xx was sent; waiting for its ACK, absorbing INVITE and ACK retransmissions.
    Accepted,
    /// A final non-2xx was sent; retransmitting it until the ACK arrives.
    Completed,
    /// The ACK for the non-2xx arrived; absorbing its retransmissions.
    Confirmed,
    Terminated,
}

/// The INVITE server kind holds nothing of its own: whether its 2xx was
/// acknowledged is whether Timer L would still report that it was not.
#[derive(Debug)]
pub struct InviteServer;

impl Kind for InviteServer {
    type State = InviteServerState;
    const TERMINATED: InviteServerState = InviteServerState::Terminated;
}

/// The server side of an INVITE: answers INVITE retransmissions with the
/// latest response, retransmits final responses over UDP until they are
/// acknowledged, and absorbs the ACKs.
///
/// Created on receipt of an INVITE, in Proceeding. The TU should send a
/// provisional response within [`TRYING_DELAY`] (RFC 3261 17.2.1) if it
/// cannot answer at once; this transaction does not do it for it.
///
/// Unlike RFC 3261, where the transaction ends on sending a 2xx and the UAS
/// core retransmits it (13.3.1.4), this follows RFC 6026: the transaction
/// moves to Accepted and retransmits the 2xx itself (T1 doubling to T2, over
/// unreliable transports) until the ACK arrives, then lingers until Timer L
/// (64*T1) to absorb retransmitted INVITEs and ACKs.
pub type InviteServerTransaction = Transaction<InviteServer>;

impl Transaction<InviteServer> {
    /// A transaction for an INVITE just received at `now`.
    pub fn new(_now: Instant, timers: Timers, transport: Transport) -> Self {
        Transaction::with(timers, transport, InviteServerState::Proceeding, None, InviteServer)
    }

    /// Sends the TU's response with `status`, encoded as `encoded`. Returns the
    /// bytes to send, or `None` when the state does not allow this response
    /// (a second final response, anything after the end, a status outside
    /// 100-699): the TU's response is then discarded.
    pub fn respond(&mut self, now: Instant, status: u16, encoded: Vec<u8>) -> Option<Vec<u8>> {
        let timeout = self.timers.timeout();
        match self.state {
            InviteServerState::Proceeding if is_provisional(status) => {}
            InviteServerState::Proceeding if is_success(status) => {
                self.state = InviteServerState::Accepted;
                self.retransmit_from(now, Some(self.timers.t2));
                // Timer L.
                self.end_after(now, timeout, Some(TransactionEvent::NoAckFor2xx));
            }
            // RFC 6026 7.1: further 2xx from the TU in Accepted go out; they
            // replace what is retransmitted but keep its schedule.
            InviteServerState::Accepted if is_success(status) => {}
            InviteServerState::Proceeding if is_failure(status) => {
                self.state = InviteServerState::Completed;
                // Timers G and H.
                self.retransmit_from(now, Some(self.timers.t2));
                self.end_after(now, timeout, Some(TransactionEvent::TimedOut));
            }
            _ => return None,
        }
        self.message = Some(encoded.clone());
        Some(encoded)
    }

    /// The INVITE arrived again. Returns the latest response to resend in
    /// Proceeding (if one was sent) and Completed; retransmissions are absorbed
    /// in the other states (RFC 6026 7.1 for Accepted).
    pub fn on_request_retransmission(&mut self, _now: Instant) -> Option<Vec<u8>> {
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => self.message.clone(),
            _ => None,
        }
    }

    /// An ACK matching this transaction arrived (for a 2xx the caller matches
    /// it by dialog and CSeq, since its branch differs from the INVITE's).
    pub fn on_ack(&mut self, now: Instant) -> AckOutcome {
        match self.state {
            InviteServerState::Completed => {
                self.state = InviteServerState::Confirmed;
                self.retransmit = None;
                match self.transport {
                    // Timer I = 0: nothing can be retransmitted, so nothing to absorb.
                    Transport::Reliable => self.terminate(),
                    Transport::Unreliable => self.end_after(now, self.timers.t4, None),
                }
                AckOutcome::Confirmed
            }
            InviteServerState::Accepted if self.end_report == Some(TransactionEvent::NoAckFor2xx) => {
                self.end_report = None;
                self.retransmit = None;
                AckOutcome::Acknowledged2xx
            }
            InviteServerState::Accepted | InviteServerState::Confirmed => AckOutcome::Absorbed,
            InviteServerState::Proceeding | InviteServerState::Terminated => AckOutcome::Unexpected,
        }
    }
}

/// State of a [`NonInviteServerTransaction`] (RFC 3261 figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// The non-INVITE server kind holds nothing of its own and never
/// retransmits: the client does, and gets the latest response again.
#[derive(Debug)]
pub struct NonInviteServer;

impl Kind for NonInviteServer {
    type State = NonInviteServerState;
    const TERMINATED: NonInviteServerState = NonInviteServerState::Terminated;
}

/// The server side of any request but INVITE and ACK (REGISTER, BYE, OPTIONS,
/// CANCEL...): answers retransmissions of the request with the latest
/// response. Final responses are not retransmitted on their own: the client
/// retransmits its request and gets the response again.
pub type NonInviteServerTransaction = Transaction<NonInviteServer>;

impl Transaction<NonInviteServer> {
    /// A transaction for a request just received at `now`, in Trying.
    pub fn new(_now: Instant, timers: Timers, transport: Transport) -> Self {
        Transaction::with(timers, transport, NonInviteServerState::Trying, None, NonInviteServer)
    }

    /// What is left of a Completed transaction: the final response that
    /// answers retransmissions of the request, and when Timer J ends it.
    /// `None` in any other state. Callers that answer at once can store just
    /// this, which is all RFC 3261 17.2.2's Completed state does.
    pub fn into_completed(self) -> Option<(Vec<u8>, Instant)> {
        match (self.state, self.message, self.end) {
            (NonInviteServerState::Completed, Some(response), Some(end)) => Some((response, end)),
            _ => None,
        }
    }

    /// Sends the TU's response; `None` when the state does not allow it
    /// (after the final response, or a status outside 100-699).
    pub fn respond(&mut self, now: Instant, status: u16, encoded: Vec<u8>) -> Option<Vec<u8>> {
        if !matches!(self.state, NonInviteServerState::Trying | NonInviteServerState::Proceeding) {
            return None;
        }
        if is_provisional(status) {
            self.state = NonInviteServerState::Proceeding;
            self.message = Some(encoded.clone());
        } else if is_success(status) || is_failure(status) {
            match self.transport {
                // Timer J = 0: the request is never retransmitted, so nothing to answer again.
                Transport::Reliable => self.terminate(),
                Transport::Unreliable => {
                    self.state = NonInviteServerState::Completed;
                    self.end_after(now, self.timers.timeout(), None);
                    self.message = Some(encoded.clone());
                }
            }
        } else {
            return None;
        }
        Some(encoded)
    }

    /// The request arrived again: resend the latest response (none in
    /// Trying, where the TU has not answered yet).
    pub fn on_request_retransmission(&mut self, _now: Instant) -> Option<Vec<u8>> {
        match self.state {
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => self.message.clone(),
            _ => None,
        }
    }
}

/// State of an [`InviteClientTransaction`] (RFC 3261 figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    Calling,
    Proceeding,
    Completed,
    Terminated,
}

/// What the INVITE client kind holds besides the INVITE.
#[derive(Debug)]
pub struct InviteClient {
    /// The ACK for the non-2xx final response, resent on its retransmissions.
    ack: Option<Vec<u8>>,
    /// The initial INVITE, until taken with `poll_transmit`.
    pending: Option<Vec<u8>>,
}

impl Kind for InviteClient {
    type State = InviteClientState;
    const TERMINATED: InviteClientState = InviteClientState::Terminated;

    fn held_bytes(&self) -> usize {
        [&self.ack, &self.pending].into_iter().flatten().map(Vec::capacity).sum()
    }

    fn clear(&mut self) {
        self.ack = None;
        self.pending = None;
    }
}

/// The client side of an INVITE: retransmits it over UDP until a response
/// arrives (Timer A), gives up after 64*T1 without one (Timer B), and ACKs
/// final non-2xx responses, re-ACKing their retransmissions.
///
/// Once a provisional response arrived there is no timeout: the TU bounds
/// the ringing itself (a CANCEL, or Timer C in a proxy). A 2xx ends the
/// transaction at once (RFC 3261; not RFC 6026's client Accepted state):
/// its ACK and the re-ACK of 2xx retransmissions are the UA core's job.
pub type InviteClientTransaction = Transaction<InviteClient>;

impl Transaction<InviteClient> {
    /// Starts sending `encoded_invite` at `now`; take the first transmission
    /// with [`poll_transmit`](Self::poll_transmit).
    pub fn new(now: Instant, timers: Timers, transport: Transport, encoded_invite: Vec<u8>) -> Self {
        let kind = InviteClient { ack: None, pending: Some(encoded_invite.clone()) };
        let mut txn = Transaction::with(timers, transport, InviteClientState::Calling, Some(encoded_invite), kind);
        // Timer A doubles without bound; Timer B.
        txn.retransmit_from(now, None);
        txn.end_after(now, timers.timeout(), Some(TransactionEvent::TimedOut));
        txn
    }

    /// The initial INVITE, once.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.kind.pending.take()
    }

    /// A response matching this transaction arrived. `ack_for_non_2xx` builds
    /// the ACK (RFC 3261 17.1.1.3) and is only called for the first final
    /// non-2xx response.
    pub fn on_response(
        &mut self,
        now: Instant,
        status: u16,
        ack_for_non_2xx: impl FnOnce() -> Vec<u8>,
    ) -> ClientOutcome {
        match self.state {
            InviteClientState::Calling | InviteClientState::Proceeding => {
                if is_provisional(status) {
                    self.state = InviteClientState::Proceeding;
                    self.retransmit = None;
                    self.end = None;
                    self.end_report = None;
                    ClientOutcome { pass_up: true, send: None }
                } else if is_success(status) {
                    self.terminate();
                    ClientOutcome { pass_up: true, send: None }
                } else if is_failure(status) {
                    let ack = ack_for_non_2xx();
                    self.retransmit = None;
                    match self.transport {
                        // Timer D = 0: the response is not retransmitted, so no re-ACK.
                        Transport::Reliable => self.terminate(),
                        Transport::Unreliable => {
                            self.state = InviteClientState::Completed;
                            self.end_after(now, TIMER_D.max(self.timers.timeout()), None);
                            self.kind.ack = Some(ack.clone());
                        }
                    }
                    ClientOutcome { pass_up: true, send: Some(ack) }
                } else {
                    ClientOutcome::ignored()
                }
            }
            InviteClientState::Completed if is_failure(status) => {
                ClientOutcome { pass_up: false, send: self.kind.ack.clone() }
            }
            _ => ClientOutcome::ignored(),
        }
    }
}

/// State of a [`NonInviteClientTransaction`] (RFC 3261 figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What the non-INVITE client kind holds besides the request.
#[derive(Debug)]
pub struct NonInviteClient {
    /// The initial request, until taken with `poll_transmit`.
    pending: Option<Vec<u8>>,
}

impl Kind for NonInviteClient {
    type State = NonInviteClientState;
    const TERMINATED: NonInviteClientState = NonInviteClientState::Terminated;

    fn held_bytes(&self) -> usize {
        self.pending.as_ref().map_or(0, Vec::capacity)
    }

    fn clear(&mut self) {
        self.pending = None;
    }
}

/// The client side of any request but INVITE and ACK: retransmits it over UDP
/// (Timer E: T1 doubling to T2, every T2 once a provisional response arrived)
/// until a final response, gives up after 64*T1 (Timer F), then lingers T4
/// (Timer K) to absorb retransmitted responses.
pub type NonInviteClientTransaction = Transaction<NonInviteClient>;

impl Transaction<NonInviteClient> {
    /// Starts sending `encoded_request` at `now`; take the first transmission
    /// with [`poll_transmit`](Self::poll_transmit).
    pub fn new(now: Instant, timers: Timers, transport: Transport, encoded_request: Vec<u8>) -> Self {
        let kind = NonInviteClient { pending: Some(encoded_request.clone()) };
        let mut txn = Transaction::with(timers, transport, NonInviteClientState::Trying, Some(encoded_request), kind);
        // Timers E and F.
        txn.retransmit_from(now, Some(timers.t2));
        txn.end_after(now, timers.timeout(), Some(TransactionEvent::TimedOut));
        txn
    }

    /// The initial request, once.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.kind.pending.take()
    }

    /// A response matching this transaction arrived. Returns whether it is
    /// new and must be passed to the TU (every provisional response, and the
    /// first final one); retransmitted final responses are absorbed.
    pub fn on_response(&mut self, now: Instant, status: u16) -> bool {
        if !matches!(self.state, NonInviteClientState::Trying | NonInviteClientState::Proceeding) {
            return false;
        }
        if is_provisional(status) {
            // Timer E keeps its deadline; it switches to T2 when it next fires.
            self.state = NonInviteClientState::Proceeding;
            if let Some(backoff) = &mut self.retransmit {
                backoff.hold_at_cap();
            }
            true
        } else if is_success(status) || is_failure(status) {
            self.retransmit = None;
            match self.transport {
                Transport::Reliable => self.terminate(),
                // Timer K.
                Transport::Unreliable => {
                    self.state = NonInviteClientState::Completed;
                    self.end_after(now, self.timers.t4, None);
                }
            }
            true
        } else {
            false
        }
    }
}

/// Whether a Via branch was built by RFC 3261 rules, so that it alone (with
/// the sent-by and method) identifies the transaction (17.2.3). Otherwise the
/// caller falls back to RFC 2543 matching on Request-URI, tags, Call-ID, CSeq
/// and the whole Via.
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.starts_with(BRANCH_MAGIC_COOKIE)
}

fn push_random_hex(out: &mut String, rng: &mut impl RngCore, bytes: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill_bytes(&mut buf[..n]);
        for b in &buf[..n] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        left -= n;
    }
}

/// A fresh Via branch: the magic cookie and 80 random bits, so branches are
/// unique across space and time (RFC 3261 8.1.1.7).
pub fn new_branch(rng: &mut impl RngCore) -> String {
    let mut branch = String::with_capacity(BRANCH_MAGIC_COOKIE.len() + 20);
    branch.push_str(BRANCH_MAGIC_COOKIE);
    push_random_hex(&mut branch, rng, 10);
    branch
}

/// A fresh From/To tag with 64 random bits (RFC 3261 19.3 asks for at least 32).
pub fn new_tag(rng: &mut impl RngCore) -> String {
    let mut tag = String::with_capacity(16);
    push_random_hex(&mut tag, rng, 8);
    tag
}

/// A fresh Call-ID: 128 random bits, then `@host` when `host` is not empty
/// (RFC 3261 8.1.1.4 recommends the host to make it globally unique). `host`
/// must be a valid Call-ID word; the caller passes its own address or name.
pub fn new_call_id(rng: &mut impl RngCore, host: &str) -> String {
    let mut id = String::with_capacity(33 + host.len());
    push_random_hex(&mut id, rng, 16);
    if !host.is_empty() {
        id.push('@');
        id.push_str(host);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const UDP: Transport = Transport::Unreliable;
    const TCP: Transport = Transport::Reliable;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn events(mut next: impl FnMut() -> Option<TransactionEvent>) -> Vec<TransactionEvent> {
        std::iter::from_fn(&mut next).collect()
    }

    /// Drives a transaction by its own deadlines up to and including
    /// `until_ms`, recording (ms since t0, what was sent).
    fn run<K: Kind>(t0: Instant, until_ms: u64, tx: &mut Transaction<K>) -> Vec<(u64, Option<Vec<u8>>)> {
        let mut log = Vec::new();
        while let Some(t) = tx.poll_timeout() {
            let ms = (t - t0).as_millis() as u64;
            if ms > until_ms {
                break;
            }
            log.push((ms, tx.handle_timeout(t)));
            assert!(log.len() < 1000, "timer loop");
        }
        log
    }

    const RESPONSE_SCHEDULE: [u64; 10] = [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500];

    #[test]
    fn default_timers_are_the_rfc_values() {
        let t = Timers::default();
        assert_eq!((t.t1, t.t2, t.t4), (Duration::from_millis(500), Duration::from_secs(4), Duration::from_secs(5)));
        assert_eq!(t.timeout(), Duration::from_secs(32));
    }

    #[test]
    fn invite_server_non_2xx_retransmits_on_timer_g_then_times_out_on_h() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.respond(t0, 486, b"486".to_vec()), Some(b"486".to_vec()));
        assert_eq!(tx.state(), InviteServerState::Completed);
        // A second final response is refused.
        assert_eq!(tx.respond(t0, 200, b"200".to_vec()), None);
        let log = run(t0, 40_000, &mut tx);
        let mut expected: Vec<(u64, Option<Vec<u8>>)> =
            RESPONSE_SCHEDULE.iter().map(|&ms| (ms, Some(b"486".to_vec()))).collect();
        expected.push((32_000, None));
        assert_eq!(log, expected);
        assert!(tx.is_terminated());
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]);
        assert_eq!(tx.on_request_retransmission(at(t0, 33_000)), None);
        assert_eq!(tx.on_ack(at(t0, 33_000)), AckOutcome::Unexpected);
        assert_eq!(tx.handle_timeout(at(t0, 99_000)), None);
    }

    #[test]
    fn invite_server_ack_confirms_then_timer_i_absorbs_acks() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        tx.respond(t0, 404, b"404".to_vec());
        assert_eq!(tx.handle_timeout(at(t0, 500)), Some(b"404".to_vec()));
        // INVITE retransmission answered with the final response, timer untouched.
        assert_eq!(tx.on_request_retransmission(at(t0, 600)), Some(b"404".to_vec()));
        assert_eq!(tx.poll_timeout(), Some(at(t0, 1500)));
        assert_eq!(tx.on_ack(at(t0, 700)), AckOutcome::Confirmed);
        assert_eq!(tx.state(), InviteServerState::Confirmed);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 5700)));
        assert_eq!(tx.handle_timeout(at(t0, 1500)), None);
        assert_eq!(tx.on_ack(at(t0, 800)), AckOutcome::Absorbed);
        assert_eq!(tx.on_request_retransmission(at(t0, 900)), None);
        assert_eq!(tx.poll_event(), None);
        assert_eq!(tx.handle_timeout(at(t0, 5699)), None);
        assert!(!tx.is_terminated());
        assert_eq!(tx.handle_timeout(at(t0, 5700)), None);
        assert!(tx.is_terminated());
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn invite_server_provisional_answers_retransmitted_invite() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        // Nothing sent yet: the caller owes the 100 Trying.
        assert_eq!(tx.on_request_retransmission(t0), None);
        assert_eq!(tx.respond(t0, 100, b"100".to_vec()), Some(b"100".to_vec()));
        assert_eq!(tx.respond(at(t0, 10), 180, b"180".to_vec()), Some(b"180".to_vec()));
        assert_eq!(tx.on_request_retransmission(at(t0, 500)), Some(b"180".to_vec()));
        assert_eq!(tx.state(), InviteServerState::Proceeding);
        // Provisional responses are not retransmitted by the transaction.
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.on_ack(at(t0, 600)), AckOutcome::Unexpected);
        assert_eq!(tx.respond(t0, 99, b"99".to_vec()), None);
        assert_eq!(tx.respond(t0, 700, b"700".to_vec()), None);
    }

    #[test]
    fn invite_server_2xx_retransmits_until_ack_and_absorbs_until_timer_l() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        tx.respond(t0, 180, b"180".to_vec());
        assert_eq!(tx.respond(at(t0, 1000), 200, b"200".to_vec()), Some(b"200".to_vec()));
        assert_eq!(tx.state(), InviteServerState::Accepted);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 1500)));
        assert_eq!(tx.handle_timeout(at(t0, 1499)), None);
        assert_eq!(tx.handle_timeout(at(t0, 1500)), Some(b"200".to_vec()));
        assert_eq!(tx.poll_timeout(), Some(at(t0, 2500)));
        assert_eq!(tx.handle_timeout(at(t0, 2500)), Some(b"200".to_vec()));
        assert_eq!(tx.poll_timeout(), Some(at(t0, 4500)));
        // RFC 6026: retransmitted INVITEs are absorbed in Accepted.
        assert_eq!(tx.on_request_retransmission(at(t0, 3000)), None);
        assert_eq!(tx.on_ack(at(t0, 3000)), AckOutcome::Acknowledged2xx);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 33_000)));
        assert_eq!(tx.handle_timeout(at(t0, 4500)), None);
        assert_eq!(tx.on_ack(at(t0, 4600)), AckOutcome::Absorbed);
        assert!(!tx.is_terminated());
        assert_eq!(tx.handle_timeout(at(t0, 33_000)), None);
        assert!(tx.is_terminated());
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
        assert_eq!(tx.on_ack(at(t0, 34_000)), AckOutcome::Unexpected);
    }

    #[test]
    fn invite_server_2xx_never_acked_reports_no_ack_at_timer_l() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        tx.respond(t0, 200, b"200 first".to_vec());
        let mut log = run(t0, 1500, &mut tx);
        // A further 2xx from the TU replaces what is retransmitted.
        assert_eq!(tx.respond(at(t0, 2000), 200, b"200 again".to_vec()), Some(b"200 again".to_vec()));
        log.extend(run(t0, 40_000, &mut tx));
        let mut expected: Vec<(u64, Option<Vec<u8>>)> = RESPONSE_SCHEDULE
            .iter()
            .map(|&ms| (ms, Some(if ms <= 1500 { b"200 first".to_vec() } else { b"200 again".to_vec() })))
            .collect();
        expected.push((32_000, None));
        assert_eq!(log, expected);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::NoAckFor2xx, TransactionEvent::Terminated]);
    }

    #[test]
    fn invite_server_reliable_has_no_retransmissions_and_zero_timer_i() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), TCP);
        tx.respond(t0, 603, b"603".to_vec());
        // Timer H still guards the ACK.
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_000)));
        assert_eq!(tx.on_ack(at(t0, 100)), AckOutcome::Confirmed);
        assert!(tx.is_terminated());
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);

        let mut tx = InviteServerTransaction::new(t0, Timers::default(), TCP);
        tx.respond(t0, 200, b"200".to_vec());
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_000)));
        assert_eq!(tx.on_ack(at(t0, 100)), AckOutcome::Acknowledged2xx);
        assert_eq!(tx.handle_timeout(at(t0, 32_000)), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);

        let mut tx = InviteServerTransaction::new(t0, Timers::default(), TCP);
        tx.respond(t0, 500, b"500".to_vec());
        assert_eq!(tx.handle_timeout(at(t0, 32_000)), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]);
    }

    #[test]
    fn transport_error_ends_a_transaction_once() {
        let t0 = Instant::now();
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        tx.respond(t0, 200, b"200".to_vec());
        tx.on_transport_error();
        tx.on_transport_error();
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TransportError, TransactionEvent::Terminated]);
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.handle_timeout(at(t0, 500)), None);
    }

    #[test]
    fn non_invite_server_answers_retransmissions_then_timer_j() {
        let t0 = Instant::now();
        let mut tx = NonInviteServerTransaction::new(t0, Timers::default(), UDP);
        assert_eq!(tx.on_request_retransmission(t0), None);
        assert_eq!(tx.respond(at(t0, 10), 100, b"100".to_vec()), Some(b"100".to_vec()));
        assert_eq!(tx.state(), NonInviteServerState::Proceeding);
        assert_eq!(tx.on_request_retransmission(at(t0, 500)), Some(b"100".to_vec()));
        assert_eq!(tx.respond(at(t0, 1000), 200, b"200".to_vec()), Some(b"200".to_vec()));
        assert_eq!(tx.state(), NonInviteServerState::Completed);
        assert_eq!(tx.respond(at(t0, 1100), 500, b"500".to_vec()), None);
        assert_eq!(tx.on_request_retransmission(at(t0, 1500)), Some(b"200".to_vec()));
        assert_eq!(tx.poll_timeout(), Some(at(t0, 33_000)));
        assert_eq!(tx.handle_timeout(at(t0, 32_999)), None);
        assert!(!tx.is_terminated());
        assert_eq!(tx.handle_timeout(at(t0, 33_000)), None);
        assert!(tx.is_terminated());
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
        assert_eq!(tx.on_request_retransmission(at(t0, 33_001)), None);
    }

    #[test]
    fn non_invite_server_reliable_terminates_on_final_response() {
        let t0 = Instant::now();
        let mut tx = NonInviteServerTransaction::new(t0, Timers::default(), TCP);
        assert_eq!(tx.respond(t0, 401, b"401".to_vec()), Some(b"401".to_vec()));
        assert!(tx.is_terminated());
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.on_request_retransmission(t0), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
    }

    #[test]
    fn invite_client_timer_a_doubles_without_cap_until_timer_b() {
        let t0 = Instant::now();
        let mut tx = InviteClientTransaction::new(t0, Timers::default(), UDP, b"INVITE".to_vec());
        assert_eq!(tx.poll_transmit(), Some(b"INVITE".to_vec()));
        assert_eq!(tx.poll_transmit(), None);
        let log = run(t0, 40_000, &mut tx);
        let mut expected: Vec<(u64, Option<Vec<u8>>)> =
            [500, 1500, 3500, 7500, 15500, 31500].iter().map(|&ms| (ms, Some(b"INVITE".to_vec()))).collect();
        expected.push((32_000, None));
        assert_eq!(log, expected);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]);
        assert_eq!(tx.on_response(at(t0, 33_000), 200, Vec::new), ClientOutcome { pass_up: false, send: None });
    }

    #[test]
    fn invite_client_provisional_stops_retransmission_and_timer_b() {
        let t0 = Instant::now();
        let mut tx = InviteClientTransaction::new(t0, Timers::default(), UDP, b"INVITE".to_vec());
        assert_eq!(tx.handle_timeout(at(t0, 500)), Some(b"INVITE".to_vec()));
        let out = tx.on_response(at(t0, 600), 180, || panic!("no ACK for a 1xx"));
        assert_eq!(out, ClientOutcome { pass_up: true, send: None });
        assert_eq!(tx.state(), InviteClientState::Proceeding);
        assert_eq!(tx.poll_timeout(), None);
        assert_eq!(tx.handle_timeout(at(t0, 60_000)), None);
        // Every provisional response is passed up.
        assert!(tx.on_response(at(t0, 700), 183, Vec::new).pass_up);
        let out = tx.on_response(at(t0, 60_000), 200, || panic!("no ACK for a 2xx"));
        assert_eq!(out, ClientOutcome { pass_up: true, send: None });
        assert!(tx.is_terminated());
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
    }

    #[test]
    fn invite_client_acks_failure_and_reacks_retransmissions_until_timer_d() {
        let t0 = Instant::now();
        let mut tx = InviteClientTransaction::new(t0, Timers::default(), UDP, b"INVITE".to_vec());
        tx.poll_transmit();
        let mut built = 0;
        let out = tx.on_response(at(t0, 100), 486, || {
            built += 1;
            b"ACK".to_vec()
        });
        assert_eq!(out, ClientOutcome { pass_up: true, send: Some(b"ACK".to_vec()) });
        assert_eq!(tx.state(), InviteClientState::Completed);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_100)));
        let out = tx.on_response(at(t0, 600), 486, || {
            built += 1;
            b"other".to_vec()
        });
        assert_eq!(out, ClientOutcome { pass_up: false, send: Some(b"ACK".to_vec()) });
        assert_eq!(built, 1);
        // Late provisional or 2xx responses are discarded in Completed.
        assert_eq!(tx.on_response(at(t0, 700), 180, Vec::new), ClientOutcome { pass_up: false, send: None });
        assert_eq!(tx.on_response(at(t0, 700), 200, Vec::new), ClientOutcome { pass_up: false, send: None });
        assert_eq!(tx.handle_timeout(at(t0, 32_099)), None);
        assert!(!tx.is_terminated());
        assert_eq!(tx.handle_timeout(at(t0, 32_100)), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
        assert_eq!(tx.on_response(at(t0, 32_200), 486, Vec::new), ClientOutcome { pass_up: false, send: None });
    }

    #[test]
    fn timer_d_covers_timer_h_when_t1_is_large() {
        let t0 = Instant::now();
        let timers = Timers { t1: Duration::from_secs(1), ..Timers::default() };
        let mut tx = InviteClientTransaction::new(t0, timers, UDP, b"INVITE".to_vec());
        tx.on_response(t0, 503, || b"ACK".to_vec());
        assert_eq!(tx.poll_timeout(), Some(at(t0, 64_000)));
    }

    #[test]
    fn invite_client_reliable_no_timer_a_and_zero_timer_d() {
        let t0 = Instant::now();
        let mut tx = InviteClientTransaction::new(t0, Timers::default(), TCP, b"INVITE".to_vec());
        assert_eq!(tx.poll_transmit(), Some(b"INVITE".to_vec()));
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_000)));
        let out = tx.on_response(at(t0, 100), 404, || b"ACK".to_vec());
        assert_eq!(out, ClientOutcome { pass_up: true, send: Some(b"ACK".to_vec()) });
        assert!(tx.is_terminated());
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);

        let mut tx = InviteClientTransaction::new(t0, Timers::default(), TCP, b"INVITE".to_vec());
        assert_eq!(tx.handle_timeout(at(t0, 32_000)), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]);
        assert_eq!(tx.poll_transmit(), None);
    }

    #[test]
    fn non_invite_client_timer_e_caps_at_t2_until_timer_f() {
        let t0 = Instant::now();
        let mut tx = NonInviteClientTransaction::new(t0, Timers::default(), UDP, b"REGISTER".to_vec());
        assert_eq!(tx.poll_transmit(), Some(b"REGISTER".to_vec()));
        let log = run(t0, 40_000, &mut tx);
        let mut expected: Vec<(u64, Option<Vec<u8>>)> =
            RESPONSE_SCHEDULE.iter().map(|&ms| (ms, Some(b"REGISTER".to_vec()))).collect();
        expected.push((32_000, None));
        assert_eq!(log, expected);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]);
    }

    #[test]
    fn non_invite_client_proceeding_retransmits_every_t2() {
        let t0 = Instant::now();
        let mut tx = NonInviteClientTransaction::new(t0, Timers::default(), UDP, b"BYE".to_vec());
        assert_eq!(tx.handle_timeout(at(t0, 500)), Some(b"BYE".to_vec()));
        assert!(tx.on_response(at(t0, 700), 100));
        assert_eq!(tx.state(), NonInviteClientState::Proceeding);
        // The pending Timer E keeps its deadline, then fires every T2.
        let log = run(t0, 40_000, &mut tx);
        let mut expected: Vec<(u64, Option<Vec<u8>>)> = [1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500]
            .iter()
            .map(|&ms| (ms, Some(b"BYE".to_vec())))
            .collect();
        expected.push((32_000, None));
        assert_eq!(log, expected);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]);
    }

    #[test]
    fn non_invite_client_final_passed_up_once_then_timer_k() {
        let t0 = Instant::now();
        let mut tx = NonInviteClientTransaction::new(t0, Timers::default(), UDP, b"OPTIONS".to_vec());
        assert!(tx.on_response(at(t0, 200), 200));
        assert_eq!(tx.state(), NonInviteClientState::Completed);
        assert!(!tx.on_response(at(t0, 300), 200));
        assert!(!tx.on_response(at(t0, 300), 100));
        assert_eq!(tx.poll_timeout(), Some(at(t0, 5200)));
        assert_eq!(tx.handle_timeout(at(t0, 500)), None);
        assert_eq!(tx.handle_timeout(at(t0, 5200)), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
        assert_eq!(tx.poll_timeout(), None);

        let mut tx = NonInviteClientTransaction::new(t0, Timers::default(), TCP, b"OPTIONS".to_vec());
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_000)));
        assert!(tx.on_response(at(t0, 200), 404));
        assert!(tx.is_terminated());
        assert!(!tx.on_response(at(t0, 300), 404));
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
    }

    #[test]
    fn late_wakeup_does_not_burst() {
        let t0 = Instant::now();
        let mut tx = NonInviteClientTransaction::new(t0, Timers::default(), UDP, b"R".to_vec());
        assert_eq!(tx.handle_timeout(at(t0, 3000)), Some(b"R".to_vec()));
        assert_eq!(tx.handle_timeout(at(t0, 3000)), None);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 4000)));
    }

    #[test]
    fn huge_timers_do_not_overflow() {
        let t0 = Instant::now();
        let timers = Timers { t1: Duration::MAX, t2: Duration::MAX, t4: Duration::MAX };
        let mut tx = InviteClientTransaction::new(t0, timers, UDP, b"I".to_vec());
        assert!(tx.poll_timeout().is_some_and(|t| t > at(t0, 1_000_000)));
        assert_eq!(tx.handle_timeout(at(t0, 1_000_000)), None);
    }

    #[test]
    fn an_end_due_with_a_retransmission_ends_without_resending() {
        let t0 = Instant::now();
        let mut tx = InviteClientTransaction::new(t0, Timers::default(), UDP, b"INVITE".to_vec());
        // Woken late: Timer A (500 ms) and Timer B (32 s) are both due.
        assert_eq!(tx.handle_timeout(at(t0, 40_000)), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TimedOut, TransactionEvent::Terminated]);

        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        tx.respond(t0, 200, b"200".to_vec());
        assert_eq!(tx.handle_timeout(at(t0, 40_000)), None);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::NoAckFor2xx, TransactionEvent::Terminated]);
    }

    #[test]
    fn the_end_report_follows_the_state_that_armed_it() {
        let t0 = Instant::now();
        // Timer H reports a timeout; Timer I, armed by the ACK, does not.
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        tx.respond(t0, 486, b"486".to_vec());
        tx.on_ack(at(t0, 100));
        assert_eq!(run(t0, 40_000, &mut tx), vec![(5100, None)]);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);

        // Timer L stops reporting at the first ACK, and only then are ACKs absorbed.
        let mut tx = InviteServerTransaction::new(t0, Timers::default(), TCP);
        tx.respond(t0, 200, b"200".to_vec());
        assert_eq!(tx.on_ack(at(t0, 100)), AckOutcome::Acknowledged2xx);
        assert_eq!(tx.on_ack(at(t0, 200)), AckOutcome::Absorbed);
        assert_eq!(run(t0, 40_000, &mut tx), vec![(32_000, None)]);
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::Terminated]);
    }

    #[test]
    fn termination_lets_go_of_every_message() {
        let t0 = Instant::now();
        let mut tx = InviteClientTransaction::new(t0, Timers::default(), UDP, b"INVITE".to_vec());
        assert_eq!(tx.held_bytes(), 12);
        tx.poll_transmit();
        assert_eq!(tx.held_bytes(), 6);
        tx.on_response(at(t0, 100), 486, || b"ACK".to_vec());
        assert_eq!(tx.held_bytes(), 9);
        tx.on_transport_error();
        assert_eq!(tx.held_bytes(), 0);
        assert_eq!(tx.on_response(at(t0, 200), 486, Vec::new), ClientOutcome { pass_up: false, send: None });

        // Even the first copy, never taken, is dropped.
        let mut tx = NonInviteClientTransaction::new(t0, Timers::default(), UDP, b"BYE".to_vec());
        tx.on_transport_error();
        assert_eq!((tx.held_bytes(), tx.poll_transmit()), (0, None));
        assert_eq!(events(|| tx.poll_event()), vec![TransactionEvent::TransportError, TransactionEvent::Terminated]);

        let mut tx = InviteServerTransaction::new(t0, Timers::default(), UDP);
        tx.respond(t0, 180, b"180".to_vec());
        assert_eq!(tx.held_bytes(), 3);
        tx.on_transport_error();
        assert_eq!(tx.held_bytes(), 0);
        assert_eq!(tx.on_request_retransmission(at(t0, 100)), None);
    }

    #[test]
    fn keys_are_random_and_well_formed() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let b1 = new_branch(&mut rng);
        let b2 = new_branch(&mut rng);
        assert!(is_rfc3261_branch(&b1));
        assert_eq!(b1.len(), 7 + 20);
        assert_ne!(b1, b2);
        assert!(b1[7..].bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(!is_rfc3261_branch("1234.abc"));
        assert!(!is_rfc3261_branch("Z9HG4BK123"));

        let tag = new_tag(&mut rng);
        assert_eq!(tag.len(), 16);
        assert_ne!(tag, new_tag(&mut rng));

        let id = new_call_id(&mut rng, "192.0.2.1");
        let (random, host) = id.split_once('@').unwrap();
        assert_eq!((random.len(), host), (32, "192.0.2.1"));
        assert_eq!(new_call_id(&mut rng, "").len(), 32);

        // Deterministic from the seed, as the simulator needs.
        let mut a = ChaCha20Rng::seed_from_u64(1);
        let mut b = ChaCha20Rng::seed_from_u64(1);
        assert_eq!(new_branch(&mut a), new_branch(&mut b));
    }
}
