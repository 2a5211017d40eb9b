//! Reading a backup back: each part streamed from the store, its size and SHA-256 checked, its SQL
//! decoded, split into statements and applied. Shared by restore, verify and export, so all three
//! trust a part by the same rules.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;
use rusqlite::Connection;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::codec::{HashingReader, decoder};
use crate::crypto::Key;
use crate::dump::shape::is_backup_statement;
use crate::dump::split::Splitter;
use crate::manifest::{EncryptionInfo, Manifest, ObjectEntry, ObjectKind};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("part {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("part {key} is missing from {store}")]
    Missing { key: String, store: String },
    #[error("applying part {key}: {reason} (in statement: {statement})")]
    Apply {
        key: String,
        reason: String,
        statement: String,
    },
}

/// Why a backup cannot be decrypted with the key at hand. Both are checked before any part is
/// downloaded, and name fingerprints, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error("backup {id} is encrypted; set {}", crate::crypto::KEY_ENV)]
    Missing { id: String },
    #[error(
        "backup {id} was encrypted with the key of fingerprint {expected}, but {} has fingerprint {actual}",
        crate::crypto::KEY_ENV
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
        crate::crypto::KEY_ENV,
        crate::crypto::KEY_ENV
    )]
    Unencrypted { id: String },
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
) -> anyhow::Result<S> {
    let decryption: Option<Key> = check_key(manifest, key)?.cloned();
    let handle = tokio::runtime::Handle::current();
    let manifest = manifest.clone();
    let objects = Arc::new(objects);
    let (send, receive) = std::sync::mpsc::sync_channel::<(usize, Option<Vec<u8>>)>(CHUNKS_AHEAD);
    let sinking = {
        let objects = objects.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<S> {
            for (index, bytes) in receive {
                sink.feed(&objects[index], bytes.as_deref())?;
            }
            Ok(sink)
        })
    };
    let reading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // The next object is asked for while this one is read: parts are a few MiB each, and a
        // round trip to the store between two of them would idle the load.
        let get = |object: &ObjectEntry| {
            let (store, key) = (store.clone(), manifest.key(object));
            handle.spawn(async move { store.get(&key).await })
        };
        let mut next = objects.first().map(get);
        for (index, object) in objects.iter().enumerate() {
            let key = manifest.key(object);
            let asked = std::mem::replace(&mut next, objects.get(index + 1).map(get));
            let got = handle.block_on(asked.expect("asked with the object before"))?;
            let stream = got.map_err(|e| {
                if e.is_not_found() {
                    anyhow::Error::new(LoadError::Missing {
                        key: key.clone(),
                        store: store.to_string(),
                    })
                } else {
                    e.into()
                }
            })?;
            let reader = StreamReader::new(stream.map_err(std::io::Error::other));
            let mut hashing =
                HashingReader::new(SyncIoBridge::new_with_handle(reader, handle.clone()));
            let corrupt = |reason: String| LoadError::Corrupt {
                key: key.clone(),
                reason,
            };
            let decoded = {
                let part_key = decryption.as_ref().map(|k| manifest.part_key(k, object));
                let mut plain = decoder(&mut hashing, manifest.compression, part_key.as_ref());
                let mut buf = vec![0u8; CHUNK];
                loop {
                    match plain.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            crate::progress::add(0, n as u64);
                            // The sink stopped: what it failed on is the error to report.
                            if send.send((index, Some(buf[..n].to_vec()))).is_err() {
                                return Ok(());
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
            };
            let (bytes, sha256) = hashing.finish().map_err(|e| corrupt(e.to_string()))?;
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
            decoded.map_err(|e| corrupt(format!("cannot decode: {e}")))?;
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

/// Where decoded SQL goes: a database being loaded, or an export file.
pub trait SqlSink: Send + 'static {
    /// Takes the next bytes of `object`'s SQL; `None` marks the end of the object, after its
    /// size and digest were checked.
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> anyhow::Result<()>;
}

/// Which statements of a backup to apply: all, or those of some tables.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub tables: Vec<String>,
}

impl Selection {
    /// Refuses a selection naming a table the backup does not have (bad input).
    pub fn check(&self, manifest: &Manifest) -> anyhow::Result<()> {
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

    fn wants(&self, table: &str) -> bool {
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

/// Where an [`Applier`] sends each statement it keeps.
pub trait Execute: Send + 'static {
    fn execute(&mut self, sql: &str) -> anyhow::Result<()>;
}

impl Execute for Connection {
    fn execute(&mut self, sql: &str) -> anyhow::Result<()> {
        Ok(self.execute_batch(sql)?)
    }
}

/// Splits a backup's SQL into statements, keeps those of the selection, and hands them on one by
/// one: to a SQLite connection for restore and verify, to a file for D1's import.
pub struct Applier<E: Execute = Connection> {
    conn: E,
    splitter: Splitter,
    /// Whether each schema/post statement (after the prelude) is applied, in manifest order.
    schema_filter: Vec<bool>,
    schema_index: usize,
}

impl<E: Execute> Applier<E> {
    pub fn new(conn: E, manifest: &Manifest, selection: &Selection) -> Self {
        let schema_filter = manifest
            .schema
            .iter()
            .map(|e| e.kind == "view" || selection.wants(&e.table))
            .collect();
        Applier {
            conn,
            splitter: Splitter::new(),
            schema_filter,
            schema_index: 0,
        }
    }

    pub fn into_connection(self) -> E {
        self.conn
    }
}

impl<E: Execute> SqlSink for Applier<E> {
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> anyhow::Result<()> {
        let Some(bytes) = bytes else {
            let splitter = std::mem::take(&mut self.splitter);
            if let Some(rest) = splitter.finish() {
                return Err(unfinished(object, &rest).into());
            }
            return Ok(());
        };
        let conn = &mut self.conn;
        let filter = &self.schema_filter;
        let index = &mut self.schema_index;
        let mut splitter = std::mem::take(&mut self.splitter);
        let result = splitter.push(bytes, |stmt| {
            let sql = backup_statement(object, stmt)?;
            if object.kind != ObjectKind::Data && !sql.starts_with("PRAGMA defer_foreign_keys") {
                let wanted = filter.get(*index).copied().unwrap_or(true);
                *index += 1;
                if !wanted {
                    return Ok(());
                }
            }
            conn.execute(sql).map_err(|e| {
                anyhow::Error::new(LoadError::Apply {
                    key: object.key.clone(),
                    reason: e.to_string(),
                    statement: excerpt(sql),
                })
            })
        });
        self.splitter = splitter;
        result
    }
}

/// `stmt` as text, when it is a statement d1r2 writes into a part of `object`'s kind (see
/// [`crate::dump::shape`]): anything else is a part someone else wrote, and goes nowhere.
pub fn backup_statement<'s>(object: &ObjectEntry, stmt: &'s [u8]) -> Result<&'s str, LoadError> {
    let corrupt = |reason: String| LoadError::Corrupt {
        key: object.key.clone(),
        reason,
    };
    let sql = std::str::from_utf8(stmt).map_err(|_| corrupt("a statement is not UTF-8".into()))?;
    if !is_backup_statement(object.kind, sql) {
        return Err(corrupt(format!(
            "it holds a statement d1r2 does not write there, refused: {}",
            excerpt(sql)
        )));
    }
    Ok(sql)
}

/// The error for a part whose SQL ends inside a statement.
pub fn unfinished(object: &ObjectEntry, rest: &str) -> LoadError {
    LoadError::Corrupt {
        key: object.key.clone(),
        reason: format!("it ends inside a statement: {}", excerpt(rest)),
    }
}

fn excerpt(sql: &str) -> String {
    let one_line = sql.replace('\n', " ");
    if one_line.chars().count() > 120 {
        format!("{}...", one_line.chars().take(120).collect::<String>())
    } else {
        one_line
    }
}

/// Opens a new scratch database tuned for a bulk load that is thrown away if anything fails.
/// Foreign keys are off, as in the `sqlite3` shell: a local source may legally hold rows that
/// violate them, and a restore must bring back what was there (verify reports violations).
pub fn open_scratch(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA foreign_keys=OFF; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; BEGIN;",
    )?;
    Ok(conn)
}

/// Loads the selected part of a backup into the database at `path` (which may already hold
/// tables), commits, and returns the connection.
pub async fn load_into(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    selection: &Selection,
    key: Option<&Key>,
    path: &Path,
) -> anyhow::Result<Connection> {
    check_key(manifest, key)?;
    let mut conn = open_scratch(path)?;
    confine(&mut conn, true)?;
    let applier = Applier::new(conn, manifest, selection);
    let applier = stream_sql(store, manifest, selection.objects(manifest), key, applier).await?;
    let mut conn = applier.into_connection();
    confine(&mut conn, false)?;
    conn.execute_batch("COMMIT")?;
    Ok(conn)
}

/// While a backup's SQL runs, SQLite itself refuses what no backup does: opening another file
/// (`ATTACH`, and `VACUUM INTO` through it) and setting any pragma but the prelude's (FTS5 reads
/// `data_version` on its own). The statement check already keeps such statements out; this holds
/// for whatever SQLite runs on their behalf.
fn confine(conn: &mut Connection, on: bool) -> rusqlite::Result<()> {
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
}
