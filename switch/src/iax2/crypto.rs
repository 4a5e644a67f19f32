//! IAX2 encryption as Asterisk's chan_iax2 deploys it (`encryption=yes` /
//! `aes128`, `forceencryption`, key rotation). RFC 5456 leaves encryption
//! out of scope, so everything here is established from chan_iax2 itself
//! (functions named below; Asterisk 20-era source, cross-checked against a
//! 1.6-era copy for the cipher core).
//!
//! # Negotiation (`IAX_IE_ENCRYPTION`, 0x2b, u16)
//!
//! Bits: [`method::AES128`] (0x0001) and [`method::KEYROTATE`] (0x8000).
//! Current Asterisk turns `encryption=yes` and `encryption=aes128` into
//! both bits (`get_encrypt_methods`; older releases sent 0x0001 only). The
//! caller puts its methods in NEW, the callee answers with its own in
//! AUTHREQ; each side keeps the intersection (`merge_encryption`), reduced
//! to AES128 when that bit is common, and a side only ever rotates keys if
//! KEYROTATE is in the intersection. See [`negotiate`]. Encryption needs
//! MD5 (or RSA plus a secret) authentication because the key comes from
//! the challenge. `forceencryption` only makes a side hang up or reject
//! when the intersection is empty. Registration is never encrypted.
//!
//! # Key
//!
//! The AES-128 key is the raw 16-byte MD5 digest of the challenge string
//! immediately followed by the shared secret, the same digest whose hex
//! form is the MD5_RESULT (`authenticate`, `authenticate_verify`,
//! `decrypt_frame`; [`IaxCipher::from_challenge`]). Both directions start
//! with that key (`build_encryption_keys`). A callee whose secret lists
//! several passwords separated by `;` tries each on the first encrypted
//! frame it receives and keeps the first one whose length checks pass.
//!
//! # When encryption starts
//!
//! NEW and AUTHREQ travel in clear. The callee marks the call encrypted
//! right after sending an AUTHREQ that carried an ENCRYPTION IE
//! (`authenticate_request`), so from then on it decrypts every full and
//! mini frame of that call. The caller derives the key from the AUTHREQ
//! challenge and encrypts from its AUTHREP on (`authenticate_reply`), ACKs
//! included. The callee sends in clear until it has a key, which it takes
//! from the first frame it manages to decrypt (the AUTHREP).
//!
//! # Which bytes are encrypted
//!
//! A receiver cannot tell an encrypted datagram from its bits: chan_iax2
//! looks the call up by the clear call numbers and decrypts whenever the
//! call is marked encrypted (`socket_process_helper`; an early lookup
//! skips full frames whose destination call number is 1). What stays
//! clear is chosen by the F bit alone (`encrypt_frame` / `decode_frame`):
//!
//! ```text
//! full frame: | scall (F=1) | dcall (R) | ENC(ts, oseqno, iseqno, type, csub, payload) |
//!               2 bytes clear 2 bytes clear
//! mini frame: | call (F=0) | ENC(ts16, payload) |
//!               2 bytes clear
//! ```
//!
//! So the retransmission (R) bit lives in clear text, but timestamps,
//! sequence numbers, frame type and subclass are all encrypted. Meta
//! trunk frames are never encrypted (they are handled before decryption)
//! and mini video frames are sent in clear by chan_iax2 even on encrypted
//! calls, yet its receive path then tries to decrypt them: video mini
//! frames on encrypted calls do not work against Asterisk, so only full
//! and mini voice frames belong here.
//!
//! # Cipher and padding
//!
//! AES-128 in CBC mode with an all-zero IV, no MAC (`memcpy_encrypt`,
//! `memcpy_decrypt`). Before encryption 16 to 31 padding bytes are put in
//! *front* of the encrypted part: with `n` the length of the part to
//! encrypt, `padding = 16 + ((16 - n % 16) mod 16)`, which makes the total
//! a multiple of 16. The low nibble of the 16th padding byte (index 15 of
//! the plaintext block sequence) holds `padding & 0x0f`; its high nibble
//! and all other padding bytes are random. The receiver decrypts, reads
//! `padding = 16 + (byte15 & 0x0f)` and drops that many leading bytes.
//! Because the first block is random, the zero IV does no harm to
//! confidentiality. chan_iax2 draws the first padding from `ast_random`
//! (`build_rand_pad`) and later reuses the tail of its previous plaintext;
//! here every padding byte comes from the caller's RNG, which the receiver
//! cannot tell apart.
//!
//! There is no integrity check: a wrong key usually still "decrypts" to
//! garbage, a datagram cut on a block boundary decrypts to a prefix of
//! its plaintext, and only length checks can fail (chan_iax2 requires, after
//! stripping the padding, at least a 12-byte full header or a 4-byte mini
//! header). [`IaxCipher::decrypt_datagram`] makes the same checks plus the
//! block alignment chan_iax2 takes for granted; callers must still
//! validate what comes out (e.g. by [`super::frame::decode`] and sequence
//! numbers).
//!
//! # Key rotation (RTKEY, IAX subclass 39)
//!
//! With KEYROTATE negotiated, each side rotates its own *transmit* key:
//! first when it sends its first voice frame, then every 120 to 300 s
//! (`iax2_key_rotate`, `iax2_send_internal`). The new key is 16 bytes
//! (Asterisk: MD5 of a random hex string) sent raw in an RTKEY frame as a
//! **CHALLENGE IE (0x0f)**, not as ENCKEY: ENCKEY (0x2c) is parsed but
//! unused by chan_iax2. The RTKEY frame itself is encrypted with the old
//! key, and the sender switches its transmit key right after queuing it
//! (queued frames keep the keys they were first encrypted with for their
//! retransmissions). The receiver replaces only its receive key with the
//! IE's 16 bytes (socket_process_helper, `case IAX_COMMAND_RTKEY`).
//! Datagrams under the new key that overtake the RTKEY, or arrive while
//! it is lost, fail to decrypt or decrypt to garbage. [`CallCrypto`]
//! follows these rules.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use md5::{Digest, Md5};
use rand::RngCore;

/// `IAX_IE_ENCRYPTION` method bits.
pub mod method {
    /// AES-128 (`IAX_ENCRYPT_AES128`).
    pub const AES128: u16 = 0x0001;
    /// Key rotation support (`IAX_ENCRYPT_KEYROTATE`).
    pub const KEYROTATE: u16 = 0x8000;
    /// What Asterisk advertises for `encryption=yes` or `aes128`.
    pub const ASTERISK_DEFAULT: u16 = AES128 | KEYROTATE;
}

/// Clear bytes at the start of an encrypted full frame (scall, dcall).
pub const FULL_CLEAR_LEN: usize = 4;
/// Clear bytes at the start of an encrypted mini frame (call number).
pub const MINI_CLEAR_LEN: usize = 2;
/// Header a decrypted full frame must still have.
const FULL_HEADER_LEN: usize = 12;
/// Header a decrypted mini frame must still have.
const MINI_HEADER_LEN: usize = 4;
const BLOCK_LEN: usize = 16;
/// Padding is 16 to 31 bytes.
const MIN_PADDING: usize = 16;
const MAX_PADDING: usize = 31;
/// Plaintext index whose low nibble records the padding length.
const PAD_NIBBLE_INDEX: usize = 15;
/// The IE carrying an RTKEY's new key.
const IE_CHALLENGE: u8 = 0x0f;
pub const KEY_LEN: usize = 16;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("{len}-byte datagram is too short: an encrypted {kind} frame has at least {min} bytes")]
    TooShort { kind: &'static str, len: usize, min: usize },
    #[error("encrypted part of {len} bytes is not a whole number of 16-byte blocks")]
    NotBlockAligned { len: usize },
    #[error("datagram starts with 16 zero bits (meta or mini video frame): chan_iax2 never encrypts those")]
    NotEncryptable,
    #[error("{len}-byte plaintext is shorter than the {header}-byte {kind} frame header")]
    ShortPlaintext { kind: &'static str, len: usize, header: usize },
    #[error("decrypted padding of {padding} bytes leaves less than a {header}-byte {kind} frame header (wrong key?)")]
    BadPadding { kind: &'static str, padding: usize, header: usize },
    #[error("RTKEY carries no 16-byte key in a CHALLENGE IE")]
    NoRotationKey,
}

/// What [`negotiate`] settled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The call is encrypted (AES-128).
    pub encrypt: bool,
    /// This side rotates its transmit key (both advertised KEYROTATE).
    pub rotate_keys: bool,
}

/// Combines our and the peer's ENCRYPTION IE values as chan_iax2's
/// `merge_encryption` does.
pub fn negotiate(ours: u16, theirs: u16) -> Negotiated {
    let common = ours & theirs;
    let encrypt = common & method::AES128 != 0;
    Negotiated { encrypt, rotate_keys: encrypt && common & method::KEYROTATE != 0 }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Full,
    Mini,
}

impl Kind {
    /// chan_iax2 chooses by the F bit of the first word only.
    fn of(datagram: &[u8]) -> Kind {
        match datagram.first() {
            Some(b) if b & 0x80 != 0 => Kind::Full,
            _ => Kind::Mini,
        }
    }

    fn clear_len(self) -> usize {
        match self {
            Kind::Full => FULL_CLEAR_LEN,
            Kind::Mini => MINI_CLEAR_LEN,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Kind::Full => FULL_HEADER_LEN,
            Kind::Mini => MINI_HEADER_LEN,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Mini => "mini",
        }
    }
}

fn starts_with_zero_word(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && datagram[0] == 0 && datagram[1] == 0
}

/// Padding chan_iax2 puts in front of `n` bytes to encrypt: 16..=31 bytes,
/// bringing the total to a multiple of 16.
pub fn padding_for(n: usize) -> usize {
    MIN_PADDING + (BLOCK_LEN - n % BLOCK_LEN) % BLOCK_LEN
}

/// AES-128 keys for one direction of an encrypted call.
#[derive(Clone)]
pub struct IaxCipher {
    key: [u8; KEY_LEN],
    /// Boxed: the key schedule is most of a kilobyte, and every dialog holds
    /// two optional ciphers whether or not its call is encrypted.
    aes: Box<Aes128>,
}

impl std::fmt::Debug for IaxCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IaxCipher { key: <redacted> }")
    }
}

impl PartialEq for IaxCipher {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for IaxCipher {}

impl IaxCipher {
    /// The key chan_iax2 derives: MD5(challenge || secret), raw digest.
    pub fn from_challenge(challenge: &str, secret: &str) -> IaxCipher {
        let mut md5 = Md5::new();
        md5.update(challenge.as_bytes());
        md5.update(secret.as_bytes());
        IaxCipher::from_key(md5.finalize().into())
    }

    pub fn from_key(key: [u8; KEY_LEN]) -> IaxCipher {
        IaxCipher { key, aes: Box::new(Aes128::new(&GenericArray::from(key))) }
    }

    /// The raw AES-128 key.
    pub fn key(&self) -> [u8; KEY_LEN] {
        self.key
    }

    /// Encrypts a whole encoded datagram (full or mini frame) as chan_iax2
    /// does; the call-number header stays clear. Never fails: like
    /// chan_iax2 it picks the layout from the F bit alone, so anything
    /// that is not a well-formed full or mini voice frame produces output
    /// no receiver will accept. [`IaxCipher::try_encrypt_datagram`] refuses
    /// such input instead.
    pub fn encrypt_datagram(&self, datagram: &[u8], rng: &mut impl RngCore) -> Vec<u8> {
        let mut pad = [0u8; MAX_PADDING];
        let clear = Kind::of(datagram).clear_len().min(datagram.len());
        let padding = padding_for(datagram.len() - clear);
        rng.fill_bytes(&mut pad[..padding]);
        self.seal(datagram, clear, &pad)
    }

    /// Like [`IaxCipher::encrypt_datagram`] but refuses what chan_iax2
    /// never encrypts or could not decrypt: meta and mini video frames,
    /// and datagrams shorter than their frame header.
    pub fn try_encrypt_datagram(&self, datagram: &[u8], rng: &mut impl RngCore) -> Result<Vec<u8>, CryptoError> {
        if starts_with_zero_word(datagram) {
            return Err(CryptoError::NotEncryptable);
        }
        let kind = Kind::of(datagram);
        if datagram.len() < kind.header_len() {
            return Err(CryptoError::ShortPlaintext {
                kind: kind.name(),
                len: datagram.len(),
                header: kind.header_len(),
            });
        }
        Ok(self.encrypt_datagram(datagram, rng))
    }

    /// Inverse of [`IaxCipher::encrypt_datagram`]. Errors on anything
    /// malformed, short or not decryptable; never panics. Success does not
    /// prove the key was right (there is no MAC).
    pub fn decrypt_datagram(&self, datagram: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if datagram.len() < MINI_CLEAR_LEN {
            return Err(CryptoError::TooShort {
                kind: "mini",
                len: datagram.len(),
                min: MINI_CLEAR_LEN + 2 * BLOCK_LEN,
            });
        }
        if starts_with_zero_word(datagram) {
            return Err(CryptoError::NotEncryptable);
        }
        let kind = Kind::of(datagram);
        let clear = kind.clear_len();
        // Padding of 16+ bytes plus at least 1 byte of header makes 2 blocks.
        let min = clear + 2 * BLOCK_LEN;
        if datagram.len() < min {
            return Err(CryptoError::TooShort { kind: kind.name(), len: datagram.len(), min });
        }
        let (head, body) = datagram.split_at(clear);
        if body.len() % BLOCK_LEN != 0 {
            return Err(CryptoError::NotBlockAligned { len: body.len() });
        }
        let plain = self.cbc_decrypt(body);
        let padding = MIN_PADDING + usize::from(plain[PAD_NIBBLE_INDEX] & 0x0f);
        if clear + plain.len() < padding + kind.header_len() {
            return Err(CryptoError::BadPadding { kind: kind.name(), padding, header: kind.header_len() });
        }
        let mut out = Vec::with_capacity(clear + plain.len() - padding);
        out.extend_from_slice(head);
        out.extend_from_slice(&plain[padding..]);
        Ok(out)
    }

    /// Encrypts `datagram[clear..]` behind padding taken from `pad_source`
    /// (its nibble byte rewritten), keeping `datagram[..clear]` in clear.
    fn seal(&self, datagram: &[u8], clear: usize, pad_source: &[u8; MAX_PADDING]) -> Vec<u8> {
        let (head, body) = datagram.split_at(clear);
        let padding = padding_for(body.len());
        let mut work = Vec::with_capacity(padding + body.len());
        work.extend_from_slice(&pad_source[..padding]);
        work[PAD_NIBBLE_INDEX] = (work[PAD_NIBBLE_INDEX] & 0xf0) | (padding as u8 & 0x0f);
        work.extend_from_slice(body);
        self.cbc_encrypt_in_place(&mut work);
        let mut out = Vec::with_capacity(clear + work.len());
        out.extend_from_slice(head);
        out.extend_from_slice(&work);
        out
    }

    /// CBC, all-zero IV; `buf` is a whole number of blocks.
    fn cbc_encrypt_in_place(&self, buf: &mut [u8]) {
        let mut chain = [0u8; BLOCK_LEN];
        for block in buf.chunks_exact_mut(BLOCK_LEN) {
            for (b, c) in block.iter_mut().zip(chain.iter()) {
                *b ^= c;
            }
            self.aes.encrypt_block(GenericArray::from_mut_slice(block));
            chain.copy_from_slice(block);
        }
    }

    /// CBC, all-zero IV; `buf` is a whole number of blocks.
    fn cbc_decrypt(&self, buf: &[u8]) -> Vec<u8> {
        let mut out = buf.to_vec();
        let mut chain = [0u8; BLOCK_LEN];
        for (block, cipher) in out.chunks_exact_mut(BLOCK_LEN).zip(buf.chunks_exact(BLOCK_LEN)) {
            self.aes.decrypt_block(GenericArray::from_mut_slice(block));
            for (b, c) in block.iter_mut().zip(chain.iter()) {
                *b ^= c;
            }
            chain.copy_from_slice(cipher);
        }
        out
    }
}

/// A fresh 16-byte transmit key for an RTKEY.
pub fn new_rotation_key(rng: &mut impl RngCore) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rng.fill_bytes(&mut key);
    key
}

/// The IE bytes of an RTKEY payload: the key raw in a CHALLENGE IE, as
/// `iax2_key_rotate` sends it.
pub fn rtkey_payload(key: &[u8; KEY_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + KEY_LEN);
    out.push(IE_CHALLENGE);
    out.push(KEY_LEN as u8);
    out.extend_from_slice(key);
    out
}

/// The new key in a received RTKEY payload (raw IE bytes): the first
/// CHALLENGE IE, which must be exactly 16 bytes. Works on the raw bytes
/// because a key is binary, not text.
pub fn rtkey_key(payload: &[u8]) -> Result<[u8; KEY_LEN], CryptoError> {
    let mut rest = payload;
    while let [id, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len).ok_or(CryptoError::NoRotationKey)?;
        if *id == IE_CHALLENGE {
            return value.try_into().map_err(|_| CryptoError::NoRotationKey);
        }
        rest = &tail[len..];
    }
    Err(CryptoError::NoRotationKey)
}

/// Both directions of an encrypted call, with chan_iax2's RTKEY rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallCrypto {
    /// Encrypts what we send.
    pub tx: IaxCipher,
    /// Decrypts what we receive.
    pub rx: IaxCipher,
}

impl CallCrypto {
    /// Both directions keyed from the call's challenge and secret.
    pub fn from_challenge(challenge: &str, secret: &str) -> CallCrypto {
        let c = IaxCipher::from_challenge(challenge, secret);
        CallCrypto { tx: c.clone(), rx: c }
    }

    /// Sends a rotation: `rtkey_datagram` is the encoded RTKEY full frame
    /// whose payload is [`rtkey_payload`]`(&new_key)`. It is encrypted with
    /// the current transmit key, which is then replaced by `new_key`. Keep
    /// the returned bytes for retransmissions: they must stay under the
    /// old key.
    pub fn send_rotation(&mut self, rtkey_datagram: &[u8], new_key: [u8; KEY_LEN], rng: &mut impl RngCore) -> Vec<u8> {
        let sealed = self.tx.encrypt_datagram(rtkey_datagram, rng);
        self.tx = IaxCipher::from_key(new_key);
        sealed
    }

    /// Applies a received (already decrypted) RTKEY's payload: the receive
    /// key becomes the key it carries. The transmit key is untouched.
    pub fn apply_rtkey(&mut self, payload: &[u8]) -> Result<(), CryptoError> {
        self.rx = IaxCipher::from_key(rtkey_key(payload)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iax2::frame::{self, Frame, FullFrame};
    use crate::iax2::subclass::{FrameType, IaxSubclass};
    use proptest::prelude::*;
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// An RNG replaying fixed bytes, to pin the padding in known answers.
    struct Replay(Vec<u8>, usize);

    impl RngCore for Replay {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                *d = self.0[self.1];
                self.1 += 1;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    fn kat_cipher() -> IaxCipher {
        IaxCipher::from_challenge("123456789", "secret")
    }

    #[test]
    fn key_is_md5_of_challenge_then_secret() {
        // `echo -n 123456789secret | md5sum` and Python hashlib agree.
        assert_eq!(kat_cipher().key().to_vec(), hex("7ccde16e862dfe7681297713e9e9cadb"));
        assert_eq!(kat_cipher(), IaxCipher::from_key(hex("7ccde16e862dfe7681297713e9e9cadb").try_into().unwrap()));
    }

    /// Mini frame, call 5, ts 0x1234, payload 00..09: 12 bytes to encrypt,
    /// 20 bytes of padding a0..b3 whose byte 15 becomes 0xa4. Ciphertext
    /// computed independently with Python `cryptography` (AES-128-CBC, zero
    /// IV) and `openssl enc -aes-128-cbc -nopad -iv 0...0`, which agree.
    #[test]
    fn known_answer_mini_frame() {
        let plain = hex("0005123400010203040506070809");
        let expected = hex("0005dd3802e84a33e19b3c9daf22bb464852127e4d580ee1ca056f84d34a59ea189d");
        let mut rng = Replay((0xa0..=0xb3).collect(), 0);
        let sealed = kat_cipher().encrypt_datagram(&plain, &mut rng);
        assert_eq!(rng.1, 20, "exactly the padding bytes are drawn");
        assert_eq!(sealed, expected);
        assert_eq!(kat_cipher().decrypt_datagram(&expected).unwrap(), plain);
    }

    /// Full frame 0x8001 -> 2, ts 3, IAX PING, no IEs: 8 bytes to encrypt,
    /// 24 bytes of padding c0..d7 whose byte 15 becomes 0xc8. Same two
    /// independent computations as above.
    #[test]
    fn known_answer_full_frame() {
        let plain = hex("800100020000000300000602");
        let expected = hex("80010002fffea78cde5f2b4d27188225a57d5cabc9bc639643c047efccd1d1c31102a398");
        let mut rng = Replay((0xc0..=0xd7).collect(), 0);
        assert_eq!(kat_cipher().encrypt_datagram(&plain, &mut rng), expected);
        assert_eq!(kat_cipher().decrypt_datagram(&expected).unwrap(), plain);
    }

    #[test]
    fn padding_is_16_to_31_and_aligns() {
        for n in 0..100 {
            let p = padding_for(n);
            assert!((16..=31).contains(&p));
            assert_eq!((n + p) % 16, 0);
        }
        assert_eq!(padding_for(0), 16);
        assert_eq!(padding_for(16), 16);
        assert_eq!(padding_for(17), 31);
    }

    fn full_datagram(rng: &mut ChaCha8Rng, payload_len: usize) -> Vec<u8> {
        let mut d = vec![
            0x80 | rng.gen_range(0..0x80u8),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            rng.gen(),
            2,
            4,
        ];
        d.extend((0..payload_len).map(|_| rng.gen::<u8>()));
        d
    }

    fn mini_datagram(rng: &mut ChaCha8Rng, payload_len: usize) -> Vec<u8> {
        let mut d = vec![rng.gen_range(0..0x80u8), rng.gen_range(1..=255u8), rng.gen(), rng.gen()];
        d.extend((0..payload_len).map(|_| rng.gen::<u8>()));
        d
    }

    #[test]
    fn round_trips_full_and_mini_frames_of_every_size() {
        let cipher = IaxCipher::from_challenge("987654321", "s3cr3t");
        let mut rng = ChaCha8Rng::seed_from_u64(0x1a_c2);
        for len in 0..=1500 {
            for (plain, clear) in
                [(full_datagram(&mut rng, len), FULL_CLEAR_LEN), (mini_datagram(&mut rng, len), MINI_CLEAR_LEN)]
            {
                let sealed = cipher.try_encrypt_datagram(&plain, &mut rng).unwrap();
                let n = plain.len() - clear;
                assert_eq!(sealed.len(), plain.len() + padding_for(n));
                assert_eq!((sealed.len() - clear) % 16, 0);
                assert_eq!(sealed[..clear], plain[..clear], "call numbers stay clear");
                assert_eq!(cipher.decrypt_datagram(&sealed).unwrap(), plain, "len {len}");
            }
        }
    }

    #[test]
    fn same_plaintext_encrypts_differently_each_time() {
        let cipher = kat_cipher();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let plain = hex("800100020000000300000602");
        let a = cipher.encrypt_datagram(&plain, &mut rng);
        let b = cipher.encrypt_datagram(&plain, &mut rng);
        assert_ne!(a, b);
        assert_eq!(cipher.decrypt_datagram(&a), cipher.decrypt_datagram(&b));
    }

    #[test]
    fn encoded_frames_survive_and_retransmit_bit_is_clear() {
        let cipher = kat_cipher();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let full = Frame::Full(FullFrame {
            src_call: 0x1234,
            dst_call: 0x0042,
            retransmitted: false,
            timestamp: 123_456,
            oseqno: 3,
            iseqno: 2,
            frame_type: FrameType::Iax,
            subclass: IaxSubclass::Ping.as_u32(),
            payload: vec![],
        });
        let mut sealed = cipher.encrypt_datagram(&full.to_bytes().unwrap(), &mut rng);
        // The R bit is in the clear dcall word: set it on the ciphertext.
        sealed[2] |= 0x80;
        match frame::decode(&cipher.decrypt_datagram(&sealed).unwrap()).unwrap() {
            Frame::Full(f) => {
                assert!(f.retransmitted);
                assert_eq!(f.timestamp, 123_456);
                assert_eq!(f.iax(), Some(IaxSubclass::Ping));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_chan_iax2_never_encrypts() {
        let cipher = kat_cipher();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let meta = hex("0000010100000001");
        assert_eq!(cipher.try_encrypt_datagram(&meta, &mut rng), Err(CryptoError::NotEncryptable));
        assert!(matches!(
            cipher.try_encrypt_datagram(&hex("80010002"), &mut rng),
            Err(CryptoError::ShortPlaintext { header: 12, .. })
        ));
        assert!(matches!(
            cipher.try_encrypt_datagram(&hex("0001"), &mut rng),
            Err(CryptoError::ShortPlaintext { header: 4, .. })
        ));
        // The infallible form never panics, even on nothing.
        for d in [vec![], vec![0x80], hex("0001")] {
            let sealed = cipher.encrypt_datagram(&d, &mut rng);
            assert!(cipher.decrypt_datagram(&sealed).is_err());
        }
    }

    #[test]
    fn rejects_truncated_and_misaligned_input() {
        let cipher = kat_cipher();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let plain = full_datagram(&mut rng, 40);
        let sealed = cipher.encrypt_datagram(&plain, &mut rng);
        for cut in 0..sealed.len() {
            match cipher.decrypt_datagram(&sealed[..cut]) {
                Err(_) => {}
                // No MAC and no length field: a cut on a block boundary
                // decrypts to a prefix, as it would in chan_iax2.
                Ok(p) => {
                    assert_eq!((cut - FULL_CLEAR_LEN) % 16, 0, "cut {cut}");
                    assert!(plain.starts_with(&p) && p.len() < plain.len());
                }
            }
        }
        assert!(matches!(
            cipher.decrypt_datagram(&sealed[..sealed.len() - 1]),
            Err(CryptoError::NotBlockAligned { .. })
        ));
        assert_eq!(cipher.decrypt_datagram(&[0, 0, 1, 2]), Err(CryptoError::NotEncryptable));
    }

    #[test]
    fn wrong_key_never_yields_the_plaintext() {
        let right = kat_cipher();
        let wrong = IaxCipher::from_challenge("123456789", "Secret");
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for len in [0, 1, 20, 160] {
            let plain = mini_datagram(&mut rng, len);
            let sealed = right.encrypt_datagram(&plain, &mut rng);
            assert_ne!(wrong.decrypt_datagram(&sealed).ok(), Some(plain));
        }
    }

    #[test]
    fn negotiation_mirrors_merge_encryption() {
        use method::*;
        let both = negotiate(ASTERISK_DEFAULT, ASTERISK_DEFAULT);
        assert_eq!(both, Negotiated { encrypt: true, rotate_keys: true });
        // An older Asterisk (AES128 only) never sees an RTKEY from us.
        let old = negotiate(ASTERISK_DEFAULT, AES128);
        assert_eq!(old, Negotiated { encrypt: true, rotate_keys: false });
        assert!(!negotiate(AES128, 0).encrypt);
        assert!(!negotiate(KEYROTATE, KEYROTATE).encrypt);
    }

    #[test]
    fn rtkey_payload_round_trip() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        let payload = rtkey_payload(&key);
        assert_eq!(payload[..2], [0x0f, 16]);
        assert_eq!(rtkey_key(&payload), Ok(key));
        // Another IE first, then the key.
        let mut with_other = vec![0x06, 3, b'b', b'o', b'b'];
        with_other.extend_from_slice(&payload);
        assert_eq!(rtkey_key(&with_other), Ok(key));
        assert_eq!(rtkey_key(&[]), Err(CryptoError::NoRotationKey));
        assert_eq!(rtkey_key(&[0x0f, 15]), Err(CryptoError::NoRotationKey));
        assert_eq!(rtkey_key(&payload[..10]), Err(CryptoError::NoRotationKey));
        let mut short = vec![0x0f, 4, 1, 2, 3, 4];
        short.extend_from_slice(&payload);
        assert_eq!(rtkey_key(&short), Err(CryptoError::NoRotationKey));
    }

    #[test]
    fn rotation_switches_sender_tx_and_receiver_rx_only() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut alice = CallCrypto::from_challenge("555", "pw");
        let mut bob = alice.clone();
        let new_key = new_rotation_key(&mut rng);
        let rtkey = FullFrame {
            src_call: 1,
            dst_call: 2,
            retransmitted: false,
            timestamp: 40,
            oseqno: 5,
            iseqno: 4,
            frame_type: FrameType::Iax,
            subclass: IaxSubclass::RtKey.as_u32(),
            payload: rtkey_payload(&new_key),
        };
        let sealed = alice.send_rotation(&Frame::Full(rtkey).to_bytes().unwrap(), new_key, &mut rng);
        // The RTKEY travels under the old key.
        let plain = bob.rx.decrypt_datagram(&sealed).unwrap();
        let Frame::Full(f) = frame::decode(&plain).unwrap() else { panic!() };
        assert_eq!(f.iax(), Some(IaxSubclass::RtKey));
        bob.apply_rtkey(&f.payload).unwrap();
        assert_eq!(bob.rx.key(), new_key);
        assert_eq!(alice.tx.key(), new_key);
        assert_eq!(alice.rx, bob.tx, "the other direction is untouched");
        let voice = mini_datagram(&mut rng, 160);
        let v = alice.tx.encrypt_datagram(&voice, &mut rng);
        assert_eq!(bob.rx.decrypt_datagram(&v).unwrap(), voice);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn decrypting_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let cipher = kat_cipher();
            if let Ok(plain) = cipher.decrypt_datagram(&data) {
                prop_assert!(plain.len() < data.len());
                let clear = if data[0] & 0x80 != 0 { 4 } else { 2 };
                prop_assert_eq!(&plain[..clear], &data[..clear]);
            }
        }

        #[test]
        fn decrypting_aligned_garbage_never_panics(
            first in any::<u16>(),
            full in any::<bool>(),
            blocks in 0usize..8,
            seed in any::<u64>(),
        ) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let clear = if full { 4 } else { 2 };
            let mut data = first.to_be_bytes().to_vec();
            data[0] = if full { data[0] | 0x80 } else { data[0] & 0x7f };
            data.extend((2..clear + blocks * 16).map(|_| rng.gen::<u8>()));
            if let Ok(plain) = kat_cipher().decrypt_datagram(&data) {
                let header = if full { 12 } else { 4 };
                prop_assert!(plain.len() >= header);
            }
        }

        #[test]
        fn round_trip_any_payload(payload in proptest::collection::vec(any::<u8>(), 0..300), seed in any::<u64>()) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let cipher = kat_cipher();
            let mut d = mini_datagram(&mut rng, 0);
            d.extend_from_slice(&payload);
            let sealed = cipher.encrypt_datagram(&d, &mut rng);
            prop_assert_eq!(cipher.decrypt_datagram(&sealed).unwrap(), d);
        }
    }
}
