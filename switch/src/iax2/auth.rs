//! Challenge/response authentication shared by registration and calls.

use md5::{Digest, Md5};
use rand::Rng;

/// A fresh challenge, a decimal number as Asterisk sends it.
pub fn new_challenge(rng: &mut impl Rng) -> String {
    rng.gen_range(100_000_000u32..1_000_000_000).to_string()
}

/// The MD5RESULT for `challenge` and `secret`: lowercase hex of MD5(challenge || secret).
pub fn md5_response(challenge: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(challenge.as_bytes());
    md5.update(secret.as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `response` proves knowledge of one of `secrets`. Compared in
/// constant time per secret so timing does not reveal how much matched.
pub fn md5_matches(challenge: &str, response: &str, secrets: &[String]) -> bool {
    let response = response.trim().to_ascii_lowercase();
    secrets
        .iter()
        .fold(false, |ok, s| ok | constant_time_eq(md5_response(challenge, s).as_bytes(), response.as_bytes()))
}

/// Whether a plaintext PASSWORD matches one of `secrets`.
pub fn plaintext_matches(password: &str, secrets: &[String]) -> bool {
    secrets.iter().fold(false, |ok, s| ok | constant_time_eq(s.as_bytes(), password.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_response_is_md5_of_challenge_then_secret() {
        // MD5("12345" "secret") computed independently with md5sum.
        assert_eq!(md5_response("12345", "secret"), "d6bf7523a8407696bb9448d0d0fecca8");
    }

    #[test]
    fn any_of_several_secrets_matches() {
        let secrets = vec!["old".to_string(), "new".to_string()];
        let r = md5_response("99", "new");
        assert!(md5_matches("99", &r, &secrets));
        assert!(md5_matches("99", &r.to_uppercase(), &secrets));
        assert!(!md5_matches("98", &r, &secrets));
        assert!(plaintext_matches("old", &secrets));
        assert!(!plaintext_matches("ol", &secrets));
    }
}
