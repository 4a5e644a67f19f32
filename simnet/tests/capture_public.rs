//! The capture reader on every capture in the repository's `captures/` (the
//! public third-party ones and the simulator's own; captures/README.md says
//! where each comes from). A capture added there without expected counts
//! fails the sweep.
//!
//! Expected numbers are tshark's (TShark 4.0, `-z io,phs`, and
//! `--enable-heuristic rtp_udp` for RTP without SDP), as listed in the
//! public catalogue's README the captures were copied from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use simnet::capture::{self, Capture, FlowProto, Proto, RoleRequest, Transport};
use switch::iax2::frame::Frame;

fn public_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures");
    assert!(dir.is_dir(), "{} is part of the repository", dir.display());
    Some(dir)
}

fn read(name: &str) -> Option<Capture> {
    let path = public_dir()?.join(name);
    Some(capture::read_file(&path).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// (file, records, SIP, IAX2, RTP, RTCP)
const EXPECTED: &[(&str, usize, usize, usize, usize, usize)] = &[
    // Recorded here with Asterisk 20 (captures/record-asterisk.sh): IAX2 only, as tshark counts.
    ("asterisk-switch__double-registration-call.pcap", 845, 0, 845, 0, 0),
    ("asterisk-switch__wrong-secret.pcap", 25, 0, 25, 0, 0),
    ("asterisk__double-registration-call.pcap", 829, 0, 829, 0, 0),
    ("asterisk__wrong-secret.pcap", 17, 0, 17, 0, 0),
    ("asterisk-testsuite__40msalaw.pcap", 826, 0, 0, 826, 0),
    // tshark's RTCP heuristic counts 26: it refuses the 2 compound packets of
    // the relay leg (frames 531, 2646) for 2 stray octets after the SDES,
    // which it accepts on the SDP-announced leg (frames 529, 2644).
    ("heplify__rtp_rtcp_sip_ipv4_udp.pcap", 4269, 14, 0, 2884, 28),
    ("heplify__sip_ipv4_tcp.pcap", 84, 7, 0, 66, 2),
    ("heplify__sip_ipv4_tcp_retrans.pcap", 196, 8, 0, 0, 0),
    ("heplify__sip_ipv6_udp.pcap", 6, 6, 0, 0, 0),
    // Wireshark claims 2 frames as SIP by port; they are HTTP.
    ("ndpi__http_on_sip_port.pcap", 4, 0, 0, 0, 0),
    ("ndpi__iax.pcap", 50, 0, 50, 0, 0),
    ("ndpi__rtcp_multiple_pkts_in_the_same_datagram.pcap", 5, 0, 0, 0, 5),
    ("ndpi__sip_hello.pcapng", 30, 8, 0, 0, 0),
    // The simulator's own (captures/README.md), not a tshark count: 120 IAX2
    // datagrams, the figure its README gives.
    ("simnet__register-md5-call.pcap", 120, 0, 120, 0, 0),
    ("sip3__BootstrapTest.pcap", 1, 1, 0, 0, 0),
    ("sipp__dtmf_2833_1.pcap", 10, 0, 0, 10, 0),
    ("sipp__dtmf_2833_pound.pcap", 10, 0, 0, 10, 0),
    ("sipp__g711a.pcap", 236, 0, 0, 236, 0),
    ("sngrep__aaa.pcap", 691, 81, 0, 9, 1),
    ("zeek__invalid-content-length.pcap", 2, 2, 0, 0, 0),
    ("zeek__sip-junk-before-request.pcap", 2, 1, 0, 0, 0),
];

#[test]
fn every_public_capture_reads_with_tsharks_counts() {
    let Some(dir) = public_dir() else { return };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    let listed: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    for name in &names {
        assert!(listed.contains(&name.as_str()), "{name} is new: add its expected counts");
    }
    for &(name, records, sip, iax2, rtp, rtcp) in EXPECTED {
        let Some(c) = read(name) else { return };
        let got = (c.records, c.count("SIP"), c.count("IAX2"), c.count("RTP"), c.count("RTCP"));
        assert_eq!(got, (records, sip, iax2, rtp, rtcp), "{name}: (records, SIP, IAX2, RTP, RTCP)");
        // The summary renders for every file.
        let flows = capture::find_flows(&c);
        let roles = [
            capture::choose_role(&c, FlowProto::Iax2, RoleRequest::Auto),
            capture::choose_role(&c, FlowProto::Sip, RoleRequest::Auto),
        ];
        let text = capture::summarize(&c, &flows, &roles).text;
        assert!(text.contains(&format!("records: {records}")), "{name}:\n{text}");
    }
}

#[test]
fn sngrep_aaa_sip_requests_and_responses() {
    let Some(c) = read("sngrep__aaa.pcap") else { return };
    let (req, resp) = c.sip_counts();
    assert_eq!(req, counts(&[("ACK", 7), ("CANCEL", 11), ("INVITE", 11), ("REGISTER", 18)]));
    assert_eq!(
        resp,
        counts(&[
            ("100 INVITE", 3),
            ("100 REGISTER", 4),
            ("183 INVITE", 1),
            ("200 REGISTER", 3),
            ("401 REGISTER", 14),
            ("403 INVITE", 2),
            ("403 REGISTER", 1),
            ("407 INVITE", 3),
            ("408 CANCEL", 1),
            ("408 INVITE", 1),
            ("480 INVITE", 1),
        ])
    );
    let challenges = c.messages.iter().filter(|m| matches!(&m.proto, Proto::Sip(s) if s.has_challenge)).count();
    assert_eq!(challenges, 17);
    let authorized = c.messages.iter().filter(|m| matches!(&m.proto, Proto::Sip(s) if s.has_auth)).count();
    assert_eq!(authorized, 12);
    let sdp = c.messages.iter().filter(|m| matches!(&m.proto, Proto::Sip(s) if !s.sdp_media.is_empty())).count();
    assert_eq!(sdp, 12);
    // Only the SIP part matters; the LAN noise (DNS, NetBIOS, ARP, FTP) is skipped quietly.
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(c.skipped.not_ip, 44);
}

#[test]
fn heplify_tcp_call_is_seven_sip_messages_over_tcp() {
    let Some(c) = read("heplify__sip_ipv4_tcp.pcap") else { return };
    let sip: Vec<_> = c.of("SIP").collect();
    assert_eq!(sip.len(), 7);
    assert!(sip.iter().all(|m| m.transport == Transport::Tcp));
    let (req, resp) = c.sip_counts();
    assert_eq!(req, counts(&[("ACK", 1), ("BYE", 1), ("INVITE", 1)]));
    assert_eq!(resp, counts(&[("100 INVITE", 1), ("180 INVITE", 1), ("200 BYE", 1), ("200 INVITE", 1)]));
    let pts: BTreeMap<u8, usize> = c.of("RTP").fold(BTreeMap::new(), |mut m, msg| {
        if let Proto::Rtp(h) = &msg.proto {
            *m.entry(h.payload_type).or_default() += 1;
        }
        m
    });
    assert_eq!(pts, BTreeMap::from([(8, 60), (13, 6)]));
}

#[test]
fn sll_capture_has_register_over_udp_and_tcp_with_a_retransmission() {
    let Some(c) = read("heplify__sip_ipv4_tcp_retrans.pcap") else { return };
    let by_transport = |t: Transport| c.of("SIP").filter(|m| m.transport == t).count();
    assert_eq!((by_transport(Transport::Udp), by_transport(Transport::Tcp)), (4, 4));
    let (req, resp) = c.sip_counts();
    assert_eq!(req, counts(&[("REGISTER", 4)]));
    assert_eq!(resp, counts(&[("200 REGISTER", 2), ("401 REGISTER", 2)]));
    assert!(c.skipped.tcp_retransmissions >= 1);
    assert!(matches!(c.format, capture::FileFormat::Pcap { link: 113, .. }));
}

#[test]
fn ndpi_iax_has_ten_full_and_forty_mini_frames_and_the_switch_answers_new() {
    let Some(c) = read("ndpi__iax.pcap") else { return };
    let full = c.messages.iter().filter(|m| matches!(m.proto, Proto::Iax2(Frame::Full(_)))).count();
    let mini = c.messages.iter().filter(|m| matches!(m.proto, Proto::Iax2(Frame::Mini(_)))).count();
    assert_eq!((full, mini), (10, 40));
    let role = capture::choose_role(&c, FlowProto::Iax2, RoleRequest::Auto).unwrap();
    assert_eq!(role.switch, "192.168.2.120:4566".parse().unwrap());
    assert_eq!(role.remotes, vec!["82.110.36.84:4569".parse().unwrap()]);
    let client = capture::choose_role(&c, FlowProto::Iax2, RoleRequest::Client).unwrap();
    assert_eq!(client.switch, "82.110.36.84:4569".parse().unwrap());
}

#[test]
fn sip_roles() {
    let Some(c) = read("ndpi__sip_hello.pcapng") else { return };
    let role = capture::choose_role(&c, FlowProto::Sip, RoleRequest::Auto).unwrap();
    assert_eq!(role.switch, "10.239.156.235:5060".parse().unwrap());
    let Some(c) = read("sip3__BootstrapTest.pcap") else { return };
    assert!(capture::choose_role(&c, FlowProto::Sip, RoleRequest::Auto).is_err(), "an INVITE nobody answered");
}

#[test]
fn ipv6_and_pcapng_and_crafted_content_lengths() {
    let Some(c) = read("heplify__sip_ipv6_udp.pcap") else { return };
    assert!(c.of("SIP").all(|m| m.src.is_ipv6()));
    let Some(c) = read("zeek__invalid-content-length.pcap") else { return };
    assert_eq!(c.count("SIP"), 2);
    assert_eq!(c.problems.len(), 2, "both invalid Content-Length values are reported");
    assert!(c.problems[0].to_string().starts_with("frame 1: "));
    let Some(c) = read("zeek__sip-junk-before-request.pcap") else { return };
    assert_eq!((c.count("SIP"), c.count("other")), (1, 1));
}
