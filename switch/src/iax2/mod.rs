//! IAX2 (RFC 5456): wire format and the sans-IO protocol state machines.

pub mod endpoint;
