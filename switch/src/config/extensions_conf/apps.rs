//! Asterisk dialplan applications to the switch's [`Step`]s.
//!
//! | Application              | Step                                                    |
//! |--------------------------|---------------------------------------------------------|
//! | `Answer`                 | answer (every application of the switch answers anyway) |
//! | `Echo`                   | echo until the caller hangs up                          |
//! | `Playtones(LIST)`        | a tone of the list's first frequency, in the background |
//! | `Wait(SECS)`             | wait, playing whatever plays                            |
//! | `Hangup([CAUSE])`        | hang up with that Q.850 cause (16 if none)              |
//! | `Busy`, `Congestion`     | hang up with cause 17, 34                               |
//! | `Dial(IAX2/..|SIP/..)`   | dial and bridge until either side hangs up              |
//! | `Playback(NAME)`, `MusicOnHold` | music until the caller hangs up (no sound files) |
//! | `NoOp`, `Progress`, `Ringing` | nothing                                            |

use crate::dialplan::{App, Step};

/// Why an application line cannot become a step.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum AppError {
    #[error("`{0}` is not an application this switch runs; the step is skipped")]
    Unsupported(String),
    #[error("{app}({args}): {why}; the step is skipped")]
    BadArgs { app: &'static str, args: String, why: &'static str },
}

impl AppError {
    pub(super) fn hint(&self) -> String {
        match self {
            AppError::Unsupported(_) => "the switch runs Answer, Echo, Playtones, Wait, Hangup, Busy, Congestion, \
                 Dial(IAX2/...|SIP/...), Playback, MusicOnHold, NoOp, Progress and Ringing"
                .into(),
            AppError::BadArgs { app, .. } => match *app {
                "Playtones" => "write e.g. Playtones(1000) or Playtones(!350+440/100,!0/100)".into(),
                "Wait" => "write e.g. Wait(10)".into(),
                "Hangup" => "write a Q.850 cause 1-127, e.g. Hangup(17), or Hangup()".into(),
                _ => "write e.g. Dial(IAX2/b/${EXTEN}) or Dial(SIP/${EXTEN})".into(),
            },
        }
    }
}

/// A step, and something the operator should know about how it is run
/// (options the switch ignores), if anything.
pub(super) type Mapped = (Step, Option<String>);

/// Maps `app(args)` (name any case, args as written) to a step.
pub(super) fn step(app: &str, args: &str) -> Result<Mapped, AppError> {
    let bad = |app: &'static str, why: &'static str| AppError::BadArgs { app, args: args.to_string(), why };
    let args = args.trim();
    Ok(match app.to_ascii_lowercase().as_str() {
        "answer" => (Step::Answer, None),
        "noop" | "progress" | "ringing" => (Step::NoOp, None),
        "echo" => (Step::Run(App::Echo), None),
        "playback" => (Step::Run(App::Music), None),
        "musiconhold" => (Step::Run(App::Music), None),
        "playtones" => {
            let freq = first_frequency(args).ok_or_else(|| bad("Playtones", "no frequency 20-3900 Hz found"))?;
            if freq == 0.0 {
                (Step::Play(App::Silence), None)
            } else {
                (Step::Play(App::Tone { freq_hz: freq }), None)
            }
        }
        "wait" => match args.parse::<f64>() {
            Ok(secs) if (0.0..=crate::dialplan::MAX_WAIT_SECS).contains(&secs) => (Step::Wait { secs }, None),
            _ => return Err(bad("Wait", "expected seconds, 0 to 86400")),
        },
        "hangup" if args.is_empty() => (Step::Hangup { cause: 16 }, None),
        "hangup" => match args.parse::<u8>() {
            Ok(cause) if (1..=127).contains(&cause) => (Step::Hangup { cause }, None),
            _ => return Err(bad("Hangup", "expected a Q.850 cause number 1-127")),
        },
        "busy" => (Step::Hangup { cause: 17 }, None),
        "congestion" => (Step::Hangup { cause: 34 }, None),
        "dial" => {
            let mut parts = args.splitn(2, ',');
            let targets = parts.next().unwrap_or("").trim();
            let options = parts.next().map(str::trim).filter(|o| !o.trim_matches(',').is_empty());
            let mut all = targets.split('&');
            let target = all.next().unwrap_or("").trim();
            let upper = target.to_ascii_uppercase();
            let tech_ok = upper.starts_with("IAX2/") || upper.starts_with("SIP/");
            if !tech_ok || target.len() <= 5 {
                return Err(bad("Dial", "only IAX2/... and SIP/... targets can be dialled"));
            }
            let mut caveats = Vec::new();
            if all.next().is_some() {
                caveats.push(format!("only the first target `{target}` is dialled"));
            }
            if let Some(o) = options {
                caveats.push(format!("the timeout and options `{o}` are not honoured"));
            }
            let caveat = (!caveats.is_empty()).then(|| format!("Dial: {}", caveats.join("; ")));
            (Step::Run(App::Dial { target: target.to_string() }), caveat)
        }
        _ => return Err(AppError::Unsupported(app.to_string())),
    })
}

/// The first frequency of a `Playtones` list (`1000`, `350+440`,
/// `!350+440/100,!0/100`, `440*2/300`), or of a tone name of the default
/// (US) indications: `dial` 350, `ring` 440, `busy` and `congestion` 480,
/// `callwaiting` 440. `0` is silence.
fn first_frequency(list: &str) -> Option<f64> {
    let first = list.split(',').next()?.trim();
    let named = match first.to_ascii_lowercase().as_str() {
        "dial" => Some(350.0),
        "ring" | "callwaiting" => Some(440.0),
        "busy" | "congestion" => Some(480.0),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let first = first.strip_prefix('!').unwrap_or(first);
    let first = first.split('/').next()?;
    let first = first.split(['+', '*', '~']).next()?.trim();
    let first = first.strip_prefix('M').unwrap_or(first); // `M` marks a musical note number
    match first.parse::<f64>() {
        Ok(f) if f == 0.0 || (20.0..=3900.0).contains(&f) => Some(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playtones_takes_the_first_frequency() {
        assert_eq!(first_frequency("1000"), Some(1000.0));
        assert_eq!(first_frequency("350+440"), Some(350.0));
        assert_eq!(first_frequency("!350+440/100,!0/100"), Some(350.0));
        assert_eq!(first_frequency("440/500,0/500"), Some(440.0));
        assert_eq!(first_frequency("busy"), Some(480.0));
        assert_eq!(first_frequency("0"), Some(0.0));
        assert_eq!(first_frequency("99999"), None);
        assert_eq!(first_frequency(""), None);
        assert_eq!(first_frequency("loud"), None);
    }

    #[test]
    fn every_application() {
        assert_eq!(step("Answer", ""), Ok((Step::Answer, None)));
        assert_eq!(step("NoOp", "hello"), Ok((Step::NoOp, None)));
        assert_eq!(step("Progress", ""), Ok((Step::NoOp, None)));
        assert_eq!(step("Ringing", ""), Ok((Step::NoOp, None)));
        assert_eq!(step("ECHO", ""), Ok((Step::Run(App::Echo), None)));
        assert_eq!(step("Playback", "demo-congrats"), Ok((Step::Run(App::Music), None)));
        assert_eq!(step("MusicOnHold", ""), Ok((Step::Run(App::Music), None)));
        assert_eq!(step("Playtones", "1000"), Ok((Step::Play(App::Tone { freq_hz: 1000.0 }), None)));
        assert_eq!(step("Playtones", "0"), Ok((Step::Play(App::Silence), None)));
        assert_eq!(step("Wait", "2.5"), Ok((Step::Wait { secs: 2.5 }, None)));
        assert_eq!(step("Hangup", ""), Ok((Step::Hangup { cause: 16 }, None)));
        assert_eq!(step("Hangup", "17"), Ok((Step::Hangup { cause: 17 }, None)));
        assert_eq!(step("Busy", "10"), Ok((Step::Hangup { cause: 17 }, None)));
        assert_eq!(step("Congestion", ""), Ok((Step::Hangup { cause: 34 }, None)));
        assert_eq!(
            step("Dial", "IAX2/b/${EXTEN}"),
            Ok((Step::Run(App::Dial { target: "IAX2/b/${EXTEN}".into() }), None))
        );
        let (s, caveat) = step("Dial", "SIP/alice&SIP/bob,30,tT").unwrap();
        assert_eq!(s, Step::Run(App::Dial { target: "SIP/alice".into() }));
        let caveat = caveat.unwrap();
        assert!(caveat.contains("only the first target") && caveat.contains("`30,tT`"), "{caveat}");
    }

    #[test]
    fn errors_name_the_application() {
        assert_eq!(step("VoiceMail", "100@default"), Err(AppError::Unsupported("VoiceMail".into())));
        let e = step("Dial", "DAHDI/1").unwrap_err();
        assert!(e.to_string().starts_with("Dial(DAHDI/1): only IAX2"), "{e}");
        assert!(step("Dial", "IAX2/").is_err());
        assert!(step("Wait", "soon").unwrap_err().hint().contains("Wait(10)"));
        assert!(step("Wait", "-1").is_err());
        assert!(step("Hangup", "200").is_err());
        assert!(step("Playtones", "").is_err());
    }
}
