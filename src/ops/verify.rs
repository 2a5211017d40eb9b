//! Verifying a backup: everything a restore would trust, checked without touching a database
//! anyone uses. Every part is present with its recorded size, its SHA-256 matches, the SQL loads
//! into a scratch SQLite database, `PRAGMA integrity_check` passes, and every table has the
//! number of rows the manifest recorded.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;

use crate::error::Result;
use crate::format::crypto::Key;
use crate::format::load::{Erasing, Selection, check_key, load_into};
use crate::format::manifest::Manifest;
use crate::model::value::quote_ident;
use crate::ops::erasures::{ErasureOutcome, plan};
use crate::ops::scratch::{Purpose, Scratch, sweep};
use crate::source::catalog::skip_reason;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
#[error("backup {id} failed verification: {}", problems.join("; "))]
pub(crate) struct VerifyFailed {
    pub id: String,
    pub problems: Vec<String>,
}

/// A backup that does not verify failed; naming one that is not there is refused before.
impl crate::error::Classify for VerifyFailed {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Failed
    }
}

#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub tables: usize,
    pub rows: u64,
    pub bytes: u64,
    /// Foreign key violations found (reported, not fatal: SQLite allows them when foreign keys
    /// are off, and the source may hold them).
    pub foreign_key_violations: u64,
    /// The recorded erasures applied after the load, and what each removed.
    pub erasures: Vec<ErasureOutcome>,
}

/// What does not hold in a database a backup was just loaded into: `PRAGMA integrity_check`, and
/// the row count the manifest recorded for each selected table. Empty when it checks out; a
/// restore runs the same checks before its target is touched.
pub(crate) fn loaded_problems(
    conn: &Connection,
    manifest: &Manifest,
    selection: &Selection,
    erased: &Erasing,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        problems.push(format!("integrity check: {integrity}"));
    }
    for table in &manifest.tables {
        if table.note.is_some()
            || skip_reason(&table.name, &[]).is_some()
            || !selection.wants(&table.name)
        {
            continue;
        }
        let sql = format!("SELECT count(*) FROM {}", quote_ident(&table.name));
        let count: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
        // The rows recorded erasures removed were there, and are counted as such.
        let removed = erased.by_table.get(&table.name).copied().unwrap_or(0);
        if count as u64 + removed != table.rows {
            problems.push(format!(
                "table {} has {count} rows{}, the manifest says {}",
                table.name,
                match removed {
                    0 => String::new(),
                    n => format!(" and erasures removed {n}"),
                },
                table.rows
            ));
        }
    }
    Ok(problems)
}

pub async fn verify(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
) -> Result<VerifyOutcome> {
    check_key(manifest, key)?;
    let fail = |problems: Vec<String>| VerifyFailed {
        id: manifest.id.clone(),
        problems,
    };
    let mut present: HashMap<String, u64> = store
        .list(&format!("{}/", manifest.id))
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    // A chunked backup's rows are in the store's chunks, each checked by its address as it is
    // read; their sizes are not compared, another backup may have stored one first.
    if manifest.objects.iter().any(|o| o.chunk.is_some()) {
        let chunks = store.list(crate::format::chunk::CHUNKS_PREFIX).await?;
        present.extend(chunks.into_iter().map(|o| (o.key, o.size)));
    }
    sweep(&std::env::temp_dir());
    let mut problems = Vec::new();
    for object in &manifest.objects {
        match present.get(&manifest.key(object)) {
            None => problems.push(format!("part {} is missing", object.key)),
            Some(size) if *size != object.bytes && object.chunk.is_none() => {
                problems.push(format!(
                    "part {} is {size} bytes, the manifest says {} (truncated or replaced)",
                    object.key, object.bytes
                ))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(fail(problems).into());
    }
    let planned = plan(store.clone(), manifest, key).await?;
    let scratch = Scratch::create(&std::env::temp_dir(), "backup", Purpose::Verify)?;
    let selection = Selection::default();
    let erasing = planned.erasing.clone();
    let (conn, erased) =
        load_into(store, manifest, (&selection, erasing), key, scratch.path()).await?;
    let problems = loaded_problems(&conn, manifest, &selection, &erased)?;
    if !problems.is_empty() {
        return Err(fail(problems).into());
    }
    let foreign_key_violations = conn
        .prepare("PRAGMA foreign_key_check")?
        .query_map([], |_| Ok(()))?
        .count() as u64;
    Ok(VerifyOutcome {
        tables: manifest.tables.len(),
        rows: manifest.total_rows(),
        bytes: manifest.total_bytes(),
        foreign_key_violations,
        erasures: planned.outcomes(&erased),
    })
}
