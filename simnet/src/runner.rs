//! Runs a scenario: one turmoil world, one switch per host, the timeline
//! applied at its simulated times, expectations judged over the trace.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use switch::config::MapLoader;
use switch::event::Event;
use switch::runtime::{Command, SwitchSetup};
use switch::state::{MemoryStore, StateStore};
use tokio::sync::mpsc;

use crate::expect::{self, Ctx, Verdict};
use crate::metrics::MetricCtx;
use crate::net::{HostStats, SimWorld};
use crate::pcap::epoch;
use crate::report;
use crate::scenario::{Action, Addresses, Network, Scenario};
use crate::trace::{answer_values, TimedEvent, TraceEvent, WorldEvent, WORLD_HOST};

/// Simulated time per step; also the timeline's resolution.
pub const TICK: Duration = Duration::from_millis(1);
/// turmoil's own limit beyond the scenario's duration (we stop by ourselves).
const MARGIN: Duration = Duration::from_secs(60);
/// turmoil's per-socket receive queue (its default of 64 silently drops bursts).
const UDP_CAPACITY: usize = 4096;

/// How to run a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Seeds turmoil, the link model and (derived per host) every switch.
    pub seed: u64,
    pub network: Network,
    /// Record the wire into [`Outcome::pcap`].
    pub pcap: bool,
}

/// Everything a run produced. Nothing in it depends on wall-clock time.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scenario: String,
    pub network: Network,
    pub seed: u64,
    /// All expectations passed.
    pub passed: bool,
    pub verdicts: Vec<Verdict>,
    /// The trace, in time order (ties in the order they happened).
    pub events: Vec<TimedEvent>,
    /// The trace as JSON lines.
    pub events_jsonl: String,
    pub report_md: String,
    /// The capture (empty unless [`RunOptions::pcap`]).
    pub pcap: Vec<u8>,
    /// Datagrams that went onto the simulated wire.
    pub datagrams: u64,
    pub sim_duration: Duration,
    /// Per-host link-model counters.
    pub stats: BTreeMap<String, HostStats>,
    /// Each host's address in this run.
    pub addresses: BTreeMap<String, std::net::IpAddr>,
    /// The signalling ladder of the first calls as an SVG picture (`None`
    /// when the run placed no call); report.md has the same as ASCII.
    pub ladder_svg: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("scenario `{scenario}`: {message}")]
    Setup { scenario: String, message: String },
    #[error("scenario `{scenario}`: the simulation failed at {at}: {message}")]
    Simulation { scenario: String, at: String, message: String },
}

/// A stable 64-bit mix of a seed, a name and a counter (FNV-1a, then SplitMix64).
pub fn derive_seed(seed: u64, name: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(name.as_bytes()).chain(n.to_le_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

type Trace = Arc<Mutex<Vec<TimedEvent>>>;

fn push(trace: &Trace, event: TimedEvent) {
    trace.lock().unwrap_or_else(|p| p.into_inner()).push(event);
}

/// A waker that does nothing: pending commands are polled after every step.
fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(|_| RAW, |_| {}, |_| {}, |_| {});
    const RAW: RawWaker = RawWaker::new(std::ptr::null(), &VTABLE);
    // SAFETY: every vtable function ignores the (null) data pointer.
    unsafe { Waker::from_raw(RAW) }
}

/// An operator command waiting for the switch's answer.
struct PendingCommand {
    host: String,
    line: String,
    label: Option<String>,
    issued: Duration,
    answer: Pin<Box<dyn Future<Output = Option<String>> + Send>>,
}

impl PendingCommand {
    /// The trace event for `answer`, at `at`.
    fn event(self, at: Duration, answer: String) -> TimedEvent {
        TimedEvent {
            at,
            host: self.host,
            event: TraceEvent::World(WorldEvent::Command {
                line: self.line,
                values: answer_values(&answer),
                answer,
                issued_ms: self.issued.as_millis() as u64,
                label: self.label,
            }),
        }
    }
}

/// Polls the pending commands once; records and drops the answered ones.
fn poll_commands(pending: &mut Vec<PendingCommand>, trace: &Trace, at: Duration) {
    if pending.is_empty() {
        return;
    }
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut i = 0;
    while i < pending.len() {
        match pending[i].answer.as_mut().poll(&mut cx) {
            Poll::Ready(answer) => {
                let p = pending.remove(i);
                let answer = answer.unwrap_or_default();
                push(trace, p.event(at, answer.trim_end().to_string()));
            }
            Poll::Pending => i += 1,
        }
    }
}

/// What the runner keeps of each simulated host.
struct HostHandle {
    loader: MapLoader,
    /// The running switch's command channel (replaced on each start).
    commands: Arc<Mutex<Option<mpsc::Sender<Command>>>>,
}

/// Runs `scenario` once on `opts.network` with `opts.seed`.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<Outcome, RunError> {
    let setup_err = |message: String| RunError::Setup { scenario: scenario.name.clone(), message };

    let mut builder = turmoil::Builder::new();
    builder
        .simulation_duration(scenario.duration + MARGIN)
        .tick_duration(TICK)
        .epoch(epoch())
        .rng_seed(opts.seed)
        .ip_version(match opts.network {
            Network::V4 => turmoil::IpVersion::V4,
            Network::V6 => turmoil::IpVersion::V6,
        })
        .min_message_latency(scenario.link.latency)
        .max_message_latency(scenario.link.latency)
        .udp_capacity(UDP_CAPACITY);
    let mut sim = builder.build();

    // Addresses first (sorted by name), so configs can name every host. On
    // IPv4, what sits behind a NAT gets a private 10.N.0.x address turmoil
    // knows by number only; everything else gets turmoil's next address.
    let behind: BTreeMap<&str, &str> = scenario
        .hosts
        .iter()
        .filter_map(|h| Some((h.name.as_str(), h.behind.as_deref()?)))
        .chain(scenario.actors.iter().filter_map(|a| Some((a.name.as_str(), a.behind.as_deref()?))))
        .collect();
    let names: std::collections::BTreeSet<&str> = scenario
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .chain(scenario.nats.iter().map(|n| n.name.as_str()))
        .chain(scenario.actors.iter().map(|a| a.name.as_str()))
        .collect();
    let mut ips = BTreeMap::new();
    // Host name -> the name turmoil knows it by.
    let mut tids: BTreeMap<String, String> = BTreeMap::new();
    let mut inside_count: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &names {
        let nat_index = behind.get(name).and_then(|n| scenario.nats.iter().position(|s| s.name == *n));
        let (ip, tid) = match (nat_index, opts.network) {
            (Some(i), Network::V4) => {
                let k = inside_count.entry(behind[name]).or_default();
                *k += 1;
                let ip = crate::parties::inside_v4(i, *k - 1);
                (ip, ip.to_string())
            }
            _ => (sim.lookup(*name), name.to_string()),
        };
        tids.insert(name.to_string(), tid);
        ips.insert(name.to_string(), ip);
    }
    let tid = move |name: &str| -> String { tids.get(name).cloned().unwrap_or_else(|| name.to_string()) };
    let addrs = Addresses { network: opts.network, ips };

    let world = SimWorld::new(derive_seed(opts.seed, "link-model", 0), scenario.link);
    for nat in &scenario.nats {
        let seed = derive_seed(opts.seed, &format!("nat:{}", nat.name), 0);
        world.add_nat(&nat.name, nat.build(addrs.ips[&nat.name], seed));
    }
    for (name, ip) in &addrs.ips {
        world.set_address(name, *ip);
    }
    for (host, nat) in &behind {
        world.put_behind(host, nat);
    }
    if opts.pcap {
        world.enable_capture(scenario.capture.clone());
    }
    let trace: Trace = Arc::new(Mutex::new(Vec::new()));
    let mut handles: BTreeMap<String, HostHandle> = BTreeMap::new();

    for h in &scenario.hosts {
        world.add_host(&h.name);
        if !h.ipv6 {
            world.set_ipv6_unavailable(&h.name);
        }
        let mut files = BTreeMap::new();
        for (fname, text) in &h.files {
            let expanded =
                addrs.expand(text, Some(&h.name)).map_err(|e| setup_err(format!("host `{}` {fname}: {e}", h.name)))?;
            files.insert(fname.clone(), expanded);
        }
        let loader = MapLoader(Arc::new(Mutex::new(files)));
        // The host's disk, as far as `[state] dir` is concerned: it outlives
        // crashes and restarts of the host, and its clock is simulated time
        // from the capture epoch, so saved deadlines are the same every run.
        let state: Arc<dyn StateStore> =
            Arc::new(MemoryStore::new(|| epoch() + turmoil::sim_elapsed().unwrap_or_default()));
        let commands: Arc<Mutex<Option<mpsc::Sender<Command>>>> = Arc::new(Mutex::new(None));
        let incarnation = Arc::new(AtomicU64::new(0));
        let (world2, trace2, loader2, commands2, name, base_seed) =
            (world.clone(), trace.clone(), loader.clone(), commands.clone(), h.name.clone(), opts.seed);
        sim.host(tid(&h.name), move || {
            let n = incarnation.fetch_add(1, Ordering::Relaxed);
            let seed = derive_seed(base_seed, &name, n);
            let (tx, rx) = mpsc::channel(64);
            *commands2.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
            let net = world2.net(&name);
            let (sink_trace, sink_host) = (trace2.clone(), name.clone());
            let events = move |event: &Event| {
                let at = turmoil::sim_elapsed().unwrap_or_default();
                push(&sink_trace, TimedEvent { at, host: sink_host.clone(), event: TraceEvent::Switch(event.clone()) });
            };
            let (trace, host, loader, state) = (trace2.clone(), name.clone(), loader2.clone(), state.clone());
            async move {
                let setup = SwitchSetup { loader, seed, events, commands: rx, state: Some(state) };
                let result = switch::runtime::run(net, setup).await;
                let at = turmoil::sim_elapsed().unwrap_or_default();
                let error = result.err().map(|e| e.to_string());
                push(&trace, TimedEvent { at, host, event: TraceEvent::World(WorldEvent::SwitchExited { error }) });
                Ok(())
            }
        });
        handles.insert(h.name.clone(), HostHandle { loader, commands });
    }

    let phones: Arc<Vec<String>> = Arc::new(
        scenario
            .actors
            .iter()
            .filter(|a| matches!(a.kind, crate::parties::ActorKind::Phone(_)))
            .map(|a| a.name.clone())
            .collect(),
    );
    for a in &scenario.actors {
        world.add_host(&a.name);
        let phones = phones.clone();
        let (net, spec, trace2) = (world.net(&a.name), a.clone(), trace.clone());
        let (own, server) = (addrs.ips[&a.name], addrs.ips[&a.server]);
        let incarnation = Arc::new(AtomicU64::new(0));
        let base_seed = opts.seed;
        sim.host(tid(&a.name), move || {
            let seed = derive_seed(base_seed, &spec.name, incarnation.fetch_add(1, Ordering::Relaxed));
            let (net, spec, trace, phones) = (net.clone(), spec.clone(), trace2.clone(), phones.clone());
            async move {
                let actor = spec.build(own, server, &phones, seed, tokio::time::Instant::now().into_std());
                let host = spec.name.clone();
                let sink = move |event: crate::actors::ActorEvent| {
                    let at = turmoil::sim_elapsed().unwrap_or_default();
                    push(&trace, TimedEvent { at, host: host.clone(), event: TraceEvent::Actor(event) });
                };
                crate::actors::drive_simulated(net, actor, sink).await.map_err(|e| e.into())
            }
        });
    }
    let drain_nat_events = |world: &SimWorld, trace: &Trace| {
        for (at, event) in world.take_nat_events() {
            let host = event.nat().to_string();
            push(trace, TimedEvent { at, host, event: TraceEvent::Nat(event) });
        }
    };

    // Drive the simulation; timeline actions happen between steps at their times.
    let mut labels: BTreeMap<String, Duration> = BTreeMap::new();
    let mut pending: Vec<PendingCommand> = Vec::new();
    let mut next = 0;
    loop {
        let now = sim.elapsed();
        poll_commands(&mut pending, &trace, now);
        while let Some(entry) = scenario.timeline.get(next).filter(|e| e.at <= now) {
            next += 1;
            if let Some(l) = &entry.label {
                labels.insert(l.clone(), now);
            }
            let label = entry.label.clone();
            let (host, event) = match &entry.action {
                Action::Command { host, line } => {
                    let line =
                        addrs.expand(line, Some(host)).map_err(|e| setup_err(format!("command on {host}: {e}")))?;
                    let sender = handles
                        .get(host)
                        .and_then(|h| h.commands.lock().unwrap_or_else(|p| p.into_inner()).clone())
                        .filter(|_| sim.is_host_running(tid(host)));
                    let mut command = PendingCommand {
                        host: host.clone(),
                        line: line.clone(),
                        label,
                        issued: now,
                        answer: Box::pin(async { None }),
                    };
                    match sender {
                        None => push(&trace, command.event(now, "the switch is not running".to_string())),
                        Some(tx) => {
                            command.answer = Box::pin(async move { switch::control::execute(&line, &tx).await });
                            pending.push(command);
                            poll_commands(&mut pending, &trace, now);
                        }
                    }
                    continue;
                }
                Action::Partition { from, to, oneway } => {
                    if *oneway {
                        world.block(from, to);
                    } else {
                        world.partition(from, to);
                    }
                    (
                        WORLD_HOST.to_string(),
                        WorldEvent::Partition { from: from.clone(), to: to.clone(), oneway: *oneway, label },
                    )
                }
                Action::Heal { from, to, oneway } => {
                    if *oneway {
                        world.unblock(from, to);
                    } else {
                        world.heal(from, to);
                    }
                    (
                        WORLD_HOST.to_string(),
                        WorldEvent::Heal { from: from.clone(), to: to.clone(), oneway: *oneway, label },
                    )
                }
                Action::Crash { host } => {
                    if sim.is_host_running(tid(host)) {
                        sim.crash(tid(host));
                    }
                    (host.clone(), WorldEvent::Crash { label })
                }
                Action::Restart { host } => {
                    sim.bounce(tid(host));
                    (host.clone(), WorldEvent::Restart { label })
                }
                Action::SetLink { between, change } => {
                    let (between, result) = match between {
                        Some((a, b)) => {
                            let c = change.apply(world.link(a, b));
                            world.set_link(a, b, c);
                            sim.set_link_latency(tid(a), tid(b), c.latency);
                            (Some([a.clone(), b.clone()]), c)
                        }
                        None => {
                            let names = world.hosts();
                            let mut pairs = Vec::new();
                            for (i, a) in names.iter().enumerate() {
                                for b in &names[i + 1..] {
                                    pairs.push((a.clone(), b.clone(), change.apply(world.link(a, b))));
                                }
                            }
                            let d = change.apply(world.default_link());
                            world.set_default_link(d);
                            for (a, b, c) in pairs {
                                world.set_link(&a, &b, c);
                                sim.set_link_latency(tid(&a), tid(&b), c.latency);
                            }
                            (None, d)
                        }
                    };
                    (
                        WORLD_HOST.to_string(),
                        WorldEvent::SetLink {
                            between,
                            latency_ms: result.latency.as_millis() as u64,
                            jitter_ms: result.jitter.as_millis() as u64,
                            loss: result.loss,
                            duplicate: result.duplicate,
                            label,
                        },
                    )
                }
                Action::SetConfig { host, files } => {
                    let handle = handles.get(host).ok_or_else(|| setup_err(format!("unknown host `{host}`")))?;
                    let mut map = handle.loader.0.lock().unwrap_or_else(|p| p.into_inner());
                    for (fname, text) in files {
                        let expanded = addrs
                            .expand(text, Some(host))
                            .map_err(|e| setup_err(format!("set_config {host} {fname}: {e}")))?;
                        map.insert(fname.clone(), expanded);
                    }
                    (host.clone(), WorldEvent::SetConfig { files: files.keys().cloned().collect(), label })
                }
                Action::Reload { host } => {
                    let handle = handles.get(host).ok_or_else(|| setup_err(format!("unknown host `{host}`")))?;
                    let delivered = handle
                        .commands
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .is_some_and(|tx| tx.try_send(Command::Reload).is_ok());
                    (host.clone(), WorldEvent::Reload { delivered, label })
                }
            };
            push(&trace, TimedEvent { at: now, host, event: TraceEvent::World(event) });
        }
        drain_nat_events(&world, &trace);
        if now >= scenario.duration {
            break;
        }
        if let Err(e) = sim.step() {
            return Err(RunError::Simulation {
                scenario: scenario.name.clone(),
                at: crate::units::fmt_time(now),
                message: e.to_string(),
            });
        }
    }
    let sim_duration = sim.elapsed();
    poll_commands(&mut pending, &trace, sim_duration);
    for p in pending {
        push(&trace, p.event(sim_duration, "(no answer before the end of the run)".to_string()));
    }
    // Stop every host before reading results (drops sockets and pending sends).
    drop(sim);

    let mut events = std::mem::take(&mut *trace.lock().unwrap_or_else(|p| p.into_inner()));
    events.sort_by_key(|e| e.at); // stable: ties keep the order they happened in

    let wire = world.wire_stats();
    let configs: BTreeMap<String, switch::config::IaxConfig> = handles
        .iter()
        .filter_map(|(name, h)| switch::config::load(&h.loader).ok().map(|c| (name.clone(), c.iax)))
        .collect();
    let calls = crate::calls::calls(&events);
    let indexed = expect::index(&events);
    let ctx = Ctx {
        addrs: &addrs,
        labels: &labels,
        end: sim_duration,
        metrics: MetricCtx { wire: &wire, configs: &configs, calls: &calls },
    };
    let verdicts: Vec<Verdict> = scenario.expectations.iter().map(|x| expect::evaluate(x, &indexed, &ctx)).collect();
    drop(indexed);
    let passed = verdicts.iter().all(|v| v.passed);

    let mut events_jsonl = String::new();
    for e in &events {
        events_jsonl.push_str(&e.to_json_line());
        events_jsonl.push('\n');
    }
    let stats = world.stats();
    let datagrams = stats.values().map(|s| s.on_wire).sum();
    let pcap = if opts.pcap { world.pcap() } else { Vec::new() };

    let mut outcome = Outcome {
        scenario: scenario.name.clone(),
        network: opts.network,
        seed: opts.seed,
        passed,
        verdicts,
        events,
        events_jsonl,
        report_md: String::new(),
        pcap,
        datagrams,
        sim_duration,
        stats,
        addresses: addrs.ips.clone(),
        ladder_svg: None,
    };
    let ladders = crate::ladder::ladders(&calls, &wire, sim_duration);
    if !ladders.is_empty() {
        outcome.ladder_svg = Some(crate::ladder::svg(&ladders));
    }
    outcome.report_md = report::render(
        scenario,
        &outcome,
        world.captured(),
        &report::Extra { calls: &calls, wire: &wire, ladders: &ladders },
    );
    Ok(outcome)
}
