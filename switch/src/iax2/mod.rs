//! IAX2 (RFC 5456): wire format and the sans-IO protocol state machines.
//!
//! Wire format: [`frame`], [`ie`], [`subclass`]. Protocol: [`dialog`]
//! (reliable delivery of one call number's full frames), [`registration`]
//! (client role), [`registrar`] (server role), [`qualify`] (POKE/PONG),
//! [`calltoken`], [`callno`], [`auth`]; [`endpoint`] ties them to one socket.

pub mod auth;
pub mod call;
pub mod callno;
pub mod calltoken;
pub mod crypto;
pub mod dialog;
pub mod endpoint;
pub mod frame;
pub mod ie;
pub mod qualify;
pub mod registrar;
pub mod registration;
pub mod subclass;
pub mod trunk;

use std::net::SocketAddr;

/// A datagram a dialog queues for the endpoint's one socket; the endpoint
/// hands it to the runtime as a [`crate::protocol::Transmit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}
