//! Egress: carrying out one engine [`Output`] — encoding a packet for a
//! device (1.2, wrapped in an encapsulation when it goes through a
//! forwarder, or 2.0),
//! choosing the socket or serial link it leaves by (a broadcast goes to the
//! discovery group, the requester's link, or every serial port), and handing
//! commands to the bridge and actions to the embedded broker.
//!
//! Called by `feed.rs` only once the batch's records are committed.

use bytes::Bytes;
use tracing::{debug, warn};

use super::task::Driver;
use crate::core::{LinkAddr, Output, Peer};
use crate::proto::{self, Packet};

impl Driver {
    /// Carries out one output of the engine.
    pub(super) async fn carry_out(&mut self, output: Output) {
        match output {
            Output::Transmit { to, packet } => self.send(&to, packet).await,
            Output::TransmitV2 { to, packet } => self.send_v2(&to, &packet).await,
            Output::Broadcast {
                packet, requester, ..
            } => self.broadcast(packet, requester).await,
            Output::Upstream(cmd) => match &mut self.bridge {
                Some(bridge) => bridge.send(cmd),
                None => debug!(?cmd, "no upstream bridge; command dropped"),
            },
            Output::Local { conn, action } => match &mut self.broker {
                Some(broker) => broker.dispatch(conn, action),
                None => debug!(%conn, "no embedded broker; action dropped"),
            },
        }
    }

    /// ADVERTISE or GWINFO: to the discovery group, and to the requester
    /// (or, for ADVERTISE, every serial link).
    async fn broadcast(&mut self, packet: Packet, requester: Option<Peer>) {
        if let Some(group) = self.advertise_group
            && let Some(listener) = self
                .listeners
                .iter()
                .find(|l| l.local_addr.is_ipv4() == group.is_ipv4())
        {
            let to = Peer::udp_on(listener.index, group);
            self.send(&to, packet.clone()).await;
        }
        match requester {
            // GWINFO to a radio goes to the link's broadcast address (v1.2
            // §6.1; other devices hear it too).
            Some(Peer {
                link: LinkAddr::Radio { port, .. },
                node: None,
            }) => self.send(&Peer::serial(port), packet).await,
            Some(requester) => self.send(&requester, packet).await,
            // ADVERTISE: every serial link too (XBee: the broadcast
            // address).
            None => {
                for i in 0..self.serial_links.len() {
                    let port = u16::try_from(i).unwrap_or(u16::MAX);
                    self.send(&Peer::serial(port), packet.clone()).await;
                }
            }
        }
    }

    /// Hands the encoded message in `scratch` to serial port `port`.
    fn send_serial(&self, port: u16, addr: Option<u64>, to: &Peer) {
        match self.serial_links.get(usize::from(port)) {
            Some(link) => link.send(addr, Bytes::copy_from_slice(&self.scratch)),
            None => debug!(%to, "no such serial port"),
        }
    }

    /// Encodes `packet` for `to` (encapsulated for a forwarded node) and
    /// sends it on the link `to` names.
    async fn send(&mut self, to: &Peer, packet: Packet) {
        let packet = match &to.node {
            Some(node) => Packet::Encapsulated {
                radius: 0,
                node_id: node.clone(),
                inner: Box::new(packet),
            },
            None => packet,
        };
        self.scratch.clear();
        if let Err(e) = proto::encode(&packet, &mut self.scratch) {
            warn!(%to, error = %e, "cannot encode an outgoing message");
            return;
        }
        self.send_scratch(to).await;
    }

    /// Encodes an MQTT-SN 2.0 `packet` and sends it on the link `to` names
    /// (the engine sends 2.0 only to devices that are not behind a forwarder).
    async fn send_v2(&mut self, to: &Peer, packet: &sngate_wire::v2::Packet) {
        self.scratch.clear();
        if to.node.is_some() {
            warn!(%to, "no 2.0 forwarder encapsulation yet; message dropped");
            return;
        }
        if let Err(e) = sngate_wire::v2::encode(packet, &mut self.scratch) {
            warn!(%to, error = %e, "cannot encode an outgoing 2.0 message");
            return;
        }
        self.send_scratch(to).await;
    }

    /// Sends the encoded message in `scratch` on the link `to` names.
    async fn send_scratch(&mut self, to: &Peer) {
        match &to.link {
            LinkAddr::Udp { listener, addr } => {
                let Some(l) = self.listeners.get(usize::from(*listener)) else {
                    // A DTLS listener: its task encrypts and sends.
                    let dtls = usize::from(*listener).checked_sub(self.listeners.len());
                    if let Some(link) = dtls.and_then(|i| self.dtls_links.get(i))
                        && !link.send(*addr, Bytes::copy_from_slice(&self.scratch))
                    {
                        debug!(%to, "DTLS listener queue full; message dropped");
                    }
                    return;
                };
                let sent = l.send_to(&self.scratch, *addr).await;
                self.ops.sent(*listener, sent.is_ok());
                if let Err(e) = sent {
                    debug!(%to, error = %e, "UDP send failed");
                }
            }
            // A radio by its address; the port itself (XBee: broadcast).
            LinkAddr::Radio { port, addr } => self.send_serial(*port, Some(*addr), to),
            LinkAddr::Serial { port } => self.send_serial(*port, None, to),
        }
    }
}
