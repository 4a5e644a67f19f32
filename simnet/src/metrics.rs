//! World metrics: numbers measured on the simulated wire (from the world's
//! counters, independent of the capture window), with what the arithmetic of
//! the configuration says they should be.

use std::collections::BTreeMap;
use std::time::Duration;

use switch::config::IaxConfig;
use switch::iax2::frame::{MINI_HEADER_LEN, TRUNK_HEADER_LEN};
use switch::iax2::trunk::{entry_overhead, expected_datagrams};
use switch::media::{FRAME_MS, FRAME_SAMPLES};

use crate::calls::CallRecord;
use crate::net::{bucket_ceil, ip_udp_overhead, Bucket, WireStats, BUCKET};
use crate::scenario::MetricSpec;

/// What a metric expectation is judged with.
pub(crate) struct MetricCtx<'a> {
    pub wire: &'a WireStats,
    /// Each host's IAX2 configuration at the end of the run (when it loads).
    pub configs: &'a BTreeMap<String, IaxConfig>,
    pub calls: &'a [CallRecord],
}

/// A measured value, what it should be (when the metric knows), and how both came about.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Measurement {
    pub value: f64,
    pub expected: Option<f64>,
    pub detail: String,
}

/// G.711 voice: bytes per frame and frames per second of one call.
const PAYLOAD: usize = FRAME_SAMPLES;
const FRAMES_PER_SECOND: f64 = 1000.0 / FRAME_MS as f64;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Trunking parameters of `host` and whether it trunks at all (some peer with
/// `trunk=yes` and no encryption: encrypted calls are never trunked).
struct Trunking {
    freq: Duration,
    mtu: u16,
    timestamps: bool,
    on: bool,
}

fn trunking(ctx: &MetricCtx<'_>, host: &str) -> Result<Trunking, String> {
    let c = ctx.configs.get(host).ok_or_else(|| format!("the configuration of host `{host}` does not load"))?;
    let g = &c.general;
    Ok(Trunking {
        freq: g.trunkfreq,
        mtu: g.trunkmtu,
        timestamps: g.trunktimestamps,
        on: c.peers.iter().any(|p| p.trunk && !p.encryption && !p.forceencryption),
    })
}

/// Calls on `host` that were up during the whole window.
fn calls_up(ctx: &MetricCtx<'_>, host: &str, start: Duration, end: Duration) -> usize {
    ctx.calls.iter().filter(|c| c.host == host && c.up_throughout(start, end)).count()
}

/// Voice frames each call puts into one trunk tick.
fn entries_per_tick(calls: usize, freq: Duration) -> usize {
    (calls as f64 * secs(freq) * FRAMES_PER_SECOND).round() as usize
}

pub(crate) fn measure(
    spec: &MetricSpec,
    start: Duration,
    end: Duration,
    ctx: &MetricCtx<'_>,
) -> Result<Measurement, String> {
    let (a, b) = (bucket_ceil(start), bucket_ceil(end));
    if b <= a && spec.name != "cleartext_pattern_frames" {
        return Err(format!("the window is shorter than one {} ms bucket", BUCKET.as_millis()));
    }
    let window = BUCKET * (b.saturating_sub(a)) as u32;
    let index = |h: &Option<String>| -> Result<Option<usize>, String> {
        match h {
            None => Ok(None),
            Some(h) => ctx.wire.index(h).map(Some).ok_or_else(|| format!("host `{h}` never sent or received")),
        }
    };
    let (from, to) = (index(&spec.from)?, index(&spec.to)?);
    let link_total = || -> Bucket {
        let mut t = Bucket::default();
        for ((f, d), traffic) in &ctx.wire.links {
            if from.is_some_and(|x| x != *f) || to.is_some_and(|x| x != *d) {
                continue;
            }
            let w = traffic.total(start, end);
            t.datagrams += w.datagrams;
            t.trunk += w.trunk;
            t.ip_bytes += w.ip_bytes;
            t.cleartext_pattern += w.cleartext_pattern;
        }
        t
    };
    let names = || match (&spec.from, &spec.to) {
        (Some(f), Some(t)) => format!("from {f} to {t}"),
        (Some(f), None) => format!("from {f}"),
        (None, Some(t)) => format!("to {t}"),
        (None, None) => "on every link".to_string(),
    };
    match spec.name.as_str() {
        "trunk_datagrams_per_tick" => {
            let host = spec.from.as_deref().unwrap_or_default();
            let t = trunking(ctx, host)?;
            let ticks = secs(window) / secs(t.freq);
            let total = link_total();
            let value = f64::from(total.trunk) / ticks;
            let calls = calls_up(ctx, host, start, end);
            let entries = entries_per_tick(calls, t.freq);
            let expected = expected_datagrams(entries, PAYLOAD, t.mtu, t.timestamps) as f64;
            let spread = if t.freq == BUCKET {
                let link = ctx.wire.links.get(&(from.unwrap_or_default(), to.unwrap_or_default()));
                let per: Vec<u32> = link.map(|l| l.window(start, end).map(|b| b.trunk).collect()).unwrap_or_default();
                match (per.iter().min(), per.iter().max()) {
                    (Some(lo), Some(hi)) => format!(", {lo}..{hi} per tick"),
                    _ => String::new(),
                }
            } else {
                String::new()
            };
            Ok(Measurement {
                value,
                expected: Some(expected),
                detail: format!(
                    "{} trunk datagrams {} in {:.0} ticks of {} ms: {value:.2} per tick{spread}; expected \
                     expected_datagrams({entries} entries = {calls} calls up, {PAYLOAD} B, trunkmtu={}, \
                     trunktimestamps={}) = {expected}",
                    total.trunk,
                    names(),
                    ticks,
                    t.freq.as_millis(),
                    t.mtu,
                    yes(t.timestamps),
                ),
            })
        }
        "wire_bytes_per_second" => {
            let host = spec.from.as_deref().unwrap_or_default();
            let t = trunking(ctx, host)?;
            let total = link_total();
            let value = total.ip_bytes as f64 / secs(window);
            let calls = calls_up(ctx, host, start, end);
            let family = to.and_then(|i| ctx.wire.addresses.get(i).copied().flatten());
            let overhead = family.map_or(28, ip_udp_overhead) as f64;
            let (expected, formula) = if t.on {
                let entries = entries_per_tick(calls, t.freq);
                let n = expected_datagrams(entries, PAYLOAD, t.mtu, t.timestamps) as f64;
                let per_entry = (entry_overhead(t.timestamps) + PAYLOAD) as f64;
                let per_tick = n * (overhead + TRUNK_HEADER_LEN as f64) + entries as f64 * per_entry;
                let ticks = 1.0 / secs(t.freq);
                (
                    per_tick * ticks,
                    format!(
                        "{ticks:.0} ticks/s x ({n} datagrams x ({overhead} IP+UDP + {TRUNK_HEADER_LEN} trunk header) \
                         + {entries} entries x ({} entry header + {PAYLOAD} voice)) = {ticks:.0} x {per_tick} B",
                        entry_overhead(t.timestamps)
                    ),
                )
            } else {
                let per_frame = overhead + (MINI_HEADER_LEN + PAYLOAD) as f64;
                (
                    calls as f64 * FRAMES_PER_SECOND * per_frame,
                    format!(
                        "{calls} calls x {FRAMES_PER_SECOND} frames/s x ({overhead} IP+UDP + {MINI_HEADER_LEN} mini \
                         header + {PAYLOAD} voice)"
                    ),
                )
            };
            Ok(Measurement {
                value,
                expected: Some(expected),
                detail: format!(
                    "{} B at the IP layer {} in {}: {value:.0} B/s; arithmetic for {calls} calls up: {formula} = \
                     {expected:.0} B/s ({:+.2}%)",
                    total.ip_bytes,
                    names(),
                    crate::units::fmt_duration(window),
                    if expected > 0.0 { (value - expected) / expected * 100.0 } else { 0.0 },
                ),
            })
        }
        "datagrams_per_second" => {
            let total = link_total();
            let value = f64::from(total.datagrams) / secs(window);
            Ok(Measurement {
                value,
                expected: None,
                detail: format!(
                    "{} datagrams {} in {}: {value:.1}/s",
                    total.datagrams,
                    names(),
                    crate::units::fmt_duration(window)
                ),
            })
        }
        "cleartext_pattern_frames" => {
            let total = link_total();
            Ok(Measurement {
                value: f64::from(total.cleartext_pattern),
                expected: None,
                detail: format!(
                    "{} full or mini frames {} carry a test-pattern frame in clear (\"SW\", tag, sequence, then codec silence)",
                    total.cleartext_pattern,
                    names()
                ),
            })
        }
        "max_backlog" => {
            let host = spec.host.as_deref().unwrap_or_default();
            let i = index(&spec.host)?.unwrap_or_default();
            let backlog = ctx.wire.backlog.get(i).map_or(0, |b| b.high_water_in(start, end));
            Ok(Measurement {
                value: backlog as f64,
                expected: None,
                detail: format!(
                    "at most {backlog} datagrams sent to {host} were on the wire or waiting in its socket queue"
                ),
            })
        }
        other => Err(format!("unknown metric `{other}`")),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
