//! SIP (RFC 3261), sans IO: messages, transactions, digest authentication,
//! the registrar and the user agent server that answers calls into the dialplan.

pub mod call;
pub mod digest;
pub mod endpoint;
pub mod gateway;
pub mod header;
pub mod message;
pub mod nat;
pub mod ports;
pub mod registrar;
pub mod sdp;
pub mod strict;
pub mod transaction;
pub mod uri;
