//! Call-number allocation with Asterisk's limits: `maxcallnumbers` per source
//! address (or a `[callnumberlimits]` entry) for validated sources, and one
//! shared pool of `maxcallnumbers_nonvalidated` for sources that skipped
//! call-token validation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use rand::Rng;

use crate::config::{canonical, IaxConfig};

/// Highest call number: 15 bits on the wire.
pub const MAX_CALL_NUMBER: u16 = 0x7fff;

/// The source call number of stateless answers (CALLTOKEN, REJECT and REGREJ
/// to a dialog we keep no state for), as chan_iax2's `send_apathetic_reply`
/// uses. It must not be 0: chan_iax2 only matches an answer to the dialog it
/// opened when the answer's source call number is non-zero, and drops the
/// rest ("Silently dropping frame without existent call number: 0"). It is
/// never allocated, so an ACK to it is known to belong to no call.
pub const STATELESS_CALL_NUMBER: u16 = 1;

/// Call numbers handed to dialogs: everything but 0 (no call) and the stateless one.
const FIRST_DIALOG_CALL_NUMBER: u16 = STATELESS_CALL_NUMBER + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// The source proved its address with a call token (or it is us calling out).
    Validated,
    Unvalidated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    Exhausted,
    PerAddressLimit,
    UnvalidatedLimit,
}

#[derive(Default)]
pub struct CallNumbers {
    in_use: BTreeMap<u16, (IpAddr, Validation)>,
    per_addr: BTreeMap<IpAddr, u16>,
    unvalidated: u16,
}

impl CallNumbers {
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    pub fn allocate(
        &mut self,
        rng: &mut impl Rng,
        config: &IaxConfig,
        peer: IpAddr,
        validation: Validation,
    ) -> Result<u16, AllocError> {
        let peer = canonical(peer);
        let held = self.per_addr.get(&peer).copied().unwrap_or(0);
        match validation {
            Validation::Validated if held >= limit_for(config, peer) => return Err(AllocError::PerAddressLimit),
            Validation::Unvalidated if self.unvalidated >= config.general.maxcallnumbers_nonvalidated => {
                return Err(AllocError::UnvalidatedLimit)
            }
            _ => {}
        }
        let number = self.pick(rng).ok_or(AllocError::Exhausted)?;
        self.in_use.insert(number, (peer, validation));
        *self.per_addr.entry(peer).or_default() += 1;
        if validation == Validation::Unvalidated {
            self.unvalidated += 1;
        }
        Ok(number)
    }

    pub fn release(&mut self, number: u16) {
        let Some((peer, validation)) = self.in_use.remove(&number) else { return };
        if let Some(n) = self.per_addr.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&peer);
            }
        }
        if validation == Validation::Unvalidated {
            self.unvalidated -= 1;
        }
    }

    /// A random free number, so numbers are not predictable to an off-path attacker.
    fn pick(&self, rng: &mut impl Rng) -> Option<u16> {
        for _ in 0..32 {
            let n = rng.gen_range(FIRST_DIALOG_CALL_NUMBER..=MAX_CALL_NUMBER);
            if !self.in_use.contains_key(&n) {
                return Some(n);
            }
        }
        let used: BTreeSet<u16> = self.in_use.keys().copied().collect();
        (FIRST_DIALOG_CALL_NUMBER..=MAX_CALL_NUMBER).find(|n| !used.contains(n))
    }
}

fn limit_for(config: &IaxConfig, peer: IpAddr) -> u16 {
    config
        .callnumberlimits
        .iter()
        .find(|(net, _)| net.contains(peer))
        .map_or(config.general.maxcallnumbers, |(_, n)| *n)
}
