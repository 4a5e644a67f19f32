//! The SIP registrar's location service (RFC 3261 10.3): which contacts each
//! user has bound, until when, and from which source address.
//!
//! Only authenticated REGISTERs reach it, and each user holds at most
//! [`MAX_BINDINGS`] contacts, so nothing a remote party sends grows it beyond
//! `users × MAX_BINDINGS`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// Bindings per user name.
#[derive(Debug, Default)]
pub struct Registrar {
    users: BTreeMap<String, Vec<Binding>>,
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
        self.users.remove(user).map_or(0, |b| b.len())
    }

    /// The user's unexpired bindings, oldest first.
    pub fn bindings(&self, now: Instant, user: &str) -> Vec<Binding> {
        self.users.get(user).map(|b| b.iter().filter(|b| b.expires_at > now).cloned().collect()).unwrap_or_default()
    }

    /// Whether any unexpired binding was registered from `source`'s IP address.
    pub fn is_registered_source(&self, now: Instant, source: SocketAddr) -> bool {
        self.users.values().flatten().any(|b| b.expires_at > now && b.source.ip() == source.ip())
    }

    /// Whether `user` holds an unexpired binding registered from `ip`.
    pub fn is_registered_from(&self, now: Instant, user: &str, ip: std::net::IpAddr) -> bool {
        self.users.get(user).is_some_and(|b| b.iter().any(|b| b.expires_at > now && b.source.ip() == ip))
    }

    /// Drops expired bindings; returns the users left with none.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        self.users.retain(|user, bindings| {
            bindings.retain(|b| b.expires_at > now);
            if bindings.is_empty() {
                gone.push(user.clone());
            }
            !bindings.is_empty()
        });
        gone
    }

    /// When the next binding expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.users.values().flatten().map(|b| b.expires_at).min()
    }

    /// Forgets users no longer configured.
    pub fn retain_users(&mut self, configured: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.users.keys().filter(|u| !configured(u)).cloned().collect();
        for u in &gone {
            self.users.remove(u);
        }
        gone
    }

    /// Every user with bindings, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Binding])> {
        self.users.iter().map(|(u, b)| (u.as_str(), b.as_slice()))
    }

    fn store(&mut self, user: &str, bindings: Vec<Binding>) {
        if bindings.is_empty() {
            self.users.remove(user);
        } else {
            self.users.insert(user.to_string(), bindings);
        }
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
        assert_eq!(r.expire(t0 + Duration::from_secs(110)), ["alice"]);
        assert!(r.bindings(t0, "alice").is_empty());
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
