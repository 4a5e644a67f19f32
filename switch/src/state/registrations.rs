//! The file of saved registrations, `iax2-registrations.json`:
//!
//! ```json
//! {"version":1,"peers":[{"peer":"B","addr":"198.51.100.20:4569","expiry":60,"expires_unix_ms":1767225665000}]}
//! ```
//!
//! Deadlines are absolute (milliseconds since the UNIX epoch) because the
//! monotonic clock of the process that wrote them means nothing to the next
//! one. JSON because an operator can read and, in a pinch, edit it, and the
//! switch already depends on serde_json; it is small and rewritten whole.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::iax2::registrar::SavedRegistration;

/// The file's name inside the state directory.
pub const FILE: &str = "iax2-registrations.json";
/// At most this many registrations are saved (the first by peer name): the
/// file stays small and loading it can never take long.
pub const MAX_ENTRIES: usize = 10_000;
/// A file larger than this is refused unread (10 000 entries fit well within).
pub const MAX_BYTES: u64 = 2 * 1024 * 1024;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    peers: Vec<Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    peer: String,
    addr: SocketAddr,
    expiry: u16,
    expires_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    // Before 1970 only on a broken clock; saving 0 then makes every entry expired.
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// The file's bytes for `saved`, deadlines counted from `wall_now`. Entries
/// beyond [`MAX_ENTRIES`], or that would take the file past [`MAX_BYTES`]
/// (only with absurdly long peer names), are left out: then those peers wait
/// for their next REGREQ after a restart, as without a state directory.
pub fn encode(saved: &[SavedRegistration], wall_now: SystemTime) -> Vec<u8> {
    let now = unix_ms(wall_now);
    let mut size = 64; // the envelope, generously
    let mut peers = Vec::new();
    for s in saved.iter().take(MAX_ENTRIES) {
        let entry = Entry {
            peer: s.peer.clone(),
            addr: s.addr,
            expiry: s.expiry,
            expires_unix_ms: now.saturating_add(s.remaining.as_millis().min(u128::from(u64::MAX)) as u64),
        };
        size += serde_json::to_vec(&entry).map_or(usize::MAX / 2, |b| b.len() + 1);
        if size as u64 > MAX_BYTES {
            break;
        }
        peers.push(entry);
    }
    let mut bytes = serde_json::to_vec(&File { version: VERSION, peers }).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The registrations in `bytes` that have time left at `wall_now`, with that
/// time; expired ones are dropped.
pub fn decode(bytes: &[u8], wall_now: SystemTime) -> Result<Vec<SavedRegistration>, StateError> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(StateError::TooLarge { bytes: bytes.len() as u64, limit: MAX_BYTES });
    }
    // The version first, so a newer file says so rather than "unknown field".
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let v: Versioned = serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
    if v.version != VERSION {
        return Err(StateError::Version(v.version));
    }
    let file: File = serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
    if file.peers.len() > MAX_ENTRIES {
        return Err(StateError::Malformed(format!("{} entries, at most {MAX_ENTRIES}", file.peers.len())));
    }
    let now = unix_ms(wall_now);
    Ok(file
        .peers
        .into_iter()
        .filter(|e| e.expires_unix_ms > now)
        .map(|e| SavedRegistration {
            peer: e.peer,
            addr: e.addr,
            expiry: e.expiry,
            remaining: Duration::from_millis(e.expires_unix_ms - now),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600 + secs)
    }

    fn saved(peer: &str, remaining: u64) -> SavedRegistration {
        SavedRegistration {
            peer: peer.into(),
            addr: "[2001:db8::7]:4569".parse().unwrap(),
            expiry: 60,
            remaining: Duration::from_secs(remaining),
        }
    }

    #[test]
    fn round_trip_counts_down_the_time_between() {
        let bytes = encode(&[saved("a", 30), saved("b", 65)], at(0));
        assert!(bytes.ends_with(b"\n"));
        assert_eq!(decode(&bytes, at(0)).unwrap(), vec![saved("a", 30), saved("b", 65)]);
        // Restarted 20 s later: 20 s less for each.
        assert_eq!(decode(&bytes, at(20)).unwrap(), vec![saved("a", 10), saved("b", 45)]);
    }

    #[test]
    fn expired_entries_are_dropped() {
        let bytes = encode(&[saved("a", 30), saved("b", 65)], at(0));
        assert_eq!(decode(&bytes, at(30)).unwrap(), vec![saved("b", 35)]);
        assert!(decode(&bytes, at(3600)).unwrap().is_empty());
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let now = at(0);
        for bad in [
            &b""[..],
            b"\x00\xff\xfe",
            b"{",
            b"[]",
            b"{\"version\":1}",
            b"{\"version\":1,\"peers\":[{\"peer\":\"b\"}]}",
            b"{\"version\":1,\"peers\":[{\"peer\":\"b\",\"addr\":\"nowhere\",\"expiry\":60,\"expires_unix_ms\":1}]}",
            b"{\"version\":1,\"peers\":[{\"peer\":\"b\",\"addr\":\"192.0.2.1:1\",\"expiry\":70000,\"expires_unix_ms\":1}]}",
            b"{\"version\":1,\"peers\":[],\"extra\":true}",
        ] {
            assert!(matches!(decode(bad, now), Err(StateError::Malformed(_))), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(decode(b"{\"version\":2,\"peers\":[]}", now), Err(StateError::Version(2))));
        let huge = vec![b' '; MAX_BYTES as usize + 1];
        assert!(matches!(decode(&huge, now), Err(StateError::TooLarge { .. })));
    }

    #[test]
    fn the_number_of_entries_is_bounded() {
        let many: Vec<SavedRegistration> = (0..MAX_ENTRIES + 5).map(|i| saved(&format!("p{i:05}"), 60)).collect();
        let bytes = encode(&many, at(0));
        assert!((bytes.len() as u64) < MAX_BYTES, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes, at(0)).unwrap().len(), MAX_ENTRIES);
        // Long names stop at the size limit instead of making a file no one may read.
        let long: Vec<SavedRegistration> =
            (0..2000).map(|i| saved(&format!("{i:05}{}", "x".repeat(2000)), 60)).collect();
        let bytes = encode(&long, at(0));
        assert!((bytes.len() as u64) <= MAX_BYTES, "{} bytes", bytes.len());
        assert!(!decode(&bytes, at(0)).unwrap().is_empty());
    }

    #[test]
    fn a_clock_before_1970_expires_everything_rather_than_failing() {
        let bytes = encode(&[saved("a", 30)], UNIX_EPOCH - Duration::from_secs(10));
        assert!(decode(&bytes, at(0)).unwrap().is_empty());
    }
}
