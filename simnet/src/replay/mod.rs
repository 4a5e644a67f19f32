//! Replaying a capture against the unchanged switch (see docs/replay.md).
//!
//! [`replay`] finds the IAX2 conversation(s) of a capture, picks the party
//! the switch plays ([`crate::capture::choose_role`]), and runs a simulation
//! with two kinds of hosts: the switch (`switch::runtime::run` on
//! [`crate::SimNet`], configured from `--config` or the built-in
//! configuration) and one scripted remote party per captured remote
//! endpoint, which sends that endpoint's captured datagrams at their captured
//! times, rewritten where they depend on the switch's own answers (call
//! numbers, sequence numbers, ACK timestamps, call tokens, MD5 results). The
//! switch's answers are then compared, exchange by exchange, with the
//! captured ones ([`compare`]), and a report, an event trace, the replay's
//! own pcap and a ladder diagram are written. The same capture and seed give
//! byte-identical outputs.
//!
//! With [`RoleRequest::Client`] the switch plays the party that sent the
//! requests instead: it registers (`register =>` lines) and places the
//! captured calls (`originate` at the captured NEW times), and the remote
//! parties play the captured answers; its requests are compared the same way.
//!
//! A capture with SIP and no IAX2 is replayed by [`sip`]: the switch (with
//! its `[sip]` from `--config`, or a built-in one) plays the party that
//! answered REGISTER/INVITE, and a scripted remote party sends the captured
//! requests and RTP, adapting tags, digest credentials, addresses and
//! transport; exchanges are SIP transactions. SIP in a capture that also
//! holds IAX2 is summarised but not replayed (listed as skipped).
//!
//! With [`RoleRequest::Client`] a SIP-only capture is replayed by
//! `sip_client`: the switch sends the captured client's REGISTERs (a
//! `[sip.gateways]` entry per captured server) and INVITEs (`originate` at
//! their captured times), the remote parties play the captured servers.

mod addresses;
pub mod compare;
pub mod config;
mod explain;
mod hosts;
mod ladder;
mod party;
mod remote;
mod report;
mod schedule;
mod script;
pub mod sip;
mod sip_client;
mod sip_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switch::config::MapLoader;
use switch::event::Event;
use switch::iax2::frame::Frame;
use switch::iax2::ie::IeLookup;
use switch::iax2::subclass::IaxSubclass;
use switch::runtime::SwitchSetup;
use tokio::sync::mpsc;

pub use compare::{Counts, Exchange, Tolerance, Verdict};
pub use schedule::Slip;

use crate::capture::{self, Capture, FlowProto, Proto, RoleChoice, RoleRequest};
use crate::net::SimWorld;
use crate::pcap::{epoch, CaptureOptions};
use crate::trace::{TimedEvent, TraceEvent, WorldEvent};
use crate::{derive_seed, LinkConditions, TICK};
use schedule::SharedSlip;

/// Simulated time before captured time 0: the switch starts and binds.
pub const LEAD: Duration = Duration::from_secs(1);
/// Simulated time after the last captured datagram (and any wait for it):
/// room for the switch's late answers and retransmissions.
pub const TAIL: Duration = Duration::from_secs(5);
/// One-way latency between the remote parties and the switch.
pub const LATENCY: Duration = Duration::from_millis(1);
/// Default tolerance on the switch's timestamps.
pub const DEFAULT_TIMESTAMP_TOLERANCE: Duration = Duration::from_millis(250);

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub seed: u64,
    pub role: RoleRequest,
    /// The switch's configuration files by name (`iax.conf`, `switch.toml`,
    /// `#include`d files); `None` for the built-in one.
    pub config: Option<BTreeMap<String, String>>,
    /// How the report names the configuration (`--config` directory).
    pub config_label: Option<String>,
    /// How the report names the capture.
    pub capture_name: String,
    pub tolerance: Tolerance,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            seed: 1,
            role: RoleRequest::Auto,
            config: None,
            config_label: None,
            capture_name: "capture".into(),
            tolerance: Tolerance { timestamp: DEFAULT_TIMESTAMP_TOLERANCE },
        }
    }
}

/// Everything a replay produced. Nothing in it depends on wall-clock time.
#[derive(Clone, Debug)]
pub struct ReplayOutcome {
    pub exchanges: Vec<Exchange>,
    pub counts: Counts,
    /// The capture summary (also in the report).
    pub summary: String,
    pub report_md: String,
    pub events_jsonl: String,
    /// The replay's own capture (simulated time from 2026-01-01T00:00:00Z).
    pub pcap: Vec<u8>,
    pub ladder_svg: String,
    /// The role the switch took, when there was IAX2 to replay.
    pub role: Option<RoleChoice>,
    /// SIP messages found and not replayed.
    pub sip_skipped: usize,
    pub sim_duration: Duration,
    /// Why the capture could not be driven (SIP over WebSocket, SCTP, a
    /// tunnel, more parties than the simulated network holds); the report
    /// says it too. `None` when it was replayed or simply holds nothing.
    pub not_replayable: Option<String>,
}

/// Why a capture could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot choose the switch's role: {0}")]
    Role(String),
    #[error("{0}")]
    Config(String),
    #[error("the simulation failed: {0}")]
    Simulation(String),
    /// A bug: something in the replay or the switch panicked on this input.
    /// Caught so that replay ends with a named reason, never exit 101.
    #[error("the replay failed on this input (a bug, please report it with the capture): {0}")]
    Panicked(String),
}

/// Replays the IAX2 or SIP conversation of `capture` against the switch.
///
/// Never panics: a panic anywhere below (the switch, turmoil, the scripted
/// parties) on some unforeseen input becomes [`ReplayError::Panicked`].
pub fn replay(capture: &Capture, opts: &ReplayOptions) -> Result<ReplayOutcome, ReplayError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replay_inner(capture, opts))).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic without a message".into());
        Err(ReplayError::Panicked(why))
    })
}

/// A replay that drives nothing, with the reason in the report.
pub(crate) fn not_replayable(
    capture: &Capture,
    opts: &ReplayOptions,
    summary: &str,
    sip_role: Option<&RoleChoice>,
    why: String,
) -> ReplayOutcome {
    let note = format!("Not replayable: {why}.");
    let mut outcome = drove_nothing(capture, opts, summary, sip_role, note, capture.count("SIP"));
    outcome.not_replayable = Some(why);
    outcome
}

/// The report of a replay that ran no simulation: what the capture holds and `note`.
fn drove_nothing(
    capture: &Capture,
    opts: &ReplayOptions,
    summary: &str,
    sip_role: Option<&RoleChoice>,
    note: String,
    sip_skipped: usize,
) -> ReplayOutcome {
    let inputs = report::Inputs {
        capture,
        opts,
        summary,
        role: None,
        sip_role,
        config_text: None,
        exchanges: &[],
        switch_events: &[],
        logs: &[],
        remotes: &[],
        sim_duration: Duration::ZERO,
        note: Some(note),
        sip_section: None,
        slip: None,
        sip_context: None,
    };
    inputs.finish(Vec::new(), sip_skipped)
}

fn replay_inner(capture: &Capture, opts: &ReplayOptions) -> Result<ReplayOutcome, ReplayError> {
    let flows = capture::find_flows(capture);
    let iax_role = capture::choose_role(capture, FlowProto::Iax2, opts.role);
    let sip_role = capture::choose_role(capture, FlowProto::Sip, opts.role);
    let summary = capture::summarize(capture, &flows, &[iax_role.clone(), sip_role.clone()]).text;
    let sip_skipped = capture.count("SIP");

    // SIP alone, `--config` binding the captured client's address: the switch plays the client.
    if capture.count("IAX2") == 0 && sip_skipped > 0 {
        if let Some(role) = bound_sip_client(capture, opts)? {
            let opts = ReplayOptions { role: RoleRequest::Client, ..opts.clone() };
            return sip_client::replay(capture, &opts, &summary, role);
        }
    }
    // SIP alone: the switch answers REGISTER/INVITE (server role; `--role client` below).
    if capture.count("IAX2") == 0 && sip_skipped > 0 && opts.role != RoleRequest::Client {
        let role = sip_role.clone().ok().or_else(|| sip::fallback_role(capture));
        if let Some(role) = role {
            let summary = match &sip_role {
                Ok(_) => summary,
                Err(_) => capture::summarize(capture, &flows, &[iax_role, Ok(role.clone())]).text,
            };
            return sip::replay(capture, opts, &summary, role);
        }
    }
    // SIP alone, `--role client`: the switch sends the captured REGISTERs/INVITEs.
    if capture.count("IAX2") == 0 && sip_skipped > 0 && opts.role == RoleRequest::Client {
        if let Ok(role) = sip_role.clone() {
            return sip_client::replay(capture, opts, &summary, role);
        }
    }
    if capture.count("IAX2") == 0 {
        if let Some(why) = hosts::undrivable(capture) {
            return Ok(not_replayable(capture, opts, &summary, sip_role.as_ref().ok(), why));
        }
        let note = if sip_skipped > 0 && opts.role == RoleRequest::Client {
            "The capture holds no IAX2, and no SIP REGISTER or INVITE was answered: there is no client whose place the switch could take."
        } else {
            "The capture holds no IAX2: there is nothing this switch can be driven with."
        };
        return Ok(drove_nothing(capture, opts, &summary, sip_role.as_ref().ok(), note.into(), sip_skipped));
    }
    let role = iax_role.map_err(ReplayError::Role)?;
    // `--config` binds one captured party's address: the switch plays that
    // party, answering (server) or requesting (client), rather than a guess.
    let (role, client) = match bound_role(capture, opts, &role)? {
        Some(found) => found,
        None => (role, opts.role == RoleRequest::Client),
    };
    // `--role client`: the switch sends the captured requests (its `register =>`
    // lines, `originate` at the captured NEW times); the remote party answers.

    // Hosts: the captured addresses when they make a valid simulated network.
    let v4 = role.switch.is_ipv4();
    let hosts = match hosts::assign(role.switch, &role.remotes) {
        Ok(h) => h,
        Err(why) => return Ok(not_replayable(capture, opts, &summary, sip_role.as_ref().ok(), why)),
    };
    let (switch_ip, remote_ips) = (hosts.switch, hosts.remotes.clone());
    let switch_name = switch_ip.to_string();
    let remote_names: Vec<String> = remote_ips.iter().map(IpAddr::to_string).collect();
    let replay_remotes: Vec<SocketAddr> =
        role.remotes.iter().zip(&remote_ips).map(|(r, ip)| SocketAddr::new(*ip, r.port())).collect();

    // The configuration.
    let usernames: BTreeSet<String> = capture
        .messages
        .iter()
        .filter(|m| if client { m.src == role.switch } else { m.dst == role.switch })
        .filter_map(|m| match &m.proto {
            Proto::Iax2(Frame::Full(f))
                if script::is_opener(f) && (!client || f.iax() == Some(IaxSubclass::RegReq)) =>
            {
                f.ies().ok()?.username().map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    // The calls the switch's party placed: `--role client`, and with `--config`
    // also the server role (one party in both roles: callee of the remote's
    // NEWs, caller of its own, driven by `originate` at their captured times).
    let calls = if client || opts.config.is_some() { script::client_calls(capture, role.switch) } else { Vec::new() };
    let files = opts.config.clone().unwrap_or_else(|| match (client, replay_remotes.first()) {
        (true, Some(remote)) => {
            let user = calls.iter().find_map(|c| c.username.as_deref());
            config::builtin_client(role.switch, *remote, &usernames, user)
        }
        _ => config::builtin(role.switch, &usernames),
    });
    let (files, address_note) = map_config(files, opts, &role, &hosts);
    let loaded = config::load(&files).map_err(ReplayError::Config)?;
    let mut secrets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &loaded.iax.peers {
        secrets.entry(p.name.to_ascii_lowercase()).or_default().extend(config::secrets(&loaded, &p.name));
    }
    for v in secrets.values_mut() {
        v.dedup();
    }
    let bind_port = loaded.iax.general.bind.port();

    // The conversation.
    let t0 = capture
        .messages
        .iter()
        .filter(|m| matches!(m.proto, Proto::Iax2(_)) && (m.src == role.switch || m.dst == role.switch))
        .map(|m| m.ts)
        .min()
        .unwrap_or_default();
    let plans = script::plans(capture, role.switch, &role.remotes, t0);
    let last = plans
        .iter()
        .flat_map(|p| p.stimuli.iter().map(|s| s.at).chain(p.answers.iter().map(|a| a.1)))
        .max()
        .unwrap_or_default();
    let end = LEAD + last + remote::DEPENDENCY_WAIT + TAIL;

    // `--role client`: the calls to place, as control lines at their captured times.
    let peer = client_peer(&loaded, &opts.config, &role.remotes, &replay_remotes);
    let originates: Vec<(Duration, String)> = calls
        .iter()
        .map(|c| {
            let exten = c.called.as_deref().unwrap_or("s");
            let hold = c.hold.map(|h| format!(" hold={:.3}", h.as_secs_f64())).unwrap_or_default();
            (c.ts.saturating_sub(t0), format!("originate IAX2/{peer}/{exten} app=pattern{hold}"))
        })
        .collect();

    let switch_addr = SocketAddr::new(switch_ip, bind_port);

    let (mut sim, world) = replay_world(opts.seed, v4, end);

    // The switch, unchanged; `--role client`: it starts at captured time 0
    // with the control lines.
    let trace: Arc<Mutex<Vec<TimedEvent>>> = Arc::new(Mutex::new(Vec::new()));
    // One party in both roles (server role, the switch's party also opened
    // dialogs: registered, qualified, called): the switch starts just before
    // its party's first captured datagram, so that its own requests (sent at
    // start) are not early.
    let both_roles = !client
        && opts.config.is_some()
        && capture.messages.iter().any(|m| {
            m.src == role.switch
                && matches!(&m.proto, Proto::Iax2(Frame::Full(f)) if script::is_opener(f) && f.dst_call == 0)
        });
    // It starts when its party first spoke (what the remote sent before went unanswered there too).
    let first_spoke = capture
        .messages
        .iter()
        .find(|m| m.src == role.switch && matches!(m.proto, Proto::Iax2(_)))
        .map(|m| m.ts.saturating_sub(t0))
        .unwrap_or_default();
    let start = if (client || both_roles) && !first_spoke.is_zero() {
        (LEAD + first_spoke).saturating_sub(Duration::from_millis(1))
    } else if client || both_roles {
        LEAD
    } else {
        Duration::ZERO
    };
    let lines = (client || both_roles || !originates.is_empty()).then(|| (originates.clone(), start));
    spawn_switch(&mut sim, &world, &switch_name, &files, derive_seed(opts.seed, "switch", 0), &trace, lines);

    // The remote parties.
    let logs: Vec<remote::Log> = plans.iter().map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let slips: Vec<SharedSlip> = plans.iter().map(|_| SharedSlip::default()).collect();
    for (((plan, name), log), slip) in plans.iter().zip(&remote_names).zip(&logs).zip(&slips) {
        world.add_host(name);
        let setup = remote::Setup {
            plan: plan.clone(),
            net: world.net(name),
            port: plan.remote.port(),
            switch: switch_addr,
            lead: LEAD,
            secrets: secrets.clone(),
            log: log.clone(),
            slip: slip.clone(),
        };
        sim.host(name.as_str(), move || remote::run(setup.clone()));
    }

    let sim_duration = drive(&mut sim, end, &slips)?;
    drop(sim);
    let (switch_events, logs, slip) = collect(&trace, &logs, &slips);
    let exchanges = compare::exchanges(capture, &plans, &logs, LEAD, &replay_remotes, &opts.tolerance);
    let config_text = files.get("iax.conf").map(|iax| {
        let mut s = format!("iax.conf:\n{iax}");
        if let Some(t) = files.get("extensions.conf") {
            s.push_str(&format!("\nextensions.conf:\n{t}"));
        }
        if let Some(t) = files.get("switch.toml") {
            s.push_str(&format!("\nswitch.toml:\n{t}"));
        }
        s
    });
    let inputs = report::Inputs {
        capture,
        opts,
        summary: &summary,
        role: Some((&role, switch_addr, &replay_remotes)),
        sip_role: sip_role.as_ref().ok(),
        config_text: if opts.config.is_none() { config_text } else { None },
        exchanges: &exchanges,
        switch_events: &switch_events,
        logs: &logs,
        remotes: &remote_names,
        sim_duration,
        note: address_note,
        sip_section: None,
        slip: Some(slip),
        sip_context: None,
    };
    let mut outcome = inputs.finish(world.pcap(), sip_skipped);
    outcome.exchanges = exchanges;
    Ok(outcome)
}

/// With `--config`: the files with the captured parties' addresses mapped to
/// their simulated ones, and the report's paragraph saying which.
pub(crate) fn map_config(
    files: BTreeMap<String, String>,
    opts: &ReplayOptions,
    role: &RoleChoice,
    hosts: &hosts::Hosts,
) -> (BTreeMap<String, String>, Option<String>) {
    if opts.config.is_none() {
        return (files, None);
    }
    let remotes: Vec<(SocketAddr, IpAddr)> = role.remotes.iter().copied().zip(hosts.remotes.iter().copied()).collect();
    let parties = addresses::Parties { switch: (role.switch, hosts.switch), remotes: &remotes };
    let (files, notes) = addresses::map(&files, &parties);
    if notes.is_empty() {
        return (files, None);
    }
    let lines: Vec<String> = notes.iter().map(|n| format!("- {n}")).collect();
    let note = format!(
        "Addresses of `--config` that name captured parties, mapped to the simulated network (the switch binds \
         no address the simulated network lacks and never registers to itself):\n\n{}",
        lines.join("\n")
    );
    (files, Some(note))
}

/// The IAX2 role `--config` implies: the party whose address it binds
/// (`bindaddr`/`bindport`), with whether the switch is then the client.
/// `None` when the bind address names no single captured party (0.0.0.0 on
/// a port both use) or the role was asked for explicitly.
fn bound_role(
    capture: &Capture,
    opts: &ReplayOptions,
    guessed: &RoleChoice,
) -> Result<Option<(RoleChoice, bool)>, ReplayError> {
    let (Some(files), RoleRequest::Auto) = (&opts.config, opts.role) else { return Ok(None) };
    let bind = config::load(files).map_err(ReplayError::Config)?.iax.general.bind;
    let endpoints: BTreeSet<SocketAddr> =
        capture.messages.iter().filter(|m| matches!(m.proto, Proto::Iax2(_))).flat_map(|m| [m.src, m.dst]).collect();
    let endpoints: Vec<SocketAddr> = endpoints.into_iter().collect();
    let Some(party) = addresses::bound(bind, &endpoints) else { return Ok(None) };
    if party == guessed.switch {
        return Ok(None);
    }
    let Ok(as_client) = capture::choose_role(capture, FlowProto::Iax2, RoleRequest::Client) else { return Ok(None) };
    if as_client.switch != party {
        return Ok(None);
    }
    let reason =
        format!("--config binds {bind}, which is {party}: the switch plays it, as the client ({})", as_client.reason);
    Ok(Some((RoleChoice { reason, ..as_client }, true)))
}

/// The SIP client role `--config` implies: its `[sip] listen` is the
/// address of the party that sent the answered REGISTERs/INVITEs. `None`
/// when the role was asked for, there is no `[sip]`, or it binds another party.
fn bound_sip_client(capture: &Capture, opts: &ReplayOptions) -> Result<Option<RoleChoice>, ReplayError> {
    let (Some(files), RoleRequest::Auto) = (&opts.config, opts.role) else { return Ok(None) };
    let Some(sip) = config::load(files).map_err(ReplayError::Config)?.switch.sip else { return Ok(None) };
    let endpoints: BTreeSet<SocketAddr> =
        capture.messages.iter().filter(|m| matches!(m.proto, Proto::Sip(_))).flat_map(|m| [m.src, m.dst]).collect();
    let endpoints: Vec<SocketAddr> = endpoints.into_iter().collect();
    let Some(party) = addresses::bound(sip.listen, &endpoints) else { return Ok(None) };
    let Ok(client) = capture::choose_role(capture, FlowProto::Sip, RoleRequest::Client) else { return Ok(None) };
    let server = capture::choose_role(capture, FlowProto::Sip, RoleRequest::Auto).ok().map(|r| r.switch);
    if client.switch != party || server == Some(party) {
        return Ok(None);
    }
    let reason = format!(
        "--config listens on {}, which is {party}: the switch plays it, as the client ({})",
        sip.listen, client.reason
    );
    Ok(Some(RoleChoice { reason, ..client }))
}

/// What a run left behind, taken out of the shared cells: the switch's
/// events in simulated-time order, each party's log, their slip together.
pub(crate) fn collect(
    trace: &Mutex<Vec<TimedEvent>>,
    logs: &[remote::Log],
    slips: &[SharedSlip],
) -> (Vec<TimedEvent>, Vec<Vec<remote::Entry>>, Slip) {
    let mut events = std::mem::take(&mut *trace.lock().unwrap_or_else(|p| p.into_inner()));
    events.sort_by_key(|e| e.at);
    let logs = logs.iter().map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|p| p.into_inner()))).collect();
    let slip = Slip::combine(&slips.iter().map(|s| *s.lock().unwrap_or_else(|p| p.into_inner())).collect::<Vec<_>>());
    (events, logs, slip)
}

/// How much longer than planned a replay may run for its parties' slipped
/// schedules: [`replay_world`] gives the simulation a minute of room.
const SLIP_ROOM: Duration = Duration::from_secs(50);

/// The one drive loop of every replay: steps the simulation to `end`, later
/// by as much as the parties' schedules slipped waiting for the switch.
fn drive(sim: &mut turmoil::Sim<'_>, end: Duration, slips: &[SharedSlip]) -> Result<Duration, ReplayError> {
    loop {
        let slip = slips.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).total).max().unwrap_or_default();
        if sim.elapsed() >= end + slip.min(SLIP_ROOM) {
            return Ok(sim.elapsed());
        }
        sim.step().map_err(|e| ReplayError::Simulation(e.to_string()))?;
    }
}

/// The simulated world of a replay: one latency on every link, a capture of
/// every datagram, and room to run `end` plus a minute.
fn replay_world(seed: u64, v4: bool, end: Duration) -> (turmoil::Sim<'static>, SimWorld) {
    let mut builder = turmoil::Builder::new();
    builder
        .simulation_duration(end + Duration::from_secs(60))
        .tick_duration(TICK)
        .epoch(epoch())
        .rng_seed(seed)
        .ip_version(if v4 { turmoil::IpVersion::V4 } else { turmoil::IpVersion::V6 })
        .min_message_latency(LATENCY)
        .max_message_latency(LATENCY)
        .udp_capacity(4096);
    let sim = builder.build();
    let link = LinkConditions { latency: LATENCY, ..LinkConditions::default() };
    let world = SimWorld::new(derive_seed(seed, "link-model", 0), link);
    world.enable_capture(CaptureOptions::default());
    (sim, world)
}

/// Starts the unchanged switch on host `name`, its events stamped into
/// `trace`. With `client_lines` it starts after their delay (`--role client`:
/// captured time 0, `LEAD`) and runs those control lines at their times.
fn spawn_switch(
    sim: &mut turmoil::Sim<'_>,
    world: &SimWorld,
    name: &str,
    files: &BTreeMap<String, String>,
    seed: u64,
    trace: &Arc<Mutex<Vec<TimedEvent>>>,
    client_lines: Option<(Vec<(Duration, String)>, Duration)>,
) {
    world.add_host(name);
    let (world, trace, name, files) = (world.clone(), trace.clone(), name.to_string(), files.clone());
    let host = name.clone();
    let commands: Arc<Mutex<Option<mpsc::Sender<switch::runtime::Command>>>> = Arc::new(Mutex::new(None));
    sim.host(host.as_str(), move || {
        let (tx, rx) = mpsc::channel(8);
        let (control, cmd_sink, cmd_host, lines) = (tx.clone(), trace.clone(), name.clone(), client_lines.clone());
        // Keep the sender alive: a closed command channel stops the switch.
        *commands.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let net = world.net(&name);
        let (sink, host) = (trace.clone(), name.clone());
        let events = move |event: &Event| {
            let at = turmoil::sim_elapsed().unwrap_or_default();
            let e = TimedEvent { at, host: host.clone(), event: TraceEvent::Switch(event.clone()) };
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        };
        let (trace, host, loader) = (trace.clone(), name.clone(), MapLoader::from_files(files.clone()));
        async move {
            if let Some((lines, start)) = lines {
                // `--role client`: captured time 0 is the requesting party's first message: start then.
                tokio::time::sleep(start).await;
                tokio::spawn(control_lines(lines, control, cmd_sink, cmd_host));
            }
            let result =
                switch::runtime::run(net, SwitchSetup { loader, seed, events, commands: rx, state: None }).await;
            let at = turmoil::sim_elapsed().unwrap_or_default();
            let error = result.err().map(|e| e.to_string());
            let e = TimedEvent { at, host, event: TraceEvent::World(WorldEvent::SwitchExited { error }) };
            trace.lock().unwrap_or_else(|p| p.into_inner()).push(e);
            Ok(())
        }
    });
}

/// The peer `originate` dials in `--role client`: the built-in one, else the
/// `--config` peer whose host is the remote party's (captured or replayed)
/// address, else the first peer with a fixed host.
fn client_peer(
    loaded: &switch::config::LoadedConfig,
    given: &Option<BTreeMap<String, String>>,
    captured: &[SocketAddr],
    replayed: &[SocketAddr],
) -> String {
    if given.is_none() {
        return config::BUILTIN_PEER.to_string();
    }
    let fixed = || {
        loaded.iax.peers.iter().filter_map(|p| match &p.host {
            switch::config::model::Host::Static(h) => Some((p, h.trim_matches(|c| c == '[' || c == ']'))),
            switch::config::model::Host::Dynamic { .. } => None,
        })
    };
    let remote = |h: &str| captured.iter().chain(replayed).any(|a| h.parse::<IpAddr>().ok() == Some(a.ip()));
    fixed()
        .find(|(_, h)| remote(h))
        .or_else(|| fixed().next())
        .map(|(p, _)| p.name.clone())
        // A dynamic peer (`host=dynamic`) the remote party registers as.
        .or_else(|| loaded.iax.peers.first().map(|p| p.name.clone()))
        .unwrap_or_else(|| config::BUILTIN_PEER.to_string())
}

/// Runs `lines` (`originate ...`) on the switch at their times (since captured
/// time 0, which is `LEAD` after the start), recording each answer as a
/// `command` event.
async fn control_lines(
    lines: Vec<(Duration, String)>,
    commands: mpsc::Sender<switch::runtime::Command>,
    sink: Arc<Mutex<Vec<TimedEvent>>>,
    host: String,
) {
    for (at, line) in lines {
        let due = LEAD + at;
        let now = turmoil::sim_elapsed().unwrap_or_default();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let issued = turmoil::sim_elapsed().unwrap_or_default();
        let answer = switch::control::execute(&line, &commands).await.unwrap_or_default();
        let at = turmoil::sim_elapsed().unwrap_or_default();
        let values = crate::trace::answer_values(&answer);
        let event = WorldEvent::Command { line, answer, issued_ms: issued.as_millis() as u64, label: None, values };
        sink.lock().unwrap_or_else(|p| p.into_inner()).push(TimedEvent {
            at,
            host: host.clone(),
            event: TraceEvent::World(event),
        });
    }
}
