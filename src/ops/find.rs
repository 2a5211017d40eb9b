//! Finding a person's rows in the retained backups (an access request), and counting them for
//! an erasure. Only the table asked about is decoded and loaded (with `related`, also the tables
//! whose foreign keys lead to it), into a scratch SQLite file under the authorizer a restore runs
//! under, one part or chunk at a time: memory holds one object's matches, never a table. A
//! predicate is a condition on one row ([`predicate::validate`] allows no subquery), so a chunk,
//! the same SQL wherever a backup names it, gives the same rows: one already searched is not
//! read again.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::format::crypto::Key;
use crate::format::load::load_objects;
use crate::format::manifest::{Manifest, ObjectEntry, ObjectKind};
use crate::format::predicate::{self, PredicateError};
use crate::model::value::{json_cell, quote_ident};
use crate::ops::scratch::{Purpose, Scratch, sweep};
use crate::store::Store;

/// What to look for.
#[derive(Debug, Clone)]
pub(crate) struct FindRequest {
    pub table: String,
    pub predicate: String,
    pub related: bool,
}

/// Where the rows found go: the table each is of, and the row as [`json_cell`]s by column.
pub(crate) type Emit<'a> = dyn FnMut(&Manifest, &str, Value) -> Result<()> + Send + 'a;

/// What a search found, over all the backups searched.
#[derive(Debug, Default)]
pub(crate) struct Searched {
    /// The rows of chunks already searched, by address.
    chunks: HashMap<String, Vec<Value>>,
    pub rows: u64,
    pub backups_with_rows: u64,
    pub chunks_reused: u64,
}

/// Refuses a request the backup's schema cannot answer: a table it lacks, a predicate that is
/// not a condition on that table's rows (both bad input, exit 2).
pub(crate) fn check_request(schema: &mut Connection, request: &FindRequest) -> Result<String> {
    let Some(table) = predicate::table_named(schema, &request.table)? else {
        return Err(PredicateError::NoTable {
            table: request.table.clone(),
        }
        .into());
    };
    predicate::validate(schema, &table, &request.predicate)?;
    Ok(table)
}

/// Searches one backup, handing each row found to `emit`. A backup whose schema lacks the table
/// or a column the predicate names has none of the rows, and is passed over with a warning.
pub(crate) async fn search(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    request: &FindRequest,
    searched: &mut Searched,
    emit: &mut Emit<'_>,
) -> Result<()> {
    let backup = Backup {
        store,
        manifest,
        key,
    };
    let (_scratch, mut conn) = schema_scratch(&backup).await?;
    let table = match check_request(&mut conn, request) {
        Ok(table) => table,
        Err(e) => {
            tracing::warn!("backup {} is not searched: {e}", manifest.id);
            return Ok(());
        }
    };
    let before = searched.rows;
    if request.related {
        search_related(&backup, request, &table, conn, searched, emit).await?;
    } else {
        search_table(&backup, request, &table, conn, searched, emit).await?;
    }
    searched.backups_with_rows += u64::from(searched.rows > before);
    Ok(())
}

/// A backup being read: where, which, with what key.
pub(crate) struct Backup<'a> {
    pub store: Arc<dyn Store>,
    pub manifest: &'a Manifest,
    pub key: Option<&'a Key>,
}

/// A scratch SQLite file (in the temporary folder, removed when the [`Scratch`] is dropped)
/// holding `backup`'s schema, empty, loaded as a restore loads (foreign keys off: a table is
/// loaded without the ones it points at).
pub(crate) async fn schema_scratch(backup: &Backup<'_>) -> Result<(Scratch, Connection)> {
    let dir = std::env::temp_dir();
    sweep(&dir);
    let scratch = Scratch::create(&dir, "backup", Purpose::Find)?;
    let conn = Connection::open(scratch.path())?;
    conn.execute_batch(
        "PRAGMA foreign_keys=OFF; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;",
    )?;
    let schema = of_kind(backup.manifest, None);
    let conn = load_objects(
        backup.store.clone(),
        backup.manifest,
        schema,
        backup.key,
        conn,
    )
    .await?;
    Ok((scratch, conn))
}

/// The table alone, one object at a time: each part or chunk loaded into the emptied table and
/// searched, a chunk searched before answered from memory.
async fn search_table(
    backup: &Backup<'_>,
    request: &FindRequest,
    table: &str,
    mut conn: Connection,
    searched: &mut Searched,
    emit: &mut Emit<'_>,
) -> Result<()> {
    let Backup {
        store,
        manifest,
        key,
    } = backup;
    let condition = format!("({})", request.predicate);
    for object in of_kind(manifest, Some(table)) {
        let rows = match object.chunk.as_ref().and_then(|a| searched.chunks.get(a)) {
            Some(rows) => {
                searched.chunks_reused += 1;
                rows.clone()
            }
            None => {
                conn.execute_batch(&format!("DELETE FROM {}", quote_ident(table)))?;
                conn =
                    load_objects(store.clone(), manifest, vec![object.clone()], *key, conn).await?;
                let rows = matching(&mut conn, vec![table.to_string()], table, &condition)?;
                if let Some(address) = &object.chunk {
                    searched.chunks.insert(address.clone(), rows.clone());
                }
                rows
            }
        };
        for row in rows {
            searched.rows += 1;
            emit(manifest, table, row)?;
        }
    }
    Ok(())
}

/// The table and every table whose foreign keys lead to it (as an erasure with `related`
/// reaches them), loaded whole into the scratch file, then the rows each erasure step would
/// remove, the table's own first.
async fn search_related(
    backup: &Backup<'_>,
    request: &FindRequest,
    table: &str,
    conn: Connection,
    searched: &mut Searched,
    emit: &mut Emit<'_>,
) -> Result<()> {
    let fks = predicate::foreign_keys(&conn)?;
    let steps = predicate::plan(table, &request.predicate, true, &fks);
    let tables: Vec<String> = steps.iter().map(|s| s.table.clone()).collect();
    let manifest = backup.manifest;
    let objects: Vec<ObjectEntry> = tables
        .iter()
        .flat_map(|t| of_kind(manifest, Some(t)))
        .collect();
    let mut conn = load_objects(backup.store.clone(), manifest, objects, backup.key, conn).await?;
    for step in steps.iter().rev() {
        for row in matching(&mut conn, tables.clone(), &step.table, &step.condition)? {
            searched.rows += 1;
            emit(manifest, &step.table, row)?;
        }
    }
    Ok(())
}

/// The schema part (`table` `None`) or the data objects of `table`, in order.
pub(crate) fn of_kind(manifest: &Manifest, table: Option<&str>) -> Vec<ObjectEntry> {
    manifest
        .objects
        .iter()
        .filter(|o| match table {
            None => o.kind == ObjectKind::Schema,
            Some(t) => o.kind == ObjectKind::Data && o.table.as_deref() == Some(t),
        })
        .cloned()
        .collect()
}

/// The rows of `table` meeting `condition`, each as an object of its columns' [`json_cell`]s,
/// selected on `conn` confined to reading `tables`.
fn matching(
    conn: &mut Connection,
    tables: Vec<String>,
    table: &str,
    condition: &str,
) -> Result<Vec<Value>> {
    predicate::confine(conn, tables, false, None)?;
    let sql = format!("SELECT * FROM {} WHERE {condition}", quote_ident(table));
    let rows = select(conn, &sql);
    predicate::release(conn)?;
    Ok(rows?)
}

fn select(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare(sql)?;
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut cells = Map::new();
        for (i, name) in names.iter().enumerate() {
            cells.insert(name.clone(), json_cell(row.get_ref(i)?.into()));
        }
        out.push(Value::Object(cells));
    }
    Ok(out)
}

/// A row found as one line of `find`'s output: `{backup, created, table, row}`.
pub(crate) fn line(manifest: &Manifest, table: &str, row: Value) -> String {
    serde_json::json!({
        "backup": manifest.id,
        "created": manifest.created.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "table": table,
        "row": row,
    })
    .to_string()
}
