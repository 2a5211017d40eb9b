//! `forget --rewrite`: each retained backup holding an erasure's rows is rewritten without them,
//! keeping its id, time and so its place in the retention policy.
//!
//! Only the objects holding the rows change. Each is read statement by statement into a scratch
//! copy of its table: a row's INSERT and the appends that complete a long row make a group, and a
//! group the erasure's condition matches none of is written again byte for byte; otherwise the
//! rows left are rendered afresh ([`InsertWriter`]). A part becomes a new part under a new key; a
//! chunk a new chunk under its new address (shared, like any chunk, by the backups that name it).
//! Then the manifest is replaced, in one write, naming the new objects, and the parts it no longer
//! names are deleted; the chunks no backup names any more are prune's to collect.
//!
//! A crash before the manifest is replaced leaves the backup as it was, with new parts nothing
//! names beside it; after, the old parts. The next rewrite of any erasure deletes such parts once
//! an hour old, and prune's removal of the backup deletes them with it. Either way the backup reads as whole, and the erasure applies on every read.
//! The rewrite holds a backup lock ([`crate::format::lock`]), so no prune collects a new chunk
//! before the new manifest names it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::Connection;

use crate::error::Result;
use crate::format::chunk::{ChunkKeys, chunk_key};
use crate::format::codec::PartEncoder;
use crate::format::crypto::Key;
use crate::format::dump::insert::InsertWriter;
use crate::format::load::{SqlSink, Statements, confine, load_objects, stream_sql};
use crate::format::manifest::{MANIFEST_NAME, Manifest, ObjectEntry};
use crate::format::predicate::{self, Step};
use crate::model::value::{literal, quote_ident};
use crate::ops::find::{Backup, FindRequest, check_request, of_kind, schema_scratch};
use crate::store::{Store, StoreError};

/// SQL a gzip member holds, as a backup writes them.
const MEMBER: usize = 256 * 1024;

/// How old a part its backup's manifest does not name must be before a rewrite deletes it: a
/// rewrite running now writes its new parts well within this.
const STRAY_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// What the rewrite of one backup changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rewritten {
    pub rows: u64,
    pub objects: usize,
}

/// Rewrites `manifest`'s backup without the rows `request` names; `None` when it holds none
/// (or its schema cannot hold them).
pub(crate) async fn rewrite(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    request: &FindRequest,
) -> Result<Option<Rewritten>> {
    let backup = Backup {
        store: store.clone(),
        manifest,
        key,
    };
    sweep_strays(store.as_ref(), manifest, chrono::Utc::now()).await?;
    let (_scratch, mut conn) = schema_scratch(&backup).await?;
    let Ok(table) = check_request(&mut conn, request) else {
        return Ok(None);
    };
    let (mut conn, conditions) = conditions(&backup, request, &table, conn).await?;
    let mut changed: Vec<(usize, ObjectEntry, u64)> = Vec::new();
    for (index, object) in manifest.objects.iter().enumerate() {
        let Some(condition) = object.table.as_ref().and_then(|t| conditions.get(t)) else {
            continue;
        };
        let (back, filtered) =
            filter_object(store.clone(), manifest, key, object, condition, conn).await?;
        conn = back;
        if filtered.removed > 0 {
            let entry = store_object(store.as_ref(), manifest, key, object, &filtered).await?;
            changed.push((index, entry, filtered.removed));
        }
    }
    if changed.is_empty() {
        return Ok(None);
    }
    let replaced = replace_manifest(store.as_ref(), manifest, key, &changed).await?;
    for old in replaced {
        if let Err(e) = store.delete(&old).await {
            tracing::warn!("the replaced part {old} is left for prune: {e}");
        }
    }
    Ok(Some(Rewritten {
        rows: changed.iter().map(|(_, _, n)| n).sum(),
        objects: changed.len(),
    }))
}

/// Deletes the data parts in `manifest`'s folder that it does not name and that were written
/// before `now` less [`STRAY_AGE`]: what a rewrite that stopped before or after replacing the
/// manifest left (its new parts, or the old ones).
async fn sweep_strays(
    store: &dyn Store,
    manifest: &Manifest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let folder = format!("{}/", manifest.id);
    for object in store.list(&folder).await? {
        let Some((_, rel)) = crate::format::repo::backup_key(&object.key) else {
            continue;
        };
        let named = manifest
            .objects
            .iter()
            .any(|o| o.chunk.is_none() && o.key == rel);
        if rel.starts_with("data/") && !named && object.modified < now - STRAY_AGE {
            store.delete(&object.key).await?;
            tracing::info!("removed {}, a part its backup does not name", object.key);
        }
    }
    Ok(())
}

/// The condition, on its own rows, that marks each table's rows to remove. Without `related`,
/// the erasure's own condition on its table (a condition on one row, so each object is filtered
/// on its own). With it, the tables it reaches are loaded whole, the rowids of the rows each
/// step would remove are kept aside (in a temporary table, filled while the connection is
/// confined to reading those tables), the tables emptied, and each condition is on those rowids.
async fn conditions(
    backup: &Backup<'_>,
    request: &FindRequest,
    table: &str,
    conn: Connection,
) -> Result<(Connection, BTreeMap<String, String>)> {
    if !request.related {
        let condition = format!("({})", request.predicate);
        return Ok((conn, BTreeMap::from([(table.to_string(), condition)])));
    }
    let fks = predicate::foreign_keys(&conn)?;
    let steps: Vec<Step> = predicate::plan(table, &request.predicate, true, &fks);
    let tables: Vec<String> = steps.iter().map(|s| s.table.clone()).collect();
    let objects: Vec<ObjectEntry> = tables
        .iter()
        .flat_map(|t| of_kind(backup.manifest, Some(t)))
        .collect();
    let mut conn = load_objects(
        backup.store.clone(),
        backup.manifest,
        objects,
        backup.key,
        conn,
    )
    .await?;
    let mut doomed: Vec<(String, i64)> = Vec::new();
    predicate::confine(&mut conn, tables.clone(), false, None)?;
    let selected: rusqlite::Result<()> = steps.iter().try_for_each(|step| {
        let sql = format!(
            "SELECT rowid FROM {} WHERE {}",
            quote_ident(&step.table),
            step.condition
        );
        let mut stmt = conn.prepare(&sql)?;
        for rowid in stmt.query_map([], |r| r.get::<_, i64>(0))? {
            doomed.push((step.table.clone(), rowid?));
        }
        Ok(())
    });
    predicate::release(&mut conn)?;
    selected?;
    conn.execute_batch("CREATE TEMP TABLE d1r2_doomed(t TEXT, r INTEGER)")?;
    for (table, rowid) in &doomed {
        conn.execute(
            "INSERT INTO temp.d1r2_doomed VALUES (?1, ?2)",
            rusqlite::params![table, rowid],
        )?;
    }
    let mut conditions = BTreeMap::new();
    for table in tables {
        conn.execute_batch(&format!("DELETE FROM {}", quote_ident(&table)))?;
        let condition = format!(
            "rowid IN (SELECT r FROM temp.d1r2_doomed WHERE t = {})",
            literal(crate::model::value::ValueRef::Text(table.as_bytes()))
        );
        conditions.insert(table, condition);
    }
    Ok((conn, conditions))
}

/// An object's SQL without the rows its table's condition marks, and how many it held.
struct Filtered {
    sql: String,
    removed: u64,
    rows: u64,
}

/// The sink that filters one object's statements through the scratch copy of its table.
struct Filter {
    conn: Connection,
    statements: Statements,
    table: String,
    ident: String,
    condition: String,
    /// The table's primary key columns, in key order (read before the load's authorizer, which
    /// refuses pragmas, is on).
    pk: Vec<String>,
    /// The statements of the current row group: an INSERT and the appends after it.
    group: Vec<String>,
    out: String,
    removed: u64,
}

impl SqlSink for Filter {
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> crate::error::Result<()> {
        let Some(bytes) = bytes else {
            self.end_group()?;
            return Ok(self.statements.end(object)?);
        };
        let mut statements = Vec::new();
        self.statements.push(object, bytes, |sql, _, _| {
            statements.push(sql.to_string());
            Ok(())
        })?;
        for sql in statements {
            self.statement(sql)?;
        }
        Ok(())
    }
}

impl Filter {
    fn statement(&mut self, sql: String) -> Result<()> {
        let text = sql.trim_start();
        if text.starts_with(&format!("INSERT INTO {}(", self.ident)) {
            self.end_group()?;
            self.conn
                .execute_batch(&format!("DELETE FROM {}", self.ident))?;
            self.conn.execute_batch(&sql)?;
            self.group.push(sql);
        } else if text.starts_with(&format!("UPDATE {} SET", self.ident)) {
            self.conn.execute_batch(&sql)?;
            self.group.push(sql);
        } else {
            self.end_group()?;
            push_statement(&mut self.out, &sql);
        }
        Ok(())
    }

    /// Writes the group: as it was when the condition marks none of its rows, else the rows left.
    fn end_group(&mut self) -> Result<()> {
        let Some(first) = self.group.first() else {
            return Ok(());
        };
        let removed = self.conn.execute(
            &format!("DELETE FROM {} WHERE {}", self.ident, self.condition),
            [],
        )? as u64;
        if removed == 0 {
            for sql in self.group.drain(..) {
                push_statement(&mut self.out, &sql);
            }
            return Ok(());
        }
        self.removed += removed;
        let columns = insert_columns(first).unwrap_or_default().to_string();
        self.group.clear();
        self.render(&columns)
    }

    /// Appends the rows of the scratch table as INSERTs of `columns` (the group's own list).
    fn render(&mut self, columns: &str) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {columns} FROM {}", self.ident))?;
        let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let key = row_key(&self.pk, &names);
        let mut writer = InsertWriter::new(&self.table, &names, key);
        let mut rows = stmt.query([])?;
        let mut sql = String::new();
        while let Some(row) = rows.next()? {
            let cells: Vec<String> = (0..names.len())
                .map(|i| row.get_ref(i).map(|v| literal(v.into())))
                .collect::<rusqlite::Result<_>>()?;
            let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
            writer.push_row(&cells, &mut sql)?;
        }
        writer.flush(&mut sql);
        self.out.push_str(&sql);
        Ok(())
    }
}

/// Appends a statement as the writer ends one: on lines of its own, then a line end.
fn push_statement(out: &mut String, sql: &str) {
    out.push_str(sql.trim());
    out.push('\n');
}

/// The column list of an INSERT as d1r2 writes it: the text between `(` and `) VALUES`.
fn insert_columns(sql: &str) -> Option<&str> {
    let start = sql.find('(')? + 1;
    let end = sql.find(") VALUES")?;
    (start <= end).then(|| &sql[start..end])
}

/// The cells of a row that identify it, as an append names it: the rowid when the columns hold
/// it, else the primary key `pk`. Pure.
fn row_key(pk: &[String], names: &[String]) -> Vec<usize> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case("rowid")) {
        return vec![i];
    }
    pk.iter()
        .filter_map(|c| names.iter().position(|n| n == c))
        .collect()
}

/// Streams `object` through a [`Filter`] on `conn` (under the authorizer a restore runs under).
async fn filter_object(
    store: Arc<dyn Store>,
    manifest: &Manifest,
    key: Option<&Key>,
    object: &ObjectEntry,
    condition: &str,
    mut conn: Connection,
) -> Result<(Connection, Filtered)> {
    let table = object.table.clone().unwrap_or_default();
    let pk: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?
        .query_map([&table], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    confine(&mut conn, true)?;
    let filter = Filter {
        conn,
        statements: Statements::new(manifest),
        ident: quote_ident(&table),
        table,
        condition: condition.to_string(),
        pk,
        group: Vec::new(),
        out: String::new(),
        removed: 0,
    };
    let mut filter = stream_sql(store, manifest, vec![object.clone()], key, filter).await?;
    confine(&mut filter.conn, false)?;
    let filtered = Filtered {
        sql: filter.out,
        removed: filter.removed,
        rows: object.rows.saturating_sub(filter.removed),
    };
    Ok((filter.conn, filtered))
}

/// Stores the filtered SQL of `old` as a new object (a part under a new key, a chunk under its
/// new address) and returns its manifest entry.
async fn store_object(
    store: &dyn Store,
    manifest: &Manifest,
    key: Option<&Key>,
    old: &ObjectEntry,
    filtered: &Filtered,
) -> Result<ObjectEntry> {
    let mut entry = ObjectEntry {
        rows: filtered.rows,
        ..old.clone()
    };
    if old.chunk.is_some() {
        let address = ChunkKeys::new(key).address(filtered.sql.as_bytes());
        entry.key = chunk_key(&address, manifest.compression);
        entry.chunk = Some(address);
    } else {
        entry.key = rewritten_key(&old.key);
    }
    let part_key = key.map(|k| manifest.part_key(k, &entry));
    let mut encoder = PartEncoder::new(manifest.compression, part_key.as_ref())?;
    for member in filtered.sql.as_bytes().chunks(MEMBER) {
        encoder.write(member)?;
    }
    let mut bytes = encoder.take().to_vec();
    let (last, stored) = encoder.finish()?;
    bytes.extend_from_slice(&last);
    entry.bytes = stored.bytes;
    entry.sql_bytes = stored.sql_bytes;
    entry.sha256 = match old.chunk {
        Some(_) => String::new(),
        None => hex::encode(stored.sha256),
    };
    match store
        .put_new(&manifest.key(&entry), Bytes::from(bytes))
        .await
    {
        Err(StoreError::AlreadyExists { .. }) if entry.chunk.is_some() => {}
        other => other?,
    }
    Ok(entry)
}

/// A new key for a rewritten part of `old`'s: its name and a random suffix, so the old part and
/// the new one both exist until the manifest names the new one.
fn rewritten_key(old: &str) -> String {
    let (stem, ext) = match old.strip_suffix(".sql.gz") {
        Some(stem) => (stem, ".sql.gz"),
        None => (old.strip_suffix(".sql").unwrap_or(old), ".sql"),
    };
    // A part rewritten before loses its earlier suffix, so names do not grow.
    let stem = match stem.rsplit_once("-e") {
        Some((base, suffix))
            if suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            base
        }
        _ => stem,
    };
    format!("{stem}-e{:08x}{ext}", rand::random::<u32>())
}

/// Writes `manifest` with the `changed` objects in place (and its tables' row counts less what
/// was removed), in one write over the old; returns the keys of the parts it no longer names.
async fn replace_manifest(
    store: &dyn Store,
    manifest: &Manifest,
    key: Option<&Key>,
    changed: &[(usize, ObjectEntry, u64)],
) -> Result<Vec<String>> {
    let mut new = manifest.clone();
    let mut replaced = Vec::new();
    for (index, entry, removed) in changed {
        let old = std::mem::replace(&mut new.objects[*index], entry.clone());
        if old.chunk.is_none() {
            replaced.push(manifest.key(&old));
        }
        if let Some(table) = new
            .tables
            .iter_mut()
            .find(|t| Some(&t.name) == old.table.as_ref())
        {
            table.rows = table.rows.saturating_sub(*removed);
        }
    }
    let json = crate::format::envelope::to_json(&new, key)?;
    store
        .put(
            &format!("{}/{MANIFEST_NAME}", manifest.id),
            Bytes::from(json),
        )
        .await?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_keys_table() {
        for (old, base, ext) in [
            ("data/0000-users.0.sql.gz", "data/0000-users.0", ".sql.gz"),
            ("data/0003.sql", "data/0003", ".sql"),
            (
                "data/0001-docs.r1-0.sql.gz",
                "data/0001-docs.r1-0",
                ".sql.gz",
            ),
            (
                "data/0000-users.0-e0a1b2c3d.sql.gz",
                "data/0000-users.0",
                ".sql.gz",
            ),
            ("data/0002-events.0.sql.gz", "data/0002-events.0", ".sql.gz"),
        ] {
            let new = rewritten_key(old);
            assert_ne!(new, old);
            assert!(crate::format::repo::is_backup_key(&new), "{new}");
            let suffix = new
                .strip_prefix(&format!("{base}-e"))
                .and_then(|rest| rest.strip_suffix(ext))
                .unwrap_or_else(|| panic!("{old} became {new}"));
            assert!(
                suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
                "{new}"
            );
        }
    }

    #[test]
    fn row_keys_table() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(row_key(&v(&["id"]), &v(&["rowid", "a", "id"])), [0]);
        assert_eq!(row_key(&v(&["id"]), &v(&["a", "id"])), [1]);
        assert_eq!(row_key(&v(&["b", "a"]), &v(&["a", "b", "c"])), [1, 0]);
    }

    #[test]
    fn insert_columns_table() {
        assert_eq!(
            insert_columns("\nINSERT INTO \"t\"(\"rowid\",\"a\") VALUES\n(1,2);"),
            Some("\"rowid\",\"a\"")
        );
        assert_eq!(insert_columns("UPDATE t SET a = 1"), None);
    }
}
