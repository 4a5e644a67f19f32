//! Replay never panics: on every capture kept in the repository (every file
//! under `captures/`, the public ones with their provenance, in both roles) and on synthetic captures of
//! what it cannot drive, it ends with a verdict, a "not replayable" reason,
//! or a named error (what `cargo xtask replay` turns into exit 0 or 2).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use simnet::capture::{self, RoleRequest};
use simnet::replay::{self, ReplayOptions};

/// What one replay ended with, in words; panics only on a panic.
fn outcome(c: &capture::Capture, name: &str, role: RoleRequest) -> String {
    let opts = ReplayOptions { capture_name: name.into(), role, ..ReplayOptions::default() };
    match replay::replay(c, &opts) {
        Ok(o) => {
            assert!(o.report_md.trim_end().ends_with(&o.counts.line()), "{name}: the report ends with its verdict");
            match o.not_replayable {
                Some(why) => {
                    assert!(!why.is_empty() && o.report_md.contains(&format!("Not replayable: {why}")), "{name}");
                    format!("not replayable: {why}")
                }
                None => o.counts.line(),
            }
        }
        Err(replay::ReplayError::Panicked(why)) => panic!("{name} ({role:?}): the replay panicked: {why}"),
        Err(e) => {
            let why = e.to_string();
            assert!(!why.is_empty(), "{name}: an error names its reason");
            format!("error: {why}")
        }
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn every_kept_file_replays_or_names_why_not() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures");
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    paths.sort();
    let mut replayed = 0;
    for path in paths {
        let name = path.strip_prefix(&dir).unwrap_or(&path).display().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let c = match capture::read(&bytes) {
            Ok(c) => c,
            // Not a capture (README.md, configuration files): replay exits 2 with this reason.
            Err(e) => {
                assert!(!e.to_string().is_empty(), "{name}");
                continue;
            }
        };
        replayed += 1;
        for role in [RoleRequest::Auto, RoleRequest::Client] {
            let said = outcome(&c, &name, role);
            eprintln!("{name} ({role:?}): {said}");
        }
    }
    assert!(replayed > 0, "no capture under {}", dir.display());
}

/// A raw-IP pcap of (ms, packet) records.
fn pcap(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let header =
        PcapHeader { datalink: DataLink::RAW, ts_resolution: TsResolution::MicroSecond, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (ms, packet) in records {
        let ts = Duration::from_secs(1_700_000_000) + Duration::from_millis(*ms);
        w.write_packet(&PcapPacket::new(ts, packet.len() as u32, packet)).unwrap();
    }
    w.into_writer()
}

fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.0, dst.0, 64).udp(src.1, dst.1).write(&mut out, payload).unwrap();
    out
}

fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.0, dst.0, 64).tcp(src.1, dst.1, seq, 65535).write(&mut out, payload).unwrap();
    out
}

/// An IPv4 packet of IP protocol `proto` (GRE, SCTP, IP-in-IP) around `inner`.
fn ip_proto(proto: u8, inner: &[u8]) -> Vec<u8> {
    let len = (20 + inner.len()) as u16;
    let mut h = vec![0x45, 0, (len >> 8) as u8, len as u8, 0, 1, 0, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    let sum = h.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(inner);
    h
}

fn register(from_port: u16, call_id: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:{from_port};branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@10.0.0.2>;tag=a{call_id}\r\nTo: <sip:alice@10.0.0.2>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:alice@10.0.0.1:{from_port}>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn unauthorized(to_port: u16, call_id: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 10.0.0.1:{to_port};branch=z9hG4bK{call_id}\r\n\
         From: <sip:alice@10.0.0.2>;tag=a{call_id}\r\nTo: <sip:alice@10.0.0.2>;tag=s\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

const UA: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];

#[test]
fn two_parties_on_one_address_replay() {
    // Two user agents on one IP (different ports): turmoil refuses two hosts on
    // one address, so they used to panic the replay; now each gets its own.
    let records = vec![
        (0, udp((UA, 5060), (SERVER, 5060), &register(5060, "one"))),
        (5, udp((SERVER, 5060), (UA, 5060), &unauthorized(5060, "one"))),
        (10, udp((UA, 5070), (SERVER, 5060), &register(5070, "two"))),
        (15, udp((SERVER, 5060), (UA, 5070), &unauthorized(5070, "two"))),
    ];
    let c = capture::read(&pcap(&records)).unwrap();
    for role in [RoleRequest::Auto, RoleRequest::Client] {
        let said = outcome(&c, "shared.pcap", role);
        assert!(said.starts_with("replay: exchanges="), "{role:?}: {said}");
    }
    let o = replay::replay(&c, &ReplayOptions::default()).unwrap();
    assert_eq!(o.counts.line(), "replay: exchanges=2 matched=2 diverged=0 missing=0 extra=0", "{}", o.report_md);
}

#[test]
fn sip_over_websocket_is_not_replayable() {
    let upgrade = b"GET / HTTP/1.1\r\nHost: 10.0.0.2\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let switched = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let records = vec![
        (0, tcp((UA, 40000), (SERVER, 443), 1, upgrade)),
        (3, tcp((SERVER, 443), (UA, 40000), 1, switched)),
        // A masked text frame carrying a REGISTER: opaque to this reader.
        (5, tcp((UA, 40000), (SERVER, 443), 1 + upgrade.len() as u32, &[0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0])),
    ];
    let c = capture::read(&pcap(&records)).unwrap();
    assert_eq!(c.skipped.websocket_streams, 2);
    for role in [RoleRequest::Auto, RoleRequest::Client] {
        let said = outcome(&c, "ws.pcap", role);
        assert!(said.contains("not replayable: SIP over WebSocket"), "{said}");
    }
}

#[test]
fn tunnels_and_sctp_are_not_replayable() {
    let inner = udp((UA, 5060), (SERVER, 5060), &register(5060, "gre"));
    let mut gre = vec![0, 0, 0x08, 0x00];
    gre.extend_from_slice(&inner);
    let records = vec![(0, ip_proto(47, &gre)), (1, ip_proto(4, &inner)), (2, ip_proto(132, &[0; 12]))];
    let c = capture::read(&pcap(&records)).unwrap();
    let said = outcome(&c, "tunnels.pcap", RoleRequest::Auto);
    for what in ["IP-in-IP", "GRE", "SCTP"] {
        assert!(said.contains(what), "{what}: {said}");
    }
    // The reasons come in protocol-number order, the same every run.
    assert!(said.find("IP-in-IP") < said.find("GRE") && said.find("GRE") < said.find("SCTP"), "{said}");
}

#[test]
fn garbage_after_a_valid_header_names_its_problems() {
    // A fuzzed capture: valid pcap header, then records of random bytes.
    let mut records = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for k in 0..200u64 {
        let len = 20 + (k as usize * 7) % 300;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        // Half of them as UDP to the SIP and IAX2 ports of random parties.
        if k % 2 == 0 {
            let src = Ipv4Addr::from(x).octets();
            let port = if k % 4 == 0 { 5060 } else { 4569 };
            records.push((k, udp((src, port), (SERVER, port), &bytes)));
        } else {
            records.push((k, bytes));
        }
    }
    let c = capture::read(&pcap(&records)).unwrap();
    for role in [RoleRequest::Auto, RoleRequest::Client] {
        let _ = outcome(&c, "fuzz.pcap", role);
    }
}
