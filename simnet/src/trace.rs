//! The timestamped event trace of a run: switch events plus what the
//! simulated world did (partitions, crashes, config changes).

use std::time::Duration;

use serde::Serialize;

/// Something the simulator did or saw, recorded next to the switches' events.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorldEvent {
    /// Datagrams from `from` to `to` (and back unless `oneway`) are dropped.
    Partition {
        from: String,
        to: String,
        oneway: bool,
        label: Option<String>,
    },
    /// The partition between `from` and `to` is lifted.
    Heal {
        from: String,
        to: String,
        oneway: bool,
        label: Option<String>,
    },
    /// The host's software was killed (all its state is gone).
    Crash { label: Option<String> },
    /// The host's software was started afresh from its configuration.
    Restart { label: Option<String> },
    /// Link conditions changed (`between` absent: every link).
    SetLink {
        between: Option<[String; 2]>,
        latency_ms: u64,
        jitter_ms: u64,
        loss: f64,
        duplicate: f64,
        label: Option<String>,
    },
    /// Configuration files of the host were replaced (takes effect on reload/restart).
    SetConfig {
        files: Vec<String>,
        label: Option<String>,
    },
    /// `Command::Reload` was sent (`delivered` false: the switch was not running).
    Reload {
        delivered: bool,
        label: Option<String>,
    },
    /// The switch's run loop returned (`error` when it failed, e.g. bad config).
    SwitchExited { error: Option<String> },
}

impl WorldEvent {
    pub fn name(&self) -> &'static str {
        match self {
            WorldEvent::Partition { .. } => "partition",
            WorldEvent::Heal { .. } => "heal",
            WorldEvent::Crash { .. } => "crash",
            WorldEvent::Restart { .. } => "restart",
            WorldEvent::SetLink { .. } => "set_link",
            WorldEvent::SetConfig { .. } => "set_config",
            WorldEvent::Reload { .. } => "reload",
            WorldEvent::SwitchExited { .. } => "switch_exited",
        }
    }
}

/// An event in the trace: from a switch, or from the simulated world.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TraceEvent {
    Switch(switch::event::Event),
    World(WorldEvent),
}

impl TraceEvent {
    /// The name used in `events.jsonl` and scenario expectations.
    pub fn name(&self) -> &'static str {
        match self {
            TraceEvent::Switch(e) => e.name(),
            TraceEvent::World(e) => e.name(),
        }
    }

    /// The event as a JSON object (with its `event` name).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({ "event": self.name(), "unserialisable": e.to_string() }),
        )
    }
}

/// Host name used for events that concern links rather than one host.
pub const WORLD_HOST: &str = "world";

/// One event at a simulated time on a host (`world` for link-wide events).
#[derive(Clone, Debug, PartialEq)]
pub struct TimedEvent {
    /// Simulated time since the start of the run.
    pub at: Duration,
    pub host: String,
    pub event: TraceEvent,
}

impl TimedEvent {
    /// `{"t_ms":..,"host":"a","event":"registered",...fields}`.
    pub fn to_json_line(&self) -> String {
        let mut line = format!(
            "{{\"t_ms\":{},\"host\":{},\"event\":{}",
            self.at.as_millis(),
            json_str(&self.host),
            json_str(self.event.name())
        );
        if let serde_json::Value::Object(map) = self.event.to_json() {
            for (k, v) in map {
                if k == "event" {
                    continue;
                }
                line.push(',');
                line.push_str(&json_str(&k));
                line.push(':');
                line.push_str(&v.to_string());
            }
        }
        line.push('}');
        line
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
