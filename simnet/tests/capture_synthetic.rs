//! The capture reader on crafted files: every link type, IPv4/IPv6
//! fragments, TCP reordering and retransmission, and broken records.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};
use simnet::capture::{self, Proto, Transport};

const A4: [u8; 4] = [10, 0, 0, 1];
const B4: [u8; 4] = [10, 0, 0, 2];
const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn options(body_len: usize) -> Vec<u8> {
    let body = "x".repeat(body_len);
    format!(
        "OPTIONS sip:b@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(A4, B4, 64).udp(5060, 5060).write(&mut out, payload).unwrap();
    out
}

fn udp6(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(A6, B6, 64).udp(5060, 5060).write(&mut out, payload).unwrap();
    out
}

fn pcap(link: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let header = PcapHeader {
        datalink: DataLink::from(link),
        ts_resolution: TsResolution::MicroSecond,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_secs(1_000_000) + Duration::from_millis(i as u64 * 10);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f)).unwrap();
    }
    w.into_writer()
}

fn one_sip(bytes: &[u8]) -> capture::Message {
    let c = capture::read(bytes).unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let sip: Vec<_> = c.of("SIP").cloned().collect();
    assert_eq!(sip.len(), 1, "{:?}", c.messages);
    sip[0].clone()
}

#[test]
fn every_link_type() {
    let ip4 = udp4(&options(10));
    let ip6 = udp6(&options(10));
    let mut eth_vlan = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00];
    eth_vlan.extend_from_slice(&ip4);
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x86, 0xdd];
    sll.extend_from_slice(&ip6);
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    sll2.extend_from_slice(&ip4);
    let mut null_le = 2u32.to_le_bytes().to_vec();
    null_le.extend_from_slice(&ip4);
    let mut null_be6 = 30u32.to_be_bytes().to_vec();
    null_be6.extend_from_slice(&ip6);
    let mut loop6 = 24u32.to_be_bytes().to_vec();
    loop6.extend_from_slice(&ip6);
    let cases: Vec<(u32, Vec<u8>, bool)> = vec![
        (1, eth_vlan, false),
        (101, ip4.clone(), false),
        (101, ip6.clone(), true),
        (228, ip4.clone(), false),
        (229, ip6.clone(), true),
        (113, sll, true),
        (276, sll2, false),
        (0, null_le, false),
        (0, null_be6, true),
        (108, loop6, true),
        (12, ip4, false),
    ];
    for (link, frame, v6) in cases {
        let m = one_sip(&pcap(link, &[frame]));
        assert_eq!(m.src.is_ipv6(), v6, "link {link}");
        assert_eq!(m.transport, Transport::Udp);
        let Proto::Sip(s) = &m.proto else { panic!() };
        assert_eq!(s.call_id.as_deref(), Some("c1"), "link {link}");
    }
}

/// Splits an IPv4 packet into fragments of `size` payload bytes (a multiple of 8).
fn fragment4(packet: &[u8], size: usize) -> Vec<Vec<u8>> {
    let hlen = usize::from(packet[0] & 0x0f) * 4;
    let payload = &packet[hlen..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + size).min(payload.len());
        let mut h = packet[..hlen].to_vec();
        let total = (hlen + end - off) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        let more = if end < payload.len() { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&(more | (off / 8) as u16).to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        h.extend_from_slice(&payload[off..end]);
        out.push(h);
        off = end;
    }
    out
}

fn fragment6(packet: &[u8], size: usize) -> Vec<Vec<u8>> {
    let payload = &packet[40..];
    let next = packet[6];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + size).min(payload.len());
        let mut h = packet[..40].to_vec();
        h[6] = 44;
        h[4..6].copy_from_slice(&((8 + end - off) as u16).to_be_bytes());
        let more = u16::from(end < payload.len());
        h.extend_from_slice(&[next, 0]);
        h.extend_from_slice(&((off as u16) | more).to_be_bytes());
        h.extend_from_slice(&0xabcdu32.to_be_bytes());
        h.extend_from_slice(&payload[off..end]);
        out.push(h);
        off = end;
    }
    out
}

#[test]
fn ipv4_and_ipv6_fragments_are_reassembled_in_any_order() {
    let msg = options(3000);
    let mut frags = fragment4(&udp4(&msg), 1480);
    assert_eq!(frags.len(), 3);
    frags.swap(0, 2);
    let c = capture::read(&pcap(101, &frags)).unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.count("SIP"), 1);
    assert_eq!(c.messages[0].payload, msg);
    assert_eq!(c.messages[0].frame, 3, "the frame that completed it");
    assert_eq!((c.skipped.fragments, c.skipped.reassembled), (2, 1));

    let mut frags = fragment6(&udp6(&msg), 1232);
    frags.reverse();
    let c = capture::read(&pcap(101, &frags)).unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.count("SIP"), 1);
    assert_eq!(c.messages[0].payload, msg);

    // A packet whose last fragment never comes yields nothing and no message.
    let frags = fragment4(&udp4(&msg), 1480);
    let c = capture::read(&pcap(101, &frags[..2])).unwrap();
    assert!(c.messages.is_empty());
}

fn tcp_seg(seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ipv4(A4, B4, 64).tcp(40000, 5060, seq, 65535);
    let b = if syn { b.syn() } else { b.ack(1).psh() };
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn tcp_is_reordered_deduplicated_and_framed_by_content_length() {
    let a = options(5);
    let b = b"SIP/2.0 200 OK\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".to_vec();
    let mut stream = a.clone();
    stream.extend_from_slice(b"\r\n\r\n"); // keep-alive between messages
    stream.extend_from_slice(&b);
    stream.extend_from_slice(&a);
    let isn = 1000u32;
    let s = |from: usize, to: usize| tcp_seg(isn + 1 + from as u32, false, &stream[from..to]);
    let n = stream.len();
    let frames = vec![
        tcp_seg(isn, true, &[]),
        s(0, 30),
        s(60, 120), // early: held
        s(30, 60),  // fills the hole
        s(30, 60),  // retransmission
        s(120, n),
    ];
    let c = capture::read(&pcap(101, &frames)).unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let sip: Vec<_> = c.of("SIP").collect();
    assert_eq!(sip.len(), 3);
    assert!(sip.iter().all(|m| m.transport == Transport::Tcp));
    assert_eq!(sip[0].payload, a);
    assert_eq!(sip[1].payload, b);
    assert_eq!(sip[2].payload, a);
    assert_eq!(c.skipped.tcp_retransmissions, 1);
}

#[test]
fn tcp_that_is_not_sip_is_ignored() {
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let c = capture::read(&pcap(101, &[tcp_seg(1, false, http)])).unwrap();
    assert!(c.messages.is_empty() && c.problems.is_empty());
}

#[test]
fn broken_records_are_reported_by_frame_and_skipped() {
    let good = udp4(&options(3));
    let mut frames = vec![
        vec![0x02, 0x00, 0x00], // 1: Ethernet header cut short
        good.clone(),           // 2: fine (but on Ethernet link: invalid)
        vec![0x45, 0, 0, 20],   // 3
    ];
    // On the Ethernet link type everything but a proper frame is broken.
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x08, 0x00]);
    eth.extend_from_slice(&good);
    frames[1] = eth;
    let mut ipv4_short = vec![0u8; 12];
    ipv4_short.extend_from_slice(&[0x08, 0x00]);
    ipv4_short.extend_from_slice(&good[..30]); // IP says longer than the record
    frames[2] = ipv4_short;
    let mut bytes = pcap(1, &frames);
    // 4: a record header promising more bytes than the file has.
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 100, 0, 0, 0, 1, 2, 3]);
    let c = capture::read(&bytes).unwrap();
    assert_eq!(c.count("SIP"), 1);
    let frames: Vec<usize> = c.problems.iter().map(|p| p.frame).collect();
    assert_eq!(frames, vec![1, 3, 4], "{:?}", c.problems);
    assert!(c.problems[1].message.contains("snap length"), "{}", c.problems[1]);
    assert!(c.problems[2].message.contains("cut short"), "{}", c.problems[2]);

    // An unsupported link type is reported per record, not fatal.
    let c = capture::read(&pcap(147, std::slice::from_ref(&good))).unwrap();
    assert_eq!(c.problems.len(), 1);
    assert!(c.problems[0].message.contains("unsupported link type 147"));

    assert!(capture::read(b"hello world").is_err());
    assert!(capture::read(b"").is_err());
}

#[test]
fn pcapng_timestamp_resolution_and_broken_blocks() {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0xffff,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock { linktype: DataLink::RAW, snaplen: 0xffff, options: vec![] })
        .unwrap();
    let frame = udp4(&options(1));
    // pcap-file writes the Duration's nanoseconds as the raw count of interface units.
    let raw_ns = 1_700_000_000_123_456_789u64;
    let raw_us = 1_700_000_000_123_456u64;
    for (iface, raw) in [(0u32, raw_ns), (1, raw_us)] {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: iface,
            timestamp: Duration::from_nanos(raw),
            original_len: frame.len() as u32,
            data: Cow::Borrowed(&frame),
            options: vec![],
        })
        .unwrap();
    }
    let mut bytes = w.into_inner();
    // A packet block whose captured length overruns it: skipped by its own length.
    let mut bad = Vec::new();
    bad.extend_from_slice(&6u32.to_le_bytes());
    bad.extend_from_slice(&32u32.to_le_bytes());
    bad.extend_from_slice(&[0u8; 12]);
    bad.extend_from_slice(&999u32.to_le_bytes());
    bad.extend_from_slice(&[0u8; 4]);
    bad.extend_from_slice(&32u32.to_le_bytes());
    bytes.extend_from_slice(&bad);
    let c = capture::read(&bytes).unwrap();
    let ts: Vec<Duration> = c.messages.iter().map(|m| m.ts).collect();
    assert_eq!(ts, vec![Duration::new(1_700_000_000, 123_456_789), Duration::new(1_700_000_000, 123_456_000)]);
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert_eq!(c.problems[0].frame, 3);
    let src: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    assert_eq!(c.messages[0].src, src);
}
