//! Operations: what the gateway tells the people and machines that run it.
//!
//! - [`query`]: questions to the engine task (a oneshot reply through the
//!   driver's `select!` loop; no locks, nothing computed while idle).
//! - [`figures`]: the `/metrics` sections and [`exposition`], the
//!   Prometheus text format they are written in.
//! - [`status`]: the `/status` JSON document.
//! - [`http`]: the small GET-only HTTP/1.1 server that serves them, with
//!   `/healthz`.
//!
//! How another component adds its figures is said in [`figures`] and
//! [`status`]. `docs/architecture.md` says why the server is hand-written.

pub mod exposition;
pub mod figures;
pub mod http;
pub mod query;
pub mod rates;
pub mod status;
pub mod summary;

pub use exposition::{Collect, Exposition};
pub use figures::MetricsSnapshot;
pub use query::{Health, Query, QueryError, QueryHandle};
pub use status::StatusSnapshot;
