//! The SIP registrar's location service (RFC 3261 10.3): which contacts each
//! user has bound, until when, and from which source address.
//!
//! Only authenticated REGISTERs reach it, and each user holds at most
//! [`MAX_BINDINGS`] contacts, so nothing a remote party sends grows it beyond
//! `users × MAX_BINDINGS`.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::deadline::DeadlineIndex;

/// Contacts one user may hold at once (phones, softphones, a desk set).
pub const MAX_BINDINGS: usize = 10;

/// One registered contact of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as the UA wrote it.
    pub contact: String,
    /// Where the REGISTER came from: where requests to this contact go, its
    /// reach address (Kamailio's `received`), whatever the Contact says.
    pub source: SocketAddr,
    /// The REGISTER showed the phone behind NAT (see [`crate::sip::nat`]).
    pub nat: bool,
    pub expires_at: Instant,
    /// Call-ID and CSeq of the REGISTER that last refreshed it (RFC 3261 10.3 step 7).
    pub call_id: String,
    pub cseq: u32,
}

/// What a REGISTER asked for one contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactRequest {
    pub contact: String,
    /// Seconds; 0 removes the binding.
    pub expires: u32,
    /// The phone is behind NAT.
    pub nat: bool,
}

/// Why a REGISTER was refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A binding with this Call-ID already has a CSeq at least as high: an old
    /// or reordered REGISTER (RFC 3261 10.3 step 7: 500).
    OutOfOrder,
    /// More contacts than [`MAX_BINDINGS`].
    TooMany,
}

/// Bindings per user name, indexed so that no question the event loop asks
/// on every turn (the next expiry, whether a source is registered) walks
/// every binding: with 100,000 phones registered, an idle switch stays idle.
#[derive(Debug, Default)]
pub struct Registrar {
    users: BTreeMap<String, Vec<Binding>>,
    /// Each user's earliest binding expiry.
    expiries: DeadlineIndex<String>,
    /// Bindings per (source IP, expiry): a source is registered while it has
    /// an entry later than now.
    sources: BTreeMap<(IpAddr, Instant), u32>,
}

impl Registrar {
    /// Applies one REGISTER's contacts for `user`; all or nothing. Returns,
    /// per contact, whether it only refreshed a binding it found unchanged
    /// (same contact, same source).
    pub fn update(
        &mut self,
        now: Instant,
        user: &str,
        source: SocketAddr,
        call_id: &str,
        cseq: u32,
        contacts: &[ContactRequest],
    ) -> Result<Vec<bool>, Refused> {
        let mut bindings = self.bindings(now, user);
        let refreshed = contacts
            .iter()
            .map(|c| c.expires > 0 && bindings.iter().any(|b| b.contact == c.contact && b.source == source))
            .collect();
        for b in &bindings {
            if b.call_id == call_id && b.cseq >= cseq && contacts.iter().any(|c| c.contact == b.contact) {
                return Err(Refused::OutOfOrder);
            }
        }
        for c in contacts {
            bindings.retain(|b| b.contact != c.contact);
            if c.expires > 0 {
                bindings.push(Binding {
                    contact: c.contact.clone(),
                    source,
                    nat: c.nat,
                    expires_at: now + Duration::from_secs(u64::from(c.expires)),
                    call_id: call_id.to_string(),
                    cseq,
                });
            }
        }
        if bindings.len() > MAX_BINDINGS {
            return Err(Refused::TooMany);
        }
        self.store(user, bindings);
        Ok(refreshed)
    }

    /// `Contact: *` with `Expires: 0`: every binding of `user` goes.
    pub fn remove_all(&mut self, user: &str) -> usize {
        let removed = self.users.get(user).map_or(0, Vec::len);
        self.store(user, Vec::new());
        removed
    }

    /// The user's unexpired bindings, oldest first.
    pub fn bindings(&self, now: Instant, user: &str) -> Vec<Binding> {
        self.users.get(user).map(|b| b.iter().filter(|b| b.expires_at > now).cloned().collect()).unwrap_or_default()
    }

    /// Whether any unexpired binding was registered from `source`'s IP address.
    pub fn is_registered_source(&self, now: Instant, source: SocketAddr) -> bool {
        let ip = source.ip();
        self.sources
            .range((Bound::Excluded((ip, now)), Bound::Unbounded))
            .next()
            .is_some_and(|((bound, _), _)| *bound == ip)
    }

    /// Whether `user` holds an unexpired binding registered from `ip`.
    pub fn is_registered_from(&self, now: Instant, user: &str, ip: IpAddr) -> bool {
        self.users.get(user).is_some_and(|b| b.iter().any(|b| b.expires_at > now && b.source.ip() == ip))
    }

    /// Drops expired bindings. Returns each user who lost some, in name
    /// order, and whether none are left.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, bool)> {
        let mut due = self.expiries.due(now);
        due.sort_unstable();
        for user in &due {
            let left = self.bindings(now, user);
            self.store(user, left);
        }
        due.into_iter().map(|user| (user.clone(), !self.users.contains_key(&user))).collect()
    }

    /// When the next binding expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.next()
    }

    /// Forgets users no longer configured.
    pub fn retain_users(&mut self, configured: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.users.keys().filter(|u| !configured(u)).cloned().collect();
        for u in &gone {
            self.store(u, Vec::new());
        }
        gone
    }

    /// Every user with bindings, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Binding])> {
        self.users.iter().map(|(u, b)| (u.as_str(), b.as_slice()))
    }

    /// Replaces `user`'s bindings, keeping both indexes in step.
    fn store(&mut self, user: &str, bindings: Vec<Binding>) {
        let new_expiry = bindings.iter().map(|b| b.expires_at).min();
        for b in &bindings {
            *self.sources.entry((b.source.ip(), b.expires_at)).or_default() += 1;
        }
        let old = if bindings.is_empty() {
            self.users.remove_entry(user).map(|(_, old)| old)
        } else {
            self.users.insert(user.to_string(), bindings)
        };
        let old = old.unwrap_or_default();
        for b in &old {
            if let Entry::Occupied(mut count) = self.sources.entry((b.source.ip(), b.expires_at)) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        let old_expiry = old.iter().map(|b| b.expires_at).min();
        self.expiries.set(&user.to_string(), old_expiry, new_expiry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn contact(c: &str, expires: u32) -> ContactRequest {
        ContactRequest { contact: c.into(), expires, nat: false }
    }

    #[test]
    fn bindings_are_added_refreshed_removed_and_expire() {
        let t0 = Instant::now();
        let mut r = Registrar::default();
        r.update(t0, "alice", addr(5060), "c1", 1, &[contact("sip:alice@a", 60)]).unwrap();
        r.update(t0, "alice", addr(5062), "c2", 1, &[contact("sip:alice@b", 120)]).unwrap();
        assert_eq!(r.bindings(t0, "alice").len(), 2);
        assert!(r.is_registered_source(t0, addr(9999)), "same IP, any port");
        // A refresh moves the expiry; an old CSeq of the same Call-ID is refused.
        r.update(t0 + Duration::from_secs(50), "alice", addr(5060), "c1", 2, &[contact("sip:alice@a", 60)]).unwrap();
        assert_eq!(r.update(t0, "alice", addr(5060), "c1", 2, &[contact("sip:alice@a", 60)]), Err(Refused::OutOfOrder));
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(110)));
        // expires=0 removes one binding.
        r.update(t0, "alice", addr(5062), "c2", 2, &[contact("sip:alice@b", 0)]).unwrap();
        assert_eq!(r.bindings(t0, "alice").iter().map(|b| b.contact.as_str()).collect::<Vec<_>>(), ["sip:alice@a"]);
        assert!(r.expire(t0 + Duration::from_secs(109)).is_empty());
        assert!(r.is_registered_source(t0 + Duration::from_secs(109), addr(1)));
        assert_eq!(r.expire(t0 + Duration::from_secs(110)), [("alice".to_string(), true)]);
        assert!(r.bindings(t0, "alice").is_empty());
        assert!(!r.is_registered_source(t0, addr(1)), "the source index follows");
        assert_eq!(r.next_expiry(), None);
    }

    #[test]
    fn a_user_holds_a_bounded_number_of_contacts() {
        let t0 = Instant::now();
        let mut r = Registrar::default();
        let many: Vec<ContactRequest> = (0..=MAX_BINDINGS).map(|i| contact(&format!("sip:u@h{i}"), 60)).collect();
        assert_eq!(r.update(t0, "u", addr(1), "c", 1, &many), Err(Refused::TooMany));
        assert!(r.bindings(t0, "u").is_empty(), "all or nothing");
        r.update(t0, "u", addr(1), "c", 1, &many[..MAX_BINDINGS]).unwrap();
        assert_eq!(r.remove_all("u"), MAX_BINDINGS);
    }
}
