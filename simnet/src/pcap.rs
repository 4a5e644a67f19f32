//! The capture tap: datagrams that go onto the simulated wire, written as
//! Ethernet II + IPv4/IPv6 + UDP frames into a classic pcap file.
//!
//! Timestamps are simulated time since [`EPOCH`]; nothing reads the host clock,
//! so the same seed yields a byte-identical file.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

/// The wall-clock instant simulated time 0 maps to: 2026-01-01T00:00:00Z.
pub const EPOCH_UNIX_SECS: u64 = 1_767_225_600;

/// [`EPOCH_UNIX_SECS`] as a `SystemTime` (for turmoil's builder).
pub fn epoch() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_SECS)
}

/// Default snap length: whole frames (largest UDP datagram plus headers).
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// Which datagrams the tap keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureOptions {
    /// Bytes kept per frame (Ethernet header included); longer frames are truncated.
    pub snaplen: u32,
    /// Keep datagrams sent at or after this sim time...
    pub from: Duration,
    /// ...and strictly before this one (`None`: until the end).
    pub until: Option<Duration>,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions { snaplen: DEFAULT_SNAPLEN, from: Duration::ZERO, until: None }
    }
}

/// Frames recorded so far.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub options: CaptureOptions,
    /// (sim time, orig_len, captured bytes)
    frames: Vec<(Duration, u32, Vec<u8>)>,
    /// Datagrams that could not be framed (too large for an IP packet).
    pub unframed: u64,
}

impl Capture {
    pub fn new(options: CaptureOptions) -> Self {
        Capture { options, frames: Vec::new(), unframed: 0 }
    }

    pub fn in_window(&self, at: Duration) -> bool {
        at >= self.options.from && self.options.until.iter().all(|u| at < *u)
    }

    pub fn record(&mut self, at: Duration, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        if !self.in_window(at) {
            return;
        }
        match frame(src, dst, payload) {
            Some(mut bytes) => {
                let orig_len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                let snap = self.options.snaplen.max(1) as usize;
                bytes.truncate(snap);
                self.frames.push((at, orig_len, bytes));
            }
            None => self.unframed += 1,
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// The pcap file: little-endian, nanosecond timestamps, linktype Ethernet.
    ///
    /// The header's snaplen stays at [`DEFAULT_SNAPLEN`] even when frames are cut
    /// shorter: pcap-file 2 refuses records whose original length exceeds the
    /// header's snaplen, and a snaplen is only an upper bound anyway.
    pub fn to_pcap(&self) -> Vec<u8> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: self.options.snaplen.max(DEFAULT_SNAPLEN),
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::Little,
        };
        let mut writer = match PcapWriter::with_header(Vec::new(), header) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("pcap header: {e}");
                return Vec::new();
            }
        };
        let epoch = Duration::from_secs(EPOCH_UNIX_SECS);
        for (at, orig_len, data) in &self.frames {
            let packet = PcapPacket::new(epoch + *at, *orig_len, data);
            if let Err(e) = writer.write_packet(&packet) {
                tracing::warn!("pcap packet: {e}");
            }
        }
        writer.into_writer()
    }
}

/// A locally administered unicast MAC derived from a host address.
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [0x02, 0x00, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [0x02, o[11], o[12], o[13], o[14], o[15]]
        }
    }
}

/// Builds the Ethernet frame of one UDP datagram; `None` if it cannot be framed.
pub fn frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let eth = PacketBuilder::ethernet2(mac_for(src.ip()), mac_for(dst.ip()));
    let mut out = Vec::with_capacity(payload.len() + 62);
    let result = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            eth.ipv4(s.octets(), d.octets(), 64).udp(src.port(), dst.port()).write(&mut out, payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            eth.ipv6(s.octets(), d.octets(), 64).udp(src.port(), dst.port()).write(&mut out, payload)
        }
        _ => return None,
    };
    result.ok().map(|()| out)
}
