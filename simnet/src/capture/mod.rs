//! Reading packet captures into the messages a replay works with.
//!
//! [`read`] takes the bytes of a pcap or pcapng file (pcap-file 2) and
//! returns every UDP datagram and every SIP message carried over TCP, in
//! capture order, each classified as SIP, IAX2, RTP, RTCP or other:
//!
//! - link types Ethernet (with VLAN tags), Linux cooked v1 and v2, raw IP
//!   (101, 228, 229, and the BSDs' 12/14) and null/loopback (0, 108);
//! - IPv4 and IPv6 (etherparse headers), fragments of both reassembled with
//!   bounded memory ([`ip::MAX_REASSEMBLIES`], [`ip::REASSEMBLY_TIMEOUT`]);
//! - TCP put in order per direction, retransmissions dropped, holes bounded
//!   ([`tcp::MAX_PENDING_BYTES`]), and split into SIP messages by
//!   Content-Length; streams that do not start like SIP are ignored.
//!
//! Nothing in a capture is fatal except a file that is not pcap or pcapng at
//! all: every broken or unknown record is listed in [`Capture::problems`]
//! with its frame number (1-based, as Wireshark numbers them) and skipped.
//! [`flows`] groups the messages into flows and picks the role the switch
//! takes in a replay.

mod file;
pub mod flows;
pub mod ip;
pub mod link;
pub mod sip;
pub mod tcp;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use switch::iax2::frame::Frame;

pub use flows::{choose_role, find_flows, fmt_epoch, summarize, Flow, FlowProto, RoleChoice, RoleRequest, Summary};
pub use sip::{SipInfo, StartLine};

/// The file as a whole could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not a pcap or pcapng file: {0}")]
    NotACapture(String),
}

/// A record (or a message within one) that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Frame number (1-based).
    pub frame: usize,
    pub message: String,
}

impl Problem {
    pub fn new(frame: usize, message: String) -> Self {
        Problem { frame, message }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {}: {}", self.frame, self.message)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Pcap { nanosecond: bool, link: u32 },
    PcapNg { links: Vec<u32> },
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileFormat::Pcap { nanosecond, link } => {
                let res = if *nanosecond { "ns" } else { "µs" };
                write!(f, "pcap ({res} timestamps), {}", link::link_name(*link))
            }
            FileFormat::PcapNg { links } => {
                let names: Vec<String> = links.iter().map(|l| link::link_name(*l)).collect();
                write!(f, "pcapng, {}", if names.is_empty() { "no interfaces".into() } else { names.join(", ") })
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// The RTP header fields a summary shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpInfo {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// What a message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proto {
    Sip(Box<SipInfo>),
    Iax2(Frame),
    Rtp(RtpInfo),
    Rtcp,
    Other,
}

impl Proto {
    pub fn name(&self) -> &'static str {
        match self {
            Proto::Sip(_) => "SIP",
            Proto::Iax2(_) => "IAX2",
            Proto::Rtp(_) => "RTP",
            Proto::Rtcp => "RTCP",
            Proto::Other => "other",
        }
    }
}

/// One UDP datagram, or one SIP message framed out of a TCP stream.
#[derive(Clone, Debug)]
pub struct Message {
    /// The frame that completed it (1-based).
    pub frame: usize,
    /// Capture time since the Unix epoch.
    pub ts: Duration,
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
    pub proto: Proto,
}

/// Counts of what was not a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Records whose link layer carries no IP (ARP, STP, ...).
    pub not_ip: usize,
    /// IP packets of other protocols (ICMP, VRRP, ...).
    pub other_ip: usize,
    /// Fragments held until the rest of their packet arrived.
    pub fragments: usize,
    /// IP packets rebuilt from fragments.
    pub reassembled: usize,
    /// TCP segments that carried only already-seen bytes.
    pub tcp_retransmissions: usize,
    /// TCP segments (with or without payload), all streams.
    pub tcp_segments: usize,
    /// The IP packets counted in `other_ip`, by IP protocol number (SCTP 132,
    /// GRE 47, IP-in-IP 4 ...): what a replay reports as not drivable.
    pub other_ip_protocols: BTreeMap<u8, usize>,
    /// TCP directions that open with an HTTP upgrade to WebSocket (SIP over
    /// WebSocket, RFC 7118): followed no further.
    pub websocket_streams: usize,
}

/// A capture read into messages.
#[derive(Clone, Debug)]
pub struct Capture {
    pub format: FileFormat,
    /// Packet records in the file.
    pub records: usize,
    pub messages: Vec<Message>,
    pub problems: Vec<Problem>,
    pub skipped: Skipped,
    /// Time of the first and last record read.
    pub span: Option<(Duration, Duration)>,
}

impl Capture {
    /// Messages of one protocol.
    pub fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Message> + 'a {
        self.messages.iter().filter(move |m| m.proto.name() == name)
    }

    pub fn count(&self, name: &str) -> usize {
        self.of(name).count()
    }

    /// SIP requests by method and responses by `CODE METHOD`, counted.
    pub fn sip_counts(&self) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let (mut req, mut resp) = (BTreeMap::new(), BTreeMap::new());
        for m in &self.messages {
            if let Proto::Sip(s) = &m.proto {
                let map = if s.is_request() { &mut req } else { &mut resp };
                *map.entry(s.label()).or_default() += 1;
            }
        }
        (req, resp)
    }
}

/// Reads a capture file from disk.
pub fn read_file(path: &Path) -> Result<Capture, CaptureError> {
    let bytes = std::fs::read(path).map_err(|source| CaptureError::Io { path: path.display().to_string(), source })?;
    read(&bytes)
}

/// Reads the bytes of a pcap or pcapng file.
pub fn read(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let mut problems = Vec::new();
    let mut messages = Vec::new();
    let mut skipped = Skipped::default();
    let mut defrag = ip::Defrag::default();
    let mut streams = tcp::Streams::default();
    let mut records = 0;
    let mut span: Option<(Duration, Duration)> = None;
    let mut record_problems = Vec::new();
    let format = file::read_records(bytes, &mut record_problems, |r| {
        records += 1;
        span = Some(match span {
            None => (r.ts, r.ts),
            Some((a, b)) => (a.min(r.ts), b.max(r.ts)),
        });
        let data = match link::strip(r.link, &r.data) {
            link::Link::Ip(d) => d,
            link::Link::NotIp => {
                skipped.not_ip += 1;
                return;
            }
            link::Link::Broken(why) => {
                problems.push(Problem::new(r.frame, why));
                return;
            }
        };
        let packet = match defrag.packet(r.ts, data) {
            ip::IpResult::Packet(p) => p,
            ip::IpResult::Pending => {
                skipped.fragments += 1;
                return;
            }
            ip::IpResult::Broken(why) => {
                problems.push(Problem::new(r.frame, why));
                return;
            }
        };
        if packet.fragments > 1 {
            skipped.reassembled += 1;
        }
        for why in defrag.dropped.drain(..) {
            problems.push(Problem::new(r.frame, why));
        }
        match packet.proto {
            ip::PROTO_UDP => match ip::udp(&packet.payload) {
                Ok((sport, dport, body)) => messages.push(Message {
                    frame: r.frame,
                    ts: r.ts,
                    transport: Transport::Udp,
                    src: SocketAddr::new(packet.src, sport),
                    dst: SocketAddr::new(packet.dst, dport),
                    payload: body.to_vec(),
                    proto: Proto::Other,
                }),
                Err(why) => problems.push(Problem::new(r.frame, why)),
            },
            ip::PROTO_TCP => match ip::tcp(&packet.payload) {
                Ok(seg) => {
                    skipped.tcp_segments += 1;
                    let src = SocketAddr::new(packet.src, seg.src_port);
                    let dst = SocketAddr::new(packet.dst, seg.dst_port);
                    let out = streams.segment(src, dst, &seg);
                    if out.retransmitted > 0 && out.retransmitted == seg.payload.len() {
                        skipped.tcp_retransmissions += 1;
                    }
                    for p in out.problems {
                        problems.push(Problem::new(r.frame, p));
                    }
                    for m in out.messages {
                        messages.push(Message {
                            frame: r.frame,
                            ts: r.ts,
                            transport: Transport::Tcp,
                            src,
                            dst,
                            payload: m,
                            proto: Proto::Other,
                        });
                    }
                }
                Err(why) => problems.push(Problem::new(r.frame, why)),
            },
            other => {
                skipped.other_ip += 1;
                *skipped.other_ip_protocols.entry(other).or_default() += 1;
            }
        }
    })?;
    skipped.websocket_streams = streams.websocket_streams;
    for p in streams.leftovers() {
        problems.push(Problem::new(records, p));
    }
    problems.extend(record_problems);
    problems.sort_by_key(|p| p.frame);
    flows::classify(&mut messages, &mut problems);
    Ok(Capture { format, records, messages, problems, skipped, span })
}
