//! `iax.conf` in Asterisk's syntax, read as-is, into [`IaxConfig`].
//!
//! Two phases. `Reader` turns text into sections of `key = value` entries the
//! way Asterisk's `main/config.c` does: `[section]` headers with template options
//! (`[name](!)`, `[name](tpl1,tpl2)`, `[name](+)`), `key = value` and
//! `key => value`, `key += more` (appends to the previous value of `key`),
//! `;` comments, `\;` escapes, `;-- block comments --;`, and
//! `#include` / `#tryinclude` resolved through the [`SourceLoader`]. Then
//! `Interp` maps entries onto the model, as `chan_iax2` does: `[general]` is
//! applied first wherever it sits in the file, then `[callnumberlimits]`, then
//! every other non-template section is a user, peer or friend.
//!
//! Differences from Asterisk, all on the side of telling the operator:
//! * unknown keys, bad values, options in the wrong section, duplicate section
//!   names, `#exec` and missing includes are errors (Asterisk logs and goes on);
//! * `bindport` applies to `bindaddr` whichever comes first (Asterisk only honours
//!   a `bindport` written before `bindaddr`). A `bindaddr` with its own `:port`
//!   wins over an earlier `bindport`; a later, different `bindport` is an error;
//! * `register =>` splits at the last `@` and the first `:`, so secrets may
//!   contain `@` and `:`;
//! * includes are names relative to the configuration directory; absolute paths,
//!   `..` and wildcards are refused;
//! * an empty `secret=` is an error, and so is a `host=dynamic` peer without a
//!   secret when `bindaddr` is a public address (anyone could register as it);
//! * `[general]` with several `bindaddr` lines is an error (one socket).
//!
//! Codecs: the list starts as the model's default (ulaw, alaw, gsm); `allow`
//! appends codecs not yet listed, `disallow` removes, `all` means every codec in
//! [`options::CODECS`]; `bandwidth=low|medium` removes Asterisk's high-bandwidth
//! codecs at that point of the file and `high` appends the full-bandwidth set, so
//! that (as in chan_iax2) an `allow` after `bandwidth=low` still adds. A section's
//! own `allow`/`disallow` start from `[general]`'s final list.
//!
//! A `type=user` section without `host=` gets `Host::Dynamic { defaultip: None }`
//! (any source its ACL permits). A user's several `context=` lines are all kept in
//! `PeerConfig::contexts`, the first being the default (as chan_iax2 does for users).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use super::model::*;
use super::options::{self, OptionSpec, Support};
use super::{Diagnostic, SourceLoader};

/// The main configuration file's name.
pub const IAX_CONF: &str = "iax.conf";
/// `#include` nesting deeper than this is an error.
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// More `#include`s than this in one load (counting repeats) is an error.
pub const MAX_INCLUDED_FILES: usize = 256;
/// As Asterisk's `MAX_NESTED_COMMENTS`.
const MAX_NESTED_COMMENTS: u32 = 128;
/// What `qualify=yes` / `autokill=yes` mean (Asterisk's `DEFAULT_MAXMS`).
pub const DEFAULT_MAXMS: u32 = 2000;
/// Highest IAX2 call number (15 bits).
const MAX_CALLNO: i64 = 32767;

/// The outcome of reading `iax.conf`: the model, errors and notes (each in file order).
#[derive(Debug)]
pub struct IaxOutcome {
    pub config: IaxConfig,
    pub errors: Vec<Diagnostic>,
    pub notes: Vec<Diagnostic>,
}

/// Reads `iax.conf` (and what it includes) through `loader`. An absent
/// `iax.conf` yields the built-in defaults.
pub fn read(loader: &impl SourceLoader) -> IaxOutcome {
    let mut reader =
        Reader { loader, sections: Vec::new(), current: None, errors: Vec::new(), seq: 0, stack: Vec::new(), files: 0 };
    let top = loader.display_name(IAX_CONF);
    match loader.read(IAX_CONF) {
        Ok(Some(text)) => {
            reader.stack.push(IAX_CONF.to_string());
            reader.parse_text(&text, &top, 0);
        }
        Ok(None) => {}
        Err(e) => reader.errors.push((
            0,
            Diagnostic::new(
                Location { file: top, line: 0 },
                None,
                format!("cannot read the file: {e}"),
                "check the file's permissions",
            ),
        )),
    }
    let Reader { sections, errors, .. } = reader;
    let mut interp = Interp { errors, notes: Vec::new() };
    let config = interp.run(&sections);
    let notes = interp.finish_notes();
    IaxOutcome { config, errors: finish(interp.errors), notes }
}

/// Sorts by position in the (include-expanded) text and drops exact repeats
/// (a template's bad value is reported once, not once per section using it).
fn finish(mut list: Vec<(u64, Diagnostic)>) -> Vec<Diagnostic> {
    list.sort_by_key(|(seq, _)| *seq);
    let mut seen = BTreeSet::new();
    list.into_iter()
        .filter(|(_, d)| seen.insert((d.location.clone(), d.key.clone(), d.message.clone())))
        .map(|(_, d)| d)
        .collect()
}

// ------------------------------------------------------------------------------------
// Phase 1: text to sections
// ------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Entry {
    /// As written (trimmed); matched case-insensitively.
    key: String,
    value: String,
    location: Location,
    /// Position in the include-expanded text, for "first occurrence" and ordering.
    seq: u64,
}

#[derive(Debug)]
struct Section {
    name: String,
    location: Location,
    seq: u64,
    template: bool,
    /// The header was wrong; its lines are read (to keep going) but not applied.
    broken: bool,
    entries: Vec<Entry>,
}

impl Section {
    fn is_general(&self) -> bool {
        self.name.eq_ignore_ascii_case("general")
    }
    fn is_callnumberlimits(&self) -> bool {
        self.name.eq_ignore_ascii_case("callnumberlimits")
    }
    fn same_name(&self, other: &str) -> bool {
        if self.is_general() || self.is_callnumberlimits() {
            self.name.eq_ignore_ascii_case(other)
        } else {
            self.name == other
        }
    }
}

struct Reader<'a, L: SourceLoader> {
    loader: &'a L,
    sections: Vec<Section>,
    /// Asterisk's `cfg->current`: the section an included file starts in.
    current: Option<usize>,
    errors: Vec<(u64, Diagnostic)>,
    seq: u64,
    /// Names of the files being read, outermost first (cycle detection).
    stack: Vec<String>,
    /// Files read so far; includes stop at [`MAX_INCLUDED_FILES`].
    files: usize,
}

impl<L: SourceLoader> Reader<'_, L> {
    fn error(&mut self, seq: u64, location: &Location, key: Option<&str>, message: String, hint: impl Into<String>) {
        self.errors.push((seq, Diagnostic::new(location.clone(), key, message, hint)));
    }

    fn parse_text(&mut self, text: &str, display: &str, depth: usize) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut cur = self.current;
        let mut comment_depth = 0u32;
        let mut comment_start = 0u32;
        let mut last_line = 0u32;
        for (idx, raw) in text.lines().enumerate() {
            let lineno = u32::try_from(idx + 1).unwrap_or(u32::MAX);
            last_line = lineno;
            self.seq += 1;
            let seq = self.seq;
            let was_in_comment = comment_depth > 0;
            let stripped = strip_comment(raw, &mut comment_depth);
            if !was_in_comment && comment_depth > 0 {
                comment_start = lineno;
            }
            let line = stripped.trim();
            if line.is_empty() {
                continue;
            }
            let loc = Location { file: display.to_string(), line: lineno };
            if line.starts_with('[') {
                cur = self.header(line, &loc, seq);
            } else if let Some(directive) = line.strip_prefix('#') {
                self.directive(directive, &loc, seq, depth);
            } else {
                self.variable(line, cur, &loc, seq);
            }
        }
        if comment_depth > 0 {
            let loc = Location { file: display.to_string(), line: comment_start };
            self.error(
                self.seq,
                &loc,
                None,
                "block comment `;--` is never closed".to_string(),
                format!("close it with `--;` (the file ends at line {last_line})"),
            );
        }
    }

    /// `[name]`, `[name](!)`, `[name](+)`, `[name](tpl1,tpl2)`. Returns the section
    /// following lines go to.
    fn header(&mut self, line: &str, loc: &Location, seq: u64) -> Option<usize> {
        let (name, opts) = match split_header(line) {
            Ok(parts) => parts,
            Err((message, hint)) => {
                self.error(seq, loc, None, message, hint);
                return Some(self.push_section("", loc, seq, false, true));
            }
        };
        let mut template = false;
        let mut append = false;
        let mut parents = Vec::new();
        for opt in &opts {
            if opt == "!" {
                template = true;
            } else if opt.starts_with('+') {
                append = true;
            } else if opt.is_empty() {
                self.error(
                    seq,
                    loc,
                    None,
                    format!("empty entry in the options of [{name}]"),
                    format!("write e.g. [{name}](!) for a template or [{name}](mytemplate) to inherit"),
                );
            } else {
                parents.push(opt.clone());
            }
        }
        let existing = self.sections.iter().position(|s| !s.broken && s.same_name(&name));
        if append {
            return match existing {
                Some(i) => {
                    self.sections[i].template |= template;
                    self.current = Some(i);
                    Some(i)
                }
                None => {
                    self.error(
                        seq,
                        loc,
                        None,
                        format!("[{name}](+) adds to section [{name}], which is not defined above"),
                        format!("define [{name}] first, or drop the (+)"),
                    );
                    Some(self.push_section(&name, loc, seq, template, true))
                }
            };
        }
        if let Some(i) = existing {
            let first = self.sections[i].location.clone();
            self.error(
                seq,
                loc,
                None,
                format!("section [{name}] is defined twice (first at {first})"),
                format!("merge the two, rename one, or write [{name}](+) to add to the first"),
            );
            return Some(self.push_section(&name, loc, seq, template, true));
        }
        let mut inherited = Vec::new();
        for parent in &parents {
            match self.sections.iter().find(|s| !s.broken && s.name == *parent) {
                Some(base) => inherited.extend(base.entries.iter().cloned()),
                None => self.error(
                    seq,
                    loc,
                    None,
                    format!("[{name}] inherits from [{parent}], which is not defined above"),
                    format!("define the template [{parent}](!) before [{name}]"),
                ),
            }
        }
        let i = self.push_section(&name, loc, seq, template, false);
        self.sections[i].entries = inherited;
        Some(i)
    }

    fn push_section(&mut self, name: &str, loc: &Location, seq: u64, template: bool, broken: bool) -> usize {
        self.sections.push(Section {
            name: name.to_string(),
            location: loc.clone(),
            seq,
            template,
            broken,
            entries: Vec::new(),
        });
        let i = self.sections.len() - 1;
        self.current = Some(i);
        i
    }

    /// `#include file`, `#include "file"`, `#tryinclude <file>`; `#exec` is refused.
    fn directive(&mut self, body: &str, loc: &Location, seq: u64, depth: usize) {
        let (word, arg) = match body.find(char::is_whitespace) {
            Some(i) => (&body[..i], body[i..].trim()),
            None => (body, ""),
        };
        let word = word.to_ascii_lowercase();
        let optional = match word.as_str() {
            "include" => false,
            "tryinclude" => true,
            "exec" => {
                self.error(
                    seq,
                    loc,
                    None,
                    "#exec is not supported: this switch does not run programs to build its configuration".to_string(),
                    "run the program yourself, save its output to a file and #include that file",
                );
                return;
            }
            _ => {
                self.error(
                    seq,
                    loc,
                    None,
                    format!("unknown directive `#{word}`"),
                    "only #include and #tryinclude are understood; start comments with `;`",
                );
                return;
            }
        };
        let name = dequote(arg);
        if name.is_empty() {
            self.error(
                seq,
                loc,
                None,
                format!("#{word} needs a file name"),
                format!("write e.g. #{word} \"iax-peers.conf\""),
            );
            return;
        }
        if let Err(why) = check_include_name(name) {
            self.error(
                seq,
                loc,
                None,
                format!("cannot #{word} {name:?}: {why}"),
                "name a file in the configuration directory, e.g. #include \"iax-peers.conf\"",
            );
            return;
        }
        let name = name.strip_prefix("./").unwrap_or(name).to_string();
        if let Some(pos) = self.stack.iter().position(|n| *n == name) {
            let mut chain: Vec<&str> = self.stack[pos..].iter().map(String::as_str).collect();
            chain.push(&name);
            self.error(
                seq,
                loc,
                None,
                format!("include cycle: {}", chain.join(" -> ")),
                format!("remove the #{word} of {name:?} from one of these files"),
            );
            return;
        }
        if depth >= MAX_INCLUDE_DEPTH {
            self.error(
                seq,
                loc,
                None,
                format!("#{word} {name:?} nests includes more than {MAX_INCLUDE_DEPTH} deep"),
                "include the files from fewer levels",
            );
            return;
        }
        self.files += 1;
        if self.files > MAX_INCLUDED_FILES {
            self.error(
                seq,
                loc,
                None,
                format!("more than {MAX_INCLUDED_FILES} files included in all; {name:?} is not read"),
                "include each file once",
            );
            return;
        }
        match self.loader.read(&name) {
            Ok(Some(text)) => {
                let display = self.loader.display_name(&name);
                self.stack.push(name);
                self.parse_text(&text, &display, depth + 1);
                self.stack.pop();
            }
            Ok(None) if optional => {}
            Ok(None) => {
                let display = self.loader.display_name(&name);
                self.error(
                    seq,
                    loc,
                    None,
                    format!("included file {display} does not exist"),
                    format!("create it, fix the name, or write #tryinclude \"{name}\" if it is optional"),
                );
            }
            Err(e) => {
                let display = self.loader.display_name(&name);
                self.error(
                    seq,
                    loc,
                    None,
                    format!("cannot read included file {display}: {e}"),
                    "check the file's permissions",
                );
            }
        }
    }

    /// `key = value`, `key => value`, `key += more`.
    fn variable(&mut self, line: &str, cur: Option<usize>, loc: &Location, seq: u64) {
        let Some(cur) = cur else {
            self.error(
                seq,
                loc,
                None,
                format!("{line:?} is outside any [section]"),
                "put it under [general] or under the [peer] section it belongs to",
            );
            return;
        };
        let text = match line.strip_prefix('\\') {
            Some(rest) => {
                if matches!(rest.chars().next(), None | Some('\0'..=' ')) {
                    self.error(
                        seq,
                        loc,
                        None,
                        "a `\\` at the start of a line must escape a character".to_string(),
                        "remove the `\\`",
                    );
                    return;
                }
                rest
            }
            None => line,
        };
        let Some(eq) = text.find('=') else {
            self.error(
                seq,
                loc,
                None,
                format!("expected `option = value`, got {line:?}"),
                "write e.g. context=default (or comment the line out with `;`)",
            );
            return;
        };
        let (mut key, mut value) = (&text[..eq], &text[eq + 1..]);
        let append = key.ends_with('+');
        if append {
            key = &key[..key.len() - 1];
        } else if let Some(rest) = value.strip_prefix('>') {
            value = rest;
        }
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() {
            self.error(seq, loc, None, format!("no option name before `=` in {line:?}"), "write e.g. context=default");
            return;
        }
        let section = &mut self.sections[cur];
        if append {
            if let Some(prev) = section.entries.iter_mut().rev().find(|e| e.key == key) {
                prev.value.push_str(value);
                prev.value = prev.value.trim().to_string();
                return;
            }
        }
        section.entries.push(Entry { key: key.to_string(), value: value.to_string(), location: loc.clone(), seq });
    }
}

/// Removes `;` comments (keeping `\;` as a literal `;`) and tracks `;-- --;` blocks.
pub(super) fn strip_comment(line: &str, depth: &mut u32) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let at = |j: usize| chars.get(j).copied();
    while i < chars.len() {
        let c = chars[i];
        let opens = c == ';' && at(i + 1) == Some('-') && at(i + 2) == Some('-') && at(i + 3) != Some('-');
        if *depth > 0 {
            if c == '-' && at(i + 1) == Some('-') && at(i + 2) == Some(';') {
                *depth -= 1;
                i += 3;
            } else if opens {
                *depth = (*depth + 1).min(MAX_NESTED_COMMENTS);
                i += 3;
            } else {
                i += 1;
            }
            continue;
        }
        if c == '\\' && at(i + 1) == Some(';') {
            out.push(';');
            i += 2;
        } else if opens {
            *depth = 1;
            i += 3;
        } else if c == ';' {
            break;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

type Problem = (String, String);

/// `[name](opt,opt)` → name and options.
fn split_header(line: &str) -> Result<(String, Vec<String>), Problem> {
    let rest = &line[1..];
    let Some(close) = rest.find(']') else {
        return Err((format!("section header {line:?} has no closing `]`"), "write e.g. [general]".to_string()));
    };
    let name = &rest[..close];
    if name.is_empty() {
        return Err(("empty section name `[]`".to_string(), "write e.g. [general] or [mypeer]".to_string()));
    }
    if name.chars().any(char::is_whitespace) {
        return Err((
            format!("section name {name:?} contains spaces"),
            format!("write [{}]", name.split_whitespace().collect::<Vec<_>>().join("")),
        ));
    }
    let after = rest[close + 1..].trim();
    if after.is_empty() {
        return Ok((name.to_string(), Vec::new()));
    }
    let Some(inner) = after.strip_prefix('(') else {
        return Err((
            format!("unexpected {after:?} after [{name}]"),
            format!("only template options may follow, e.g. [{name}](!) or [{name}](mytemplate)"),
        ));
    };
    let Some(end) = inner.find(')') else {
        return Err((format!("options of [{name}] have no closing `)`"), format!("write e.g. [{name}](!)")));
    };
    let trailing = inner[end + 1..].trim();
    if !trailing.is_empty() {
        return Err((format!("unexpected {trailing:?} after the options of [{name}]"), "remove it".to_string()));
    }
    let opts = inner[..end].split(',').map(|s| s.trim().to_string()).collect();
    Ok((name.to_string(), opts))
}

pub(super) fn dequote(arg: &str) -> &str {
    let arg = arg.trim();
    for (open, close) in [('"', '"'), ('<', '>')] {
        if arg.len() >= 2 && arg.starts_with(open) && arg.ends_with(close) {
            return arg[1..arg.len() - 1].trim();
        }
    }
    arg
}

pub(super) fn check_include_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with('/') || name.starts_with('\\') || name.contains(":\\") || name.contains(":/") {
        return Err("only names relative to the configuration directory are supported");
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Err("`..` would leave the configuration directory");
    }
    if name.contains(['*', '?', '[']) {
        return Err("wildcards are not supported");
    }
    Ok(())
}

// ------------------------------------------------------------------------------------
// Phase 2: sections to the model
// ------------------------------------------------------------------------------------

struct NoteAcc {
    id: String,
    seq: u64,
    diag: Diagnostic,
    also: Vec<Location>,
}

struct Interp {
    errors: Vec<(u64, Diagnostic)>,
    notes: Vec<NoteAcc>,
}

/// Which kind of section an entry is being applied in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    General,
    Peer,
}

#[derive(Default)]
struct GeneralState {
    bindport: Option<(u16, u64, Location)>,
    bindaddr: Option<(IpAddr, Option<u16>, u64, Location)>,
}

/// What a peer section said about itself beyond the model, for the checks at its end.
#[derive(Default)]
struct PeerState {
    host: Option<Entry>,
    defaultip: Option<(IpAddr, Entry)>,
    contexts: Vec<String>,
    codecs: Option<Vec<String>>,
}

impl Interp {
    fn error(&mut self, e: &Entry, message: String, hint: impl Into<String>) {
        self.errors.push((e.seq, Diagnostic::new(e.location.clone(), Some(&e.key), message, hint)));
    }

    fn error_at(&mut self, seq: u64, location: &Location, key: Option<&str>, message: String, hint: impl Into<String>) {
        self.errors.push((seq, Diagnostic::new(location.clone(), key, message, hint)));
    }

    /// Records `id` as a note once; later (or earlier) sightings are listed in the hint.
    fn note(&mut self, id: &str, e: &Entry, message: String, hint: &str) {
        if let Some(acc) = self.notes.iter_mut().find(|n| n.id == id) {
            if e.seq < acc.seq {
                let old = std::mem::replace(&mut acc.diag.location, e.location.clone());
                acc.seq = e.seq;
                acc.diag.key = Some(e.key.clone());
                if !acc.also.contains(&old) {
                    acc.also.push(old);
                }
            } else if e.location != acc.diag.location && !acc.also.contains(&e.location) {
                acc.also.push(e.location.clone());
            }
            return;
        }
        self.notes.push(NoteAcc {
            id: id.to_string(),
            seq: e.seq,
            diag: Diagnostic::new(e.location.clone(), Some(&e.key), message, hint),
            also: Vec::new(),
        });
    }

    fn finish_notes(&mut self) -> Vec<Diagnostic> {
        let mut notes = std::mem::take(&mut self.notes);
        notes.sort_by_key(|n| n.seq);
        notes
            .into_iter()
            .map(|mut n| {
                n.also.sort();
                n.diag.hint = super::model::hint_with_also(&n.diag.hint, &n.also);
                n.diag
            })
            .collect()
    }

    /// The table row for an entry's key if the entry should be applied; reports
    /// unknown keys and misplaced options, and notes unsupported ones.
    fn check_key(&mut self, e: &Entry, ctx: Ctx) -> Option<&'static OptionSpec> {
        let Some(spec) = options::lookup(&e.key) else {
            let hint = match options::suggest(&e.key) {
                Some(name) => format!("did you mean `{name}`?"),
                None => "remove the line or correct the spelling".to_string(),
            };
            let place = if ctx == Ctx::General { "[general]" } else { "a user/peer/friend section" };
            self.error(e, format!("unknown option in {place}"), hint);
            return None;
        };
        match ctx {
            Ctx::General if !spec.scope.allows_general() => {
                self.error(
                    e,
                    "is a user/peer option and cannot be set in [general]".to_string(),
                    "move it into the user/peer/friend section it is meant for",
                );
                return None;
            }
            Ctx::Peer if !spec.scope.allows_peer() => {
                self.error(e, "can only be set in [general]".to_string(), "move it to the [general] section");
                return None;
            }
            _ => {}
        }
        if spec.support == Support::Unsupported {
            self.note(
                spec.name,
                e,
                "recognised but not supported by this switch; it has no effect".to_string(),
                spec.about,
            );
            return None;
        }
        Some(spec)
    }

    fn run(&mut self, sections: &[Section]) -> IaxConfig {
        let mut config = IaxConfig::default();
        let mut gs = GeneralState::default();
        let mut codecs = config.general.codecs.allowed.clone();
        for sec in sections.iter().filter(|s| !s.broken && s.is_general()) {
            for e in &sec.entries {
                self.general_entry(&mut config, &mut gs, &mut codecs, e);
            }
        }
        self.finish_general(&mut config.general, gs, codecs, sections);
        for sec in sections.iter().filter(|s| !s.broken && s.is_callnumberlimits()) {
            for e in &sec.entries {
                self.callnumberlimit(&mut config, e);
            }
        }
        let mut dynamic_hosts = Vec::new();
        for sec in sections.iter().filter(|s| !s.broken && !s.is_general() && !s.is_callnumberlimits()) {
            if let Some((peer, host_entry)) = self.peer(sec, &config.general) {
                if !sec.template {
                    dynamic_hosts.push(host_entry);
                    config.peers.push(peer);
                }
            }
        }
        self.check_exposure(&config, &dynamic_hosts);
        config
    }

    // --- [general] ---------------------------------------------------------------------

    fn general_entry(&mut self, config: &mut IaxConfig, gs: &mut GeneralState, codecs: &mut Vec<String>, e: &Entry) {
        let Some(spec) = self.check_key(e, Ctx::General) else {
            return;
        };
        let g = &mut config.general;
        match spec.name {
            "bindport" => {
                if let Some(port) = self.port(e, spec) {
                    gs.bindport = Some((port, e.seq, e.location.clone()));
                }
            }
            "bindaddr" => self.bindaddr(gs, e),
            "delayreject" => set(&mut g.delayreject, self.boolean(e, spec)),
            "authdebug" => set(&mut g.authdebug, self.boolean(e, spec)),
            "trunktimestamps" => set(&mut g.trunktimestamps, self.boolean(e, spec)),
            "jitterbuffer" => set(&mut g.jitterbuffer, self.boolean(e, spec)),
            "minregexpire" => {
                set(&mut g.minregexpire, self.int(e, spec, 1, u32::MAX.into(), "a number of seconds", "60").map(to_u32))
            }
            "maxregexpire" => {
                set(&mut g.maxregexpire, self.int(e, spec, 1, u32::MAX.into(), "a number of seconds", "60").map(to_u32))
            }
            "calltokenoptional" => {
                if let Some(rules) = self.nets(e, spec, false) {
                    g.calltokenoptional.extend(rules.into_iter().map(|r| r.net));
                }
            }
            "calltokenexpiration" => set(
                &mut g.calltokenexpiration,
                self.int(e, spec, 1, 86_400, "a number of seconds", "10")
                    .map(|s| Duration::from_secs(s.unsigned_abs())),
            ),
            "maxcallnumbers" => set(
                &mut g.maxcallnumbers,
                self.int(e, spec, 1, MAX_CALLNO, "a number of call numbers", "2048").map(to_u16),
            ),
            "maxcallnumbers_nonvalidated" => set(
                &mut g.maxcallnumbers_nonvalidated,
                self.int(e, spec, 1, MAX_CALLNO, "a number of call numbers", "8192").map(to_u16),
            ),
            "autokill" => set(&mut g.autokill, self.ms_or_bool(e, spec, "autokill=2000").map(|ms| ms.map(ms_duration))),
            "natkeepalive" => set(
                &mut g.natkeepalive,
                self.int(e, spec, 0, 3600, "0 (off) or a number of seconds", "20")
                    .map(|s| (s != 0).then(|| Duration::from_secs(s.unsigned_abs()))),
            ),
            "trunkfreq" => set(
                &mut g.trunkfreq,
                self.int(e, spec, 10, 1000, "a number of milliseconds", "20").map(|ms| ms_duration(to_u32(ms))),
            ),
            "trunkmtu" => {
                if let Some(mtu) = self.int(e, spec, 0, 3999, "0 (no limit) or a size in bytes 172-3999,", "1240") {
                    if mtu != 0 && mtu < 172 {
                        self.error(
                            e,
                            format!("expected 0 (no limit) or a size in bytes 172-3999, got {:?}", e.value),
                            "write e.g. trunkmtu=1240",
                        );
                    } else {
                        g.trunkmtu = to_u16(mtu);
                    }
                }
            }
            "trunkmaxsize" => {
                if let Some(size) = self.int(e, spec, 0, u32::MAX.into(), "a size in bytes", "128000") {
                    g.trunkmaxsize = if size == 0 { General::default().trunkmaxsize } else { to_u32(size) };
                }
            }
            "maxjitterbuffer" => set(
                &mut g.maxjitterbuffer,
                self.int(e, spec, 0, u32::MAX.into(), "a number of milliseconds", "1000").map(to_u32),
            ),
            "resyncthreshold" => set(
                &mut g.resyncthreshold,
                self.int(e, spec, -1, i32::MAX.into(), "a number of milliseconds (or -1)", "1000")
                    .map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
            ),
            "maxjitterinterps" => set(
                &mut g.maxjitterinterps,
                self.int(e, spec, 0, u32::MAX.into(), "a number of frames", "10").map(to_u32),
            ),
            "jittertargetextra" => set(
                &mut g.jittertargetextra,
                self.int(e, spec, 0, u32::MAX.into(), "a number of milliseconds", "40").map(to_u32),
            ),
            "encryption" => set(&mut g.encryption, self.encryption(e)),
            "forceencryption" => set(&mut g.forceencryption, self.boolean(e, spec)),
            "codecpriority" => set(&mut g.codecpriority, self.codecpriority(e)),
            "language" => g.language = non_empty(&e.value),
            "allow" => self.codec_list(e, codecs, true),
            "disallow" => self.codec_list(e, codecs, false),
            "bandwidth" => self.bandwidth(e, codecs),
            "register" => {
                if let Some(line) = self.register(e) {
                    config.registrations.push(line);
                }
            }
            "context" => set(&mut g.defaults.context, self.context(e)),
            "trunk" => set(&mut g.defaults.trunk, self.boolean(e, spec)),
            "maxauthreq" => set(
                &mut g.defaults.maxauthreq,
                self.int(e, spec, 0, MAX_CALLNO, "a number of calls (0: no limit)", "3").map(to_u16),
            ),
            "requirecalltoken" => set(&mut g.defaults.requirecalltoken, self.calltoken(e)),
            "qualify" => set(&mut g.defaults.qualify, self.qualify(e)),
            "qualifysmoothing" => set(&mut g.defaults.qualifysmoothing, self.boolean(e, spec)),
            "qualifyfreqok" => set(&mut g.defaults.qualifyfreqok, self.freq(e, spec, "60000")),
            "qualifyfreqnotok" => set(&mut g.defaults.qualifyfreqnotok, self.freq(e, spec, "10000")),
            other => self.error(
                e,
                format!("`{other}` is not handled in [general] (internal table mismatch)"),
                "report this as a bug",
            ),
        }
    }

    fn bindaddr(&mut self, gs: &mut GeneralState, e: &Entry) {
        if let Some((_, _, _, first)) = &gs.bindaddr {
            let first = first.clone();
            self.error(
                e,
                format!("a second bindaddr (the first is at {first}); this switch listens on one address"),
                "keep a single bindaddr line (bindaddr=0.0.0.0 listens on every IPv4 address)",
            );
            return;
        }
        let v = e.value.as_str();
        let parsed = if let Ok(sa) = SocketAddr::from_str(v) {
            Some((sa.ip(), Some(sa.port())))
        } else if let Ok(ip) = IpAddr::from_str(v) {
            Some((ip, None))
        } else {
            v.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| Ipv6Addr::from_str(r).ok())
                .map(|ip| (IpAddr::V6(ip), None))
        };
        match parsed {
            Some((_, Some(0))) => self.error(e, format!("expected a port number 1-65535 after the address, got {v:?}"), "write e.g. bindaddr=192.168.0.1:4569"),
            Some((ip, port)) => gs.bindaddr = Some((ip, port, e.seq, e.location.clone())),
            None => self.error(
                e,
                format!("expected an IP address, optionally with :port, got {v:?}"),
                "write e.g. bindaddr=192.168.0.1 or bindaddr=192.168.0.1:4569 or bindaddr=[::] (host names are not accepted)",
            ),
        }
    }

    fn finish_general(&mut self, g: &mut General, gs: GeneralState, codecs: Vec<String>, sections: &[Section]) {
        let bindport = gs.bindport.as_ref().map_or(4569, |(p, _, _)| *p);
        g.bind = match &gs.bindaddr {
            // Asterisk binds every address here; this switch binds none that
            // reach other hosts unless the file says so.
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bindport),
            Some((ip, None, _, _)) => SocketAddr::new(*ip, bindport),
            Some((ip, Some(port), addr_seq, addr_loc)) => {
                if let Some((bp, bp_seq, bp_loc)) = &gs.bindport {
                    if bp != port && bp_seq > addr_seq {
                        let addr_loc = addr_loc.clone();
                        self.error_at(
                            *bp_seq,
                            bp_loc,
                            Some("bindport"),
                            format!(
                                "bindport={bp} conflicts with the port {port} already given by bindaddr at {addr_loc}"
                            ),
                            "remove bindport, or remove the :port from bindaddr",
                        );
                    }
                }
                SocketAddr::new(*ip, *port)
            }
        };
        if g.minregexpire > g.maxregexpire {
            let (seq, loc) = general_location(sections, "minregexpire");
            self.error_at(
                seq,
                &loc,
                Some("minregexpire"),
                format!("minregexpire ({}) is more than maxregexpire ({})", g.minregexpire, g.maxregexpire),
                "make minregexpire less than or equal to maxregexpire",
            );
        }
        if codecs.is_empty() {
            let (seq, loc) = general_location(sections, "disallow");
            self.error_at(
                seq,
                &loc,
                Some("disallow"),
                "no codec is left allowed in [general]".to_string(),
                "add e.g. allow=ulaw after the disallow lines",
            );
        }
        g.codecs = CodecPrefs { allowed: codecs };
        if g.forceencryption {
            g.encryption = true;
        }
    }

    fn callnumberlimit(&mut self, config: &mut IaxConfig, e: &Entry) {
        let net = match parse_net(&e.key) {
            Ok(net) => net,
            Err(why) => {
                self.error(
                    e,
                    format!("expected `address/mask = limit` in [callnumberlimits]: {why}"),
                    "write e.g. 10.1.1.0/255.255.255.0 = 24",
                );
                return;
            }
        };
        match parse_int(&e.value) {
            Some(n) if (0..=MAX_CALLNO).contains(&n) => config.callnumberlimits.push((net, to_u16(n))),
            _ => self.error(
                e,
                format!("expected a number of call numbers 0-{MAX_CALLNO}, got {:?}", e.value),
                "write e.g. 10.1.1.0/255.255.255.0 = 24",
            ),
        }
    }

    // --- users, peers, friends ---------------------------------------------------------

    /// Builds one section; templates are checked the same way (to report problems
    /// in templates nothing uses yet) but their result is not kept.
    fn peer(&mut self, sec: &Section, general: &General) -> Option<(PeerConfig, Option<Entry>)> {
        let kind = match sec.entries.iter().rev().find(|e| e.key.eq_ignore_ascii_case("type")) {
            Some(e) => match e.value.to_ascii_lowercase().as_str() {
                "user" => Some(PeerKind::User),
                "peer" => Some(PeerKind::Peer),
                "friend" => Some(PeerKind::Friend),
                _ => {
                    self.error(
                        e,
                        format!("expected user, peer or friend, got {:?}", e.value),
                        "write e.g. type=friend",
                    );
                    None
                }
            },
            None if sec.template => Some(PeerKind::Friend),
            None => {
                self.error_at(
                    sec.seq,
                    &sec.location,
                    None,
                    format!("section [{}] has no type=", sec.name),
                    "add type=friend (calls both ways), type=peer (we call it) or type=user (it calls us)",
                );
                None
            }
        };
        let mut p = PeerConfig::new(&sec.name, kind.unwrap_or(PeerKind::Friend), sec.location.clone(), general);
        let mut st = PeerState::default();
        for e in &sec.entries {
            self.peer_entry(&mut p, &mut st, e, general);
        }
        let kind = kind?;
        if !st.contexts.is_empty() {
            p.context = st.contexts[0].clone();
            p.contexts = st.contexts;
        }
        if let Some(codecs) = st.codecs {
            if codecs.is_empty() {
                let e = sec.entries.iter().rev().find(|e| e.key.eq_ignore_ascii_case("disallow"));
                let (seq, loc) = e.map_or((sec.seq, sec.location.clone()), |e| (e.seq, e.location.clone()));
                self.error_at(
                    seq,
                    &loc,
                    Some("disallow"),
                    format!("no codec is left allowed for [{}]", sec.name),
                    "add e.g. allow=ulaw after the disallow lines",
                );
            }
            p.codecs = Some(CodecPrefs { allowed: codecs });
        }
        if p.forceencryption {
            p.encryption = true;
        }
        match (&p.host, st.defaultip) {
            (Host::Dynamic { .. }, Some((ip, _))) => p.host = Host::Dynamic { defaultip: Some(ip) },
            (Host::Static(_), Some((_, e))) => self.error(
                &e,
                "only applies to a host=dynamic peer".to_string(),
                "remove defaultip, or set host=dynamic if the peer registers with us",
            ),
            _ => {}
        }
        if kind.is_peer() && st.host.is_none() && !sec.template {
            self.error_at(
                sec.seq,
                &sec.location,
                None,
                format!("[{}] is type={} but has no host=", sec.name, kind_name(kind)),
                "add host=dynamic (it registers with us) or host=<its address>",
            );
        }
        p.kind = kind;
        Some((p, st.host))
    }

    fn peer_entry(&mut self, p: &mut PeerConfig, st: &mut PeerState, e: &Entry, general: &General) {
        let Some(spec) = self.check_key(e, Ctx::Peer) else {
            return;
        };
        match spec.name {
            "type" => {
                if !["user", "peer", "friend"].iter().any(|k| e.value.eq_ignore_ascii_case(k)) {
                    self.error(
                        e,
                        format!("expected user, peer or friend, got {:?}", e.value),
                        "write e.g. type=friend",
                    );
                }
            }
            "secret" => {
                if e.value.is_empty() {
                    self.error(
                        e,
                        "is empty".to_string(),
                        "write a secret of at least one character, e.g. secret=Xk3-long-random, or remove the line",
                    );
                } else {
                    if let Some(why) = super::passwords::weakness(&p.name, &[], &e.value) {
                        let bind = general.bind;
                        if canonical(bind.ip()).is_loopback() {
                            self.note(
                                &format!("weak secret {}", p.name),
                                e,
                                format!(
                                    "[{}]'s secret {why}; allowed only because bindaddr {bind} is loopback",
                                    p.name
                                ),
                                "use a long random secret (e.g. `openssl rand -hex 16`) before binding another address",
                            );
                        } else {
                            self.error(
                                e,
                                format!(
                                    "[{}]'s secret {why}, and bindaddr {bind} is not loopback: IAX2 crackers try it first",
                                    p.name
                                ),
                                format!("set secret= to a long random value (e.g. `openssl rand -hex 16`, at least {} characters), or bindaddr=127.0.0.1 for tests", super::passwords::MIN_LEN),
                            );
                        }
                    }
                    p.secrets.push(e.value.clone());
                }
            }
            "auth" => set(&mut p.auth, self.auth(e)),
            "username" => p.username = non_empty(&e.value),
            "host" => {
                if e.value.eq_ignore_ascii_case("dynamic") {
                    p.host = Host::Dynamic { defaultip: None };
                    st.host = Some(e.clone());
                } else {
                    match parse_host(&e.value) {
                        Ok(host) => {
                            p.host = Host::Static(host);
                            st.host = Some(e.clone());
                        }
                        Err((message, hint)) => {
                            // Still "has a host": the error above says what is wrong with it.
                            st.host = Some(e.clone());
                            self.error(e, message, hint)
                        }
                    }
                }
            }
            "port" => set(&mut p.port, self.port(e, spec)),
            "defaultip" => match parse_ip(&e.value) {
                Some(ip) => st.defaultip = Some((ip, e.clone())),
                None => self.error(
                    e,
                    format!("expected an IP address, got {:?}", e.value),
                    "write e.g. defaultip=192.0.2.10",
                ),
            },
            "permit" | "deny" => {
                if let Some(rules) = self.nets(e, spec, spec.name == "permit") {
                    p.acl.rules.extend(rules);
                }
            }
            "callerid" => {
                if e.value.is_empty() || e.value.eq_ignore_ascii_case("asreceived") {
                    p.callerid = None;
                    p.callerid_name = None;
                    p.callerid_number = None;
                } else {
                    let (name, number) = split_callerid(&e.value);
                    p.callerid = Some(e.value.clone());
                    p.callerid_name = name;
                    p.callerid_number = number;
                }
            }
            "fullname" => p.callerid_name = non_empty(&e.value),
            "cid_number" => p.callerid_number = non_empty(&e.value),
            "description" => p.description = non_empty(&e.value),
            "context" => {
                if let Some(c) = self.context(e) {
                    if !st.contexts.contains(&c) {
                        st.contexts.push(c);
                    }
                }
            }
            "trunk" => set(&mut p.trunk, self.boolean(e, spec)),
            "requirecalltoken" => set(&mut p.requirecalltoken, self.calltoken(e)),
            "qualify" => set(&mut p.qualify, self.qualify(e)),
            "qualifysmoothing" => set(&mut p.qualifysmoothing, self.boolean(e, spec)),
            "qualifyfreqok" => set(&mut p.qualifyfreqok, self.freq(e, spec, "60000")),
            "qualifyfreqnotok" => set(&mut p.qualifyfreqnotok, self.freq(e, spec, "10000")),
            "encryption" => set(&mut p.encryption, self.encryption(e)),
            "forceencryption" => set(&mut p.forceencryption, self.boolean(e, spec)),
            "codecpriority" => set(&mut p.codecpriority, self.codecpriority(e)),
            "language" => p.language = non_empty(&e.value),
            "jitterbuffer" => {
                if let Some(b) = self.boolean(e, spec) {
                    p.jitterbuffer = Some(b);
                }
            }
            "maxcallnumbers" => {
                if let Some(n) = self.int(e, spec, 1, MAX_CALLNO, "a number of call numbers", "16") {
                    p.maxcallnumbers = Some(to_u16(n));
                }
            }
            "maxauthreq" => {
                if let Some(n) = self.int(e, spec, 0, MAX_CALLNO, "a number of calls (0: no limit)", "3") {
                    p.maxauthreq = to_u16(n);
                }
            }
            "allow" | "disallow" => {
                let list = st.codecs.get_or_insert_with(|| general.codecs.allowed.clone());
                let mut list = std::mem::take(list);
                self.codec_list(e, &mut list, spec.name == "allow");
                st.codecs = Some(list);
            }
            other => self.error(
                e,
                format!("`{other}` is not handled in a peer section (internal table mismatch)"),
                "report this as a bug",
            ),
        }
    }

    /// A public `bindaddr` plus a `host=dynamic` peer anyone may register as.
    fn check_exposure(&mut self, config: &IaxConfig, hosts: &[Option<Entry>]) {
        let ip = config.general.bind.ip();
        if !is_public(ip) {
            return;
        }
        for (peer, host) in config.peers.iter().zip(hosts) {
            if peer.kind.is_peer() && matches!(peer.host, Host::Dynamic { .. }) && peer.secrets.is_empty() {
                let (seq, loc) = host.as_ref().map_or((0, peer.location.clone()), |e| (e.seq, e.location.clone()));
                self.error_at(
                    seq,
                    &loc,
                    Some("host"),
                    format!(
                        "[{}] is host=dynamic with no secret while bindaddr {ip} is a public address: anyone on the internet could register as {} and take its calls",
                        peer.name, peer.name
                    ),
                    format!("add secret=<something long and random> to [{}], or bind to a private address", peer.name),
                );
            }
        }
    }

    // --- value parsers -------------------------------------------------------------------

    fn boolean(&mut self, e: &Entry, spec: &OptionSpec) -> Option<bool> {
        let b = parse_bool(&e.value);
        if b.is_none() {
            self.error(e, format!("expected yes or no, got {:?}", e.value), format!("write e.g. {}=yes", spec.name));
        }
        b
    }

    fn int(&mut self, e: &Entry, spec: &OptionSpec, min: i64, max: i64, what: &str, example: &str) -> Option<i64> {
        match parse_int(&e.value) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    e,
                    format!("expected {what} {min}-{max}, got {:?}", e.value),
                    format!("write e.g. {}={example}", spec.name),
                );
                None
            }
        }
    }

    fn port(&mut self, e: &Entry, spec: &OptionSpec) -> Option<u16> {
        self.int(e, spec, 1, 65535, "a port number", "4569").map(to_u16)
    }

    fn freq(&mut self, e: &Entry, spec: &OptionSpec, example: &str) -> Option<Duration> {
        self.int(e, spec, 1, u32::MAX.into(), "a number of milliseconds", example).map(|ms| ms_duration(to_u32(ms)))
    }

    /// `yes` (= 2000 ms), `no`, or a number of ms (0 = no). `None` on error.
    fn ms_or_bool(&mut self, e: &Entry, spec: &OptionSpec, example: &str) -> Option<Option<u32>> {
        if let Some(n) = parse_int(&e.value) {
            return match u32::try_from(n) {
                Ok(0) => Some(None),
                Ok(ms) => Some(Some(ms)),
                Err(_) => {
                    self.error(
                        e,
                        format!("expected yes, no or a number of milliseconds, got {:?}", e.value),
                        format!("write e.g. {example}"),
                    );
                    None
                }
            };
        }
        match parse_bool(&e.value) {
            Some(true) => Some(Some(DEFAULT_MAXMS)),
            Some(false) => Some(None),
            None => {
                self.error(
                    e,
                    format!("expected yes, no or a number of milliseconds, got {:?}", e.value),
                    format!("write e.g. {}=yes", spec.name),
                );
                None
            }
        }
    }

    fn qualify(&mut self, e: &Entry) -> Option<Qualify> {
        let spec = options::lookup("qualify")?;
        self.ms_or_bool(e, spec, "qualify=2000").map(|ms| ms.map_or(Qualify::Off, Qualify::MaxMs))
    }

    fn encryption(&mut self, e: &Entry) -> Option<bool> {
        if e.value.eq_ignore_ascii_case("aes128") {
            return Some(true);
        }
        let b = parse_bool(&e.value);
        if b.is_none() {
            self.error(e, format!("expected yes, no or aes128, got {:?}", e.value), "write e.g. encryption=aes128");
        }
        b
    }

    fn calltoken(&mut self, e: &Entry) -> Option<CallTokenRequirement> {
        if e.value.eq_ignore_ascii_case("auto") {
            return Some(CallTokenRequirement::Auto);
        }
        match parse_bool(&e.value) {
            Some(true) => Some(CallTokenRequirement::Yes),
            Some(false) => Some(CallTokenRequirement::No),
            None => {
                self.error(
                    e,
                    format!("expected yes, no or auto, got {:?}", e.value),
                    "write e.g. requirecalltoken=auto",
                );
                None
            }
        }
    }

    fn codecpriority(&mut self, e: &Entry) -> Option<CodecPriority> {
        match e.value.to_ascii_lowercase().as_str() {
            "caller" => Some(CodecPriority::Caller),
            "host" => Some(CodecPriority::Host),
            "disabled" => Some(CodecPriority::Disabled),
            "reqonly" => Some(CodecPriority::ReqOnly),
            _ => {
                self.error(
                    e,
                    format!("expected caller, host, disabled or reqonly, got {:?}", e.value),
                    "write e.g. codecpriority=host",
                );
                None
            }
        }
    }

    fn context(&mut self, e: &Entry) -> Option<String> {
        if e.value.is_empty() {
            self.error(e, "is empty".to_string(), "write e.g. context=default");
            None
        } else {
            Some(e.value.clone())
        }
    }

    fn auth(&mut self, e: &Entry) -> Option<AuthMethods> {
        let mut auth = AuthMethods { plaintext: false, md5: false, rsa: false };
        let mut ok = true;
        for item in e.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "md5" => auth.md5 = true,
                "plaintext" => auth.plaintext = true,
                "rsa" => auth.rsa = true,
                _ => {
                    self.error(
                        e,
                        format!("unknown authentication method {item:?}; expected md5, plaintext or rsa"),
                        "write e.g. auth=md5",
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        if auth.bits() == 0 {
            self.error(e, "names no authentication method".to_string(), "write e.g. auth=md5");
            return None;
        }
        if auth.rsa {
            self.note(
                "auth=rsa",
                e,
                "`rsa` is recognised but not supported by this switch: RSA keys are not read".to_string(),
                "callers that can only authenticate with RSA are rejected; give them a secret= and use md5",
            );
        }
        Some(auth)
    }

    /// `permit`/`deny`/`calltokenoptional` values: comma-separated `addr[/mask]`,
    /// each optionally prefixed with `!` (which flips the rule, as in Asterisk).
    fn nets(&mut self, e: &Entry, spec: &OptionSpec, permit: bool) -> Option<Vec<AclRule>> {
        let mut rules = Vec::new();
        let items: Vec<&str> = e.value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if items.is_empty() {
            self.error(e, "is empty".to_string(), format!("write e.g. {}=192.168.0.0/255.255.0.0", spec.name));
            return None;
        }
        for item in items {
            let (flip, text) = match item.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, item),
            };
            match parse_net(text) {
                Ok(net) => rules.push(AclRule { permit: permit != flip, net }),
                Err(why) => {
                    self.error(
                        e,
                        format!("expected address/mask, got {item:?}: {why}"),
                        format!("write e.g. {}=192.168.0.0/255.255.0.0 or {}=2001:db8::/32", spec.name, spec.name),
                    );
                    return None;
                }
            }
        }
        Some(rules)
    }

    fn codec_list(&mut self, e: &Entry, list: &mut Vec<String>, allow: bool) {
        for item in e.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (allow, item) = match item.strip_prefix('!') {
                Some(rest) => (!allow, rest.trim()),
                None => (allow, item),
            };
            let name = match item.split_once(':') {
                Some((name, framing)) => {
                    if !framing.chars().all(|c| c.is_ascii_digit()) || framing.is_empty() {
                        self.error(
                            e,
                            format!("bad packetisation in {item:?}; expected codec:milliseconds"),
                            "write e.g. allow=ulaw",
                        );
                        continue;
                    }
                    self.note(
                        "codec framing",
                        e,
                        format!(
                            "packetisation `{item}` is recognised but not supported by this switch; it has no effect"
                        ),
                        "frames are relayed as they arrive",
                    );
                    name.trim()
                }
                None => item,
            };
            if name.eq_ignore_ascii_case("all") {
                if allow {
                    for (codec, _) in options::CODECS {
                        if !list.iter().any(|c| c == codec) {
                            list.push((*codec).to_string());
                        }
                    }
                } else {
                    list.clear();
                }
                continue;
            }
            match options::codec(name) {
                Some(codec) if allow => {
                    if !list.iter().any(|c| c == codec) {
                        list.push(codec.to_string());
                    }
                }
                Some(codec) => list.retain(|c| c != codec),
                None => {
                    let known: Vec<&str> = options::CODECS.iter().map(|(n, _)| *n).collect();
                    self.error(
                        e,
                        format!("unknown codec {name:?}"),
                        format!("known codecs: all, {}", known.join(", ")),
                    );
                }
            }
        }
    }

    fn bandwidth(&mut self, e: &Entry, list: &mut Vec<String>) {
        match e.value.to_ascii_lowercase().as_str() {
            "low" => {
                list.retain(|c| !options::NOT_MEDIUM.contains(&c.as_str()) && !options::NOT_LOW.contains(&c.as_str()))
            }
            "medium" => list.retain(|c| !options::NOT_MEDIUM.contains(&c.as_str())),
            "high" => {
                for codec in options::BANDWIDTH_HIGH {
                    if !list.iter().any(|c| c == codec) {
                        list.push((*codec).to_string());
                    }
                }
            }
            _ => self.error(e, format!("expected low, medium or high, got {:?}", e.value), "write e.g. bandwidth=high"),
        }
    }

    fn register(&mut self, e: &Entry) -> Option<RegisterLine> {
        const HINT: &str = "write e.g. register => myname:mysecret@192.0.2.1 (or myname@host:4570)";
        let v = e.value.as_str();
        let Some((cred, hostport)) = v.rsplit_once('@') else {
            self.error(e, format!("no `@host` in {v:?}; expected user[:secret]@host[:port]"), HINT);
            return None;
        };
        if hostport.trim().is_empty() {
            self.error(e, format!("no host after `@` in {v:?}; expected user[:secret]@host[:port]"), HINT);
            return None;
        }
        let (user, secret) = match cred.split_once(':') {
            Some((user, secret)) => (user.trim(), Some(secret)),
            None => (cred.trim(), None),
        };
        if user.is_empty() {
            self.error(e, format!("no user name before `@` in {v:?}; expected user[:secret]@host[:port]"), HINT);
            return None;
        }
        if let Some(secret) = secret {
            if secret.is_empty() {
                self.error(
                    e,
                    format!("empty secret after `:` in {v:?}"),
                    "write user:secret@host, or user@host when no secret is needed",
                );
                return None;
            }
            if secret.starts_with('[') && secret.ends_with(']') {
                self.note(
                    "register rsa",
                    e,
                    format!("RSA-key registration `{secret}` is recognised but not supported by this switch; this registration has no effect"),
                    "register with a secret instead: user:secret@host",
                );
                return None;
            }
        }
        let (host, port) = match split_host_port(hostport.trim()) {
            Ok(hp) => hp,
            Err((message, hint)) => {
                self.error(e, format!("{message} in {v:?}"), hint);
                return None;
            }
        };
        Some(RegisterLine {
            username: user.to_string(),
            secret: secret.map(str::to_string),
            host,
            port: port.unwrap_or(4569),
            location: e.location.clone(),
        })
    }
}

// ------------------------------------------------------------------------------------
// Small parsers (pure; used by the tests too)
// ------------------------------------------------------------------------------------

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn non_empty(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

fn to_u16(n: i64) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn ms_duration(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

fn kind_name(kind: PeerKind) -> &'static str {
    match kind {
        PeerKind::User => "user",
        PeerKind::Peer => "peer",
        PeerKind::Friend => "friend",
    }
}

/// Where `key` was (last) set in `[general]`, or the section header.
fn general_location(sections: &[Section], key: &str) -> (u64, Location) {
    let generals = || sections.iter().filter(|s| !s.broken && s.is_general());
    generals()
        .flat_map(|s| s.entries.iter())
        .rfind(|e| e.key.eq_ignore_ascii_case(key))
        .map(|e| (e.seq, e.location.clone()))
        .or_else(|| generals().next().map(|s| (s.seq, s.location.clone())))
        .unwrap_or_default()
}

/// Asterisk's `ast_true` / `ast_false`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "y" | "t" | "1" | "on" => Some(true),
        "no" | "false" | "n" | "f" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// A plain decimal integer (optional leading `-`), nothing else.
fn parse_int(v: &str) -> Option<i64> {
    let v = v.trim();
    let digits = v.strip_prefix('-').unwrap_or(v);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn parse_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    let inner = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(v);
    IpAddr::from_str(inner).ok()
}

/// `addr`, `addr/prefix` or `addr/dotted-mask`, IPv4 or IPv6; the address is
/// reduced to its network.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let (addr, mask) = match text.split_once('/') {
        Some((a, m)) => (a.trim(), Some(m.trim())),
        None => (text, None),
    };
    let addr = parse_ip(addr).ok_or_else(|| format!("{addr:?} is not an IP address"))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match mask {
        None => max,
        Some(m) if !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()) => match m.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => return Err(format!("prefix length {m} is more than {max}")),
        },
        Some(m) => match (addr, IpAddr::from_str(m)) {
            (IpAddr::V4(_), Ok(IpAddr::V4(mask))) => contiguous(u128::from(u32::from(mask)), 32)
                .ok_or_else(|| format!("mask {m} is not contiguous (like 255.255.255.0)"))?,
            (IpAddr::V6(_), Ok(IpAddr::V6(mask))) => {
                contiguous(u128::from(mask), 128).ok_or_else(|| format!("mask {m} is not contiguous"))?
            }
            (_, Ok(_)) => return Err(format!("mask {m} is not of the same IP version as the address")),
            (_, Err(_)) => return Err(format!("mask {m:?} is neither a prefix length nor a dotted mask")),
        },
    };
    let addr = match addr {
        IpAddr::V4(a) => {
            let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & bits))
        }
        IpAddr::V6(a) => {
            let bits = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & bits))
        }
    };
    Ok(IpNet { addr, prefix })
}

/// The prefix length of a contiguous `width`-bit mask.
fn contiguous(mask: u128, width: u32) -> Option<u8> {
    let full = u128::MAX.checked_shr(128u32.saturating_sub(width)).unwrap_or(0);
    let ones = mask.count_ones();
    let expected = full & !full.checked_shr(ones).unwrap_or(0);
    (mask == expected).then(|| u8::try_from(ones).unwrap_or(0))
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `host=` other than `dynamic`: an IP literal or a host name, without a port.
fn parse_host(v: &str) -> Result<String, Problem> {
    if let Some(ip) = parse_ip(v) {
        return Ok(ip.to_string());
    }
    if let Some((h, p)) = v.rsplit_once(':') {
        if is_hostname(h) && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) {
            return Err((format!("{v:?} includes a port"), format!("write host={h} and port={p} on its own line")));
        }
    }
    if is_hostname(v) {
        Ok(v.to_string())
    } else {
        Err((
            format!("expected dynamic, a host name or an IP address, got {v:?}"),
            "write e.g. host=dynamic or host=192.0.2.10".to_string(),
        ))
    }
}

/// `host`, `host:port`, `[v6]:port` or a bare IPv6 literal.
fn split_host_port(v: &str) -> Result<(String, Option<u16>), Problem> {
    let hint = "write e.g. register => myname:mysecret@192.0.2.1:4569".to_string();
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(("`[` without `]` around the IPv6 address".to_string(), hint));
        };
        match after {
            "" => (h, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err((format!("unexpected {after:?} after the IPv6 address"), hint)),
            },
        }
    } else if v.matches(':').count() > 1 {
        (v, None)
    } else {
        match v.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (v, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match parse_int(p) {
            Some(n) if (1..=65535).contains(&n) => Some(to_u16(n)),
            _ => return Err((format!("expected a port number 1-65535, got {p:?}"), hint)),
        },
    };
    if let Some(ip) = parse_ip(host) {
        return Ok((ip.to_string(), port));
    }
    if !is_hostname(host) {
        return Err((format!("{host:?} is not a host name or IP address"), hint));
    }
    Ok((host.to_string(), port))
}

/// Asterisk's `ast_callerid_split`: `"Name" <number>`, `Name <number>`, a bare
/// number, or a bare name.
pub fn split_callerid(v: &str) -> (Option<String>, Option<String>) {
    let unquote = |s: &str| {
        let s = s.trim();
        let s = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(s);
        non_empty(s.trim())
    };
    if let Some(lt) = v.rfind('<') {
        if let Some(gt) = v[lt..].find('>') {
            let number = non_empty(v[lt + 1..lt + gt].trim());
            return (unquote(&v[..lt]), number);
        }
    }
    let t = v.trim();
    if !t.is_empty()
        && t.chars().all(|c| c.is_ascii_digit() || "+*#-(). ".contains(c))
        && t.chars().any(|c| c.is_ascii_digit())
    {
        (None, Some(t.to_string()))
    } else {
        (unquote(t), None)
    }
}

/// Globally routable, as far as a bind address is concerned. Documentation
/// ranges count as public (they stand in for public addresses in examples);
/// the wildcard address does not (nothing says which interfaces it reaches).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapLoader;

    fn run(text: &str) -> IaxOutcome {
        read(&MapLoader::from_files([("iax.conf", text)]))
    }

    fn errors(text: &str) -> Vec<String> {
        run(text).errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn comments_escapes_and_blocks() {
        let mut d = 0;
        assert_eq!(strip_comment("a=b ; c", &mut d), "a=b ");
        assert_eq!(strip_comment("secret=a\\;b;x", &mut d), "secret=a;b");
        assert_eq!(strip_comment("x=1 ;-- start", &mut d), "x=1 ");
        assert_eq!(d, 1);
        assert_eq!(strip_comment("still comment", &mut d), "");
        assert_eq!(strip_comment("end --; y=2", &mut d), " y=2");
        assert_eq!(d, 0);
        assert_eq!(strip_comment(";--- not a block", &mut d), "");
        assert_eq!(d, 0);
    }

    #[test]
    fn nets() {
        let n = parse_net("209.16.236.73/255.255.255.0").unwrap();
        assert_eq!(n, IpNet { addr: "209.16.236.0".parse().unwrap(), prefix: 24 });
        assert_eq!(parse_net("0.0.0.0/0.0.0.0").unwrap().prefix, 0);
        assert_eq!(parse_net("10.0.0.1").unwrap().prefix, 32);
        assert_eq!(parse_net("2001:db8::1/32").unwrap(), IpNet { addr: "2001:db8::".parse().unwrap(), prefix: 32 });
        assert!(parse_net("10.0.0.0/255.0.255.0").is_err());
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("10.0.0.0/ffff::").is_err());
        assert_eq!(parse_net("::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").unwrap().prefix, 128);
        assert_eq!(parse_net("::/::").unwrap().prefix, 0);
        assert_eq!(parse_net("1.2.3.4/255.255.255.255").unwrap().prefix, 32);
        assert!(parse_net("bogus/24").is_err());
    }

    #[test]
    fn callerid() {
        assert_eq!(
            split_callerid("\"Mark Spencer\" <(256) 428-6275>"),
            (Some("Mark Spencer".into()), Some("(256) 428-6275".into()))
        );
        assert_eq!(split_callerid("\"Guest IAX User\""), (Some("Guest IAX User".into()), None));
        assert_eq!(split_callerid("5551234"), (None, Some("5551234".into())));
    }

    #[test]
    fn bindport_before_or_after_bindaddr() {
        for text in
            ["[general]\nbindport=4570\nbindaddr=192.168.0.1\n", "[general]\nbindaddr=192.168.0.1\nbindport=4570\n"]
        {
            let out = run(text);
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            assert_eq!(out.config.general.bind, "192.168.0.1:4570".parse().unwrap());
        }
        let out = run("[general]\nbindport=4570\nbindaddr=192.168.0.1:5000\n");
        assert!(out.errors.is_empty());
        assert_eq!(out.config.general.bind.port(), 5000);
        let errs = errors("[general]\nbindaddr=192.168.0.1:5000\nbindport=4570\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("iax.conf:3: `bindport`"), "{errs:?}");
        let out = run("[general]\nbindaddr=[::1]:4600\n");
        assert_eq!(out.config.general.bind, "[::1]:4600".parse().unwrap());
    }

    #[test]
    fn bad_port_message() {
        assert_eq!(
            errors("[general]\nbindport=45x9\n"),
            vec!["iax.conf:2: `bindport`: expected a port number 1-65535, got \"45x9\" (write e.g. bindport=4569)"
                .to_string()]
        );
    }

    #[test]
    fn templates_inherit_and_append() {
        let out = run("[general]\n[base](!)\ntype=friend\nhost=dynamic\ncontext=from-base\nsecret=s1\n\
                       [alice](base)\nsecret=s2\n[bob](base)\ncontext=bob\n[alice](+)\ntrunk=yes\n");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let names: Vec<&str> = out.config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        let alice = &out.config.peers[0];
        assert_eq!(alice.kind, PeerKind::Friend);
        assert_eq!(alice.secrets, ["s1", "s2"]);
        assert_eq!(alice.context, "from-base");
        assert!(alice.trunk);
        let bob = &out.config.peers[1];
        assert_eq!(bob.contexts, ["from-base", "bob"]);
    }

    #[test]
    fn plus_equals_appends() {
        let out = run("[general]\n[p]\ntype=user\ndescription=one\ndescription+=, two\n");
        assert_eq!(out.config.peers[0].description.as_deref(), Some("one, two"));
    }

    #[test]
    fn template_errors_are_reported_once() {
        let errs = errors("[t](!)\nqualify=maybe\n[a](t)\ntype=user\n[b](t)\ntype=user\n");
        assert_eq!(errs, vec!["iax.conf:2: `qualify`: expected yes, no or a number of milliseconds, got \"maybe\" (write e.g. qualify=yes)"]);
    }

    #[test]
    fn structural_errors() {
        let errs = errors("stray=1\n[general]\n[general]\n[p]\ncontext=x\n[q](nope)\ntype=user\n[r]\ntype=peer\n#exec /bin/true\n[s\n");
        assert!(errs.iter().any(|e| e.starts_with("iax.conf:1: ") && e.contains("outside any [section]")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("iax.conf:3: section [general] is defined twice")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("iax.conf:4: section [p] has no type=")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("iax.conf:6: [q] inherits from [nope]")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("iax.conf:8: [r] is type=peer but has no host=")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("iax.conf:10: #exec is not supported")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("iax.conf:11: section header")), "{errs:?}");
    }

    #[test]
    fn scope_errors() {
        let errs = errors("[general]\nhost=dynamic\n[p]\ntype=user\nbindport=4569\n");
        assert_eq!(
            errs,
            vec![
                "iax.conf:2: `host`: is a user/peer option and cannot be set in [general] (move it into the user/peer/friend section it is meant for)",
                "iax.conf:5: `bindport`: can only be set in [general] (move it to the [general] section)",
            ]
        );
    }

    #[test]
    fn unknown_key_suggests() {
        assert_eq!(
            errors("[general]\nBindPrt=4569\n"),
            vec!["iax.conf:2: `BindPrt`: unknown option in [general] (did you mean `bindport`?)"]
        );
    }

    #[test]
    fn codecs_and_bandwidth() {
        let g = run("[general]\nbandwidth=low\ndisallow=lpc10\n").config.general;
        assert_eq!(g.codecs.allowed, ["gsm"]);
        let g = run("[general]\ndisallow=all\nallow=alaw,ulaw\nallow=g723.1\n").config.general;
        assert_eq!(g.codecs.allowed, ["alaw", "ulaw", "g723"]);
        let out = run("[general]\ndisallow=all\nallow=g999\n");
        assert_eq!(out.errors.len(), 2, "{:?}", out.errors); // unknown codec, then nothing allowed
        let p = &run("[general]\nallow=speex\n[p]\ntype=user\ndisallow=ulaw\n").config.peers[0];
        assert_eq!(p.codecs.as_ref().unwrap().allowed, ["alaw", "gsm", "speex"]);
    }

    #[test]
    fn register_forms() {
        let out =
            run("[general]\nregister => marko:secret@pass@tormenta.example.net\nregister => joe@remotehost:5656\n\
                       register => marko:[torkey]@tormenta.example.net\nregister => v6@[2001:db8::1]:4570\n");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let r = &out.config.registrations;
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].username.as_str(), r[0].secret.as_deref(), r[0].host.as_str(), r[0].port),
            ("marko", Some("secret@pass"), "tormenta.example.net", 4569)
        );
        assert_eq!(
            (r[1].username.as_str(), r[1].secret.as_deref(), r[1].host.as_str(), r[1].port),
            ("joe", None, "remotehost", 5656)
        );
        assert_eq!((r[2].host.as_str(), r[2].port), ("2001:db8::1", 4570));
        assert_eq!(out.notes.len(), 1);
        assert_eq!(out.notes[0].location.line, 4);
        for bad in [
            "register => user",
            "register => user@",
            "register => @host",
            "register => u:@h",
            "register => u@h:0",
            "register => u@bad host",
        ] {
            let errs = errors(&format!("[general]\n{bad}\n"));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert!(errs[0].starts_with("iax.conf:2: `register`"), "{errs:?}");
        }
    }

    #[test]
    fn public_bind_and_open_dynamic_peer() {
        let text = "[general]\nbindaddr=203.0.113.5\n[p]\ntype=friend\nhost=dynamic\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("iax.conf:5: `host`: [p] is host=dynamic with no secret"), "{errs:?}");
        assert!(errors("[general]\nbindaddr=192.168.1.5\n[p]\ntype=friend\nhost=dynamic\n").is_empty());
        assert!(errors("[general]\nbindaddr=203.0.113.5\n[p]\ntype=friend\nhost=dynamic\nsecret=x-long-random\n")
            .is_empty());
        assert_eq!(errors("[p]\ntype=user\nsecret=\n").len(), 1);
    }

    #[test]
    fn weak_secrets_are_refused_off_loopback_and_noted_on_it() {
        for (secret, why) in [
            ("1234", "is on the list of passwords crackers try first"),
            ("secret", "is on the list"),
            ("trunk", "is the account name \"trunk\""),
            ("s3cret", "is shorter than 8 characters"),
        ] {
            let errs =
                errors(&format!("[general]\nbindaddr=0.0.0.0\n[trunk]\ntype=friend\nhost=dynamic\nsecret={secret}\n"));
            assert_eq!(errs.len(), 1, "{errs:?}");
            let start = format!("iax.conf:6: `secret`: [trunk]'s secret {why}");
            assert!(errs[0].starts_with(&start), "{errs:?}");
            assert!(
                errs[0].contains("bindaddr 0.0.0.0:4569 is not loopback") && errs[0].contains("openssl rand"),
                "{errs:?}"
            );
        }
        let out = run("[general]\nbindaddr=127.0.0.1\n[trunk]\ntype=friend\nhost=dynamic\nsecret=1234\n");
        assert_eq!(out.notes.len(), 1);
        assert!(
            out.notes[0].to_string().starts_with("iax.conf:6: `secret`: [trunk]'s secret is on the list"),
            "{}",
            out.notes[0]
        );
        // What the Asterisk captures use is fine anywhere.
        assert!(errors("[general]\nbindaddr=0.0.0.0\n[B]\ntype=friend\nhost=dynamic\nsecret=trunksecret\n").is_empty());
    }

    #[test]
    fn without_bindaddr_iax2_binds_loopback_only() {
        assert_eq!(run("[general]\n").config.general.bind, "127.0.0.1:4569".parse().unwrap());
        assert_eq!(run("[general]\nbindport=4570\n").config.general.bind, "127.0.0.1:4570".parse().unwrap());
        assert_eq!(IaxConfig::default().general.bind, "127.0.0.1:4569".parse().unwrap(), "no iax.conf at all");
        assert_eq!(run("[general]\nbindaddr=0.0.0.0\n").config.general.bind, "0.0.0.0:4569".parse().unwrap());
    }

    #[test]
    fn booleans_like_asterisk() {
        for (v, want) in
            [("yes", true), ("On", true), ("1", true), ("t", true), ("no", false), ("OFF", false), ("0", false)]
        {
            assert_eq!(run(&format!("[general]\ndelayreject={v}\n")).config.general.delayreject, want, "{v}");
        }
        assert_eq!(errors("[general]\ndelayreject=maybe\n").len(), 1);
    }

    #[test]
    fn qualify_and_autokill() {
        let out = run("[general]\nautokill=yes\n[a]\ntype=peer\nhost=192.0.2.1\nqualify=yes\n[b]\ntype=peer\nhost=h.example\nqualify=500\n[c]\ntype=peer\nhost=::1\nqualify=0\n");
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.config.general.autokill, Some(Duration::from_millis(2000)));
        let q: Vec<Qualify> = out.config.peers.iter().map(|p| p.qualify).collect();
        assert_eq!(q, [Qualify::MaxMs(2000), Qualify::MaxMs(500), Qualify::Off]);
        assert_eq!(out.config.peers[2].host, Host::Static("::1".into()));
    }

    #[test]
    fn host_with_port_is_explained() {
        let errs = errors("[p]\ntype=peer\nhost=192.0.2.1:4570\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("write host=192.0.2.1 and port=4570"), "{errs:?}");
    }

    #[test]
    fn unsupported_noted_once_with_also() {
        let out = run("[general]\ntos=ef\n[a]\ntype=user\naccountcode=x\n[b]\ntype=user\naccountcode=y\n");
        assert!(out.errors.is_empty());
        assert_eq!(out.notes.len(), 2);
        assert_eq!(out.notes[1].location.line, 5);
        assert!(out.notes[1].hint.contains("also at iax.conf:8"), "{}", out.notes[1].hint);
    }

    #[test]
    fn includes() {
        let loader = MapLoader::from_files([
            ("iax.conf", "[general]\n#include \"peers.conf\"\ndelayreject=yes\n#tryinclude optional.conf\n"),
            ("peers.conf", "bindport=4600\n[p]\ntype=user\n"),
        ]);
        let out = read(&loader);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        // The included file continues [general]; after it, iax.conf is back in [general].
        assert_eq!(out.config.general.bind.port(), 4600);
        assert!(out.config.general.delayreject);
        assert_eq!(out.config.peers.len(), 1);
        let loader =
            MapLoader::from_files([("iax.conf", "[general]\n#include /etc/passwd\n#include ../x\n#include *.conf\n")]);
        assert_eq!(read(&loader).errors.len(), 3);
    }

    #[test]
    fn deep_includes_stop() {
        let mut files: Vec<(String, String)> =
            (0..15).map(|i| (format!("f{i}.conf"), format!("#include f{}.conf\n", i + 1))).collect();
        files.push(("iax.conf".into(), "[general]\n#include f0.conf\n".into()));
        files.push(("f15.conf".into(), "delayreject=yes\n".into()));
        let out = read(&MapLoader::from_files(files));
        assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
        assert!(out.errors[0].message.contains("more than 10 deep"));
    }
}
