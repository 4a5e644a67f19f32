//! A minimal dialplan: per context, extension patterns mapped to what the
//! switch does with a call. Written in `switch.toml`:
//!
//! ```toml
//! [dialplan.iaxinbound]
//! "9196" = "echo"
//! "9664" = "music"
//! "1000" = "tone(1000)"
//! "_1XXX" = "dial(IAX2/b/${EXTEN})"
//! "h" = "hangup(16)"
//! ```
//!
//! Patterns follow Asterisk: a leading `_` makes `X` match 0-9, `Z` 1-9,
//! `N` 2-9, `[..]` a set or range, `.` one or more of anything, `!` zero or
//! more. Exact extensions win over patterns; among patterns the first written wins.

use std::collections::BTreeMap;
use std::time::Duration;

/// Why an application or a step of the dialplan does not parse. The text
/// is what the configuration error or the operator's command answer says.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AppError {
    #[error("`{0}`: missing `)`")]
    MissingParen(String),
    #[error("`{0}`: tone frequency must be 20-3900 Hz, e.g. tone(1000)")]
    ToneFrequency(String),
    #[error("`{0}`: dial needs an IAX2 or SIP target, e.g. dial(IAX2/b/${{EXTEN}}) or dial(SIP/${{EXTEN}})")]
    DialTarget(String),
    #[error("`{0}`: hangup needs a Q.850 cause 1-127, e.g. hangup(17)")]
    HangupCause(String),
    #[error("`{0}`: wait needs seconds 0-{MAX_WAIT_SECS}, e.g. wait(10)")]
    WaitSeconds(String),
    #[error(
        "`{0}`: unknown application; use echo, music, pattern, silence, tone(HZ), dial(IAX2/peer/exten) or hangup(CAUSE)"
    )]
    Unknown(String),
}

/// What the switch does with a call routed to an extension.
#[derive(Clone, Debug, PartialEq)]
pub enum App {
    /// Answer and send every received frame back.
    Echo,
    /// Answer and play a sine tone of this frequency.
    Tone { freq_hz: f64 },
    /// Answer and play music.
    Music,
    /// Answer and send a numbered test pattern (for load and loss measurement).
    Pattern,
    /// Answer and send nothing (Asterisk's `Answer()` then `Wait(SECS)`).
    Silence,
    /// Place a second call and bridge the two (`IAX2/peer/exten` from IAX2 calls,
    /// `SIP/user` from SIP calls to a registered user; `${EXTEN}` expanded).
    Dial { target: String },
    /// Refuse with this Q.850 cause code.
    Hangup { cause: u8 },
}

impl App {
    /// Parses `echo`, `music`, `pattern`, `tone(HZ)`, `dial(TARGET)`, `hangup(CAUSE)`.
    pub fn parse(text: &str) -> Result<App, AppError> {
        let text = text.trim();
        let (name, arg) = match text.split_once('(') {
            Some((name, rest)) => {
                let Some(arg) = rest.strip_suffix(')') else {
                    return Err(AppError::MissingParen(text.to_string()));
                };
                (name.trim(), Some(arg.trim()))
            }
            None => (text, None),
        };
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("echo", None) => Ok(App::Echo),
            ("music", None) => Ok(App::Music),
            ("pattern", None) => Ok(App::Pattern),
            ("silence", None) => Ok(App::Silence),
            ("tone", Some(hz)) => match hz.parse::<f64>() {
                Ok(f) if (20.0..=3900.0).contains(&f) => Ok(App::Tone { freq_hz: f }),
                _ => Err(AppError::ToneFrequency(text.to_string())),
            },
            ("dial", Some(target))
                if target.to_ascii_uppercase().starts_with("IAX2/")
                    || target.to_ascii_uppercase().starts_with("SIP/") =>
            {
                Ok(App::Dial { target: target.to_string() })
            }
            ("dial", _) => Err(AppError::DialTarget(text.to_string())),
            ("hangup", Some(code)) => match code.parse::<u8>() {
                Ok(cause) if cause > 0 && cause < 128 => Ok(App::Hangup { cause }),
                _ => Err(AppError::HangupCause(text.to_string())),
            },
            _ => Err(AppError::Unknown(text.to_string())),
        }
    }
}

impl Step {
    /// One step of a `switch.toml` list: `answer`, `noop`, `wait(SECS)`,
    /// `hangup` or `hangup(CAUSE)`, or an application as [`App::parse`] reads it.
    pub fn parse(text: &str) -> Result<Step, AppError> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "answer" => return Ok(Step::Answer),
            "noop" => return Ok(Step::NoOp),
            "hangup" => return Ok(Step::Hangup { cause: 16 }),
            _ => {}
        }
        if let Some(arg) = lower.strip_prefix("wait(").and_then(|a| a.strip_suffix(')')) {
            return match arg.trim().parse::<f64>() {
                Ok(secs) if (0.0..=MAX_WAIT_SECS).contains(&secs) => Ok(Step::Wait { secs }),
                _ => Err(AppError::WaitSeconds(t.to_string())),
            };
        }
        Ok(match App::parse(t)? {
            App::Hangup { cause } => Step::Hangup { cause },
            app @ (App::Echo | App::Dial { .. }) => Step::Run(app),
            app => Step::Play(app),
        })
    }
}

/// When the dialplan itself ends an answered call: Asterisk's `Wait(SECS)`
/// then `Hangup(CAUSE)`, or falling off the end of the priorities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedHangup {
    /// Counted from the answer.
    pub after: Duration,
    /// Q.850 cause of the hangup (16 = normal clearing).
    pub cause: u8,
}

/// What a call routed to an extension gets: the application, and when the
/// switch hangs up by itself (never, if `None`: the caller does).
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub app: App,
    pub hangup: Option<TimedHangup>,
}

impl From<App> for Route {
    fn from(app: App) -> Route {
        Route { app, hangup: None }
    }
}

/// One step of an extension's program, in the order Asterisk runs priorities.
/// Both syntaxes come down to these: `switch.toml` writes one application or
/// a list of them, `extensions.conf` one application per priority.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Answer the call (every application of the switch answers anyway).
    Answer,
    /// Nothing: `NoOp`, `Progress`, `Ringing`.
    NoOp,
    /// Start playing (tone, music, pattern, silence) and go on to the next step.
    Play(App),
    /// Echo or Dial: run until the call ends.
    Run(App),
    /// Wait this many seconds, playing whatever plays.
    Wait { secs: f64 },
    /// End the call with this Q.850 cause.
    Hangup { cause: u8 },
}

/// A step the switch cannot honour as written, by its index in the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unhonoured {
    pub step: usize,
    pub why: String,
}

/// Longest `Wait` honoured, and longest time a program runs before its
/// hangup: a day (longer is most likely a typo).
pub const MAX_WAIT_SECS: f64 = 86_400.0;

/// Reduces a program to the one [`Route`] the switch runs, and the steps it
/// cannot honour. The switch's calls have one application from answer to
/// hangup, so a program must be "set up, play, wait, hang up" or "run
/// Echo/Dial"; what does not fit is reported, never silently changed.
pub fn reduce(steps: &[Step]) -> (Route, Vec<Unhonoured>) {
    let mut unhonoured = Vec::new();
    let mut playing: Option<(usize, App)> = None;
    let mut waited = 0.0f64;
    let mut first_wait: Option<usize> = None;
    let skip = |unhonoured: &mut Vec<Unhonoured>, from: usize, after: &str| {
        for (i, step) in steps.iter().enumerate().skip(from) {
            match step {
                Step::NoOp | Step::Answer => {}
                // After Echo or Dial a Hangup changes nothing: the call is over
                // when they return. Playback's sound has an end in Asterisk,
                // the switch's music has none: that Hangup is not honoured.
                Step::Hangup { .. } if after != "Playback" => {}
                Step::Hangup { .. } => unhonoured.push(Unhonoured {
                    step: i,
                    why: "not timed: the switch has no sound files, so Playback plays music until the caller hangs up"
                        .into(),
                }),
                _ => unhonoured
                    .push(Unhonoured { step: i, why: format!("never reached here: {after} runs until the call ends") }),
            }
        }
    };
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Answer | Step::NoOp => {}
            Step::Run(app) => {
                let name = match app {
                    App::Dial { .. } => "Dial",
                    App::Echo => "Echo",
                    _ => "Playback",
                };
                if let Some(w) = first_wait {
                    unhonoured.push(Unhonoured {
                        step: w,
                        why: format!("a Wait before {name} is skipped: the switch starts {name} at the answer"),
                    });
                }
                if let Some((p, _)) = playing {
                    unhonoured.push(Unhonoured {
                        step: p,
                        why: format!("not played: the switch starts {name} at the answer instead"),
                    });
                }
                skip(&mut unhonoured, i + 1, name);
                return (Route::from(app.clone()), unhonoured);
            }
            Step::Play(app) => match &playing {
                Some(_) if waited > 0.0 => unhonoured.push(Unhonoured {
                    step: i,
                    why: "a call plays one thing from answer to hangup here; this second one is not played".into(),
                }),
                Some((p, _)) => {
                    // Replaced before any time passed: only the second is ever heard.
                    unhonoured.push(Unhonoured { step: *p, why: "replaced at once by the next one".into() });
                    playing = Some((i, app.clone()));
                }
                None => {
                    if waited > 0.0 {
                        unhonoured.push(Unhonoured {
                            step: i,
                            why: "the switch starts it at the answer, not after the Wait before it".into(),
                        });
                    }
                    playing = Some((i, app.clone()));
                }
            },
            Step::Wait { secs } => {
                first_wait.get_or_insert(i);
                // NaN and negative waits count as none; the total is capped so
                // that `now + after` can never overflow, whatever the input.
                let secs = if secs.is_finite() { secs.clamp(0.0, MAX_WAIT_SECS) } else { 0.0 };
                waited = (waited + secs).min(MAX_WAIT_SECS);
            }
            Step::Hangup { cause } => {
                let cause = *cause;
                if playing.is_none() && waited == 0.0 {
                    return (Route::from(App::Hangup { cause }), unhonoured);
                }
                let app = playing.map_or(App::Silence, |(_, app)| app);
                let hangup = TimedHangup { after: Duration::from_secs_f64(waited), cause };
                return (Route { app, hangup: Some(hangup) }, unhonoured);
            }
        }
    }
    // Falling off the end: Asterisk (autofallthrough) hangs up normally.
    let hangup = TimedHangup { after: Duration::from_secs_f64(waited), cause: 16 };
    match playing {
        None if waited == 0.0 => (Route::from(App::Hangup { cause: 16 }), unhonoured),
        None => (Route { app: App::Silence, hangup: Some(hangup) }, unhonoured),
        Some((_, app)) if waited > 0.0 => (Route { app, hangup: Some(hangup) }, unhonoured),
        Some((p, app)) => {
            // Asterisk would hang up the moment the tone starts; what was
            // meant is surely the tone until the caller hangs up.
            unhonoured.push(Unhonoured {
                step: p,
                why: "the priorities end right after this: Asterisk would hang up at once; the switch plays it until the caller hangs up (add Wait(SECS) and Hangup() to limit it)".into(),
            });
            (Route::from(app), unhonoured)
        }
    }
}

/// One context: its extensions in file order, and the contexts it includes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Context {
    extensions: Vec<(String, Route)>,
    includes: Vec<String>,
}

/// `include =>` chains deeper than this are not followed (Asterisk stops at
/// a similar depth); loops are cut by remembering visited contexts.
pub const MAX_INCLUDE_DEPTH: usize = 32;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dialplan {
    contexts: BTreeMap<String, Context>,
}

impl Dialplan {
    pub fn add(&mut self, context: &str, pattern: &str, app: App) {
        self.add_route(context, pattern, Route::from(app));
    }

    pub fn add_route(&mut self, context: &str, pattern: &str, route: Route) {
        self.contexts.entry(context.to_string()).or_default().extensions.push((pattern.to_string(), route));
    }

    /// `include => other` in `context`: lookups not answered by `context`'s own
    /// extensions go through the included contexts, in the order included.
    pub fn include(&mut self, context: &str, other: &str) {
        self.contexts.entry(context.to_string()).or_default().includes.push(other.to_string());
    }

    /// Creates `context` with nothing in it (a context all of whose lines were left out still exists).
    pub fn ensure_context(&mut self, context: &str) {
        self.contexts.entry(context.to_string()).or_default();
    }

    pub fn has_context(&self, context: &str) -> bool {
        self.contexts.contains_key(context)
    }

    /// The names of the contexts, sorted.
    pub fn context_names(&self) -> impl Iterator<Item = &str> {
        self.contexts.keys().map(String::as_str)
    }

    /// Contexts named in an `include` that no file defines: (context, included).
    pub fn missing_includes(&self) -> Vec<(String, String)> {
        let mut missing = Vec::new();
        for (name, ctx) in &self.contexts {
            for inc in ctx.includes.iter().filter(|i| !self.contexts.contains_key(*i)) {
                missing.push((name.clone(), inc.clone()));
            }
        }
        missing
    }

    /// Moves every context of `other` into this plan, replacing a context of
    /// the same name whole. Returns the names replaced.
    pub fn overlay(&mut self, other: Dialplan) -> Vec<String> {
        let mut replaced = Vec::new();
        for (name, ctx) in other.contexts {
            if self.contexts.insert(name.clone(), ctx).is_some() {
                replaced.push(name);
            }
        }
        replaced
    }

    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// The application for `exten` in `context`, with `${EXTEN}` expanded.
    pub fn lookup(&self, context: &str, exten: &str) -> Option<App> {
        self.route(context, exten).map(|r| r.app)
    }

    /// The route for `exten` in `context` (through its includes), with
    /// `${EXTEN}` and `${EXTEN:offset[:length]}` expanded in Dial targets.
    pub fn route(&self, context: &str, exten: &str) -> Option<Route> {
        let mut visited = Vec::new();
        let found = self.find(context, exten, &mut visited)?;
        let mut route = found.clone();
        if let App::Dial { target } = &route.app {
            route.app = App::Dial { target: expand_exten(target, exten) };
        }
        Some(route)
    }

    fn find<'a>(&'a self, context: &str, exten: &str, visited: &mut Vec<&'a str>) -> Option<&'a Route> {
        let (name, ctx) = self.contexts.get_key_value(context)?;
        if visited.len() >= MAX_INCLUDE_DEPTH || visited.contains(&name.as_str()) {
            return None;
        }
        visited.push(name);
        let entries = &ctx.extensions;
        let exact = entries.iter().find(|(p, _)| !p.starts_with('_') && p == exten);
        let found = exact.or_else(|| entries.iter().find(|(p, _)| p.starts_with('_') && matches(&p[1..], exten)));
        if let Some((_, route)) = found {
            return Some(route);
        }
        ctx.includes.iter().find_map(|inc| self.find(inc, exten, visited))
    }
}

/// Expands `${EXTEN}`, `${EXTEN:offset}` and `${EXTEN:offset:length}` (as
/// Asterisk's substring syntax: a negative offset counts from the end, a
/// negative length leaves that many characters off the end).
pub fn expand_exten(text: &str, exten: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${EXTEN") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${EXTEN".len()..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let spec = &after[..close];
        match substring(exten, spec) {
            Some(sub) => out.push_str(&sub),
            // `${EXTENSION}` or anything else: not ours, left as written.
            None => out.push_str(&rest[start..start + "${EXTEN".len() + close + 1]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `""` → the whole extension; `":1"`, `":-4"`, `":1:3"`, `":0:-1"` → a part.
fn substring(exten: &str, spec: &str) -> Option<String> {
    if spec.is_empty() {
        return Some(exten.to_string());
    }
    let mut parts = spec.strip_prefix(':')?.split(':');
    let chars: Vec<char> = exten.chars().collect();
    let n = chars.len() as i64;
    let offset: i64 = parts.next()?.trim().parse().ok()?;
    let length: Option<i64> = match parts.next() {
        Some(l) => Some(l.trim().parse().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    let start = if offset < 0 { n.saturating_add(offset).max(0) } else { offset.min(n) };
    let end = match length {
        None => n,
        Some(l) if l < 0 => n.saturating_add(l).max(start),
        Some(l) => start.saturating_add(l).min(n),
    };
    Some(chars[start as usize..end.max(start) as usize].iter().collect())
}

/// Whether `exten` matches an Asterisk pattern (without its leading `_`).
pub fn matches(pattern: &str, exten: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let e: Vec<char> = exten.chars().collect();
    match_from(&p, &e)
}

fn match_from(p: &[char], e: &[char]) -> bool {
    let Some((&first, rest)) = p.split_first() else { return e.is_empty() };
    match first {
        '.' => !e.is_empty() && (0..e.len()).any(|skip| match_from(rest, &e[skip + 1..])),
        '!' => (0..=e.len()).any(|skip| match_from(rest, &e[skip..])),
        '[' => {
            let Some(end) = rest.iter().position(|c| *c == ']') else { return false };
            let set = &rest[..end];
            let Some((&c, e_rest)) = e.split_first() else { return false };
            in_set(set, c) && match_from(&rest[end + 1..], e_rest)
        }
        _ => {
            let Some((&c, e_rest)) = e.split_first() else { return false };
            let ok = match first.to_ascii_uppercase() {
                'X' => c.is_ascii_digit(),
                'Z' => ('1'..='9').contains(&c),
                'N' => ('2'..='9').contains(&c),
                other => other == c.to_ascii_uppercase(),
            };
            ok && match_from(rest, e_rest)
        }
    }
}

fn in_set(set: &[char], c: char) -> bool {
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == '-' {
            if (set[i]..=set[i + 2]).contains(&c) {
                return true;
            }
            i += 3;
        } else {
            if set[i] == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asterisk_patterns() {
        assert!(matches("1XXX", "1234"));
        assert!(!matches("1XXX", "123"));
        assert!(matches("NXXNXXXXXX", "2125551212"));
        assert!(!matches("NXX", "112"));
        assert!(matches("9.", "91"));
        assert!(!matches("9.", "9"));
        assert!(matches("9!", "9"));
        assert!(matches("[13-5]0", "40"));
        assert!(!matches("[13-5]0", "20"));
        assert!(!matches("[12", "1"));
    }

    #[test]
    fn exact_beats_pattern_and_exten_is_expanded() {
        let mut plan = Dialplan::default();
        plan.add("in", "_1XXX", App::parse("dial(IAX2/b/${EXTEN})").unwrap());
        plan.add("in", "1000", App::parse("tone(1000)").unwrap());
        assert_eq!(plan.lookup("in", "1000"), Some(App::Tone { freq_hz: 1000.0 }));
        assert_eq!(plan.lookup("in", "1234"), Some(App::Dial { target: "IAX2/b/1234".into() }));
        assert_eq!(plan.lookup("in", "2000"), None);
        assert_eq!(plan.lookup("other", "1000"), None);
    }

    #[test]
    fn app_errors_say_what_to_write() {
        assert!(App::parse("tone(99999)").unwrap_err().to_string().contains("20-3900"));
        assert_eq!(App::parse("dial(SIP/x)"), Ok(App::Dial { target: "SIP/x".into() }));
        assert!(App::parse("dial(H323/x)").unwrap_err().to_string().contains("IAX2 or SIP"));
        assert!(App::parse("playback").unwrap_err().to_string().contains("unknown application"));
        assert_eq!(App::parse(" Echo ").unwrap(), App::Echo);
        assert_eq!(App::parse("hangup(17)").unwrap(), App::Hangup { cause: 17 });
    }
    #[test]
    fn includes_are_searched_after_the_context_in_order_and_loops_end() {
        let mut plan = Dialplan::default();
        plan.add("a", "1", App::Echo);
        plan.include("a", "b");
        plan.include("a", "c");
        plan.add("b", "_X", App::Music);
        plan.add("c", "_XX", App::Pattern);
        plan.add("c", "2", App::Silence);
        plan.include("b", "a"); // a loop
        assert_eq!(plan.lookup("a", "1"), Some(App::Echo));
        assert_eq!(plan.lookup("a", "2"), Some(App::Music), "b comes before c");
        assert_eq!(plan.lookup("a", "22"), Some(App::Pattern));
        assert_eq!(plan.lookup("b", "1"), Some(App::Music));
        assert_eq!(plan.lookup("b", "333"), None);
        assert_eq!(plan.missing_includes(), Vec::<(String, String)>::new());
        plan.include("c", "nowhere");
        assert_eq!(plan.missing_includes(), vec![("c".to_string(), "nowhere".to_string())]);
    }

    #[test]
    fn exten_substrings() {
        assert_eq!(expand_exten("SIP/${EXTEN}", "91234"), "SIP/91234");
        assert_eq!(expand_exten("SIP/${EXTEN:1}", "91234"), "SIP/1234");
        assert_eq!(expand_exten("${EXTEN:-4}", "91234"), "1234");
        assert_eq!(expand_exten("${EXTEN:1:2}", "91234"), "12");
        assert_eq!(expand_exten("${EXTEN:0:-1}", "91234"), "9123");
        assert_eq!(expand_exten("${EXTEN:9}", "91234"), "");
        assert_eq!(expand_exten("${EXTENSION}/${EXTEN", "1"), "${EXTENSION}/${EXTEN");
        assert_eq!(expand_exten("${EXTEN:x}", "1"), "${EXTEN:x}");
        assert_eq!(expand_exten("${EXTEN:-9223372036854775808:-9223372036854775808}", "12"), "");
        assert_eq!(expand_exten("${EXTEN:9223372036854775807:9223372036854775807}", "12"), "");
    }

    #[test]
    fn programs_reduce_to_one_route() {
        let tone = App::Tone { freq_hz: 1000.0 };
        let timed =
            |app, secs, cause| Route { app, hangup: Some(TimedHangup { after: Duration::from_secs(secs), cause }) };
        let r = |steps: &[Step]| reduce(steps).0;
        assert_eq!(r(&[Step::Answer, Step::Run(App::Echo)]), Route::from(App::Echo));
        assert_eq!(
            r(&[Step::Answer, Step::Play(tone.clone()), Step::Wait { secs: 10.0 }, Step::Hangup { cause: 16 }]),
            timed(tone.clone(), 10, 16)
        );
        assert_eq!(r(&[Step::Hangup { cause: 17 }, Step::Run(App::Echo)]), Route::from(App::Hangup { cause: 17 }));
        assert_eq!(r(&[Step::NoOp]), Route::from(App::Hangup { cause: 16 }));
        assert_eq!(r(&[Step::Wait { secs: 5.0 }]), timed(App::Silence, 5, 16));
        let hostile = [Step::Wait { secs: f64::NAN }, Step::Wait { secs: f64::INFINITY }, Step::Wait { secs: 1e300 }];
        assert_eq!(r(&hostile), timed(App::Silence, 86_400, 16), "never more than a day, never a panic");
        let (route, unhonoured) = reduce(&[Step::Play(App::Music), Step::Play(tone.clone()), Step::Wait { secs: 1.0 }]);
        assert_eq!(route, timed(tone, 1, 16));
        assert_eq!(unhonoured, vec![Unhonoured { step: 0, why: "replaced at once by the next one".into() }]);
    }

    #[test]
    fn toml_steps() {
        assert_eq!(Step::parse("answer"), Ok(Step::Answer));
        assert_eq!(Step::parse("Wait(2.5)"), Ok(Step::Wait { secs: 2.5 }));
        assert_eq!(Step::parse("hangup"), Ok(Step::Hangup { cause: 16 }));
        assert_eq!(Step::parse("hangup(34)"), Ok(Step::Hangup { cause: 34 }));
        assert_eq!(Step::parse("tone(440)"), Ok(Step::Play(App::Tone { freq_hz: 440.0 })));
        assert_eq!(Step::parse("echo"), Ok(Step::Run(App::Echo)));
        assert!(Step::parse("wait(-1)").unwrap_err().to_string().contains("wait needs seconds"));
        assert!(Step::parse("voicemail").is_err());
    }
}
