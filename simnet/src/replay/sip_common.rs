//! What the SIP replays of both roles ([`super::sip`], the switch as server,
//! and [`super::sip_client`], the switch as client) do alike: loading the
//! mapped configuration, a remote party's address rewrites, and driving the
//! simulation to the report.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use switch::config::SipSettings;

use super::compare::{Counts, Exchange, StimulusView, Verdict};
use super::remote::{Entry, Log};
use super::schedule::SharedSlip;
use super::{config, hosts, report, ReplayError, ReplayOptions, ReplayOutcome};
use crate::capture::{Capture, RoleChoice};
use crate::net::SimWorld;
use crate::trace::TimedEvent;

/// A SIP replay's configuration, mapped to the replay's addresses.
pub(super) struct SipConfig {
    pub files: BTreeMap<String, String>,
    /// What the mapping to the replay's addresses changed, for the report.
    pub address_note: Option<String>,
    /// The switch's `[sip]`, which a SIP replay needs.
    pub sip: SipSettings,
}

/// Maps the configuration `files` to the replay's addresses and loads the
/// switch's `[sip]` from them.
pub(super) fn load_sip(
    files: BTreeMap<String, String>,
    opts: &ReplayOptions,
    role: &RoleChoice,
    hosts: &hosts::Hosts,
) -> Result<SipConfig, ReplayError> {
    let (files, address_note) = super::map_config(files, opts, role, hosts);
    let loaded = config::load(&files).map_err(ReplayError::Config)?;
    let Some(sip) = loaded.switch.sip.clone() else {
        return Err(ReplayError::Config("the replay configuration has no [sip]".into()));
    };
    Ok(SipConfig { files, address_note, sip })
}

/// The captured addresses a remote party rewrites to their replay addresses
/// (the switch's and its own), leaving out those that stay the same.
pub(super) fn addresses(
    role: &RoleChoice,
    switch_ip: IpAddr,
    captured: IpAddr,
    replay: IpAddr,
) -> Vec<(IpAddr, IpAddr)> {
    let mut addresses = Vec::new();
    for (c, r) in [(role.switch.ip(), switch_ip), (captured, replay)] {
        if c != r {
            addresses.push((c, r));
        }
    }
    addresses
}

/// How a stimulus shows in an exchange: the captured message, and when the
/// replay sent it (or why not) with the rewrites applied.
pub(super) fn stimulus_view(
    frame_no: usize,
    bytes: &[u8],
    captured_at: Duration,
    sent: Result<Duration, String>,
    notes: Vec<String>,
    sent_bytes: Option<Vec<u8>>,
) -> StimulusView {
    StimulusView {
        frame_no,
        label: super::sip::label(bytes).unwrap_or_else(|| format!("{} bytes, not SIP", bytes.len())),
        captured_at,
        sent,
        notes,
        captured_bytes: bytes.to_vec(),
        sent_bytes,
    }
}

/// The verdict on an exchange whose stimulus the replay could not send.
pub(super) fn not_sent(why: &str) -> Verdict {
    Verdict::Diverged { field: "stimulus".into(), captured: "sent".into(), replayed: format!("not sent ({why})") }
}

/// Puts the exchanges of all remote parties in captured-time order and
/// numbers them.
pub(super) fn in_order(mut all: Vec<Exchange>) -> Vec<Exchange> {
    let time = |e: &Exchange| {
        e.stimulus
            .as_ref()
            .map(|s| s.captured_at)
            .or(e.captured.first().map(|a| a.at))
            .or(e.replayed.first().map(|a| a.at))
            .unwrap_or_default()
    };
    // Stable: ties keep each remote's order.
    all.sort_by_key(|e| (time(e), e.remote));
    for (i, e) in all.iter_mut().enumerate() {
        e.n = i + 1;
    }
    all
}

/// What a SIP replay's report says alike in both roles.
pub(super) struct Run<'a> {
    pub capture: &'a Capture,
    pub opts: &'a ReplayOptions,
    pub summary: &'a str,
    pub role: &'a RoleChoice,
    pub switch_addr: SocketAddr,
    pub replay_remotes: &'a [SocketAddr],
    /// Simulated host names of the remote parties.
    pub remote_names: &'a [String],
    pub config_text: Option<String>,
    pub address_note: Option<String>,
    pub sip_context: String,
}

impl Run<'_> {
    /// Drives the simulation to `end` (later as the parties' schedules
    /// slipped), collects what the switch and the parties left behind, and
    /// makes the outcome: `judge` gives the exchanges and the report's SIP
    /// section from the parties' logs.
    pub(super) fn finish(
        self,
        mut sim: turmoil::Sim<'_>,
        world: &SimWorld,
        end: Duration,
        trace: &Mutex<Vec<TimedEvent>>,
        (logs, slips): (&[Log], &[SharedSlip]),
        judge: impl FnOnce(&[Vec<Entry>]) -> (Vec<Exchange>, String),
    ) -> Result<ReplayOutcome, ReplayError> {
        let sim_duration = super::drive(&mut sim, end, slips)?;
        drop(sim);
        let (switch_events, logs, slip) = super::collect(trace, logs, slips);
        let (exchanges, section) = judge(&logs);
        let inputs = report::Inputs {
            capture: self.capture,
            opts: self.opts,
            summary: self.summary,
            role: Some((self.role, self.switch_addr, self.replay_remotes)),
            sip_role: Some(self.role),
            config_text: self.config_text,
            exchanges: &exchanges,
            switch_events: &switch_events,
            logs: &logs,
            remotes: self.remote_names,
            sim_duration,
            note: self.address_note,
            sip_section: Some(section),
            slip: Some(slip),
            sip_context: Some(self.sip_context),
        };
        let mut outcome = inputs.finish(world.pcap(), 0);
        outcome.counts = Counts::of(&exchanges);
        outcome.exchanges = exchanges;
        Ok(outcome)
    }
}
