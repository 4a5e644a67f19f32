//! The pcap tap: readable by pcap-file, well-formed for tshark, real source
//! addresses, deterministic bytes, snap length and time window.

mod common;

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use common::{exchange, Exchange, Setup};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::{DataLink, TsResolution};
use simnet::{CaptureOptions, LinkConditions, Network, EPOCH_UNIX_SECS};

struct Frame {
    ts: Duration,
    orig_len: u32,
    data: Vec<u8>,
}

fn read(pcap: &[u8]) -> Vec<Frame> {
    let mut reader = PcapReader::new(pcap).expect("pcap header");
    let header = reader.header();
    assert_eq!(header.datalink, DataLink::ETHERNET);
    assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
    let mut frames = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.expect("pcap record");
        frames.push(Frame { ts: p.timestamp, orig_len: p.orig_len, data: p.data.into_owned() });
    }
    frames
}

fn echo_run(network: Network, capture: CaptureOptions, jitter_ms: u64) -> Exchange {
    exchange(Setup {
        network,
        echo: true,
        count: 50,
        payload_len: 200,
        link: LinkConditions {
            latency: Duration::from_millis(15),
            jitter: Duration::from_millis(jitter_ms),
            ..LinkConditions::default()
        },
        capture: Some(capture),
        ..Setup::default()
    })
}

#[test]
fn frames_carry_real_addresses_ports_and_lengths() {
    for network in [Network::V4, Network::V6] {
        let x = echo_run(network, CaptureOptions::default(), 0);
        let frames = read(&x.world.pcap());
        assert_eq!(frames.len(), 100, "{network}: 50 requests + 50 echoes");
        let (tx, rx) = x.ips;
        let epoch = Duration::from_secs(EPOCH_UNIX_SECS);
        let mut last = Duration::ZERO;
        for f in &frames {
            assert!(f.ts >= epoch && f.ts < epoch + Duration::from_secs(60), "{network}: timestamp {:?}", f.ts);
            assert!(f.ts >= last, "{network}: frames in time order without jitter");
            last = f.ts;
            assert_eq!(f.orig_len as usize, f.data.len());
            let p = SlicedPacket::from_ethernet(&f.data).expect("parses");
            let (src, dst): (IpAddr, IpAddr) = match p.net.expect("ip") {
                NetSlice::Ipv4(ip) => {
                    assert_eq!(network, Network::V4);
                    (ip.header().source_addr().into(), ip.header().destination_addr().into())
                }
                NetSlice::Ipv6(ip) => {
                    assert_eq!(network, Network::V6);
                    (ip.header().source_addr().into(), ip.header().destination_addr().into())
                }
            };
            let Some(TransportSlice::Udp(udp)) = p.transport else { panic!("udp") };
            assert_eq!(udp.payload().len(), 200);
            assert_eq!(udp.length() as usize, 208);
            match (udp.source_port(), udp.destination_port()) {
                (5000, 6000) => assert_eq!((src, dst), (tx, rx), "{network}"),
                (6000, 5000) => assert_eq!((src, dst), (rx, tx), "{network}"),
                ports => panic!("unexpected ports {ports:?}"),
            }
            assert!(!src.is_unspecified());
        }
    }
}

#[test]
fn snaplen_and_time_window_keep_captures_small() {
    let capture =
        CaptureOptions { snaplen: 64, from: Duration::from_millis(5), until: Some(Duration::from_millis(25)) };
    let x = echo_run(Network::V4, capture, 0);
    let frames = read(&x.world.pcap());
    assert!(!frames.is_empty() && frames.len() < 50, "{} frames in a 20 ms window", frames.len());
    let epoch = Duration::from_secs(EPOCH_UNIX_SECS);
    for f in &frames {
        assert_eq!(f.data.len(), 64);
        assert_eq!(f.orig_len, 14 + 20 + 8 + 200);
        assert!(f.ts >= epoch + Duration::from_millis(5) && f.ts < epoch + Duration::from_millis(25));
    }
}

#[test]
fn the_capture_is_byte_identical_for_the_same_seed() {
    let run = |seed| {
        exchange(Setup {
            seed,
            echo: true,
            count: 200,
            link: LinkConditions {
                jitter: Duration::from_millis(30),
                loss: 0.1,
                duplicate: 0.05,
                ..LinkConditions::default()
            },
            capture: Some(CaptureOptions::default()),
            ..Setup::default()
        })
        .world
        .pcap()
    };
    let a = run(5);
    assert!(a.len() > 24 + 300 * 16);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
}

fn tshark() -> Option<&'static str> {
    let ok = Command::new("tshark").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    ok.then_some("tshark")
}

#[test]
fn tshark_reads_the_capture_without_malformed_packets() {
    let Some(tshark) = tshark() else {
        eprintln!("tshark not installed: skipping the tshark check");
        return;
    };
    for network in [Network::V4, Network::V6] {
        let x = echo_run(network, CaptureOptions::default(), 40);
        let pcap = x.world.pcap();
        let path = std::env::temp_dir().join(format!("simnet-test-{}-{network}.pcap", std::process::id()));
        std::fs::write(&path, &pcap).expect("write pcap");
        let run = |args: &[&str]| {
            let out = Command::new(tshark).arg("-r").arg(&path).args(args).output().expect("tshark runs");
            assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let malformed = run(&["-Y", "_ws.malformed"]);
        assert!(malformed.trim().is_empty(), "{network}: malformed packets:\n{malformed}");
        let bad_checksums = run(&[
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-Y",
            "udp.checksum.status == 0 || ip.checksum.status == 0",
        ]);
        assert!(bad_checksums.trim().is_empty(), "{network}: bad checksums:\n{bad_checksums}");
        let ip_filter = match network {
            Network::V4 => "udp && ip",
            Network::V6 => "udp && ipv6",
        };
        let udp = run(&["-Y", ip_filter, "-T", "fields", "-e", "frame.number"]);
        assert_eq!(udp.lines().count(), 100, "{network}: UDP packets seen by tshark");
        if std::env::var_os("SIMNET_KEEP_PCAP").is_none() {
            let _ = std::fs::remove_file(&path);
        }
    }
}
