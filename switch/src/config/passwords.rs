//! Which passwords a public listener refuses: the ones a SIP or IAX2 cracker
//! tries first. svcrack found a 4-digit SIP password in 79 s; dictionaries
//! start with these, and with the account's own name in its variations.
//!
//! The rule is deliberately simple so an operator can predict it: at least
//! [`MIN_LEN`] characters, not in [`WELL_KNOWN`] (case-insensitive), not the
//! account name (or the extension) forwards or backwards, not one character
//! repeated. Loopback listeners may keep weak passwords, with a warning.

/// Shortest password accepted on a public listener.
pub const MIN_LEN: usize = 8;

/// Passwords from the top of every SIP cracking dictionary and of the
/// defaults shipped by PBX distributions.
pub const WELL_KNOWN: &[&str] = &[
    "0000",
    "1111",
    "1234",
    "12345",
    "123456",
    "1234567",
    "12345678",
    "123456789",
    "1234567890",
    "87654321",
    "11111111",
    "00000000",
    "password",
    "password1",
    "passw0rd",
    "p@ssw0rd",
    "secret",
    "admin",
    "administrator",
    "test",
    "testing",
    "qwerty",
    "qwertyuiop",
    "letmein",
    "welcome",
    "changeme",
    "default",
    "asterisk",
    "freeswitch",
    "freepbx",
    "voip",
    "abc123",
    "abcd1234",
    "1q2w3e4r",
    "trustno1",
    "iloveyou",
];

/// Why `password` is weak for account `name` (`extensions`: other names the
/// account answers to), or `None`.
pub fn weakness(name: &str, extensions: &[&str], password: &str) -> Option<String> {
    let lower = password.to_lowercase();
    if WELL_KNOWN.contains(&lower.as_str()) {
        return Some("is on the list of passwords crackers try first".to_string());
    }
    for n in std::iter::once(name).chain(extensions.iter().copied()) {
        let n = n.to_lowercase();
        if n.is_empty() {
            continue;
        }
        if lower == n {
            return Some(format!("is the account name {n:?}"));
        }
        if lower == n.chars().rev().collect::<String>() {
            return Some(format!("is the account name {n:?} reversed"));
        }
    }
    if password.chars().count() < MIN_LEN {
        return Some(format!("is shorter than {MIN_LEN} characters"));
    }
    let mut chars = password.chars();
    if let Some(first) = chars.next() {
        if chars.all(|c| c == first) {
            return Some("is one character repeated".to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_strong() {
        for (name, pw) in [
            ("1000", "0000"),
            ("1000", "1234"),
            ("alice", "Password"),
            ("alice", "secret"),
            ("alice", "letmein"),
            ("alice", "qwerty"),
            ("1000", "12345678"),
            ("alicealice", "alicealice"),
            ("alicealice", "ecilaecila"),
            ("alice", "short"),
            ("alice", "zzzzzzzzzz"),
            ("alice", ""),
        ] {
            assert!(weakness(name, &[], pw).is_some(), "{name}/{pw} should be weak");
        }
        assert_eq!(weakness("phone", &["20005000"], "20005000").as_deref(), Some("is the account name \"20005000\""));
        assert_eq!(weakness("1000", &[], "1234").as_deref(), Some("is on the list of passwords crackers try first"));
        assert_eq!(weakness("1000", &[], "pw").as_deref(), Some("is shorter than 8 characters"));
        for pw in ["trunksecret", "another-secret", "wonderland-42", "Xk3-long-random"] {
            assert_eq!(weakness("alice", &[], pw), None, "{pw}");
        }
    }
}
