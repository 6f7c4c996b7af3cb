//! Durable state on disk: the engine's [`StoreOp`]s committed in batches, and
//! what was committed read back at start-up.
//!
//! The store is fjall (an LSM tree with a write-ahead journal), chosen by the
//! bytes it writes per durable commit — an SD card wears out: one small
//! commit costs about 5 KB on disk with fjall against 23 KB with SQLite (WAL,
//! synchronous = FULL) and 33 KB with redb (docs/performance.md, "Choosing
//! the store"). Each batch is one atomic write batch synced with
//! `fdatasync`, so a batch is on disk entirely or not at all.
//!
//! Layout, one keyspace per kind of record, values in postcard:
//! - `sessions`: kind byte + client id → [`SessionRecord`], a session's
//!   head (written before items existed: the whole record, topics and
//!   subscriptions inside; still read, and rewritten as head + items the
//!   first time the session changes);
//! - `session_items`: kind byte + client id length (u16, big-endian) +
//!   client id + `t` + topic id (u16, big-endian) → the topic name's bytes,
//!   or … + `s` + filter → the granted QoS (one byte): one key per topic id
//!   and per subscription, so a REGISTER or SUBSCRIBE writes its own item
//!   and not the session;
//! - `queued`: id (u64, big-endian) → [`QueuedRecord`];
//! - `retained`: topic → [`StoredMessage`];
//! - `dead_letters`: sequence (u64, big-endian) → the bridge's
//!   [`DeadLetter`] (the last [`DEAD_LETTERS_KEPT`] are kept);
//! - `outbox`: id (u64, big-endian) → [`OutboxRecord`] (a bare
//!   [`StoredMessage`] in stores written before per-device sessions, still
//!   read) — big-endian ids iterate in order, so the outbox replays oldest
//!   first.
//!
//! The store is opened by one process at a time (fjall locks the
//! directory). A store that cannot be read is moved aside and a new one
//! started (see [`Store::open`]), so a corrupt file never causes a crash
//! loop.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use crate::bridge::DeadLetter;
use crate::core::{
    ClientKey, ClientKind, OutboxRecord, Restored, SessionRecord, StoreOp, StoredMessage,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created or used.
    #[error("cannot use the state directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store engine failed (I/O, a locked directory, corruption).
    #[error("store {dir}: {source}")]
    Engine {
        /// The store's directory.
        dir: PathBuf,
        /// fjall's error.
        source: fjall::Error,
    },
    /// A record did not decode.
    #[error("store {dir}: a {what} record does not decode: {source}")]
    Record {
        /// The store's directory.
        dir: PathBuf,
        /// Which kind of record.
        what: &'static str,
        /// The decoding error.
        source: postcard::Error,
    },
}

/// What the store held at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// For the engine.
    pub restored: Restored,
    /// The upstream outbox, oldest first: (id, message).
    pub outbox: Vec<(u64, OutboxRecord)>,
    /// The bridge's last dead letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
}

/// Sizes of one committed batch, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Records written or deleted.
    pub records: usize,
    /// Encoded value bytes written.
    pub bytes: usize,
}

/// One raw record: key and value bytes.
type KeyValue = (Vec<u8>, Vec<u8>);

/// The open store.
pub struct Store {
    dir: PathBuf,
    db: Database,
    sessions: Keyspace,
    items: Keyspace,
    queued: Keyspace,
    retained: Keyspace,
    outbox: Keyspace,
    dead_letters: Keyspace,
    /// The next dead letter's sequence number.
    next_dead: std::sync::atomic::AtomicU64,
}

/// How many dead letters the store keeps (the oldest go first).
pub const DEAD_LETTERS_KEPT: u64 = 32;

/// The store's own directory inside the state directory.
const STORE_SUBDIR: &str = "store";
/// Memtable per keyspace: bounds the RAM the store holds before flushing.
const MEMTABLE_BYTES: u64 = 4 << 20;
/// Block cache for reads (reads happen at start-up only).
const CACHE_BYTES: u64 = 4 << 20;

impl Store {
    /// Opens (or creates) the store under `state_dir` and reads everything
    /// back. A store that cannot be opened or read because its data is
    /// corrupt is renamed to `store.corrupt-N` (kept for inspection) and a
    /// fresh one started, with an error in the log; a directory that cannot
    /// be created, or one locked by another sngate, is an error.
    pub fn open(state_dir: &Path) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Dir {
            dir: state_dir.to_owned(),
            source,
        })?;
        let dir = state_dir.join(STORE_SUBDIR);
        match Store::open_at(&dir).and_then(|store| {
            let loaded = store.load()?;
            Ok((store, loaded))
        }) {
            Ok(opened) => Ok(opened),
            Err(e) if is_corruption(&e) => {
                let aside = aside_name(state_dir);
                error!(error = %e, moved_to = %aside.display(), "the store is unreadable; starting a new one");
                std::fs::rename(&dir, &aside).map_err(|source| StoreError::Dir {
                    dir: dir.clone(),
                    source,
                })?;
                let store = Store::open_at(&dir)?;
                Ok((store, Loaded::default()))
            }
            Err(e) => Err(e),
        }
    }

    fn open_at(dir: &Path) -> Result<Store, StoreError> {
        let engine = |source| StoreError::Engine {
            dir: dir.to_owned(),
            source,
        };
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .worker_threads(1)
            .open()
            .map_err(engine)?;
        let ks = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(engine)
        };
        Ok(Store {
            sessions: ks("sessions")?,
            items: ks("session_items")?,
            queued: ks("queued")?,
            retained: ks("retained")?,
            outbox: ks("outbox")?,
            dead_letters: ks("dead_letters")?,
            next_dead: std::sync::atomic::AtomicU64::new(0),
            db,
            dir: dir.to_owned(),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        for (key, value) in self.scan(&self.sessions)? {
            let Some(key) = decode_client_key(&key) else {
                warn!("skipping a session record with an unreadable key");
                continue;
            };
            let record = decode_session(&value).map_err(|source| StoreError::Record {
                dir: self.dir.clone(),
                what: "session",
                source,
            })?;
            loaded.restored.sessions.push((key, record));
        }
        for (key, value) in self.scan(&self.items)? {
            match decode_item(&key, &value) {
                Some((owner, Item::Topic(id, name))) => {
                    loaded.restored.topics.push((owner, id, name));
                }
                Some((owner, Item::Subscription(filter, qos))) => {
                    loaded.restored.subscriptions.push((owner, filter, qos));
                }
                Some((owner, Item::InboundQos2(msg_id))) => {
                    loaded.restored.inbound_qos2.push((owner, msg_id));
                }
                None => warn!("skipping an unreadable session item"),
            }
        }
        for (key, value) in self.scan(&self.queued)? {
            let id = decode_id(&key);
            loaded.restored.max_id = loaded.restored.max_id.max(id);
            loaded
                .restored
                .queued
                .push((id, self.decode(&value, "queued message")?));
        }
        for (key, value) in self.scan(&self.retained)? {
            let topic = String::from_utf8_lossy(&key).into_owned();
            loaded
                .restored
                .retained
                .push((topic, self.decode(&value, "retained message")?));
        }
        for (key, value) in self.scan(&self.outbox)? {
            let id = decode_id(&key);
            loaded.restored.max_id = loaded.restored.max_id.max(id);
            let record = decode_outbox(&value).map_err(|source| StoreError::Record {
                dir: self.dir.clone(),
                what: "outbox message",
                source,
            })?;
            loaded.outbox.push((id, record));
        }
        for (key, value) in self.scan(&self.dead_letters)? {
            let seq = decode_id(&key);
            self.next_dead
                .fetch_max(seq + 1, std::sync::atomic::Ordering::Relaxed);
            // A record this version cannot read is skipped, not fatal.
            if let Ok(letter) = postcard::from_bytes::<DeadLetter>(&value) {
                loaded.dead_letters.push(letter);
            }
        }
        info!(
            dir = %self.dir.display(),
            sessions = loaded.restored.sessions.len(),
            session_items = loaded.restored.topics.len() + loaded.restored.subscriptions.len(),
            queued = loaded.restored.queued.len(),
            retained = loaded.restored.retained.len(),
            outbox = loaded.outbox.len(),
            "store opened"
        );
        Ok(loaded)
    }

    fn scan(&self, ks: &Keyspace) -> Result<Vec<KeyValue>, StoreError> {
        ks.iter()
            .map(|guard| {
                guard
                    .into_inner()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|source| StoreError::Engine {
                        dir: self.dir.clone(),
                        source,
                    })
            })
            .collect()
    }

    fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &'static str,
    ) -> Result<T, StoreError> {
        postcard::from_bytes(bytes).map_err(|source| StoreError::Record {
            dir: self.dir.clone(),
            what,
            source,
        })
    }

    /// Writes `ops` and forgets the `settled` outbox ids in one atomic,
    /// synced batch. Blocking (an fdatasync): call it off the async threads.
    pub fn commit(&self, ops: &[StoreOp], settled: &[u64]) -> Result<CommitStats, StoreError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut stats = CommitStats {
            records: ops.len() + settled.len(),
            bytes: 0,
        };
        let mut put =
            |batch: &mut fjall::OwnedWriteBatch, ks: &Keyspace, key: Vec<u8>, bytes: Vec<u8>| {
                stats.bytes += bytes.len();
                batch.insert(ks, key, bytes);
            };
        for op in ops {
            match op {
                StoreOp::PutSession(key, record) => put(
                    &mut batch,
                    &self.sessions,
                    encode_client_key(key),
                    record.encode(),
                ),
                StoreOp::DelSession(key) => batch.remove(&self.sessions, encode_client_key(key)),
                StoreOp::PutTopic(key, id, name) => put(
                    &mut batch,
                    &self.items,
                    topic_item_key(key, *id),
                    name.as_bytes().to_vec(),
                ),
                StoreOp::DelTopic(key, id) => batch.remove(&self.items, topic_item_key(key, *id)),
                StoreOp::PutSubscription(key, filter, qos) => put(
                    &mut batch,
                    &self.items,
                    subscription_item_key(key, filter),
                    vec![*qos],
                ),
                StoreOp::DelSubscription(key, filter) => {
                    batch.remove(&self.items, subscription_item_key(key, filter))
                }
                StoreOp::PutInboundQos2(key, msg_id) => put(
                    &mut batch,
                    &self.items,
                    inbound_qos2_item_key(key, *msg_id),
                    Vec::new(),
                ),
                StoreOp::DelInboundQos2(key, msg_id) => {
                    batch.remove(&self.items, inbound_qos2_item_key(key, *msg_id))
                }
                StoreOp::PutQueued(id, record) => put(
                    &mut batch,
                    &self.queued,
                    id.to_be_bytes().to_vec(),
                    record.encode(),
                ),
                StoreOp::DelQueued(id) => batch.remove(&self.queued, id.to_be_bytes().to_vec()),
                StoreOp::PutRetained(topic, msg) => put(
                    &mut batch,
                    &self.retained,
                    topic.as_bytes().to_vec(),
                    msg.encode(),
                ),
                StoreOp::DelRetained(topic) => {
                    batch.remove(&self.retained, topic.as_bytes().to_vec())
                }
                StoreOp::PutOutbox(id, msg) => put(
                    &mut batch,
                    &self.outbox,
                    id.to_be_bytes().to_vec(),
                    msg.encode(),
                ),
            }
        }
        for id in settled {
            batch.remove(&self.outbox, id.to_be_bytes().to_vec());
        }
        batch.commit().map_err(|source| StoreError::Engine {
            dir: self.dir.clone(),
            source,
        })?;
        Ok(stats)
    }
}

impl Store {
    /// Appends dead letters (synced), keeping the last
    /// [`DEAD_LETTERS_KEPT`]. Blocking: call it off the async threads.
    pub fn put_dead_letters(&self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for letter in letters {
            let seq = self.next_dead.fetch_add(1, Ordering::Relaxed);
            batch.insert(
                &self.dead_letters,
                seq.to_be_bytes().to_vec(),
                letter.encode(),
            );
            if let Some(old) = seq.checked_sub(DEAD_LETTERS_KEPT) {
                batch.remove(&self.dead_letters, old.to_be_bytes().to_vec());
            }
        }
        batch.commit().map_err(|source| StoreError::Engine {
            dir: self.dir.clone(),
            source,
        })
    }
}

/// A record the store can encode, whatever its type.
trait ErasedRecord {
    fn encode(&self) -> Vec<u8>;
}

impl<T: Serialize> ErasedRecord for T {
    fn encode(&self) -> Vec<u8> {
        // Serializing plain structs into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

fn encode_client_key(key: &ClientKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.client_id.len());
    out.push(kind_byte(key.kind));
    out.extend_from_slice(key.client_id.as_bytes());
    out
}

fn decode_client_key(bytes: &[u8]) -> Option<ClientKey> {
    let (&kind, id) = bytes.split_first()?;
    let kind = kind_of(kind)?;
    Some(ClientKey {
        kind,
        client_id: String::from_utf8(id.to_vec()).ok()?,
    })
}

/// A session item as read back.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    /// A topic id and its name.
    Topic(u16, String),
    /// A filter and its granted QoS.
    Subscription(String, u8),
    /// A device's unreleased inbound QoS 2 MsgId.
    InboundQos2(u16),
}

/// An item's key: its owner (length-prefixed, so one client id is never a
/// prefix of another's items), a tag, and the item's own key.
fn item_key(owner: &ClientKey, tag: u8, rest: &[u8]) -> Vec<u8> {
    let id = owner.client_id.as_bytes();
    let mut out = Vec::with_capacity(4 + id.len() + rest.len());
    out.push(kind_byte(owner.kind));
    // Client ids are short (`max_client_id_len`); a longer one is cut in
    // the length only, which no real id reaches.
    out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(id);
    out.push(tag);
    out.extend_from_slice(rest);
    out
}

fn topic_item_key(owner: &ClientKey, id: u16) -> Vec<u8> {
    item_key(owner, b't', &id.to_be_bytes())
}

fn subscription_item_key(owner: &ClientKey, filter: &str) -> Vec<u8> {
    item_key(owner, b's', filter.as_bytes())
}

fn inbound_qos2_item_key(owner: &ClientKey, msg_id: u16) -> Vec<u8> {
    item_key(owner, b'q', &msg_id.to_be_bytes())
}

fn decode_item(key: &[u8], value: &[u8]) -> Option<(ClientKey, Item)> {
    let (&kind, rest) = key.split_first()?;
    let kind = kind_of(kind)?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (id, rest) = rest.split_at_checked(len)?;
    let owner = ClientKey {
        kind,
        client_id: String::from_utf8(id.to_vec()).ok()?,
    };
    let (&tag, rest) = rest.split_first()?;
    let item = match tag {
        b't' => Item::Topic(
            u16::from_be_bytes(*rest.first_chunk::<2>()?),
            String::from_utf8(value.to_vec()).ok()?,
        ),
        b's' => Item::Subscription(String::from_utf8(rest.to_vec()).ok()?, *value.first()?),
        b'q' => Item::InboundQos2(u16::from_be_bytes(*rest.first_chunk::<2>()?)),
        _ => return None,
    };
    Some((owner, item))
}

fn kind_byte(kind: ClientKind) -> u8 {
    match kind {
        ClientKind::Device => b'd',
        ClientKind::Local => b'l',
    }
}

fn kind_of(byte: u8) -> Option<ClientKind> {
    match byte {
        b'd' => Some(ClientKind::Device),
        b'l' => Some(ClientKind::Local),
        _ => None,
    }
}

/// A session head as stores written before the DTLS identity binding hold
/// it: postcard reads fields in order, so a record without the last field
/// is an error for [`SessionRecord`], not a default.
#[derive(serde::Deserialize)]
struct SessionRecordBeforeIdentity {
    clean: bool,
    asleep: bool,
    sleep_secs: u64,
    keep_alive_secs: u64,
    topics: Vec<(u16, String)>,
    subscriptions: Vec<(String, u8)>,
    predefined_subscriptions: Vec<u16>,
    will: Option<crate::core::persist::StoredWill>,
    last_msg_id: u16,
}

/// A session head: a [`SessionRecord`], or one written before it carried
/// the identity (read as bound to none).
pub(crate) fn decode_session(value: &[u8]) -> Result<SessionRecord, postcard::Error> {
    postcard::from_bytes::<SessionRecord>(value).or_else(|_| {
        postcard::from_bytes::<SessionRecordBeforeIdentity>(value).map(|r| SessionRecord {
            clean: r.clean,
            asleep: r.asleep,
            sleep_secs: r.sleep_secs,
            keep_alive_secs: r.keep_alive_secs,
            topics: r.topics,
            subscriptions: r.subscriptions,
            predefined_subscriptions: r.predefined_subscriptions,
            will: r.will,
            last_msg_id: r.last_msg_id,
            identity: None,
        })
    })
}

/// An outbox value: an [`OutboxRecord`], or a bare [`StoredMessage`] as
/// stores written before per-device sessions hold (sent by the shared
/// session).
pub(crate) fn decode_outbox(value: &[u8]) -> Result<OutboxRecord, postcard::Error> {
    postcard::from_bytes::<OutboxRecord>(value).or_else(|_| {
        postcard::from_bytes::<StoredMessage>(value).map(|message| OutboxRecord {
            message,
            device: None,
        })
    })
}

fn decode_id(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(bytes)
}

/// Errors that mean the data is unreadable (as opposed to a locked or
/// unwritable directory, which a fresh store would not fix).
fn is_corruption(e: &StoreError) -> bool {
    match e {
        StoreError::Record { .. } => true,
        StoreError::Engine { source, .. } => matches!(
            source,
            fjall::Error::Storage(_)
                | fjall::Error::JournalRecovery(_)
                | fjall::Error::InvalidVersion(_)
                | fjall::Error::Decompress(_)
                | fjall::Error::InvalidTrailer
                | fjall::Error::InvalidTag(_)
                | fjall::Error::Unrecoverable
        ),
        StoreError::Dir { .. } => false,
    }
}

fn aside_name(state_dir: &Path) -> PathBuf {
    (1..)
        .map(|n| state_dir.join(format!("{STORE_SUBDIR}.corrupt-{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| state_dir.join(format!("{STORE_SUBDIR}.corrupt")))
}

#[cfg(test)]
mod tests;
