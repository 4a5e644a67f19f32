//! Human units in scenario files: durations (`"10m"`, `"1m30s"`, `"250ms"`)
//! and probabilities (`0.1` or `"10%"`), and how times are printed back.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Parses `"1h"`, `"10m"`, `"30s"`, `"1.5s"`, `"250ms"`, `"1m30s"`, `"0"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ns: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("`{text}`: expected a number before `{rest}`"));
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: u128 = match unit.trim() {
            "h" => 3_600_000_000_000,
            "m" | "min" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            "" => return Err(format!("`{text}`: missing unit after `{num}` (use h, m, s, ms, us)")),
            other => return Err(format!("`{text}`: unknown unit `{other}` (use h, m, s, ms, us)")),
        };
        let value: f64 = num.parse().map_err(|_| format!("`{text}`: `{num}` is not a number"))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("`{text}`: `{num}` is not a valid amount"));
        }
        let ns = value * scale as f64;
        if ns > u64::MAX as f64 {
            return Err(format!("`{text}` is too long"));
        }
        total_ns += ns.round() as u128;
        rest = next;
    }
    let total = u64::try_from(total_ns).map_err(|_| format!("`{text}` is too long"))?;
    Ok(Duration::from_nanos(total))
}

/// A duration deserialised from a human string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"10m\", \"250ms\" or \"1m30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                if v == 0 {
                    Ok(Dur(Duration::ZERO))
                } else {
                    Err(E::custom(format!("a bare number ({v}) is ambiguous: write \"{v}s\" or \"{v}ms\"")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A probability deserialised from `0.1` or `"10%"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Prob(pub f64);

impl<'de> Deserialize<'de> for Prob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn check<E: de::Error>(p: f64) -> Result<Prob, E> {
            if (0.0..=1.0).contains(&p) {
                Ok(Prob(p))
            } else {
                Err(E::custom(format!("probability {p} is outside 0..=1 (write 0.1 or \"10%\")")))
            }
        }
        impl Visitor<'_> for V {
            type Value = Prob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a probability such as 0.1 or \"10%\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Prob, E> {
                check(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Prob, E> {
                check(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prob, E> {
                let t = v.trim();
                match t.strip_suffix('%') {
                    Some(pct) => match pct.trim().parse::<f64>() {
                        Ok(p) => check(p / 100.0),
                        Err(_) => Err(E::custom(format!("`{v}` is not a percentage"))),
                    },
                    None => match t.parse::<f64>() {
                        Ok(p) => check(p),
                        Err(_) => Err(E::custom(format!("`{v}` is not a probability (write 0.1 or \"10%\")"))),
                    },
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `61.234s`: how sim times appear in verdicts and reports.
pub fn fmt_time(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

/// `1m30s`, `250ms`: how configured durations are echoed back.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if d.subsec_millis() > 0 {
        return if ms < 1000 { format!("{ms}ms") } else { fmt_time(d) };
    }
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(fmt_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(fmt_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(fmt_time(Duration::from_millis(61_234)), "61.234s");
    }
}
