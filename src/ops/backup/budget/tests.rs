//! The pages real backups hold at once, counted against [`super::pages`]: a SQLite file backed up
//! into a local folder behind a slow destination, so pages pile up wherever nothing holds them
//! back.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{PAGES_HELD, pages};
use crate::model::page::gauge::Gauge;
use crate::model::{Cell, Page, SourceInfo, Table};
use crate::ops::backup::{self, BackupOptions};
use crate::source::sqlite::SqliteSource;
use crate::source::{FirstPage, Source, SourceError};
use crate::store::local::LocalStore;
use crate::store::{ByteStream, ObjectMeta, Store, StoreError, Upload};

/// A source that counts the pages it hands out, from when each is asked for until it is
/// dropped: first pages and later pages apart, and all of them together.
struct Counted {
    inner: SqliteSource,
    firsts: Arc<Gauge>,
    later: Arc<Gauge>,
    all: Arc<Gauge>,
}

#[async_trait]
impl Source for Counted {
    fn info(&self) -> SourceInfo {
        self.inner.info()
    }

    async fn query(&self, statements: &[String]) -> Result<Vec<Vec<Vec<Cell>>>, SourceError> {
        self.inner.query(statements).await
    }

    async fn page(
        &self,
        table: &Table,
        after: Option<&[String]>,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Page, SourceError> {
        let held = (self.later.take(), self.all.take());
        let mut page = self.inner.page(table, after, upto, limit).await?;
        page.hold(held.0);
        page.hold(held.1);
        Ok(page)
    }

    async fn first_pages(
        &self,
        tables: &[&Table],
        limit: usize,
    ) -> Result<Vec<FirstPage>, SourceError> {
        let mut held: Vec<_> = tables
            .iter()
            .map(|_| (self.firsts.take(), self.all.take()))
            .collect();
        let mut firsts = self.inner.first_pages(tables, limit).await?;
        for (first, (one, all)) in firsts.iter_mut().zip(held.drain(..)) {
            first.page.hold(one);
            first.page.hold(all);
        }
        Ok(firsts)
    }
}

/// A destination that takes its time over every write, as a far bucket does.
struct Slow(LocalStore);

impl std::fmt::Display for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

struct SlowUpload(Box<dyn Upload>);

async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
}

#[async_trait]
impl Upload for SlowUpload {
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        pause().await;
        self.0.write(data).await
    }

    async fn finish(self: Box<Self>, sha256: Option<[u8; 32]>) -> Result<(), StoreError> {
        self.0.finish(sha256).await
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        self.0.abort().await
    }
}

#[async_trait]
impl Store for Slow {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.0.put(key, data).await
    }

    async fn put_stream(&self, key: &str) -> Result<Box<dyn Upload>, StoreError> {
        Ok(Box::new(SlowUpload(self.0.put_stream(key).await?)))
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.0.get(key).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.0.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.0.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key).await
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.0.put_new(key, data).await
    }

    async fn abort_stale_uploads(
        &self,
        older_than: DateTime<Utc>,
        owned: crate::store::OwnedKey,
    ) -> Result<usize, StoreError> {
        self.0.abort_stale_uploads(older_than, owned).await
    }
}

/// Tiny tables, enough for several batches of first pages.
const SMALL_TABLES: usize = 120;

/// A database of `rows` rows in each of its large tables: a dense rowid table, one whose rowids
/// are sparse and then dense (windows sized for the sparse rows hold far more than their row
/// limit), a WITHOUT ROWID table (paged by key), and [`SMALL_TABLES`] of a few rows each; gives
/// the rows in all.
fn database(path: &Path, rows: usize) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE dense(id INTEGER PRIMARY KEY, v TEXT);
         CREATE TABLE sparse_then_dense(v TEXT);
         CREATE TABLE keyed(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
         BEGIN;",
    )
    .unwrap();
    let mut seed = 7u64;
    let mut text = move || {
        (0..12)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                format!("{:x}", seed >> 40)
            })
            .collect::<String>()
    };
    for i in 0..rows {
        conn.execute("INSERT INTO dense(v) VALUES (?1)", [text()])
            .unwrap();
        let rowid = if i < rows / 4 {
            i as i64 * 1000
        } else {
            (rows / 4) as i64 * 1000 + i as i64
        };
        conn.execute(
            "INSERT INTO sparse_then_dense(rowid, v) VALUES (?1, ?2)",
            rusqlite::params![rowid, text()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO keyed VALUES (?1, ?2)",
            [format!("k{i:08}"), text()],
        )
        .unwrap();
    }
    for t in 0..SMALL_TABLES {
        conn.execute_batch(&format!(
            "CREATE TABLE small_{t}(a INTEGER, b TEXT);
             INSERT INTO small_{t} VALUES ({t}, 'x'), ({t}, 'y');"
        ))
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    3 * rows as u64 + 2 * SMALL_TABLES as u64
}

/// What one backup held at most: `(later pages, all pages)`, the rows it backed up, and whether
/// a table was split between readers.
async fn backup_counting(
    db: &Path,
    dir: &Path,
    concurrency: usize,
    table_readers: usize,
) -> (usize, usize, u64, bool) {
    let source = Counted {
        inner: SqliteSource::open(db).unwrap(),
        firsts: Arc::default(),
        later: Arc::default(),
        all: Arc::default(),
    };
    let store: Arc<dyn Store> = Arc::new(Slow(LocalStore::create(dir).unwrap()));
    let options = BackupOptions {
        concurrency,
        table_readers,
        page_bytes: Some(8 * 1024),
        ..BackupOptions::default()
    };
    let outcome = backup::run(&source, &[store], &options).await.unwrap();
    assert_eq!(
        (source.firsts.now(), source.later.now(), source.all.now()),
        (0, 0, 0),
        "every page is dropped once the backup is done"
    );
    let rows = outcome.manifest.tables.iter().map(|t| t.rows).sum();
    let split = outcome
        .manifest
        .objects
        .iter()
        .any(|o| o.key.contains(".r1-"));
    (source.later.most(), source.all.most(), rows, split)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_held_stay_within_the_budget_whatever_the_size() {
    let dir = tempfile::tempdir().unwrap();
    for rows in [2_000, 8_000] {
        let db = dir.path().join(format!("{rows}.db"));
        let total = database(&db, rows);
        for (concurrency, table_readers) in [(1, 1), (2, 1), (4, 1), (4, 2)] {
            let out = dir
                .path()
                .join(format!("{rows}-{concurrency}-{table_readers}"));
            let (later, all, backed_up, split) =
                backup_counting(&db, &out, concurrency, table_readers).await;
            let case = format!(
                "{rows} rows a table, concurrency {concurrency}, {table_readers} readers a table: \
                 {later} later pages, {all} pages in all"
            );
            eprintln!("{case}");
            assert_eq!(backed_up, total, "{case}");
            assert_eq!(
                split,
                table_readers > 1,
                "{case}: tables split between readers"
            );
            assert!(later > 0, "{case}: the tables go on past their first pages");
            assert!(later <= concurrency * PAGES_HELD, "{case}");
            assert!(all <= pages(concurrency), "{case}");
        }
    }
}

/// The budget ARCHITECTURE.md states: three pages a reader, and a hundred and one first pages
/// (fifty-one readers taken ahead and one batch of fifty). Changing a constant changes the bound
/// everyone reads, so it is a change of this table too.
#[test]
fn pages_table() {
    for (concurrency, want) in [(0, 104), (1, 104), (4, 113), (16, 149)] {
        assert_eq!(pages(concurrency), want, "concurrency {concurrency}");
    }
}
