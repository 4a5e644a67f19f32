//! What the messages of a capture are (SIP, IAX2, RTP, RTCP), which flows
//! they form, and which party the switch plays in a replay.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use switch::iax2::frame::{self, Frame};
use switch::iax2::subclass::{FrameType, IaxSubclass};

use super::{Capture, Message, Problem, Proto, RtpInfo, Transport};

/// The IAX2 port (RFC 5456).
pub const IAX2_PORT: u16 = 4569;
/// A direction must carry this many RTP-shaped datagrams to count as RTP
/// without an SDP that announces it.
pub const RTP_MIN_PACKETS: usize = 5;

fn rtp_header(p: &[u8]) -> Option<RtpInfo> {
    if p.len() < 12 || p[0] >> 6 != 2 {
        return None;
    }
    let pt = p[1] & 0x7f;
    // 72..=76 with the marker bit are RTCP's 200..=204.
    if (72..=76).contains(&pt) {
        return None;
    }
    let csrc = usize::from(p[0] & 0x0f) * 4;
    if 12 + csrc > p.len() {
        return None;
    }
    Some(RtpInfo {
        payload_type: pt,
        marker: p[1] & 0x80 != 0,
        seq: u16::from_be_bytes([p[2], p[3]]),
        timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    })
}

/// A (compound) RTCP datagram: every packet version 2 with an RTCP packet
/// type, the first one 200..=204, and the lengths adding up.
fn is_rtcp(p: &[u8]) -> bool {
    if p.len() < 8 || !(200..=204).contains(&p[1]) {
        return false;
    }
    let mut at = 0;
    // Some stacks leave up to 3 stray octets after the last packet.
    while p.len() - at >= 4 {
        let h = &p[at..at + 4];
        if h[0] >> 6 != 2 || !(192..=223).contains(&h[1]) {
            return false;
        }
        at += (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        if at > p.len() {
            return false;
        }
    }
    true
}

/// Whether an IAX2 frame opens a dialog (what lets IAX2 be found off port 4569).
fn opens_dialog(f: &Frame) -> bool {
    let Frame::Full(f) = f else { return false };
    f.dst_call == 0
        && f.frame_type == FrameType::Iax
        && matches!(f.iax(), Some(IaxSubclass::New | IaxSubclass::RegReq | IaxSubclass::RegRel | IaxSubclass::Poke))
        && f.ies().is_ok()
}

fn pair(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Fills in each message's [`Proto`].
pub(crate) fn classify(messages: &mut [Message], problems: &mut Vec<Problem>) {
    // SIP first: any message that starts like SIP, on any port.
    for m in messages.iter_mut() {
        if let Some(info) = super::sip::parse(&m.payload) {
            if m.transport == Transport::Udp {
                if let Some(Err(cl)) = &info.content_length {
                    problems.push(Problem::new(m.frame, format!("SIP message with invalid Content-Length {cl:?}")));
                }
            }
            m.proto = Proto::Sip(Box::new(info));
        }
    }
    let sdp: BTreeSet<SocketAddr> = messages
        .iter()
        .filter_map(|m| match &m.proto {
            Proto::Sip(s) => Some(s.sdp_media.clone()),
            _ => None,
        })
        .flatten()
        .collect();

    // IAX2: port 4569, or any UDP flow in which a dialog is opened.
    let mut iax_pairs = BTreeSet::new();
    for m in messages.iter() {
        if m.transport == Transport::Udp && matches!(m.proto, Proto::Other) {
            if let Ok(f) = frame::decode(&m.payload) {
                if opens_dialog(&f) {
                    iax_pairs.insert(pair(m.src, m.dst));
                }
            }
        }
    }
    for m in messages.iter_mut() {
        if m.transport != Transport::Udp || !matches!(m.proto, Proto::Other) {
            continue;
        }
        let on_port = m.src.port() == IAX2_PORT || m.dst.port() == IAX2_PORT;
        if !on_port && !iax_pairs.contains(&pair(m.src, m.dst)) {
            continue;
        }
        match frame::decode(&m.payload) {
            Ok(f) => m.proto = Proto::Iax2(f),
            Err(e) => problems.push(Problem::new(m.frame, format!("UDP to the IAX2 port is not IAX2: {e}"))),
        }
    }

    // RTP and RTCP, per direction: announced by SDP, or shaped like a stream.
    let mut by_dir: BTreeMap<(SocketAddr, SocketAddr), Vec<usize>> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate() {
        if m.transport == Transport::Udp && matches!(m.proto, Proto::Other) {
            by_dir.entry((m.src, m.dst)).or_default().push(i);
        }
    }
    for ((src, dst), idx) in by_dir {
        let announced = sdp.contains(&src) || sdp.contains(&dst);
        let rtcp_announced = sdp.iter().any(|a| {
            let near = |x: SocketAddr| x.ip() == a.ip() && x.port() == a.port().wrapping_add(1);
            near(src) || near(dst)
        });
        let high_ports = src.port() >= 1024 && dst.port() >= 1024;
        let rtcp: Vec<usize> = idx.iter().copied().filter(|&i| is_rtcp(&messages[i].payload)).collect();
        if (rtcp_announced || high_ports) && !rtcp.is_empty() && rtcp.len() * 2 >= idx.len() {
            for i in rtcp {
                messages[i].proto = Proto::Rtcp;
            }
            continue;
        }
        let rtp: Vec<(usize, RtpInfo)> =
            idx.iter().filter_map(|&i| rtp_header(&messages[i].payload).map(|h| (i, h))).collect();
        if rtp.is_empty() || !high_ports && !announced {
            continue;
        }
        let stream_like = || {
            // One dominant SSRC whose sequence numbers mostly step by a little.
            let mut ssrcs: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
            for (_, h) in &rtp {
                ssrcs.entry(h.ssrc).or_default().push(h.seq);
            }
            let Some((_, seqs)) = ssrcs.iter().max_by_key(|(_, s)| s.len()) else { return false };
            let steady = seqs.windows(2).filter(|w| w[1].wrapping_sub(w[0]) <= 3).count();
            seqs.len() >= RTP_MIN_PACKETS
                && seqs.len() * 10 >= rtp.len() * 9
                && rtp.len() * 10 >= idx.len() * 9
                && steady * 10 >= (seqs.len() - 1) * 8
        };
        if announced || stream_like() {
            for (i, h) in rtp {
                messages[i].proto = Proto::Rtp(h);
            }
        }
    }
}

/// The protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowProto {
    Sip,
    Iax2,
    Rtp,
    Rtcp,
}

impl FlowProto {
    pub fn name(self) -> &'static str {
        match self {
            FlowProto::Sip => "SIP",
            FlowProto::Iax2 => "IAX2",
            FlowProto::Rtp => "RTP",
            FlowProto::Rtcp => "RTCP",
        }
    }

    fn of(p: &super::Proto) -> Option<FlowProto> {
        match p {
            super::Proto::Sip(_) => Some(FlowProto::Sip),
            super::Proto::Iax2(_) => Some(FlowProto::Iax2),
            super::Proto::Rtp(_) => Some(FlowProto::Rtp),
            super::Proto::Rtcp => Some(FlowProto::Rtcp),
            super::Proto::Other => None,
        }
    }
}

/// Messages of one protocol between two endpoints (both directions).
#[derive(Clone, Debug)]
pub struct Flow {
    pub proto: FlowProto,
    pub transport: Transport,
    /// The endpoint that sent the flow's first message.
    pub a: SocketAddr,
    pub b: SocketAddr,
    /// Indexes into [`Capture::messages`], in order.
    pub messages: Vec<usize>,
    pub a_to_b: usize,
    pub b_to_a: usize,
    pub first: Duration,
    pub last: Duration,
    /// What is in it, in a few words.
    pub detail: String,
}

/// Groups the classified messages into flows, in order of first appearance.
pub fn find_flows(capture: &Capture) -> Vec<Flow> {
    let mut index: BTreeMap<(FlowProto, Transport, SocketAddr, SocketAddr), usize> = BTreeMap::new();
    let mut flows: Vec<Flow> = Vec::new();
    for (i, m) in capture.messages.iter().enumerate() {
        let Some(proto) = FlowProto::of(&m.proto) else { continue };
        let (x, y) = pair(m.src, m.dst);
        let n = *index.entry((proto, m.transport, x, y)).or_insert_with(|| {
            flows.push(Flow {
                proto,
                transport: m.transport,
                a: m.src,
                b: m.dst,
                messages: Vec::new(),
                a_to_b: 0,
                b_to_a: 0,
                first: m.ts,
                last: m.ts,
                detail: String::new(),
            });
            flows.len() - 1
        });
        let f = &mut flows[n];
        f.messages.push(i);
        if m.src == f.a {
            f.a_to_b += 1;
        } else {
            f.b_to_a += 1;
        }
        f.first = f.first.min(m.ts);
        f.last = f.last.max(m.ts);
    }
    for f in &mut flows {
        f.detail = describe(capture, f);
    }
    flows
}

fn counted(map: &BTreeMap<String, usize>) -> String {
    map.iter().map(|(k, n)| if *n == 1 { k.clone() } else { format!("{k} x{n}") }).collect::<Vec<_>>().join(", ")
}

fn describe(capture: &Capture, flow: &Flow) -> String {
    let msgs = flow.messages.iter().map(|&i| &capture.messages[i]);
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    match flow.proto {
        FlowProto::Sip => {
            for m in msgs {
                if let super::Proto::Sip(s) = &m.proto {
                    *kinds.entry(s.label()).or_default() += 1;
                }
            }
            counted(&kinds)
        }
        FlowProto::Iax2 => {
            let (mut mini, mut other) = (0, 0);
            for m in msgs {
                match &m.proto {
                    super::Proto::Iax2(Frame::Full(f)) => *kinds.entry(full_name(f)).or_default() += 1,
                    super::Proto::Iax2(Frame::Mini(_)) => mini += 1,
                    _ => other += 1,
                }
            }
            let mut s = counted(&kinds);
            if mini > 0 {
                let _ = write!(s, "; {mini} mini frames");
            }
            if other > 0 {
                let _ = write!(s, "; {other} video/trunk frames");
            }
            s
        }
        FlowProto::Rtp => {
            let mut pts = BTreeSet::new();
            let mut ssrcs = BTreeSet::new();
            for m in msgs {
                if let super::Proto::Rtp(h) = &m.proto {
                    pts.insert(h.payload_type);
                    ssrcs.insert(h.ssrc);
                }
            }
            let pts: Vec<String> = pts.iter().map(|p| format!("PT {p}")).collect();
            format!("{}; {} SSRC(s)", pts.join(", "), ssrcs.len())
        }
        FlowProto::Rtcp => "compound RTCP".into(),
    }
}

/// `IAX NEW`, `CONTROL ANSWER`, `VOICE`.
pub fn full_name(f: &switch::iax2::frame::FullFrame) -> String {
    match f.frame_type {
        FrameType::Iax => match f.iax() {
            Some(s) => s.name().to_string(),
            None => format!("IAX {}", f.subclass),
        },
        FrameType::Control => match f.control() {
            Some(c) => format!("CONTROL {}", c.name()),
            None => format!("CONTROL {}", f.subclass),
        },
        t => t.name().to_string(),
    }
}

/// Which side of the capture the switch takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RoleRequest {
    /// The party that answered REGREQ/NEW/POKE (IAX2) or REGISTER/INVITE (SIP).
    #[default]
    Auto,
    /// Same as auto, but an error when no request was answered.
    Server,
    /// The party that sent those requests.
    Client,
}

/// The endpoint the switch plays, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleChoice {
    pub proto: FlowProto,
    /// The captured endpoint whose part the switch takes.
    pub switch: SocketAddr,
    /// The captured endpoints that talk to it: the replay's scripted remote parties.
    pub remotes: Vec<SocketAddr>,
    pub reason: String,
}

/// Requests answered, per (answering endpoint, requesting endpoint).
fn answered_requests(capture: &Capture, proto: FlowProto) -> BTreeMap<(SocketAddr, SocketAddr), Vec<String>> {
    let mut answered: BTreeMap<(SocketAddr, SocketAddr), Vec<String>> = BTreeMap::new();
    let msgs = &capture.messages;
    for (i, m) in msgs.iter().enumerate() {
        match (&m.proto, proto) {
            (super::Proto::Iax2(Frame::Full(f)), FlowProto::Iax2) if opens_dialog(&Frame::Full(f.clone())) => {
                let reply = msgs[i + 1..].iter().any(|r| {
                    r.src == m.dst
                        && r.dst == m.src
                        && matches!(&r.proto, super::Proto::Iax2(Frame::Full(g)) if g.dst_call == f.src_call)
                });
                if reply {
                    answered.entry((m.dst, m.src)).or_default().push(full_name(f));
                }
            }
            (super::Proto::Sip(s), FlowProto::Sip)
                if !s.is_request() && matches!(s.method(), "INVITE" | "REGISTER") =>
            {
                // One count per transaction (Call-ID, CSeq), however many responses it got.
                let key = (s.call_id.clone(), s.cseq.clone());
                let seen = msgs[..i].iter().any(|r| {
                    r.src == m.src
                        && r.dst == m.dst
                        && matches!(&r.proto, super::Proto::Sip(t) if !t.is_request() && (t.call_id.clone(), t.cseq.clone()) == key)
                });
                if !seen {
                    answered.entry((m.src, m.dst)).or_default().push(s.method().to_string());
                }
            }
            _ => {}
        }
    }
    answered
}

/// Picks the endpoint the switch plays for `proto` (IAX2 or SIP).
pub fn choose_role(capture: &Capture, proto: FlowProto, request: RoleRequest) -> Result<RoleChoice, String> {
    let answered = answered_requests(capture, proto);
    // Score each answering endpoint by the requests it answered.
    let mut score: BTreeMap<SocketAddr, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for ((server, _), reqs) in &answered {
        let e = score.entry(*server).or_default();
        e.0 += reqs.len();
        for r in reqs {
            *e.1.entry(r.clone()).or_default() += 1;
        }
    }
    let best = score.iter().max_by_key(|(addr, (n, _))| (*n, std::cmp::Reverse(**addr)));
    let talks_to = |who: SocketAddr| -> Vec<SocketAddr> {
        let mut peers = BTreeSet::new();
        for m in &capture.messages {
            if FlowProto::of(&m.proto) == Some(proto) {
                if m.src == who {
                    peers.insert(m.dst);
                } else if m.dst == who {
                    peers.insert(m.src);
                }
            }
        }
        peers.into_iter().collect()
    };
    let Some((server, (n, kinds))) = best else {
        let what = match proto {
            FlowProto::Iax2 => "no IAX2 REGREQ, REGREL, NEW or POKE was answered in the capture",
            FlowProto::Sip => "no SIP REGISTER or INVITE was answered in the capture",
            FlowProto::Rtp | FlowProto::Rtcp => "RTP and RTCP have no requests to answer",
        };
        return Err(what.to_string());
    };
    let what = counted(kinds);
    match request {
        RoleRequest::Auto | RoleRequest::Server => Ok(RoleChoice {
            proto,
            switch: *server,
            remotes: talks_to(*server),
            reason: format!("{server} answered {n} request(s) ({what})"),
        }),
        RoleRequest::Client => {
            let client = answered.keys().find(|(s, _)| s == server).map(|(_, c)| *c).unwrap_or(*server);
            Ok(RoleChoice {
                proto,
                switch: client,
                remotes: talks_to(client),
                reason: format!("--role client: {client} sent the request(s) {server} answered ({what})"),
            })
        }
    }
}

/// What a capture holds, for `cargo xtask replay --summary-only` and the report.
#[derive(Clone, Debug)]
pub struct Summary {
    pub text: String,
}

/// Renders the summary of a capture: file, counts, flows, problems, roles.
pub fn summarize(capture: &Capture, flows: &[Flow], roles: &[Result<RoleChoice, String>]) -> Summary {
    let mut s = String::new();
    let _ = writeln!(s, "format: {}", capture.format);
    let _ = writeln!(s, "records: {}", capture.records);
    if let Some((a, b)) = capture.span {
        let _ =
            writeln!(s, "time span: {} .. {} ({:.3} s)", fmt_epoch(a), fmt_epoch(b), b.saturating_sub(a).as_secs_f64());
    }
    let (req, resp) = capture.sip_counts();
    let _ = writeln!(
        s,
        "messages: {} (SIP {}, IAX2 {}, RTP {}, RTCP {}, other UDP/TCP {})",
        capture.messages.len(),
        capture.count("SIP"),
        capture.count("IAX2"),
        capture.count("RTP"),
        capture.count("RTCP"),
        capture.count("other")
    );
    if !req.is_empty() || !resp.is_empty() {
        let _ = writeln!(s, "SIP requests: {}", if req.is_empty() { "none".into() } else { counted(&req) });
        let _ = writeln!(s, "SIP responses: {}", if resp.is_empty() { "none".into() } else { counted(&resp) });
    }
    let k = &capture.skipped;
    let _ = writeln!(
        s,
        "not messages: {} non-IP records, {} other IP protocols, {} fragments ({} packets reassembled), {} TCP retransmissions",
        k.not_ip, k.other_ip, k.fragments, k.reassembled, k.tcp_retransmissions
    );
    let _ = writeln!(s, "flows: {}", flows.len());
    for f in flows {
        let _ = writeln!(
            s,
            "  {:<4} {} {} <-> {}: {} + {} messages over {:.3} s; {}",
            f.proto.name(),
            f.transport,
            f.a,
            f.b,
            f.a_to_b,
            f.b_to_a,
            f.last.saturating_sub(f.first).as_secs_f64(),
            f.detail
        );
    }
    for r in roles {
        match r {
            Ok(r) => {
                let remotes: Vec<String> = r.remotes.iter().map(|a| a.to_string()).collect();
                let _ = writeln!(
                    s,
                    "role ({}): the switch plays {}; remote: {} ({})",
                    r.proto.name(),
                    r.switch,
                    remotes.join(", "),
                    r.reason
                );
            }
            Err(e) => {
                let _ = writeln!(s, "role: none: {e}");
            }
        }
    }
    let _ = writeln!(s, "problems: {}", capture.problems.len());
    for p in capture.problems.iter().take(50) {
        let _ = writeln!(s, "  {p}");
    }
    if capture.problems.len() > 50 {
        let _ = writeln!(s, "  ... and {} more", capture.problems.len() - 50);
    }
    Summary { text: s }
}

/// `2005-08-12 09:46:45.963862 UTC` from a time since the Unix epoch.
pub fn fmt_epoch(t: Duration) -> String {
    let secs = t.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        t.subsec_micros()
    )
}
