//! One set of `Source` tests, run against every implementation: a SQLite file, and D1 with the
//! same data behind it, both through the fake Cloudflare API and through D1's own engine as
//! workerd runs it (tests/workerd). All must plan the same schema and hand out the same values,
//! page after page, whatever the page size.
//!
//! Each check is a `pub async fn` taking a [`Serve`]: what builds a database with the
//! implementation under test. `conformance!` makes every check a test of one implementation, so
//! a new `Source` is one `conformance!` line (and a function that serves its database).

use crate::common;
use crate::fakes;

use std::path::{Path, PathBuf};

use common::workerd::{Workerd, as_d1_holds};
use d1r2::CloudflareApi as Api;
use d1r2::RetryPolicy;
use d1r2::model::value::quote_ident;
use d1r2::model::{Cell, Schema, Table, TableFilter};
use d1r2::source::catalog;
use d1r2::source::d1::D1Source;
use d1r2::source::sqlite::SqliteSource;
use d1r2::source::{Source, SourceError, key_columns, row_key};
use d1r2::{Classify, Kind};
use fakes::d1::{ACCOUNT, FakeD1, TOKEN};
use rusqlite::Connection;

fn quick() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        initial_delay: std::time::Duration::from_millis(5),
        max_delay: std::time::Duration::from_millis(50),
        deadline: std::time::Duration::from_secs(30),
    }
}

pub fn api(fake: &FakeD1) -> Api {
    Api::new(&fake.url, TOKEN, ACCOUNT, quick())
}

/// What a literal means: its storage class and its exact value (a real by its bits: `IS`, `=`
/// and SQLite's text of a real take `-0.0` for `0.0`).
fn meaning(conn: &Connection, literal: &str) -> common::Exact {
    conn.query_row(&format!("SELECT {literal}"), [], |r| {
        Ok(common::exact(r.get_ref(0)?))
    })
    .unwrap_or_else(|e| panic!("{literal}: {e}"))
}

/// Every row of `table`, read in keyset pages of `limit` rows, as meanings.
async fn all_rows(source: &dyn Source, table: &Table, limit: usize) -> Vec<Vec<common::Exact>> {
    let conn = Connection::open_in_memory().unwrap();
    let mut after: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    loop {
        let page = source
            .page(table, after.as_deref(), None, limit)
            .await
            .unwrap();
        assert!(page.len() <= limit);
        let Some(last) = page.last() else { break };
        after = Some(row_key(table, last));
        rows.extend(
            page.rows()
                .map(|row| row.iter().map(|l| meaning(&conn, l)).collect::<Vec<_>>()),
        );
        if !page.goes_on(limit) {
            break;
        }
    }
    rows
}

async fn sources(fake: &FakeD1, db: &Path) -> Vec<(&'static str, Box<dyn Source>)> {
    let id = fake.add_database_from_file("edge", db);
    let by_id = D1Source::connect(api(fake), &id).await.unwrap();
    let by_name = D1Source::connect(api(fake), "edge").await.unwrap();
    assert_eq!(by_name.id(), id);
    vec![
        ("sqlite", Box::new(SqliteSource::open(db).unwrap())),
        ("d1 by id", Box::new(by_id)),
        ("d1 by name", Box::new(by_name)),
    ]
}

/// The sources of `db` and the schema the first one plans.
async fn served(fake: &FakeD1, db: &Path) -> (Vec<(&'static str, Box<dyn Source>)>, Schema) {
    let sources = sources(fake, db).await;
    let schema = catalog::load(sources[0].1.as_ref(), &TableFilter::default())
        .await
        .unwrap();
    (sources, schema)
}

/// A database as a check gets it from [`Serve`]: the sources that read it (the SQLite file
/// first, the reference the others are held to, then the implementation under test) and the
/// schema the file plans.
pub struct Served {
    /// The implementation's name, for failure messages.
    pub implementation: &'static str,
    pub sources: Vec<(&'static str, Box<dyn Source>)>,
    pub schema: Schema,
    /// What serves the database (a fake, a workerd), kept alive as long as the sources.
    _server: Box<dyn std::any::Any>,
}

impl Served {
    /// The sources of the SQLite file at `db` and `under_test`, which reads the same data.
    pub async fn new(
        implementation: &'static str,
        server: Box<dyn std::any::Any>,
        db: &Path,
        under_test: Vec<(&'static str, Box<dyn Source>)>,
    ) -> Served {
        let mut sources: Vec<(&'static str, Box<dyn Source>)> =
            vec![("sqlite", Box::new(SqliteSource::open(db).unwrap()))];
        sources.extend(under_test);
        let schema = catalog::load(sources[0].1.as_ref(), &TableFilter::default())
            .await
            .unwrap();
        Served {
            implementation,
            sources,
            schema,
            _server: server,
        }
    }
}

/// Builds the database that the SQL (second argument) makes as a SQLite file at the path (first
/// argument) and in the implementation under test, holding the same data, and serves both. The
/// arguments are owned so that any `async fn(PathBuf, String) -> Served` is one.
pub trait Serve: FnOnce(PathBuf, String) -> Self::Serving {
    type Serving: Future<Output = Served>;
}

impl<F, S> Serve for F
where
    F: FnOnce(PathBuf, String) -> S,
    S: Future<Output = Served>,
{
    type Serving = S;
}

/// The D1 sources, by id and by name, of the database "edge" that `api` reaches.
async fn d1_sources(api: Api) -> Vec<(&'static str, Box<dyn Source>)> {
    let by_name = D1Source::connect(api.clone(), "edge").await.unwrap();
    let by_id = D1Source::connect(api, by_name.id()).await.unwrap();
    vec![
        ("d1 by id", Box::new(by_id)),
        ("d1 by name", Box::new(by_name)),
    ]
}

/// D1 through the fake Cloudflare API, serving the SQLite file itself.
pub async fn fake_d1(db: PathBuf, sql: String) -> Served {
    common::create_db(&db, &sql);
    let fake = FakeD1::start().await;
    fake.add_database_from_file("edge", &db);
    let sources = d1_sources(api(&fake)).await;
    Served::new("fake D1", Box::new(fake), &db, sources).await
}

/// D1's own engine in workerd. The SQL runs through D1 (its `_cf_` lines left out, which D1
/// refuses), and the file is then D1's own copy, so values made at random are the same on both
/// sides.
pub async fn workerd_d1(db: PathBuf, sql: String) -> Served {
    let w = Workerd::start(&["edge"]);
    w.load("edge", &as_d1_holds(&sql)).await;
    w.save("edge", &db);
    Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE IF EXISTS _cf_METADATA")
        .unwrap();
    let sources = d1_sources(w.api()).await;
    Served::new("workerd D1", Box::new(w), &db, sources).await
}

/// Every check below as a test of the implementation that `$serve` serves, in module `$name`;
/// the D1 checks too when `d1` follows.
macro_rules! conformance {
    ($name:ident, $serve:ident) => {
        conformance!(@tests $name, $serve, plans_and_reads_the_same, large_values_read_the_same,
            pages_stop_at_the_last_rowid, reals_read_the_same);
    };
    ($name:ident, $serve:ident, d1) => {
        conformance!(@tests $name, $serve, plans_and_reads_the_same, large_values_read_the_same,
            pages_stop_at_the_last_rowid, reals_read_the_same, a_key_too_long_is_one_clear_error,
            foreign_keys_stay_on);
    };
    (@tests $name:ident, $serve:ident, $($check:ident),+) => {
        mod $name {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::$serve).await;
                }
            )+
        }
    };
}

conformance!(fake, fake_d1, d1);
conformance!(workerd, workerd_d1, d1);

/// Where a check's database is made: a file in a fresh folder, kept as long as the guard.
fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(name);
    (dir, db)
}

/// Every source plans the same schema and reads the same rows as the SQLite file, whatever the
/// page size.
pub async fn plans_and_reads_the_same(serve: impl Serve) {
    let (_dir, db) = scratch("edge.db");
    let Served {
        implementation: engine,
        sources,
        schema: reference,
        _server,
    } = serve(db, include_str!("../fixtures/edge.sql").to_string()).await;
    assert!(!reference.tables.is_empty());
    for (name, source) in &sources {
        let schema = catalog::load(source.as_ref(), &TableFilter::default())
            .await
            .unwrap();
        // The same plan; D1 alone lists its internal table as skipped.
        let skipped = |s: &Schema| -> Vec<(String, String)> {
            s.skipped
                .iter()
                .filter(|(t, _)| !t.starts_with("_cf_"))
                .cloned()
                .collect()
        };
        assert!(
            schema.tables == reference.tables
                && schema.post == reference.post
                && skipped(&schema) == skipped(&reference),
            "{engine} {name} plans a different schema"
        );
        assert!(
            !schema.tables.iter().any(|t| t.name.starts_with("_cf_")),
            "{name} backs up D1's internal table"
        );
    }
    for table in &reference.tables {
        if table.data != d1r2::model::DataMode::Rows {
            continue;
        }
        let want = all_rows(sources[0].1.as_ref(), table, 1000).await;
        for (name, source) in &sources {
            for limit in [1, 3, 1000] {
                let got = all_rows(source.as_ref(), table, limit).await;
                assert_eq!(
                    got, want,
                    "{engine} {name}: table {} with pages of {limit}",
                    table.name
                );
            }
        }
    }
}

#[tokio::test]
async fn identities_and_bookmarks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    common::create_db(&db, "CREATE TABLE t(a); INSERT INTO t VALUES (1);");
    let fake = FakeD1::start().await;
    let sources = sources(&fake, &db).await;
    let sqlite = &sources[0].1;
    assert_eq!(sqlite.info().kind, "sqlite");
    assert_eq!(sqlite.bookmark().await.unwrap(), None);
    for (_, d1) in &sources[1..] {
        let info = d1.info();
        assert_eq!(info.kind, "d1");
        assert_eq!(info.name.as_deref(), Some("edge"));
        assert!(info.database_id.is_some());
        let bookmark = d1.bookmark().await.unwrap().expect("D1 has a bookmark");
        assert!(!bookmark.is_empty());
        // Reads leave the bookmark where it is; a write moves it, as D1's does.
        d1.query(&["SELECT count(*) FROM t".to_string()])
            .await
            .unwrap();
        assert_eq!(d1.bookmark().await.unwrap().unwrap(), bookmark);
        fake.execute(
            info.database_id.as_deref().unwrap(),
            "INSERT INTO t VALUES (2)",
        );
        assert_ne!(d1.bookmark().await.unwrap().unwrap(), bookmark);
    }
}

#[tokio::test]
async fn missing_databases_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteSource::open(&dir.path().join("none.db"))
        .err()
        .unwrap();
    assert_eq!(err.kind(), Kind::BadInput, "{err}");
    let fake = FakeD1::start().await;
    for name in ["no-such-db", "00000000-0000-4000-8000-00000000dead"] {
        let err = D1Source::connect(api(&fake), name).await.err().unwrap();
        assert!(matches!(err, SourceError::Missing(_)), "{err}");
        assert_eq!(err.kind(), Kind::BadInput);
    }
    let wrong = Api::new(&fake.url, "wrong-token", ACCOUNT, quick());
    let err = D1Source::connect(wrong, "x").await.err().unwrap();
    assert_eq!(err.kind(), Kind::BadInput, "{err}");
    let text = err.to_string();
    assert!(text.contains("code 10000"), "{text}");
    assert!(!text.contains("wrong-token"), "{text}");
}

#[tokio::test]
async fn reading_d1_internal_tables_is_refused_by_the_fake() {
    let fake = FakeD1::start().await;
    let id = fake.add_database("internal", "CREATE TABLE t(a);");
    let d1 = D1Source::connect(api(&fake), &id).await.unwrap();
    let err = d1
        .query(&["SELECT * FROM _cf_KV".to_string()])
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("SQLITE_AUTH"), "{err}");
    let listed = d1.query(&["PRAGMA table_list".to_string()]).await.unwrap();
    assert!(format!("{listed:?}").contains("_cf_KV"));
}

/// The catalog of D1 is one request however many tables there are (every ordinary table's
/// columns and indexes come as table-valued pragmas in the same request as `sqlite_master`), and
/// a second only for AUTOINCREMENT counters and the virtual tables backed up, described one by
/// one: a virtual table whose module is not loaded (an extension's) can still be left out with
/// `--exclude`. Every case plans what the SQLite file plans, counters included.
#[tokio::test]
async fn the_catalog_is_one_request_and_a_second_only_for_counters_and_virtual_tables() {
    let dir = tempfile::tempdir().unwrap();
    let mut sql = String::new();
    for n in 0..130 {
        sql.push_str(&format!(
            "CREATE TABLE \"t {n}\"(id INTEGER PRIMARY KEY, v TEXT NOT NULL, w AS (v || 'x'), UNIQUE(v));"
        ));
    }
    let db = |name: &str, extra: &str| {
        let path = dir.path().join(format!("{name}.db"));
        common::create_db(&path, &format!("{sql}{extra}"));
        path
    };
    let counter = "CREATE TABLE counted(id INTEGER PRIMARY KEY AUTOINCREMENT, v); \
                   INSERT INTO counted(id, v) VALUES (9007199254740993, 'x');";
    let fts = "CREATE VIRTUAL TABLE docs USING fts5(title, body);";
    let ghost = "PRAGMA writable_schema = ON; \
                 INSERT INTO sqlite_master VALUES \
                 ('table', 'ghost', 'ghost', 0, 'CREATE VIRTUAL TABLE ghost USING no_such_module(a)'); \
                 PRAGMA writable_schema = OFF;";
    let without_ghost = TableFilter {
        exclude: vec!["ghost".to_string()],
        ..TableFilter::default()
    };
    // (database, filter, requests, tables planned, a counter)
    let cases = [
        (db("plain", ""), TableFilter::default(), 1, 130, false),
        (db("counted", counter), TableFilter::default(), 2, 131, true),
        (db("fts", fts), TableFilter::default(), 2, 131, false),
        (db("ghost", ghost), without_ghost, 1, 130, false),
    ];
    let fake = FakeD1::start().await;
    for (path, filter, requests, tables, counted) in cases {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let id = fake.add_database_from_file(&name, &path);
        let d1 = D1Source::connect(api(&fake), &id).await.unwrap();
        let file = SqliteSource::open(&path).unwrap();
        fake.reset_counters();
        let schema = catalog::load(&d1, &filter).await.unwrap();
        assert_eq!(fake.count(|c| &c.requests), requests, "{name}");
        // The same plan (D1 alone also skips its `_cf_KV`).
        let want = catalog::load(&file, &filter).await.unwrap();
        assert!(
            schema.tables == want.tables && schema.post == want.post,
            "{name}"
        );
        assert_eq!(schema.tables.len(), tables, "{name}");
        let sequence = schema.tables.iter().find_map(|t| t.sequence.clone());
        let expected = counted.then(|| "9007199254740993".to_string());
        assert_eq!(sequence, expected, "{name}");
    }
    // Backed up, the table without its module is an error that names it.
    let path = dir.path().join("ghost.db");
    let err = catalog::load(&SqliteSource::open(&path).unwrap(), &TableFilter::default())
        .await
        .expect_err("a table whose module is missing cannot be described");
    assert!(err.to_string().contains("no_such_module"), "{err}");
}

#[tokio::test]
async fn first_pages_in_batches_are_the_tables_first_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("many.db");
    let mut sql = include_str!("../fixtures/edge.sql").to_string();
    // More tables than one D1 request carries, with more rows than the smaller limits.
    for n in 0..120 {
        sql.push_str(&format!(
            "CREATE TABLE many_{n}(id INTEGER PRIMARY KEY, v); \
             INSERT INTO many_{n}(v) VALUES ({n}), ('it''s {n}'), (X'{n:04x}'), (NULL), ({n}.5);"
        ));
    }
    common::create_db(&db, &sql);
    let fake = FakeD1::start().await;
    let (sources, schema) = served(&fake, &db).await;
    let tables: Vec<&Table> = schema
        .tables
        .iter()
        .filter(|t| t.data == d1r2::model::DataMode::Rows)
        .collect();
    assert!(tables.len() > 120);
    let file = Connection::open(&db).unwrap();
    let largest = |table: &Table| -> Option<i64> {
        file.query_row(
            &format!(
                "SELECT max({}) FROM {}",
                key_columns(table)[0],
                quote_ident(&table.name)
            ),
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    for (name, source) in &sources {
        for limit in [1, 3, 1000] {
            fake.reset_counters();
            let firsts = source.first_pages(&tables, limit).await.unwrap();
            let requests = fake.count(|c| &c.requests);
            assert_eq!(firsts.len(), tables.len(), "{name}");
            for (table, first) in tables.iter().zip(&firsts) {
                let alone = source.page(table, None, None, limit).await.unwrap();
                let what = format!("{name}: table {} at {limit} rows", table.name);
                assert_eq!(first.page, alone, "{what}");
                let want = match table.rowid_key() {
                    Some(_) if alone.goes_on(limit) => largest(table),
                    _ => None,
                };
                assert_eq!(first.largest_rowid, want, "{what}");
            }
            if name.starts_with("d1") {
                // At most 50 statements a request: the batches, the largest rowids of the tables
                // that go on when their batch had no room for them, a second read for each of
                // the two tables holding text that is not UTF-8, and nothing else per table.
                let batches = tables.len().div_ceil(50) as u64;
                let went_on = firsts.iter().filter(|f| f.largest_rowid.is_some()).count();
                let most = batches + went_on.div_ceil(50) as u64 + 2;
                assert!(
                    (batches..=most).contains(&requests),
                    "{name}: {requests} requests for {} tables",
                    tables.len()
                );
            }
        }
    }
    // Some tables went on at every limit, so the largest rowids above were not all none.
    assert!(
        tables
            .iter()
            .any(|t| t.rowid_key().is_some() && largest(t) > Some(1))
    );
    // A batch with room for them reads its largest rowids in its one request.
    let many = tables.iter().find(|t| t.name == "many_7").unwrap();
    for (name, source) in sources.iter().filter(|(name, _)| name.starts_with("d1")) {
        fake.reset_counters();
        let firsts = source.first_pages(&[many], 2).await.unwrap();
        assert_eq!(firsts[0].largest_rowid, Some(5), "{name}");
        assert_eq!(fake.count(|c| &c.requests), 1, "{name}");
    }
}

/// Values near D1's 2,000,000-byte limit, rows whose literals together pass it, and pages whose
/// rows are too large to hold many at once: every source must read them whole, and cut pages
/// short rather than hold hundreds of megabytes.
pub async fn large_values_read_the_same(serve: impl Serve) {
    let (_dir, db) = scratch("large.db");
    let wide_columns: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
    let wide_values: Vec<String> = (0..60u8)
        .map(|i| {
            format!(
                "replace(hex(zeroblob(10000)),'0','{}')",
                (b'a' + i % 26) as char
            )
        })
        .collect();
    let sql = format!(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB, t TEXT);
         INSERT INTO big VALUES
           (1, randomblob(1500000), 'small'),
           (2, NULL, replace(hex(zeroblob(450000)),'00','''x')),
           (3, zeroblob(600000), replace(hex(zeroblob(300000)),'00','é')),
           (4, X'00', CAST(randomblob(700000) AS TEXT)),
           (5, 1, CAST(X'41FF42' AS TEXT)),
           (6, randomblob(1999000), NULL),
           (7, 2.5, CAST(zeroblob(900001) AS TEXT));
         CREATE TABLE wide(id INTEGER PRIMARY KEY, {});
         INSERT INTO wide VALUES (1, {}), (2, {}), (3, {});
         CREATE TABLE kv(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
         INSERT INTO kv VALUES ('it''s', randomblob(1200000)),
           ('x,y', replace(hex(randomblob(400000)),'A','''')), ('z', 1);
         CREATE TABLE many(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<12)
           INSERT INTO many SELECT i, randomblob(1000000) FROM n;",
        wide_columns.join(","),
        wide_values.join(","),
        wide_values.join(","),
        wide_values.join(","),
    );
    let Served {
        sources,
        schema,
        _server,
        ..
    } = serve(db.clone(), sql).await;
    for table in &schema.tables {
        let want = all_rows(sources[0].1.as_ref(), table, 1000).await;
        let count: i64 = Connection::open(&db)
            .unwrap()
            .query_row(
                &format!("SELECT count(*) FROM \"{}\"", table.name),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(want.len() as i64, count, "table {}", table.name);
        // One D1 source is enough here: by id and by name read alike.
        for (name, source) in &sources[..2] {
            for limit in [2, 1000] {
                let got = all_rows(source.as_ref(), table, limit).await;
                assert_eq!(
                    got, want,
                    "{name}: table {} with pages of {limit}",
                    table.name
                );
            }
        }
    }
    // Twelve 1 MB BLOBs are never one page: each source cuts it after about twice its page size.
    let many = schema.tables.iter().find(|t| t.name == "many").unwrap();
    for (name, source) in &sources[..2] {
        let first = source.page(many, None, None, 1000).await.unwrap();
        assert!(first.is_cut(), "{name}");
        assert!(
            first.literal_bytes() <= 2 * source.page_bytes() + 2_000_100,
            "{name}: {} bytes in one page",
            first.literal_bytes()
        );
        let batched = source.first_pages(&[many], 1000).await.unwrap();
        assert_eq!(batched[0].page, first, "{name}");
        assert_eq!(batched[0].largest_rowid, Some(12), "{name}");
    }
}

/// Reals made at random (zeros of either sign, subnormals, infinities, any bits) read the same, bit
/// for bit, from every source, in every column kind: one without affinity and STRICT `ANY` keep
/// `-0.0`, which `quote()` writes as `0.0`; REAL, NUMERIC and INTEGER columns store a zero as the
/// integer 0 (read back as `0.0` from REAL), TEXT ones as text.
pub async fn reals_read_the_same(serve: impl Serve) {
    let (_dir, db) = scratch("reals.db");
    let mut rng = common::fixture::Rng::new();
    let mut reals: Vec<f64> = vec![-0.0, 0.0, -5e-324];
    reals.extend((0..200).map(|_| rng.real()));
    let rows: Vec<String> = reals
        .iter()
        .map(|f| {
            let v = common::fixture::real_literal(*f);
            format!("({v},{v},{v},{v},{v})")
        })
        .collect();
    let strict: Vec<String> = reals
        .iter()
        .map(|f| {
            let v = common::fixture::real_literal(*f);
            format!("({v},{v})")
        })
        .collect();
    let sql = format!(
        "CREATE TABLE r(plain, real REAL, numeric NUMERIC, integer INTEGER, text TEXT);
         INSERT INTO r VALUES {};
         CREATE TABLE s(id INTEGER PRIMARY KEY, any ANY, real REAL) STRICT;
         INSERT INTO s(any, real) VALUES {};",
        rows.join(","),
        strict.join(",")
    );
    let Served {
        implementation: engine,
        sources,
        schema,
        _server,
    } = serve(db.clone(), sql).await;
    // The file holds what SQLite made of them: the sign of zero kept without affinity, dropped in
    // a REAL column.
    let file = Connection::open(&db).unwrap();
    let bits = |sql: &str| -> Vec<u64> {
        file.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get::<_, f64>(0))
            .unwrap()
            .map(|f| f.unwrap().to_bits())
            .collect()
    };
    let negative_zero = (-0.0f64).to_bits();
    assert_eq!(bits("SELECT plain FROM r WHERE rowid=1"), [negative_zero]);
    assert_eq!(bits("SELECT any FROM s WHERE id=1"), [negative_zero]);
    assert_eq!(bits("SELECT real FROM r WHERE rowid=1"), [0]);
    for table in &schema.tables {
        let want = all_rows(sources[0].1.as_ref(), table, 1000).await;
        assert_eq!(want.len(), reals.len(), "table {}", table.name);
        for (name, source) in &sources {
            for limit in [7, 1000] {
                let got = all_rows(source.as_ref(), table, limit).await;
                let differ = got.iter().zip(&want).find(|(g, w)| g != w);
                assert!(
                    got.len() == want.len() && differ.is_none(),
                    "{engine} {name}: table {} with pages of {limit}: {differ:?}",
                    table.name
                );
            }
        }
    }
}

/// A key too long to page past in D1 is one clear error.
pub async fn a_key_too_long_is_one_clear_error(serve: impl Serve) {
    let (_dir, db) = scratch("key.db");
    let served = serve(
        db,
        "CREATE TABLE k(id TEXT PRIMARY KEY, v) WITHOUT ROWID;
         INSERT INTO k VALUES (hex(randomblob(600000)), 1);"
            .to_string(),
    )
    .await;
    let Served {
        sources,
        schema,
        _server,
        ..
    } = served;
    let err = sources[1]
        .1
        .page(&schema.tables[0], None, None, 10)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("key value of 1200000 bytes"),
        "{err}"
    );
}

/// A reader of part of a rowid table pages from after one rowid up to another, gaps and all.
pub async fn pages_stop_at_the_last_rowid(serve: impl Serve) {
    let (_dir, db) = scratch("range.db");
    let served = serve(
        db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<60)
           INSERT INTO t SELECT i*i - 500, 'v' || i FROM n;
         CREATE TABLE r(v); INSERT INTO r VALUES (1),(2),(3),(4),(5);"
            .to_string(),
    )
    .await;
    let Served {
        sources,
        schema,
        _server,
        ..
    } = served;
    for (table, after, upto, want) in [
        ("t", -500, 100, (-499..=100).collect::<Vec<i64>>()),
        ("t", 100, 3000, (101..=3000).collect()),
        ("t", -1000, -500, vec![]),
        ("r", 1, 4, vec![2, 3, 4]),
    ] {
        let table = schema.tables.iter().find(|t| t.name == table).unwrap();
        let squares: Vec<i64> = (1..=60i64).map(|i| i * i - 500).collect();
        let want: Vec<String> = want
            .into_iter()
            .filter(|k| table.name == "r" || squares.contains(k))
            .map(|k| k.to_string())
            .collect();
        for (name, source) in &sources {
            let mut keys = Vec::new();
            let mut from = vec![after.to_string()];
            loop {
                let page = source
                    .page(table, Some(&from), Some(upto), 3)
                    .await
                    .unwrap();
                keys.extend(page.rows().map(|row| row_key(table, row)[0].clone()));
                match page.last() {
                    Some(last) if page.len() == 3 => from = row_key(table, last),
                    _ => break,
                }
            }
            assert_eq!(
                keys, want,
                "{name}: {} after {after} up to {upto}",
                table.name
            );
        }
    }
}

/// Through D1's own engine: a database found by name and by id, a bookmark that a write moves
/// (and, locally, a read too), and missing databases and a wrong token as bad input that never prints the token.
#[tokio::test]
async fn identities_bookmarks_and_missing_databases_in_workerd() {
    let w = Workerd::start(&["edge"]);
    w.load("edge", "CREATE TABLE t(a); INSERT INTO t VALUES (1);")
        .await;
    let by_name = D1Source::connect(w.api(), "edge").await.unwrap();
    let by_id = D1Source::connect(w.api(), &w.id("edge")).await.unwrap();
    for d1 in [&by_name, &by_id] {
        let info = d1.info();
        assert_eq!(info.kind, "d1");
        assert_eq!(info.name.as_deref(), Some("edge"));
        assert_eq!(info.database_id.as_deref(), Some(w.id("edge").as_str()));
    }
    let before = by_id.bookmark().await.unwrap().expect("D1 has a bookmark");
    // A known difference (docs/d1.md): workerd's local bookmark counts every query, a read's
    // too, where production D1's moves with writes alone. Should this start to hold, workerd
    // can run the consistency tests with a writer too.
    by_id
        .query(&["SELECT count(*) FROM t".to_string()])
        .await
        .unwrap();
    assert_ne!(by_id.bookmark().await.unwrap().unwrap(), before);
    w.execute("edge", "INSERT INTO t VALUES (2)").await;
    let after = by_id.bookmark().await.unwrap().expect("D1 has a bookmark");
    assert_ne!(before, after, "a write did not move the bookmark");
    for name in ["no-such-db", "00000000-0000-4000-8000-00000000dead"] {
        let err = D1Source::connect(w.api(), name).await.err().unwrap();
        assert!(matches!(err, SourceError::Missing(_)), "{err}");
    }
    let wrong = Api::new(&w.url, "wrong-token", common::workerd::ACCOUNT, quick());
    let err = D1Source::connect(wrong, "edge").await.err().unwrap();
    assert_eq!(err.kind(), Kind::BadInput, "{err}");
    assert!(err.to_string().contains("code 10000"), "{err}");
    assert!(!err.to_string().contains("wrong-token"), "{err}");
}

/// D1 accepts `PRAGMA foreign_keys=OFF` and keeps enforcing them, so a restore must defer them
/// instead (`PRAGMA defer_foreign_keys`), as d1r2's import file does.
pub async fn foreign_keys_stay_on(serve: impl Serve) {
    let (_dir, db) = scratch("fk.db");
    let served = serve(
        db,
        "CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id));".to_string(),
    )
    .await;
    let engine = served.implementation;
    let d1 = &served.sources[1].1;
    let answers = d1
        .query(&[
            "PRAGMA foreign_keys=OFF".into(),
            "PRAGMA foreign_keys".into(),
        ])
        .await
        .unwrap();
    assert_eq!(
        format!("{:?}", answers[1]),
        format!("{:?}", [[Cell::Integer(1)]])
    );
    let err = d1
        .query(&["INSERT INTO c VALUES (42)".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{engine}: {err}");
}
