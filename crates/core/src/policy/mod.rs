//! Policy: who may connect, who may publish or receive where, and how fast
//! a source may send.
//!
//! The rules are data with pure decisions — [`acl`] (mosquitto's
//! `acl_file` semantics), [`admission`] (client id globs, UDP networks,
//! radio addresses), [`rate_limit`] (a token bucket per source, refilled
//! from the `now` passed in) — and `authorize.rs` is where the engine
//! consults them, counts each refusal and logs it. Kept apart from the
//! protocol code so a rule change never touches a state machine.

pub mod acl;
pub mod admission;
mod authorize;
pub mod rate_limit;
