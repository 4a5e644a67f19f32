//! The timestamped event trace of a run: switch events plus what the
//! simulated world did (partitions, crashes, config changes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Something the simulator did or saw, recorded next to the switches' events.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorldEvent {
    /// Datagrams from `from` to `to` (and back unless `oneway`) are dropped.
    Partition { from: String, to: String, oneway: bool, label: Option<String> },
    /// The partition between `from` and `to` is lifted.
    Heal { from: String, to: String, oneway: bool, label: Option<String> },
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
    SetConfig { files: Vec<String>, label: Option<String> },
    /// `Command::Reload` was sent (`delivered` false: the switch was not running).
    Reload { delivered: bool, label: Option<String> },
    /// The switch's run loop returned (`error` when it failed, e.g. bad config).
    SwitchExited { error: Option<String> },
    /// An operator command ran through `switch::control::execute` (recorded
    /// when its answer came back). `values` are the numbers the answer states
    /// (see [`answer_values`]), flattened into the event's fields.
    Command {
        line: String,
        answer: String,
        issued_ms: u64,
        label: Option<String>,
        #[serde(flatten)]
        values: BTreeMap<String, u64>,
    },
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
            WorldEvent::Command { .. } => "command",
        }
    }
}

/// An event in the trace: from a switch, or from the simulated world.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TraceEvent {
    Switch(switch::event::Event),
    World(WorldEvent),
    /// A NAT device or firewall (the host field names it).
    Nat(crate::net::NatEvent),
    /// A phone, attacker or crowd (the host field names it).
    Actor(crate::actors::ActorEvent),
}

impl TraceEvent {
    /// The name used in `events.jsonl` and scenario expectations.
    pub fn name(&self) -> &'static str {
        match self {
            TraceEvent::Switch(e) => e.name(),
            TraceEvent::World(e) => e.name(),
            TraceEvent::Nat(e) => e.name(),
            TraceEvent::Actor(e) => e.name(),
        }
    }

    /// The event as a JSON object (with its `event` name).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .unwrap_or_else(|e| serde_json::json!({ "event": self.name(), "unserialisable": e.to_string() }))
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

/// Fields of the `command` event itself, which answer values never replace.
const COMMAND_FIELDS: &[&str] = &["line", "answer", "issued_ms", "label", "host", "event", "t_ms"];

/// The numbers an operator command's answer states, as `command` event fields:
///
/// - `KEY: N` lines (`show stats`): the key in snake case, e.g.
///   `call numbers in use: 2` gives `call_numbers_in_use = 2` and
///   `dropped (unknown call): 4` gives `dropped_unknown_call = 4`;
/// - `N active IAX2 call(s)` (`iax2 show channels`): `active_calls`;
/// - `N call(s) hung up` (`hangup all`): `hung_up`;
/// - `N call(s) placed` / `N of M call(s) placed` (`originate`): `placed`,
///   and `refused = M - N` (0 when all were placed).
pub fn answer_values(answer: &str) -> BTreeMap<String, u64> {
    let mut values = BTreeMap::new();
    let number = |s: &str| s.trim().parse::<u64>().ok();
    for line in answer.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let first = words.next().and_then(number);
        let rest: Vec<&str> = words.collect();
        match (first, rest.as_slice()) {
            (Some(n), ["active", "IAX2", "call(s)", ..]) => {
                values.insert("active_calls".to_string(), n);
                continue;
            }
            (Some(n), ["call(s)", "hung", "up", ..]) => {
                values.insert("hung_up".to_string(), n);
                continue;
            }
            (Some(n), ["call(s)", "placed", ..]) => {
                values.insert("placed".to_string(), n);
                values.insert("refused".to_string(), 0);
                continue;
            }
            (Some(n), ["of", m, "call(s)", "placed", ..]) => {
                values.insert("placed".to_string(), n);
                values.insert("refused".to_string(), number(m).unwrap_or(n).saturating_sub(n));
                continue;
            }
            _ => {}
        }
        if let Some((key, value)) = line.rsplit_once(':') {
            // Words only (`dropped (unknown call)`), so addresses such as `fe80::1` never count.
            let words_only = key.starts_with(|c: char| c.is_ascii_alphabetic())
                && key.chars().all(|c| c.is_ascii_alphabetic() || matches!(c, ' ' | '(' | ')' | '-' | '_'));
            if let Some(n) = number(value).filter(|_| words_only) {
                let mut snake = String::new();
                for c in key.chars() {
                    if c.is_ascii_alphanumeric() {
                        snake.push(c.to_ascii_lowercase());
                    } else if !snake.is_empty() && !snake.ends_with('_') {
                        snake.push('_');
                    }
                }
                let snake = snake.trim_end_matches('_').to_string();
                if !snake.is_empty() && !COMMAND_FIELDS.contains(&snake.as_str()) {
                    values.insert(snake, n);
                }
            }
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_give_their_numbers() {
        let v = answer_values("datagrams in: 12\ncall numbers in use: 2\ndropped (unknown call): 4\n");
        assert_eq!(v["datagrams_in"], 12);
        assert_eq!(v["call_numbers_in_use"], 2);
        assert_eq!(v["dropped_unknown_call"], 4);
        assert_eq!(answer_values("Call  Direction\n0 active IAX2 call(s)\n")["active_calls"], 0);
        assert_eq!(answer_values("3 call(s) hung up")["hung_up"], 3);
        let v = answer_values("800 call(s) placed to IAX2/b/600");
        assert_eq!((v["placed"], v["refused"]), (800, 0));
        let v = answer_values("0 of 1 call(s) placed to IAX2/b/600; refused: trunk to 192.168.0.2:4569 is full");
        assert_eq!((v["placed"], v["refused"]), (0, 1));
        assert!(answer_values("unknown command").is_empty());
        assert!(answer_values("B  fe80::2\nA  192.168.0.1:4569").is_empty());
    }

    #[test]
    fn command_values_are_flat_fields() {
        let e = TimedEvent {
            at: Duration::from_millis(1500),
            host: "a".into(),
            event: TraceEvent::World(WorldEvent::Command {
                line: "show stats".into(),
                answer: "call numbers in use: 0".into(),
                issued_ms: 1500,
                label: None,
                values: answer_values("call numbers in use: 0"),
            }),
        };
        assert_eq!(
            e.to_json_line(),
            r#"{"t_ms":1500,"host":"a","event":"command","answer":"call numbers in use: 0","call_numbers_in_use":0,"issued_ms":1500,"label":null,"line":"show stats"}"#
        );
    }
}
