//! Rates of the wire format and the codec: full-frame encode and decode,
//! mini-frame decode, the IE list of a realistic NEW, G.711 of one 20 ms frame.
//!
//! `cargo bench -p switch --bench wire`; `cargo xtask bench` runs every bench
//! and summarises the rates. Each measurement is kept short (20 samples, 2 s).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switch::iax2::frame::{decode, Frame, FullFrame, MiniFrame};
use switch::iax2::ie::{decode_ies, encode_ies, Ie};
use switch::iax2::subclass::{format, FrameType, IaxSubclass};
use switch::media::{pattern_frame, FRAME_SAMPLES, G711};

/// The IEs of a NEW as Asterisk 20's chan_iax2 sends them to a trunk friend
/// (caller ID, presentation, codec preferences, 64-bit formats, date and the
/// call token it got back), in its order.
fn realistic_new_ies() -> Vec<Ie> {
    vec![
        Ie::Version(2),
        Ie::CalledNumber("600".into()),
        Ie::CallingNumber("2125551234".into()),
        Ie::CallingAni("2125551234".into()),
        Ie::CallingName("Alice Example".into()),
        Ie::CallingPres(0),
        Ie::CallingTon(0),
        Ie::CallingTns(0),
        Ie::CalledContext("iaxinbound".into()),
        Ie::Username("A".into()),
        Ie::Language("en".into()),
        Ie::CodecPrefs("DCB".into()),
        Ie::Format(format::ULAW),
        Ie::Capability(format::ULAW | format::ALAW | format::GSM),
        Ie::Format2(u64::from(format::ULAW)),
        Ie::Capability2(u64::from(format::ULAW | format::ALAW | format::GSM)),
        Ie::AdsiCpe(2),
        Ie::DateTime(0x3a4c_8a4f),
        Ie::CallToken(b"1726500000?3f1b0c8e9d2a47b6a1c05e7f9b3d2c1a0e4f5b6c".to_vec()),
    ]
}

fn new_frame() -> FullFrame {
    FullFrame::try_new_iax(0x1234, 0, 3, 0, 0, IaxSubclass::New, &realistic_new_ies()).expect("values fit")
}

/// A full voice frame: what a call sends before it may use mini frames.
fn voice_full_frame() -> FullFrame {
    let mut payload = Vec::with_capacity(FRAME_SAMPLES);
    pattern_frame(7, 1, G711::Ulaw, &mut payload);
    FullFrame {
        src_call: 0x1234,
        dst_call: 0x0321,
        retransmitted: false,
        timestamp: 123_456,
        oseqno: 4,
        iseqno: 3,
        frame_type: FrameType::Voice,
        subclass: format::ULAW,
        payload,
    }
}

fn full_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("full");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    let new = new_frame();
    let voice = voice_full_frame();
    let mut buf = Vec::with_capacity(512);
    g.bench_function("encode NEW", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&new).encode(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("encode voice", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&voice).encode(&mut buf).unwrap();
            black_box(buf.len())
        })
    });
    let new_bytes = Frame::Full(new.clone()).to_bytes().unwrap();
    let voice_bytes = Frame::Full(voice.clone()).to_bytes().unwrap();
    g.bench_function("decode NEW", |b| b.iter(|| decode(black_box(&new_bytes)).unwrap()));
    g.bench_function("decode voice", |b| b.iter(|| decode(black_box(&voice_bytes)).unwrap()));
    g.finish();
}

fn mini_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("mini");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    let mut payload = Vec::with_capacity(FRAME_SAMPLES);
    pattern_frame(7, 42, G711::Ulaw, &mut payload);
    let bytes = Frame::Mini(MiniFrame { src_call: 0x1234, timestamp: 0x5678, payload }).to_bytes().unwrap();
    g.bench_function("decode", |b| b.iter(|| decode(black_box(&bytes)).unwrap()));
    g.finish();
}

fn ie_lists(c: &mut Criterion) {
    let mut g = c.benchmark_group("ies");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    let ies = realistic_new_ies();
    let mut bytes = Vec::new();
    encode_ies(&ies, &mut bytes).unwrap();
    assert_eq!(decode_ies(&bytes).unwrap(), ies, "the NEW's IEs round-trip");
    g.bench_function("decode NEW", |b| b.iter(|| decode_ies(black_box(&bytes)).unwrap()));
    g.finish();
}

fn g711(c: &mut Criterion) {
    let mut g = c.benchmark_group("g711");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    // One 20 ms frame of a 1 kHz tone at -10 dBFS-ish, as linear samples.
    let samples: Vec<i16> = (0..FRAME_SAMPLES)
        .map(|i| (10_000.0 * (std::f64::consts::TAU * 1000.0 * i as f64 / 8000.0).sin()) as i16)
        .collect();
    let mut out = Vec::with_capacity(FRAME_SAMPLES);
    for (name, codec) in [("encode ulaw 160", G711::Ulaw), ("encode alaw 160", G711::Alaw)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                out.extend(black_box(&samples).iter().map(|&s| codec.encode(s)));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, full_frames, mini_frames, ie_lists, g711);
criterion_main!(benches);
