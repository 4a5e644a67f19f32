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
    /// Place a second call and bridge the two (`IAX2/peer/exten` from IAX2 calls,
    /// `SIP/user` from SIP calls to a registered user; `${EXTEN}` expanded).
    Dial { target: String },
    /// Refuse with this Q.850 cause code.
    Hangup { cause: u8 },
}

impl App {
    /// Parses `echo`, `music`, `pattern`, `tone(HZ)`, `dial(TARGET)`, `hangup(CAUSE)`.
    pub fn parse(text: &str) -> Result<App, String> {
        let text = text.trim();
        let (name, arg) = match text.split_once('(') {
            Some((name, rest)) => {
                let Some(arg) = rest.strip_suffix(')') else {
                    return Err(format!("`{text}`: missing `)`"));
                };
                (name.trim(), Some(arg.trim()))
            }
            None => (text, None),
        };
        match (name.to_ascii_lowercase().as_str(), arg) {
            ("echo", None) => Ok(App::Echo),
            ("music", None) => Ok(App::Music),
            ("pattern", None) => Ok(App::Pattern),
            ("tone", Some(hz)) => match hz.parse::<f64>() {
                Ok(f) if (20.0..=3900.0).contains(&f) => Ok(App::Tone { freq_hz: f }),
                _ => Err(format!("`{text}`: tone frequency must be 20-3900 Hz, e.g. tone(1000)")),
            },
            ("dial", Some(target))
                if target.to_ascii_uppercase().starts_with("IAX2/") || target.to_ascii_uppercase().starts_with("SIP/") =>
            {
                Ok(App::Dial { target: target.to_string() })
            }
            ("dial", _) => Err(format!(
                "`{text}`: dial needs an IAX2 or SIP target, e.g. dial(IAX2/b/${{EXTEN}}) or dial(SIP/${{EXTEN}})"
            )),
            ("hangup", Some(code)) => match code.parse::<u8>() {
                Ok(cause) if cause > 0 && cause < 128 => Ok(App::Hangup { cause }),
                _ => Err(format!("`{text}`: hangup needs a Q.850 cause 1-127, e.g. hangup(17)")),
            },
            _ => Err(format!(
                "`{text}`: unknown application; use echo, music, pattern, tone(HZ), dial(IAX2/peer/exten) or hangup(CAUSE)"
            )),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dialplan {
    contexts: BTreeMap<String, Vec<(String, App)>>,
}

impl Dialplan {
    pub fn add(&mut self, context: &str, pattern: &str, app: App) {
        self.contexts.entry(context.to_string()).or_default().push((pattern.to_string(), app));
    }

    pub fn has_context(&self, context: &str) -> bool {
        self.contexts.contains_key(context)
    }

    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// The application for `exten` in `context`, with `${EXTEN}` expanded.
    pub fn lookup(&self, context: &str, exten: &str) -> Option<App> {
        let entries = self.contexts.get(context)?;
        let exact = entries.iter().find(|(p, _)| !p.starts_with('_') && p == exten);
        let found = exact.or_else(|| entries.iter().find(|(p, _)| p.starts_with('_') && matches(&p[1..], exten)));
        found.map(|(_, app)| match app {
            App::Dial { target } => App::Dial { target: target.replace("${EXTEN}", exten) },
            other => other.clone(),
        })
    }
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
        assert!(App::parse("tone(99999)").unwrap_err().contains("20-3900"));
        assert_eq!(App::parse("dial(SIP/x)"), Ok(App::Dial { target: "SIP/x".into() }));
        assert!(App::parse("dial(H323/x)").unwrap_err().contains("IAX2 or SIP"));
        assert!(App::parse("playback").unwrap_err().contains("unknown application"));
        assert_eq!(App::parse(" Echo ").unwrap(), App::Echo);
        assert_eq!(App::parse("hangup(17)").unwrap(), App::Hangup { cause: 17 });
    }
}
