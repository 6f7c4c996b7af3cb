//! Serial links (tokio-serial): one task per configured port opens it, turns
//! its byte stream into MQTT-SN datagrams with the port's framing codec
//! (`framing/`: XBee API, SLIP, raw), and writes the driver's outgoing
//! messages back, framed. A port that fails or disappears (a dongle pulled
//! out) is logged and reopened with backoff until it is back; its devices go
//! through the engine's normal keep-alive and sleep supervision meanwhile.
//!
//! Peers: on an XBee link every remote radio address is its own peer
//! (`LinkAddr::Radio`); on SLIP and raw links the port is one peer
//! (`LinkAddr::Serial`), and devices behind a forwarder are told apart by the
//! wireless node id of the encapsulation, as on UDP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_serial::SerialPortBuilderExt;
use tracing::{debug, info, warn};

use super::framing::{self, FramingKind, Inbound, XbeeOptions};
use super::{Batch, Datagram};
use crate::config::{SerialConfig, SerialFlowControl, SerialFraming, SerialParity, XbeeTx};
use crate::core::{LinkAddr, Peer};

/// Messages waiting to be written to one port; beyond this the driver drops
/// (and counts) rather than wait for a slow radio.
const OUTGOING_QUEUE: usize = 256;

/// Framed messages handed to a port's writer task. The reader never waits for
/// the writer: when a radio stops taking bytes (CTS held, module hung), what
/// does not fit here is dropped and counted while reading carries on.
const WRITER_QUEUE: usize = 64;

/// A port that stayed open this long is considered healthy again: its next
/// failure starts the reopen backoff from the minimum.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// One message for a port: the radio address (`None`: broadcast, or the only
/// peer on raw/SLIP links) and the encoded MQTT-SN message.
pub type Outgoing = (Option<u64>, bytes::Bytes);

/// Counters for one serial port.
#[derive(Debug, Default)]
pub struct SerialStats {
    /// Frames received and handed to the engine.
    pub frames_in: AtomicU64,
    /// Frames written.
    pub frames_out: AtomicU64,
    /// Frames or bytes dropped on receive (bad checksum/CRC, oversize, garbage).
    pub dropped_in: AtomicU64,
    /// Outgoing messages dropped because the port's queue was full or the
    /// port was closed.
    pub dropped_out: AtomicU64,
    /// XBee transmit-status frames reporting a failed delivery.
    pub tx_failures: AtomicU64,
    /// Times the port was (re)opened.
    pub opens: AtomicU64,
}

/// A copy of one port's [`SerialStats`] at one moment, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SerialCounts {
    /// Frames received and handed to the engine.
    pub frames_in: u64,
    /// Frames written.
    pub frames_out: u64,
    /// Frames or bytes dropped on receive.
    pub dropped_in: u64,
    /// Outgoing messages dropped (queue full, port closed, unframeable).
    pub dropped_out: u64,
    /// XBee transmit-status frames reporting a failed delivery.
    pub tx_failures: u64,
    /// Times the port was (re)opened.
    pub opens: u64,
}

impl SerialStats {
    /// The counters right now.
    pub fn snapshot(&self) -> SerialCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SerialCounts {
            frames_in: get(&self.frames_in),
            frames_out: get(&self.frames_out),
            dropped_in: get(&self.dropped_in),
            dropped_out: get(&self.dropped_out),
            tx_failures: get(&self.tx_failures),
            opens: get(&self.opens),
        }
    }
}

/// The driver's handle to one serial port's task.
pub struct SerialLink {
    /// Index of the port in the configuration (carried in its peers).
    pub index: u16,
    /// The configured device.
    pub device: String,
    /// Whether peers on it are radio addresses (XBee) or the port itself.
    pub addressed: bool,
    outgoing: mpsc::Sender<Outgoing>,
    /// The port's counters.
    pub stats: Arc<SerialStats>,
    task: JoinHandle<()>,
}

impl SerialLink {
    /// Queues a message for the port; never waits. A full queue (a radio far
    /// slower than the gateway) drops it and counts it.
    pub fn send(&self, to: Option<u64>, message: bytes::Bytes) {
        if self.outgoing.try_send((to, message)).is_err() {
            self.stats.dropped_out.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stops the port's task.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Starts the task for port number `index`. Must be called inside a tokio
/// runtime. The port is opened at once; failures are retried with backoff.
pub fn spawn(
    index: u16,
    cfg: SerialConfig,
    inbound: mpsc::Sender<Batch>,
    max_frame: usize,
) -> SerialLink {
    let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE);
    let stats = Arc::new(SerialStats::default());
    let addressed = cfg.framing.has_radio_addresses();
    let device = cfg.device.clone();
    // `max_packet_bytes` bounds the message inside a forwarder's wrapper.
    let max_frame = max_frame + crate::proto::MAX_ENCAPSULATION_OVERHEAD;
    let task = tokio::spawn(run(
        index,
        cfg,
        inbound,
        queue,
        Arc::clone(&stats),
        max_frame,
    ));
    SerialLink {
        index,
        device,
        addressed,
        outgoing,
        stats,
        task,
    }
}

/// The framing codec settings for a port.
pub fn framing_kind(cfg: &SerialConfig) -> FramingKind {
    match cfg.framing {
        SerialFraming::Xbee => FramingKind::Xbee(XbeeOptions {
            escaped: cfg.xbee_escaped,
            tx: match cfg.xbee_tx {
                XbeeTx::Zigbee => framing::xbee::XbeeTx::Zigbee0x10,
                XbeeTx::Ieee64 => framing::xbee::XbeeTx::Ieee64_0x00,
                XbeeTx::Ieee16 => framing::xbee::XbeeTx::Ieee16_0x01,
            },
            // Set by the factories from their own argument.
            max_frame: 0,
        }),
        SerialFraming::Slip => FramingKind::Slip { crc: cfg.slip_crc },
        SerialFraming::Raw => FramingKind::Raw,
    }
}

/// Opens the port with `cfg`'s line settings (baud, data bits, parity, stop
/// bits, flow control), ready for tokio. Also used by the client tools.
pub fn open(cfg: &SerialConfig) -> tokio_serial::Result<tokio_serial::SerialStream> {
    tokio_serial::new(&cfg.device, cfg.baud)
        .data_bits(match cfg.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .parity(match cfg.parity {
            SerialParity::None => tokio_serial::Parity::None,
            SerialParity::Odd => tokio_serial::Parity::Odd,
            SerialParity::Even => tokio_serial::Parity::Even,
        })
        .stop_bits(if cfg.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        })
        .flow_control(match cfg.flow_control {
            SerialFlowControl::None => tokio_serial::FlowControl::None,
            SerialFlowControl::Software => tokio_serial::FlowControl::Software,
            SerialFlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        })
        .open_native_async()
}

async fn run(
    index: u16,
    cfg: SerialConfig,
    inbound: mpsc::Sender<Batch>,
    mut queue: mpsc::Receiver<Outgoing>,
    stats: Arc<SerialStats>,
    max_frame: usize,
) {
    let min = Duration::from_secs(u64::from(cfg.reopen_min_secs));
    let max = Duration::from_secs(u64::from(cfg.reopen_max_secs));
    let mut delay = min;
    loop {
        match open(&cfg) {
            Ok(port) => {
                stats.opens.fetch_add(1, Ordering::Relaxed);
                info!(device = %cfg.device, baud = cfg.baud, framing = ?cfg.framing, "serial port open");
                let opened = tokio::time::Instant::now();
                let why = serve(index, &cfg, port, &inbound, &mut queue, &stats, max_frame).await;
                if inbound.is_closed() {
                    return;
                }
                // A port that fails right after opening keeps backing off.
                if opened.elapsed() >= HEALTHY_AFTER {
                    delay = min;
                }
                warn!(device = %cfg.device, reason = %why, retry_in = ?delay, "serial port lost; reopening");
            }
            Err(e) => {
                warn!(device = %cfg.device, error = %e, retry_in = ?delay, "cannot open serial port");
            }
        }
        // Messages for a port that is not there are dropped, not kept for
        // later (the engine's retries and sleep buffers own redelivery): those
        // queued before the wait and those queued during it.
        drain_dropped(&mut queue, &stats);
        tokio::time::sleep(delay).await;
        drain_dropped(&mut queue, &stats);
        delay = (delay * 2).min(max);
    }
}

fn drain_dropped(queue: &mut mpsc::Receiver<Outgoing>, stats: &SerialStats) {
    while queue.try_recv().is_ok() {
        stats.dropped_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves one open port until it fails; returns why. Reading and writing are
/// independent: a writer task owns the write half, so a radio that stops
/// taking bytes never stops the gateway from reading the others' frames.
async fn serve(
    index: u16,
    cfg: &SerialConfig,
    port: tokio_serial::SerialStream,
    inbound: &mpsc::Sender<Batch>,
    queue: &mut mpsc::Receiver<Outgoing>,
    stats: &Arc<SerialStats>,
    max_frame: usize,
) -> String {
    let kind = framing_kind(cfg);
    let mut deframer = framing::deframer(kind, max_frame);
    let mut framer = framing::framer(kind, max_frame);
    let (mut reader, writer) = tokio::io::split(port);
    let (to_writer, for_writer) = mpsc::channel::<bytes::Bytes>(WRITER_QUEUE);
    let mut writer_task = tokio::spawn(write_frames(writer, for_writer, Arc::clone(stats)));
    let mut buf = vec![0u8; 4096];
    let mut out = BytesMut::with_capacity(max_frame + 64);
    let why = loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => break "end of stream".to_owned(),
                    Ok(n) => n,
                    Err(e) => break e.to_string(),
                };
                deframer.push(buf.get(..n).unwrap_or_default());
                while let Some(frame) = deframer.next() {
                    match frame {
                        Ok(Inbound::Message { from, bytes }) => {
                            stats.frames_in.fetch_add(1, Ordering::Relaxed);
                            let link = match from {
                                Some(addr) => LinkAddr::Radio { port: index, addr },
                                None => LinkAddr::Serial { port: index },
                            };
                            let datagram = Datagram { peer: Peer { link, node: None }, bytes, auth: None };
                            if inbound.send(vec![datagram]).await.is_err() {
                                writer_task.abort();
                                return "gateway stopped".to_owned();
                            }
                        }
                        Ok(Inbound::TxStatus { frame_id, status }) => {
                            if status != 0 {
                                stats.tx_failures.fetch_add(1, Ordering::Relaxed);
                                warn!(device = %cfg.device, frame_id, status, "XBee reports a failed transmission");
                            }
                        }
                        Err(e) => {
                            stats.dropped_in.fetch_add(1, Ordering::Relaxed);
                            debug!(device = %cfg.device, error = %e, "dropped serial input");
                        }
                    }
                }
            }
            message = queue.recv() => {
                let Some((to, message)) = message else {
                    break "gateway stopped".to_owned();
                };
                out.clear();
                if let Err(e) = framer.encode(to, &message, &mut out) {
                    stats.dropped_out.fetch_add(1, Ordering::Relaxed);
                    debug!(device = %cfg.device, error = %e, "cannot frame an outgoing message");
                    continue;
                }
                if to_writer.try_send(out.split().freeze()).is_err() {
                    // The radio is not taking bytes fast enough (or at all).
                    stats.dropped_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            written = &mut writer_task => {
                break match written {
                    Ok(why) => why,
                    Err(e) => e.to_string(),
                };
            }
        }
    };
    writer_task.abort();
    why
}

/// Writes framed messages to the port until a write fails; returns why.
async fn write_frames(
    mut writer: tokio::io::WriteHalf<tokio_serial::SerialStream>,
    mut frames: mpsc::Receiver<bytes::Bytes>,
    stats: Arc<SerialStats>,
) -> String {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = writer.write_all(&frame).await {
            return e.to_string();
        }
        stats.frames_out.fetch_add(1, Ordering::Relaxed);
    }
    "port closed".to_owned()
}
