//! Our dialogs by the other side's name for them: its address and its own
//! call number (the source call number of its full and mini frames, the call
//! number of its trunk entries).
//!
//! Every mini frame and trunk entry is looked up here. A trunk datagram
//! carries entries of many calls from one address, so the address is hashed
//! once per datagram, and the calls of one address are a sorted list that the
//! entries, which a trunk sends in call-number order, walk forward through.
//! The address map keeps the standard library's keyed hash: its keys come
//! from the network, and nothing here iterates it, so its order cannot show.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

#[derive(Default)]
pub(super) struct RemoteCalls {
    by_source: HashMap<Source, PeerCalls>,
}

impl RemoteCalls {
    /// Our call for `remote` from `from`; replaces what was there.
    pub fn insert(&mut self, from: SocketAddr, remote: u16, local: u16) {
        self.by_source.entry(Source(from)).or_default().insert(remote, local);
    }

    pub fn remove(&mut self, from: SocketAddr, remote: u16) {
        let key = Source(from);
        if let Some(calls) = self.by_source.get_mut(&key) {
            calls.remove(remote);
            if calls.is_empty() {
                self.by_source.remove(&key);
            }
        }
    }

    pub fn get(&self, from: SocketAddr, remote: u16) -> Option<u16> {
        self.from(from)?.get(remote)
    }

    /// Everything `from` has with us, to look up many calls of one datagram.
    pub fn from(&self, from: SocketAddr) -> Option<&PeerCalls> {
        self.by_source.get(&Source(from))
    }
}

/// One address's calls: (its call number, ours), sorted by its call number.
#[derive(Default)]
pub(super) struct PeerCalls {
    calls: Vec<(u16, u16)>,
}

impl PeerCalls {
    fn insert(&mut self, remote: u16, local: u16) {
        match self.calls.binary_search_by_key(&remote, |&(r, _)| r) {
            Ok(i) => self.calls[i].1 = local,
            Err(i) => self.calls.insert(i, (remote, local)),
        }
    }

    fn remove(&mut self, remote: u16) {
        if let Ok(i) = self.calls.binary_search_by_key(&remote, |&(r, _)| r) {
            self.calls.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn get(&self, remote: u16) -> Option<u16> {
        let mut cursor = 0;
        self.get_after(remote, &mut cursor)
    }

    /// [`PeerCalls::get`] for entries in rising call-number order: `cursor`
    /// is where the last one was found, and the next is most often just
    /// after it.
    pub fn get_after(&self, remote: u16, cursor: &mut usize) -> Option<u16> {
        if let Some(&(r, local)) = self.calls.get(*cursor) {
            if r == remote {
                *cursor += 1;
                return Some(local);
            }
        }
        let i = self.calls.binary_search_by_key(&remote, |&(r, _)| r).ok()?;
        *cursor = i + 1;
        Some(self.calls[i].1)
    }
}

/// A datagram's source, hashed as one or two words rather than field by
/// field. Flow label and scope are left out of the hash (not of the
/// equality): equal keys still hash alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Source(SocketAddr);

impl Hash for Source {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.0 {
            SocketAddr::V4(a) => state.write_u64(u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port())),
            SocketAddr::V6(a) => {
                state.write_u128(u128::from(*a.ip()));
                state.write_u16(a.port());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_each_call_by_address_and_call_number() {
        let mut r = RemoteCalls::default();
        let (a, b) = (addr("192.0.2.1:4569"), addr("[2001:db8::1]:4569"));
        r.insert(a, 7, 100);
        r.insert(a, 3, 101);
        r.insert(b, 7, 102);
        assert_eq!(r.get(a, 7), Some(100));
        assert_eq!(r.get(a, 3), Some(101));
        assert_eq!(r.get(b, 7), Some(102));
        assert_eq!(r.get(b, 3), None);
        assert_eq!(r.get(addr("192.0.2.1:4570"), 7), None);
        r.insert(a, 7, 103);
        assert_eq!(r.get(a, 7), Some(103), "a new dialog for the same call number replaces the old");
        r.remove(a, 7);
        r.remove(a, 3);
        assert_eq!(r.get(a, 3), None);
        assert!(r.from(a).is_none(), "an address without calls is forgotten");
        assert_eq!(r.get(b, 7), Some(102));
    }

    #[test]
    fn a_cursor_walks_rising_call_numbers_and_finds_the_others_too() {
        let mut r = RemoteCalls::default();
        let a = addr("192.0.2.1:4569");
        for n in (1..=800u16).rev() {
            r.insert(a, n * 2, n);
        }
        let calls = r.from(a).unwrap();
        let mut cursor = 0;
        for n in 1..=800u16 {
            assert_eq!(calls.get_after(n * 2, &mut cursor), Some(n));
        }
        // Out of order, missing, and past the end: the cursor only speeds things up.
        assert_eq!(calls.get_after(10, &mut cursor), Some(5));
        assert_eq!(calls.get_after(11, &mut cursor), None);
        assert_eq!(calls.get_after(1600, &mut cursor), Some(800));
        assert_eq!(calls.get_after(2, &mut cursor), Some(1));
    }
}
