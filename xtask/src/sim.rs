//! The one place xtask touches simnet's scenario API (kept narrow so a change
//! there is a change here only).

pub use simnet::{list_scenarios, run, Network, RunOptions, Scenario};
