//! The endpoint's dialogs, indexed by local call number and by deadline.
//!
//! Every mutable access records the call number as touched; [`DialogTable::reschedule`]
//! then refreshes only those deadlines. With hundreds of calls this keeps
//! "when is the next timer?" a lookup instead of a scan of every dialog on
//! every datagram.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Instant;

use super::{Entry, Role};
use crate::iax2::call::CallState;

#[derive(Default)]
pub(super) struct DialogTable {
    map: BTreeMap<u16, Entry>,
    touched: Vec<u16>,
    timers: BTreeSet<(Instant, u16)>,
}

impl DialogTable {
    pub fn get(&self, local: &u16) -> Option<&Entry> {
        self.map.get(local)
    }

    pub fn get_mut(&mut self, local: &u16) -> Option<&mut Entry> {
        self.touched.push(*local);
        self.map.get_mut(local)
    }

    pub fn insert(&mut self, local: u16, entry: Entry) {
        self.touched.push(local);
        self.map.insert(local, entry);
    }

    pub fn remove(&mut self, local: &u16) -> Option<Entry> {
        let entry = self.map.remove(local)?;
        if let Some(at) = entry.scheduled {
            self.timers.remove(&(at, *local));
        }
        Some(entry)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u16, &Entry)> {
        self.map.iter()
    }

    /// Brings the deadline index up to date for everything touched since the last call.
    pub fn reschedule(&mut self) {
        self.touched.sort_unstable();
        self.touched.dedup();
        for local in self.touched.drain(..) {
            let Some(entry) = self.map.get_mut(&local) else { continue };
            let new = deadline(entry);
            if new == entry.scheduled {
                continue;
            }
            if let Some(old) = entry.scheduled {
                self.timers.remove(&(old, local));
            }
            if let Some(at) = new {
                self.timers.insert((at, local));
            }
            entry.scheduled = new;
        }
    }

    /// The earliest deadline of any dialog (after [`reschedule`](Self::reschedule)).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Dialogs whose deadline has come, in deadline order.
    pub fn due(&self, now: Instant) -> Vec<u16> {
        self.timers.range(..=(now, u16::MAX)).map(|(_, local)| *local).collect()
    }
}

/// When a dialog next needs attention: retransmission or linger end, a held
/// REGREJ, or a call's autokill, scheduled hangup, PING, LAGRQ or key rotation.
fn deadline(e: &Entry) -> Option<Instant> {
    let own = match &e.role {
        Role::Registrar(x) => x.reject_at,
        Role::Call(c) if !e.dialog.is_finished() => {
            let hangup = c.hangup_at.filter(|_| c.state == CallState::Up);
            [c.autokill_at, hangup, c.ping_at, c.lagrq_at, c.rotate_at].into_iter().flatten().min()
        }
        _ => None,
    };
    [e.dialog.deadline(), own].into_iter().flatten().min()
}
