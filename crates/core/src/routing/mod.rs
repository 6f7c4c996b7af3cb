//! Routing shared by every kind of client: MQTT-SN devices, the embedded
//! broker's local clients and the upstream bridge.
//!
//! [`topic`] owns MQTT's topic rules (validation, `+`/`#` matching),
//! [`router`] the subscription trie that answers "who wants this name",
//! [`retained`] the last retained message per topic. Pure data structures
//! with no knowledge of sessions: the engine keys subscribers as it likes.

pub mod retained;
pub mod router;
pub mod topic;
