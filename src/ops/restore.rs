//! Restoring a backup into a local SQLite file.
//!
//! The new database is built aside, in a scratch file in the target's folder
//! (`ops::scratch`), and checked as verify checks it (integrity, row counts) before the target
//! is touched; a failure up to there leaves the target as it was. An existing target is then
//! written through SQLite, never around it: the online backup API copies the checked database
//! into it through a connection on the target, in one write transaction under the target's own
//! journal or WAL. Another connection (an app holding the database open) keeps working and sees
//! the old database or the new one, never a mix; its WAL is neither checkpointed nor deleted by
//! hand; the file keeps its inode, mode and owner. A target that stays locked by a writer is
//! refused, unchanged. A new target is the scratch file itself, linked into place.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{Classify, Context, Kind, Result};
use crate::format::crypto::Key;
use crate::format::load::{Selection, begin_load, check_key, load_on};
use crate::format::manifest::Manifest;
use crate::model::value::quote_ident;
use crate::ops::erasures::{ErasureOutcome, plan};
use crate::ops::scratch::{Purpose, Scratch, base_of, check_folder, folder_of, sweep};
use crate::ops::verify::loaded_problems;
use crate::store::Store;

/// How long a restore waits for a lock on the target that another connection holds: long enough
/// for an app's transaction to end, short enough that a held one is reported, not waited out.
const BUSY_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub tables: usize,
    pub rows: u64,
    /// The recorded erasures applied, and what each removed.
    pub erasures: Vec<ErasureOutcome>,
}

/// Why a restore into a file did not happen; in every case the target is as it was.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    #[error("{target} already holds data; pass --force to replace it")]
    Occupied { target: String },
    #[error("{target} is not a SQLite database; restore into a new file, or remove it first")]
    NotADatabase { target: String },
    #[error(
        "{target} is in use: another connection held its lock for {} s; it was not changed, run the restore again once its writer is done",
        BUSY_WAIT.as_secs()
    )]
    Busy { target: String },
    #[error("the restored database does not check out ({}); {target} was not changed", problems.join("; "))]
    Check {
        target: String,
        problems: Vec<String>,
    },
    #[error(
        "{target} was written to while its other tables were read; it was not changed, run the restore again"
    )]
    Changed { target: String },
    #[error("{target} appeared while the restore ran; it was kept, not replaced")]
    Appeared { target: String },
}

/// Occupied and not-a-database targets are the user's to choose again; a busy or changing
/// target, or a backup that does not check out, is a restore that failed.
impl Classify for RestoreError {
    fn kind(&self) -> Kind {
        match self {
            RestoreError::Occupied { .. } | RestoreError::NotADatabase { .. } => Kind::BadInput,
            RestoreError::Busy { .. }
            | RestoreError::Check { .. }
            | RestoreError::Changed { .. }
            | RestoreError::Appeared { .. } => Kind::Failed,
        }
    }
}

/// Restores `manifest` into the SQLite file `target`. Without `force`, a target that already
/// holds anything is refused. With `selection` naming tables and an existing target, only those
/// tables are replaced and the rest of the target is kept.
pub async fn restore_to_file(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    selection: &Selection,
    key: Option<&Key>,
    target: &Path,
    force: bool,
) -> Result<RestoreOutcome> {
    check_key(manifest, key)?;
    selection.check(manifest)?;
    check_folder(target)?;
    let shown = target.display().to_string();
    let dir = folder_of(target);
    sweep(dir);
    let planned = plan(store.clone(), manifest, key).await?;
    let existing = Target::open(target)?;
    if let Some(t) = &existing
        && t.occupied
        && !force
    {
        return Err(RestoreError::Occupied { target: shown }.into());
    }
    if let Some(t) = &existing {
        t.probe()?;
    }
    let mut scratch = Scratch::create(dir, &base_of(target), Purpose::Restore)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
    let mut conn = Connection::open(scratch.path())?;
    match &existing {
        Some(t) if t.occupied && !selection.tables.is_empty() => {
            keep_other_tables(t, &mut conn, selection)?
        }
        Some(t) => {
            same_layout(&t.conn, &conn)?;
            begin_load(&conn)?;
        }
        None => begin_load(&conn)?,
    }
    let erasing = planned.erasing.clone();
    let (conn, erased) = load_on(store, manifest, (selection, erasing), key, conn).await?;
    let problems = loaded_problems(&conn, manifest, selection, &erased)?;
    if !problems.is_empty() {
        return Err(RestoreError::Check {
            target: shown,
            problems,
        }
        .into());
    }
    match existing {
        Some(mut t) => {
            if t.occupied && !selection.tables.is_empty() {
                t.unchanged()?;
            }
            t.write_from(&conn)?;
        }
        None => place_new(conn, &mut scratch, target)?,
    }
    let tables: Vec<_> = manifest
        .tables
        .iter()
        .filter(|t| selection.wants(&t.name))
        .collect();
    let removed: u64 = erased.by_table.values().sum();
    Ok(RestoreOutcome {
        tables: tables.len(),
        rows: tables.iter().map(|t| t.rows).sum::<u64>() - removed,
        erasures: planned.outcomes(&erased),
    })
}

/// An existing target, opened through SQLite for the whole restore, so every read and the final
/// write take SQLite's own locks and see what its other connections committed, WAL included.
struct Target {
    conn: Connection,
    shown: String,
    /// Whether it holds any schema object (an empty file or database does not).
    occupied: bool,
    /// `PRAGMA data_version` when it was read: another connection's commit changes it.
    version: i64,
}

impl Target {
    /// Opens `path` if there is a file there: refused if it is not a SQLite database or a writer
    /// keeps it locked past [`BUSY_WAIT`] (checked now, before anything is downloaded, and again
    /// when it is written). `None` when there is no file.
    fn open(path: &Path) -> Result<Option<Target>> {
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        let shown = path.display().to_string();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening {shown}"))?;
        conn.busy_timeout(BUSY_WAIT)?;
        let objects = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| refusal(e, &shown))?;
        let version = conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| refusal(e, &shown))?;
        let target = Target {
            conn,
            shown,
            occupied: objects > 0,
            version,
        };
        Ok(Some(target))
    }

    /// Refuses a target another connection keeps a write lock on (a write transaction, or
    /// readers a rollback-journal commit would wait for), without writing anything.
    fn probe(&self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|e| refusal(e, &self.shown))
    }

    /// Refuses to write a target another connection committed to since its tables were read.
    fn unchanged(&self) -> Result<()> {
        let now: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| refusal(e, &self.shown))?;
        if now != self.version {
            return Err(RestoreError::Changed {
                target: self.shown.clone(),
            }
            .into());
        }
        Ok(())
    }

    /// Copies the database of `from` into the target in one step: one write transaction on
    /// the target, committed whole or rolled back whole.
    fn write_from(&mut self, from: &Connection) -> Result<()> {
        self.probe()?;
        let shown = self.shown.clone();
        let copy = Backup::new(from, &mut self.conn).map_err(|e| refusal(e, &shown))?;
        let step = copy.step(-1).map_err(|e| refusal(e, &shown));
        finish_copy(step, &shown)
            .with_context(|| format!("writing the restored database into {shown}"))
    }
}

/// The outcome of one whole-database backup step: anything but done leaves the destination
/// unchanged (the step's transaction is rolled back when the copy is dropped).
fn finish_copy(step: Result<StepResult>, shown: &str) -> Result<()> {
    match step? {
        StepResult::Done => Ok(()),
        StepResult::Busy | StepResult::Locked => Err(RestoreError::Busy {
            target: shown.to_string(),
        }
        .into()),
        _ => Err(crate::error::failed("the copy stopped before its end")),
    }
}

/// A SQLite error on the target as the restore reports it: a lock held past the wait, or a file
/// that is not a database, is refused by name; anything else is a failure with its cause.
fn refusal(e: rusqlite::Error, shown: &str) -> crate::error::Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => RestoreError::Busy {
            target: shown.to_string(),
        }
        .into(),
        Some(ErrorCode::NotADatabase) => RestoreError::NotADatabase {
            target: shown.to_string(),
        }
        .into(),
        _ => crate::error::Error::from(e).context(format!("reading {shown}")),
    }
}

/// Gives the scratch database the target's page size, page bookkeeping and text encoding before
/// anything is written to it: a WAL database takes a copy only of its own page size, and the
/// target's other connections keep the layout they opened.
fn same_layout(target: &Connection, scratch: &Connection) -> Result<()> {
    let page_size: i64 = target.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let auto_vacuum: i64 = target.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    let encoding: String = target.query_row("PRAGMA encoding", [], |r| r.get(0))?;
    scratch.execute_batch(&layout_pragmas(page_size, auto_vacuum, &encoding))?;
    Ok(())
}

/// The pragmas that give a new database a layout; values as SQLite reported them, anything
/// else left at SQLite's default.
fn layout_pragmas(page_size: i64, auto_vacuum: i64, encoding: &str) -> String {
    let mut sql = String::new();
    if (512..=65536).contains(&page_size) && (page_size & (page_size - 1)) == 0 {
        sql.push_str(&format!("PRAGMA page_size={page_size}; "));
    }
    if (0..=2).contains(&auto_vacuum) {
        sql.push_str(&format!("PRAGMA auto_vacuum={auto_vacuum}; "));
    }
    if ["UTF-8", "UTF-16le", "UTF-16be"].contains(&encoding) {
        sql.push_str(&format!("PRAGMA encoding='{encoding}'; "));
    }
    sql
}

/// For a restore of some tables: the target's database read into the scratch file through
/// SQLite (a consistent snapshot, its WAL included), its copies of the chosen tables dropped.
fn keep_other_tables(
    target: &Target,
    scratch: &mut Connection,
    selection: &Selection,
) -> Result<()> {
    scratch.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")?;
    {
        let copy = Backup::new(&target.conn, scratch).map_err(|e| refusal(e, &target.shown))?;
        let step = copy.step(-1).map_err(|e| refusal(e, &target.shown));
        finish_copy(step, &target.shown).with_context(|| format!("reading {}", target.shown))?;
    }
    // The copy brought the target's header, WAL mode included; the load runs without a journal.
    begin_load(scratch)?;
    for table in &selection.tables {
        scratch.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_ident(table)))?;
    }
    Ok(())
}

/// A new target: the checked scratch database, made durable and linked into place, unless a
/// file appeared there meanwhile (kept: it is someone's).
fn place_new(conn: Connection, scratch: &mut Scratch, target: &Path) -> Result<()> {
    conn.execute_batch("PRAGMA journal_mode=DELETE")?;
    drop(conn);
    std::fs::File::open(scratch.path())?.sync_all()?;
    let shown = target.display().to_string();
    match scratch.link_to(target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(RestoreError::Appeared { target: shown }.into());
        }
        // A file system without hard links: a rename, which replaces.
        Err(_) => scratch
            .rename_to(target)
            .with_context(|| format!("moving the restored database to {shown}"))?,
    }
    if let Ok(dir) = std::fs::File::open(folder_of(target)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pragmas_take_only_what_sqlite_reports() {
        let cases: Vec<(i64, i64, &str, &str)> = vec![
            (
                4096,
                0,
                "UTF-8",
                "PRAGMA page_size=4096; PRAGMA auto_vacuum=0; PRAGMA encoding='UTF-8'; ",
            ),
            (
                65536,
                2,
                "UTF-16le",
                "PRAGMA page_size=65536; PRAGMA auto_vacuum=2; PRAGMA encoding='UTF-16le'; ",
            ),
            (
                512,
                1,
                "UTF-16be",
                "PRAGMA page_size=512; PRAGMA auto_vacuum=1; PRAGMA encoding='UTF-16be'; ",
            ),
            (1000, 3, "latin1'; DROP", ""),
            (131072, -1, "", ""),
            (256, 0, "utf8", "PRAGMA auto_vacuum=0; "),
        ];
        for (page_size, auto_vacuum, encoding, expected) in cases {
            assert_eq!(
                layout_pragmas(page_size, auto_vacuum, encoding),
                expected,
                "{page_size} {auto_vacuum} {encoding}"
            );
        }
    }

    #[test]
    fn every_error_has_its_kind() {
        let t = || "t.db".to_string();
        let cases = [
            (RestoreError::Occupied { target: t() }, Kind::BadInput),
            (RestoreError::NotADatabase { target: t() }, Kind::BadInput),
            (RestoreError::Busy { target: t() }, Kind::Failed),
            (
                RestoreError::Check {
                    target: t(),
                    problems: vec!["x".into()],
                },
                Kind::Failed,
            ),
            (RestoreError::Changed { target: t() }, Kind::Failed),
            (RestoreError::Appeared { target: t() }, Kind::Failed),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}
