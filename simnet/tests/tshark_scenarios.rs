//! tshark, a dissector nobody on this team wrote, reads the pcaps of real
//! scenario runs: zero malformed frames, and frame by frame it names the same
//! IAX2 frame types and subclasses as our own decoder (which the reports'
//! ladders are drawn from).

use std::path::Path;
use std::process::Command;

use simnet::{Network, RunOptions, Scenario};
use switch::iax2::frame::{decode, Frame};

fn tshark_available() -> bool {
    Command::new("tshark").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// (frame type, subclass) of every full frame in the capture, by our decoder.
fn ours(pcap: &[u8]) -> Vec<(u8, u32)> {
    let mut reader = pcap_file::pcap::PcapReader::new(pcap).expect("pcap header");
    let mut frames = vec![];
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("pcap record");
        let sliced = etherparse::SlicedPacket::from_ethernet(&packet.data).expect("ethernet frame");
        let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else { panic!("not UDP") };
        match decode(udp.payload()) {
            Ok(Frame::Full(f)) => frames.push((f.frame_type as u8, f.subclass)),
            Ok(_) => {}
            Err(e) => panic!("our decoder refuses a datagram the switch sent: {e}"),
        }
    }
    frames
}

/// The same, as tshark dissects it.
fn theirs(path: &Path) -> Vec<(u8, u32)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-Y", "iax2.packet_type == 1", "-T", "fields", "-E", "separator=;"])
        .args(["-e", "iax2.type", "-e", "iax2.iax.subclass", "-e", "iax2.control.subclass", "-e", "iax2.voice.codec"])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(';').collect();
            let num = |s: &str| {
                let s = s.trim();
                if let Some(hex) = s.strip_prefix("0x") {
                    u32::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("field {s:?} in {line:?}"))
                } else {
                    s.parse::<u32>().unwrap_or_else(|_| panic!("field {s:?} in {line:?}"))
                }
            };
            let frame_type = num(fields[0]) as u8;
            let subclass = fields[1..].iter().find(|f| !f.trim().is_empty()).map_or(0, |f| num(f));
            (frame_type, subclass)
        })
        .collect()
}

/// tshark's `iax2.packet_type` of every IAX2 datagram (0 mini voice, 1 full, 3 meta trunk).
fn packet_types(path: &Path) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-T", "fields", "-e", "iax2.packet_type"])
        .output()
        .expect("tshark runs");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn malformed(path: &Path) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-Y", "_ws.malformed || _ws.expert.severity >= error"])
        .output()
        .expect("tshark runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tshark_agrees_with_our_decoder_on_scenario_captures() {
    if !tshark_available() {
        eprintln!("SKIP: tshark is not installed (CI installs it)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let dir = std::env::temp_dir().join(format!("tshark-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["double-registration", "double-registration-wrong-secret", "iax-call", "trunk-800"] {
        let scenario = Scenario::load(&root.join(format!("{name}.toml"))).unwrap();
        for network in [Network::V4, Network::V6] {
            let outcome = simnet::run(&scenario, &RunOptions { seed: 7, network, pcap: true }).unwrap();
            assert!(outcome.passed, "{name} {network} failed");
            let path = dir.join(format!("{name}-{network}.pcap"));
            std::fs::write(&path, &outcome.pcap).unwrap();
            assert_eq!(malformed(&path), "", "{name} {network}: tshark reports malformed frames");
            let ours = ours(&outcome.pcap);
            let theirs = theirs(&path);
            assert!(ours.len() > 10, "{name} {network}: {} full frames", ours.len());
            assert_eq!(ours, theirs, "{name} {network}: (frame type, subclass) per full frame");
            // Registration and qualify are all there: REGREQ, REGAUTH, REGACK, POKE, PONG, ACK, CALLTOKEN.
            let registration_only = name.starts_with("double-registration");
            let expected: &[u32] = if registration_only { &[13, 14, 3, 30, 4, 40] } else { &[13, 14, 15, 4, 40] };
            for &sub in expected {
                assert!(ours.iter().any(|&(t, s)| t == 6 && s == sub), "{name} {network}: IAX subclass {sub} missing");
            }
            if !registration_only {
                // Calls: NEW, ACCEPT, ANSWER (control 4), voice in ulaw; and tshark sees
                // the media frames (mini or meta trunk) too.
                for (t, sub) in [(6u8, 1u32), (6, 7), (4, 4), (2, 4)] {
                    assert!(ours.contains(&(t, sub)), "{name} {network}: ({t}, {sub}) missing");
                }
                let media_type = if name == "trunk-800" { "3" } else { "0" };
                assert!(
                    packet_types(&path).iter().filter(|t| *t == media_type).count() > 10,
                    "{name}: no media frames"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
