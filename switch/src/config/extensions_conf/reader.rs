//! Phase 1 of `extensions.conf`: text to sections of `key => value` lines,
//! as Asterisk's config reader does for every `.conf` file. `;` comments,
//! `\;` escapes and `;-- block comments --;` are stripped as in `iax.conf`;
//! `#include "file"` / `#tryinclude` name a file relative to the file that
//! includes it. What the lines mean is phase 2's business.

use super::super::iax_conf::{check_include_name, dequote, strip_comment, MAX_INCLUDED_FILES, MAX_INCLUDE_DEPTH};
use super::super::{Diagnostic, Location, SourceLoader};

/// One `key => value` (or `key = value`) line.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// As written, trimmed (matched case-insensitively).
    pub key: String,
    pub value: String,
    pub location: Location,
    /// Position in the include-expanded text.
    pub seq: u64,
}

/// A `[name]` header and the lines under it.
#[derive(Debug)]
pub(super) struct Section {
    pub name: String,
    pub location: Location,
    pub seq: u64,
    /// `[name](!)`: an Asterisk template, which `pbx_config` never turns into a context.
    pub template: bool,
    pub entries: Vec<Entry>,
}

/// What phase 1 found: sections in file order, lines before any section,
/// fatal errors (missing include, cycle, `#exec`) and notes (lines not understood).
#[derive(Debug, Default)]
pub(super) struct Read {
    pub sections: Vec<Section>,
    pub errors: Vec<(u64, Diagnostic)>,
    pub notes: Vec<(u64, Diagnostic)>,
}

pub(super) fn read(loader: &impl SourceLoader, name: &str) -> Read {
    let mut reader = Reader { loader, out: Read::default(), current: None, seq: 0, stack: Vec::new(), files: 0 };
    let display = loader.display_name(name);
    match loader.read(name) {
        Ok(Some(text)) => {
            reader.stack.push(name.to_string());
            reader.parse_text(&text, name, &display, 0);
        }
        Ok(None) => {}
        Err(e) => reader.out.errors.push((
            0,
            Diagnostic::new(
                Location { file: display, line: 0 },
                None,
                format!("cannot read the file: {e}"),
                "check the file's permissions",
            ),
        )),
    }
    reader.out
}

struct Reader<'a, L: SourceLoader> {
    loader: &'a L,
    out: Read,
    /// The section lines go to; an included file starts in the includer's.
    current: Option<usize>,
    seq: u64,
    /// Names of the files being read, outermost first (cycle detection).
    stack: Vec<String>,
    files: usize,
}

impl<L: SourceLoader> Reader<'_, L> {
    fn error(&mut self, seq: u64, loc: &Location, message: String, hint: impl Into<String>) {
        self.out.errors.push((seq, Diagnostic::new(loc.clone(), None, message, hint)));
    }

    fn note(&mut self, seq: u64, loc: &Location, message: String, hint: impl Into<String>) {
        self.out.notes.push((seq, Diagnostic::new(loc.clone(), None, message, hint)));
    }

    fn parse_text(&mut self, text: &str, name: &str, display: &str, depth: usize) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut comment_depth = 0u32;
        let mut comment_start = 0u32;
        for (idx, raw) in text.lines().enumerate() {
            let lineno = u32::try_from(idx + 1).unwrap_or(u32::MAX);
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
            if let Some(header) = line.strip_prefix('[') {
                self.header(header, &loc, seq);
            } else if let Some(directive) = line.strip_prefix('#') {
                self.directive(directive, name, &loc, seq, depth);
            } else {
                self.entry(line, &loc, seq);
            }
        }
        if comment_depth > 0 {
            let loc = Location { file: display.to_string(), line: comment_start };
            self.error(self.seq, &loc, "block comment `;--` is never closed".to_string(), "close it with `--;`");
        }
    }

    /// `[name]`, `[name](+)` (add to a section: contexts merge anyway), `[name](!)` (a template).
    fn header(&mut self, rest: &str, loc: &Location, seq: u64) {
        let Some(close) = rest.find(']') else {
            self.note(
                seq,
                loc,
                format!("context header `[{rest}` has no closing `]`; its lines are left out"),
                "write e.g. [iaxinbound]",
            );
            self.current = None;
            return;
        };
        let name = rest[..close].trim();
        let opts = rest[close + 1..].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            self.note(
                seq,
                loc,
                format!("context name {name:?} is empty or has spaces; its lines are left out"),
                "write e.g. [iaxinbound]",
            );
            self.current = None;
            return;
        }
        let inner = opts.strip_prefix('(').and_then(|o| o.strip_suffix(')'));
        let template = match inner {
            None if opts.is_empty() => false,
            Some(o) if o.split(',').all(|x| x.trim() == "+") => false,
            Some(o) if o.split(',').any(|x| x.trim() == "!") => true,
            _ => {
                self.note(
                    seq,
                    loc,
                    format!("[{name}]{opts}: inheriting from templates is not supported in extensions.conf; the context is read without it"),
                    format!("write the lines out in [{name}], or use include => to share extensions"),
                );
                false
            }
        };
        self.out.sections.push(Section {
            name: name.to_string(),
            location: loc.clone(),
            seq,
            template,
            entries: Vec::new(),
        });
        self.current = Some(self.out.sections.len() - 1);
    }

    /// `#include "file"`, `#include <file>`, `#tryinclude file`; `#exec` is refused.
    fn directive(&mut self, body: &str, including: &str, loc: &Location, seq: u64, depth: usize) {
        let (word, arg) = match body.find(char::is_whitespace) {
            Some(i) => (&body[..i], body[i..].trim()),
            None => (body, ""),
        };
        let word = word.to_ascii_lowercase();
        let optional = match word.as_str() {
            "include" => false,
            "tryinclude" => true,
            "exec" => {
                return self.error(
                    seq,
                    loc,
                    "#exec is not supported: this switch does not run programs to build its configuration".into(),
                    "run the program yourself, save its output to a file and #include that file",
                );
            }
            _ => {
                return self.error(
                    seq,
                    loc,
                    format!("unknown directive `#{word}`"),
                    "only #include and #tryinclude are understood; start comments with `;`",
                );
            }
        };
        let arg = dequote(arg);
        if arg.is_empty() {
            return self.error(
                seq,
                loc,
                format!("#{word} needs a file name"),
                "write e.g. #include \"extensions-lab.conf\"",
            );
        }
        if let Err(why) = check_include_name(arg) {
            return self.error(
                seq,
                loc,
                format!("cannot #{word} {arg:?}: {why}"),
                "name a file next to this one, e.g. #include \"extensions-lab.conf\"",
            );
        }
        // Relative to the including file: `lab/a.conf` including `b.conf` reads `lab/b.conf`.
        let arg = arg.strip_prefix("./").unwrap_or(arg);
        let name = match including.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/{arg}"),
            None => arg.to_string(),
        };
        if let Some(pos) = self.stack.iter().position(|n| *n == name) {
            let mut chain: Vec<&str> = self.stack[pos..].iter().map(String::as_str).collect();
            chain.push(&name);
            return self.error(
                seq,
                loc,
                format!("include cycle: {}", chain.join(" -> ")),
                format!("remove the #{word} of {name:?} from one of these files"),
            );
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return self.error(
                seq,
                loc,
                format!("#{word} {name:?} nests includes more than {MAX_INCLUDE_DEPTH} deep"),
                "include the files from fewer levels",
            );
        }
        self.files += 1;
        if self.files > MAX_INCLUDED_FILES {
            return self.error(
                seq,
                loc,
                format!("more than {MAX_INCLUDED_FILES} files included in all; {name:?} is not read"),
                "include each file once",
            );
        }
        match self.loader.read(&name) {
            Ok(Some(text)) => {
                let display = self.loader.display_name(&name);
                self.stack.push(name.clone());
                self.parse_text(&text, &name, &display, depth + 1);
                self.stack.pop();
            }
            Ok(None) if optional => {}
            Ok(None) => {
                let display = self.loader.display_name(&name);
                self.error(
                    seq,
                    loc,
                    format!("#include {display}: no such file"),
                    "create it, correct the name, or write #tryinclude for an optional file",
                );
            }
            Err(e) => {
                let display = self.loader.display_name(&name);
                self.error(seq, loc, format!("cannot read {display}: {e}"), "check the file's permissions");
            }
        }
    }

    /// `key => value` or `key = value`.
    fn entry(&mut self, line: &str, loc: &Location, seq: u64) {
        let Some(eq) = line.find('=') else {
            return self.note(
                seq,
                loc,
                format!("line not understood: {line:?}"),
                "write e.g. exten => 9196,1,Echo() or same => n,Hangup()",
            );
        };
        let key = line[..eq].trim();
        let value = line[eq + 1..].strip_prefix('>').unwrap_or(&line[eq + 1..]).trim();
        let Some(current) = self.current else {
            return self.note(
                seq,
                loc,
                format!("`{key}` before any [context]; the line is left out"),
                "put it under a [context] header",
            );
        };
        if let Some(section) = self.out.sections.get_mut(current) {
            section.entries.push(Entry { key: key.to_string(), value: value.to_string(), location: loc.clone(), seq });
        }
    }
}
