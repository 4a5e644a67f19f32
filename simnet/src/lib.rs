//! A deterministic simulated network that runs the unchanged switch.
//!
//! - [`SimNet`] implements `switch::net::Net` on turmoil, with a seeded link
//!   model (loss, duplication, jitter, partitions) and a pcap tap.
//! - [`Scenario`] files (TOML, see `docs/scenarios.md`) describe hosts, a
//!   timeline of faults and operator actions, and expectations.
//! - [`run`] plays a scenario on one network variant with one seed and
//!   returns the trace, verdicts, a Markdown report and the capture. The same
//!   scenario, seed and network give byte-identical outputs.

pub mod actors;
mod calls;
pub mod capture;
mod expect;
mod ladder;
mod metrics;
pub mod nat;
pub mod net;
mod parties;
pub mod pcap;
pub mod replay;
mod report;
mod runner;
mod scenario;
mod trace;
pub mod units;

pub use expect::Verdict;
pub use net::{HostStats, LinkConditions, SimNet, SimUdpSocket, SimWorld, WireStats};
pub use pcap::{CaptureOptions, EPOCH_UNIX_SECS};
pub use runner::{derive_seed, run, Outcome, RunError, RunOptions, TICK};
pub use scenario::{list_scenarios, Network, Scenario, ScenarioError, METRICS, SWITCH_EVENTS, WORLD_EVENTS};
pub use trace::{answer_values, TimedEvent, TraceEvent, WorldEvent, WORLD_HOST};
