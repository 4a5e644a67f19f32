//! State that outlives a restart, kept under `[state] dir` of `switch.toml`.
//!
//! Today that is the IAX2 registrar's dynamic peers (Asterisk keeps the same
//! in astdb): after a restart the switch can reach them at once instead of
//! waiting up to a refresh interval for their next REGREQ.
//!
//! The protocol core only says *that* its registry changed and *what* it
//! holds, in relative time; this module turns that into a small file with
//! absolute deadlines ([`registrations`]), and a [`StateStore`] keeps the
//! bytes: a directory live ([`DirStore`], atomic replace), memory in the
//! simulator and in tests ([`MemoryStore`], on the simulated clock).
//! [`Persister`] is the runtime's side: restore at start, save on change, at
//! most once a second. Nothing here is fatal: a store that cannot be read or
//! written, or a file that does not parse, is logged and the switch runs on.

mod persister;
pub mod registrations;
mod store;

pub use persister::Persister;
pub use store::{DirStore, MemoryStore, StateStore};

use std::path::PathBuf;

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{bytes} bytes is more than the {limit} a state file may hold")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("not a state file: {0}")]
    Malformed(String),
    #[error("state file version {0} is not one this switch reads (1)")]
    Version(u32),
}
