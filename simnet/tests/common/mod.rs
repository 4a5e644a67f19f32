//! Tiny turmoil hosts that talk through SimNet sockets (no switch involved).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use simnet::{CaptureOptions, LinkConditions, Network, SimWorld};
use switch::net::{DatagramSocket, Net};

/// One datagram as the receiver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub seq: u32,
    pub sent: Duration,
    pub received: Duration,
}

pub struct Exchange {
    pub world: SimWorld,
    /// What `rx` received from `tx`, in arrival order.
    pub at_rx: Vec<Seen>,
    /// What `tx` received back from `rx` (when `echo`).
    pub at_tx: Vec<Seen>,
    pub ips: (IpAddr, IpAddr),
}

pub struct Setup {
    pub network: Network,
    pub seed: u64,
    pub link: LinkConditions,
    pub count: u32,
    pub interval: Duration,
    pub payload_len: usize,
    /// rx answers every datagram with one of its own.
    pub echo: bool,
    pub capture: Option<CaptureOptions>,
    pub partitioned: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            network: Network::V4,
            seed: 7,
            link: LinkConditions { latency: Duration::from_millis(10), ..LinkConditions::default() },
            count: 100,
            interval: Duration::from_millis(1),
            payload_len: 32,
            echo: false,
            capture: None,
            partitioned: false,
        }
    }
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn encode(seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0xa5u8; len.max(12)];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p[4..12].copy_from_slice(&(now().as_micros() as u64).to_be_bytes());
    p
}

fn decode(p: &[u8]) -> Option<Seen> {
    let seq = u32::from_be_bytes(p.get(..4)?.try_into().ok()?);
    let sent = u64::from_be_bytes(p.get(4..12)?.try_into().ok()?);
    Some(Seen { seq, sent: Duration::from_micros(sent), received: now() })
}

/// `tx` sends `count` datagrams to `rx` (binding `::`, dual-stack, on both
/// networks); `rx` binds the concrete wildcard of its family.
pub fn exchange(s: Setup) -> Exchange {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .tick_duration(Duration::from_millis(1))
        .epoch(simnet::pcap::epoch())
        .rng_seed(s.seed)
        .ip_version(match s.network {
            Network::V4 => turmoil::IpVersion::V4,
            Network::V6 => turmoil::IpVersion::V6,
        })
        .min_message_latency(s.link.latency)
        .max_message_latency(s.link.latency)
        .udp_capacity(8192)
        .build();
    let ips = (sim.lookup("tx"), sim.lookup("rx"));
    let world = SimWorld::new(s.seed, s.link);
    world.add_host("tx");
    world.add_host("rx");
    if let Some(c) = s.capture.clone() {
        world.enable_capture(c);
    }
    if s.partitioned {
        world.partition("tx", "rx");
    }
    let at_rx = Arc::new(Mutex::new(Vec::new()));
    let at_tx = Arc::new(Mutex::new(Vec::new()));
    let stop = s.interval * s.count + Duration::from_secs(2);

    let (net, seen, count, interval, len, network) =
        (world.net("rx"), at_rx.clone(), s.count, s.interval, s.payload_len, s.network);
    let echo = s.echo;
    sim.client("rx", async move {
        let bind: SocketAddr = match network {
            Network::V4 => "0.0.0.0:6000".parse()?,
            Network::V6 => "[::]:6000".parse()?,
        };
        let sock = net.bind_udp(bind).await?;
        let mut buf = vec![0u8; 70000];
        let deadline = tokio::time::Instant::now() + stop;
        loop {
            tokio::select! {
                biased;
                r = sock.recv_from(&mut buf) => {
                    let (n, from) = r?;
                    if let Some(x) = decode(&buf[..n]) {
                        seen.lock().unwrap().push(x);
                        if echo {
                            sock.send_to(&encode(x.seq, len), from).await?;
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(())
    });

    let (net, seen) = (world.net("tx"), at_tx.clone());
    sim.client("tx", async move {
        let sock = net.bind_udp("[::]:5000".parse()?).await?;
        let rx = net.resolve("rx").await?;
        let target = SocketAddr::new(rx[0], 6000);
        let mut buf = vec![0u8; 70000];
        for seq in 0..count {
            sock.send_to(&encode(seq, len), target).await?;
            tokio::time::sleep(interval).await;
            // Drain echoes without blocking.
            while let Ok(Ok((n, _))) = tokio::time::timeout(Duration::ZERO, sock.recv_from(&mut buf)).await {
                if let Some(x) = decode(&buf[..n]) {
                    seen.lock().unwrap().push(x);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            tokio::select! {
                biased;
                r = sock.recv_from(&mut buf) => {
                    let (n, _) = r?;
                    if let Some(x) = decode(&buf[..n]) {
                        seen.lock().unwrap().push(x);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(())
    });

    sim.run().expect("simulation runs");
    drop(sim);
    let at_rx = std::mem::take(&mut *at_rx.lock().unwrap());
    let at_tx = std::mem::take(&mut *at_tx.lock().unwrap());
    Exchange { world, at_rx, at_tx, ips }
}
