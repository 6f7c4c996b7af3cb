//! The operations endpoint: a deliberately small HTTP/1.1 server, GET (and
//! HEAD) only, one request per connection (`Connection: close`), serving
//! the dashboard (`/`, a page polling `/status`: live updates need nothing
//! more than this server), `/metrics`, `/status` and `/healthz`. Requests are parsed by `httparse`;
//! everything around it is here, with strict limits so that no client can
//! make it hold memory or a task for long:
//!
//! - at most [`Limits::max_connections`] connections at once; beyond that,
//!   as many again are read for [`BUSY_READ`]: a `/healthz` among them is
//!   still answered (a liveness probe must not read "busy" as "dead"),
//!   anything else gets `503` "too many connections"; beyond those, closed
//!   at once;
//! - the whole request head within [`Limits::read_timeout`] (a slow-loris
//!   client gets `408` and is closed), at most [`Limits::max_request_bytes`]
//!   and [`Limits::max_headers`] headers (else `431`);
//! - the answer written within [`Limits::write_timeout`];
//! - malformed requests get `400`, other methods `405`, other paths `404`;
//!   nothing a client sends can panic the server.
//!
//! Figures come from the engine task through [`QueryHandle`]; no answer
//! within [`Limits::engine_timeout`] is `503`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::query::QueryHandle;

/// The server's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes.
    pub max_request_bytes: usize,
    /// Most headers in a request.
    pub max_headers: usize,
    /// Longest time to receive the request head, from accept.
    pub read_timeout: Duration,
    /// Longest time to write the answer.
    pub write_timeout: Duration,
    /// Longest wait for the engine task's answer.
    pub engine_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            max_request_bytes: 8 * 1024,
            max_headers: 32,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            engine_timeout: Duration::from_secs(2),
        }
    }
}

/// A running server.
pub struct HttpServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The address actually bound (port resolved when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and serving.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and starts serving. Must be called inside a tokio runtime.
pub async fn bind(
    addr: SocketAddr,
    queries: QueryHandle,
    limits: Limits,
) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener, queries, limits));
    Ok(HttpServer { local_addr, task })
}

/// Sent to a connection beyond the limit, without reading its request.
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections\n";

/// How long a connection beyond the limit may take to send its request
/// before it is answered 503 (read first, so closing does not reset it).
const BUSY_READ: Duration = Duration::from_millis(200);

async fn accept_loop(listener: TcpListener, queries: QueryHandle, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // As many again may be told "503" politely; beyond that, closed at once.
    let refusals = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, typically: do not spin on it.
                warn!(error = %e, "HTTP: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let queries = queries.clone();
                tokio::spawn(async move {
                    serve(stream, &queries, &limits).await;
                    drop(permit);
                });
            }
            Err(_) => {
                debug!(%peer, "HTTP: too many connections; only /healthz is answered");
                if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                    let queries = queries.clone();
                    tokio::spawn(async move {
                        refuse(stream, &queries, &limits).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// A connection beyond the limit: its request is read within
/// [`BUSY_READ`] (at most [`BUSY_REQUEST_BYTES`]); `/healthz` is answered
/// as always (the engine's answer, bounded by `engine_timeout`), anything
/// else gets 503 "too many connections", written without waiting (a fresh
/// socket's buffer takes it).
async fn refuse(mut stream: TcpStream, queries: &QueryHandle, limits: &Limits) {
    let head = read_head_within(
        &mut stream,
        BUSY_REQUEST_BYTES,
        limits.max_headers,
        BUSY_READ,
    )
    .await;
    if let Head::Get { path, head_only } = head
        && path == "/healthz"
    {
        let response = route(&path, queries, limits).await;
        return answer(stream, response, head_only, limits).await;
    }
    let _ = stream.try_write(BUSY);
    let _ = tokio::time::timeout(BUSY_READ, stream.shutdown()).await;
}

/// The largest request head read from a connection beyond the limit.
const BUSY_REQUEST_BYTES: usize = 1024;

/// A response: status, content type, body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_owned(),
            allow: false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    }
}

/// What the request head said, or the status refusing it.
enum Head {
    Get {
        path: String,
        head_only: bool,
    },
    Refused(u16),
    /// The client went away or said nothing in time: nothing to answer.
    Gone,
    TimedOut,
}

async fn serve(mut stream: TcpStream, queries: &QueryHandle, limits: &Limits) {
    let head = read_head(&mut stream, limits).await;
    let (response, head_only) = match head {
        Head::Gone => return,
        Head::TimedOut => (Response::text(408, "request not received in time\n"), false),
        Head::Refused(405) => (
            Response {
                allow: true,
                ..Response::text(405, "only GET and HEAD\n")
            },
            false,
        ),
        Head::Refused(status) => (Response::text(status, "bad request\n"), false),
        Head::Get { path, head_only } => (route(&path, queries, limits).await, head_only),
    };
    answer(stream, response, head_only, limits).await;
}

/// Writes `response` (its head only for HEAD) within `write_timeout`, then
/// closes.
async fn answer(mut stream: TcpStream, response: Response, head_only: bool, limits: &Limits) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    let write = async {
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(limits.write_timeout, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        debug!(error = %e, "HTTP: answer not written");
    }
}

async fn read_head(stream: &mut TcpStream, limits: &Limits) -> Head {
    read_head_within(
        stream,
        limits.max_request_bytes,
        limits.max_headers,
        limits.read_timeout,
    )
    .await
}

/// Reads a request head of at most `max_bytes` and `max_headers` within
/// `timeout`.
async fn read_head_within(
    stream: &mut TcpStream,
    max_bytes: usize,
    max_headers: usize,
    timeout: Duration,
) -> Head {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; max_bytes];
    let mut filled = 0;
    loop {
        if filled > 0 {
            match parse(buf.get(..filled).unwrap_or_default(), max_headers) {
                Some(head) => return head,
                None if filled == buf.len() => return Head::Refused(431),
                None => {}
            }
        }
        let Some(free) = buf.get_mut(filled..) else {
            return Head::Refused(431);
        };
        match tokio::time::timeout_at(deadline, stream.read(free)).await {
            Err(_) => return Head::TimedOut,
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Gone,
            Ok(Ok(n)) => filled += n,
        }
    }
}

/// Parses a request head; `None` while it is incomplete.
fn parse(bytes: &[u8], max_headers: usize) -> Option<Head> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(target)) = (req.method, req.path) else {
                return Some(Head::Refused(400));
            };
            let head_only = match method {
                "GET" => false,
                "HEAD" => true,
                _ => return Some(Head::Refused(405)),
            };
            let path = target.split('?').next().unwrap_or_default().to_owned();
            Some(Head::Get { path, head_only })
        }
        Err(httparse::Error::TooManyHeaders) => Some(Head::Refused(431)),
        Err(_) => Some(Head::Refused(400)),
    }
}

/// The dashboard page (`/`): HTML with its CSS and JavaScript inline, so a
/// Pi with no Internet shows it; it polls `/status` every 2 s and draws the
/// rates chart itself (SVG).
const DASHBOARD: &str = include_str!("dashboard.html");

async fn route(path: &str, queries: &QueryHandle, limits: &Limits) -> Response {
    let within = limits.engine_timeout;
    match path {
        // The dashboard: one page, no external assets, polling /status.
        "/" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD.to_owned(),
            allow: false,
        },
        "/metrics" => match queries.metrics(within).await {
            Ok(snapshot) => Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: snapshot.render(),
                allow: false,
            },
            Err(e) => Response::text(503, &format!("{e}\n")),
        },
        "/status" => match queries.status(within).await {
            Ok(snapshot) => Response {
                status: 200,
                content_type: "application/json",
                body: snapshot.to_json(),
                allow: false,
            },
            Err(e) => Response::text(503, &format!("{e}\n")),
        },
        "/healthz" => match queries.health(within).await {
            Ok(h) if h.shutting_down => Response::text(503, "shutting down\n"),
            Ok(_) => Response::text(200, "ok\n"),
            Err(e) => Response::text(503, &format!("{e}\n")),
        },
        _ => Response::text(404, "not found: try /, /metrics, /status or /healthz\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(bytes: &[u8]) -> Option<u16> {
        match parse(bytes, 4)? {
            Head::Refused(s) => Some(s),
            Head::Get { .. } => Some(200),
            Head::Gone | Head::TimedOut => Some(0),
        }
    }

    #[test]
    fn the_dashboard_needs_nothing_from_elsewhere() {
        // A Pi offline shows it: no stylesheet, script, font or image by URL.
        for outside in ["http://", "https://", "<link", "src=", "@import", "url("] {
            assert!(
                !DASHBOARD.contains(outside),
                "the dashboard loads {outside}"
            );
        }
        assert!(DASHBOARD.contains("fetch(\"status\""), "it polls /status");
    }

    #[test]
    fn the_busy_answer_says_its_length() {
        let text = std::str::from_utf8(BUSY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[test]
    fn request_heads_are_parsed_or_refused() {
        assert_eq!(
            status_of(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(200)
        );
        assert_eq!(status_of(b"HEAD /status?x=1 HTTP/1.0\r\n\r\n"), Some(200));
        assert_eq!(status_of(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(status_of(b"POST /metrics HTTP/1.1\r\n\r\n"), Some(405));
        assert_eq!(status_of(b"\x16\x03\x01\x02\x00garbage\r\n\r\n"), Some(400));
        assert_eq!(status_of(b"GET / HTTP/9.9\r\n\r\n"), Some(400));
        let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
        assert_eq!(status_of(many), Some(431));
        match parse(b"GET /status?pretty HTTP/1.1\r\n\r\n", 4) {
            Some(Head::Get { path, head_only }) => {
                assert_eq!((path.as_str(), head_only), ("/status", false));
            }
            _ => panic!("a GET"),
        }
    }
}
