//! RFC 4733 telephone-event payloads: DTMF sent as named events rather than
//! as tones in the audio, so digits survive compressing codecs and loss.

use super::packet::RtpError;

/// A telephone-event payload (RFC 4733 section 2.3). One event is sent as a
/// run of packets sharing the RTP timestamp of its start, with `duration`
/// growing, and the last one (`end`) usually repeated three times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TelephoneEvent {
    /// Event code: 0-9, 10 '*', 11 '#', 12-15 'A'-'D' for DTMF.
    pub event: u8,
    /// The E bit: the event has ended and `duration` is final.
    pub end: bool,
    /// Power level in -dBm0, six bits (0..=63); larger is quieter.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units of the stream's clock.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Bytes of one event on the wire.
    pub const LEN: usize = 4;

    /// Reads the first event of a payload. Trailing bytes are ignored: RFC
    /// 4733 lets other data follow (and RFC 2198 redundancy wraps events),
    /// and the first event is what a DTMF receiver acts on.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, RtpError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3f,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(RtpError::EventTooShort { len: payload.len() }),
        }
    }

    /// Appends the 4-byte payload; the reserved bit is sent as zero as RFC 4733 asks.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.event);
        out.push((u8::from(self.end) << 7) | (self.volume & 0x3f));
        out.extend_from_slice(&self.duration.to_be_bytes());
    }

    /// The DTMF digit this event stands for, if it is one.
    pub fn digit(&self) -> Option<char> {
        event_char(self.event)
    }
}

/// The DTMF character of an RFC 4733 event code (table 3): 0-9, `*`, `#`,
/// A-D; other codes (flash, fax tones, ...) are not digits.
pub fn event_char(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The event code for a DTMF character (inverse of [`event_char`]), accepting
/// lower-case a-d as dial strings often carry them.
pub fn char_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_sipp_digit_1_end_packet() {
        // Last packet of sipp__dtmf_2833_1.pcap: event 1, E set, volume 10, duration 2240.
        let e = TelephoneEvent::parse(&[0x01, 0x8a, 0x08, 0xc0]).expect("parses");
        assert_eq!(e, TelephoneEvent { event: 1, end: true, volume: 10, duration: 2240 });
        assert_eq!(e.digit(), Some('1'));
    }

    #[test]
    fn round_trips_and_ignores_the_reserved_bit() {
        let e = TelephoneEvent { event: 11, end: false, volume: 63, duration: 65535 };
        let mut out = Vec::new();
        e.write(&mut out);
        assert_eq!(out, [11, 0x3f, 0xff, 0xff]);
        assert_eq!(TelephoneEvent::parse(&out), Ok(e));
        assert_eq!(TelephoneEvent::parse(&[11, 0x7f, 0xff, 0xff]), Ok(e));
    }

    #[test]
    fn rejects_short_payloads() {
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(RtpError::EventTooShort { len: 3 }));
        assert_eq!(TelephoneEvent::parse(&[]), Err(RtpError::EventTooShort { len: 0 }));
    }

    #[test]
    fn maps_every_dtmf_code_both_ways() {
        let digits = "0123456789*#ABCD";
        for (code, c) in digits.chars().enumerate() {
            assert_eq!(event_char(code as u8), Some(c));
            assert_eq!(char_event(c), Some(code as u8));
        }
        assert_eq!(char_event('d'), Some(15));
        assert_eq!(event_char(16), None); // flash
        assert_eq!(char_event('E'), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let _ = TelephoneEvent::parse(&bytes);
        }
    }
}
