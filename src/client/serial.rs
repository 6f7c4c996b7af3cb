//! A client's serial link: opens the port with the gateway's own settings
//! (`transport::serial::open`), frames outgoing messages with the pure codecs
//! of `transport::framing` and cuts the incoming byte stream back into
//! messages, so the rest of the client sees datagrams as on UDP.
//!
//! Writing goes through a writer task fed by a bounded channel, so a request
//! that is cancelled (a timeout around it) never leaves half a frame on the
//! line, and the client and its receive task can both send.

use std::io;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_serial::SerialStream;
use tracing::debug;

use super::ClientError;
use crate::config::{SerialConfig, SerialFraming};
use crate::transport::framing::{self, Deframer, Framer, Inbound};

/// The largest MQTT-SN message a client sends or accepts over a serial link.
/// Radio frames are far smaller; this bounds the deframer's buffer.
pub const SERIAL_MAX_FRAME: usize = 4096;

/// Framed messages waiting for the writer task.
const WRITE_QUEUE: usize = 64;

/// The radio address of the coordinator, where the gateway's XBee sits
/// (Zigbee: the 64-bit destination 0 is the coordinator).
const COORDINATOR: u64 = 0;

/// The sending half: a framer and the writer task's queue.
#[derive(Debug)]
pub(super) struct SerialTx {
    framer: Mutex<FramerBox>,
    to: Option<u64>,
    frames: mpsc::Sender<Bytes>,
    writer: JoinHandle<()>,
}

/// `Box<dyn Framer>` with a `Debug` the structs around it can derive.
struct FramerBox(Box<dyn Framer>);

impl std::fmt::Debug for FramerBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Framer")
    }
}

impl Drop for SerialTx {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl SerialTx {
    /// Frames `message` and queues it for the port, waiting while the queue
    /// is full (the radio is slower than the client).
    pub async fn send(&self, message: &[u8]) -> Result<(), ClientError> {
        let framed = {
            let mut out = BytesMut::with_capacity(message.len() + 32);
            let mut framer = self
                .framer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            framer.0.encode(self.to, message, &mut out)?;
            out.freeze()
        };
        self.frames
            .send(framed)
            .await
            .map_err(|_| ClientError::Closed)
    }
}

/// The receiving half: the port's read side and its deframer.
pub(super) struct SerialRx {
    reader: ReadHalf<SerialStream>,
    deframer: Box<dyn Deframer>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for SerialRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SerialRx")
    }
}

impl SerialRx {
    /// The next MQTT-SN message from the port, copied into `out`. Cancel
    /// safe: bytes read are in the deframer before the next `.await`.
    pub async fn recv(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            while let Some(frame) = self.deframer.next() {
                match frame {
                    Ok(Inbound::Message { bytes, .. }) => {
                        let Some(dst) = out.get_mut(..bytes.len()) else {
                            debug!(len = bytes.len(), "client: serial message too large");
                            continue;
                        };
                        dst.copy_from_slice(&bytes);
                        return Ok(bytes.len());
                    }
                    Ok(Inbound::TxStatus { frame_id, status }) => {
                        if status != 0 {
                            debug!(
                                frame_id,
                                status, "client: the XBee reports a failed transmission"
                            );
                        }
                    }
                    Err(e) => debug!(error = %e, "client: dropped serial input"),
                }
            }
            let n = self.reader.read(&mut self.buf).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the serial port closed",
                ));
            }
            self.deframer.push(self.buf.get(..n).unwrap_or_default());
        }
    }
}

/// Opens the port and starts its writer task. Must run inside a tokio runtime.
pub(super) fn open(port: &SerialConfig) -> Result<(SerialTx, SerialRx), ClientError> {
    let stream =
        crate::transport::serial::open(port).map_err(|source| ClientError::SerialOpen {
            device: port.device.clone(),
            source,
        })?;
    let kind = crate::transport::serial::framing_kind(port);
    let (reader, writer) = tokio::io::split(stream);
    let (frames, queue) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_frames(writer, queue));
    let to = (port.framing == SerialFraming::Xbee).then_some(COORDINATOR);
    Ok((
        SerialTx {
            framer: Mutex::new(FramerBox(framing::framer(kind, SERIAL_MAX_FRAME))),
            to,
            frames,
            writer,
        },
        SerialRx {
            reader,
            deframer: framing::deframer(kind, SERIAL_MAX_FRAME),
            buf: vec![0u8; 4096],
        },
    ))
}

/// Writes one framed message to `port` and returns once it is written: how a
/// connection-less QoS −1 PUBLISH leaves over a serial link.
pub(super) async fn send_once(port: &SerialConfig, message: &[u8]) -> Result<(), ClientError> {
    let mut stream =
        crate::transport::serial::open(port).map_err(|source| ClientError::SerialOpen {
            device: port.device.clone(),
            source,
        })?;
    let kind = crate::transport::serial::framing_kind(port);
    let to = (port.framing == SerialFraming::Xbee).then_some(COORDINATOR);
    let mut out = BytesMut::new();
    framing::framer(kind, SERIAL_MAX_FRAME).encode(to, message, &mut out)?;
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

/// Writes queued frames until the queue closes or a write fails.
async fn write_frames(mut writer: WriteHalf<SerialStream>, mut frames: mpsc::Receiver<Bytes>) {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = writer.write_all(&frame).await {
            debug!(error = %e, "client: serial write failed; the writer stops");
            return;
        }
    }
}
