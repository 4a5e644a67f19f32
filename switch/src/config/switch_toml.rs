//! `switch.toml`: what the switch needs that `iax.conf` has no place for.
//!
//! ```toml
//! [control]
//! listen = "127.0.0.1:5039"   # operator control socket; "off" disables it
//!
//! [log]
//! level = "info"              # error | warn | info | debug | trace
//!
//! [dialplan.iaxinbound]       # one table per context (see `crate::dialplan`)
//! "9196" = "echo"
//! "_1XXX" = "dial(IAX2/b/${EXTEN})"
//! ```
//!
//! Every table and key is optional; unknown ones are errors. The control socket
//! has no authentication, so it may only listen on a loopback address. Dialplan
//! entries keep their order in the file (among patterns, the first written wins).

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{Diagnostic, Location, LogLevel, SwitchSettings};
use crate::dialplan::App;

/// The file's name.
pub const SWITCH_TOML: &str = "switch.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    control: Option<Control>,
    log: Option<Log>,
    dialplan: Option<Ordered<Spanned<String>, Extensions>>,
}

/// One `[dialplan.CONTEXT]` table: extension pattern -> application, in file order.
type Extensions = Ordered<Spanned<String>, Spanned<String>>;

/// A TOML table read as a list, keeping the order of the file.
#[derive(Debug)]
struct Ordered<K, V>(Vec<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Ordered<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for TableVisitor<K, V> {
            type Value = Ordered<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Log {
    level: Option<Spanned<String>>,
}

/// Parses the text of `switch.toml`; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<SwitchSettings, Vec<Diagnostic>> {
    let parsed: File = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => return Err(vec![toml_error(file, text, &e)]),
    };
    let mut settings = SwitchSettings::default();
    let mut errors = Vec::new();
    if let Some(listen) = parsed.control.and_then(|c| c.listen) {
        match parse_listen(listen.get_ref()) {
            Ok(addr) => settings.control = addr,
            Err((message, hint)) => errors.push(diag(file, text, listen.span().start, "listen", message, hint)),
        }
    }
    if let Some(level) = parsed.log.and_then(|l| l.level) {
        match LogLevel::from_str(level.get_ref()) {
            Ok(l) => settings.log.level = l,
            Err(()) => errors.push(diag(
                file,
                text,
                level.span().start,
                "level",
                format!("expected one of error, warn, info, debug, trace; got {:?}", level.get_ref()),
                "write e.g. level = \"info\"".to_string(),
            )),
        }
    }
    for (context, extensions) in parsed.dialplan.map(|d| d.0).unwrap_or_default() {
        if context.get_ref().trim().is_empty() {
            errors.push(diag(
                file,
                text,
                context.span().start,
                "dialplan",
                "empty context name".to_string(),
                "write e.g. [dialplan.iaxinbound]".to_string(),
            ));
            continue;
        }
        for (pattern, app) in extensions.0 {
            if let Err(message) = check_pattern(pattern.get_ref()) {
                let hint = "write e.g. \"9196\" = \"echo\" or \"_1XXX\" = \"dial(IAX2/b/${EXTEN})\"".to_string();
                errors.push(diag(file, text, pattern.span().start, pattern.get_ref(), message, hint));
                continue;
            }
            match App::parse(app.get_ref()) {
                Ok(parsed) => settings.dialplan.add(context.get_ref(), pattern.get_ref(), parsed),
                Err(message) => {
                    errors.push(diag(file, text, app.span().start, pattern.get_ref(), message, String::new()))
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

fn parse_listen(v: &str) -> Result<Option<SocketAddr>, (String, String)> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr = SocketAddr::from_str(v.trim()).map_err(|_| {
        (
            format!("expected \"address:port\" or \"off\", got {v:?}"),
            "write e.g. listen = \"127.0.0.1:5039\"".to_string(),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err((
            format!("{addr} is not a loopback address; the control socket has no authentication"),
            "listen on 127.0.0.1 or [::1] and reach it through SSH, or write listen = \"off\"".to_string(),
        ));
    }
    Ok(Some(addr))
}

/// An extension (`9196`, `s`, `h`) or an Asterisk pattern (`_1XXX`, `_9.`, `_[1-3]XX`).
fn check_pattern(p: &str) -> Result<(), String> {
    if p.trim().is_empty() || p.chars().any(char::is_whitespace) {
        return Err(format!("extension {p:?} is empty or contains spaces"));
    }
    if let Some(body) = p.strip_prefix('_') {
        if body.is_empty() {
            return Err("pattern `_` has nothing after the `_`".to_string());
        }
        let mut open = false;
        for c in body.chars() {
            match c {
                '[' if open => return Err(format!("pattern {p:?} opens `[` twice")),
                '[' => open = true,
                ']' if !open => return Err(format!("pattern {p:?} has `]` without `[`")),
                ']' => open = false,
                _ => {}
            }
        }
        if open {
            return Err(format!("pattern {p:?} has `[` without `]`"));
        }
    }
    Ok(())
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> Diagnostic {
    let message = e.message().trim().replace('\n', "; ");
    let start = e.span().map_or(0, |s| s.start);
    // serde's messages name the offending key between backticks: "unknown field `lisen`, ..."
    let key = if message.starts_with("unknown field") { message.split('`').nth(1).map(str::to_string) } else { None };
    let hint = if key.is_some() {
        "remove it or correct the spelling; known: [control] listen, [log] level, [dialplan.CONTEXT]"
    } else {
        "see https://toml.io for the syntax; e.g. [control] then listen = \"127.0.0.1:5039\""
    };
    let line = line_of(text, start);
    Diagnostic { location: Location { file: file.to_string(), line }, key, message, hint: hint.to_string() }
}

fn diag(file: &str, text: &str, offset: usize, key: &str, message: String, hint: String) -> Diagnostic {
    Diagnostic {
        location: Location { file: file.to_string(), line: line_of(text, offset) },
        key: Some(key.to_string()),
        message,
        hint,
    }
}

/// 1-based line of a byte offset (clamped to the text).
fn line_of(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    let newlines = text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        parse("switch.toml", text).err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("switch.toml", "").unwrap(), SwitchSettings::default());
        let s = parse("switch.toml", "[control]\nlisten = \"[::1]:6000\"\n[log]\nlevel = \"DEBUG\"\n").unwrap();
        assert_eq!(s.control, Some("[::1]:6000".parse().unwrap()));
        assert_eq!(s.log.level, LogLevel::Debug);
        assert_eq!(parse("switch.toml", "[control]\nlisten = \"off\"\n").unwrap().control, None);
    }

    #[test]
    fn dialplan_keeps_file_order() {
        let text = "[dialplan.in]\n\"_X.\" = \"echo\"\n\"_1XXX\" = \"music\"\n\"1000\" = \"tone(1000)\"\n\
                    [dialplan.other]\n\"_1XXX\" = \"dial(IAX2/b/${EXTEN})\"\n";
        let s = parse("switch.toml", text).unwrap();
        assert_eq!(s.dialplan.lookup("in", "1234"), Some(App::Echo)); // first pattern written wins
        assert_eq!(s.dialplan.lookup("in", "1000"), Some(App::Tone { freq_hz: 1000.0 })); // exact beats patterns
        assert_eq!(s.dialplan.lookup("other", "1234"), Some(App::Dial { target: "IAX2/b/1234".into() }));
        assert!(s.dialplan.lookup("none", "1").is_none());
    }

    #[test]
    fn dialplan_errors_have_lines() {
        let e =
            errs("[dialplan.in]\n\"9196\" = \"echo\"\n\"1000\" = \"tone(99999)\"\n\"_1[23\" = \"echo\"\n\"x\" = 5\n");
        assert_eq!(e.len(), 1, "{e:?}"); // the integer is a TOML type error: reported alone
        assert!(e[0].starts_with("switch.toml:5: "), "{e:?}");
        let e = errs("[dialplan.in]\n\"9196\" = \"echo\"\n\"1000\" = \"tone(99999)\"\n\"_1[23\" = \"echo\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("switch.toml:3: `1000`: `tone(99999)`: tone frequency must be 20-3900 Hz"), "{e:?}");
        assert!(e[1].starts_with("switch.toml:4: `_1[23`: pattern"), "{e:?}");
        let e = errs("[dialplan]\nin = \"echo\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("switch.toml:2: "), "{e:?}");
    }

    #[test]
    fn errors_have_lines() {
        assert_eq!(
            errs("[control]\nlisten = \"127.0.0.1:5039\"\nlisen = 3\n"),
            vec!["switch.toml:3: `lisen`: unknown field `lisen`, expected `listen` (remove it or correct the spelling; known: [control] listen, [log] level, [dialplan.CONTEXT])"]
        );
        let e = errs("\n[control\nlisten = 1\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("switch.toml:2: "), "{e:?}");
        let e = errs("[control]\nlisten = \"0.0.0.0:5039\"\n[log]\nlevel = \"loud\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("switch.toml:2: `listen`: 0.0.0.0:5039 is not a loopback address"), "{e:?}");
        assert!(e[1].starts_with("switch.toml:4: `level`:"), "{e:?}");
    }
}
