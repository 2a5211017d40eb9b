//! Reading a backup back: each part streamed from the store, its size and SHA-256 checked, its SQL
//! decoded, split into statements and applied. Shared by restore, verify and export, so all three
//! trust a part by the same rules.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use rusqlite::Connection;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Classify, Error, Kind, Result};
use crate::format::chunk::ChunkKeys;
use crate::format::codec::{HashingReader, decoder};
use crate::format::crypto::Key;
use crate::format::dump::shape::{check_creates, is_backup_statement, is_prelude};
use crate::format::dump::split::Splitter;
use crate::format::manifest::{
    EncryptionInfo, Manifest, ObjectEntry, ObjectKind, SchemaEntry, SchemaKind,
};
use crate::format::predicate::Step;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("part {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("part {key} is missing from {store}")]
    Missing { key: String, store: String },
    #[error("the manifest of backup {id} does not match its parts: {reason}")]
    Manifest { id: String, reason: String },
    /// The statement is named by its number in the part, never quoted: it holds the backup's
    /// values (and, encrypted, its names), and this message goes to logs and audit records.
    #[error("applying part {key}, {statement}: {reason}")]
    Apply {
        key: String,
        reason: String,
        statement: String,
    },
}

/// A backup whose parts do not add up is a failure of the backup, whoever wrote it: the user
/// asked for a backup that exists, and it cannot be trusted.
impl Classify for LoadError {
    fn kind(&self) -> Kind {
        match self {
            LoadError::Corrupt { .. }
            | LoadError::Missing { .. }
            | LoadError::Manifest { .. }
            | LoadError::Apply { .. } => Kind::Failed,
        }
    }
}

/// Why a backup cannot be decrypted with the key at hand. Both are checked before any part is
/// downloaded, and name fingerprints, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error("backup {id} is encrypted; set {}", crate::format::crypto::KEY_ENV)]
    Missing { id: String },
    #[error(
        "backup {id} was encrypted with the key of fingerprint {expected}, but {} has fingerprint {actual}",
        crate::format::crypto::KEY_ENV
    )]
    Wrong {
        id: String,
        expected: String,
        actual: String,
    },
    /// A key says the backups are meant to be encrypted; a plain one proves nothing about who
    /// wrote it (anyone who can write the bucket can put one there as the newest).
    #[error(
        "backup {id} is not encrypted, but {} is set: a plain backup is not authenticated and may have been written by anyone who can write the bucket; unset {} to read it anyway",
        crate::format::crypto::KEY_ENV,
        crate::format::crypto::KEY_ENV
    )]
    Unencrypted { id: String },
}

/// A missing or wrong key is the user's to fix; a plain backup where an encrypted one is
/// expected is refused as an altered one is, a failure.
impl Classify for KeyCheckError {
    fn kind(&self) -> Kind {
        match self {
            KeyCheckError::Missing { .. } | KeyCheckError::Wrong { .. } => Kind::BadInput,
            KeyCheckError::Unencrypted { .. } => Kind::Failed,
        }
    }
}

/// Checks that `key` decrypts `manifest`'s backup: required and matching when the backup is
/// encrypted; and, when a key is given, that the backup is encrypted at all.
pub fn check_key<'k>(
    manifest: &Manifest,
    key: Option<&'k Key>,
) -> Result<Option<&'k Key>, KeyCheckError> {
    check_key_of(&manifest.id, manifest.encryption.as_ref(), key)
}

/// [`check_key`] for backup `id` encrypted as `encryption` says, before its manifest is opened.
pub fn check_key_of<'k>(
    id: &str,
    encryption: Option<&EncryptionInfo>,
    key: Option<&'k Key>,
) -> Result<Option<&'k Key>, KeyCheckError> {
    let Some(info) = encryption else {
        return match key {
            Some(_) => Err(KeyCheckError::Unencrypted { id: id.to_string() }),
            None => Ok(None),
        };
    };
    let key = key.ok_or_else(|| KeyCheckError::Missing { id: id.to_string() })?;
    let actual = key.fingerprint();
    if actual != info.key_fingerprint {
        return Err(KeyCheckError::Wrong {
            id: id.to_string(),
            expected: info.key_fingerprint.clone(),
            actual,
        });
    }
    Ok(Some(key))
}

/// Decoded SQL in flight from the reading thread to the sink's, in chunks of [`CHUNK`] bytes:
/// reading, checking and decompressing parts runs beside splitting and applying their SQL, each
/// on a core of its own, in a megabyte of memory.
const CHUNKS_AHEAD: usize = 4;
/// Objects asked for ahead of the one being read, at most: chunks of a chunked backup are a few
/// hundred KiB each, and one round trip each in turn would bound a restore by the latency.
const OBJECTS_AHEAD: usize = 16;
/// Stored bytes asked for ahead, at most, beyond the next object.
const BYTES_AHEAD: u64 = 8 << 20;
/// The decoded SQL read at a time, and handed to the sink's thread as one chunk.
const CHUNK: usize = 256 * 1024;

/// Streams the SQL of `objects` (in order) into `sink`, checking each object's size and digest
/// against the manifest once it has been read. Runs on two blocking threads, one reading and
/// decoding, one feeding the sink; the sink sees a part's bytes before its digest is known, so
/// callers write somewhere they can throw away. A part that fails its checks is the error
/// reported, before anything the sink said of bytes it was handed.
pub async fn stream_sql<S: SqlSink>(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    objects: Vec<ObjectEntry>,
    key: Option<&Key>,
    mut sink: S,
) -> Result<S> {
    let decryption: Option<Key> = check_key(manifest, key)?.cloned();
    let chunk_keys = ChunkKeys::new(decryption.as_ref());
    let handle = tokio::runtime::Handle::current();
    let manifest = manifest.header();
    let objects = Arc::new(objects);
    let (send, receive) = std::sync::mpsc::sync_channel::<(usize, Option<Vec<u8>>)>(CHUNKS_AHEAD);
    let sinking = {
        let objects = objects.clone();
        tokio::task::spawn_blocking(move || -> Result<S> {
            for (index, bytes) in receive {
                sink.feed(&objects[index], bytes.as_deref())?;
            }
            Ok(sink)
        })
    };
    let reading = tokio::task::spawn_blocking(move || -> Result<()> {
        // The next objects are asked for while this one is read, so no round trip to the store
        // idles the load between two: the next part (a few MiB), or the next chunks, up to
        // [`OBJECTS_AHEAD`] of them and [`BYTES_AHEAD`] stored.
        let get = |object: &ObjectEntry| {
            let (store, key) = (store.clone(), manifest.key(object));
            handle.spawn(async move { store.get(&key).await })
        };
        let mut asked = std::collections::VecDeque::new();
        let mut asked_bytes = 0u64;
        let mut next_to_ask = 0;
        for (index, object) in objects.iter().enumerate() {
            while next_to_ask < objects.len()
                && (next_to_ask <= index + 1
                    || (asked.len() < OBJECTS_AHEAD && asked_bytes < BYTES_AHEAD))
            {
                asked_bytes += objects[next_to_ask].bytes;
                asked.push_back(get(&objects[next_to_ask]));
                next_to_ask += 1;
            }
            asked_bytes -= object.bytes;
            let got = handle.block_on(asked.pop_front().expect("asked ahead of its turn"))?;
            let stream = got.map_err(|e| {
                if e.is_not_found() {
                    Error::from(LoadError::Missing {
                        key: object_name(&manifest, object),
                        store: store.to_string(),
                    })
                } else {
                    Error::from(e)
                }
            })?;
            let failure = ReadFailure::default();
            let reader = StreamReader::new(stream.map_err(|e| failure.keep(e)));
            let mut hashing =
                HashingReader::new(SyncIoBridge::new_with_handle(reader, handle.clone()));
            let name = object_name(&manifest, object);
            let corrupt = |reason: String| LoadError::Corrupt {
                key: name.clone(),
                reason,
            };
            // A chunk is checked by its address, the hash of its SQL, rather than by the bytes
            // stored, which differ from one writer of it to the next.
            let mut address = object.chunk.as_ref().map(|_| chunk_keys.hasher());
            // Whether the sink stopped taking this part's SQL: it failed on what it was handed.
            let mut stopped = false;
            let decoded = {
                let part_key = decryption.as_ref().map(|k| manifest.part_key(k, object));
                let mut plain = decoder(&mut hashing, manifest.compression, part_key.as_ref());
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match plain.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            crate::model::progress::add(0, n as u64);
                            if let Some(hasher) = address.as_mut() {
                                hasher.update(&buf[..n]);
                            }
                            // A chunk is decoded to its end even when the sink stopped: its
                            // address is what tells a corrupt chunk from a bad statement.
                            if !stopped && send.send((index, Some(buf[..n].to_vec()))).is_err() {
                                stopped = true;
                                if address.is_none() {
                                    break Ok(());
                                }
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
            };
            // The rest of the part is read (not decoded) and checked even when the sink stopped:
            // SQL it failed on may be a corrupt part's, and then the corruption is the error.
            let finished = hashing.finish();
            let read = failure.check();
            if stopped && (read.is_err() || finished.is_err()) {
                // The part could not be checked: what the sink failed on is the error to report.
                return Ok(());
            }
            // A read that failed left a short part behind it: the failure is what to report.
            read?;
            let (bytes, sha256) = finished.map_err(|e| corrupt(e.to_string()))?;
            if let (Some(hasher), Some(want)) = (address, &object.chunk) {
                decoded.map_err(|e| corrupt(format!("cannot decode: {e}")))?;
                let got = hasher.finish();
                if &got != want {
                    return Err(corrupt(format!(
                        "its SQL hashes to {got}, not to the address it is stored under (substituted or corrupt)"
                    ))
                    .into());
                }
                if stopped || send.send((index, None)).is_err() {
                    return Ok(());
                }
                continue;
            }
            if bytes != object.bytes {
                return Err(corrupt(format!(
                    "{bytes} bytes stored, the manifest says {} (truncated or replaced)",
                    object.bytes
                ))
                .into());
            }
            if sha256 != object.sha256 {
                return Err(corrupt(format!(
                    "SHA-256 {sha256} does not match the manifest's {}",
                    object.sha256
                ))
                .into());
            }
            if stopped {
                // A sound part: what the sink failed on is the error to report.
                return Ok(());
            }
            decoded.map_err(|e| corrupt(format!("cannot decode: {e}")))?;
            crate::model::progress::add(object.rows, 0);
            if send.send((index, None)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    });
    let (read, sunk) = tokio::join!(reading, sinking);
    read??;
    sunk?
}

/// The store's error that ended a part's stream, kept aside: the decoder and the hash only see
/// it as an I/O error (and, after it, the end of a short part), but a read that failed says
/// nothing of what is stored, so it is reported as the store said it, never as a corrupt part.
#[derive(Default, Clone)]
struct ReadFailure(Arc<std::sync::Mutex<Option<crate::store::StoreError>>>);

impl ReadFailure {
    /// Keeps `err` (the first one) and hands the reader an I/O error saying the same.
    fn keep(&self, err: crate::store::StoreError) -> std::io::Error {
        let io = std::io::Error::other(err.to_string());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(err);
        io
    }

    fn check(&self) -> Result<(), crate::store::StoreError> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Where decoded SQL goes: a database being loaded, or an export file.
pub trait SqlSink: Send + 'static {
    /// Takes the next bytes of `object`'s SQL; `None` marks the end of the object, after its
    /// size and digest were checked.
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> Result<()>;
}

/// Which statements of a backup to apply: all, or those of some tables.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub tables: Vec<String>,
}

impl Selection {
    /// Refuses a selection naming a table the backup does not have (bad input).
    pub fn check(&self, manifest: &Manifest) -> Result<()> {
        for table in &self.tables {
            if !manifest.tables.iter().any(|t| &t.name == table) {
                return Err(crate::error::bad_input(format!(
                    "backup {} has no table named {table}",
                    manifest.id
                )));
            }
        }
        Ok(())
    }

    /// Whether `table` is one this selection restores.
    pub fn wants(&self, table: &str) -> bool {
        self.tables.is_empty() || self.tables.iter().any(|t| t == table)
    }

    /// The objects worth downloading for this selection.
    pub fn objects(&self, manifest: &Manifest) -> Vec<ObjectEntry> {
        manifest
            .objects
            .iter()
            .filter(|o| {
                o.kind != ObjectKind::Data || o.table.as_deref().is_some_and(|t| self.wants(t))
            })
            .cloned()
            .collect()
    }
}

/// A backup's SQL as statements, each checked before it goes anywhere: it must be one d1r2 writes
/// into a part of that kind ([`crate::format::dump::shape`]), and in the schema and post parts it must
/// create what the manifest's schema list names next, so that list (by which a restore of some
/// tables keeps or leaves each statement) says what the parts hold, entry for statement, or the
/// backup is refused: no statement goes without an entry, no entry without its statement.
pub struct Statements {
    id: String,
    splitter: Splitter,
    schema: Vec<SchemaEntry>,
    /// The entry of the next schema or post statement.
    next: usize,
    /// The statements of the current part so far.
    count: usize,
    /// The backup is encrypted: errors name no table, column or other object of it.
    sealed: bool,
}

impl Statements {
    pub fn new(manifest: &Manifest) -> Self {
        Statements {
            id: manifest.id.clone(),
            splitter: Splitter::new(),
            schema: manifest.schema.clone(),
            next: 0,
            count: 0,
            sealed: manifest.is_sealed(),
        }
    }

    /// Splits the next `bytes` of `object`'s SQL and hands each complete statement to `each`,
    /// with the schema entry it creates (`None` for rows and the prelude) and how an error
    /// names it ([`statement_ref`]).
    pub fn push(
        &mut self,
        object: &ObjectEntry,
        bytes: &[u8],
        mut each: impl FnMut(&str, Option<&SchemaEntry>, &dyn Fn() -> String) -> Result<()>,
    ) -> Result<()> {
        let (schema, next, count, sealed) =
            (&self.schema, &mut self.next, &mut self.count, self.sealed);
        self.splitter.push(bytes, |stmt| {
            *count += 1;
            let number = *count;
            let sql = backup_statement(object, stmt, number, sealed)?;
            let named = || statement_ref(number, sql, sealed);
            if object.kind == ObjectKind::Data || is_prelude(sql) {
                return each(sql, None, &named);
            }
            let entry = entry_of(object, sql, (schema.get(*next), *next), named, sealed)?;
            *next += 1;
            each(sql, Some(entry), &named)
        })
    }

    /// The end of `object`: refuses a part that ends inside a statement, or before a statement
    /// the manifest's schema list names for it.
    pub fn end(&mut self, object: &ObjectEntry) -> Result<(), LoadError> {
        let count = std::mem::take(&mut self.count);
        if let Some(rest) = std::mem::take(&mut self.splitter).finish() {
            return Err(corrupt(
                object,
                format!(
                    "it ends inside its {}",
                    statement_ref(count + 1, &rest, self.sealed)
                ),
            ));
        }
        let left = &self.schema[self.next..];
        let owed = match object.kind {
            ObjectKind::Data => 0,
            ObjectKind::Schema => left
                .iter()
                .take_while(|e| e.kind.part() == ObjectKind::Schema)
                .count(),
            ObjectKind::Post => left.len(),
        };
        match left.first() {
            Some(entry) if owed > 0 => Err(corrupt(
                object,
                format!(
                    "it ends where the manifest's schema list names {}{}",
                    entry_ref(entry, self.next, self.sealed),
                    match owed - 1 {
                        0 => String::new(),
                        more => format!(" and {more} more"),
                    }
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The end of the backup: refuses entries of the manifest's schema list that no part created
    /// (its schema or post part left out of its objects).
    pub fn finish(self) -> Result<(), LoadError> {
        match self.schema.get(self.next) {
            Some(entry) => Err(LoadError::Manifest {
                reason: format!(
                    "its schema list names {}, which no part creates",
                    entry_ref(entry, self.next, self.sealed)
                ),
                id: self.id,
            }),
            None => Ok(()),
        }
    }
}

/// The entry of `sql`, a schema or post statement of `object`: `entry`, the next in the
/// manifest's schema list (at `index`), when `sql` creates what it says in a part of the kind
/// it belongs in. `named` names the statement in an error.
fn entry_of<'e>(
    object: &ObjectEntry,
    sql: &str,
    (entry, index): (Option<&'e SchemaEntry>, usize),
    named: impl Fn() -> String,
    sealed: bool,
) -> Result<&'e SchemaEntry, LoadError> {
    let Some(entry) = entry else {
        return Err(corrupt(
            object,
            format!(
                "the manifest's schema list has no entry for its {}",
                named()
            ),
        ));
    };
    let reason = if entry.kind.part() != object.kind {
        format!(
            "a {} part holds no {}",
            object.kind.as_str(),
            entry.kind.as_str()
        )
    } else {
        match check_creates(entry, sql) {
            Ok(()) => return Ok(entry),
            // What it creates instead is named by the statement's own reference.
            Err(_) if sealed => "it creates something else".to_string(),
            Err(reason) => reason,
        }
    };
    Err(corrupt(
        object,
        format!(
            "its {} does not match the manifest's schema {}: {reason}",
            named(),
            if sealed {
                entry_ref(entry, index, sealed)
            } else {
                format!("entry {entry}")
            }
        ),
    ))
}

/// How an error names a statement: its number in its part and, for a plain backup, what it
/// creates when it is a schema statement; else the keywords it starts with. Never its text: a
/// statement holds the backup's values, which are not for logs and audit records, and in an
/// encrypted backup its names are as private.
pub(crate) fn statement_ref(number: usize, sql: &str, sealed: bool) -> String {
    match crate::format::dump::shape::created(sql).filter(|_| !sealed) {
        Some(created) => format!("statement {number} ({created})"),
        None => format!("statement {number} ({})", keywords(sql)),
    }
}

/// How an error names an entry of the manifest's schema list: as itself (kind and names) for a
/// plain backup, by its place in the list for an encrypted one.
fn entry_ref(entry: &SchemaEntry, index: usize, sealed: bool) -> String {
    if sealed {
        format!("entry {}", index + 1)
    } else {
        entry.to_string()
    }
}

/// The SQL keywords a statement starts with (`INSERT INTO`, `CREATE TRIGGER`), up to the first
/// word that is not one: a name or a value never comes out.
fn keywords(sql: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "ABORT",
        "ALTER",
        "ANALYZE",
        "ATTACH",
        "BEGIN",
        "COMMIT",
        "CREATE",
        "DELETE",
        "DETACH",
        "DROP",
        "END",
        "EXISTS",
        "EXPLAIN",
        "FAIL",
        "FROM",
        "IF",
        "IGNORE",
        "INDEX",
        "INSERT",
        "INTO",
        "NOT",
        "OR",
        "PLAN",
        "PRAGMA",
        "QUERY",
        "REINDEX",
        "RELEASE",
        "REPLACE",
        "ROLLBACK",
        "SAVEPOINT",
        "SELECT",
        "TABLE",
        "TEMP",
        "TEMPORARY",
        "TRANSACTION",
        "TRIGGER",
        "UNIQUE",
        "UPDATE",
        "VACUUM",
        "VIEW",
        "VIRTUAL",
        "WITH",
    ];
    let words: Vec<String> = sql
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .take_while(|w| KEYWORDS.contains(&w.as_str()))
        .take(4)
        .collect();
    if words.is_empty() {
        "not a statement d1r2 writes".to_string()
    } else {
        words.join(" ")
    }
}

/// Where an [`Applier`] sends each statement it keeps.
pub trait Execute: Send + 'static {
    fn execute(&mut self, sql: &str) -> Result<()>;

    /// Runs one `DELETE` of an erasure; the rows it removed, when this sink can tell (a file
    /// that is applied later cannot).
    fn erase(&mut self, sql: &str) -> Result<Option<u64>> {
        self.execute(sql)?;
        Ok(None)
    }
}

impl Execute for Connection {
    fn execute(&mut self, sql: &str) -> Result<()> {
        Ok(self.execute_batch(sql)?)
    }

    fn erase(&mut self, sql: &str) -> Result<Option<u64>> {
        let removed = Connection::execute(self, sql, [])?;
        Ok(Some(removed as u64))
    }
}

/// The recorded erasures a read of a backup applies ([`crate::format::erasure`]), planned
/// against its schema: each erasure's `DELETE`s, run once the rows are in and before the post
/// part, so no trigger of the backup fires and indexes and FTS rebuilds see only what is left.
#[derive(Debug, Clone, Default)]
pub struct Erasing {
    /// Each erasure's statements ([`crate::format::predicate::plan`]), in the order recorded.
    pub steps: Vec<Vec<Step>>,
    /// What each erasure removed, once run: `None` for a sink that cannot count.
    pub removed: Vec<Option<u64>>,
    /// The rows removed from each table, for the row counts a load is checked against.
    pub by_table: BTreeMap<String, u64>,
    /// The backup is encrypted: errors name no table.
    sealed: bool,
    done: bool,
}

impl Erasing {
    pub fn new(steps: Vec<Vec<Step>>, sealed: bool) -> Self {
        Erasing {
            steps,
            sealed,
            ..Erasing::default()
        }
    }

    /// Runs every erasure's statements whose table `selection` wants on `conn`, once.
    fn run<E: Execute>(&mut self, conn: &mut E, selection: &Selection) -> Result<()> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        for steps in &self.steps {
            // A partial restore of a table an erasure reaches through its foreign keys needs the
            // erasure's own table, whose rows choose the ones to remove.
            if let Some(own) = steps.last()
                && !selection.wants(&own.table)
                && let Some(reached) = steps.iter().find(|s| selection.wants(&s.table))
            {
                return Err(crate::error::bad_input(if self.sealed {
                    // An encrypted backup's errors name no table.
                    "a recorded erasure removes rows of a selected table chosen by rows of one that is not selected; restore them together".to_string()
                } else {
                    format!(
                        "a recorded erasure removes rows of {} chosen by rows of {}; add {} to --tables",
                        reached.table, own.table, own.table
                    )
                }));
            }
            let mut removed = Some(0u64);
            for step in steps.iter().filter(|s| selection.wants(&s.table)) {
                let rows = conn.erase(&format!("{};", step.sql))?;
                if let Some(rows) = rows {
                    *self.by_table.entry(step.table.clone()).or_default() += rows;
                }
                removed = removed.zip(rows).map(|(a, b)| a + b);
            }
            self.removed.push(removed);
        }
        Ok(())
    }
}

/// Splits a backup's SQL into statements, keeps those of the selection, and hands them on one by
/// one: to a SQLite connection for restore and verify, to a file for D1's import.
pub struct Applier<E: Execute = Connection> {
    conn: E,
    statements: Statements,
    selection: Selection,
    erasing: Erasing,
}

impl<E: Execute> Applier<E> {
    pub fn new(conn: E, manifest: &Manifest, selection: &Selection, erasing: Erasing) -> Self {
        Applier {
            conn,
            statements: Statements::new(manifest),
            selection: selection.clone(),
            erasing,
        }
    }

    /// The connection and what the erasures removed, once every entry of the manifest's schema
    /// list was matched to a statement (and the erasures ran, in a backup without a post part).
    pub fn finish(mut self) -> Result<(E, Erasing)> {
        self.erasing.run(&mut self.conn, &self.selection)?;
        self.statements.finish()?;
        Ok((self.conn, self.erasing))
    }

    /// The connection after some objects were fed (the schema part, or data objects on their
    /// own): nothing checked beyond those objects.
    pub fn into_schema(self) -> E {
        self.conn
    }
}

impl<E: Execute> SqlSink for Applier<E> {
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> Result<()> {
        let Some(bytes) = bytes else {
            return Ok(self.statements.end(object)?);
        };
        if object.kind == ObjectKind::Post {
            self.erasing.run(&mut self.conn, &self.selection)?;
        }
        let (conn, selection) = (&mut self.conn, &self.selection);
        let sealed = self.statements.sealed;
        self.statements.push(object, bytes, |sql, entry, named| {
            // Views are kept whatever the selection: they name no one table of their own.
            if let Some(entry) = entry
                && entry.kind != SchemaKind::View
                && !selection.wants(&entry.table)
            {
                return Ok(());
            }
            conn.execute(sql).map_err(|e| {
                LoadError::Apply {
                    key: object.key.clone(),
                    reason: apply_reason(&e, sealed),
                    statement: named(),
                }
                .into()
            })
        })
    }
}

/// How errors name an object: its key, and for a chunk of a plain backup the table it holds
/// (an encrypted backup's errors name no table).
fn object_name(manifest: &Manifest, object: &ObjectEntry) -> String {
    match (&object.chunk, &object.table) {
        (Some(_), Some(table)) if manifest.encryption.is_none() => {
            format!("chunk {} of table {table:?}", object.key)
        }
        (Some(_), _) => format!("chunk {}", object.key),
        _ => object.key.clone(),
    }
}

fn corrupt(object: &ObjectEntry, reason: String) -> LoadError {
    LoadError::Corrupt {
        key: object.key.clone(),
        reason,
    }
}

/// Why SQLite refused a statement, as an error may say it. SQLite's own message may quote the
/// statement (`near "...": syntax error`, `unrecognized token: "..."`), and a quote of a
/// statement is a quote of the backup's values: a message holding a quote is replaced by the
/// result code's description, and so is every message of an encrypted backup (it names tables
/// and columns).
fn apply_reason(err: &Error, sealed: bool) -> String {
    use rusqlite::Error::{SqlInputError, SqliteFailure};
    match err.downcast_ref::<rusqlite::Error>() {
        Some(sqlite) if !sealed => crate::redact::sqlite(sqlite),
        Some(SqliteFailure(code, _) | SqlInputError { error: code, .. }) => {
            crate::redact::sqlite_code(code)
        }
        Some(_) => "SQLite refused it".to_string(),
        None => err.to_string(),
    }
}

/// `stmt` (the `number`th of its part) as text, when it is a statement d1r2 writes into a part
/// of `object`'s kind (see [`crate::format::dump::shape`]): anything else is a part someone
/// else wrote, and goes nowhere.
fn backup_statement<'s>(
    object: &ObjectEntry,
    stmt: &'s [u8],
    number: usize,
    sealed: bool,
) -> Result<&'s str, LoadError> {
    let sql = std::str::from_utf8(stmt)
        .map_err(|_| corrupt(object, format!("its statement {number} is not UTF-8")))?;
    if !is_backup_statement(object.kind, sql) {
        return Err(corrupt(
            object,
            format!(
                "its {} is not one d1r2 writes there, refused",
                statement_ref(number, sql, sealed)
            ),
        ));
    }
    Ok(sql)
}

/// Opens a new scratch database tuned for a bulk load that is thrown away if anything fails
/// ([`begin_load`]).
pub fn open_scratch(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    begin_load(&conn)?;
    Ok(conn)
}

/// Readies a scratch database for a bulk load and opens its transaction: no journal and no
/// syncs, as nothing in it counts until it is checked. Foreign keys are off, as in the `sqlite3`
/// shell: a local source may legally hold rows that violate them, and a restore must bring back
/// what was there (verify reports violations).
pub fn begin_load(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "PRAGMA foreign_keys=OFF; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;",
    )?;
    Ok(())
}

/// Loads the selected part of a backup into the database at `path` (which may already hold
/// tables), commits, and returns the connection.
pub async fn load_into(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    (selection, erasing): (&Selection, Erasing),
    key: Option<&Key>,
    path: &Path,
) -> Result<(Connection, Erasing)> {
    check_key(manifest, key)?;
    let conn = open_scratch(path)?;
    load_on(store, manifest, (selection, erasing), key, conn).await
}

/// Loads the selected part of a backup through `conn`, a scratch database inside the
/// transaction [`begin_load`] opened, commits, and returns the connection.
pub async fn load_on(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    (selection, erasing): (&Selection, Erasing),
    key: Option<&Key>,
    mut conn: Connection,
) -> Result<(Connection, Erasing)> {
    check_key(manifest, key)?;
    confine(&mut conn, true)?;
    let applier = Applier::new(conn, manifest, selection, erasing);
    let applier = stream_sql(store, manifest, selection.objects(manifest), key, applier).await?;
    let (mut conn, erasing) = applier.finish()?;
    confine(&mut conn, false)?;
    conn.execute_batch("COMMIT")?;
    Ok((conn, erasing))
}

/// A backup's schema alone (its tables, empty, no index, view or trigger) in a database in
/// memory: what a predicate is checked against and an erasure planned on.
pub async fn load_schema(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
) -> Result<Connection> {
    let schema: Vec<ObjectEntry> = manifest
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::Schema)
        .cloned()
        .collect();
    let conn = Connection::open_in_memory()?;
    // As a load: a `DELETE` planned here must not need the tables pointing at its own.
    conn.execute_batch("PRAGMA foreign_keys=OFF")?;
    load_objects(store, manifest, schema, key, conn).await
}

/// Loads `objects` of a backup (its schema part, or data objects into a database that holds
/// its schema) through `conn`, under the authorizer a restore runs under, and hands it back with
/// nothing of the whole backup checked: a caller reading one table a part or chunk at a time.
pub async fn load_objects(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    objects: Vec<ObjectEntry>,
    key: Option<&Key>,
    mut conn: Connection,
) -> Result<Connection> {
    confine(&mut conn, true)?;
    let applier = Applier::new(conn, manifest, &Selection::default(), Erasing::default());
    let mut conn = stream_sql(store, manifest, objects, key, applier)
        .await?
        .into_schema();
    confine(&mut conn, false)?;
    Ok(conn)
}

/// While a backup's SQL runs, SQLite itself refuses what no backup does: opening another file
/// (`ATTACH`, and `VACUUM INTO` through it) and setting any pragma but the prelude's (FTS5 reads
/// `data_version` on its own). The statement check already keeps such statements out; this holds
/// for whatever SQLite runs on their behalf.
pub fn confine(conn: &mut Connection, on: bool) -> rusqlite::Result<()> {
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    fn allow(ctx: AuthContext<'_>) -> Authorization {
        match ctx.action {
            AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
            AuthAction::Pragma {
                pragma_name,
                pragma_value: Some(_),
            } if !pragma_name.eq_ignore_ascii_case("defer_foreign_keys") => Authorization::Deny,
            _ => Authorization::Allow,
        }
    }
    conn.authorizer(on.then_some(allow as fn(AuthContext<'_>) -> Authorization))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::SchemaKind::{Index, Table, Trigger, View};

    /// The statements an [`Applier`] keeps, in order.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Execute for Log {
        fn execute(&mut self, sql: &str) -> Result<()> {
            self.0.push(sql.to_string());
            Ok(())
        }
    }

    fn entry(kind: SchemaKind, name: &str, table: &str) -> SchemaEntry {
        SchemaEntry {
            kind,
            name: name.into(),
            table: table.into(),
        }
    }

    fn object(kind: ObjectKind, key: &str) -> ObjectEntry {
        ObjectEntry {
            key: key.into(),
            kind,
            table: None,
            rows: 0,
            bytes: 0,
            sha256: String::new(),
            chunk: None,
            sql_bytes: 0,
        }
    }

    const SCHEMA: &str =
        "PRAGMA defer_foreign_keys=TRUE;\nCREATE TABLE a(x);\nCREATE TABLE \"b\"(y);\n";
    const POST: &str = "CREATE INDEX i ON a(x);\nCREATE VIEW v AS SELECT 1;\n\
                        CREATE TRIGGER tr AFTER INSERT ON b BEGIN SELECT 1; END;\n";

    fn entries() -> Vec<SchemaEntry> {
        vec![
            entry(Table, "a", "a"),
            entry(Table, "b", "b"),
            entry(Index, "i", "a"),
            entry(View, "v", "v"),
            entry(Trigger, "tr", "b"),
        ]
    }

    /// Feeds `parts` to an [`Applier`] of `tables`, a few bytes at a time (statements cross
    /// chunks), as [`stream_sql`] does; returns what it applied.
    fn apply(
        schema: Vec<SchemaEntry>,
        parts: &[(ObjectKind, &str, &str)],
        tables: &[&str],
    ) -> Result<Vec<String>, String> {
        let manifest = Manifest {
            format: crate::format::manifest::PLAIN_FORMAT,
            tool: "d1r2".into(),
            id: "20261124T221500Z".into(),
            created: chrono::Utc::now(),
            label: None,
            public_label: false,
            source: crate::model::SourceInfo {
                kind: "sqlite".into(),
                database_id: None,
                name: None,
                bookmark: None,
                end_bookmark: None,
            },
            compression: crate::format::codec::Compression::Gzip,
            encryption: None,
            tables: vec![],
            schema,
            objects: vec![],
        };
        let selection = Selection {
            tables: tables.iter().map(|t| t.to_string()).collect(),
        };
        let mut applier = Applier::new(Log::default(), &manifest, &selection, Erasing::default());
        for (kind, key, sql) in parts {
            let object = object(*kind, key);
            for chunk in sql.as_bytes().chunks(7) {
                applier
                    .feed(&object, Some(chunk))
                    .map_err(|e| e.to_string())?;
            }
            applier.feed(&object, None).map_err(|e| e.to_string())?;
        }
        applier
            .finish()
            .map(|(log, _)| log.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_schema_statement_is_matched_to_its_entry_table() {
        use ObjectKind::{Data, Post, Schema};
        let rows = (Data, "data/a.sql.gz", "INSERT INTO a VALUES(1);\n");
        let post_with_insert = format!("{POST}INSERT INTO a(a) VALUES(2);\n");
        let whole = [
            (Schema, "schema.sql.gz", SCHEMA),
            rows,
            (Post, "post.sql.gz", POST),
        ];
        assert_eq!(apply(entries(), &whole, &[]).unwrap().len(), 7);
        let edited = |edit: fn(&mut Vec<SchemaEntry>)| {
            let mut schema = entries();
            edit(&mut schema);
            schema
        };
        // (what the manifest's schema list says, the parts, the part named and what is said)
        let cases: Vec<(&str, Vec<SchemaEntry>, Vec<_>, &str, &str)> = vec![
            (
                "a table's entry dropped",
                edited(|s| {
                    s.remove(1);
                }),
                whole.to_vec(),
                "schema.sql.gz",
                "entry index \"i\" on \"a\"",
            ),
            (
                "a post entry dropped",
                edited(|s| {
                    s.remove(2);
                }),
                whole.to_vec(),
                "post.sql.gz",
                "entry view \"v\": it creates index \"i\" on \"a\"",
            ),
            (
                "the last entry dropped",
                edited(|s| {
                    s.pop();
                }),
                whole.to_vec(),
                "post.sql.gz",
                "has no entry for its statement 3 (trigger \"tr\" on \"b\")",
            ),
            (
                "two tables swapped",
                edited(|s| s.swap(0, 1)),
                whole.to_vec(),
                "schema.sql.gz",
                "entry table \"b\": it creates table \"a\"",
            ),
            (
                "a view and a trigger swapped",
                edited(|s| s.swap(3, 4)),
                whole.to_vec(),
                "post.sql.gz",
                "it creates view \"v\"",
            ),
            (
                "a name changed",
                edited(|s| s[3].name = "w".into()),
                whole.to_vec(),
                "post.sql.gz",
                "entry view \"w\" on \"v\": it creates view \"v\"",
            ),
            (
                "an index's table changed",
                edited(|s| s[2].table = "b".into()),
                whole.to_vec(),
                "post.sql.gz",
                "entry index \"i\" on \"b\": it creates index \"i\" on \"a\"",
            ),
            (
                "a kind changed",
                edited(|s| s[3].kind = Trigger),
                whole.to_vec(),
                "post.sql.gz",
                "it creates view \"v\"",
            ),
            (
                "a table entry more",
                edited(|s| s.insert(2, entry(Table, "c", "c"))),
                whole.to_vec(),
                "schema.sql.gz",
                "it ends where the manifest's schema list names table \"c\"",
            ),
            (
                "a post entry more",
                edited(|s| s.push(entry(Index, "j", "b"))),
                whole.to_vec(),
                "post.sql.gz",
                "it ends where the manifest's schema list names index \"j\" on \"b\"",
            ),
            (
                "a post entry where a table's goes",
                edited(|s| s.swap(1, 2)),
                whole.to_vec(),
                "schema.sql.gz",
                "a schema part holds no index",
            ),
            (
                "the post part left out",
                entries(),
                whole[..2].to_vec(),
                "backup 20261124T221500Z",
                "its schema list names index \"i\" on \"a\", which no part creates",
            ),
            (
                "an INSERT in the post part that is no rebuild",
                edited(|s| s.push(entry(SchemaKind::Rebuild, "a", "a"))),
                vec![whole[0], whole[1], (Post, "post.sql.gz", &post_with_insert)],
                "post.sql.gz",
                "entry rebuild \"a\": it creates nothing a schema entry names",
            ),
        ];
        for (what, schema, parts, part, said) in cases {
            let err = apply(schema, &parts, &[]).expect_err(what);
            assert!(err.contains(part) && err.contains(said), "{what}: {err}");
        }
    }

    /// An error names a statement by number and keywords (and, plain, by what it creates),
    /// and says why SQLite refused it without quoting it.
    #[test]
    fn errors_name_statements_without_quoting_them() {
        let insert = "INSERT INTO \"patients\"(a,b) VALUES(1,'SSN-123-45')";
        let trigger = "CREATE TRIGGER tr AFTER INSERT ON b BEGIN SELECT 'x'; END";
        for (number, sql, sealed, want) in [
            (7, insert, false, "statement 7 (INSERT INTO)"),
            (7, insert, true, "statement 7 (INSERT INTO)"),
            (2, trigger, false, "statement 2 (trigger \"tr\" on \"b\")"),
            (2, trigger, true, "statement 2 (CREATE TRIGGER)"),
            (
                1,
                "'SSN' garbage",
                false,
                "statement 1 (not a statement d1r2 writes)",
            ),
        ] {
            assert_eq!(statement_ref(number, sql, sealed), want, "{sql}");
        }
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE patients(a UNIQUE); INSERT INTO patients VALUES('SSN-1');",
        )
        .unwrap();
        let fail = |sql: &str| Error::from(conn.execute_batch(sql).unwrap_err());
        let unique = fail("INSERT INTO patients VALUES('SSN-1')");
        let syntax = fail("INSERT INTO patients VALUES('SSN-2' 'SSN-3')");
        for (err, sealed, want) in [
            (&unique, false, "UNIQUE constraint failed: patients.a"),
            (&unique, true, "constraint failed"),
            (&syntax, false, "SQL logic error"),
            (&syntax, true, "SQL logic error"),
        ] {
            assert_eq!(apply_reason(err, sealed), want);
        }
    }

    /// A restore of some tables keeps their statements and the views, and leaves the rest.
    #[test]
    fn a_selection_keeps_the_statements_of_its_tables() {
        use ObjectKind::{Post, Schema};
        let parts = [
            (Schema, "schema.sql.gz", SCHEMA),
            (Post, "post.sql.gz", POST),
        ];
        let kept = |tables: &[&str]| {
            apply(entries(), &parts, tables)
                .unwrap()
                .iter()
                .map(|s| s.split([' ', '(']).nth(2).unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(&["b"]), ["", "\"b\"", "v", "tr"].map(String::from));
        assert_eq!(kept(&["a"]), ["", "a", "i", "v"].map(String::from));
        assert_eq!(
            kept(&[]),
            ["", "a", "\"b\"", "i", "v", "tr"].map(String::from)
        );
    }

    /// What SQLite runs while confined: a backup's own statements, FTS5's reads of its pragmas;
    /// never another file or a pragma set.
    #[test]
    fn a_confined_connection_opens_no_other_file_and_sets_no_pragma() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_scratch(&dir.path().join("db")).unwrap();
        confine(&mut conn, true).unwrap();
        let other = dir.path().join("other.db");
        for refused in [
            format!("ATTACH '{}' AS x", other.display()),
            format!("VACUUM INTO '{}'", other.display()),
            "PRAGMA journal_mode=WAL".into(),
            "PRAGMA writable_schema=ON".into(),
        ] {
            assert!(conn.execute_batch(&refused).is_err(), "{refused}");
        }
        conn.execute_batch(
            "PRAGMA defer_foreign_keys=TRUE;
             CREATE TABLE a(id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO a VALUES (1, 'text');
             CREATE VIRTUAL TABLE f USING fts5(body, content='a', content_rowid='id');
             INSERT INTO f(f) VALUES('rebuild');",
        )
        .unwrap();
        assert!(!other.exists());
        confine(&mut conn, false).unwrap();
        conn.execute_batch("COMMIT; PRAGMA journal_mode=DELETE")
            .unwrap();
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        let s = String::from;
        let keys = [
            (KeyCheckError::Missing { id: s("1") }, BadInput),
            (
                KeyCheckError::Wrong {
                    id: s("1"),
                    expected: s("a"),
                    actual: s("b"),
                },
                BadInput,
            ),
            (KeyCheckError::Unencrypted { id: s("1") }, Failed),
        ];
        for (err, kind) in keys {
            assert_eq!(err.kind(), kind, "{err}");
        }
        let loads = [
            (
                LoadError::Corrupt {
                    key: s("k"),
                    reason: s("x"),
                },
                Failed,
            ),
            (
                LoadError::Missing {
                    key: s("k"),
                    store: s("dir"),
                },
                Failed,
            ),
            (
                LoadError::Manifest {
                    id: s("1"),
                    reason: s("x"),
                },
                Failed,
            ),
            (
                LoadError::Apply {
                    key: s("k"),
                    reason: s("x"),
                    statement: s("INSERT"),
                },
                Failed,
            ),
        ];
        for (err, kind) in loads {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
