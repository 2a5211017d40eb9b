//! Helpers shared by the integration tests: building databases and comparing them exactly.

pub mod bed;
pub mod cmd;
pub mod fixture;
pub mod workerd;

use std::path::Path;
use std::sync::Arc;

use d1r2::BackupOptions;
use d1r2::format::load::Selection;
use d1r2::source::sqlite::SqliteSource;
use d1r2::store::Store;
use d1r2::store::local::LocalStore;
use rusqlite::Connection;

/// A cell as SQLite stores it: storage class and exact bytes (reals by their bits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exact {
    Null,
    Integer(i64),
    Real(u64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

pub fn exact(v: rusqlite::types::ValueRef<'_>) -> Exact {
    use rusqlite::types::ValueRef as R;
    match v {
        R::Null => Exact::Null,
        R::Integer(i) => Exact::Integer(i),
        R::Real(f) => Exact::Real(f.to_bits()),
        R::Text(t) => Exact::Text(t.to_vec()),
        R::Blob(b) => Exact::Blob(b.to_vec()),
    }
}

/// The entries of a `$GITHUB_OUTPUT` file's text, `name<<DELIMITER ... DELIMITER` each, in the
/// order written; any line outside that form fails the test.
pub fn parse_outputs(text: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let (name, delimiter) = line.split_once("<<").expect("heredoc form");
        let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
        entries.push((name.to_string(), value.join("\n")));
    }
    entries
}

/// The value of output `name`, its first entry, in a `$GITHUB_OUTPUT` file's text.
pub fn output_value(text: &str, name: &str) -> String {
    parse_outputs(text)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no output {name} in {text}"))
}

/// The value of output `name` in the `$GITHUB_OUTPUT` file at `path`.
pub fn output_in(path: &Path, name: &str) -> String {
    output_value(&std::fs::read_to_string(path).unwrap(), name)
}

pub fn create_db(path: &Path, sql: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// The user tables of a database (not internal, not shadow), sorted.
pub fn user_tables(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_list WHERE schema='main' AND type IN ('table','virtual') AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every row of a table with its rowid when it has one (as `typeof()` plus exact bytes), sorted.
pub fn table_cells(conn: &Connection, table: &str) -> Vec<Vec<Exact>> {
    let ident = format!("\"{}\"", table.replace('"', "\"\""));
    let sql_rowid = format!("SELECT _rowid_, * FROM {ident}");
    let sql_plain = format!("SELECT * FROM {ident}");
    let mut stmt = conn
        .prepare(&sql_rowid)
        .or_else(|_| conn.prepare(&sql_plain))
        .unwrap();
    let n = stmt.column_count();
    let mut rows: Vec<Vec<Exact>> = stmt
        .query_map([], |r| (0..n).map(|i| r.get_ref(i).map(exact)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    rows
}

/// Schema objects as (type, name, tbl_name, sql), sorted; shadow tables and autoindexes out.
pub fn schema(conn: &Connection) -> Vec<(String, String, String, Option<String>)> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT IN (SELECT name FROM pragma_table_list WHERE type='shadow') AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\' ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn sequences(conn: &Connection) -> Vec<(String, i64)> {
    let Ok(mut stmt) = conn.prepare("SELECT name, seq FROM sqlite_sequence ORDER BY name") else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Asserts two databases hold the same schema, tables, cells (by storage class and bits) and
/// AUTOINCREMENT counters.
pub fn assert_same_database(a: &Path, b: &Path) {
    let a = Connection::open(a).unwrap();
    let b = Connection::open(b).unwrap();
    assert_eq!(schema(&a), schema(&b), "schema differs");
    let tables = user_tables(&a);
    assert_eq!(tables, user_tables(&b), "table lists differ");
    for t in &tables {
        assert_eq!(table_cells(&a, t), table_cells(&b, t), "table {t} differs");
    }
    assert_eq!(sequences(&a), sequences(&b), "sqlite_sequence differs");
}

/// Backs `db` up into `dir` with `options` and returns the store and manifest.
pub async fn backup_to(
    db: &Path,
    dir: &Path,
    options: &BackupOptions,
) -> (Arc<dyn Store>, d1r2::format::manifest::Manifest) {
    let source = SqliteSource::open(db).unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::create(dir).unwrap());
    let outcome = d1r2::backup(&source, std::slice::from_ref(&store), options)
        .await
        .unwrap();
    (store, outcome.manifest)
}

/// Backs up `db` and restores it into `restored`.
pub async fn roundtrip(db: &Path, restored: &Path, options: &BackupOptions) {
    let dir = tempfile::tempdir().unwrap();
    let (store, manifest) = backup_to(db, dir.path(), options).await;
    d1r2::restore_to_file(
        store,
        &manifest,
        &Selection::default(),
        options.encryption.as_ref(),
        restored,
        false,
    )
    .await
    .unwrap();
}
