//! Deadlines indexed by time, for the protocol cores' timers.
//!
//! An endpoint with thousands of dialogs or transactions must answer "when is
//! the next timer?" on every turn of the event loop, and a storm makes that
//! question as frequent as datagrams. Scanning every entry makes a storm
//! quadratic; keeping `(deadline, key)` in an ordered set makes the question a
//! lookup and `handle_timeout` a walk over the due entries only.
//!
//! Two layers: [`DeadlineIndex`] is the ordered set alone, for callers that
//! know an entry's old deadline when it changes (an entry whose deadline is
//! fixed at creation); [`TimedMap`] is a map whose entries compute their own
//! deadline ([`Timed`]) and are re-indexed lazily: every mutable access
//! records the key, and [`TimedMap::reschedule`] refreshes only those, so
//! state machines can be driven through `get_mut` without the caller
//! tracking which of them changed. Ties are broken by key order, so the order
//! in which due entries are handled is deterministic.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Something with a next deadline (a dialog, a transaction).
pub trait Timed {
    fn deadline(&self) -> Option<Instant>;
}

/// `(deadline, key)` pairs in time order.
#[derive(Debug)]
pub struct DeadlineIndex<K> {
    timers: BTreeSet<(Instant, K)>,
}

impl<K> Default for DeadlineIndex<K> {
    fn default() -> Self {
        DeadlineIndex { timers: BTreeSet::new() }
    }
}

impl<K: Ord + Clone> DeadlineIndex<K> {
    /// Moves `key` from its `old` deadline to `new` (either may be absent).
    pub fn set(&mut self, key: &K, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        if let Some(at) = old {
            self.timers.remove(&(at, key.clone()));
        }
        if let Some(at) = new {
            self.timers.insert((at, key.clone()));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The entry with the earliest deadline, ties by key.
    pub fn first(&self) -> Option<&(Instant, K)> {
        self.timers.first()
    }

    /// Keys whose deadline is at or before `now`, in deadline order. Only
    /// the due entries are visited.
    pub fn due(&self, now: Instant) -> Vec<K> {
        self.timers.iter().take_while(|(at, _)| *at <= now).map(|(_, k)| k.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.timers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}

struct Slot<V> {
    value: V,
    /// The deadline the index has this entry under, which may lag
    /// `value.deadline()` until the next reschedule.
    scheduled: Option<Instant>,
}

/// A map of [`Timed`] entries with a deadline index kept up to date by
/// [`reschedule`](Self::reschedule).
pub struct TimedMap<K, V> {
    map: BTreeMap<K, Slot<V>>,
    touched: Vec<K>,
    index: DeadlineIndex<K>,
}

impl<K, V> Default for TimedMap<K, V> {
    fn default() -> Self {
        TimedMap { map: BTreeMap::new(), touched: Vec::new(), index: DeadlineIndex::default() }
    }
}

impl<K: Ord + Clone, V: Timed> TimedMap<K, V> {
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.get(key).map(|s| &s.value)
    }

    /// A mutable entry; its deadline is refreshed at the next reschedule.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let (owned, _) = self.map.get_key_value(key)?;
        self.touched.push(owned.clone());
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.map.contains_key(key)
    }

    /// Inserts (or replaces) an entry; it is indexed at the next reschedule.
    pub fn insert(&mut self, key: K, value: V) {
        self.touched.push(key.clone());
        if let Some(old) = self.map.insert(key.clone(), Slot { value, scheduled: None }) {
            self.index.set(&key, old.scheduled, None);
        }
    }

    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let (key, slot) = self.map.remove_entry(key)?;
        self.index.set(&key, slot.scheduled, None);
        Some(slot.value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, s)| (k, &s.value))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|s| &s.value)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Brings the index up to date for every entry touched since the last
    /// call, calling `visit` once on each of them first (callers keep other
    /// per-entry accounting, such as memory, current the same lazy way).
    pub fn reschedule_with(&mut self, mut visit: impl FnMut(&K, &mut V)) {
        if self.touched.is_empty() {
            return;
        }
        self.touched.sort_unstable();
        self.touched.dedup();
        for key in self.touched.drain(..) {
            let Some(slot) = self.map.get_mut(&key) else { continue };
            visit(&key, &mut slot.value);
            let new = slot.value.deadline();
            self.index.set(&key, slot.scheduled, new);
            slot.scheduled = new;
        }
    }

    pub fn reschedule(&mut self) {
        self.reschedule_with(|_, _| {});
    }

    /// Whether entries were touched since the last reschedule.
    pub fn is_dirty(&self) -> bool {
        !self.touched.is_empty()
    }

    /// The earliest deadline of any entry (after a reschedule).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.index.next()
    }

    /// Entries whose deadline has come, in deadline order (after a reschedule).
    pub fn due(&self, now: Instant) -> Vec<K> {
        self.index.due(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct At(Option<Instant>);

    impl Timed for At {
        fn deadline(&self) -> Option<Instant> {
            self.0
        }
    }

    #[test]
    fn only_touched_entries_move_and_due_ones_come_in_order() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut map: TimedMap<u16, At> = TimedMap::default();
        map.insert(3, At(Some(t0 + s(5))));
        map.insert(1, At(Some(t0 + s(5))));
        map.insert(2, At(None));
        assert_eq!(map.next_deadline(), None, "nothing is indexed before a reschedule");
        map.reschedule();
        assert_eq!(map.next_deadline(), Some(t0 + s(5)));
        assert_eq!(map.due(t0 + s(4)), Vec::<u16>::new());
        assert_eq!(map.due(t0 + s(5)), vec![1, 3], "ties in key order");

        map.get_mut(&2).unwrap().0 = Some(t0 + s(1));
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![2, 1, 3]);

        map.get_mut(&1).unwrap().0 = None;
        map.remove(&3);
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![2]);
        assert_eq!(map.len(), 2);

        map.insert(2, At(Some(t0 + s(7))));
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![2], "a replaced entry leaves its old deadline");
        assert_eq!(map.next_deadline(), Some(t0 + s(7)));
    }

    #[test]
    fn the_bare_index_moves_keys_between_deadlines() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut index: DeadlineIndex<String> = DeadlineIndex::default();
        index.set(&"a".into(), None, Some(t0 + s(2)));
        index.set(&"b".into(), None, Some(t0 + s(1)));
        assert_eq!(index.first(), Some(&(t0 + s(1), "b".to_string())));
        index.set(&"b".into(), Some(t0 + s(1)), Some(t0 + s(3)));
        assert_eq!(index.due(t0 + s(2)), vec!["a".to_string()]);
        index.set(&"a".into(), Some(t0 + s(2)), None);
        assert_eq!(index.len(), 1);
        assert_eq!(index.next(), Some(t0 + s(3)));
    }
}
