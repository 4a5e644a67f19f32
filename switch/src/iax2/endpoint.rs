//! INTERIM signature of the IAX2 endpoint; the state machines land next.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;

use crate::config::IaxConfig;
use crate::event::Event;

/// Host names from the configuration, resolved by the runtime.
#[derive(Clone, Debug, Default)]
pub struct ResolvedHosts(pub BTreeMap<String, Vec<IpAddr>>);

/// A datagram the endpoint wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

pub struct Endpoint {
    _config: Arc<IaxConfig>,
}

impl Endpoint {
    pub fn new(config: Arc<IaxConfig>, _resolved: ResolvedHosts, _rng: ChaCha20Rng, _now: Instant) -> Self {
        Endpoint { _config: config }
    }
    pub fn reconfigure(&mut self, _now: Instant, config: Arc<IaxConfig>, _resolved: ResolvedHosts) {
        self._config = config;
    }
    pub fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, _data: &[u8]) {}
    pub fn handle_timeout(&mut self, _now: Instant) {}
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        None
    }
    pub fn show_peers(&self, _now: Instant) -> String {
        String::new()
    }
    pub fn show_registry(&self, _now: Instant) -> String {
        String::new()
    }
    pub fn show_stats(&self) -> String {
        String::new()
    }
}
