//! Policy: who may connect, who may publish or receive where, and how fast
//! a source may send.
//!
//! The rules are data with pure decisions — [`acl`] (mosquitto's
//! `acl_file` semantics), [`admission`] (client id globs, UDP networks,
//! radio addresses), [`identity`] (which client ids a device authenticated
//! at the transport may use), [`rate_limit`] (a token bucket per established session
//! and one per source address for what creates state, refilled from the
//! `now` passed in), `log_gate` (one log line per period for a repeated
//! refusal) — and `authorize.rs` is where the engine
//! consults them, counts each refusal and logs it. Kept apart from the
//! protocol code so a rule change never touches a state machine.

pub mod acl;
pub mod admission;
mod authorize;
pub(crate) use authorize::is_sys;
pub mod identity;
pub mod log_gate;
pub mod rate_limit;
