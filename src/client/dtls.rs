//! The client's DTLS link: a device-side DTLS 1.2 PSK session
//! (`transport::dtls::client`) run by a task between the gateway and a
//! loopback UDP socket. The client talks plain MQTT-SN to that socket as to
//! any gateway, so every tool and test speaks DTLS without a second code
//! path; the task encrypts what it sends and decrypts what comes back.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::debug;

use super::ClientError;
use super::link::ephemeral_socket;
use crate::transport::dtls::client::{CertCredentials, ClientOutput, DtlsClient, PskCredentials};

/// What a device proves itself with.
#[derive(Debug, Clone, Copy)]
pub(super) enum Creds<'a> {
    /// A pre-shared key.
    Psk(&'a PskCredentials),
    /// A client certificate.
    Cert(&'a CertCredentials),
}

/// How long the handshake may take before the link gives up: its first
/// flight and two retransmissions (1 s, then 2 s). The gateway says nothing
/// to a wrong key, so this is also how long a tool takes to report one.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The MTU the client's handshake is fragmented to.
const MTU: usize = 1200;

fn failed(why: impl std::fmt::Display) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("DTLS: {why}"),
    ))
}

/// Sends what the session produced to the gateway; returns its timer.
async fn flush(out: ClientOutput, socket: &UdpSocket) -> Option<Instant> {
    for d in &out.datagrams {
        if let Err(e) = socket.send(d).await {
            debug!(error = %e, "DTLS send failed");
        }
    }
    out.timer.map(Instant::from_std)
}

/// Completes a DTLS handshake with `gateway` with `creds` and starts
/// the task that carries the session; returns the loopback address the
/// client sends its MQTT-SN messages to. A wrong key or an unknown
/// identity fails here (the gateway says nothing, so after the timeout).
pub(super) async fn open(gateway: SocketAddr, creds: Creds<'_>) -> Result<SocketAddr, ClientError> {
    let (session, outer, timer) = handshake(gateway, creds).await?;
    let inner = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let local = inner.local_addr()?;
    tokio::spawn(carry(session, outer, inner, timer));
    Ok(local)
}

/// Sends one MQTT-SN message over a new DTLS session (QoS −1 needs no
/// connection, but over DTLS it needs a handshake).
pub(super) async fn send_once(
    gateway: SocketAddr,
    creds: Creds<'_>,
    message: &[u8],
) -> Result<(), ClientError> {
    let (mut session, outer, _) = handshake(gateway, creds).await?;
    session.send(message).map_err(failed)?;
    flush(session.drain(), &outer).await;
    Ok(())
}

/// A DTLS session with `gateway`, handshake complete, on a socket
/// connected to it; and the session's next timer.
async fn handshake(
    gateway: SocketAddr,
    creds: Creds<'_>,
) -> Result<(DtlsClient, UdpSocket, Option<Instant>), ClientError> {
    let outer = ephemeral_socket(gateway).await?;
    outer.connect(gateway).await?;
    let now = Instant::now().into_std();
    let mut session = match creds {
        Creds::Psk(psk) => DtlsClient::new(psk, MTU, now),
        Creds::Cert(cert) => DtlsClient::with_certificate(cert, gateway.ip(), MTU, now),
    }
    .map_err(failed)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut buf = vec![0u8; 65_536];
    let mut timer = flush(session.drain(), &outer).await;
    while !session.is_connected() {
        let wake = timer.unwrap_or(deadline).min(deadline);
        tokio::select! {
            got = outer.recv(&mut buf) => {
                let n = got?;
                session.handle_datagram(buf.get(..n).unwrap_or_default()).map_err(failed)?;
            }
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Err(failed("no handshake with the gateway (wrong key or identity?)"));
                }
                session.handle_timeout(Instant::now().into_std()).map_err(failed)?;
            }
        }
        timer = flush(session.drain(), &outer).await;
        if let Some(why) = session.refused() {
            return Err(failed(format!("the gateway's certificate: {why}")));
        }
    }
    Ok((session, outer, timer))
}

/// Carries the established session: plaintext from the client's socket is
/// encrypted to the gateway, records from the gateway decrypted back to it.
/// Ends when the session fails or the gateway closes it.
async fn carry(
    mut session: DtlsClient,
    outer: UdpSocket,
    inner: UdpSocket,
    mut timer: Option<Instant>,
) {
    let mut client: Option<SocketAddr> = None;
    let mut up = vec![0u8; 65_536];
    let mut down = vec![0u8; 65_536];
    loop {
        let wake = timer.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let result = tokio::select! {
            got = inner.recv_from(&mut up) => match got {
                Ok((n, from)) => {
                    client = Some(from);
                    session.send(up.get(..n).unwrap_or_default())
                }
                Err(_) => return,
            },
            got = outer.recv(&mut down) => match got {
                Ok(n) => session.handle_datagram(down.get(..n).unwrap_or_default()),
                // ICMP (the gateway went away): the next send tells.
                Err(_) => Ok(()),
            },
            () = tokio::time::sleep_until(wake) => session.handle_timeout(Instant::now().into_std()),
        };
        if let Err(e) = result {
            debug!(error = %e, "DTLS session ended");
            return;
        }
        let out = session.drain();
        if let Some(to) = client {
            for p in &out.plaintext {
                let _ = inner.send_to(p, to).await;
            }
        }
        timer = flush(out, &outer).await;
        if session.is_closed() {
            return;
        }
    }
}
