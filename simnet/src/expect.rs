//! Expectations evaluated over a finished run's trace.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::metrics::{self, MetricCtx};
use crate::scenario::{Addresses, ExpectKind, Expectation, FieldTest, MatchValue, Op};
use crate::trace::TimedEvent;
use crate::units::fmt_time;

/// The outcome of one expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub description: String,
    pub passed: bool,
    /// When it passed, the matching event and its time; when it failed, why.
    pub detail: String,
}

/// A trace event with its JSON fields, ready for matching.
pub(crate) struct Indexed<'a> {
    pub ev: &'a TimedEvent,
    pub name: &'static str,
    pub fields: serde_json::Map<String, Value>,
}

pub(crate) fn index(events: &[TimedEvent]) -> Vec<Indexed<'_>> {
    events
        .iter()
        .map(|ev| {
            let fields = match ev.event.to_json() {
                Value::Object(mut m) => {
                    m.remove("event");
                    m
                }
                _ => serde_json::Map::new(),
            };
            Indexed { ev, name: ev.event.name(), fields }
        })
        .collect()
}

/// `registered server=192.168.0.2 username=A refresh=60`
pub(crate) fn summary(name: &str, fields: &serde_json::Map<String, Value>) -> String {
    let mut s = name.to_string();
    for (k, v) in fields {
        if v.is_null() {
            continue;
        }
        s.push(' ');
        s.push_str(k);
        s.push('=');
        match v {
            Value::String(t) => s.push_str(t),
            other => s.push_str(&other.to_string()),
        }
    }
    s
}

pub(crate) struct Ctx<'a> {
    pub addrs: &'a Addresses,
    pub labels: &'a BTreeMap<String, Duration>,
    pub end: Duration,
    pub metrics: MetricCtx<'a>,
}

impl Ctx<'_> {
    /// Expands placeholders; `${self}` is the host of the event being tested.
    fn expand(&self, s: &str, host: Option<&str>) -> String {
        self.addrs.expand(s, host).unwrap_or_else(|_| s.to_string())
    }

    fn value_eq(&self, actual: &Value, expected: &MatchValue, host: &str) -> bool {
        match expected {
            MatchValue::Str(s) => {
                let want = self.expand(s, Some(host));
                match actual {
                    Value::String(a) => *a == want,
                    Value::Number(n) => n.to_string() == want,
                    Value::Bool(b) => b.to_string() == want,
                    _ => false,
                }
            }
            MatchValue::Num(n) => match actual {
                Value::Number(a) => a.as_f64() == Some(*n),
                Value::String(a) => a.parse::<f64>().ok() == Some(*n),
                _ => false,
            },
            MatchValue::Bool(b) => actual.as_bool() == Some(*b),
        }
    }

    fn test(&self, t: &FieldTest, e: &Indexed<'_>) -> bool {
        let (fields, host) = (&e.fields, e.ev.host.as_str());
        let actual = fields.get(&t.field).filter(|v| !v.is_null());
        if t.op == Op::Present {
            return actual.is_some() == matches!(t.value, MatchValue::Bool(true));
        }
        let Some(actual) = actual else {
            return t.op == Op::Ne;
        };
        let num = |v: &MatchValue| match v {
            MatchValue::Num(n) => Some(*n),
            _ => None,
        };
        match t.op {
            Op::Eq => self.value_eq(actual, &t.value, host),
            Op::Ne => !self.value_eq(actual, &t.value, host),
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                let (Some(a), Some(b)) = (actual.as_f64(), num(&t.value)) else {
                    return false;
                };
                match t.op {
                    Op::Gt => a > b,
                    Op::Ge => a >= b,
                    Op::Lt => a < b,
                    _ => a <= b,
                }
            }
            Op::Contains => match (&t.value, actual) {
                (MatchValue::Str(s), Value::String(a)) => a.contains(&self.expand(s, Some(host))),
                _ => false,
            },
            Op::Present => false,
        }
    }

    fn all(&self, tests: &[FieldTest], e: &Indexed<'_>) -> bool {
        tests.iter().all(|t| self.test(t, e))
    }

    fn describe(&self, tests: &[FieldTest]) -> String {
        if tests.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = tests
            .iter()
            .map(|t| {
                let v = match &t.value {
                    MatchValue::Str(s) => self.expand(s, None),
                    MatchValue::Num(n) => n.to_string(),
                    MatchValue::Bool(b) => b.to_string(),
                };
                format!("{}{}{}", t.field, t.op.symbol(), v)
            })
            .collect();
        format!(" {{{}}}", parts.join(", "))
    }
}

fn at_host(host: &str) -> String {
    format!(" on {host}")
}

pub(crate) fn evaluate(x: &Expectation, events: &[Indexed<'_>], ctx: &Ctx<'_>) -> Verdict {
    let (passed, detail) = judge(x, events, ctx);
    Verdict { description: x.description.clone(), passed, detail }
}

/// `= 800`, `>= 798, <= 800`: the value tests as text.
fn describe_value(tests: &[(Op, f64)]) -> String {
    tests.iter().map(|(op, n)| format!("{}{}", op.symbol().trim(), fmt_num(*n))).collect::<Vec<_>>().join(", ")
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n:.3}")
    }
}

fn value_passes(tests: &[(Op, f64)], v: f64) -> bool {
    tests.iter().all(|(op, n)| match op {
        Op::Eq => v == *n,
        Op::Ne => v != *n,
        Op::Gt => v > *n,
        Op::Ge => v >= *n,
        Op::Lt => v < *n,
        Op::Le => v <= *n,
        Op::Contains | Op::Present => false,
    })
}

/// Start and end of an expectation's window, or why it never opened.
fn window(x: &Expectation, ctx: &Ctx<'_>) -> Result<(Duration, Duration, String), String> {
    let anchor = match &x.after.label {
        None => Duration::ZERO,
        Some(l) => match ctx.labels.get(l) {
            Some(t) => *t,
            None => return Err(format!("the timeline action `{l}` never happened, so the window never opened")),
        },
    };
    let start = anchor + x.after.offset;
    let end = x.within.map_or(ctx.end, |w| start + w);
    let text = format!(
        "between {} and {} (after {}{})",
        fmt_time(start),
        fmt_time(end),
        x.after,
        x.within.map(|w| format!(" within {}", crate::units::fmt_duration(w))).unwrap_or_default()
    );
    Ok((start, end, text))
}

fn judge_metric(x: &Expectation, ctx: &Ctx<'_>) -> (bool, String) {
    let Some(spec) = &x.metric else { return (false, "no metric named".into()) };
    let (start, end, text) = match window(x, ctx) {
        Ok(w) => w,
        Err(why) => return (false, why),
    };
    let m = match metrics::measure(spec, start, end, &ctx.metrics) {
        Ok(m) => m,
        Err(why) => return (false, format!("`{}` {text}: {why}", spec.name)),
    };
    let mut ok = value_passes(&x.value, m.value);
    let mut checks = Vec::new();
    if !x.value.is_empty() {
        checks.push(format!("needed {}", describe_value(&x.value)));
    }
    if let Some(tol) = x.tolerance {
        match m.expected {
            Some(e) => {
                let off = (m.value - e).abs();
                let within = off <= tol * e.abs() + 1e-9;
                ok &= within;
                checks.push(format!("needed within {}% of {}", fmt_num(tol * 100.0), fmt_num(e)));
            }
            None => {
                ok = false;
                checks.push("the metric has no expected value".into());
            }
        }
    }
    (ok, format!("`{}` {text}: {} ({})", spec.name, m.detail, checks.join("; ")))
}

fn judge(x: &Expectation, events: &[Indexed<'_>], ctx: &Ctx<'_>) -> (bool, String) {
    if x.kind == ExpectKind::Metric {
        return judge_metric(x, ctx);
    }
    let what =
        format!("`{}`{}{}", x.event, x.host.as_deref().map(at_host).unwrap_or_default(), ctx.describe(&x.filter));
    let on_host = |e: &&Indexed<'_>| e.name == x.event && x.host.iter().all(|h| *h == e.ev.host);
    let matching: Vec<&Indexed<'_>> = events.iter().filter(on_host).filter(|e| ctx.all(&x.filter, e)).collect();
    let show = |e: &Indexed<'_>| format!("{} on {}: {}", fmt_time(e.ev.at), e.ev.host, summary(e.name, &e.fields));

    if x.kind == ExpectKind::Last {
        let Some(last) = matching.last() else {
            return (false, format!("no {what} event in the whole run"));
        };
        return if ctx.all(&x.is, last) {
            (true, format!("last at {}", show(last)))
        } else {
            (false, format!("last at {}; expected{}", show(last), ctx.describe(&x.is)))
        };
    }

    let (start, end, window) = match window(x, ctx) {
        Ok(w) => w,
        Err(why) => return (false, why),
    };
    let inside: Vec<&Indexed<'_>> = matching.iter().copied().filter(|e| e.ev.at >= start && e.ev.at <= end).collect();
    let count = inside.len() as u64;

    if x.kind == ExpectKind::Count {
        let ok = value_passes(&x.value, count as f64);
        let span = match (inside.first(), inside.last()) {
            (Some(f), Some(l)) => format!("; first at {}, last at {}", fmt_time(f.ev.at), fmt_time(l.ev.at)),
            _ => String::new(),
        };
        return (ok, format!("{count} {what} {window}{span} (needed {})", describe_value(&x.value)));
    }
    if x.kind == ExpectKind::Sum {
        let mut total = 0.0;
        let mut missing = 0usize;
        let mut smallest: Option<(&Indexed<'_>, f64)> = None;
        let mut largest: Option<(&Indexed<'_>, f64)> = None;
        for e in &inside {
            let mut mine = 0.0;
            for f in &x.fields {
                let (sign, name) = match f.strip_prefix('-') {
                    Some(name) => (-1.0, name),
                    None => (1.0, f.as_str()),
                };
                match e.fields.get(name).and_then(Value::as_f64) {
                    Some(v) => mine += sign * v,
                    None => missing += 1,
                }
            }
            total += mine;
            if !matches!(largest, Some((_, w)) if w >= mine) {
                largest = Some((e, mine));
            }
            if !matches!(smallest, Some((_, w)) if w <= mine) {
                smallest = Some((e, mine));
            }
        }
        let ok = missing == 0 && value_passes(&x.value, total);
        let mut detail = format!(
            "sum of {} over {count} {what} {window} = {} (needed {})",
            x.fields.join(" + ").replace("+ -", "- "),
            fmt_num(total),
            describe_value(&x.value)
        );
        if missing > 0 {
            detail.push_str(&format!("; {missing} field value(s) missing or not numbers"));
        }
        if let (false, Some((lo, a)), Some((hi, b))) = (ok, smallest, largest) {
            detail.push_str(&format!("; smallest term ({}) at {}", fmt_num(a), show(lo)));
            if b != a {
                detail.push_str(&format!("; largest ({}) at {}", fmt_num(b), show(hi)));
            }
        }
        return (ok, detail);
    }

    if x.kind == ExpectKind::Never {
        return match inside.first() {
            None => (true, format!("no {what} {window}")),
            Some(first) => {
                let more = if count > 1 { format!(" (and {} more)", count - 1) } else { String::new() };
                (false, format!("happened at {}{more}", show(first)))
            }
        };
    }

    let at_least = u64::from(x.at_least);
    let at_most = x.at_most.map(u64::from);
    if count >= at_least && at_most.iter().all(|m| count <= *m) {
        return match (inside.first(), inside.last()) {
            (Some(first), Some(_)) if count == 1 || (at_least <= 1 && at_most.is_none()) => {
                (true, format!("at {}", show(first)))
            }
            (Some(first), Some(last)) => (
                true,
                format!("{count} times {window}; first at {}, last at {}", fmt_time(first.ev.at), fmt_time(last.ev.at)),
            ),
            _ => (true, format!("{count} times {window}")),
        };
    }
    if let Some(m) = at_most {
        if count > m {
            let extra = inside.get(m as usize).map(|e| format!("; first extra at {}", show(e))).unwrap_or_default();
            return (false, format!("{count} {what} {window}, at most {m} allowed{extra}"));
        }
    }
    // Too few: say what was seen instead.
    let mut detail = if count == 0 {
        format!("no {what} {window}")
    } else {
        format!("only {count} {what} {window}, needed {at_least}")
    };
    let unfiltered: Vec<&Indexed<'_>> = events
        .iter()
        .filter(on_host)
        .filter(|e| e.ev.at >= start && e.ev.at <= end && !ctx.all(&x.filter, e))
        .collect();
    if let Some(last) = unfiltered.last() {
        detail.push_str(&format!(
            "; {} `{}` event(s) in the window did not match the filter (last at {})",
            unfiltered.len(),
            x.event,
            show(last)
        ));
    }
    let before = matching.iter().rev().find(|e| e.ev.at < start);
    let after = matching.iter().find(|e| e.ev.at > end);
    if let Some(e) = after {
        detail.push_str(&format!("; next match came late, at {}", show(e)));
    } else if let Some(e) = before {
        detail.push_str(&format!("; last match was before the window, at {}", show(e)));
    } else if unfiltered.is_empty() && !events.iter().any(|e| on_host(&e)) {
        detail.push_str(&format!(
            "; `{}` never happened{} in the whole run",
            x.event,
            x.host.as_deref().map(at_host).unwrap_or_default()
        ));
    }
    (false, detail)
}
