//! RTP, RTCP and RFC 4733 parsing against public captures of real stacks
//! (SIPp, Asterisk, FreeSWITCH), with the facts below established with
//! tshark 4.0 and, when tshark is installed, cross-checked live per packet:
//!
//! ```text
//! tshark -r FILE -d udp.port==PORT,rtp -T fields -e rtp.p_type -e rtp.seq -e rtp.timestamp -e rtp.ssrc -e rtp.marker
//! tshark -r FILE -d udp.port==PORT,rtp -q -z rtp,streams     # lost, max jitter
//! tshark -r FILE -T fields -e rtcp.pt -e rtcp.senderssrc ... # RTCP
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use switch::rtp::{
    event_char, is_rtcp, parse_rtcp, RtcpPacket, RtpPacket, RtpReceiverStats, TelephoneEvent, RTCP_RR, RTCP_SDES,
    RTCP_SR, SDES_CNAME,
};

/// The public captures kept in the repository (captures/README.md).
const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../captures/");

fn capture(name: &str) -> PathBuf {
    let path = PathBuf::from(CAPTURES).join(name);
    assert!(path.exists(), "capture {} is missing (expected under {CAPTURES})", path.display());
    path
}

/// A UDP datagram from a capture: arrival time since the capture's epoch,
/// destination port and payload.
struct Datagram {
    arrival: Duration,
    dst_port: u16,
    payload: Vec<u8>,
}

fn udp_datagrams(name: &str) -> Vec<Datagram> {
    let path = capture(name);
    let file = std::fs::File::open(&path).expect("open capture");
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("pcap header");
    let datalink = reader.header().datalink;
    let mut out = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("pcap record");
        // Two of these captures are Linux "any"-interface (cooked) captures.
        let sliced = match datalink {
            pcap_file::DataLink::ETHERNET => etherparse::SlicedPacket::from_ethernet(&packet.data),
            // etherparse refuses SLL headers of loopback devices (ARPHRD 772,
            // as in the ndpi capture), so skip the fixed 16-byte SLL header and
            // start at IP, which is all these captures carry.
            pcap_file::DataLink::LINUX_SLL => {
                assert_eq!(packet.data.get(14..16), Some(&[0x08, 0x00][..]), "{name}: SLL protocol is not IPv4");
                etherparse::SlicedPacket::from_ip(&packet.data[16..])
            }
            other => panic!("{name}: unexpected link type {other:?}"),
        }
        .expect("link/ip/udp");
        if let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport {
            out.push(Datagram {
                arrival: packet.timestamp,
                dst_port: udp.destination_port(),
                payload: udp.payload().to_vec(),
            });
        }
    }
    out
}

/// (payload type, sequence, timestamp, ssrc, marker) of a packet, as tshark lists them.
type Row = (u8, u16, u32, u32, bool);

fn row(p: &RtpPacket) -> Row {
    let h = &p.header;
    (h.payload_type, h.sequence, h.timestamp, h.ssrc, h.marker)
}

/// tshark's view of the same packets, or None when tshark is not installed.
fn tshark_rows(name: &str, port: u16) -> Option<Vec<Row>> {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(capture(name))
        .args(["-d", &format!("udp.port=={port},rtp"), "-T", "fields", "-E", "separator=;"])
        .args(["-e", "rtp.p_type", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.ssrc", "-e", "rtp.marker"])
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("tshark failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => {
            println!("SKIP live cross-check: tshark not installed");
            return None;
        }
    };
    let text = String::from_utf8(output.stdout).expect("tshark output is UTF-8");
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let c: Vec<&str> = line.split(';').collect();
            let ssrc = u32::from_str_radix(c[3].trim_start_matches("0x"), 16).expect("ssrc");
            let marker = matches!(c[4], "1" | "True");
            (c[0].parse().expect("pt"), c[1].parse().expect("seq"), c[2].parse().expect("ts"), ssrc, marker)
        })
        .collect();
    Some(rows)
}

/// What a capture's single RTP stream looks like through our parser and stats.
struct Stream {
    rows: Vec<Row>,
    payload_lens: Vec<usize>,
    payloads: Vec<Vec<u8>>,
    stats: RtpReceiverStats,
    max_jitter: Duration,
}

fn rtp_stream(name: &str, port: u16) -> Stream {
    let mut stream = Stream {
        rows: vec![],
        payload_lens: vec![],
        payloads: vec![],
        stats: RtpReceiverStats::new(8000),
        max_jitter: Duration::ZERO,
    };
    for d in udp_datagrams(name) {
        assert_eq!(d.dst_port, port, "{name}: only the RTP stream is expected");
        assert!(!is_rtcp(&d.payload), "{name}: RTP taken for RTCP");
        let p = RtpPacket::parse(&d.payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((p.extension, p.padding, p.header.csrc_count), (None, 0, 0));
        stream.stats.on_packet(&p.header, d.arrival);
        stream.max_jitter = stream.max_jitter.max(stream.stats.jitter_duration());
        stream.rows.push(row(&p));
        stream.payload_lens.push(p.payload.len());
        stream.payloads.push(p.payload.to_vec());
    }
    if let Some(tshark) = tshark_rows(name, port) {
        assert_eq!(stream.rows, tshark, "{name}: our parse differs from tshark's");
    }
    stream
}

fn assert_close(ours: Duration, tshark_ms: f64, what: &str) {
    let diff = (ours.as_secs_f64() * 1000.0 - tshark_ms).abs();
    assert!(diff < 0.005, "{what}: ours {ours:?}, tshark {tshark_ms} ms");
}

#[test]
fn sipp_g711a_is_one_gapless_pcma_stream() {
    let s = rtp_stream("sipp__g711a.pcap", 2006);
    assert_eq!(s.rows.len(), 236);
    assert!(s.rows.iter().all(|r| r.0 == 8 && r.3 == 0xdee0_ee8f));
    // 30 ms frames: 240 bytes of A-law, timestamp step 240, marker on the first only.
    assert_eq!(s.rows[0], (8, 59133, 240, 0xdee0_ee8f, true));
    assert!(s.rows[1..].iter().all(|r| !r.4));
    assert!(s.payload_lens.iter().all(|n| *n == 240));
    for (i, r) in s.rows.iter().enumerate() {
        assert_eq!((r.1, r.2), (59133 + i as u16, 240 * (i as u32 + 1)), "packet {i}");
    }
    // tshark -z rtp,streams: 236 packets, 0 lost, max jitter 0.829 ms.
    assert_eq!((s.stats.received(), s.stats.expected(), s.stats.lost(), s.stats.duplicates()), (236, 236, 0, 0));
    assert_eq!(s.stats.extended_max_seq(), 59368);
    assert_close(s.max_jitter, 0.829, "sipp__g711a max jitter");
}

#[test]
fn asterisk_40ms_alaw_has_320_byte_frames() {
    let mut s = rtp_stream("asterisk-testsuite__40msalaw.pcap", 18390);
    assert_eq!(s.rows.len(), 826);
    assert_eq!(s.rows[0], (8, 46552, 3_313_572_782, 0xd500_ca81, false));
    assert_eq!(s.rows[825], (8, 47377, 3_313_836_782, 0xd500_ca81, false));
    assert!(s.payload_lens.iter().all(|n| *n == 320));
    for w in s.rows.windows(2) {
        assert_eq!((w[1].1.wrapping_sub(w[0].1), w[1].2.wrapping_sub(w[0].2)), (1, 320));
    }
    // tshark -z rtp,streams: 826 packets, 0 lost, max jitter 0.191 ms.
    assert_eq!((s.stats.received(), s.stats.lost(), s.stats.duplicates()), (826, 0, 0));
    assert_close(s.max_jitter, 0.191, "40msalaw max jitter");
    let block = s.stats.report_block(0xd500_ca81);
    assert_eq!((block.fraction_lost, block.cumulative_lost, block.highest_sequence), (0, 0, 47377));
}

/// A SIPp RFC 4733 digit: eight packets growing by 320 ticks (40 ms) from a
/// shared timestamp, the end packet sent three times.
fn check_dtmf(name: &str, first_seq: u16, timestamp: u32, digit: char) {
    let s = rtp_stream(name, 10000);
    assert_eq!(s.rows.len(), 10);
    let events: Vec<TelephoneEvent> =
        s.payloads.iter().map(|p| TelephoneEvent::parse(p).unwrap_or_else(|e| panic!("{name}: {e}"))).collect();
    for (i, (r, e)) in s.rows.iter().zip(&events).enumerate() {
        let n = i.min(7);
        assert_eq!(*r, (101, first_seq + n as u16, timestamp, 0x0e05_384e, i == 0), "{name} packet {i}");
        assert_eq!(event_char(e.event), Some(digit));
        assert_eq!((e.end, e.volume, e.duration), (i >= 7, 10, 320 * n as u16), "{name} packet {i}");
    }
    // The repeated end packets are duplicates, not extra packets or loss.
    assert_eq!((s.stats.received(), s.stats.expected(), s.stats.lost(), s.stats.duplicates()), (8, 8, 0, 2));
}

#[test]
fn sipp_dtmf_digit_1() {
    check_dtmf("sipp__dtmf_2833_1.pcap", 7984, 13280, '1');
}

#[test]
fn sipp_dtmf_pound() {
    check_dtmf("sipp__dtmf_2833_pound.pcap", 8436, 92640, '#');
}

#[test]
fn freeswitch_compound_rtcp() {
    const SR_SSRC: u32 = 0x5d93_1534;
    const RR_SSRC: u32 = 0x0193_2db4;
    let datagrams = udp_datagrams("ndpi__rtcp_multiple_pkts_in_the_same_datagram.pcap");
    assert_eq!(datagrams.len(), 5);
    let mut types = Vec::new();
    for (i, d) in datagrams.iter().enumerate() {
        assert!(is_rtcp(&d.payload), "datagram {i}");
        let packets = parse_rtcp(&d.payload).unwrap_or_else(|e| panic!("datagram {i}: {e}"));
        types.push(packets.iter().map(RtcpPacket::packet_type).collect::<Vec<_>>());
        // Every compound packet carries its sender's CNAME (the hex SSRC)
        // and a NOTE advertising ClueCon.
        let RtcpPacket::SourceDescription(chunks) = &packets[1] else { panic!("datagram {i}: {packets:?}") };
        let (ssrc, cname) = if i % 2 == 0 { (SR_SSRC, &b"5d931534"[..]) } else { (RR_SSRC, &b"1932db4"[..]) };
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].ssrc, chunks[0].cname()), (ssrc, Some(cname)));
        let kinds: Vec<u8> = chunks[0].items.iter().map(|it| it.kind).collect();
        assert_eq!(kinds, [SDES_CNAME, 7]);
        assert_eq!(chunks[0].items[1].value, b"FreeSWITCH.org -- Come to ClueCon.com");
    }
    // tshark -e rtcp.pt: SR+SDES from one side, RR+SDES from the other, alternating.
    let sr = vec![RTCP_SR, RTCP_SDES];
    let rr = vec![RTCP_RR, RTCP_SDES];
    assert_eq!(types, [sr.clone(), rr.clone(), sr.clone(), rr, sr]);

    let first = parse_rtcp(&datagrams[0].payload).expect("parses");
    let RtcpPacket::SenderReport(report) = &first[0] else { panic!("{first:?}") };
    assert_eq!(report.ssrc, SR_SSRC);
    assert_eq!(report.info.ntp_timestamp, (3_711_615_344u64 << 32) | 1_298_222_584);
    assert_eq!((report.info.rtp_timestamp, report.info.packet_count, report.info.octet_count), (32000, 200, 32000));
    assert_eq!(report.reports.len(), 1);
    assert_eq!(report.reports[0].ssrc, 0);

    let fourth = parse_rtcp(&datagrams[3].payload).expect("parses");
    let RtcpPacket::ReceiverReport(report) = &fourth[0] else { panic!("{fourth:?}") };
    assert_eq!(report.ssrc, RR_SSRC);
    let block = report.reports[0];
    assert_eq!((block.ssrc, block.fraction_lost, block.cumulative_lost), (SR_SSRC, 0, 1));
    assert_eq!((block.highest_sequence, block.jitter), (49035, 6));
    assert_eq!((block.last_sr, block.delay_since_last_sr), (3_245_362_529, 263_452));
    // LSR is the middle of the *first* SR's timestamp: the third SR arrived
    // only 8 ms before this RR was sent, too late for it.
    assert_eq!(switch::rtp::ntp_middle(report_ntp(&datagrams[0])), block.last_sr);
    assert_ne!(switch::rtp::ntp_middle(report_ntp(&datagrams[2])), block.last_sr);
    // The round trip RFC 3550 6.4.1 derives: arrival - LSR - DLSR, with the
    // SR's send time taken as its capture time (same host): about 8 ms.
    let dlsr = Duration::from_secs_f64(f64::from(block.delay_since_last_sr) / 65536.0);
    let rtt = datagrams[3].arrival - datagrams[0].arrival - dlsr;
    assert!(rtt > Duration::from_millis(7) && rtt < Duration::from_millis(9), "{rtt:?}");
    let third = parse_rtcp(&datagrams[2].payload).expect("parses");
    let RtcpPacket::SenderReport(sr) = &third[0] else { panic!("{third:?}") };
    assert_eq!((sr.info.packet_count, sr.info.octet_count), (401, 64160));

    if let Some(tshark) = tshark_rtcp_types("ndpi__rtcp_multiple_pkts_in_the_same_datagram.pcap") {
        assert_eq!(types, tshark);
    }
}

fn tshark_rtcp_types(name: &str) -> Option<Vec<Vec<u8>>> {
    let output = Command::new("tshark")
        .arg("-r")
        .arg(capture(name))
        .args(["-T", "fields", "-E", "aggregator=,", "-e", "rtcp.pt"])
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("tshark failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => return None,
    };
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(',').map(|t| t.trim().parse().expect("pt")).collect())
            .collect(),
    )
}

fn report_ntp(d: &Datagram) -> u64 {
    match parse_rtcp(&d.payload).expect("parses").first() {
        Some(RtcpPacket::SenderReport(sr)) => sr.info.ntp_timestamp,
        other => panic!("not an SR: {other:?}"),
    }
}
