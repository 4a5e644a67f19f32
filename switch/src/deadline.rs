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

/// A [`TimedMap`] for small integer keys (IAX2 call numbers), stored in a
/// vector indexed by key.
///
/// The media path looks its call up several times per frame (receive, echo
/// or bridge, send), tens of thousands of times per second of a busy trunk:
/// an indexed load instead of a B-tree descent, and a touched flag instead
/// of a sorted, deduplicated list of keys, keep that cost flat. Iteration is
/// in key order, as [`TimedMap`]'s, through a set of the keys in use.
pub struct DenseTimedMap<V> {
    /// Position in `slots` plus one for each key; 0 for no entry.
    pos: Vec<u32>,
    slots: Vec<DenseSlot<V>>,
    keys: BTreeSet<u16>,
    touched: Vec<u16>,
    index: DeadlineIndex<u16>,
}

struct DenseSlot<V> {
    key: u16,
    value: V,
    scheduled: Option<Instant>,
    /// Already in `touched`.
    touched: bool,
}

impl<V> Default for DenseTimedMap<V> {
    fn default() -> Self {
        DenseTimedMap {
            pos: Vec::new(),
            slots: Vec::new(),
            keys: BTreeSet::new(),
            touched: Vec::new(),
            index: DeadlineIndex::default(),
        }
    }
}

impl<V: Timed> DenseTimedMap<V> {
    fn slot(&self, key: u16) -> Option<usize> {
        match self.pos.get(usize::from(key)) {
            Some(&p) if p > 0 => Some(p as usize - 1),
            _ => None,
        }
    }

    pub fn get(&self, key: &u16) -> Option<&V> {
        self.slot(*key).map(|i| &self.slots[i].value)
    }

    /// A mutable entry; its deadline is refreshed at the next reschedule.
    pub fn get_mut(&mut self, key: &u16) -> Option<&mut V> {
        let i = self.slot(*key)?;
        let slot = &mut self.slots[i];
        if !slot.touched {
            slot.touched = true;
            self.touched.push(*key);
        }
        Some(&mut slot.value)
    }

    /// A mutable entry the caller promises not to change the deadline of
    /// (or to [`touch`](Self::touch) afterwards): per-frame media work skips
    /// recomputing a deadline it cannot move.
    pub fn peek_mut(&mut self, key: &u16) -> Option<&mut V> {
        let i = self.slot(*key)?;
        Some(&mut self.slots[i].value)
    }

    /// Has the entry's deadline refreshed at the next reschedule.
    pub fn touch(&mut self, key: &u16) {
        let Some(i) = self.slot(*key) else { return };
        let slot = &mut self.slots[i];
        if !slot.touched {
            slot.touched = true;
            self.touched.push(*key);
        }
    }

    pub fn contains_key(&self, key: &u16) -> bool {
        self.slot(*key).is_some()
    }

    /// Inserts (or replaces) an entry; it is indexed at the next reschedule.
    pub fn insert(&mut self, key: u16, value: V) {
        self.touched.push(key);
        let fresh = DenseSlot { key, value, scheduled: None, touched: true };
        if let Some(i) = self.slot(key) {
            let old = std::mem::replace(&mut self.slots[i], fresh);
            self.index.set(&key, old.scheduled, None);
            return;
        }
        let k = usize::from(key);
        if self.pos.len() <= k {
            self.pos.resize(k + 1, 0);
        }
        self.slots.push(fresh);
        self.pos[k] = self.slots.len() as u32;
        self.keys.insert(key);
    }

    pub fn remove(&mut self, key: &u16) -> Option<V> {
        let i = self.slot(*key)?;
        let slot = self.slots.swap_remove(i);
        self.pos[usize::from(*key)] = 0;
        if let Some(moved) = self.slots.get(i) {
            self.pos[usize::from(moved.key)] = i as u32 + 1;
        }
        self.keys.remove(key);
        self.index.set(key, slot.scheduled, None);
        Some(slot.value)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&u16, &V)> {
        self.keys.iter().filter_map(|k| self.slot(*k).map(|i| (k, &self.slots[i].value)))
    }

    /// The keys in use, in order (a loop that changes the map walks these).
    pub fn keys_into(&self, keys: &mut Vec<u16>) {
        keys.clear();
        keys.extend(self.keys.iter().copied());
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Brings the index up to date for every entry touched since the last call.
    pub fn reschedule(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for key in touched.drain(..) {
            let Some(i) = self.slot(key) else { continue };
            let slot = &mut self.slots[i];
            slot.touched = false;
            let new = slot.value.deadline();
            self.index.set(&key, slot.scheduled, new);
            slot.scheduled = new;
        }
        self.touched = touched;
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
    pub fn due(&self, now: Instant) -> Vec<u16> {
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
    fn the_dense_map_keeps_the_timed_maps_order_and_deadlines() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut map: DenseTimedMap<At> = DenseTimedMap::default();
        map.insert(300, At(Some(t0 + s(5))));
        map.insert(1, At(Some(t0 + s(5))));
        map.insert(2, At(None));
        assert_eq!(map.next_deadline(), None, "nothing is indexed before a reschedule");
        map.reschedule();
        assert_eq!(map.due(t0 + s(5)), vec![1, 300], "ties in key order");

        map.get_mut(&2).unwrap().0 = Some(t0 + s(1));
        map.get_mut(&2).unwrap().0 = Some(t0 + s(2));
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![2, 1, 300]);

        map.peek_mut(&2).unwrap().0 = Some(t0 + s(8));
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![2, 1, 300], "a peek does not reschedule");
        map.touch(&2);
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![1, 300, 2]);

        map.get_mut(&1).unwrap().0 = None;
        assert!(map.remove(&1).is_some(), "the last slot moves into the removed one");
        assert!(map.remove(&1).is_none());
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![300, 2]);
        assert_eq!(map.get(&300).and_then(|a| a.0), Some(t0 + s(5)));
        assert_eq!(map.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![2, 300]);

        map.insert(2, At(Some(t0 + s(7))));
        map.insert(9, At(None));
        map.reschedule();
        assert_eq!(map.due(t0 + s(9)), vec![300, 2], "a replaced entry leaves its old deadline");
        assert_eq!(map.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![2, 9, 300]);
        assert_eq!(map.len(), 3);
        assert!(map.contains_key(&9) && !map.contains_key(&10) && !map.contains_key(&60000));
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
