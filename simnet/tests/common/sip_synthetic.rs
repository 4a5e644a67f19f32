//! The synthetic SIP capture of simnet/tests/replay_sip.rs and
//! simnet/tests/replay_sip_client.rs: a UA registering with digest and
//! calling `echo` through a 407, with RTP and a BYE of the UA.
#![allow(dead_code)]

use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};
use switch::sip::digest;

pub const UA: [u8; 4] = [10, 0, 0, 1];
pub const SWITCH: [u8; 4] = [10, 0, 0, 2];
pub const PASSWORD: &str = "correct horse battery";

/// A SIP message with Content-Length filled in.
pub fn sip(head: &str, body: &str) -> Vec<u8> {
    let head = head.trim().replace('\n', "\r\n");
    format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// The digest response a UA knowing `PASSWORD` gives to `nonce`.
pub fn credentials(method: &str, uri: &str, nonce: &str) -> String {
    let response = digest::response("alice", "switch", PASSWORD, method, uri, nonce, Some(("00000001", "c0ffee")));
    format!(
        "Digest username=\"alice\", realm=\"switch\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", \
         algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc=00000001"
    )
}

pub fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend(std::iter::repeat_n(0xff, 160));
    p
}

/// (ms, from the UA, source port, destination port, payload).
pub type Record = (u64, bool, u16, u16, Vec<u8>);

/// REGISTER/401/REGISTER+auth/200, INVITE/407/ACK/INVITE+auth/100(/180)/200/ACK,
/// 10 RTP packets, BYE/200, as a UA with password `PASSWORD` and a server
/// with realm `switch` would exchange them; `ringing` adds a 180 before the 200.
pub fn conversation(ringing: bool) -> Vec<Record> {
    let via = |b: &str| format!("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{b};rport");
    let reg = |cseq: u32, b: &str, auth: &str| {
        sip(
            &format!(
                "REGISTER sip:10.0.0.2 SIP/2.0\n{}\nMax-Forwards: 70\nFrom: <sip:alice@10.0.0.2>;tag=r1\n\
                 To: <sip:alice@10.0.0.2>\nCall-ID: reg-1@10.0.0.1\nCSeq: {cseq} REGISTER\n\
                 Contact: <sip:alice@10.0.0.1:5060>\nExpires: 3600\n{auth}User-Agent: test-ua",
                via(b)
            ),
            "",
        )
    };
    let reg_resp = |status: &str, cseq: u32, b: &str, extra: &str| {
        sip(
            &format!(
                "SIP/2.0 {status}\n{};received=10.0.0.1;rport=5060\nFrom: <sip:alice@10.0.0.2>;tag=r1\n\
                 To: <sip:alice@10.0.0.2>;tag=srv-reg\nCall-ID: reg-1@10.0.0.1\nCSeq: {cseq} REGISTER\n{extra}Server: captured",
                via(b)
            ),
            "",
        )
    };
    let offer = "v=0\r\no=ua 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                 m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let answer = "v=0\r\no=srv 9 9 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                  m=audio 16384 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
    let req = |method: &str, cseq: u32, b: &str, to_tag: &str, extra: &str, body: &str| {
        let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\n" };
        sip(
            &format!(
                "{method} sip:echo@10.0.0.2 SIP/2.0\n{}\nMax-Forwards: 70\nFrom: <sip:alice@10.0.0.2>;tag=f1\n\
                 To: <sip:echo@10.0.0.2>{to_tag}\nCall-ID: call-1@10.0.0.1\nCSeq: {cseq} {method}\n\
                 Contact: <sip:alice@10.0.0.1:5060>\n{extra}{ctype}User-Agent: test-ua",
                via(b)
            ),
            body,
        )
    };
    let resp = |status: &str, cseq: u32, method: &str, b: &str, to_tag: &str, extra: &str, body: &str| {
        let ctype = if body.is_empty() { "" } else { "Content-Type: application/sdp\n" };
        sip(
            &format!(
                "SIP/2.0 {status}\n{};received=10.0.0.1;rport=5060\nFrom: <sip:alice@10.0.0.2>;tag=f1\n\
                 To: <sip:echo@10.0.0.2>{to_tag}\nCall-ID: call-1@10.0.0.1\nCSeq: {cseq} {method}\n{extra}{ctype}Server: captured",
                via(b)
            ),
            body,
        )
    };
    let www = "WWW-Authenticate: Digest realm=\"switch\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"\n";
    let proxy = "Proxy-Authenticate: Digest realm=\"switch\", nonce=\"n2\", algorithm=MD5, qop=\"auth\"\n";
    let reg_auth = format!("Authorization: {}\n", credentials("REGISTER", "sip:10.0.0.2", "n1"));
    let inv_auth = format!("Proxy-Authorization: {}\n", credentials("INVITE", "sip:echo@10.0.0.2", "n2"));
    let mut out: Vec<Record> = vec![
        (0, true, 5060, 5060, reg(1, "r1", "")),
        (5, false, 5060, 5060, reg_resp("401 Unauthorized", 1, "r1", www)),
        (10, true, 5060, 5060, reg(2, "r2", &reg_auth)),
        (15, false, 5060, 5060, reg_resp("200 OK", 2, "r2", "Contact: <sip:alice@10.0.0.1:5060>;expires=3600\n")),
        (100, true, 5060, 5060, req("INVITE", 1, "i1", "", "", offer)),
        (105, false, 5060, 5060, resp("407 Proxy Authentication Required", 1, "INVITE", "i1", ";tag=t407", proxy, "")),
        (110, true, 5060, 5060, req("ACK", 1, "i1", ";tag=t407", "", "")),
        (120, true, 5060, 5060, req("INVITE", 2, "i2", "", &inv_auth, offer)),
        (125, false, 5060, 5060, resp("100 Trying", 2, "INVITE", "i2", "", "", "")),
    ];
    if ringing {
        out.push((127, false, 5060, 5060, resp("180 Ringing", 2, "INVITE", "i2", ";tag=t200", "", "")));
    }
    out.extend([
        (
            130,
            false,
            5060,
            5060,
            resp("200 OK", 2, "INVITE", "i2", ";tag=t200", "Contact: <sip:echo@10.0.0.2>\n", answer),
        ),
        (140, true, 5060, 5060, req("ACK", 2, "i3", ";tag=t200", "", "")),
    ]);
    for k in 0..10u16 {
        out.push((160 + u64::from(k) * 20, true, 40000, 16384, rtp(k)));
    }
    out.push((500, true, 5060, 5060, req("BYE", 3, "i4", ";tag=t200", "", "")));
    out.push((505, false, 5060, 5060, resp("200 OK", 3, "BYE", "i4", ";tag=t200", "", "")));
    out
}

/// The conversation as a raw-IP pcap.
pub fn pcap(ringing: bool) -> Vec<u8> {
    let header =
        PcapHeader { datalink: DataLink::RAW, ts_resolution: TsResolution::MicroSecond, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (ms, from_ua, sport, dport, payload) in conversation(ringing) {
        let (src, dst) = if from_ua { (UA, SWITCH) } else { (SWITCH, UA) };
        let (sport, dport) = if from_ua { (sport, dport) } else { (dport, sport) };
        let mut frame = Vec::new();
        PacketBuilder::ipv4(src, dst, 64).udp(sport, dport).write(&mut frame, &payload).unwrap();
        let ts = Duration::from_secs(1_700_000_000) + Duration::from_millis(ms);
        w.write_packet(&PcapPacket::new(ts, frame.len() as u32, &frame)).unwrap();
    }
    w.into_writer()
}
