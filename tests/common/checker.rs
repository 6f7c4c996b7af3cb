//! A plain MQTT 3.1.1 client (rumqttc) on a real broker, for tests that
//! watch what arrives there and publish into it.

#![allow(dead_code)] // each test file uses a different subset

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::WAIT;

/// A plain MQTT 3.1.1 client on the broker, to watch and to publish.
pub struct Checker {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Packet>,
    messages: VecDeque<(String, Bytes, bool)>,
    task: JoinHandle<()>,
}

impl Checker {
    pub async fn connect(port: u16, id: &str) -> Checker {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut event_loop) = AsyncClient::new(opts, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = event_loop.poll().await {
                if let Event::Incoming(p) = ev
                    && tx.send(p).is_err()
                {
                    break;
                }
            }
        });
        let mut c = Checker {
            client,
            events,
            messages: VecDeque::new(),
            task,
        };
        c.wait_for(|p| matches!(p, Packet::ConnAck(_)), "CONNACK")
            .await;
        c
    }

    async fn wait_for(&mut self, want: impl Fn(&Packet) -> bool, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let p = timeout(deadline - Instant::now(), self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("checker: no {what} in time"))
                .unwrap_or_else(|| panic!("checker: connection ended waiting for {what}"));
            let done = want(&p);
            if let Packet::Publish(m) = p {
                self.messages.push_back((m.topic, m.payload, m.retain));
            }
            if done {
                return;
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        self.wait_for(|p| matches!(p, Packet::SubAck(_)), "SUBACK")
            .await;
    }

    pub async fn publish(&mut self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish");
        self.wait_for(|p| matches!(p, Packet::PubAck(_)), "PUBACK")
            .await;
    }

    /// The next message received, within `WAIT`.
    pub async fn next(&mut self) -> (String, String, bool) {
        if self.messages.is_empty() {
            self.wait_for(|p| matches!(p, Packet::Publish(_)), "message")
                .await;
        }
        let (t, p, r) = self.messages.pop_front().expect("a message");
        (t, String::from_utf8_lossy(&p).into_owned(), r)
    }

    /// Messages received within `for_`, stopping early once `until` holds.
    pub async fn collect(
        &mut self,
        for_: Duration,
        until: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        let deadline = Instant::now() + for_;
        let mut got: Vec<(String, String)> = Vec::new();
        loop {
            while let Some((t, p, _)) = self.messages.pop_front() {
                got.push((t, String::from_utf8_lossy(&p).into_owned()));
            }
            if until(&got) {
                return got;
            }
            match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.events.recv(),
            )
            .await
            {
                Ok(Some(Packet::Publish(m))) => {
                    self.messages.push_back((m.topic, m.payload, m.retain))
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return got,
            }
        }
    }

    /// Messages received until one on `last` arrives (included), as
    /// (topic, payload as text).
    pub async fn until_topic(&mut self, last: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        loop {
            if let Some((t, p, _)) = self.messages.pop_front() {
                let done = t == last;
                got.push((t, String::from_utf8_lossy(&p).into_owned()));
                if done {
                    return got;
                }
                continue;
            }
            self.wait_for(|p| matches!(p, Packet::Publish(_)), last)
                .await;
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
