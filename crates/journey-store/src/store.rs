//! The RocksDB store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use journey_core::{
    ChangeRef, Engine, EngineMeta, Event, Identifier, Journey, Millis, StateChanges,
};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch,
    WriteBufferManager,
};
use tracing::warn;

use crate::{Error, Result, codec};

const CF_JOURNEYS: &str = "journeys";
const CF_IDENTITIES: &str = "identities";
const CF_META: &str = "meta";
/// Events held until the watermark passes them, by (event time, event id).
const CF_HELD: &str = "held";
/// Customers by key: all their identifiers (so that a customer is read
/// back whole).
const CF_CUSTOMERS: &str = "customers";
/// The timer index: one row per journey with a timer, keyed by (due time,
/// customer key), so that the journeys due are found without reading them
/// all. Local: derived from the journeys, not published to the changelog
/// (rebuilt from the journeys after a restore).
const CF_TIMERS: &str = "timers";
const CFS: [&str; 6] = [
    CF_JOURNEYS,
    CF_IDENTITIES,
    CF_META,
    CF_HELD,
    CF_CUSTOMERS,
    CF_TIMERS,
];
/// Changelog key prefixes, one per column family.
const TAG_JOURNEY: u8 = b'j';
const TAG_IDENTITY: u8 = b'i';
const TAG_META: u8 = b'm';
const TAG_HELD: u8 = b'h';
const TAG_CUSTOMER: u8 = b'c';
/// Rows of the timer index: written locally, never published.
const TAG_TIMER: u8 = b't';
const META_ENGINE: &[u8] = b"engine";
const META_OFFSETS: &[u8] = b"offsets";
const META_FORMAT: &[u8] = b"format";
const META_CHANGELOG_RESUME: &[u8] = b"changelog-resume";
/// Present when the customers column family agrees with the identities
/// (stores written before it existed get it built at load).
const META_CUSTOMER_INDEX: &[u8] = b"customer-index";
/// Present when the timer index agrees with the journeys (stores written
/// before it existed, and restored ones, get it built at load).
const META_TIMER_INDEX: &[u8] = b"timer-index";

/// Raw key/value rows of one column family.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Input offsets: next offset to read per (topic, partition).
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Memory budget, shared by all column families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Shared LRU block cache, bytes.
    pub block_cache_bytes: usize,
    /// Write-buffer (memtable) budget across column families, bytes.
    pub write_buffer_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 128 << 20,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// How the directory was found at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Nothing was there: an empty store.
    Fresh,
    /// A store of this format.
    Existing,
    /// The directory could not be used; it was moved aside and a fresh store made.
    Rebuilt {
        /// Where the old directory went.
        moved_to: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A record for the compacted changelog topic: `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    /// Column-family tag byte + key.
    pub key: Vec<u8>,
    /// Encoded value, or none for a deletion.
    pub value: Option<Vec<u8>>,
}

impl ChangelogRecord {
    /// Whether the record goes to the changelog topic. Rows of the local
    /// timer index do not (a restore rebuilds the index from the journeys);
    /// they are only written, in the same batch as the rest.
    pub fn is_published(&self) -> bool {
        self.key.first() != Some(&TAG_TIMER)
    }

    /// The column family the record is written to, and its key there
    /// (the key without its tag); none for an unknown tag.
    fn family_and_key(&self) -> Option<(&'static str, &[u8])> {
        let (&tag, key) = self.key.split_first()?;
        let cf = match tag {
            TAG_JOURNEY => CF_JOURNEYS,
            TAG_IDENTITY => CF_IDENTITIES,
            TAG_META => CF_META,
            TAG_HELD => CF_HELD,
            TAG_CUSTOMER => CF_CUSTOMERS,
            TAG_TIMER => CF_TIMERS,
            _ => return None,
        };
        Some((cf, key))
    }

    /// The name of the column family the record is written to (`journeys`,
    /// `identities`, `meta`, `held`, `customers`, `timers`); none for a
    /// record whose key has an unknown tag.
    pub fn column_family(&self) -> Option<&'static str> {
        self.family_and_key().map(|(cf, _)| cf)
    }

    /// The customer key a journey or timer-index record is about, if it is
    /// one of those.
    pub fn customer_key(&self) -> Option<&[u8]> {
        match self.key.split_first()? {
            (&TAG_JOURNEY, key) => Some(key),
            (&TAG_TIMER, rest) => rest.get(8..),
            _ => None,
        }
    }
}

/// Encoded changes, ready to publish (changelog) and to write (one batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// One record per state write.
    pub changelog: Vec<ChangelogRecord>,
}

/// Everything needed to rebuild an engine.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Journeys by customer key (empty from [`Store::load_index`]).
    pub journeys: Vec<(String, Journey)>,
    /// The journeys' timer entries (due, customer key), from the timer
    /// index; filled by [`Store::load_index`] only.
    pub timers: Vec<(journey_core::Millis, String)>,
    /// Identifier → key identifier.
    pub identities: Vec<(Identifier, Identifier)>,
    /// Engine-wide state.
    pub meta: EngineMeta,
    /// Events held until the watermark passes them (give them to
    /// [`Engine::hold_restored`]), in (event time, event id) order.
    pub held: Vec<Event>,
    /// Input offsets the state corresponds to.
    pub offsets: Offsets,
}

/// Sizes and memory use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Estimated journeys.
    pub journeys: u64,
    /// Estimated identifiers.
    pub identities: u64,
    /// Live SST bytes.
    pub sst_bytes: u64,
    /// Memtable bytes.
    pub memtable_bytes: u64,
    /// Block cache bytes in use.
    pub block_cache_bytes: u64,
}

/// The state store of one worker.
pub struct Store {
    db: DB,
    path: PathBuf,
    cache: Cache,
    /// Records restored from a changelog (see [`Store::apply_changelog`]).
    restored: std::sync::Mutex<Restored>,
}

/// Counts of records restored from a changelog since the indexes were last
/// checked: identities without customers come from a version that did not
/// write them, and the customer index is rebuilt; journeys restored always
/// have the timer index rebuilt (it is not in the changelog).
#[derive(Debug, Default, Clone, Copy)]
struct Restored {
    identities: u64,
    customers: u64,
    journeys: u64,
}

fn journey_record(key: &str, journey: Option<&Journey>) -> ChangelogRecord {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(TAG_JOURNEY);
    k.extend_from_slice(key.as_bytes());
    ChangelogRecord {
        key: k,
        value: journey.map(codec::encode),
    }
}

/// The key of a held event: its time, ordered as bytes (the sign bit
/// flipped, big-endian), then its id.
fn held_key((time, id): (Millis, &str)) -> Vec<u8> {
    timed_key(TAG_HELD, time, id)
}

/// `tag`, then `time` ordered as bytes (the sign bit flipped, big-endian),
/// then `rest`.
fn timed_key(tag: u8, time: Millis, rest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + rest.len());
    k.push(tag);
    k.extend_from_slice(&ordered_time(time));
    k.extend_from_slice(rest.as_bytes());
    k
}

fn ordered_time(time: Millis) -> [u8; 8] {
    ((time as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time of a key written by [`timed_key`] (without its tag).
fn parse_ordered_time(k: &[u8]) -> Option<Millis> {
    let bytes: [u8; 8] = k.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as Millis)
}

/// A row of the timer index: written (`set`) or deleted.
fn timer_record((due, key): (Millis, &str), set: bool) -> ChangelogRecord {
    ChangelogRecord {
        key: timed_key(TAG_TIMER, due, key),
        value: set.then(|| codec::encode(&())),
    }
}

fn held_record(slot: (Millis, &str), event: Option<&Event>) -> ChangelogRecord {
    ChangelogRecord {
        key: held_key(slot),
        value: event.map(codec::encode),
    }
}

/// The identity and engine-wide records of `changes` (not its journeys
/// or held events).
fn append_records(changelog: &mut Vec<ChangelogRecord>, changes: &StateChanges) {
    for ((due, key), set) in &changes.timers {
        changelog.push(timer_record((*due, key), *set));
    }
    for (key, members) in &changes.customers {
        let mut k = Vec::with_capacity(1 + key.len());
        k.push(TAG_CUSTOMER);
        k.extend_from_slice(key.as_bytes());
        changelog.push(ChangelogRecord {
            key: k,
            value: members.as_ref().map(codec::encode),
        });
    }
    for (id, key) in &changes.identities {
        let mut k = vec![TAG_IDENTITY];
        k.extend(identity_key(id));
        changelog.push(ChangelogRecord {
            key: k,
            value: key.as_ref().map(codec::encode),
        });
    }
    if let Some(meta) = &changes.meta {
        let mut k = vec![TAG_META];
        k.extend_from_slice(META_ENGINE);
        changelog.push(ChangelogRecord {
            key: k,
            value: Some(codec::encode(meta)),
        });
    }
}

/// A journey's customer key from its row key.
fn journey_key(k: &[u8]) -> Result<String> {
    String::from_utf8(k.to_vec()).map_err(|_| Error::Decode {
        what: "journey key".into(),
        message: "not UTF-8".into(),
    })
}

fn identity_key(id: &Identifier) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.kind.len() + 1 + id.value.len());
    k.extend_from_slice(id.kind.as_bytes());
    k.push(0);
    k.extend_from_slice(id.value.as_bytes());
    k
}

fn parse_identity_key(k: &[u8]) -> Result<Identifier> {
    let bad = || Error::Decode {
        what: "identity key".into(),
        message: "not type\\0value".into(),
    };
    let i = k.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let (kind, value) = (
        std::str::from_utf8(&k[..i]),
        std::str::from_utf8(&k[i + 1..]),
    );
    Ok(Identifier {
        kind: Identifier::type_name(kind.map_err(|_| bad())?),
        value: value.map_err(|_| bad())?.to_owned(),
    })
}

impl Store {
    /// Opens (or creates) the store at `path`. A directory that cannot be
    /// opened or has another format is moved aside (never deleted) and a fresh
    /// store is created, so that the caller rebuilds it from the changelog.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<(Store, Opened)> {
        let existed = path.join("CURRENT").exists();
        match Self::try_open(path, opts) {
            Ok(store) => {
                if !existed {
                    store.put_format()?;
                    return Ok((store, Opened::Fresh));
                }
                match store.format() {
                    Ok(Some(codec::FORMAT_VERSION)) => {
                        store.ensure_customer_index()?;
                        store.ensure_timer_index()?;
                        Ok((store, Opened::Existing))
                    }
                    other => {
                        let reason = match other {
                            Ok(Some(v)) => format!(
                                "format version {v}, this build writes {}",
                                codec::FORMAT_VERSION
                            ),
                            Ok(None) => "no format marker".to_string(),
                            Err(e) => e.to_string(),
                        };
                        drop(store);
                        Self::rebuild(path, opts, reason)
                    }
                }
            }
            Err(e) if existed || path.exists() => Self::rebuild(path, opts, e.to_string()),
            Err(e) => Err(e),
        }
    }

    fn rebuild(path: &Path, opts: StoreOptions, reason: String) -> Result<(Store, Opened)> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let moved_to = PathBuf::from(format!("{}.broken-{stamp}", path.display()));
        warn!(path = %path.display(), moved_to = %moved_to.display(), reason = %reason, "state directory unusable: moved aside, rebuilding");
        std::fs::rename(path, &moved_to).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let store = Self::try_open(path, opts)?;
        store.put_format()?;
        Ok((store, Opened::Rebuilt { moved_to, reason }))
    }

    fn try_open(path: &Path, opts: StoreOptions) -> Result<Store> {
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let wbm = WriteBufferManager::new_write_buffer_manager_with_cache(
            opts.write_buffer_bytes,
            false,
            cache.clone(),
        );
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_bloom_filter(10.0, false);
        // Index and filters in 4 KiB partitions, with only their top level
        // pinned: once the database outgrows the block cache, a point read
        // loads one partition of one file's filter, not the file's whole
        // filter (megabytes, read and checksummed again on every miss).
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        cf_opts.set_write_buffer_size((opts.write_buffer_bytes / 4).max(1 << 20));
        let mut db_opts = cf_opts.clone();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_write_buffer_manager(&wbm);
        db_opts.set_max_open_files(256);
        db_opts.set_paranoid_checks(true);
        let cfs = CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_opts.clone()));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)
            .map_err(|e| Error::db(format!("open {}", path.display()), e))?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
            cache,
            restored: Default::default(),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn put_format(&self) -> Result<()> {
        self.db
            .put_cf(self.cf(CF_META), META_FORMAT, [codec::FORMAT_VERSION])
            .map_err(|e| Error::db("write format marker", e))?;
        self.put_marker(META_CUSTOMER_INDEX)?;
        self.put_marker(META_TIMER_INDEX)
    }

    /// Every stored journey, decoded, in key order.
    fn scan_journeys(&self) -> impl Iterator<Item = Result<(String, Journey)>> + '_ {
        self.db
            .iterator_cf(self.cf(CF_JOURNEYS), IteratorMode::Start)
            .map(|item| {
                let (k, v) = item.map_err(|e| Error::db("scan journeys", e))?;
                let key = journey_key(&k)?;
                let j: Journey = codec::decode(&format!("journey {key}"), &v)?;
                Ok((key, j))
            })
    }

    /// Whether an index is marked as agreeing with what it is built from.
    fn has_marker(&self, marker: &[u8]) -> Result<bool> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), marker)
            .map_err(|e| Error::db("read index marker", e))?
            .is_some())
    }

    /// Deletes every row of a column family (before an index is rebuilt).
    fn clear(&self, name: &str) -> Result<()> {
        let cf = self.cf(name);
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item.map_err(|e| Error::db(format!("scan {name}"), e))?;
            batch.delete_cf(cf, k);
        }
        self.db
            .write(batch)
            .map_err(|e| Error::db(format!("clear {name}"), e))
    }

    /// Marks an index as agreeing with what it is built from.
    fn put_marker(&self, marker: &[u8]) -> Result<()> {
        self.db
            .put_cf(self.cf(CF_META), marker, [1])
            .map_err(|e| Error::db("write index marker", e))
    }

    /// Builds the customers column family from the identities when it may
    /// not agree with them: a store written before it existed, or restored
    /// from a changelog that has identity records and no customer records.
    /// Reads the identities in chunks (memory stays bounded); a customer
    /// spread over chunks is read back and extended.
    fn ensure_customer_index(&self) -> Result<()> {
        let marked = self.has_marker(META_CUSTOMER_INDEX)?;
        // Identities restored without a single customer record: written
        // by a version without the index.
        let Restored {
            identities,
            customers,
            ..
        } = *self.restored.lock().expect("not poisoned");
        if marked && !(identities > 0 && customers == 0) {
            return Ok(());
        }
        warn!(path = %self.path.display(), "building the customer index from the identities");
        self.clear(CF_CUSTOMERS)?;
        let cf = self.cf(CF_CUSTOMERS);
        let mut chunk: BTreeMap<String, Vec<Identifier>> = BTreeMap::new();
        let mut rows = self
            .db
            .iterator_cf(self.cf(CF_IDENTITIES), IteratorMode::Start)
            .peekable();
        while rows.peek().is_some() {
            chunk.clear();
            for item in rows.by_ref().take(100_000) {
                let (k, v) = item.map_err(|e| Error::db("scan identities", e))?;
                let key: Identifier = codec::decode("identity", &v)?;
                chunk
                    .entry(key.key())
                    .or_default()
                    .push(parse_identity_key(&k)?);
            }
            let mut batch = WriteBatch::default();
            for (key, mut members) in std::mem::take(&mut chunk) {
                if let Some(earlier) = self.customer(&key)? {
                    members.extend(earlier);
                }
                members.sort();
                members.dedup();
                batch.put_cf(cf, key.as_bytes(), codec::encode(&members));
            }
            self.db
                .write(batch)
                .map_err(|e| Error::db("write customer index", e))?;
        }
        let mut restored = self.restored.lock().expect("not poisoned");
        (restored.identities, restored.customers) = (0, 0);
        drop(restored);
        self.put_marker(META_CUSTOMER_INDEX)
    }

    /// Builds the timer index from the journeys when it may not agree with
    /// them: a store written before it existed, or journeys restored from
    /// the changelog (which does not carry the index). Reads every journey
    /// once, 100,000 rows to a batch.
    fn ensure_timer_index(&self) -> Result<()> {
        let marked = self.has_marker(META_TIMER_INDEX)?;
        let restored = self.restored.lock().expect("not poisoned").journeys;
        if marked && restored == 0 {
            return Ok(());
        }
        warn!(path = %self.path.display(), "building the timer index from the journeys");
        self.clear(CF_TIMERS)?;
        let cf = self.cf(CF_TIMERS);
        let mut batch = WriteBatch::default();
        for item in self.scan_journeys() {
            let (key, j) = item?;
            if let Some(due) = j.next_due {
                let r = timer_record((due, &key), true);
                batch.put_cf(cf, &r.key[1..], r.value.unwrap_or_default());
            }
            if batch.len() >= 100_000 {
                self.db
                    .write(std::mem::take(&mut batch))
                    .map_err(|e| Error::db("write timer index", e))?;
            }
        }
        self.db
            .write(batch)
            .map_err(|e| Error::db("write timer index", e))?;
        self.restored.lock().expect("not poisoned").journeys = 0;
        self.put_marker(META_TIMER_INDEX)
    }

    fn format(&self) -> Result<Option<u8>> {
        let v = self
            .db
            .get_cf(self.cf(CF_META), META_FORMAT)
            .map_err(|e| Error::db("read format marker", e))?;
        Ok(v.and_then(|v| v.first().copied()))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes the engine's changes into changelog records (also what [`Store::write`] writes).
    pub fn prepare(changes: &StateChanges) -> Prepared {
        let mut changelog =
            Vec::with_capacity(changes.journeys.len() + changes.identities.len() + 1);
        for (key, j) in &changes.journeys {
            changelog.push(journey_record(key, j.as_ref()));
        }
        for ((time, id), ev) in &changes.held {
            changelog.push(held_record((*time, id), ev.as_ref()));
        }
        append_records(&mut changelog, changes);
        Prepared { changelog }
    }

    /// Takes the engine's changes ([`Engine::take_changes`] with `meta`,
    /// [`Engine::take_entity_changes`] without) and encodes them as
    /// [`Store::prepare`] does, without copying the journeys first.
    pub fn prepare_from(engine: &mut Engine, meta: bool) -> Prepared {
        let mut changelog = Vec::new();
        let rest = engine.take_changes_with(meta, |change| {
            changelog.push(match change {
                ChangeRef::Journey(key, j) => journey_record(key, j),
                ChangeRef::Held(slot, ev) => held_record(slot, ev),
            });
        });
        append_records(&mut changelog, &rest);
        Prepared { changelog }
    }

    fn batch_records(&self, batch: &mut WriteBatch, records: &[ChangelogRecord]) -> Result<()> {
        for r in records {
            let (cf, key) = r.family_and_key().ok_or_else(|| Error::Decode {
                what: "changelog key".into(),
                message: format!("unknown tag in {:?}", r.key),
            })?;
            match &r.value {
                Some(v) => batch.put_cf(self.cf(cf), key, v),
                None => batch.delete_cf(self.cf(cf), key),
            }
        }
        Ok(())
    }

    /// Writes prepared changes and the input offsets they correspond to in one
    /// atomic batch: after a crash the store is exactly as of some `write`.
    pub fn write(&self, prepared: &Prepared, offsets: &Offsets) -> Result<()> {
        self.write_resumable(prepared, offsets, &BTreeMap::new())
    }

    /// [`Store::write`], also raising the changelog positions (partition →
    /// offset) before which every record is reflected in the state, so that a
    /// store left behind the committed state catches up from there.
    pub fn write_resumable(
        &self,
        prepared: &Prepared,
        offsets: &Offsets,
        resume: &BTreeMap<i32, i64>,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.batch_records(&mut batch, &prepared.changelog)?;
        let mut all = self.offsets()?;
        all.extend(offsets.iter().map(|(k, v)| (k.clone(), *v)));
        batch.put_cf(self.cf(CF_META), META_OFFSETS, codec::encode(&all));
        if !resume.is_empty() {
            let mut positions = self.changelog_resume()?;
            for (&p, &o) in resume {
                let e = positions.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
            batch.put_cf(
                self.cf(CF_META),
                META_CHANGELOG_RESUME,
                codec::encode(&positions),
            );
        }
        self.db
            .write(batch)
            .map_err(|e| Error::db("write batch", e))
    }

    /// Where to resume reading the changelog, per partition (see
    /// [`Store::write_resumable`]); empty when unknown.
    pub fn changelog_resume(&self) -> Result<BTreeMap<i32, i64>> {
        Ok(self
            .meta(META_CHANGELOG_RESUME, "changelog positions")?
            .unwrap_or_default())
    }

    /// Sets the changelog positions after a restore that read up to them.
    pub fn set_changelog_resume(&self, resume: &BTreeMap<i32, i64>) -> Result<()> {
        self.db
            .put_cf(
                self.cf(CF_META),
                META_CHANGELOG_RESUME,
                codec::encode(resume),
            )
            .map_err(|e| Error::db("write changelog positions", e))
    }

    /// Applies changelog records (a restore), in order, in one batch.
    pub fn apply_changelog(&self, records: &[ChangelogRecord]) -> Result<()> {
        {
            let mut restored = self.restored.lock().expect("not poisoned");
            for r in records {
                match r.key.first() {
                    Some(&TAG_IDENTITY) => restored.identities += 1,
                    Some(&TAG_CUSTOMER) => restored.customers += 1,
                    Some(&TAG_JOURNEY) => restored.journeys += 1,
                    _ => {}
                }
            }
        }
        let mut batch = WriteBatch::default();
        self.batch_records(&mut batch, records)?;
        self.db
            .write(batch)
            .map_err(|e| Error::db("write restored records", e))
    }

    /// Sets the input offsets (after a restore from the changelog).
    pub fn set_offsets(&self, offsets: &Offsets) -> Result<()> {
        self.db
            .put_cf(self.cf(CF_META), META_OFFSETS, codec::encode(offsets))
            .map_err(|e| Error::db("write offsets", e))
    }

    /// The input offsets stored with the state.
    pub fn offsets(&self) -> Result<Offsets> {
        Ok(self.meta(META_OFFSETS, "offsets")?.unwrap_or_default())
    }

    /// A decoded value of the meta column family, if present.
    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8], what: &str) -> Result<Option<T>> {
        self.read(CF_META, key, what)
    }

    /// A decoded value of a column family, if present.
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        cf: &str,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>> {
        self.db
            .get_cf(self.cf(cf), key)
            .map_err(|e| Error::db(format!("read {what}"), e))?
            .map(|v| codec::decode(what, &v))
            .transpose()
    }

    /// Reads the whole state (the engine keeps it in memory).
    pub fn load(&self) -> Result<Loaded> {
        self.load_with(true, true)
    }

    /// Everything but the journeys themselves: their timer entries instead,
    /// for an engine that reads journeys from the store on first use.
    pub fn load_index(&self) -> Result<Loaded> {
        self.load_with(false, true)
    }

    /// Only the engine-wide state, the held events and the offsets, for an
    /// engine that reads journeys, customers and due timers from the store
    /// as it needs them (`Engine::restore_paged`).
    pub fn load_paged(&self) -> Result<Loaded> {
        self.load_with(false, false)
    }

    fn load_with(&self, journeys: bool, identities: bool) -> Result<Loaded> {
        self.ensure_customer_index()?;
        self.ensure_timer_index()?;
        let mut out = Loaded {
            offsets: self.offsets()?,
            ..Loaded::default()
        };
        if journeys {
            for item in self.scan_journeys() {
                out.journeys.push(item?);
            }
        } else if identities {
            out.timers = self.due_timers(Millis::MIN, Millis::MAX)?;
        }
        if identities {
            for item in self
                .db
                .iterator_cf(self.cf(CF_IDENTITIES), IteratorMode::Start)
            {
                let (k, v) = item.map_err(|e| Error::db("scan identities", e))?;
                out.identities
                    .push((parse_identity_key(&k)?, codec::decode("identity", &v)?));
            }
        }
        if let Some(meta) = self.meta(META_ENGINE, "engine meta")? {
            out.meta = meta;
        }
        for item in self.db.iterator_cf(self.cf(CF_HELD), IteratorMode::Start) {
            let (_, v) = item.map_err(|e| Error::db("scan held events", e))?;
            out.held.push(codec::decode("held event", &v)?);
        }
        Ok(out)
    }

    /// The timer index's rows (due time, customer key) due after `after` and
    /// at or before `until`, in due order.
    pub fn due_timers(&self, after: Millis, until: Millis) -> Result<Vec<(Millis, String)>> {
        let mut out = Vec::new();
        if after >= until {
            return Ok(out);
        }
        let from = ordered_time(after.saturating_add(1));
        let rows = self.db.iterator_cf(
            self.cf(CF_TIMERS),
            IteratorMode::From(&from, rocksdb::Direction::Forward),
        );
        for item in rows {
            let (k, _) = item.map_err(|e| Error::db("scan timers", e))?;
            let bad = || Error::Decode {
                what: "timer key".into(),
                message: format!("{k:?}"),
            };
            let due = parse_ordered_time(&k).ok_or_else(bad)?;
            if due > until {
                break;
            }
            let key = std::str::from_utf8(&k[8..]).map_err(|_| bad())?;
            out.push((due, key.to_string()));
        }
        Ok(out)
    }

    /// Every key and value of every column family, for comparisons in tests and `inspect`.
    pub fn dump(&self) -> Result<BTreeMap<String, Rows>> {
        let mut out = BTreeMap::new();
        for cf in CFS {
            let mut rows = Vec::new();
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (k, v) = item.map_err(|e| Error::db(format!("scan {cf}"), e))?;
                rows.push((k.to_vec(), v.to_vec()));
            }
            out.insert(cf.to_string(), rows);
        }
        Ok(out)
    }

    /// A journey by customer key.
    pub fn journey(&self, key: &str) -> Result<Option<Journey>> {
        self.read(CF_JOURNEYS, key.as_bytes(), &format!("journey {key}"))
    }

    /// The key identifier of an identifier.
    pub fn key_of(&self, id: &Identifier) -> Result<Option<Identifier>> {
        self.read(CF_IDENTITIES, &identity_key(id), "identity")
    }

    /// The identifiers of a customer, by key (sorted).
    pub fn customer(&self, key: &str) -> Result<Option<Vec<Identifier>>> {
        self.read(CF_CUSTOMERS, key.as_bytes(), &format!("customer {key}"))
    }

    /// All identifiers of the customer an identifier belongs to, if known.
    /// An identifier whose key names no stored customer is an error (the
    /// two column families disagree).
    pub fn customer_of(&self, id: &Identifier) -> Result<Option<Vec<Identifier>>> {
        let Some(key) = self.key_of(id)? else {
            return Ok(None);
        };
        let key = key.key();
        match self.customer(&key)? {
            Some(members) => Ok(Some(members)),
            None => Err(Error::Decode {
                what: format!("customer {key}"),
                message: format!("{id} belongs to it, but it is not stored"),
            }),
        }
    }

    /// Sizes and memory use.
    pub fn stats(&self) -> StoreStats {
        let prop = |cf: &str, name: &str| {
            self.db
                .property_int_value_cf(self.cf(cf), name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let sum = |name: &str| CFS.iter().map(|cf| prop(cf, name)).sum::<u64>();
        StoreStats {
            journeys: prop(CF_JOURNEYS, "rocksdb.estimate-num-keys"),
            identities: prop(CF_IDENTITIES, "rocksdb.estimate-num-keys"),
            sst_bytes: sum("rocksdb.live-sst-files-size"),
            memtable_bytes: sum("rocksdb.cur-size-all-mem-tables"),
            block_cache_bytes: self.cache.get_usage() as u64,
        }
    }
}
