//! One exchange bound to a pair of call numbers, and the reliable delivery of
//! its full frames (RFC 5456 section 7): OSeqno/ISeqno numbering, implicit and
//! explicit ACKs, VNAK, duplicate suppression and retransmission with backoff.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::crypto::{self, IaxCipher};
use super::frame::FullFrame;
use super::ie::Ie;
use super::subclass::{FrameType, IaxSubclass};
use super::Transmit;

/// First retransmission after this long; each later one waits twice as long.
const FIRST_RETRY: Duration = Duration::from_millis(1000);
/// Retransmissions before the exchange is declared dead (Asterisk's MAX_RETRY).
const MAX_RETRIES: u8 = 4;

/// Frames that are not numbered: they neither consume an OSeqno nor advance the
/// peer's ISeqno (RFC 5456 section 7).
pub fn is_unsequenced(frame: &FullFrame) -> bool {
    matches!(
        frame.iax(),
        Some(IaxSubclass::Ack | IaxSubclass::Inval | IaxSubclass::Vnak | IaxSubclass::TxCnt | IaxSubclass::TxAcc)
    )
}

/// What [`Dialog::receive`] made of an inbound full frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The next frame in sequence: process it.
    InOrder,
    /// An ACK/VNAK-class frame: its acknowledgement was applied, nothing else to do.
    Unsequenced,
    /// Already seen (our ACK was lost): it was acknowledged again, do not process.
    Duplicate,
    /// A gap before it: a VNAK went out asking for the missing frames.
    OutOfOrder,
}

fn seal(key: Option<&IaxCipher>, pad: &mut ChaCha8Rng, datagram: Vec<u8>) -> Vec<u8> {
    match key {
        Some(key) => key.encrypt_datagram(&datagram, pad),
        None => datagram,
    }
}

/// The outstanding frames of a dialog could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaveUp;

struct Outstanding {
    frame: FullFrame,
    /// The transmit key when the frame was first sent: a retransmission
    /// after a key rotation must still be readable under the old key.
    key: Option<IaxCipher>,
    next_retry: Instant,
    interval: Duration,
    retries: u8,
}

/// How far past the last stamp a clock stamp that would not advance is moved (chan_iax2's 3 ms).
const STAMP_STEP: u32 = 3;

pub struct Dialog {
    pub local_call: u16,
    /// The peer's call number; 0 until its first frame tells us.
    pub remote_call: u16,
    pub remote_addr: SocketAddr,
    created: Instant,
    oseqno: u8,
    iseqno: u8,
    last_timestamp: u32,
    /// Timestamp of the last in-order frame received, for a deferred ACK.
    last_received: Option<u32>,
    outstanding: VecDeque<Outstanding>,
    /// Encrypts what this dialog sends (an encrypted call, once keyed).
    tx_key: Option<IaxCipher>,
    /// Padding bytes for encryption, seeded from the endpoint's RNG. Boxed
    /// with the ciphers' key schedules: inline they made a dialog 2 KB, and
    /// the media path, which needs neither on a clear call, paid cache
    /// misses for them on every frame.
    pad: Box<ChaCha8Rng>,
    /// Decrypts what arrives on this dialog.
    pub rx_cipher: Option<IaxCipher>,
    /// Set once the exchange has ended; the dialog lingers to re-ACK
    /// retransmissions and is removed after this instant.
    linger_until: Option<Instant>,
}

impl Dialog {
    pub fn new(local_call: u16, remote_call: u16, remote_addr: SocketAddr, now: Instant) -> Self {
        Dialog {
            local_call,
            remote_call,
            remote_addr,
            created: now,
            oseqno: 0,
            iseqno: 0,
            last_timestamp: 0,
            last_received: None,
            outstanding: VecDeque::new(),
            linger_until: None,
            tx_key: None,
            pad: Box::new(ChaCha8Rng::seed_from_u64(0)),
            rx_cipher: None,
        }
    }

    /// Encrypts everything sent from now on (retransmissions included) with
    /// `cipher`; padding comes from an RNG seeded by the endpoint's.
    pub fn encrypt_with(&mut self, cipher: IaxCipher, pad_seed: u64) {
        self.tx_key = Some(cipher);
        *self.pad = ChaCha8Rng::seed_from_u64(pad_seed);
    }

    pub fn is_encrypting(&self) -> bool {
        self.tx_key.is_some()
    }

    /// Rotates the transmit key as chan_iax2's `iax2_key_rotate` does: an
    /// RTKEY carrying `new_key` goes out under the current key (and is
    /// retransmitted under it), and everything sent after it uses `new_key`.
    pub fn rotate_tx_key(&mut self, now: Instant, new_key: [u8; crypto::KEY_LEN], out: &mut VecDeque<Transmit>) {
        if self.tx_key.is_none() {
            return;
        }
        let payload = crypto::rtkey_payload(&new_key);
        self.send_full(now, FrameType::Iax, IaxSubclass::RtKey.as_u32(), payload, None, out);
        self.tx_key = Some(IaxCipher::from_key(new_key));
    }

    /// Encrypts a datagram built outside the dialog (a mini frame) if the dialog encrypts.
    pub fn seal(&mut self, datagram: Vec<u8>) -> Vec<u8> {
        seal(self.tx_key.as_ref(), &mut self.pad, datagram)
    }

    /// Milliseconds since the dialog began, on the clock its timestamps use.
    pub fn elapsed_ms(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.created).as_millis().min(u32::MAX as u128) as u32
    }

    /// Milliseconds since the dialog began, and always later than the last
    /// stamp sent: like chan_iax2's `calc_timestamp`, a stamp that would
    /// repeat or go back is moved 3 ms past the last one, so no two full
    /// frames of a dialog share a timestamp and the first is never 0.
    fn timestamp(&mut self, now: Instant) -> u32 {
        let ms = self.elapsed_ms(now);
        self.last_timestamp =
            if ms <= self.last_timestamp { self.last_timestamp.saturating_add(STAMP_STEP) } else { ms };
        self.last_timestamp
    }

    /// Sends a numbered IAX control frame that is retransmitted until acknowledged.
    pub fn send(&mut self, now: Instant, subclass: IaxSubclass, ies: &[Ie], out: &mut VecDeque<Transmit>) {
        let ts = self.timestamp(now);
        let frame = FullFrame::new_iax(self.local_call, self.remote_call, ts, self.oseqno, self.iseqno, subclass, ies);
        self.send_frame(now, frame, out);
    }

    /// Sends any numbered full frame (control, voice, DTMF...) reliably. Voice
    /// passes its media timestamp; everything else uses the dialog's clock.
    pub fn send_full(
        &mut self,
        now: Instant,
        frame_type: FrameType,
        subclass: u32,
        payload: Vec<u8>,
        timestamp: Option<u32>,
        out: &mut VecDeque<Transmit>,
    ) {
        let timestamp = match timestamp {
            Some(ts) => {
                self.last_timestamp = self.last_timestamp.max(ts);
                ts
            }
            None => self.timestamp(now),
        };
        let frame = FullFrame {
            src_call: self.local_call,
            dst_call: self.remote_call,
            retransmitted: false,
            timestamp,
            oseqno: self.oseqno,
            iseqno: self.iseqno,
            frame_type,
            subclass,
            payload,
        };
        self.send_frame(now, frame, out);
    }

    fn send_frame(&mut self, now: Instant, frame: FullFrame, out: &mut VecDeque<Transmit>) {
        self.oseqno = self.oseqno.wrapping_add(1);
        emit(&frame, self.remote_addr, self.tx_key.as_ref(), &mut self.pad, out);
        self.outstanding.push_back(Outstanding {
            frame,
            key: self.tx_key.clone(),
            next_retry: now + FIRST_RETRY,
            interval: FIRST_RETRY,
            retries: 0,
        });
    }

    /// Acknowledges `frame` explicitly (ACK echoes the acknowledged frame's timestamp).
    pub fn ack(&mut self, frame: &FullFrame, out: &mut VecDeque<Transmit>) {
        self.unsequenced(IaxSubclass::Ack, frame.timestamp, out);
    }

    /// Acknowledges the last in-order frame received, when the answer to it is deferred.
    pub fn ack_latest(&mut self, now: Instant, out: &mut VecDeque<Transmit>) {
        let ts = match self.last_received {
            Some(ts) => ts,
            None => self.timestamp(now),
        };
        self.unsequenced(IaxSubclass::Ack, ts, out);
    }

    fn unsequenced(&mut self, subclass: IaxSubclass, timestamp: u32, out: &mut VecDeque<Transmit>) {
        let frame =
            FullFrame::new_iax(self.local_call, self.remote_call, timestamp, self.oseqno, self.iseqno, subclass, &[]);
        emit(&frame, self.remote_addr, self.tx_key.as_ref(), &mut self.pad, out);
    }

    /// Applies sequencing to an inbound full frame addressed to this dialog.
    pub fn receive(&mut self, now: Instant, frame: &FullFrame, out: &mut VecDeque<Transmit>) -> Receipt {
        if self.remote_call == 0 && frame.src_call != 0 {
            self.remote_call = frame.src_call;
        }
        self.acknowledged_through(frame.iseqno);
        if is_unsequenced(frame) {
            if frame.iax() == Some(IaxSubclass::Vnak) {
                self.retransmit_all(now, out);
            }
            return Receipt::Unsequenced;
        }
        if frame.oseqno == self.iseqno {
            self.iseqno = self.iseqno.wrapping_add(1);
            self.last_received = Some(frame.timestamp);
            return Receipt::InOrder;
        }
        if self.iseqno.wrapping_sub(frame.oseqno) <= 128 {
            self.ack(frame, out);
            Receipt::Duplicate
        } else {
            let ts = self.timestamp(now);
            self.unsequenced(IaxSubclass::Vnak, ts, out);
            Receipt::OutOfOrder
        }
    }

    /// Drops outstanding frames the peer has received: all whose OSeqno is
    /// before the peer's ISeqno.
    fn acknowledged_through(&mut self, iseqno: u8) {
        self.outstanding.retain(|o| {
            let behind = iseqno.wrapping_sub(o.frame.oseqno);
            !(1..=128).contains(&behind)
        });
    }

    fn retransmit_all(&mut self, now: Instant, out: &mut VecDeque<Transmit>) {
        for o in &mut self.outstanding {
            o.frame.retransmitted = true;
            o.frame.iseqno = self.iseqno;
            emit(&o.frame, self.remote_addr, o.key.as_ref(), &mut self.pad, out);
            o.next_retry = now + o.interval;
        }
    }

    /// Retransmits what is due; `Err(GaveUp)` once a frame ran out of retries.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Transmit>) -> Result<(), GaveUp> {
        let iseqno = self.iseqno;
        for o in &mut self.outstanding {
            if o.next_retry > now {
                continue;
            }
            if o.retries >= MAX_RETRIES {
                return Err(GaveUp);
            }
            o.retries += 1;
            o.interval *= 2;
            o.next_retry = now + o.interval;
            o.frame.retransmitted = true;
            o.frame.iseqno = iseqno;
            emit(&o.frame, self.remote_addr, o.key.as_ref(), &mut self.pad, out);
        }
        Ok(())
    }

    /// Forgets unacknowledged frames and restarts numbering; used when a
    /// request is resent with a call token, which the peer sees as a new dialog.
    pub fn restart(&mut self) {
        self.outstanding.clear();
        self.oseqno = 0;
        self.iseqno = 0;
    }

    /// Gives up on the exchange: nothing more is (re)sent, the peer is not told.
    /// For a peer that never answered, so retransmissions would only haunt it later.
    pub fn abandon(&mut self, now: Instant) {
        self.outstanding.clear();
        self.finish(now, Duration::ZERO);
    }

    /// Ends the exchange: the dialog stays only to re-ACK retransmissions and
    /// finish delivering what is outstanding.
    pub fn finish(&mut self, now: Instant, linger: Duration) {
        self.linger_until.get_or_insert(now + linger);
    }

    pub fn is_finished(&self) -> bool {
        self.linger_until.is_some()
    }

    /// Whether the dialog can be removed.
    pub fn is_done(&self, now: Instant) -> bool {
        matches!(self.linger_until, Some(t) if now >= t && self.outstanding.is_empty())
    }

    pub fn deadline(&self) -> Option<Instant> {
        let retry = self.outstanding.iter().map(|o| o.next_retry).min();
        let linger = self.linger_until.filter(|_| self.outstanding.is_empty());
        match (retry, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn emit(
    frame: &FullFrame,
    destination: SocketAddr,
    key: Option<&IaxCipher>,
    pad: &mut ChaCha8Rng,
    out: &mut VecDeque<Transmit>,
) {
    let mut payload = Vec::with_capacity(12 + frame.payload.len());
    match frame.encode(&mut payload) {
        Ok(()) => out.push_back(Transmit { destination, payload: seal(key, pad, payload) }),
        // Only frames we build reach here; failing to encode one is a bug, not input.
        Err(e) => tracing::error!("cannot encode {:?}: {e}", frame.iax()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iax2::frame::{decode, Frame};

    fn frames(out: &mut VecDeque<Transmit>) -> Vec<FullFrame> {
        out.drain(..)
            .map(|t| match decode(&t.payload) {
                Ok(Frame::Full(f)) => f,
                other => panic!("not a full frame: {other:?}"),
            })
            .collect()
    }

    fn peer_frame(oseqno: u8, iseqno: u8, sub: IaxSubclass) -> FullFrame {
        FullFrame::new_iax(200, 100, 5, oseqno, iseqno, sub, &[])
    }

    fn dialog(now: Instant) -> Dialog {
        Dialog::new(100, 200, "192.0.2.9:4569".parse().unwrap(), now)
    }

    #[test]
    fn timestamps_never_repeat_and_never_start_at_zero() {
        let start = Instant::now();
        let mut d = dialog(start);
        let mut out = VecDeque::new();
        for ms in [0, 0, 1, 2, 40, 40] {
            d.send(start + Duration::from_millis(ms), IaxSubclass::LagRq, &[], &mut out);
        }
        let stamps: Vec<u32> = frames(&mut out).iter().map(|f| f.timestamp).collect();
        // chan_iax2's calc_timestamp: 3 ms past the last when the clock would not advance.
        assert_eq!(stamps, vec![3, 6, 9, 12, 40, 43]);
    }

    #[test]
    fn a_frame_sent_before_a_key_rotation_is_retransmitted_under_the_old_key() {
        let start = Instant::now();
        let mut d = dialog(start);
        let old = IaxCipher::from_challenge("1234", "secret");
        d.encrypt_with(old.clone(), 7);
        let mut out = VecDeque::new();
        d.send(start, IaxSubclass::Ping, &[], &mut out);
        d.rotate_tx_key(start, [9; crypto::KEY_LEN], &mut out);
        let new = IaxCipher::from_key([9; crypto::KEY_LEN]);
        let sent: Vec<_> = out.drain(..).collect();
        let rtkey = old.decrypt_datagram(&sent[1].payload).expect("the RTKEY goes under the old key");
        let Ok(Frame::Full(rtkey)) = decode(&rtkey) else { panic!("RTKEY") };
        assert_eq!(rtkey.iax(), Some(IaxSubclass::RtKey));
        assert_eq!(crypto::rtkey_key(&rtkey.payload).unwrap(), [9; crypto::KEY_LEN]);
        d.send(start, IaxSubclass::Pong, &[], &mut out);
        assert!(new.decrypt_datagram(&out.pop_front().unwrap().payload).is_ok(), "what follows uses the new key");
        // No ACK came: the PING and the RTKEY go again, still under the old key.
        d.handle_timeout(start + Duration::from_secs(3), &mut out).unwrap();
        let again: Vec<_> = out.drain(..).collect();
        assert!(again.len() >= 2);
        for t in &again[..2] {
            let plain = old.decrypt_datagram(&t.payload).expect("old key");
            assert!(matches!(decode(&plain), Ok(Frame::Full(_))));
        }
    }

    #[test]
    fn numbers_frames_and_acknowledges_implicitly_by_iseqno() {
        let now = Instant::now();
        let mut d = dialog(now);
        let mut out = VecDeque::new();
        d.send(now, IaxSubclass::RegReq, &[], &mut out);
        d.send(now, IaxSubclass::Ping, &[], &mut out);
        let sent = frames(&mut out);
        assert_eq!((sent[0].oseqno, sent[1].oseqno), (0, 1));
        assert_eq!(d.receive(now, &peer_frame(0, 1, IaxSubclass::RegAuth), &mut out), Receipt::InOrder);
        // Frame 0 is acknowledged; frame 1 is still retransmitted.
        d.handle_timeout(now + FIRST_RETRY, &mut out).unwrap();
        let again = frames(&mut out);
        assert_eq!(again.len(), 1);
        assert!(again[0].retransmitted);
        assert_eq!((again[0].oseqno, again[0].iseqno), (1, 1));
    }

    #[test]
    fn duplicates_are_acked_again_and_not_processed() {
        let now = Instant::now();
        let mut d = dialog(now);
        let mut out = VecDeque::new();
        assert_eq!(d.receive(now, &peer_frame(0, 0, IaxSubclass::RegReq), &mut out), Receipt::InOrder);
        assert_eq!(d.receive(now, &peer_frame(0, 0, IaxSubclass::RegReq), &mut out), Receipt::Duplicate);
        let acks = frames(&mut out);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].iax(), Some(IaxSubclass::Ack));
        assert_eq!(acks[0].timestamp, 5, "an ACK echoes the acknowledged frame's timestamp");
        assert_eq!(acks[0].iseqno, 1);
    }

    #[test]
    fn a_gap_draws_a_vnak_and_a_vnak_draws_retransmissions() {
        let now = Instant::now();
        let mut d = dialog(now);
        let mut out = VecDeque::new();
        assert_eq!(d.receive(now, &peer_frame(3, 0, IaxSubclass::Ping), &mut out), Receipt::OutOfOrder);
        assert_eq!(frames(&mut out)[0].iax(), Some(IaxSubclass::Vnak));

        d.send(now, IaxSubclass::Ping, &[], &mut out);
        d.send(now, IaxSubclass::Ping, &[], &mut out);
        out.clear();
        assert_eq!(d.receive(now, &peer_frame(0, 0, IaxSubclass::Vnak), &mut out), Receipt::Unsequenced);
        let resent = frames(&mut out);
        assert_eq!(resent.iter().map(|f| f.oseqno).collect::<Vec<_>>(), vec![0, 1]);
        assert!(resent.iter().all(|f| f.retransmitted));
    }

    #[test]
    fn retransmits_with_doubling_intervals_then_gives_up() {
        let start = Instant::now();
        let mut d = dialog(start);
        let mut out = VecDeque::new();
        d.send(start, IaxSubclass::Poke, &[], &mut out);
        out.clear();
        let mut at = start;
        let mut gaps = vec![];
        let mut last = start;
        loop {
            let Some(next) = d.deadline() else { panic!("no deadline") };
            at = at.max(next);
            match d.handle_timeout(at, &mut out) {
                Ok(()) => {
                    gaps.push((at - last).as_millis());
                    last = at;
                }
                Err(GaveUp) => break,
            }
        }
        assert_eq!(gaps, vec![1000, 2000, 4000, 8000]);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let now = Instant::now();
        let mut d = dialog(now);
        let mut out = VecDeque::new();
        for i in 0..=300u32 {
            let f = peer_frame(i as u8, 0, IaxSubclass::Ping);
            assert_eq!(d.receive(now, &f, &mut out), Receipt::InOrder, "frame {i}");
        }
    }
}
