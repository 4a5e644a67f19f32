//! The scenario file's NAT devices (`[nats.NAME]`) and parties that are not
//! our switch (`[actors.NAME]`): their TOML shape, validation, and how the
//! runner turns them into [`Nat`]s and [`Actor`]s for one run.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use serde::Deserialize;
use toml::Spanned;

use crate::actors::attack::{AttackConfig, Attacker, Kind};
use crate::actors::phone::{Phone, PhoneConfig, PlannedCall};
use crate::actors::Actor;
use crate::nat::{Behaviour, Nat, NatConfig};
use crate::units::Dur;

/// A problem in the file: where (byte span), what, and what to do.
pub(crate) type PartyError = (Option<Range<usize>>, String, String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNat {
    mapping: Option<Spanned<String>>,
    filtering: Option<Spanned<String>>,
    binding_timeout: Option<Dur>,
    inbound_refresh: Option<bool>,
    port_preservation: Option<bool>,
    hairpinning: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCall {
    at: Dur,
    to: String,
    hold: Option<Dur>,
    /// Place it `count` times, `every` apart.
    every: Option<Dur>,
    count: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawActor {
    kind: Spanned<String>,
    pub(crate) behind: Option<Spanned<String>>,
    /// The switch host it talks to, and the port there.
    pub(crate) server: Spanned<String>,
    server_port: Option<u16>,
    /// Its own SIP (or sending) port.
    port: Option<u16>,
    // sip-phone
    user: Option<String>,
    password: Option<String>,
    rtp_port: Option<u16>,
    register: Option<bool>,
    register_at: Option<Dur>,
    expires: Option<u32>,
    keepalive: Option<Dur>,
    rport: Option<bool>,
    silence: Option<Dur>,
    answer_after: Option<Dur>,
    dtmf: Option<String>,
    reinvite_after: Option<Dur>,
    #[serde(default)]
    calls: Vec<RawCall>,
    // attackers and crowds
    start: Option<Dur>,
    stop: Option<Dur>,
    rate: Option<u32>,
    method: Option<String>,
    extensions: Option<Spanned<String>>,
    guesses: Option<Spanned<String>>,
    ports: Option<Spanned<String>>,
    max_len: Option<usize>,
    #[serde(default)]
    users: Vec<Spanned<String>>,
}

/// A NAT device of the scenario.
#[derive(Clone, Debug)]
pub(crate) struct NatSpec {
    pub name: String,
    pub config: NatConfig,
}

/// What an actor is, before addresses are known.
#[derive(Clone, Debug)]
pub(crate) enum ActorKind {
    Phone(PhoneConfig),
    Attack(AttackConfig),
}

/// An actor of the scenario. Its configuration's addresses are filled in per run.
#[derive(Clone, Debug)]
pub(crate) struct ActorSpec {
    pub name: String,
    pub behind: Option<String>,
    pub server: String,
    pub server_port: u16,
    pub port: u16,
    pub kind: ActorKind,
}

pub(crate) const ACTOR_KINDS: &[&str] = &["sip-phone", "scanner", "cracker", "sprayer", "flood", "storm"];

fn behaviour(v: &Option<Spanned<String>>, default: Behaviour) -> Result<Behaviour, PartyError> {
    match v {
        None => Ok(default),
        Some(s) => Behaviour::parse(s.get_ref()).ok_or_else(|| {
            (
                Some(s.span()),
                format!("unknown NAT behaviour `{}`", s.get_ref()),
                format!("one of: {}", Behaviour::NAMES.join(", ")),
            )
        }),
    }
}

pub(crate) fn nat(name: &str, raw: &RawNat) -> Result<NatSpec, PartyError> {
    let d = NatConfig::default();
    let config = NatConfig {
        mapping: behaviour(&raw.mapping, d.mapping)?,
        filtering: behaviour(&raw.filtering, d.filtering)?,
        binding_timeout: raw.binding_timeout.map_or(d.binding_timeout, |v| v.0),
        inbound_refresh: raw.inbound_refresh.unwrap_or(d.inbound_refresh),
        port_preservation: raw.port_preservation.unwrap_or(d.port_preservation),
        hairpinning: raw.hairpinning.unwrap_or(d.hairpinning),
    };
    Ok(NatSpec { name: name.to_string(), config })
}

/// `"100-199"` or `"100,200,alice"`: the items of an extension or guess list.
fn list(v: &Spanned<String>) -> Result<Vec<String>, PartyError> {
    let mut out = Vec::new();
    for item in v.get_ref().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('-').and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?, a.len()))) {
            Some((a, b, width)) if a <= b && b - a < 1_000_000 => {
                out.extend((a..=b).map(|n| format!("{n:0width$}")));
            }
            Some(_) => {
                return Err((
                    Some(v.span()),
                    format!("range `{item}` is empty or too long"),
                    "at most 1,000,000 items".into(),
                ))
            }
            None => out.push(item.to_string()),
        }
    }
    Ok(out)
}

fn port_range(v: &Spanned<String>) -> Result<std::ops::RangeInclusive<u16>, PartyError> {
    let bad =
        || (Some(v.span()), format!("`{}` is not a port range", v.get_ref()), "write e.g. \"16384-32768\"".to_string());
    let (a, b) = v.get_ref().split_once('-').ok_or_else(bad)?;
    let (a, b) = (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?);
    if a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

pub(crate) fn actor(name: &str, raw: &RawActor, duration: Duration) -> Result<ActorSpec, PartyError> {
    let kind_name = raw.kind.get_ref().as_str();
    let need = |v: &Option<String>, key: &str| -> Result<String, PartyError> {
        v.clone().ok_or_else(|| {
            (
                Some(raw.kind.span()),
                format!("actor `{name}` ({kind_name}) needs `{key}`"),
                format!("add {key} = \"...\""),
            )
        })
    };
    let start = raw.start.map_or(Duration::from_secs(1), |v| v.0);
    let stop = raw.stop.map_or(duration, |v| v.0);
    let attack = |kind: Kind, port: u16| {
        ActorKind::Attack(AttackConfig {
            name: name.to_string(),
            kind,
            local: SocketAddr::from(([0, 0, 0, 0], port)),
            target: SocketAddr::from(([0, 0, 0, 0], 0)),
            start,
            stop,
            rate: raw.rate.unwrap_or(10),
        })
    };
    let port = raw.port.unwrap_or(5060);
    let kind = match kind_name {
        "sip-phone" => ActorKind::Phone(PhoneConfig {
            name: name.to_string(),
            user: need(&raw.user, "user")?,
            password: need(&raw.password, "password")?,
            server: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: SocketAddr::from(([0, 0, 0, 0], port)),
            rtp_port: raw.rtp_port.unwrap_or(4000),
            register: raw.register.unwrap_or(true),
            register_at: raw.register_at.map_or(Duration::from_secs(1), |v| v.0),
            expires: raw.expires.unwrap_or(300),
            keepalive: raw.keepalive.map(|v| v.0).filter(|d| !d.is_zero()),
            rport: raw.rport.unwrap_or(true),
            silence: raw.silence.map_or(Duration::ZERO, |v| v.0),
            answer_after: raw.answer_after.map_or(Duration::from_secs(1), |v| v.0),
            calls: raw
                .calls
                .iter()
                .flat_map(|c| {
                    let every = c.every.map_or(Duration::ZERO, |v| v.0);
                    (0..c.count.unwrap_or(1)).map(move |i| PlannedCall {
                        at: c.at.0 + every * i,
                        to: c.to.clone(),
                        hold: c.hold.map_or(Duration::from_secs(20), |v| v.0),
                    })
                })
                .collect(),
            dtmf: raw.dtmf.clone().unwrap_or_default(),
            reinvite_after: raw.reinvite_after.map(|v| v.0),
            others: BTreeMap::new(),
        }),
        "scanner" => {
            let extensions = match &raw.extensions {
                Some(v) => list(v)?,
                None => {
                    return Err((
                        Some(raw.kind.span()),
                        format!("scanner `{name}` needs `extensions`"),
                        "e.g. extensions = \"100-999,admin\"".into(),
                    ))
                }
            };
            attack(Kind::Scanner { method: raw.method.clone().unwrap_or_else(|| "REGISTER".into()), extensions }, port)
        }
        "cracker" => {
            let guesses = match &raw.guesses {
                Some(v) => list(v)?,
                None => {
                    return Err((
                        Some(raw.kind.span()),
                        format!("cracker `{name}` needs `guesses`"),
                        "e.g. guesses = \"0000-9999\"".into(),
                    ))
                }
            };
            attack(Kind::Cracker { user: need(&raw.user, "user")?, guesses }, port)
        }
        "sprayer" => {
            let ports = match &raw.ports {
                Some(v) => port_range(v)?,
                None => 16384..=32768,
            };
            attack(Kind::Sprayer { ports }, port)
        }
        "flood" => attack(Kind::Flood { max_len: raw.max_len.unwrap_or(512) }, port),
        "storm" => {
            let mut users = Vec::new();
            for u in &raw.users {
                let (user, password) = u.get_ref().split_once(':').ok_or_else(|| {
                    (
                        Some(u.span()),
                        format!("`{}` is not user:password", u.get_ref()),
                        "write users = [\"1001:password\", ...]".to_string(),
                    )
                })?;
                users.push((user.to_string(), password.to_string()));
            }
            attack(Kind::Storm { users }, port)
        }
        other => {
            return Err((
                Some(raw.kind.span()),
                format!("unknown actor kind `{other}`"),
                format!("one of: {}", ACTOR_KINDS.join(", ")),
            ))
        }
    };
    Ok(ActorSpec {
        name: name.to_string(),
        behind: raw.behind.as_ref().map(|b| b.get_ref().clone()),
        server: raw.server.get_ref().clone(),
        server_port: raw.server_port.unwrap_or(5060),
        port,
        kind,
    })
}

impl NatSpec {
    /// The device for one run: a translating NAT on IPv4, a stateful
    /// firewall on IPv6 (RFC 6092: no NAT66).
    pub fn build(&self, public: IpAddr, seed: u64) -> Nat {
        match public {
            IpAddr::V4(_) => Nat::new(public, self.config.clone(), seed),
            IpAddr::V6(_) => Nat::firewall(self.config.clone(), seed),
        }
    }
}

impl ActorSpec {
    /// The actor for one run, its addresses filled in; `phones` names every
    /// phone of the scenario, so a phone can say whom it heard.
    pub fn build(&self, own: IpAddr, server: IpAddr, phones: &[String], seed: u64, now: Instant) -> Box<dyn Actor> {
        let server = SocketAddr::new(server, self.server_port);
        let local = SocketAddr::new(own, self.port);
        match &self.kind {
            ActorKind::Phone(c) => {
                let others = phones.iter().map(|n| (crate::actors::name_tag(n), n.clone())).collect();
                Box::new(Phone::new(PhoneConfig { server, local, others, ..c.clone() }, seed, now))
            }
            ActorKind::Attack(c) => {
                Box::new(Attacker::new(AttackConfig { target: server, local, ..c.clone() }, seed, now))
            }
        }
    }
}

/// Inside addresses of hosts behind NAT `index` on IPv4: 10.N.0.2, 10.N.0.3, ...
pub(crate) fn inside_v4(nat_index: usize, host_index: usize) -> IpAddr {
    IpAddr::from([10, (nat_index + 1) as u8, 0, (host_index + 2) as u8])
}

pub(crate) type Nats = BTreeMap<String, Spanned<RawNat>>;
pub(crate) type Actors = BTreeMap<String, Spanned<RawActor>>;
