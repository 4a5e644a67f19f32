//! Audio for calls: G.711 (ITU-T) μ-law and A-law, generated sources (tone,
//! music, numbered test pattern) and the receive-side statistics that the
//! scenario reports and load runs are built on.

use std::f64::consts::TAU;

use crate::dialplan::App;

/// Samples per second of narrowband telephony.
pub const SAMPLE_RATE: u32 = 8000;
/// One 20 ms frame of G.711: 160 samples, one byte each.
pub const FRAME_SAMPLES: usize = 160;
pub const FRAME_MS: u32 = 20;

/// Encodes one 16-bit linear sample as G.711 μ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let exponent = (7 - (s as u32 >> 7).leading_zeros().saturating_sub(24)).min(7) as i32;
    let exponent = if s >= 0x100 { exponent } else { 0 };
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Decodes one G.711 μ-law byte.
pub fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let sign = b & 0x80;
    let exponent = (b >> 4) & 0x07;
    let mantissa = b & 0x0f;
    let magnitude = (((i32::from(mantissa) << 3) + 0x84) << exponent) - 0x84;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// Encodes one 16-bit linear sample as G.711 A-law.
pub fn alaw_encode(sample: i16) -> u8 {
    let (sign, magnitude) = if sample >= 0 { (0x80u8, i32::from(sample)) } else { (0, -i32::from(sample) - 1) };
    let magnitude = magnitude.min(0x7fff) >> 3; // 13-bit magnitude
    let byte = if magnitude < 32 {
        (magnitude >> 1) as u8
    } else {
        let exponent = (31 - (magnitude as u32).leading_zeros()) as i32 - 4; // 1..=7
        let mantissa = (magnitude >> exponent) & 0x0f;
        ((exponent << 4) | mantissa) as u8
    };
    (sign | byte) ^ 0x55
}

/// Decodes one G.711 A-law byte.
pub fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    let magnitude = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// A G.711 payload codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum G711 {
    Ulaw,
    Alaw,
}

impl G711 {
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            G711::Ulaw => ulaw_encode(sample),
            G711::Alaw => alaw_encode(sample),
        }
    }
    /// The byte for digital silence.
    pub fn silence(self) -> u8 {
        self.encode(0)
    }
}

/// A sine tone, continuous across frames.
#[derive(Clone, Debug)]
pub struct Tone {
    pub freq_hz: f64,
    pub amplitude: f64,
    sample: u64,
}

impl Tone {
    pub fn new(freq_hz: f64) -> Self {
        Tone { freq_hz, amplitude: 8000.0, sample: 0 }
    }

    pub fn next_frame(&mut self, codec: G711, out: &mut Vec<u8>) {
        for _ in 0..FRAME_SAMPLES {
            let t = self.sample as f64 / f64::from(SAMPLE_RATE);
            out.push(codec.encode((self.amplitude * (TAU * self.freq_hz * t).sin()) as i16));
            self.sample += 1;
        }
    }
}

/// "Music": a repeating eight-note scale, so a listener hears something
/// recognisable and a test can tell it from a plain tone.
#[derive(Clone, Debug, Default)]
pub struct Music {
    frame: u64,
    tone: Option<Tone>,
}

impl Music {
    const NOTES_HZ: [f64; 8] = [261.63, 293.66, 329.63, 349.23, 392.0, 440.0, 493.88, 523.25];
    /// Frames per note: 400 ms.
    const NOTE_FRAMES: u64 = 20;

    pub fn next_frame(&mut self, codec: G711, out: &mut Vec<u8>) {
        if self.frame.is_multiple_of(Self::NOTE_FRAMES) {
            let note = (self.frame / Self::NOTE_FRAMES) as usize % Self::NOTES_HZ.len();
            self.tone = Some(Tone::new(Self::NOTES_HZ[note]));
        }
        self.frame += 1;
        if let Some(tone) = &mut self.tone {
            tone.next_frame(codec, out);
        }
    }
}

/// Marks a test-pattern frame.
const PATTERN_MAGIC: [u8; 2] = *b"SW";
pub const PATTERN_HEADER: usize = 8;

/// A numbered test pattern: each frame carries a tag identifying the call and
/// a sequence number, so a receiver (or the far end's echo) can count lost,
/// duplicated and reordered frames exactly. The rest is codec silence.
pub fn pattern_frame(tag: u16, seq: u32, codec: G711, out: &mut Vec<u8>) {
    out.extend_from_slice(&PATTERN_MAGIC);
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.resize(out.len() + FRAME_SAMPLES - PATTERN_HEADER, codec.silence());
}

/// The (tag, sequence number) of a test-pattern frame.
pub fn parse_pattern(payload: &[u8]) -> Option<(u16, u32)> {
    if payload.len() < PATTERN_HEADER || payload[..2] != PATTERN_MAGIC {
        return None;
    }
    let tag = u16::from_be_bytes([payload[2], payload[3]]);
    let seq = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    Some((tag, seq))
}

/// What produces our side's audio.
pub enum Source {
    /// Nothing of our own: echo sends back what arrives, a bridge forwards the other leg.
    None,
    Tone(Tone),
    Music(Music),
    Pattern {
        tag: u16,
        seq: u32,
    },
}

impl Source {
    pub fn for_app(app: &App, tag: u16) -> Source {
        match app {
            App::Tone { freq_hz } => Source::Tone(Tone::new(*freq_hz)),
            App::Music => Source::Music(Music::default()),
            App::Pattern => Source::Pattern { tag, seq: 0 },
            App::Echo | App::Silence | App::Dial { .. } | App::Hangup { .. } => Source::None,
        }
    }

    /// The next 20 ms frame, or `None` when this source generates nothing.
    pub fn next_frame(&mut self, codec: G711) -> Option<Vec<u8>> {
        if let Source::None = self {
            return None;
        }
        let mut out = Vec::with_capacity(FRAME_SAMPLES);
        self.next_frame_into(codec, &mut out).then_some(out)
    }

    /// [`Source::next_frame`] appended to `out` (a buffer reused from frame
    /// to frame): `false` when this source generates nothing.
    pub fn next_frame_into(&mut self, codec: G711, out: &mut Vec<u8>) -> bool {
        match self {
            Source::None => return false,
            Source::Tone(t) => t.next_frame(codec, out),
            Source::Music(m) => m.next_frame(codec, out),
            Source::Pattern { tag, seq } => {
                pattern_frame(*tag, *seq, codec, out);
                *seq += 1;
            }
        }
        true
    }
}

/// Receive-side media statistics of one call (one direction).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Test-pattern frames never seen (gaps in the sequence).
    pub lost: u64,
    /// Test-pattern frames that arrived after a later one.
    pub reordered: u64,
    pub duplicated: u64,
    /// Frames the jitter buffer discarded as too late to play.
    pub late: u64,
    /// Frames the jitter buffer made up for missing ones.
    pub concealed: u64,
    /// Interarrival jitter, RFC 3550 style, in microseconds.
    pub jitter_us: u64,
    next_seq: Option<u32>,
    /// Highest sequence seen: lost frames are counted against it and
    /// taken back when they turn up late.
    last_transit_us: Option<i64>,
}

impl MediaStats {
    /// Accounts one received frame: `media_ts_ms` is its media timestamp,
    /// `arrival_us` when it arrived (same clock for every frame of the call).
    pub fn received(&mut self, payload: &[u8], media_ts_ms: u32, arrival_us: i64) {
        self.frames_received += 1;
        self.bytes_received += payload.len() as u64;
        let transit = arrival_us - i64::from(media_ts_ms) * 1000;
        if let Some(last) = self.last_transit_us {
            // J += (|D| - J) / 16
            let d = (transit - last).unsigned_abs();
            let j = self.jitter_us as i64 + (d as i64 - self.jitter_us as i64) / 16;
            self.jitter_us = j.max(0) as u64;
        }
        self.last_transit_us = Some(transit);
        if let Some((_, seq)) = parse_pattern(payload) {
            match self.next_seq {
                None => self.next_seq = Some(seq.wrapping_add(1)),
                Some(next) if seq == next => self.next_seq = Some(next.wrapping_add(1)),
                Some(next) if seq > next => {
                    self.lost += u64::from(seq - next);
                    self.next_seq = Some(seq.wrapping_add(1));
                }
                Some(_) => {
                    // Behind: either a reordered frame that we had counted lost,
                    // or a duplicate. Without a bitmap we cannot tell which for
                    // certain; frames behind by one are most often duplicates.
                    if self.lost > 0 {
                        self.lost -= 1;
                        self.reordered += 1;
                    } else {
                        self.duplicated += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_g711_reference_points() {
        // Reference values from the G.711 tables: 0 -> 0xFF, full scale -> 0x80/0x00.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_encode(32767), 0x80);
        assert_eq!(ulaw_encode(-32768), 0x00);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
    }

    #[test]
    fn alaw_matches_g711_reference_points() {
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_encode(32767), 0xaa);
        assert_eq!(alaw_decode(0xaa), 32256);
    }

    #[test]
    fn g711_round_trips_every_code() {
        for byte in 0..=255u8 {
            assert_eq!(ulaw_encode(ulaw_decode(byte)), byte | if byte == 0x7f { 0x80 } else { 0 }, "ulaw {byte:#x}");
            assert_eq!(alaw_encode(alaw_decode(byte)), byte, "alaw {byte:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_small_relative_to_the_signal() {
        for s in (-32000i32..32000).step_by(97) {
            let s = s as i16;
            for (codec, decode) in [(G711::Ulaw, ulaw_decode as fn(u8) -> i16), (G711::Alaw, alaw_decode)] {
                let err = (i32::from(decode(codec.encode(s))) - i32::from(s)).abs();
                assert!(err <= (i32::from(s).abs() / 16).max(16), "{codec:?} {s}: error {err}");
            }
        }
    }

    #[test]
    fn pattern_frames_count_loss_reordering_and_duplicates() {
        let mut stats = MediaStats::default();
        let frame = |seq| {
            let mut v = vec![];
            pattern_frame(7, seq, G711::Ulaw, &mut v);
            v
        };
        assert_eq!(frame(0).len(), FRAME_SAMPLES);
        for (i, seq) in [0u32, 1, 2, 4, 5, 3, 5, 8].into_iter().enumerate() {
            stats.received(&frame(seq), seq * 20, i as i64 * 20_000);
        }
        assert_eq!((stats.lost, stats.reordered, stats.duplicated), (2, 1, 1));
        assert_eq!(stats.frames_received, 8);
    }

    #[test]
    fn tone_has_the_requested_frequency() {
        let mut tone = Tone::new(1000.0);
        let mut out = vec![];
        for _ in 0..5 {
            tone.next_frame(G711::Ulaw, &mut out);
        }
        let samples: Vec<i16> = out.iter().map(|b| ulaw_decode(*b)).collect();
        let crossings = samples.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        // 1 kHz over 100 ms: 100 periods, two zero crossings each.
        assert!((195..=205).contains(&crossings), "{crossings}");
    }
}
