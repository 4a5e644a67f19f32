//! Call tokens (RFC 5456 amendment as deployed by Asterisk 1.6.2+): a source
//! must echo back a token bound to its address before it may hold a call
//! number, so spoofed sources cannot exhaust the call-number space.
//!
//! A token is `<issue-second>?<hex MD5(key || addr || issue-second)>`. The key
//! is random per switch, so tokens are opaque to peers and cannot be forged.

use std::net::SocketAddr;
use std::time::Duration;

use md5::{Digest, Md5};

pub struct CallTokens {
    key: [u8; 16],
}

impl CallTokens {
    pub fn new(key: [u8; 16]) -> Self {
        CallTokens { key }
    }

    /// A token for `addr`, issued at `now` (seconds on the switch's clock).
    pub fn issue(&self, addr: SocketAddr, now: Duration) -> Vec<u8> {
        let second = now.as_secs();
        format!("{second}?{}", self.mac(addr, second)).into_bytes()
    }

    /// Whether `token` was issued by us to `addr` no longer than `expiration` ago.
    pub fn validate(&self, token: &[u8], addr: SocketAddr, now: Duration, expiration: Duration) -> bool {
        let Ok(text) = std::str::from_utf8(token) else { return false };
        let Some((second, mac)) = text.split_once('?') else { return false };
        let Ok(second) = second.parse::<u64>() else { return false };
        let age = now.as_secs().checked_sub(second);
        matches!(age, Some(age) if age <= expiration.as_secs()) && mac == self.mac(addr, second)
    }

    fn mac(&self, addr: SocketAddr, second: u64) -> String {
        let mut md5 = Md5::new();
        md5.update(self.key);
        md5.update(addr.to_string().as_bytes());
        md5.update(second.to_be_bytes());
        md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_bound_to_address_key_and_time() {
        let tokens = CallTokens::new([7; 16]);
        let a: SocketAddr = "192.0.2.1:4569".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:4569".parse().unwrap();
        let t = tokens.issue(a, Duration::from_secs(100));
        let exp = Duration::from_secs(10);
        assert!(tokens.validate(&t, a, Duration::from_secs(105), exp));
        assert!(tokens.validate(&t, a, Duration::from_secs(110), exp));
        assert!(!tokens.validate(&t, a, Duration::from_secs(111), exp), "expired");
        assert!(!tokens.validate(&t, b, Duration::from_secs(105), exp), "other address");
        assert!(!CallTokens::new([8; 16]).validate(&t, a, Duration::from_secs(105), exp), "other key");
        assert!(!tokens.validate(b"garbage", a, Duration::from_secs(105), exp));
        assert!(!tokens.validate(b"200?00", a, Duration::from_secs(105), exp), "issued in the future");
    }
}
