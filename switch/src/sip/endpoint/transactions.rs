//! Where the endpoint keeps its transactions: under a memory budget
//! (`[sip] transaction_memory`), with their timers in deadline indexes, and
//! with overload periods reported as two events each.
//!
//! Three kinds of state, by what they cost and what losing them costs:
//!
//! - INVITE server transactions ([`Server`]) and our client transactions
//!   ([`Client`]) are full state machines: calls depend on them.
//! - A non-INVITE server transaction is answered at once, so it is born
//!   Completed and its only remaining job (RFC 3261 17.2.2) is to answer
//!   retransmissions of the request with the same response until Timer J.
//!   It is kept as that response and its expiry ([`Completed`]), and it is
//!   what gets shed, oldest first, when memory is short: losing one only means
//!   a late retransmission is processed again, and REGISTER is idempotent
//!   (the registrar orders by Call-ID and CSeq), BYE of a gone dialog gets 481.
//!
//! Admission is by [`Priority`]: a new REGISTER may only take state below
//! three quarters of the budget and may only shed completed transactions
//! that have absorbed the early retransmissions already (older than T2);
//! calls and in-dialog requests may shed any completed transaction and use
//! the budget up to its last sixteenth, which is left to our own requests
//! (BYE, CANCEL, the INVITEs of bridges and the gateways' REGISTERs). Our own
//! requests always get state: they are bounded by `max_calls` and the
//! gateways, not by what others send, and refusing our own BYE would leave
//! the far end's call up.

use std::collections::{BTreeMap, VecDeque};
use std::mem::size_of;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::super::message::Request;
use super::super::transaction::{
    InviteClientTransaction, InviteServerTransaction, Kind, NonInviteClientTransaction, NonInviteServerTransaction,
    Transaction, TransactionEvent,
};
use crate::deadline::{DeadlineIndex, Timed, TimedMap};
use crate::event::Event;

/// An overload period ends after this long without shedding or refusing,
/// so a storm that pauses for a moment reports one period, not many.
pub(super) const OVERLOAD_HOLD: Duration = Duration::from_secs(5);

/// An INVITE server transaction (RFC 6026 Accepted state included).
pub(super) struct Server {
    pub txn: InviteServerTransaction,
    /// The call it created, once routed.
    pub call: Option<u32>,
    pub destination: SocketAddr,
}

impl Server {
    pub fn new(txn: InviteServerTransaction, destination: SocketAddr) -> Self {
        Server { txn, call: None, destination }
    }
}

impl Timed for Server {
    fn deadline(&self) -> Option<Instant> {
        self.txn.poll_timeout()
    }
}

impl Held for Server {
    fn held(&self) -> usize {
        self.txn.held_bytes()
    }
}

pub(super) enum ClientTxn {
    /// Our INVITE to the callee leg `call`, kept for its ACK and CANCEL.
    Invite {
        txn: InviteClientTransaction,
        call: u32,
        invite: Box<Request>,
    },
    NonInvite(NonInviteClientTransaction),
}

impl ClientTxn {
    /// The callee leg our INVITE is for.
    pub fn call(&self) -> Option<u32> {
        match self {
            ClientTxn::Invite { call, .. } => Some(*call),
            ClientTxn::NonInvite(_) => None,
        }
    }

    /// Runs the transaction's timers: a retransmission to send, and what the TU learns.
    pub fn handle_timeout(&mut self, now: Instant) -> (Option<Vec<u8>>, Vec<TransactionEvent>) {
        match self {
            ClientTxn::Invite { txn, .. } => (txn.handle_timeout(now), drain_events(txn)),
            ClientTxn::NonInvite(txn) => (txn.handle_timeout(now), drain_events(txn)),
        }
    }
}

pub(super) struct Client {
    pub txn: ClientTxn,
    pub destination: SocketAddr,
}

impl Client {
    pub fn new(txn: ClientTxn, destination: SocketAddr) -> Self {
        Client { txn, destination }
    }
}

impl Timed for Client {
    fn deadline(&self) -> Option<Instant> {
        match &self.txn {
            ClientTxn::Invite { txn, .. } => txn.poll_timeout(),
            ClientTxn::NonInvite(txn) => txn.poll_timeout(),
        }
    }
}

impl Held for Client {
    fn held(&self) -> usize {
        match &self.txn {
            // The parsed INVITE kept for CANCEL and ACK is about as large as its encoding.
            ClientTxn::Invite { txn, .. } => txn.held_bytes() * 2,
            ClientTxn::NonInvite(txn) => txn.held_bytes(),
        }
    }
}

/// Every event a transaction has for its TU, in order.
pub(super) fn drain_events<K: Kind>(txn: &mut Transaction<K>) -> Vec<TransactionEvent> {
    std::iter::from_fn(|| txn.poll_event()).collect()
}

/// A whole transaction kept in a [`Table`]: the message bytes it holds.
pub(super) trait Held: Timed {
    fn held(&self) -> usize;
}

/// An entry and the memory it was counted for at the last reschedule.
struct Counted<V> {
    value: V,
    cost: usize,
}

impl<V: Timed> Timed for Counted<V> {
    fn deadline(&self) -> Option<Instant> {
        self.value.deadline()
    }
}

/// Whole transactions of one kind (INVITE server, or ours) by key, their
/// timers indexed and their memory counted, both kept current lazily after
/// mutable access (see [`TimedMap`]).
pub(super) struct Table<V> {
    map: TimedMap<String, Counted<V>>,
    bytes: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table { map: TimedMap::default(), bytes: 0 }
    }
}

impl<V: Held> Table<V> {
    fn cost(key: &str, value: &V) -> usize {
        2 * key.len() + value.held() + overhead::<Counted<V>>()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|c| &c.value)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key).map(|c| &mut c.value)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let entry = self.map.remove(key)?;
        self.bytes -= entry.cost;
        Some(entry.value)
    }

    pub fn due(&self, now: Instant) -> Vec<String> {
        self.map.due(now)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn insert(&mut self, key: String, value: V) {
        let cost = Self::cost(&key, &value);
        self.bytes += cost;
        if let Some(old) = self.map.get(&key) {
            self.bytes -= old.cost;
        }
        self.map.insert(key, Counted { value, cost });
    }

    fn reindex(&mut self) {
        let bytes = &mut self.bytes;
        self.map.reschedule_with(|key, entry| {
            let cost = Self::cost(key, &entry.value);
            *bytes = *bytes - entry.cost + cost;
            entry.cost = cost;
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.map.next_deadline()
    }
}

/// A completed non-INVITE server transaction, reduced to what it still does.
struct Completed {
    response: Box<[u8]>,
    destination: SocketAddr,
    /// Timer J.
    expires: Instant,
}

/// Who is asking for state, most sheddable first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Priority {
    /// A new REGISTER (and its completed transaction).
    Register,
    /// INVITE, requests inside a dialog, and their completed transactions.
    Call,
    /// Our own requests.
    Own,
}

/// Why an overload period started, as the start event says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pressure {
    Shed,
    RefusedRegister,
    RefusedInvite,
}

impl Pressure {
    fn reason(self) -> &'static str {
        match self {
            Pressure::Shed => "transaction memory full: shedding completed transactions",
            Pressure::RefusedRegister => "transaction memory full: refusing REGISTER",
            Pressure::RefusedInvite => "transaction memory full: refusing INVITE",
        }
    }
}

struct Period {
    started: Instant,
    last: Instant,
    refused_register: u64,
    refused_invite: u64,
    shed: u64,
}

/// Memory counted for one entry besides its key and message bytes: its map
/// slot and deadline-index entry at the average fill of B-tree nodes (about
/// two thirds), and one allocator header per heap block.
const fn overhead<V>() -> usize {
    (size_of::<String>() + size_of::<V>()) * 3 / 2 + size_of::<(Instant, String)>() * 3 / 2 + 3 * 16
}

fn completed_cost(key: &str, response_len: usize) -> usize {
    2 * key.len() + response_len + overhead::<Completed>()
}

/// What [`Transactions::usage`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionUsage {
    /// Transactions held (server, client and completed).
    pub transactions: usize,
    /// Memory they are counted for.
    pub bytes: usize,
    /// `[sip] transaction_memory`.
    pub budget: usize,
    /// Completed transactions shed since start.
    pub shed: u64,
}

pub(super) struct Transactions {
    pub servers: Table<Server>,
    pub clients: Table<Client>,
    completed: BTreeMap<Box<str>, Completed>,
    /// Completed transactions by expiry, which (all living Timer J) is also
    /// by age: shedding takes from the front.
    expiry: DeadlineIndex<Box<str>>,
    /// What the completed transactions are counted for.
    completed_bytes: usize,
    budget: usize,
    /// How long a completed transaction is safe from a REGISTER's shedding.
    protect: Duration,
    /// Timer J, to tell a completed transaction's age from its expiry.
    linger: Duration,
    period: Option<Period>,
    shed_total: u64,
}

impl Transactions {
    pub fn new(budget: usize, protect: Duration, linger: Duration) -> Self {
        Transactions {
            servers: Table::default(),
            clients: Table::default(),
            completed: BTreeMap::new(),
            expiry: DeadlineIndex::default(),
            completed_bytes: 0,
            budget,
            protect,
            linger,
            period: None,
            shed_total: 0,
        }
    }

    /// A reloaded budget applies to what comes next; what is over it is shed
    /// at the next [`settle`](Self::settle).
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
    }

    pub fn len(&self) -> usize {
        self.servers.len() + self.clients.len() + self.completed.len()
    }

    /// Memory the transactions are counted for.
    fn bytes(&self) -> usize {
        self.servers.bytes + self.clients.bytes + self.completed_bytes
    }

    pub fn usage(&self) -> TransactionUsage {
        TransactionUsage { transactions: self.len(), bytes: self.bytes(), budget: self.budget, shed: self.shed_total }
    }

    // ---- whole transactions ----

    pub fn insert_server(&mut self, key: String, server: Server) {
        self.servers.insert(key, server);
        self.reindex();
    }

    /// Our own requests always get state, shedding what it takes.
    pub fn insert_client(&mut self, now: Instant, key: String, client: Client, events: &mut VecDeque<Event>) {
        self.make_room(now, Table::cost(&key, &client), Priority::Own, events);
        self.clients.insert(key, client);
        self.reindex();
    }

    // ---- completed non-INVITE server transactions ----

    /// The response a retransmission of the request `key` gets, and where.
    pub fn completed(&self, key: &str) -> Option<(SocketAddr, Vec<u8>)> {
        self.completed.get(key).map(|c| (c.destination, c.response.to_vec()))
    }

    /// Keeps `txn`, just answered with a final response, to absorb
    /// retransmissions; `false` when there is no room for it under
    /// `priority` even after shedding (the answer went out all the same).
    pub fn complete(
        &mut self,
        now: Instant,
        key: String,
        txn: NonInviteServerTransaction,
        destination: SocketAddr,
        priority: Priority,
        events: &mut VecDeque<Event>,
    ) -> bool {
        let Some((response, expires)) = txn.into_completed() else { return false };
        let cost = completed_cost(&key, response.len());
        if !self.make_room(now, cost, priority, events) {
            // Counted as shed: an absorber dropped at birth.
            self.shed_total += 1;
            self.pressure(now, Pressure::Shed, events).shed += 1;
            return false;
        }
        let key = key.into_boxed_str();
        if let Some(old) = self.completed.remove(&key) {
            self.expiry.set(&key, Some(old.expires), None);
            self.completed_bytes -= completed_cost(&key, old.response.len());
        }
        self.expiry.set(&key, None, Some(expires));
        self.completed.insert(key, Completed { response: response.into_boxed_slice(), destination, expires });
        self.completed_bytes += cost;
        true
    }

    fn remove_completed(&mut self, key: &str) {
        if let Some((key, c)) = self.completed.remove_entry(key) {
            self.expiry.set(&key, Some(c.expires), None);
            self.completed_bytes -= completed_cost(&key, c.response.len());
        }
    }

    /// Timer J of every completed transaction due at `now`.
    pub fn expire_completed(&mut self, now: Instant) {
        for key in self.expiry.due(now) {
            self.remove_completed(&key);
        }
    }

    // ---- the budget ----

    /// The most memory `priority` may bring the total to.
    fn ceiling(&self, priority: Priority) -> usize {
        match priority {
            Priority::Register => self.budget - self.budget / 4,
            Priority::Call => self.budget - self.budget / 16,
            Priority::Own => self.budget,
        }
    }

    /// Sheds completed transactions, oldest first, until `need` more bytes
    /// fit under `priority`'s ceiling; whether they do.
    fn make_room(&mut self, now: Instant, need: usize, priority: Priority, events: &mut VecDeque<Event>) -> bool {
        self.reindex();
        let ceiling = self.ceiling(priority);
        // The youngest completion time a REGISTER may still shed.
        let oldest_protected = now.checked_sub(self.protect);
        let mut shed = 0;
        while self.bytes() + need > ceiling {
            let Some((expires, key)) = self.expiry.first() else { break };
            if priority == Priority::Register {
                let completed_at = expires.checked_sub(self.linger);
                if oldest_protected.is_none() || completed_at > oldest_protected {
                    break;
                }
            }
            let key = key.clone();
            self.remove_completed(&key);
            shed += 1;
        }
        if shed > 0 {
            self.shed_total += shed;
            self.pressure(now, Pressure::Shed, events).shed += shed;
        }
        self.bytes() + need <= ceiling
    }

    /// Whether a new transaction of about `need` bytes may be created for
    /// `priority`; a refusal is counted in the overload period.
    pub fn admit(&mut self, now: Instant, need: usize, priority: Priority, events: &mut VecDeque<Event>) -> bool {
        if self.make_room(now, need, priority, events) {
            return true;
        }
        match priority {
            Priority::Register => self.pressure(now, Pressure::RefusedRegister, events).refused_register += 1,
            Priority::Call => self.pressure(now, Pressure::RefusedInvite, events).refused_invite += 1,
            Priority::Own => {}
        }
        false
    }

    /// The bytes a REGISTER of `datagram` bytes under `key` is likely to
    /// need: its answer repeats most of the request.
    pub fn estimate(key: &str, datagram: usize) -> usize {
        completed_cost(key, datagram)
    }

    // ---- timers and overload periods ----

    /// Brings deadlines and memory counts up to date after mutable accesses.
    fn reindex(&mut self) {
        self.servers.reindex();
        self.clients.reindex();
    }

    /// At the end of every public entry point: deadlines and counts up to
    /// date, and the total back under the budget if a transaction grew past
    /// it (a 200 with SDP is larger than the estimate its INVITE was admitted with).
    pub fn settle(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        self.reindex();
        if self.bytes() > self.budget {
            self.make_room(now, 0, Priority::Own, events);
        }
    }

    /// The earliest timer: a transaction's, or the end of an overload period.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.servers.next_deadline(),
            self.clients.next_deadline(),
            self.expiry.next(),
            self.period.as_ref().map(|p| p.last + OVERLOAD_HOLD),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Records shedding or a refusal at `now`, opening an overload period
    /// (one start event) if none is open.
    fn pressure(&mut self, now: Instant, why: Pressure, events: &mut VecDeque<Event>) -> &mut Period {
        self.end_overload(now, events);
        let (transactions, bytes) = (self.len() as u64, self.bytes() as u64);
        let period = self.period.get_or_insert_with(|| {
            events.push_back(Event::SipOverloadStarted { reason: why.reason().into(), transactions, bytes });
            Period { started: now, last: now, refused_register: 0, refused_invite: 0, shed: 0 }
        });
        period.last = now;
        period
    }

    /// Closes the open overload period (one end event with its counts) once
    /// [`OVERLOAD_HOLD`] has passed without pressure.
    pub fn end_overload(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        let Some(p) = self.period.take_if(|p| now >= p.last + OVERLOAD_HOLD) else { return };
        events.push_back(Event::SipOverloadEnded {
            duration_ms: (p.last + OVERLOAD_HOLD).saturating_duration_since(p.started).as_millis() as u64,
            refused_register: p.refused_register,
            refused_invite: p.refused_invite,
            shed: p.shed,
        });
    }
}
