//! Asterisk's `extensions.conf`, read as-is into the switch's [`Dialplan`].
//!
//! [`reader`] turns the text into `[context]` sections of `key => value`
//! lines; this module interprets them as Asterisk's `pbx_config` does:
//! `[general]` and `[globals]` (variables, expanded as `${NAME}` in
//! application arguments), then every other section is a context, and
//! same-named sections add to one context. In a context:
//!
//! * `exten => EXTEN,PRIORITY[(label)],App(args)` and `same => PRIORITY,...`;
//!   a priority is a number, `n` (the previous line's plus one), `s` (the
//!   previous line's), a label of the same extension, any of these `+N`;
//! * `include => other` (looked up after the context's own extensions, in order);
//! * `h` is read but never run: it runs after a call ends in Asterisk, and
//!   the switch has nothing to run then.
//!
//! Each extension's priorities, from 1 while they follow each other, become
//! [`Step`]s ([`apps`]), reduced by [`crate::dialplan::reduce`] to the route
//! the switch runs. What cannot be honoured is reported as a note with
//! file:line and the extension still works with the rest; an extension left
//! with nothing it can do is left out (callers get "no such extension").
//! Only what the reader cannot get past is an error: a missing `#include`,
//! an include cycle, `#exec`, an unclosed block comment.

mod apps;
mod reader;

use std::collections::BTreeMap;

use super::{Diagnostic, Location, SourceLoader};
use crate::dialplan::{reduce, Dialplan, Step};
use reader::{Entry, Section};

/// The file's name.
pub const EXTENSIONS_CONF: &str = "extensions.conf";

/// What reading `extensions.conf` gave.
#[derive(Debug, Default)]
pub struct ExtensionsOutcome {
    pub dialplan: Dialplan,
    /// Where each context is first defined (for messages about clashes).
    pub contexts: BTreeMap<String, Location>,
    /// Fatal problems, in file order.
    pub errors: Vec<Diagnostic>,
    /// What is not honoured as written, each once, in file order.
    pub notes: Vec<Diagnostic>,
}

/// Reads `extensions.conf` (and what it includes) through `loader`; an absent
/// file gives an empty dialplan.
pub fn read(loader: &impl SourceLoader) -> ExtensionsOutcome {
    let read = reader::read(loader, EXTENSIONS_CONF);
    let mut interp = Interp::default();
    for (seq, d) in read.notes {
        interp.notes.push(NoteAcc { id: None, seq, diag: d, also: Vec::new() });
    }
    let contexts = interp.run(&read.sections);
    let mut outcome = interp.build(contexts);
    let mut errors = read.errors;
    errors.sort_by_key(|(seq, _)| *seq);
    outcome.errors = errors.into_iter().map(|(_, d)| d).collect();
    outcome
}

/// Why an `exten =>` / `same =>` line is left out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum LineError {
    #[error("expected EXTEN,PRIORITY,Application(args); got {0:?}")]
    Shape(String),
    #[error("`same =>` with no `exten =>` above it in this context")]
    SameWithoutExten,
    #[error("priority `{0}` follows no earlier line in this context")]
    NothingBefore(String),
    #[error("priority {0:?} is not a number, n, s, hint or a label of this extension")]
    BadPriority(String),
    #[error("extension {0:?}: {1}")]
    BadExten(String, String),
    #[error("extension {0:?} matches on caller ID, which the switch does not do; the line is left out")]
    CallerId(String),
    #[error("priority {priority} of {exten} is already used at {first}; this line is ignored (as Asterisk does)")]
    Duplicate { exten: String, priority: u32, first: Location },
    #[error("application {0:?} has `(` without `)`")]
    Unclosed(String),
}

impl LineError {
    fn hint(&self) -> &'static str {
        match self {
            LineError::Duplicate { .. } => "renumber one of them, or use n",
            LineError::CallerId(_) => "write a separate context for those callers",
            LineError::Unclosed(_) => "close the argument list, e.g. Dial(IAX2/b/${EXTEN})",
            _ => "write e.g. exten => 9196,1,Answer() then same => n,Echo()",
        }
    }
}

/// One priority of an extension.
#[derive(Clone, Debug)]
struct Priority {
    location: Location,
    seq: u64,
    label: Option<String>,
    app: String,
    args: String,
}

#[derive(Debug)]
struct Extension {
    name: String,
    location: Location,
    seq: u64,
    priorities: BTreeMap<u32, Priority>,
}

#[derive(Debug)]
struct ContextAcc {
    name: String,
    location: Location,
    extensions: Vec<Extension>,
    includes: Vec<String>,
}

/// A note, and where else the same thing was seen (reported once).
struct NoteAcc {
    id: Option<String>,
    seq: u64,
    diag: Diagnostic,
    also: Vec<Location>,
}

#[derive(Default)]
struct Interp {
    globals: BTreeMap<String, String>,
    notes: Vec<NoteAcc>,
}

impl Interp {
    /// A note on one line.
    fn note(&mut self, e: (&Location, u64), key: Option<&str>, message: String, hint: &str) {
        self.notes.push(NoteAcc {
            id: None,
            seq: e.1,
            diag: Diagnostic::new(e.0.clone(), key, message, hint),
            also: Vec::new(),
        });
    }

    /// A note reported once for every line with the same `id`; later lines are listed in the hint.
    fn note_once(&mut self, id: &str, e: (&Location, u64), key: Option<&str>, message: String, hint: &str) {
        if let Some(acc) = self.notes.iter_mut().find(|n| n.id.as_deref() == Some(id)) {
            if *e.0 != acc.diag.location && !acc.also.contains(e.0) {
                acc.also.push(e.0.clone());
            }
            return;
        }
        self.notes.push(NoteAcc {
            id: Some(id.to_string()),
            seq: e.1,
            diag: Diagnostic::new(e.0.clone(), key, message, hint),
            also: Vec::new(),
        });
    }

    /// `[general]` and `[globals]` first, wherever they are; then the contexts.
    fn run(&mut self, sections: &[Section]) -> Vec<ContextAcc> {
        for s in sections.iter().filter(|s| s.name.eq_ignore_ascii_case("globals")) {
            for e in &s.entries {
                self.globals.insert(e.key.clone(), e.value.clone());
            }
        }
        for s in sections.iter().filter(|s| s.name.eq_ignore_ascii_case("general")) {
            for e in &s.entries {
                self.general(e);
            }
        }
        let mut contexts: Vec<ContextAcc> = Vec::new();
        for s in sections {
            if s.name.eq_ignore_ascii_case("general") || s.name.eq_ignore_ascii_case("globals") {
                continue;
            }
            if s.template {
                self.note(
                    (&s.location, s.seq),
                    None,
                    format!("[{}](!) is a template, not a context; it is left out", s.name),
                    "drop the (!) to make it a context",
                );
                continue;
            }
            let i = match contexts.iter().position(|c| c.name == s.name) {
                Some(i) => i,
                None => {
                    contexts.push(ContextAcc {
                        name: s.name.clone(),
                        location: s.location.clone(),
                        extensions: Vec::new(),
                        includes: Vec::new(),
                    });
                    contexts.len() - 1
                }
            };
            self.context(&mut contexts[i], s);
        }
        contexts
    }

    fn general(&mut self, e: &Entry) {
        let at = (&e.location, e.seq);
        match e.key.to_ascii_lowercase().as_str() {
            // About saving the dialplan from the CLI and the pattern matcher's
            // internals: nothing changes what a call does here.
            "static" | "writeprotect" | "clearglobalvars" | "extenpatternmatchnew" => {}
            "autofallthrough" if super::iax_conf::parse_bool(&e.value) != Some(false) => {}
            "autofallthrough" => self.note(
                at,
                Some(&e.key),
                "autofallthrough=no is not supported: when the priorities run out the call is hung up, as with yes"
                    .into(),
                "end extensions with Hangup() to make it explicit",
            ),
            _ => self.note(
                at,
                Some(&e.key),
                format!("`{}` in [general] is not supported; it has no effect", e.key),
                "remove the line",
            ),
        }
    }

    /// The lines of one section into its context. `n` and `same` refer to the
    /// previous line of the same section, as in Asterisk.
    fn context(&mut self, ctx: &mut ContextAcc, section: &Section) {
        let mut last: Option<(usize, u32)> = None;
        for e in &section.entries {
            let at = (&e.location, e.seq);
            match e.key.to_ascii_lowercase().as_str() {
                "exten" | "same" => match self.exten_line(ctx, e, last) {
                    Ok(Some(pos)) => last = Some(pos),
                    Ok(None) => {}
                    Err(err) => {
                        let hint = err.hint();
                        self.note(at, Some(&e.key), err.to_string(), hint);
                    }
                },
                "include" => {
                    let mut parts = e.value.splitn(2, [',', '|']);
                    let name = parts.next().unwrap_or("").trim();
                    if name.is_empty() {
                        self.note(
                            at,
                            Some("include"),
                            "include => needs a context name".into(),
                            "write e.g. include => lab",
                        );
                        continue;
                    }
                    if parts.next().is_some() {
                        self.note(
                            at,
                            Some("include"),
                            format!("include => {name} with a time condition: the condition is not honoured; {name} is included at all times"),
                            "remove the condition, or the include",
                        );
                    }
                    ctx.includes.push(name.to_string());
                }
                "switch" | "eswitch" | "lswitch" | "ignorepat" => self.note_once(
                    &format!("key:{}", e.key.to_ascii_lowercase()),
                    at,
                    Some(&e.key),
                    format!("`{} =>` is not supported; the line has no effect", e.key),
                    "the switch looks extensions up only in its own dialplan",
                ),
                _ => self.note(
                    at,
                    Some(&e.key),
                    format!("`{}` is not a line of a context; it is left out", e.key),
                    "a context holds exten =>, same => and include => lines",
                ),
            }
        }
    }

    /// One `exten =>` or `same =>` line; returns (extension index, priority),
    /// or `None` for a hint line, which `n` and `same` do not count.
    fn exten_line(
        &mut self,
        ctx: &mut ContextAcc,
        e: &Entry,
        last: Option<(usize, u32)>,
    ) -> Result<Option<(usize, u32)>, LineError> {
        let same = e.key.eq_ignore_ascii_case("same");
        let (exten_i, rest) = if same {
            let Some((i, _)) = last else { return Err(LineError::SameWithoutExten) };
            (Some(i), e.value.as_str())
        } else {
            let Some((name, rest)) = e.value.split_once(',') else { return Err(LineError::Shape(e.value.clone())) };
            let name = name.trim();
            if name.contains('/') {
                return Err(LineError::CallerId(name.to_string()));
            }
            super::switch_toml::check_pattern(name).map_err(|m| LineError::BadExten(name.to_string(), m))?;
            (ctx.extensions.iter().position(|x| x.name == name), rest)
        };
        let (prio_text, app_text) = rest.split_once(',').unwrap_or((rest, ""));
        let (prio_text, label) = match prio_text.split_once('(') {
            Some((p, l)) => (p.trim(), Some(l.trim_end().trim_end_matches(')').trim().to_string())),
            None => (prio_text.trim(), None),
        };
        let (base, plus) = match prio_text.split_once('+') {
            Some((b, p)) => (b.trim(), Some(p.trim())),
            None => (prio_text, None),
        };
        if base.eq_ignore_ascii_case("hint") {
            self.note_once(
                "hint",
                (&e.location, e.seq),
                Some(&e.key),
                "hints (device state for BLF) are not supported; hint lines have no effect".into(),
                "remove them",
            );
            return Ok(None);
        }
        let existing = exten_i.filter(|i| *i < ctx.extensions.len());
        let mut priority = match base.to_ascii_lowercase().as_str() {
            "n" | "next" => last.ok_or_else(|| LineError::NothingBefore(base.to_string()))?.1.saturating_add(1),
            "s" | "same" => last.ok_or_else(|| LineError::NothingBefore(base.to_string()))?.1,
            _ => match base.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => existing
                    .and_then(|i| {
                        ctx.extensions[i]
                            .priorities
                            .iter()
                            .find(|(_, p)| p.label.as_deref() == Some(base))
                            .map(|(n, _)| *n)
                    })
                    .ok_or_else(|| LineError::BadPriority(prio_text.to_string()))?,
            },
        };
        if let Some(plus) = plus {
            let add: u32 = plus.parse().map_err(|_| LineError::BadPriority(prio_text.to_string()))?;
            priority = priority.saturating_add(add);
        }
        let app_text = app_text.trim();
        let (app, args) = match app_text.split_once('(') {
            None => (app_text.to_string(), String::new()),
            Some((name, rest)) => match rest.rfind(')') {
                Some(end) => (name.trim().to_string(), rest[..end].to_string()),
                None => return Err(LineError::Unclosed(app_text.to_string())),
            },
        };
        if app.is_empty() || app.contains([',', ' ']) {
            return Err(LineError::Shape(e.value.clone()));
        }
        let i = match existing {
            Some(i) => i,
            None if same => return Err(LineError::SameWithoutExten),
            None => {
                let name = e.value.split_once(',').map_or("", |(n, _)| n.trim()).to_string();
                ctx.extensions.push(Extension {
                    name,
                    location: e.location.clone(),
                    seq: e.seq,
                    priorities: BTreeMap::new(),
                });
                ctx.extensions.len() - 1
            }
        };
        let ext = &mut ctx.extensions[i];
        if let Some(first) = ext.priorities.get(&priority) {
            return Err(LineError::Duplicate { exten: ext.name.clone(), priority, first: first.location.clone() });
        }
        ext.priorities.insert(priority, Priority { location: e.location.clone(), seq: e.seq, label, app, args });
        Ok(Some((i, priority)))
    }

    /// `${NAME}` of `[globals]` in application arguments (`${EXTEN...}` is left for the call).
    fn expand_globals(&self, args: &str) -> String {
        let mut out = args.to_string();
        for (name, value) in &self.globals {
            out = out.replace(&format!("${{{name}}}"), value);
        }
        out
    }

    /// Turns the contexts into the dialplan.
    fn build(mut self, contexts: Vec<ContextAcc>) -> ExtensionsOutcome {
        let mut dialplan = Dialplan::default();
        let mut locations = BTreeMap::new();
        for ctx in contexts {
            dialplan.ensure_context(&ctx.name);
            locations.insert(ctx.name.clone(), ctx.location.clone());
            for inc in &ctx.includes {
                dialplan.include(&ctx.name, inc);
            }
            for ext in &ctx.extensions {
                self.extension(&mut dialplan, &ctx.name, ext);
            }
        }
        let mut notes = std::mem::take(&mut self.notes);
        notes.sort_by_key(|n| n.seq);
        let notes = notes
            .into_iter()
            .map(|mut n| {
                n.diag.hint = super::model::hint_with_also(&n.diag.hint, &n.also);
                n.diag
            })
            .collect();
        ExtensionsOutcome { dialplan, contexts: locations, errors: Vec::new(), notes }
    }

    fn extension(&mut self, dialplan: &mut Dialplan, context: &str, ext: &Extension) {
        let at = (&ext.location, ext.seq);
        let key = Some(ext.name.as_str());
        if !ext.priorities.contains_key(&1) {
            let first = ext.priorities.keys().next().copied().unwrap_or(0);
            return self.note(
                at,
                key,
                format!("extension {} in [{context}] has no priority 1 (it starts at {first}), so it never runs; it is left out", ext.name),
                "number the first line 1",
            );
        }
        // Priorities run 1, 2, 3...: a gap ends the program, as in Asterisk.
        let mut program: Vec<&Priority> = Vec::new();
        for (n, p) in &ext.priorities {
            if *n as usize != program.len() + 1 {
                self.note(
                    (&p.location, p.seq),
                    key,
                    format!("priority {n} of {} is never reached: priority {} is missing", ext.name, program.len() + 1),
                    "number the lines without gaps, or use n",
                );
                break;
            }
            program.push(p);
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut origin: Vec<&Priority> = Vec::new();
        let mut skipped = 0;
        for p in program {
            let at = (&p.location, p.seq);
            match apps::step(&p.app, &self.expand_globals(&p.args)) {
                Ok((step, caveat)) => {
                    if let Some(caveat) = caveat {
                        self.note(at, Some(&p.app), caveat, "");
                    }
                    steps.push(step);
                    origin.push(p);
                }
                Err(err @ apps::AppError::Unsupported(_)) => {
                    skipped += 1;
                    let hint = err.hint();
                    self.note_once(
                        &format!("app:{}", p.app.to_ascii_lowercase()),
                        at,
                        Some(&p.app),
                        err.to_string(),
                        &hint,
                    );
                }
                Err(err) => {
                    skipped += 1;
                    let hint = err.hint();
                    self.note(at, Some(&p.app), err.to_string(), &hint);
                }
            }
        }
        if ext.name == "h" {
            if steps.iter().any(|s| !matches!(s, Step::NoOp | Step::Hangup { .. } | Step::Answer)) {
                self.note(
                    at,
                    key,
                    format!("extension h of [{context}] runs after a call has ended in Asterisk; the switch runs nothing then, so it is not run"),
                    "",
                );
            }
            return;
        }
        let does_something = steps.iter().any(|s| !matches!(s, Step::NoOp | Step::Answer));
        if skipped > 0 && !does_something {
            return self.note(
                at,
                key,
                format!("extension {} in [{context}] is left out: nothing it does is supported, so callers get \"no such extension\"", ext.name),
                "give it a supported application, or remove it",
            );
        }
        let (route, unhonoured) = reduce(&steps);
        for u in unhonoured {
            if let Some(p) = origin.get(u.step) {
                self.note((&p.location, p.seq), Some(&p.app), u.why, "");
            }
        }
        dialplan.add_route(context, &ext.name, route);
    }
}

#[cfg(test)]
mod tests;
