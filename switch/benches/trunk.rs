//! Rates of IAX2 trunking at the seed's headline load: one trunk tick of 800
//! calls packed into `trunkmtu` datagrams (`TrunkQueue::flush`), and those
//! datagrams decoded again. Rates are in trunk entries (one call's 20 ms of
//! G.711) per second.
//!
//! `cargo bench -p switch --bench trunk`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switch::iax2::frame::{decode, Frame};
use switch::iax2::trunk::{expected_datagrams, TrunkQueue};
use switch::media::{pattern_frame, FRAME_SAMPLES, G711};

const CALLS: u16 = 800;
/// Asterisk's default `trunkmtu`.
const MTU: u16 = 1240;

/// One tick's voice: call `n` carries pattern frame `seq` of its own.
fn payloads(seq: u32) -> Vec<(u16, u16, Vec<u8>)> {
    (1..=CALLS)
        .map(|call| {
            let mut p = Vec::with_capacity(FRAME_SAMPLES);
            pattern_frame(call, seq, G711::Ulaw, &mut p);
            (call, (seq * 20) as u16, p)
        })
        .collect()
}

fn pack(c: &mut Criterion) {
    let mut g = c.benchmark_group("trunk");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(u64::from(CALLS)));
    let tick = payloads(1);
    for timestamps in [true, false] {
        let name = if timestamps { "pack 800 ts" } else { "pack 800" };
        // Pushing the 800 payloads is the media path's work too (it moves the
        // encoded frame in), so it is measured with the flush; the clone of
        // the prepared payloads is setup and is not.
        g.bench_function(name, |b| {
            b.iter_batched(
                || tick.clone(),
                |tick| {
                    let mut q = TrunkQueue::default();
                    for (call, ts, payload) in tick {
                        q.push(call, ts, payload);
                    }
                    let datagrams = q.flush(20, 20, MTU, timestamps);
                    debug_assert_eq!(datagrams.len(), expected_datagrams(800, FRAME_SAMPLES, MTU, timestamps));
                    black_box(datagrams)
                },
                BatchSize::SmallInput,
            )
        });
    }

    for timestamps in [true, false] {
        let mut q = TrunkQueue::default();
        for (call, ts, payload) in payloads(1) {
            q.push(call, ts, payload);
        }
        let datagrams = q.flush(20, 20, MTU, timestamps);
        let entries: usize = datagrams
            .iter()
            .map(|d| match decode(d) {
                Ok(Frame::Trunk(t)) => t.entries.len(),
                other => panic!("not a trunk frame: {other:?}"),
            })
            .sum();
        assert_eq!(entries, usize::from(CALLS));
        let name = if timestamps { "decode 800 ts" } else { "decode 800" };
        g.bench_function(name, |b| {
            b.iter(|| {
                for d in &datagrams {
                    black_box(decode(black_box(d)).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pack);
criterion_main!(benches);
