//! Backups round-trip exactly: every storage class, every schema object, through the real
//! backup and restore code on real SQLite files and a real local store.

use crate::common;

use common::*;
use d1r2::BackupOptions;
use proptest::prelude::*;
use rusqlite::Connection;
use std::path::Path;
use std::process::Command;

fn fixture() -> &'static str {
    include_str!("../fixtures/edge.sql")
}

#[tokio::test]
async fn the_edge_case_fixture_round_trips_cell_by_cell() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("edge.db");
    create_db(&db, fixture());
    for options in [
        BackupOptions::default(),
        // Tiny pages and parts: every table crosses page and part boundaries.
        BackupOptions {
            page_bytes: Some(64),
            part_bytes: 200,
            concurrency: 1,
            ..BackupOptions::default()
        },
        // Tiny pages read by several readers: large tables split over rowid ranges.
        BackupOptions {
            page_bytes: Some(64),
            part_bytes: 200,
            concurrency: 4,
            table_readers: 4,
            ..BackupOptions::default()
        },
    ] {
        let restored = dir.path().join(format!(
            "restored-{}-{}.db",
            options.page_bytes.unwrap_or(0),
            options.concurrency
        ));
        roundtrip(&db, &restored, &options).await;
        assert_same_database(&db, &restored);
        let conn = Connection::open(&restored).unwrap();
        let hit: i64 = conn
            .query_row("SELECT rowid FROM docs WHERE docs MATCH 'world'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            hit, 10,
            "FTS5 index answers after restore (diacritics folded)"
        );
        let ext: i64 = conn
            .query_row(
                "SELECT count(*) FROM articles_fts WHERE articles_fts MATCH 'external'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ext, 2, "external-content FTS5 index rebuilt");
        let internal: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '\\_cf\\_%' ESCAPE '\\'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(internal, 0, "_cf_ tables are not backed up");
        conn.execute("INSERT INTO counters(name) VALUES ('next')", [])
            .unwrap();
        let id: i64 = conn
            .query_row("SELECT max(id) FROM counters", [], |r| r.get(0))
            .unwrap();
        assert_eq!(id, 1001, "AUTOINCREMENT continues from the saved sequence");
        let fired: i64 = conn
            .query_row(
                "SELECT count(*) FROM no_alias WHERE a = 'trigger; fired'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            fired, 1,
            "triggers exist after restore and did not fire during it"
        );
    }
}

#[tokio::test]
async fn values_longer_than_the_statement_limit_are_split_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE big(id INTEGER PRIMARY KEY, t TEXT, b BLOB, n TEXT); CREATE TABLE big_pk(k TEXT PRIMARY KEY, v) WITHOUT ROWID;").unwrap();
    let text: String = "quote ' and żółw; ".repeat(20_000);
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut nul = vec![b'a'; 150_000];
    nul[70_000] = 0;
    conn.execute(
        "INSERT INTO big VALUES (1, ?1, ?2, CAST(?3 AS TEXT))",
        rusqlite::params![text, blob, nul],
    )
    .unwrap();
    conn.execute("INSERT INTO big_pk VALUES ('key', ?1)", [&text])
        .unwrap();
    drop(conn);
    let restored = dir.path().join("restored.db");
    roundtrip(&db, &restored, &BackupOptions::default()).await;
    assert_same_database(&db, &restored);

    let store_dir = tempfile::tempdir().unwrap();
    let (store, manifest) = backup_to(&db, store_dir.path(), &BackupOptions::default()).await;
    let out = dir.path().join("dump.sql");
    d1r2::export(store, &manifest, None, &out).await.unwrap();
    let sql = std::fs::read_to_string(&out).unwrap();
    let (statements, rest) = d1r2::format::dump::split::split_all(&sql);
    assert!(rest.is_none());
    let longest = statements.iter().map(String::len).max().unwrap();
    assert!(longest <= 100_000, "a statement of {longest} bytes");
    assert!(
        statements
            .iter()
            .filter(|s| s.starts_with("UPDATE"))
            .count()
            >= 10
    );
}

/// A column value for the property test: every storage class, including the awkward ones.
fn value() -> impl Strategy<Value = rusqlite::types::Value> {
    use rusqlite::types::Value;
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0), Just((1 << 53) + 1)]
            .prop_map(Value::Integer),
        any::<f64>()
            .prop_filter("normal doubles", |f| f.is_normal() || *f == 0.0)
            .prop_map(Value::Real),
        ".*".prop_map(Value::Text),
        "['\"\\n;\\-\\\\x00 a-z]{0,12}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
    ]
}

fn table_spec() -> impl Strategy<Value = (Vec<&'static str>, bool, Vec<Vec<rusqlite::types::Value>>)>
{
    (1usize..5, any::<bool>()).prop_flat_map(|(ncols, without_rowid)| {
        let types = proptest::collection::vec(
            prop::sample::select(vec![
                "", "ANY", "TEXT", "INTEGER", "REAL", "BLOB", "NUMERIC",
            ]),
            ncols,
        );
        let rows = proptest::collection::vec(proptest::collection::vec(value(), ncols), 0..25);
        (types, Just(without_rowid), rows)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random tables of random values come back exactly: same storage class, same bits.
    #[test]
    fn random_tables_round_trip_exactly(spec in table_spec()) {
        let (types, without_rowid, rows) = spec;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("random.db");
        let conn = Connection::open(&db).unwrap();
        let cols: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("c{i} {t}")).collect();
        if without_rowid {
            conn.execute_batch(&format!("CREATE TABLE t(k INTEGER PRIMARY KEY, {}) WITHOUT ROWID", cols.join(","))).unwrap();
        } else {
            conn.execute_batch(&format!("CREATE TABLE t({})", cols.join(","))).unwrap();
        }
        let marks: Vec<String> = (0..types.len()).map(|i| format!("?{}", i + 2)).collect();
        let insert = format!("INSERT INTO t VALUES (?1, {})", marks.join(","));
        let insert_plain = format!("INSERT INTO t VALUES ({})", (1..=types.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(","));
        for (n, row) in rows.iter().enumerate() {
            if without_rowid {
                let key = n as i64;
                let mut params: Vec<&dyn rusqlite::ToSql> = vec![&key];
                params.extend(row.iter().map(|v| v as &dyn rusqlite::ToSql));
                conn.execute(&insert, params.as_slice()).unwrap();
            } else {
                let params: Vec<&dyn rusqlite::ToSql> = row.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
                conn.execute(&insert_plain, params.as_slice()).unwrap();
            }
        }
        drop(conn);
        let restored = dir.path().join("restored.db");
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(roundtrip(&db, &restored, &BackupOptions { page_bytes: Some(200), ..BackupOptions::default() }));
        let a = Connection::open(&db).unwrap();
        let b = Connection::open(&restored).unwrap();
        prop_assert_eq!(table_cells(&a, "t"), table_cells(&b, "t"));
        prop_assert_eq!(schema(&a), schema(&b));
    }

    /// Rowids in clusters of any density with gaps of any width, rows of any size, tiny pages,
    /// one reader or several: the rowid windows read every row exactly once.
    #[test]
    fn any_rowids_are_read_exactly_once_in_windows(
        clusters in proptest::collection::vec((any::<i64>(), 1..600usize, 1..5000i64), 1..5),
        widths in proptest::collection::vec(0..300usize, 1..8),
        page_bytes in 64..4096usize,
        readers in 1..4usize,
    ) {
        let mut rowids: Vec<i64> = clusters
            .iter()
            .flat_map(|&(start, count, step)| (0..count as i64).map_while(move |k| start.checked_add(k.checked_mul(step)?)))
            .collect();
        rowids.sort_unstable();
        rowids.dedup();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rowids.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); BEGIN").unwrap();
        for (n, id) in rowids.iter().enumerate() {
            let v = "x".repeat(widths[n % widths.len()]);
            conn.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![id, v]).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        drop(conn);
        let options = BackupOptions { page_bytes: Some(page_bytes), table_readers: readers, ..BackupOptions::default() };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // A row read twice fails the restore (its rowid is taken); a row missed fails the compare.
        let restored = dir.path().join("restored.db");
        runtime.block_on(roundtrip(&db, &restored, &options));
        let a = Connection::open(&db).unwrap();
        let b = Connection::open(&restored).unwrap();
        prop_assert_eq!(table_cells(&a, "t"), table_cells(&b, "t"));
    }
}

#[tokio::test]
async fn excluded_columns_and_tables_never_reach_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(
        &db,
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT, token TEXT NOT NULL DEFAULT '');
         INSERT INTO users VALUES (1, 'a@example.com', 'hash-SECRET-1', 'tok-SECRET-2');
         CREATE TABLE sessions(id INTEGER PRIMARY KEY, data TEXT);
         INSERT INTO sessions VALUES (1, 'session-SECRET-3');",
    );
    let options = BackupOptions {
        filter: d1r2::model::TableFilter {
            exclude: vec!["sessions".into()],
            exclude_columns: vec![
                ("users".into(), "password_hash".into()),
                ("users".into(), "token".into()),
            ],
            ..Default::default()
        },
        ..BackupOptions::default()
    };
    let store_dir = tempfile::tempdir().unwrap();
    let (store, manifest) = backup_to(&db, store_dir.path(), &options).await;
    let out = dir.path().join("dump.sql");
    d1r2::export(store.clone(), &manifest, None, &out)
        .await
        .unwrap();
    let sql = std::fs::read_to_string(&out).unwrap();
    assert!(!sql.contains("SECRET"), "{sql}");
    assert!(sql.contains("a@example.com"));
    let restored = dir.path().join("restored.db");
    d1r2::restore_to_file(
        store,
        &manifest,
        &Default::default(),
        None,
        &restored,
        false,
    )
    .await
    .unwrap();
    let conn = Connection::open(&restored).unwrap();
    let row: (String, Option<String>, String) = conn
        .query_row("SELECT email, password_hash, token FROM users", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(row, ("a@example.com".into(), None, String::new()));
    assert_eq!(user_tables(&conn), vec!["users"]);
}

#[tokio::test]
async fn large_rowid_tables_are_read_by_as_many_readers_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    create_db(
        &db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<3000)
           INSERT INTO t SELECT i * 7 - 9000, printf('row %d', i) FROM n;
         DELETE FROM t WHERE id BETWEEN 0 AND 5000;
         CREATE TABLE w(k INTEGER PRIMARY KEY, v) WITHOUT ROWID;
         INSERT INTO w SELECT id, v FROM t;",
    );
    let mut options = BackupOptions {
        page_bytes: Some(4096),
        ..BackupOptions::default()
    };
    // One reader a table unless asked.
    let store_dir = tempfile::tempdir().unwrap();
    let (_, manifest) = backup_to(&db, store_dir.path(), &options).await;
    assert!(!manifest.objects.iter().any(|o| o.key.contains(".r1-")));
    options.table_readers = 2;
    let store_dir = tempfile::tempdir().unwrap();
    let (_, manifest) = backup_to(&db, store_dir.path(), &options).await;
    let parts: Vec<&str> = manifest.objects.iter().map(|o| o.key.as_str()).collect();
    assert!(parts.iter().any(|k| k.contains("-t.r1-")), "{parts:?}");
    assert!(!parts.iter().any(|k| k.contains("-t.r2-")), "{parts:?}");
    assert!(!parts.iter().any(|k| k.contains("-w.r")), "{parts:?}");
    let restored = dir.path().join("restored.db");
    roundtrip(&db, &restored, &options).await;
    assert_same_database(&db, &restored);
}

/// Text that line-based readers are tempted to rewrite: line ends of every kind, and lines the
/// `sqlite3` shell reads as commands or terminators when they stand alone (`/`, `go`, `.x`, `;`).
fn line_hostile_text() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("\r".to_string()),
        Just("\r\n".to_string()),
        Just("\n\r".to_string()),
        Just("\n".to_string()),
        Just("\n/\n".to_string()),
        Just("\ngo\n".to_string()),
        Just("\nGO\r\n".to_string()),
        Just("\n.x\n".to_string()),
        Just("\n.quit\n".to_string()),
        Just("\n;\n".to_string()),
        Just("'".to_string()),
        Just("--".to_string()),
        Just("/*".to_string()),
        "[a-z é\t]{0,6}",
        ".{0,4}",
    ];
    proptest::collection::vec(fragment, 0..12).prop_map(|parts| parts.concat())
}

/// The ways a user loads an export with the stock shell: stdin, `-init`, `.read`.
fn load_with_the_shell(sql: &Path, db: &Path, how: &str) {
    let mut shell = Command::new("sqlite3");
    shell.arg("-bail");
    let out = match how {
        "stdin" => shell
            .arg(db)
            .stdin(std::fs::File::open(sql).unwrap())
            .output(),
        "init" => shell.arg("-init").arg(sql).arg(db).arg(".quit").output(),
        _ => shell
            .arg(db)
            .arg(format!(".read '{}'", sql.display()))
            .output(),
    }
    .expect("the stock sqlite3 shell must be installed (scripts/test installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sqlite3 ({how}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Backs `db` up, exports the backup to one SQL file and returns its path.
async fn export_of(db: &Path, dir: &Path) -> std::path::PathBuf {
    let (store, manifest) = backup_to(db, &dir.join("store"), &BackupOptions::default()).await;
    let out = dir.join("dump.sql");
    d1r2::export(store, &manifest, None, &out).await.unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// An export loaded by the stock shell, in each way a user loads it, holds every text
    /// exactly: a CR before a line end is not dropped, a line that is a shell command inside a
    /// literal is not run.
    #[test]
    fn the_stock_shell_loads_any_text_from_an_export_exactly(
        texts in proptest::collection::vec(line_hostile_text(), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("texts.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE k(k TEXT PRIMARY KEY, v) WITHOUT ROWID;").unwrap();
        for (i, text) in texts.iter().enumerate() {
            conn.execute("INSERT INTO t VALUES (?1, ?2)", rusqlite::params![i as i64, text]).unwrap();
            conn.execute("INSERT OR IGNORE INTO k VALUES (?1, ?2)", rusqlite::params![text, i as i64]).unwrap();
        }
        drop(conn);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let sql = runtime.block_on(export_of(&db, dir.path()));
        for how in ["stdin", "init", "read"] {
            let loaded = dir.path().join(format!("loaded-{how}.db"));
            load_with_the_shell(&sql, &loaded, how);
            let a = Connection::open(&db).unwrap();
            let b = Connection::open(&loaded).unwrap();
            prop_assert_eq!(table_cells(&a, "t"), table_cells(&b, "t"), "{}", how);
            prop_assert_eq!(table_cells(&a, "k"), table_cells(&b, "k"), "{}", how);
        }
    }
}

/// A value past the statement limit goes in as appends keyed by its row's key: with CRs in the
/// value and in a text key, the stock shell still rebuilds it exactly.
#[tokio::test]
async fn the_stock_shell_rebuilds_long_cr_text_under_a_cr_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("long.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE k(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;")
        .unwrap();
    let long = "a line of a form's textarea\r\n\r\r\n".repeat(8_000);
    conn.execute(
        "INSERT INTO k VALUES (?1, ?2)",
        rusqlite::params!["key\r\n", long],
    )
    .unwrap();
    drop(conn);
    let sql = export_of(&db, dir.path()).await;
    let text = std::fs::read_to_string(&sql).unwrap();
    assert!(!text.contains('\r'), "the export holds no CR byte");
    assert!(text.contains("UPDATE"), "the value was cut into appends");
    let loaded = dir.path().join("loaded.db");
    load_with_the_shell(&sql, &loaded, "stdin");
    assert_same_database(&db, &loaded);
}
