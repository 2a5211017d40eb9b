//! A backup's SQL without the rows erasures name, object by object: what `forget --rewrite`
//! stores and `export` writes, so neither carries the rows at all.
//!
//! Each table an erasure reaches gets a condition on its own rows ([`conditions`]). An object of
//! such a table is read statement by statement into a scratch copy of the table: a row's INSERT
//! and the appends that complete a long row make a group, and a group whose rows the condition
//! marks none of is written again as it was; otherwise the rows left are rendered afresh
//! ([`InsertWriter`]), so a long row is split into appends again as a backup splits it.

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::error::Result;
use crate::format::dump::insert::InsertWriter;
use crate::format::load::{SqlSink, Statements, confine, load_objects};
use crate::format::manifest::{Manifest, ObjectEntry, ObjectKind};
use crate::format::predicate::{self, Step};
use crate::model::value::{ValueRef, literal, quote_ident};
use crate::ops::find::{Backup, FindRequest, check_request, of_kind};

/// The condition, on its own rows, that marks the rows to remove of each table `requests` reach
/// in `backup` (whose schema `conn`, a scratch file, holds). A request without `related` adds its
/// own condition on its table (a condition on one row, so each object is filtered on its own). The
/// tables requests with `related` reach are loaded whole, the rowids of the rows each step would
/// remove kept aside (in a temporary table, read while the connection is confined to those
/// tables), the tables emptied, and their condition is on those rowids. A request the schema
/// cannot take (its table, or a column it names, absent) adds nothing.
pub(crate) async fn conditions(
    backup: &Backup<'_>,
    requests: &[FindRequest],
    mut conn: Connection,
) -> Result<(Connection, BTreeMap<String, String>)> {
    let mut conditions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut steps: Vec<Step> = Vec::new();
    let fks = predicate::foreign_keys(&conn)?;
    for request in requests {
        let Ok(table) = check_request(&mut conn, request) else {
            continue;
        };
        if request.related {
            steps.extend(predicate::plan(&table, &request.predicate, true, &fks));
        } else {
            let own = format!("({})", request.predicate);
            conditions.entry(table).or_default().push(own);
        }
    }
    if !steps.is_empty() {
        conn = doom(backup, &steps, conn).await?;
        for table in steps.iter().map(|s| &s.table) {
            let doomed = format!(
                "rowid IN (SELECT r FROM temp.d1r2_doomed WHERE t = {})",
                literal(ValueRef::Text(table.as_bytes()))
            );
            let these = conditions.entry(table.clone()).or_default();
            if !these.contains(&doomed) {
                these.push(doomed);
            }
        }
    }
    let joined = conditions
        .into_iter()
        .map(|(table, these)| (table, these.join(" OR ")))
        .collect();
    Ok((conn, joined))
}

/// Loads the tables `steps` reach, keeps the rowids of the rows each would remove in
/// `temp.d1r2_doomed`, and empties the tables again.
async fn doom(backup: &Backup<'_>, steps: &[Step], conn: Connection) -> Result<Connection> {
    let mut tables: Vec<String> = steps.iter().map(|s| s.table.clone()).collect();
    tables.sort();
    tables.dedup();
    let objects: Vec<ObjectEntry> = tables
        .iter()
        .flat_map(|t| of_kind(backup.manifest, Some(t)))
        .collect();
    let (store, manifest, key) = (backup.store.clone(), backup.manifest, backup.key);
    let mut conn = load_objects(store, manifest, objects, key, conn).await?;
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
    conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS d1r2_doomed(t TEXT, r INTEGER)")?;
    for (table, rowid) in &doomed {
        conn.execute(
            "INSERT INTO temp.d1r2_doomed VALUES (?1, ?2)",
            rusqlite::params![table, rowid],
        )?;
    }
    for table in &tables {
        conn.execute_batch(&format!("DELETE FROM {}", quote_ident(table)))?;
    }
    Ok(conn)
}

/// An object's SQL without the rows its table's condition marks, and how many it held.
#[derive(Debug, Default)]
pub(crate) struct Filtered {
    pub sql: String,
    pub removed: u64,
}

/// A sink that filters the objects of the tables with a condition through the scratch copy of
/// each table, under the authorizer a restore runs under; [`Eraser::take`] hands over what an
/// object became once it ended.
pub(crate) struct Eraser {
    conn: Connection,
    statements: Statements,
    conditions: BTreeMap<String, String>,
    /// Each table's primary key columns, in key order (read before the load's authorizer, which
    /// refuses pragmas, is on).
    keys: BTreeMap<String, Vec<String>>,
    /// The current object's table, as it names it and quoted.
    table: (String, String),
    /// The statements of the current row group: an INSERT and the appends after it.
    group: Vec<String>,
    done: Filtered,
}

impl Eraser {
    pub(crate) fn new(
        mut conn: Connection,
        manifest: &Manifest,
        conditions: BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut keys = BTreeMap::new();
        for table in conditions.keys() {
            let pk: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?
                .query_map([table], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            keys.insert(table.clone(), pk);
        }
        confine(&mut conn, true)?;
        Ok(Eraser {
            conn,
            statements: Statements::new(manifest),
            conditions,
            keys,
            table: Default::default(),
            group: Vec::new(),
            done: Filtered::default(),
        })
    }

    /// Whether `object` is one this eraser filters: data of a table with a condition.
    pub(crate) fn erases(&self, object: &ObjectEntry) -> bool {
        object.kind == ObjectKind::Data
            && object
                .table
                .as_ref()
                .is_some_and(|t| self.conditions.contains_key(t))
    }

    /// What the objects fed since the last call became.
    pub(crate) fn take(&mut self) -> Filtered {
        std::mem::take(&mut self.done)
    }

    fn statement(&mut self, sql: String) -> Result<()> {
        let text = sql.trim_start();
        let ident = self.table.1.clone();
        if text.starts_with(&format!("INSERT INTO {ident}(")) {
            self.end_group()?;
            self.conn.execute_batch(&format!("DELETE FROM {ident}"))?;
            self.conn.execute_batch(&sql)?;
            self.group.push(sql);
        } else if text.starts_with(&format!("UPDATE {ident} SET")) {
            self.conn.execute_batch(&sql)?;
            self.group.push(sql);
        } else {
            self.end_group()?;
            push_statement(&mut self.done.sql, &sql);
        }
        Ok(())
    }

    /// Writes the group: as it was when the condition marks none of its rows, else the rows left.
    fn end_group(&mut self) -> Result<()> {
        let Some(first) = self.group.first() else {
            return Ok(());
        };
        let (table, ident) = &self.table;
        let condition = &self.conditions[table];
        let sql = format!("DELETE FROM {ident} WHERE {condition}");
        let removed = self.conn.execute(&sql, [])? as u64;
        if removed == 0 {
            for sql in self.group.drain(..) {
                push_statement(&mut self.done.sql, &sql);
            }
            return Ok(());
        }
        self.done.removed += removed;
        let columns = insert_columns(first, ident).unwrap_or_default().to_string();
        self.group.clear();
        self.render(&columns)
    }

    /// Appends the rows of the scratch table as INSERTs of `columns` (the group's own list).
    fn render(&mut self, columns: &str) -> Result<()> {
        let (table, ident) = &self.table;
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {columns} FROM {ident}"))?;
        let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let key = row_key(&self.keys[table], &names);
        let mut writer = InsertWriter::new(table, &names, key);
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
        self.done.sql.push_str(&sql);
        Ok(())
    }
}

impl SqlSink for Eraser {
    fn feed(&mut self, object: &ObjectEntry, bytes: Option<&[u8]>) -> Result<()> {
        let Some(bytes) = bytes else {
            self.end_group()?;
            return Ok(self.statements.end(object)?);
        };
        let table = object.table.clone().unwrap_or_default();
        if self.table.0 != table {
            self.table = (table.clone(), quote_ident(&table));
        }
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

/// Appends a statement as the writer ends one: on lines of its own, then a line end.
fn push_statement(out: &mut String, sql: &str) {
    out.push_str(sql.trim());
    out.push('\n');
}

/// The column list of an INSERT into `ident` as d1r2 writes it: the text between
/// `INSERT INTO ident(` and `) VALUES`.
fn insert_columns<'s>(sql: &'s str, ident: &str) -> Option<&'s str> {
    let rest = sql
        .trim_start()
        .strip_prefix(&format!("INSERT INTO {ident}("))?;
    Some(&rest[..rest.find(") VALUES")?])
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

#[cfg(test)]
mod tests {
    use super::*;

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
            insert_columns(
                "\nINSERT INTO \"t(\"(\"rowid\",\"a\") VALUES\n(1,2);",
                "\"t(\""
            ),
            Some("\"rowid\",\"a\"")
        );
        assert_eq!(insert_columns("UPDATE t SET a = 1", "t"), None);
    }
}
