//! A softswitch that speaks IAX2 (RFC 5456) and SIP (RFC 3261), built from
//! sans-IO protocol cores.
//!
//! The protocol logic ([`iax2`], [`sip`]) is a set of plain state machines fed
//! with `(now, datagram)` and polled for datagrams to send and the next timer
//! deadline; each endpoint has the one shape of [`protocol::ProtocolCore`]. [`runtime`] is the one event loop that drives them over any
//! [`net::Net`]: tokio sockets when deployed, turmoil sockets inside the
//! simulator (`simnet`). Nothing else differs between the two worlds.

pub mod config;
pub mod control;
pub mod deadline;
pub mod dialplan;
pub mod droplog;
pub mod event;
pub mod guard;
pub mod iax2;
pub mod jitterbuffer;
pub mod media;
pub mod net;
pub mod protocol;
pub mod rtp;
pub mod runtime;
pub mod sip;
pub mod state;
