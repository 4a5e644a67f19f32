//! Frame types and subclass numbers of IAX2 full frames (RFC 5456 section 8,
//! IANA registries of RFC 5457), with the additions Asterisk puts on the wire.
//!
//! Only the numbering lives here; how a subclass is packed into the one-byte
//! header field (the C bit) is [`super::frame`]'s business.

use std::fmt;

/// Generates a field-less enum over `u32` wire values with `from_u32`,
/// `as_u32`, `name` and `Display`, so the three tables cannot drift apart.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name { $( $(#[$vmeta])* $variant = $value, )+ }

        impl $name {
            /// Every variant, in wire-value order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The variant with wire value `value`, if there is one.
            pub fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The wire value.
            pub fn as_u32(self) -> u32 {
                self as u32
            }

            /// The upper-case name used in logs and traces.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// The frame type octet of a full frame (RFC 5456 section 8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FrameType {
    /// DTMF digit end (Asterisk's `AST_FRAME_DTMF_END`); subclass is the ASCII digit.
    Dtmf = 1,
    Voice = 2,
    Video = 3,
    Control = 4,
    Null = 5,
    Iax = 6,
    Text = 7,
    Image = 8,
    Html = 9,
    Cng = 10,
    Modem = 11,
    /// DTMF digit begin (Asterisk's `AST_FRAME_DTMF_BEGIN`).
    DtmfBegin = 12,
}

impl FrameType {
    /// Every frame type, in wire-value order.
    pub const ALL: &'static [FrameType] = &[
        FrameType::Dtmf,
        FrameType::Voice,
        FrameType::Video,
        FrameType::Control,
        FrameType::Null,
        FrameType::Iax,
        FrameType::Text,
        FrameType::Image,
        FrameType::Html,
        FrameType::Cng,
        FrameType::Modem,
        FrameType::DtmfBegin,
    ];

    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => FrameType::Dtmf,
            2 => FrameType::Voice,
            3 => FrameType::Video,
            4 => FrameType::Control,
            5 => FrameType::Null,
            6 => FrameType::Iax,
            7 => FrameType::Text,
            8 => FrameType::Image,
            9 => FrameType::Html,
            10 => FrameType::Cng,
            11 => FrameType::Modem,
            12 => FrameType::DtmfBegin,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameType::Dtmf => "DTMF",
            FrameType::Voice => "VOICE",
            FrameType::Video => "VIDEO",
            FrameType::Control => "CONTROL",
            FrameType::Null => "NULL",
            FrameType::Iax => "IAX",
            FrameType::Text => "TEXT",
            FrameType::Image => "IMAGE",
            FrameType::Html => "HTML",
            FrameType::Cng => "CNG",
            FrameType::Modem => "MODEM",
            FrameType::DtmfBegin => "DTMF_BEGIN",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

wire_enum! {
    /// Subclass of frame type IAX: the protocol messages (RFC 5456 section 8.4,
    /// numbering as Asterisk's `enum iax_frame_subclass`).
    ///
    /// Names follow the RFC. Wireshark prints two of them differently:
    /// `UNQULCH` for UNQUELCH and `UNSUPPORTED` for UNSUPPORT.
    pub enum IaxSubclass {
        New = 1 => "NEW",
        Ping = 2 => "PING",
        Pong = 3 => "PONG",
        Ack = 4 => "ACK",
        Hangup = 5 => "HANGUP",
        Reject = 6 => "REJECT",
        Accept = 7 => "ACCEPT",
        AuthReq = 8 => "AUTHREQ",
        AuthRep = 9 => "AUTHREP",
        Inval = 10 => "INVAL",
        LagRq = 11 => "LAGRQ",
        LagRp = 12 => "LAGRP",
        RegReq = 13 => "REGREQ",
        RegAuth = 14 => "REGAUTH",
        RegAck = 15 => "REGACK",
        RegRej = 16 => "REGREJ",
        RegRel = 17 => "REGREL",
        Vnak = 18 => "VNAK",
        DpReq = 19 => "DPREQ",
        DpRep = 20 => "DPREP",
        Dial = 21 => "DIAL",
        TxReq = 22 => "TXREQ",
        TxCnt = 23 => "TXCNT",
        TxAcc = 24 => "TXACC",
        TxReady = 25 => "TXREADY",
        TxRel = 26 => "TXREL",
        TxRej = 27 => "TXREJ",
        Quelch = 28 => "QUELCH",
        Unquelch = 29 => "UNQUELCH",
        Poke = 30 => "POKE",
        Page = 31 => "PAGE",
        Mwi = 32 => "MWI",
        Unsupport = 33 => "UNSUPPORT",
        Transfer = 34 => "TRANSFER",
        Provision = 35 => "PROVISION",
        FwDownl = 36 => "FWDOWNL",
        FwData = 37 => "FWDATA",
        TxMedia = 38 => "TXMEDIA",
        RtKey = 39 => "RTKEY",
        CallToken = 40 => "CALLTOKEN",
    }
}

wire_enum! {
    /// Subclass of frame type CONTROL (RFC 5456 section 8.3; 6, 7, 10 and
    /// 18 and up are Asterisk's `enum ast_control_frame_type`, which chan_iax2
    /// forwards as they are).
    ///
    /// Asterisk's "stop sounds" indication (-1) travels as subclass octet 0xff,
    /// which decodes to `u32::MAX` and has no variant here.
    pub enum ControlSubclass {
        Hangup = 1 => "HANGUP",
        Ring = 2 => "RING",
        Ringing = 3 => "RINGING",
        Answer = 4 => "ANSWER",
        Busy = 5 => "BUSY",
        TakeOffHook = 6 => "TKOFFHK",
        OffHook = 7 => "OFFHOOK",
        Congestion = 8 => "CONGESTION",
        FlashHook = 9 => "FLASHHOOK",
        Wink = 10 => "WINK",
        Option = 11 => "OPTION",
        KeyRadio = 12 => "KEYRADIO",
        UnkeyRadio = 13 => "UNKEYRADIO",
        CallProgress = 14 => "PROGRESS",
        CallProceeding = 15 => "PROCEEDING",
        Hold = 16 => "HOLD",
        Unhold = 17 => "UNHOLD",
        VidUpdate = 18 => "VIDUPDATE",
        T38 = 19 => "T38",
        SrcUpdate = 20 => "SRCUPDATE",
        Transfer = 21 => "TRANSFER",
        ConnectedLine = 22 => "CONNECTED_LINE",
        Redirecting = 23 => "REDIRECTING",
        T38Parameters = 24 => "T38_PARAMETERS",
        Cc = 25 => "CC",
        SrcChange = 26 => "SRCCHANGE",
        ReadAction = 27 => "READ_ACTION",
        Aoc = 28 => "AOC",
        EndOfQ = 29 => "END_OF_Q",
        Incomplete = 30 => "INCOMPLETE",
        Mcid = 31 => "MCID",
        UpdateRtpPeer = 32 => "UPDATE_RTP_PEER",
        PvtCauseCode = 33 => "PVT_CAUSE_CODE",
    }
}

/// Media format bits: the subclass of VOICE/VIDEO/IMAGE frames and the bit
/// sets in the CAPABILITY and FORMAT IEs (RFC 5456 section 8.7).
///
/// Where Asterisk's numbering differs from the RFC the RFC wins and the
/// Asterisk meaning is noted; bits Asterisk added beyond the RFC are included.
/// Asterisk's formats above bit 31 (G.719, Speex16, Opus, testlaw) only fit
/// the 64-bit CAPABILITY2/FORMAT2 IEs; their bits are in the `*_64` consts.
pub mod format {
    pub const G723_1: u32 = 0x0000_0001;
    pub const GSM: u32 = 0x0000_0002;
    pub const ULAW: u32 = 0x0000_0004;
    pub const ALAW: u32 = 0x0000_0008;
    /// RFC "G.726"; Asterisk calls this bit G726_AAL2 (AAL2 codeword packing).
    pub const G726: u32 = 0x0000_0010;
    pub const ADPCM: u32 = 0x0000_0020;
    /// 16-bit signed linear, 8 kHz.
    pub const SLINEAR: u32 = 0x0000_0040;
    pub const LPC10: u32 = 0x0000_0080;
    pub const G729: u32 = 0x0000_0100;
    pub const SPEEX: u32 = 0x0000_0200;
    pub const ILBC: u32 = 0x0000_0400;
    /// RFC "G.726 AAL2"; Asterisk calls this bit G726 (RFC 3551 packing).
    pub const G726_AAL2: u32 = 0x0000_0800;
    pub const G722: u32 = 0x0000_1000;
    /// RFC 5456 assigns this bit to AMR; Asterisk uses it for Siren7 (G.722.1).
    pub const AMR: u32 = 0x0000_2000;
    /// Asterisk: G.722.1 (Siren7), same bit as the RFC's AMR.
    pub const SIREN7: u32 = 0x0000_2000;
    /// Asterisk: G.722.1 Annex C (Siren14).
    pub const SIREN14: u32 = 0x0000_4000;
    /// Asterisk: 16-bit signed linear, 16 kHz.
    pub const SLINEAR16: u32 = 0x0000_8000;
    /// Mask of the audio bits in the 32-bit field.
    pub const AUDIO_MASK: u32 = 0x0000_ffff;

    pub const JPEG: u32 = 0x0001_0000;
    pub const PNG: u32 = 0x0002_0000;
    pub const H261: u32 = 0x0004_0000;
    pub const H263: u32 = 0x0008_0000;
    pub const H263_PLUS: u32 = 0x0010_0000;
    pub const H264: u32 = 0x0020_0000;
    /// Asterisk: MPEG-4 video.
    pub const MP4_VIDEO: u32 = 0x0040_0000;
    /// Asterisk: VP8 video.
    pub const VP8: u32 = 0x0080_0000;
    /// Image formats (JPEG, PNG).
    pub const IMAGE_MASK: u32 = JPEG | PNG;
    /// Video formats.
    pub const VIDEO_MASK: u32 = H261 | H263 | H263_PLUS | H264 | MP4_VIDEO | VP8;

    /// Asterisk: T.140 text with redundancy.
    pub const T140_RED: u32 = 1 << 26;
    /// Asterisk: T.140 text.
    pub const T140: u32 = 1 << 27;

    /// Asterisk 64-bit-only formats (CAPABILITY2/FORMAT2).
    pub const G719_64: u64 = 1 << 32;
    pub const SPEEX16_64: u64 = 1 << 33;
    pub const OPUS_64: u64 = 1 << 34;
    pub const TESTLAW_64: u64 = 1 << 47;

    /// A short name for one format bit, for logs; `None` for unknown bits and
    /// for values with more or fewer than one bit set.
    pub fn name(bit: u32) -> Option<&'static str> {
        Some(match bit {
            G723_1 => "g723",
            GSM => "gsm",
            ULAW => "ulaw",
            ALAW => "alaw",
            G726 => "g726",
            ADPCM => "adpcm",
            SLINEAR => "slin",
            LPC10 => "lpc10",
            G729 => "g729",
            SPEEX => "speex",
            ILBC => "ilbc",
            G726_AAL2 => "g726aal2",
            G722 => "g722",
            AMR => "amr",
            SIREN14 => "siren14",
            SLINEAR16 => "slin16",
            JPEG => "jpeg",
            PNG => "png",
            H261 => "h261",
            H263 => "h263",
            H263_PLUS => "h263p",
            H264 => "h264",
            MP4_VIDEO => "mpeg4",
            VP8 => "vp8",
            T140_RED => "red",
            T140 => "t140",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_types_round_trip_and_are_contiguous() {
        for (i, t) in FrameType::ALL.iter().enumerate() {
            assert_eq!(t.as_u8() as usize, i + 1);
            assert_eq!(FrameType::from_u8(t.as_u8()), Some(*t));
        }
        assert_eq!(FrameType::from_u8(0), None);
        assert_eq!(FrameType::from_u8(13), None);
        assert_eq!(FrameType::from_u8(255), None);
        assert_eq!(FrameType::Iax.to_string(), "IAX");
    }

    #[test]
    fn iax_subclasses_cover_1_to_40() {
        assert_eq!(IaxSubclass::ALL.len(), 40);
        for (i, s) in IaxSubclass::ALL.iter().enumerate() {
            assert_eq!(s.as_u32() as usize, i + 1, "{s}");
            assert_eq!(IaxSubclass::from_u32(s.as_u32()), Some(*s));
        }
        assert_eq!(IaxSubclass::from_u32(0), None);
        assert_eq!(IaxSubclass::from_u32(41), None);
        assert_eq!(IaxSubclass::from_u32(u32::MAX), None);
    }

    #[test]
    fn iax_subclass_values_from_the_rfc() {
        assert_eq!(IaxSubclass::New.as_u32(), 0x01);
        assert_eq!(IaxSubclass::RegReq.as_u32(), 0x0d);
        assert_eq!(IaxSubclass::Quelch.as_u32(), 0x1c);
        assert_eq!(IaxSubclass::Poke.as_u32(), 0x1e);
        assert_eq!(IaxSubclass::Mwi.as_u32(), 0x20);
        assert_eq!(IaxSubclass::Unsupport.as_u32(), 0x21);
        assert_eq!(IaxSubclass::CallToken.as_u32(), 0x28);
        assert_eq!(IaxSubclass::New.name(), "NEW");
        assert_eq!(IaxSubclass::RegReq.name(), "REGREQ");
        assert_eq!(IaxSubclass::CallToken.name(), "CALLTOKEN");
        assert_eq!(IaxSubclass::LagRp.to_string(), "LAGRP");
    }

    #[test]
    fn names_are_unique_upper_case() {
        let mut seen = std::collections::BTreeSet::new();
        for s in IaxSubclass::ALL {
            assert!(seen.insert(s.name()), "duplicate {}", s.name());
            assert_eq!(s.name(), s.name().to_ascii_uppercase());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in ControlSubclass::ALL {
            assert!(seen.insert(s.name()), "duplicate {}", s.name());
            assert_eq!(s.name(), s.name().to_ascii_uppercase());
        }
    }

    #[test]
    fn control_subclasses_round_trip() {
        for s in ControlSubclass::ALL {
            assert_eq!(ControlSubclass::from_u32(s.as_u32()), Some(*s));
        }
        assert_eq!(ControlSubclass::Answer.as_u32(), 4);
        assert_eq!(ControlSubclass::Congestion.as_u32(), 8);
        assert_eq!(ControlSubclass::Unhold.as_u32(), 17);
        assert_eq!(ControlSubclass::from_u32(0), None);
        assert_eq!(ControlSubclass::from_u32(u32::MAX), None);
    }

    #[test]
    fn format_bits() {
        use format::*;
        let audio = [G723_1, GSM, ULAW, ALAW, G726, ADPCM, SLINEAR, LPC10, G729, SPEEX, ILBC, G726_AAL2, G722];
        for (i, bit) in audio.iter().enumerate() {
            assert_eq!(*bit, 1 << i);
            assert!(name(*bit).is_some());
        }
        assert_eq!(H264, 0x0020_0000);
        assert_eq!(AUDIO_MASK & VIDEO_MASK, 0);
        assert_eq!(AUDIO_MASK & IMAGE_MASK, 0);
        assert_eq!(name(ULAW | ALAW), None);
    }
}
