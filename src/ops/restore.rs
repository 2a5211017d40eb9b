//! Restoring a backup into a local SQLite file.
//!
//! The database is built aside, in a temporary file next to the target, and renamed over the
//! target only once every part has loaded and checked out; a failure at any point leaves the
//! target exactly as it was.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Context, Result, bad_input};
use crate::format::crypto::Key;
use crate::format::load::{Selection, check_key, load_into};
use crate::format::manifest::Manifest;
use crate::model::value::quote_ident;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    pub tables: usize,
    pub rows: u64,
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
    let occupied = target_state(target)?;
    if occupied && !force {
        return Err(bad_input(format!(
            "{} already holds data; pass --force to replace it",
            target.display()
        )));
    }
    let temp = TempFile(temp_path(target));
    if occupied {
        settle_wal(target);
    }
    if occupied && !selection.tables.is_empty() {
        std::fs::copy(target, &temp.0)
            .with_context(|| format!("copying {} aside", target.display()))?;
        let conn = Connection::open(&temp.0)?;
        for table in &selection.tables {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_ident(table)))?;
        }
    }
    let conn = load_into(store, manifest, selection, key, &temp.0).await?;
    conn.execute_batch("PRAGMA journal_mode=DELETE")?;
    drop(conn);
    std::fs::File::open(&temp.0)?.sync_all()?;
    std::fs::rename(&temp.0, target)
        .with_context(|| format!("moving the restored database to {}", target.display()))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    let tables: Vec<_> = manifest
        .tables
        .iter()
        .filter(|t| selection.tables.is_empty() || selection.tables.contains(&t.name))
        .collect();
    Ok(RestoreOutcome {
        tables: tables.len(),
        rows: tables.iter().map(|t| t.rows).sum(),
    })
}

/// Whether `target` exists and holds anything: a file that is not an empty SQLite database
/// counts as occupied, so a restore never overwrites a stranger's file silently.
fn target_state(target: &Path) -> Result<bool> {
    let Ok(meta) = std::fs::metadata(target) else {
        return Ok(false);
    };
    if meta.is_dir() {
        return Err(bad_input(format!(
            "{} is a directory, not a database file",
            target.display()
        )));
    }
    if meta.len() == 0 {
        return Ok(false);
    }
    let objects =
        Connection::open_with_flags(target, OpenFlags::SQLITE_OPEN_READ_ONLY).and_then(|c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        });
    Ok(!matches!(objects, Ok(0)))
}

/// Folds a WAL file into the database before the file is replaced, so no stale WAL is applied to
/// the restored database later.
fn settle_wal(target: &Path) {
    if let Ok(conn) = Connection::open(target) {
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = target.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
}

fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    let nonce: u32 = rand::random();
    target.with_file_name(format!(".{name}.d1r2-restore-{nonce:08x}"))
}

/// Removes the scratch file unless it was renamed into place.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
