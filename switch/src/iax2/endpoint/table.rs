//! The endpoint's dialogs, indexed by local call number and by deadline.
//!
//! The table is a [`DenseTimedMap`]: every mutable access records the call number
//! as touched and `reschedule` refreshes only those deadlines. With hundreds
//! of calls this keeps "when is the next timer?" a lookup instead of a scan of
//! every dialog on every datagram.

use std::time::Instant;

use super::{Entry, Role};
use crate::deadline::{DenseTimedMap, Timed};
use crate::iax2::call::CallState;

pub(super) type DialogTable = DenseTimedMap<Entry>;

/// When a dialog next needs attention: retransmission or linger end, a held
/// REGREJ, or a call's autokill, scheduled hangup, PING, LAGRQ or key rotation.
impl Timed for Entry {
    fn deadline(&self) -> Option<Instant> {
        let own = match &self.role {
            Role::Registrar(x) => x.reject_at,
            Role::Call(c) if !self.dialog.is_finished() => {
                let hangup = c.hangup_at.filter(|_| c.state == CallState::Up);
                [c.autokill_at, hangup, c.ping_at, c.lagrq_at, c.rotate_at].into_iter().flatten().min()
            }
            _ => None,
        };
        [self.dialog.deadline(), own].into_iter().flatten().min()
    }
}
