//! Information elements: the `id, length, value` triples carried in the
//! payload of IAX full frames (RFC 5456 section 8.6).
//!
//! Decoding is strict about structure (a length running past the end, a
//! fixed-size value of the wrong size) and lenient about content: text is
//! not guaranteed to be UTF-8 on the wire, so it is decoded lossily.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// IE identifiers (Asterisk `IAX_IE_*`).
pub mod id {
    pub const CALLED_NUMBER: u8 = 0x01;
    pub const CALLING_NUMBER: u8 = 0x02;
    pub const CALLING_ANI: u8 = 0x03;
    pub const CALLING_NAME: u8 = 0x04;
    pub const CALLED_CONTEXT: u8 = 0x05;
    pub const USERNAME: u8 = 0x06;
    pub const PASSWORD: u8 = 0x07;
    pub const CAPABILITY: u8 = 0x08;
    pub const FORMAT: u8 = 0x09;
    pub const LANGUAGE: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const ADSICPE: u8 = 0x0c;
    pub const DNID: u8 = 0x0d;
    pub const AUTHMETHODS: u8 = 0x0e;
    pub const CHALLENGE: u8 = 0x0f;
    pub const MD5_RESULT: u8 = 0x10;
    pub const RSA_RESULT: u8 = 0x11;
    pub const APPARENT_ADDR: u8 = 0x12;
    pub const REFRESH: u8 = 0x13;
    pub const DPSTATUS: u8 = 0x14;
    pub const CALLNO: u8 = 0x15;
    pub const CAUSE: u8 = 0x16;
    pub const IAX_UNKNOWN: u8 = 0x17;
    pub const MSGCOUNT: u8 = 0x18;
    pub const AUTOANSWER: u8 = 0x19;
    pub const MUSICONHOLD: u8 = 0x1a;
    pub const TRANSFERID: u8 = 0x1b;
    pub const RDNIS: u8 = 0x1c;
    pub const PROVISIONING: u8 = 0x1d;
    pub const AESPROVISIONING: u8 = 0x1e;
    pub const DATETIME: u8 = 0x1f;
    pub const DEVICETYPE: u8 = 0x20;
    pub const SERVICEIDENT: u8 = 0x21;
    pub const FIRMWAREVER: u8 = 0x22;
    pub const FWBLOCKDESC: u8 = 0x23;
    pub const FWBLOCKDATA: u8 = 0x24;
    pub const PROVVER: u8 = 0x25;
    pub const CALLINGPRES: u8 = 0x26;
    pub const CALLINGTON: u8 = 0x27;
    pub const CALLINGTNS: u8 = 0x28;
    pub const SAMPLINGRATE: u8 = 0x29;
    pub const CAUSECODE: u8 = 0x2a;
    pub const ENCRYPTION: u8 = 0x2b;
    pub const ENCKEY: u8 = 0x2c;
    pub const CODEC_PREFS: u8 = 0x2d;
    pub const RR_JITTER: u8 = 0x2e;
    pub const RR_LOSS: u8 = 0x2f;
    pub const RR_PKTS: u8 = 0x30;
    pub const RR_DELAY: u8 = 0x31;
    pub const RR_DROPPED: u8 = 0x32;
    pub const RR_OOO: u8 = 0x33;
    pub const VARIABLE: u8 = 0x34;
    pub const OSPTOKEN: u8 = 0x35;
    pub const CALLTOKEN: u8 = 0x36;
    pub const CAPABILITY2: u8 = 0x37;
    pub const FORMAT2: u8 = 0x38;
    pub const CALLINGANI2: u8 = 0x39;
}

/// Authentication method bits of the AUTHMETHODS IE.
pub mod auth_method {
    pub const PLAINTEXT: u16 = 1 << 0;
    pub const MD5: u16 = 1 << 1;
    pub const RSA: u16 = 1 << 2;
}

/// The largest value an IE can carry: its length is one octet.
pub const MAX_IE_VALUE: usize = 255;

/// One information element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ie {
    CalledNumber(String),
    CallingNumber(String),
    CallingAni(String),
    CallingName(String),
    CalledContext(String),
    Username(String),
    Password(String),
    /// 32-bit codec capability bit set ([`super::subclass::format`]).
    Capability(u32),
    /// 32-bit desired codec.
    Format(u32),
    Language(String),
    Version(u16),
    AdsiCpe(u16),
    Dnid(String),
    /// Bit set of [`auth_method`].
    AuthMethods(u16),
    Challenge(String),
    Md5Result(String),
    RsaResult(String),
    /// A raw `struct sockaddr_in`/`sockaddr_in6` as Asterisk memcpy's it.
    ApparentAddr(SocketAddr),
    Refresh(u16),
    DpStatus(u16),
    CallNo(u16),
    Cause(String),
    IaxUnknown(u8),
    MsgCount(u16),
    AutoAnswer,
    MusicOnHold,
    TransferId(u32),
    Rdnis(String),
    Provisioning(Vec<u8>),
    AesProvisioning,
    /// Packed local time: bits 31-25 year-2000, 24-21 month, 20-16 day,
    /// 15-11 hour, 10-5 minute, 4-0 second/2.
    DateTime(u32),
    DeviceType(String),
    ServiceIdent(Vec<u8>),
    FirmwareVer(u16),
    FwBlockDesc(u32),
    FwBlockData(Vec<u8>),
    ProvVer(u32),
    CallingPres(u8),
    CallingTon(u8),
    CallingTns(u16),
    SamplingRate(u16),
    CauseCode(u8),
    Encryption(u16),
    EncKey(Vec<u8>),
    CodecPrefs(String),
    RrJitter(u32),
    RrLoss(u32),
    RrPkts(u32),
    RrDelay(u16),
    RrDropped(u32),
    RrOoo(u32),
    Variable(Vec<u8>),
    OspToken(Vec<u8>),
    /// Call token; empty in the NEW that asks for one.
    CallToken(Vec<u8>),
    /// 64-bit capability, encoding version 0 (one version octet, then u64).
    Capability2(u64),
    /// 64-bit desired format, encoding version 0.
    Format2(u64),
    /// Calling ANI2 (originating line information digits), u32.
    CallingAni2(u32),
    /// An IE this parser does not know, kept verbatim. Also carries
    /// CAPABILITY2/FORMAT2 with an encoding version other than 0, which
    /// Asterisk ignores rather than rejects.
    Unknown {
        id: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IeError {
    #[error("IE {name} (0x{id:02x}) declares {declared} bytes but only {available} remain")]
    Truncated { id: u8, name: &'static str, declared: usize, available: usize },
    #[error("1 stray byte after the last IE")]
    StrayByte,
    #[error("IE {name} (0x{id:02x}) has length {len}, expected {expected}")]
    BadLength { id: u8, name: &'static str, len: usize, expected: &'static str },
    #[error("IE APPARENT ADDR has length {len} and family bytes {family:02x?}, which is neither sockaddr_in nor sockaddr_in6")]
    BadAddress { len: usize, family: [u8; 2] },
    #[error("IE {name} (0x{id:02x}) value is {len} bytes, at most 255 fit")]
    TooLong { id: u8, name: &'static str, len: usize },
}

/// Upper-case name of an IE id, as Asterisk's `iax_ie2str` spells it.
pub fn ie_name(ie: u8) -> &'static str {
    match ie {
        id::CALLED_NUMBER => "CALLED NUMBER",
        id::CALLING_NUMBER => "CALLING NUMBER",
        id::CALLING_ANI => "ANI",
        id::CALLING_NAME => "CALLING NAME",
        id::CALLED_CONTEXT => "CALLED CONTEXT",
        id::USERNAME => "USERNAME",
        id::PASSWORD => "PASSWORD",
        id::CAPABILITY => "CAPABILITY",
        id::FORMAT => "FORMAT",
        id::LANGUAGE => "LANGUAGE",
        id::VERSION => "VERSION",
        id::ADSICPE => "ADSICPE",
        id::DNID => "DNID",
        id::AUTHMETHODS => "AUTHMETHODS",
        id::CHALLENGE => "CHALLENGE",
        id::MD5_RESULT => "MD5 RESULT",
        id::RSA_RESULT => "RSA RESULT",
        id::APPARENT_ADDR => "APPARENT ADDRESS",
        id::REFRESH => "REFRESH",
        id::DPSTATUS => "DIALPLAN STATUS",
        id::CALLNO => "CALL NUMBER",
        id::CAUSE => "CAUSE",
        id::IAX_UNKNOWN => "UNKNOWN IAX CMD",
        id::MSGCOUNT => "MESSAGE COUNT",
        id::AUTOANSWER => "AUTO ANSWER REQ",
        id::MUSICONHOLD => "MUSIC ON HOLD",
        id::TRANSFERID => "TRANSFER ID",
        id::RDNIS => "REFERRING DNIS",
        id::PROVISIONING => "PROVISIONING",
        id::AESPROVISIONING => "AES PROVISIONING",
        id::DATETIME => "DATE TIME",
        id::DEVICETYPE => "DEVICE TYPE",
        id::SERVICEIDENT => "SERVICE IDENT",
        id::FIRMWAREVER => "FIRMWARE VER",
        id::FWBLOCKDESC => "FW BLOCK DESC",
        id::FWBLOCKDATA => "FW BLOCK DATA",
        id::PROVVER => "PROVISIONING VER",
        id::CALLINGPRES => "CALLING PRESNTN",
        id::CALLINGTON => "CALLING TYPEOFNUM",
        id::CALLINGTNS => "CALLING TRANSITNET",
        id::SAMPLINGRATE => "SAMPLINGRATE",
        id::CAUSECODE => "CAUSE CODE",
        id::ENCRYPTION => "ENCRYPTION",
        id::ENCKEY => "ENCRYPTION KEY",
        id::CODEC_PREFS => "CODEC_PREFS",
        id::RR_JITTER => "RR_JITTER",
        id::RR_LOSS => "RR_LOSS",
        id::RR_PKTS => "RR_PKTS",
        id::RR_DELAY => "RR_DELAY",
        id::RR_DROPPED => "RR_DROPPED",
        id::RR_OOO => "RR_OUTOFORDER",
        id::VARIABLE => "VARIABLE",
        id::OSPTOKEN => "OSPTOKEN",
        id::CALLTOKEN => "CALLTOKEN",
        id::CAPABILITY2 => "CAPABILITY2",
        id::FORMAT2 => "FORMAT2",
        id::CALLINGANI2 => "CALLINGANI2",
        _ => "UNKNOWN IE",
    }
}

impl Ie {
    /// The IE identifier octet.
    pub fn id(&self) -> u8 {
        match self {
            Ie::CalledNumber(_) => id::CALLED_NUMBER,
            Ie::CallingNumber(_) => id::CALLING_NUMBER,
            Ie::CallingAni(_) => id::CALLING_ANI,
            Ie::CallingName(_) => id::CALLING_NAME,
            Ie::CalledContext(_) => id::CALLED_CONTEXT,
            Ie::Username(_) => id::USERNAME,
            Ie::Password(_) => id::PASSWORD,
            Ie::Capability(_) => id::CAPABILITY,
            Ie::Format(_) => id::FORMAT,
            Ie::Language(_) => id::LANGUAGE,
            Ie::Version(_) => id::VERSION,
            Ie::AdsiCpe(_) => id::ADSICPE,
            Ie::Dnid(_) => id::DNID,
            Ie::AuthMethods(_) => id::AUTHMETHODS,
            Ie::Challenge(_) => id::CHALLENGE,
            Ie::Md5Result(_) => id::MD5_RESULT,
            Ie::RsaResult(_) => id::RSA_RESULT,
            Ie::ApparentAddr(_) => id::APPARENT_ADDR,
            Ie::Refresh(_) => id::REFRESH,
            Ie::DpStatus(_) => id::DPSTATUS,
            Ie::CallNo(_) => id::CALLNO,
            Ie::Cause(_) => id::CAUSE,
            Ie::IaxUnknown(_) => id::IAX_UNKNOWN,
            Ie::MsgCount(_) => id::MSGCOUNT,
            Ie::AutoAnswer => id::AUTOANSWER,
            Ie::MusicOnHold => id::MUSICONHOLD,
            Ie::TransferId(_) => id::TRANSFERID,
            Ie::Rdnis(_) => id::RDNIS,
            Ie::Provisioning(_) => id::PROVISIONING,
            Ie::AesProvisioning => id::AESPROVISIONING,
            Ie::DateTime(_) => id::DATETIME,
            Ie::DeviceType(_) => id::DEVICETYPE,
            Ie::ServiceIdent(_) => id::SERVICEIDENT,
            Ie::FirmwareVer(_) => id::FIRMWAREVER,
            Ie::FwBlockDesc(_) => id::FWBLOCKDESC,
            Ie::FwBlockData(_) => id::FWBLOCKDATA,
            Ie::ProvVer(_) => id::PROVVER,
            Ie::CallingPres(_) => id::CALLINGPRES,
            Ie::CallingTon(_) => id::CALLINGTON,
            Ie::CallingTns(_) => id::CALLINGTNS,
            Ie::SamplingRate(_) => id::SAMPLINGRATE,
            Ie::CauseCode(_) => id::CAUSECODE,
            Ie::Encryption(_) => id::ENCRYPTION,
            Ie::EncKey(_) => id::ENCKEY,
            Ie::CodecPrefs(_) => id::CODEC_PREFS,
            Ie::RrJitter(_) => id::RR_JITTER,
            Ie::RrLoss(_) => id::RR_LOSS,
            Ie::RrPkts(_) => id::RR_PKTS,
            Ie::RrDelay(_) => id::RR_DELAY,
            Ie::RrDropped(_) => id::RR_DROPPED,
            Ie::RrOoo(_) => id::RR_OOO,
            Ie::Variable(_) => id::VARIABLE,
            Ie::OspToken(_) => id::OSPTOKEN,
            Ie::CallToken(_) => id::CALLTOKEN,
            Ie::Capability2(_) => id::CAPABILITY2,
            Ie::Format2(_) => id::FORMAT2,
            Ie::CallingAni2(_) => id::CALLINGANI2,
            Ie::Unknown { id, .. } => *id,
        }
    }

    /// Upper-case name, for logs and errors.
    pub fn name(&self) -> &'static str {
        ie_name(self.id())
    }

    /// Appends the value (without id and length) to `out`.
    fn write_value(&self, out: &mut Vec<u8>) {
        match self {
            Ie::CalledNumber(s)
            | Ie::CallingNumber(s)
            | Ie::CallingAni(s)
            | Ie::CallingName(s)
            | Ie::CalledContext(s)
            | Ie::Username(s)
            | Ie::Password(s)
            | Ie::Language(s)
            | Ie::Dnid(s)
            | Ie::Challenge(s)
            | Ie::Md5Result(s)
            | Ie::RsaResult(s)
            | Ie::Cause(s)
            | Ie::Rdnis(s)
            | Ie::DeviceType(s)
            | Ie::CodecPrefs(s) => out.extend_from_slice(s.as_bytes()),
            Ie::Provisioning(b)
            | Ie::ServiceIdent(b)
            | Ie::FwBlockData(b)
            | Ie::EncKey(b)
            | Ie::Variable(b)
            | Ie::OspToken(b)
            | Ie::CallToken(b)
            | Ie::Unknown { data: b, .. } => out.extend_from_slice(b),
            Ie::Capability(v)
            | Ie::Format(v)
            | Ie::TransferId(v)
            | Ie::DateTime(v)
            | Ie::FwBlockDesc(v)
            | Ie::ProvVer(v)
            | Ie::RrJitter(v)
            | Ie::RrLoss(v)
            | Ie::RrPkts(v)
            | Ie::RrDropped(v)
            | Ie::RrOoo(v)
            | Ie::CallingAni2(v) => out.extend_from_slice(&v.to_be_bytes()),
            Ie::Version(v)
            | Ie::AdsiCpe(v)
            | Ie::AuthMethods(v)
            | Ie::Refresh(v)
            | Ie::DpStatus(v)
            | Ie::CallNo(v)
            | Ie::MsgCount(v)
            | Ie::FirmwareVer(v)
            | Ie::CallingTns(v)
            | Ie::SamplingRate(v)
            | Ie::Encryption(v)
            | Ie::RrDelay(v) => out.extend_from_slice(&v.to_be_bytes()),
            Ie::IaxUnknown(v) | Ie::CallingPres(v) | Ie::CallingTon(v) | Ie::CauseCode(v) => out.push(*v),
            Ie::AutoAnswer | Ie::MusicOnHold | Ie::AesProvisioning => {}
            Ie::Capability2(v) | Ie::Format2(v) => {
                out.push(0); // encoding version
                out.extend_from_slice(&v.to_be_bytes());
            }
            Ie::ApparentAddr(addr) => write_sockaddr(addr, out),
        }
    }

    /// Appends this IE (id, length, value) to `out`, or fails without
    /// touching `out` if the value does not fit in 255 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), IeError> {
        let start = out.len();
        out.push(self.id());
        out.push(0);
        self.write_value(out);
        let len = out.len() - start - 2;
        match u8::try_from(len) {
            Ok(l) => {
                out[start + 1] = l;
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(IeError::TooLong { id: self.id(), name: self.name(), len })
            }
        }
    }

    /// Like [`Ie::encode`] but cuts an over-long value to 255 bytes instead
    /// of failing; for builders whose callers cannot handle an error.
    pub fn encode_truncating(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(self.id());
        out.push(0);
        self.write_value(out);
        let len = (out.len() - start - 2).min(MAX_IE_VALUE);
        out.truncate(start + 2 + len);
        out[start + 1] = len as u8; // len <= 255 by the min above
    }
}

/// Writes a Linux `struct sockaddr_in` (16 bytes) or `sockaddr_in6` (28)
/// the way Asterisk on x86 does: family in host (little-endian) order,
/// port, flow info and address in network order, scope id in host order.
fn write_sockaddr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => {
            out.extend_from_slice(&AF_INET_LINUX.to_le_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&[0; 8]);
        }
        SocketAddr::V6(a) => {
            out.extend_from_slice(&AF_INET6_LINUX.to_le_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.flowinfo().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.scope_id().to_le_bytes());
        }
    }
}

const AF_INET_LINUX: u16 = 2;
const AF_INET6_LINUX: u16 = 10;
const AF_INET6_WINDOWS: u16 = 23;
const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

/// Reads a raw sockaddr. The length says which struct it is (as in
/// Asterisk's `dump_addr`); the family field is checked to catch garbage,
/// accepting it in either byte order because it is the sender's host order,
/// and the BSD layout where the first octet is the struct length.
fn read_sockaddr(v: &[u8]) -> Result<SocketAddr, IeError> {
    let bad = || IeError::BadAddress {
        len: v.len(),
        family: [v.first().copied().unwrap_or(0), v.get(1).copied().unwrap_or(0)],
    };
    let (fam_le, fam_be) = match v {
        [a, b, ..] => (u16::from_le_bytes([*a, *b]), u16::from_be_bytes([*a, *b])),
        _ => return Err(bad()),
    };
    let port = |v: &[u8]| u16::from_be_bytes([v[2], v[3]]);
    match v.len() {
        SOCKADDR_IN_LEN => {
            let bsd = v[0] as usize == SOCKADDR_IN_LEN && v[1] as u16 == AF_INET_LINUX;
            if fam_le != AF_INET_LINUX && fam_be != AF_INET_LINUX && !bsd {
                return Err(bad());
            }
            let ip = Ipv4Addr::new(v[4], v[5], v[6], v[7]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port(v))))
        }
        SOCKADDR_IN6_LEN => {
            let known = [AF_INET6_LINUX, AF_INET6_WINDOWS];
            let bsd = v[0] as usize == SOCKADDR_IN6_LEN;
            if !known.contains(&fam_le) && !known.contains(&fam_be) && !bsd {
                return Err(bad());
            }
            let flowinfo = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&v[8..24]);
            let scope_id = u32::from_le_bytes([v[24], v[25], v[26], v[27]]);
            let ip = Ipv6Addr::from(octets);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port(v), flowinfo, scope_id)))
        }
        _ => Err(bad()),
    }
}

/// Decodes one IE value whose id and length are already split off.
fn decode_value(ie: u8, v: &[u8]) -> Result<Ie, IeError> {
    let text = || String::from_utf8_lossy(v).into_owned();
    let bytes = || v.to_vec();
    let bad = |expected: &'static str| IeError::BadLength { id: ie, name: ie_name(ie), len: v.len(), expected };
    let u8v = || match v {
        [a] => Ok(*a),
        _ => Err(bad("1")),
    };
    let u16v = || match v {
        [a, b] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(bad("2")),
    };
    let u32v = || match v {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(bad("4")),
    };
    Ok(match ie {
        id::CALLED_NUMBER => Ie::CalledNumber(text()),
        id::CALLING_NUMBER => Ie::CallingNumber(text()),
        id::CALLING_ANI => Ie::CallingAni(text()),
        id::CALLING_NAME => Ie::CallingName(text()),
        id::CALLED_CONTEXT => Ie::CalledContext(text()),
        id::USERNAME => Ie::Username(text()),
        id::PASSWORD => Ie::Password(text()),
        id::CAPABILITY => Ie::Capability(u32v()?),
        id::FORMAT => Ie::Format(u32v()?),
        id::LANGUAGE => Ie::Language(text()),
        id::VERSION => Ie::Version(u16v()?),
        id::ADSICPE => Ie::AdsiCpe(u16v()?),
        id::DNID => Ie::Dnid(text()),
        id::AUTHMETHODS => Ie::AuthMethods(u16v()?),
        id::CHALLENGE => Ie::Challenge(text()),
        id::MD5_RESULT => Ie::Md5Result(text()),
        id::RSA_RESULT => Ie::RsaResult(text()),
        id::APPARENT_ADDR => Ie::ApparentAddr(read_sockaddr(v)?),
        id::REFRESH => Ie::Refresh(u16v()?),
        id::DPSTATUS => Ie::DpStatus(u16v()?),
        id::CALLNO => Ie::CallNo(u16v()?),
        id::CAUSE => Ie::Cause(text()),
        id::IAX_UNKNOWN => Ie::IaxUnknown(u8v()?),
        id::MSGCOUNT => Ie::MsgCount(u16v()?),
        // Presence flags: Asterisk sets the flag whatever the length, and
        // its header says MUSICONHOLD may carry a class name; so do we.
        id::AUTOANSWER => Ie::AutoAnswer,
        id::MUSICONHOLD => Ie::MusicOnHold,
        id::AESPROVISIONING => Ie::AesProvisioning,
        id::TRANSFERID => Ie::TransferId(u32v()?),
        id::RDNIS => Ie::Rdnis(text()),
        id::PROVISIONING => Ie::Provisioning(bytes()),
        id::DATETIME => Ie::DateTime(u32v()?),
        id::DEVICETYPE => Ie::DeviceType(text()),
        id::SERVICEIDENT => Ie::ServiceIdent(bytes()),
        id::FIRMWAREVER => Ie::FirmwareVer(u16v()?),
        id::FWBLOCKDESC => Ie::FwBlockDesc(u32v()?),
        id::FWBLOCKDATA => Ie::FwBlockData(bytes()),
        id::PROVVER => Ie::ProvVer(u32v()?),
        id::CALLINGPRES => Ie::CallingPres(u8v()?),
        id::CALLINGTON => Ie::CallingTon(u8v()?),
        id::CALLINGTNS => Ie::CallingTns(u16v()?),
        id::SAMPLINGRATE => Ie::SamplingRate(u16v()?),
        id::CAUSECODE => Ie::CauseCode(u8v()?),
        id::ENCRYPTION => Ie::Encryption(u16v()?),
        id::ENCKEY => Ie::EncKey(bytes()),
        id::CODEC_PREFS => Ie::CodecPrefs(text()),
        id::RR_JITTER => Ie::RrJitter(u32v()?),
        id::RR_LOSS => Ie::RrLoss(u32v()?),
        id::RR_PKTS => Ie::RrPkts(u32v()?),
        id::RR_DELAY => Ie::RrDelay(u16v()?),
        id::RR_DROPPED => Ie::RrDropped(u32v()?),
        id::RR_OOO => Ie::RrOoo(u32v()?),
        id::VARIABLE => Ie::Variable(bytes()),
        id::OSPTOKEN => Ie::OspToken(bytes()),
        id::CALLTOKEN => Ie::CallToken(bytes()),
        id::CAPABILITY2 | id::FORMAT2 => match v {
            [] => return Err(bad("9 (version 0 + u64)")),
            [0, rest @ ..] => {
                let arr: [u8; 8] = rest.try_into().map_err(|_| bad("9 (version 0 + u64)"))?;
                let value = u64::from_be_bytes(arr);
                if ie == id::CAPABILITY2 {
                    Ie::Capability2(value)
                } else {
                    Ie::Format2(value)
                }
            }
            _ => Ie::Unknown { id: ie, data: bytes() },
        },
        id::CALLINGANI2 => Ie::CallingAni2(u32v()?),
        _ => Ie::Unknown { id: ie, data: bytes() },
    })
}

/// Decodes a whole IE list (a full frame's payload). Never panics.
/// The DATETIME IE's value for a UNIX time (RFC 5456 section 8.6.28): seconds/2
/// in bits 0-4, minutes 5-10, hours 11-15, day 16-20, month 21-24, years since
/// 2000 in 25-31. UTC, as the RFC names no zone; chan_iax2 sends its local
/// time, which is UTC on most servers.
pub fn datetime(unix_secs: u64) -> u32 {
    let (year, month, day) = civil_from_days(unix_secs / 86_400);
    let secs = (unix_secs % 86_400) as u32;
    let year = year.saturating_sub(2000).min(127) as u32;
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    (second / 2) | (minute << 5) | (hour << 11) | (day << 16) | (month << 21) | (year << 25)
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01, after
/// Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

pub fn decode_ies(buf: &[u8]) -> Result<Vec<Ie>, IeError> {
    let mut ies = Vec::new();
    let mut rest = buf;
    loop {
        match rest {
            [] => return Ok(ies),
            [_] => return Err(IeError::StrayByte),
            [ie, len, tail @ ..] => {
                let len = *len as usize;
                if len > tail.len() {
                    return Err(IeError::Truncated {
                        id: *ie,
                        name: ie_name(*ie),
                        declared: len,
                        available: tail.len(),
                    });
                }
                let (value, after) = tail.split_at(len);
                ies.push(decode_value(*ie, value)?);
                rest = after;
            }
        }
    }
}

/// Appends the encoding of `ies` to `out`. On error (a value longer than 255
/// bytes) `out` is left as it was.
pub fn encode_ies(ies: &[Ie], out: &mut Vec<u8>) -> Result<(), IeError> {
    let start = out.len();
    for ie in ies {
        if let Err(e) = ie.encode(out) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

/// Finds the first IE matching `pick`, e.g.
/// `find(&ies, |ie| match ie { Ie::Username(u) => Some(u.as_str()), _ => None })`.
pub fn find<'a, T>(ies: &'a [Ie], pick: impl FnMut(&'a Ie) -> Option<T>) -> Option<T> {
    ies.iter().find_map(pick)
}

/// Defines [`IeLookup`]: for each IE the protocol logic reads, a method
/// returning its first occurrence.
macro_rules! lookups {
    ($($method:ident: $variant:ident -> $ty:ty = |$v:ident| $value:expr;)*) => {
        /// First-occurrence lookups of the IEs the protocol logic reads.
        pub trait IeLookup {
            $(fn $method(&self) -> Option<$ty>;)*
        }

        impl IeLookup for [Ie] {
            $(fn $method(&self) -> Option<$ty> {
                self.iter().find_map(|ie| match ie {
                    Ie::$variant($v) => Some($value),
                    _ => None,
                })
            })*
        }
    };
}

lookups! {
    username: Username -> &str = |v| v.as_str();
    password: Password -> &str = |v| v.as_str();
    md5_result: Md5Result -> &str = |v| v.as_str();
    challenge: Challenge -> &str = |v| v.as_str();
    cause: Cause -> &str = |v| v.as_str();
    called_number: CalledNumber -> &str = |v| v.as_str();
    calling_number: CallingNumber -> &str = |v| v.as_str();
    calling_name: CallingName -> &str = |v| v.as_str();
    called_context: CalledContext -> &str = |v| v.as_str();
    call_token: CallToken -> &[u8] = |v| v.as_slice();
    refresh: Refresh -> u16 = |v| *v;
    auth_methods: AuthMethods -> u16 = |v| *v;
    encryption: Encryption -> u16 = |v| *v;
    cause_code: CauseCode -> u8 = |v| *v;
    format: Format -> u32 = |v| *v;
    capability: Capability -> u32 = |v| *v;
    apparent_addr: ApparentAddr -> SocketAddr = |v| *v;
}

/// The IP of an APPARENT ADDR, mapped IPv4 addresses unmapped.
pub fn canonical_ip(addr: &SocketAddr) -> IpAddr {
    addr.ip().to_canonical()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn datetime_packs_utc_fields_as_the_rfc_says() {
        // 2026-12-06T07:17:04Z, for which Asterisk 20 (on UTC) sent 897989154.
        let v = datetime(1_796_541_424);
        assert_eq!(
            (v >> 25, v >> 21 & 0xf, v >> 16 & 0x1f, v >> 11 & 0x1f, v >> 5 & 0x3f, v & 0x1f),
            (26, 12, 6, 7, 17, 2)
        );
        assert_eq!(v, 897_989_154);
        assert_eq!(datetime(951_782_400) >> 16 & 0x1ff, 2 << 5 | 29, "2000-02-29 is a leap day");
    }

    /// One of every variant, with values that exercise byte order.
    pub(crate) fn every_ie() -> Vec<Ie> {
        vec![
            Ie::CalledNumber("100".into()),
            Ie::CallingNumber("2001".into()),
            Ie::CallingAni("555".into()),
            Ie::CallingName("Zoë".into()),
            Ie::CalledContext("default".into()),
            Ie::Username("alice".into()),
            Ie::Password("secret".into()),
            Ie::Capability(0x0102_0304),
            Ie::Format(0x0000_0004),
            Ie::Language("en".into()),
            Ie::Version(2),
            Ie::AdsiCpe(0xabcd),
            Ie::Dnid("200".into()),
            Ie::AuthMethods(auth_method::MD5 | auth_method::RSA),
            Ie::Challenge("123456789".into()),
            Ie::Md5Result("0123456789abcdef0123456789abcdef".into()),
            Ie::RsaResult("rsa".into()),
            Ie::ApparentAddr("192.0.2.7:4569".parse().unwrap()),
            Ie::ApparentAddr("[2001:db8::1]:4570".parse().unwrap()),
            Ie::Refresh(60),
            Ie::DpStatus(0x8001),
            Ie::CallNo(0x1234),
            Ie::Cause("Busy".into()),
            Ie::IaxUnknown(0x33),
            Ie::MsgCount(0x0102),
            Ie::AutoAnswer,
            Ie::MusicOnHold,
            Ie::TransferId(0xdead_beef),
            Ie::Rdnis("300".into()),
            Ie::Provisioning(vec![1, 2, 3]),
            Ie::AesProvisioning,
            Ie::DateTime(0x0b0c_55d6),
            Ie::DeviceType("phone".into()),
            Ie::ServiceIdent(vec![0, 1, 2, 3, 4, 5]),
            Ie::FirmwareVer(0x0203),
            Ie::FwBlockDesc(0x8000_0001),
            Ie::FwBlockData(vec![0xff; 200]),
            Ie::ProvVer(7),
            Ie::CallingPres(0x03),
            Ie::CallingTon(0x21),
            Ie::CallingTns(0x0304),
            Ie::SamplingRate(1),
            Ie::CauseCode(16),
            Ie::Encryption(1),
            Ie::EncKey(vec![9; 16]),
            Ie::CodecPrefs("ABC".into()),
            Ie::RrJitter(1),
            Ie::RrLoss(0x0100_0002),
            Ie::RrPkts(3),
            Ie::RrDelay(4),
            Ie::RrDropped(5),
            Ie::RrOoo(6),
            Ie::Variable(b"FOO=bar".to_vec()),
            Ie::OspToken(vec![0, 1]),
            Ie::CallToken(b"1234?abcd".to_vec()),
            Ie::CallToken(vec![]),
            Ie::Capability2(0x0000_0004_0000_0008),
            Ie::Format2(1 << 34),
            Ie::CallingAni2(0x0102_0304),
            Ie::Unknown { id: 0xff, data: vec![0, 0, 0, 2] },
            Ie::Unknown { id: 0x80, data: vec![] },
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        let ies = every_ie();
        let mut buf = Vec::new();
        encode_ies(&ies, &mut buf).unwrap();
        assert_eq!(decode_ies(&buf).unwrap(), ies);
        for ie in &ies {
            let mut one = Vec::new();
            ie.encode(&mut one).unwrap();
            assert_eq!(one[0], ie.id());
            assert_eq!(one[1] as usize, one.len() - 2, "{ie:?}");
            assert_eq!(decode_ies(&one).unwrap(), vec![ie.clone()]);
        }
    }

    #[test]
    fn ids_match_the_rfc_table() {
        assert_eq!(Ie::CalledNumber(String::new()).id(), 0x01);
        assert_eq!(Ie::ApparentAddr("1.2.3.4:5".parse().unwrap()).id(), 0x12);
        assert_eq!(Ie::AutoAnswer.id(), 0x19);
        assert_eq!(Ie::DateTime(0).id(), 0x1f);
        assert_eq!(Ie::CodecPrefs(String::new()).id(), 0x2d);
        assert_eq!(Ie::CallToken(vec![]).id(), 0x36);
        assert_eq!(Ie::Format2(0).id(), 0x38);
        assert_eq!(Ie::CallingAni2(0).id(), 0x39);
        // Every typed variant has a distinct id.
        let mut ids: Vec<u8> = every_ie().iter().filter(|ie| !matches!(ie, Ie::Unknown { .. })).map(Ie::id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids, (0x01..=0x39).collect::<Vec<u8>>());
    }

    #[test]
    fn hand_built_bytes() {
        // From the NEW in ndpi__iax.pcap: VERSION 2, CALLED NUMBER, LANGUAGE "en".
        let wire = [0x0b, 0x02, 0x00, 0x02, 0x01, 0x03, b'4', b'4', b'2', 0x0a, 0x02, b'e', b'n'];
        let ies = decode_ies(&wire).unwrap();
        assert_eq!(ies, vec![Ie::Version(2), Ie::CalledNumber("442".into()), Ie::Language("en".into())]);
        let mut out = Vec::new();
        encode_ies(&ies, &mut out).unwrap();
        assert_eq!(out, wire);

        let mut out = Vec::new();
        Ie::Capability2(0x0102_0304_0506_0708).encode(&mut out).unwrap();
        assert_eq!(out, [0x37, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut out = Vec::new();
        Ie::Refresh(60).encode(&mut out).unwrap();
        assert_eq!(out, [0x13, 2, 0, 60]);
        let mut out = Vec::new();
        Ie::AutoAnswer.encode(&mut out).unwrap();
        assert_eq!(out, [0x19, 0]);
    }

    #[test]
    fn apparent_addr_ipv4_as_asterisk_sends_it() {
        // x86 Asterisk: sin_family little-endian, then port and address.
        let le = [0x12, 16, 0x02, 0x00, 0x11, 0xd9, 192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0];
        let want = Ie::ApparentAddr("192.0.2.7:4569".parse().unwrap());
        assert_eq!(decode_ies(&le).unwrap(), vec![want.clone()]);
        let mut out = Vec::new();
        want.encode(&mut out).unwrap();
        assert_eq!(out, le);
        // A big-endian host.
        let mut be = le;
        be[2] = 0x00;
        be[3] = 0x02;
        assert_eq!(decode_ies(&be).unwrap(), vec![want.clone()]);
        // BSD layout: sin_len, sin_family.
        let mut bsd = le;
        bsd[2] = 16;
        bsd[3] = 2;
        assert_eq!(decode_ies(&bsd).unwrap(), vec![want]);
        // Garbage family.
        let mut bad = le;
        bad[2] = 0x0a;
        assert!(matches!(decode_ies(&bad), Err(IeError::BadAddress { len: 16, .. })));
    }

    #[test]
    fn apparent_addr_ipv6() {
        let mut wire = vec![0x12, 28, 0x0a, 0x00, 0x11, 0xda, 0, 0, 0, 0];
        wire.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        wire.extend_from_slice(&[0, 0, 0, 0]);
        let want = Ie::ApparentAddr("[2001:db8::1]:4570".parse().unwrap());
        assert_eq!(decode_ies(&wire).unwrap(), vec![want.clone()]);
        let mut out = Vec::new();
        want.encode(&mut out).unwrap();
        assert_eq!(out, wire);
        // Neither 16 nor 28 bytes.
        let odd = [0x12, 4, 2, 0, 0x11, 0xd9];
        assert!(matches!(decode_ies(&odd), Err(IeError::BadAddress { len: 4, .. })));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(decode_ies(&[]).unwrap(), vec![]);
        assert_eq!(decode_ies(&[0x06]), Err(IeError::StrayByte));
        assert_eq!(
            decode_ies(&[0x06, 5, b'a', b'b']),
            Err(IeError::Truncated { id: 6, name: "USERNAME", declared: 5, available: 2 })
        );
        assert!(matches!(decode_ies(&[0x13, 1, 60]), Err(IeError::BadLength { id: 0x13, len: 1, .. })));
        assert!(matches!(decode_ies(&[0x37, 5, 0, 1, 2, 3, 4]), Err(IeError::BadLength { id: 0x37, .. })));
        assert!(matches!(decode_ies(&[0x38, 0]), Err(IeError::BadLength { id: 0x38, .. })));
        let err = decode_ies(&[0x06, 5, b'a']).unwrap_err().to_string();
        assert!(err.contains("USERNAME") && err.contains('5'), "{err}");
    }

    #[test]
    fn future_capability2_versions_are_kept_verbatim() {
        let wire = [0x37, 3, 1, 0xaa, 0xbb];
        assert_eq!(decode_ies(&wire).unwrap(), vec![Ie::Unknown { id: 0x37, data: vec![1, 0xaa, 0xbb] }]);
    }

    #[test]
    fn text_need_not_be_utf8() {
        let ies = decode_ies(&[0x04, 3, b'a', 0xff, b'b']).unwrap();
        assert_eq!(ies, vec![Ie::CallingName("a\u{fffd}b".into())]);
    }

    #[test]
    fn presence_ies_ignore_content() {
        assert_eq!(decode_ies(&[0x1a, 3, b'j', b'z', b'z']).unwrap(), vec![Ie::MusicOnHold]);
    }

    #[test]
    fn too_long_values() {
        let long = Ie::Username("x".repeat(256));
        let mut out = vec![0xee];
        assert_eq!(
            encode_ies(&[Ie::Version(2), long.clone()], &mut out),
            Err(IeError::TooLong { id: 6, name: "USERNAME", len: 256 })
        );
        assert_eq!(out, [0xee], "output untouched on error");
        let ok = Ie::Username("x".repeat(255));
        ok.encode(&mut out).unwrap();
        assert_eq!(out.len(), 1 + 2 + 255);
        let mut cut = Vec::new();
        long.encode_truncating(&mut cut);
        assert_eq!(decode_ies(&cut).unwrap(), vec![ok]);
    }

    #[test]
    fn find_helper() {
        let ies = vec![Ie::Version(2), Ie::Username("bob".into())];
        let user = find(&ies, |ie| match ie {
            Ie::Username(u) => Some(u.as_str()),
            _ => None,
        });
        assert_eq!(user, Some("bob"));
        let v4mapped: SocketAddr = "[::ffff:192.0.2.1]:1".parse().unwrap();
        assert_eq!(canonical_ip(&v4mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
