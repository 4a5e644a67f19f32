//! The link model between two tiny hosts using SimNet sockets.

mod common;

use std::time::Duration;

use common::{exchange, Setup};
use simnet::{LinkConditions, Network};

fn link(latency_ms: u64, jitter_ms: u64, loss: f64, duplicate: f64) -> LinkConditions {
    LinkConditions {
        latency: Duration::from_millis(latency_ms),
        jitter: Duration::from_millis(jitter_ms),
        loss,
        duplicate,
    }
}

#[test]
fn clean_link_delivers_everything_in_order_at_the_configured_latency() {
    for network in [Network::V4, Network::V6] {
        let x = exchange(Setup { network, link: link(25, 0, 0.0, 0.0), count: 300, ..Setup::default() });
        assert_eq!(x.at_rx.len(), 300, "{network}");
        assert!(x.at_rx.windows(2).all(|w| w[0].seq < w[1].seq), "{network}: reordered without jitter");
        for s in &x.at_rx {
            let delay = s.received - s.sent;
            // turmoil delivers at tick granularity (1 ms steps).
            assert!(
                delay >= Duration::from_millis(25) && delay <= Duration::from_millis(28),
                "{network}: delay {delay:?}"
            );
        }
        let stats = x.world.stats();
        assert_eq!(stats["tx"].sent, 300);
        assert_eq!(stats["tx"].on_wire, 300);
        assert_eq!(stats["tx"].lost, 0);
    }
}

#[test]
fn ten_percent_loss_loses_about_ten_percent() {
    for (network, seed) in [(Network::V4, 1), (Network::V6, 2), (Network::V4, 3)] {
        let x = exchange(Setup { network, seed, link: link(10, 0, 0.10, 0.0), count: 2000, ..Setup::default() });
        let received = x.at_rx.len() as u64;
        let lost = 2000 - received;
        // Expected 200, sigma ~13.4: a band of about 4.5 sigma.
        assert!((140..=260).contains(&lost), "{network} seed {seed}: lost {lost} of 2000");
        let stats = x.world.stats();
        assert_eq!(stats["tx"].lost, lost, "the counters agree with what arrived");
        assert_eq!(stats["tx"].on_wire, received);
    }
}

#[test]
fn loss_does_not_break_the_link_as_a_whole() {
    // turmoil's fail_rate partitions whole links for a while; ours drops single
    // datagrams. With 5% loss, no long run of consecutive losses happens.
    let x = exchange(Setup { link: link(10, 0, 0.05, 0.0), count: 2000, ..Setup::default() });
    let seqs: Vec<u32> = x.at_rx.iter().map(|s| s.seq).collect();
    let longest_gap = seqs.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(0);
    assert!(longest_gap <= 5, "longest run of losses {longest_gap}");
    let lost = 2000 - seqs.len();
    assert!((50..=150).contains(&lost), "lost {lost}");
}

#[test]
fn duplication_delivers_extra_copies() {
    for network in [Network::V4, Network::V6] {
        let x = exchange(Setup { network, link: link(10, 0, 0.0, 0.25), count: 2000, ..Setup::default() });
        let received = x.at_rx.len() as u64;
        let dups = received - 2000;
        assert!((400..=600).contains(&dups), "{network}: {dups} duplicates of 2000 at 25%");
        let stats = x.world.stats();
        assert_eq!(stats["tx"].duplicated, dups);
        assert_eq!(stats["tx"].on_wire, received);
        let mut seqs: Vec<u32> = x.at_rx.iter().map(|s| s.seq).collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 2000, "every datagram arrived at least once");
    }
}

#[test]
fn jitter_delays_within_bounds_and_reorders() {
    for network in [Network::V4, Network::V6] {
        let x = exchange(Setup {
            network,
            link: link(20, 60, 0.0, 0.0),
            count: 500,
            interval: Duration::from_millis(5),
            ..Setup::default()
        });
        assert_eq!(x.at_rx.len(), 500);
        let delays: Vec<Duration> = x.at_rx.iter().map(|s| s.received - s.sent).collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min >= Duration::from_millis(20), "{network}: min {min:?}");
        assert!(max <= Duration::from_millis(20 + 60 + 3), "{network}: max {max:?}");
        assert!(max - min >= Duration::from_millis(40), "{network}: jitter spread only {:?}", max - min);
        let mean_ms = delays.iter().map(|d| d.as_secs_f64() * 1000.0).sum::<f64>() / delays.len() as f64;
        assert!((40.0..=62.0).contains(&mean_ms), "{network}: mean delay {mean_ms} ms (expected ~51)");
        let reordered = x.at_rx.windows(2).filter(|w| w[1].seq < w[0].seq).count();
        assert!(reordered > 10, "{network}: jitter larger than the send interval reorders ({reordered})");
    }
}

#[test]
fn partition_blocks_and_counts() {
    let x = exchange(Setup { partitioned: true, count: 50, ..Setup::default() });
    assert!(x.at_rx.is_empty());
    let stats = x.world.stats();
    assert_eq!(stats["tx"].blocked, 50);
    assert_eq!(stats["tx"].on_wire, 0);
}

#[test]
fn replies_reach_the_sender_address() {
    for network in [Network::V4, Network::V6] {
        let x = exchange(Setup { network, echo: true, count: 100, ..Setup::default() });
        assert_eq!(x.at_rx.len(), 100);
        assert_eq!(x.at_tx.len(), 100, "{network}: echoes came back to the `::`-bound sender");
    }
}

#[test]
fn the_link_model_is_deterministic_per_seed() {
    let run = |seed| {
        let x = exchange(Setup { seed, link: link(10, 30, 0.1, 0.1), count: 500, ..Setup::default() });
        x.at_rx.iter().map(|s| (s.seq, s.received)).collect::<Vec<_>>()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}
