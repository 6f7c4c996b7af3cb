//! Questions to the engine task. The engine lives on the driver task with
//! no locks, so whoever wants figures sends a [`Query`] carrying a oneshot
//! reply into the driver's `select!` loop; the driver copies what is asked
//! (a snapshot) and goes on. Nothing is computed while nobody asks.
//!
//! The channel is small and [`QueryHandle`] never waits for room: a full
//! channel or a late answer is an error the caller turns into 503, so a
//! stuck engine shows as unhealthy instead of piling requests up.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::figures::MetricsSnapshot;
use super::status::StatusSnapshot;

/// Queries waiting for the driver at most.
const QUERY_CHANNEL: usize = 16;

/// A question for the driver task, with where to send the answer.
pub enum Query {
    /// `/metrics`: every section's figures.
    Metrics(oneshot::Sender<MetricsSnapshot>),
    /// `/status`: the gateway and its devices.
    Status(oneshot::Sender<StatusSnapshot>),
    /// `/healthz`: answered at once by a live engine loop.
    Health(oneshot::Sender<Health>),
}

/// The engine loop's answer to [`Query::Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The shutdown drain is under way.
    pub shutting_down: bool,
}

/// Why a query got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Too many queries are already waiting.
    #[error("the engine has too many questions waiting")]
    Busy,
    /// The driver task has ended.
    #[error("the engine task has stopped")]
    Stopped,
    /// No answer within the bound.
    #[error("the engine did not answer in time")]
    Timeout,
}

/// The asking end; cheap to clone.
#[derive(Debug, Clone)]
pub struct QueryHandle(mpsc::Sender<Query>);

/// A new channel: the handle, and the receiver for the driver.
pub fn channel() -> (QueryHandle, mpsc::Receiver<Query>) {
    let (tx, rx) = mpsc::channel(QUERY_CHANNEL);
    (QueryHandle(tx), rx)
}

impl QueryHandle {
    /// The figures for `/metrics`, answered within `within`.
    pub async fn metrics(&self, within: Duration) -> Result<MetricsSnapshot, QueryError> {
        self.ask(Query::Metrics, within).await
    }

    /// The status for `/status`, answered within `within`.
    pub async fn status(&self, within: Duration) -> Result<StatusSnapshot, QueryError> {
        self.ask(Query::Status, within).await
    }

    /// Whether the engine loop answers within `within`.
    pub async fn health(&self, within: Duration) -> Result<Health, QueryError> {
        self.ask(Query::Health, within).await
    }

    async fn ask<T>(
        &self,
        query: impl FnOnce(oneshot::Sender<T>) -> Query,
        within: Duration,
    ) -> Result<T, QueryError> {
        let (tx, rx) = oneshot::channel();
        self.0.try_send(query(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueryError::Busy,
            mpsc::error::TrySendError::Closed(_) => QueryError::Stopped,
        })?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(QueryError::Stopped),
            Err(_) => Err(QueryError::Timeout),
        }
    }
}
