//! End to end over real protocols: the d1r2 binary backs up D1 (the fake Cloudflare API, a real
//! SQLite database behind it) into R2/S3 (a real S3 server), restores into a SQLite file and into
//! D1 through the import API, and compares every cell with the source; also with a fifth of all
//! requests failing. The round trips run a second time against D1's own engine as workerd runs it
//! (tests/workerd), where an export is also applied with the stock `wrangler d1 execute --file`.

use crate::common;
use crate::fakes;

use std::path::{Path, PathBuf};

use common::cmd::{D1r2, Run};
use common::workerd::{Workerd, as_d1_holds};
use common::*;
use fakes::d1::{ACCOUNT, Counters, FakeD1, Fault, TOKEN};
use fakes::s3::FakeS3;
use rusqlite::Connection;

struct World {
    d1: FakeD1,
    /// When set, d1r2 talks to D1's own engine in workerd instead of the fake.
    real: Option<Workerd>,
    s3: FakeS3,
    dir: tempfile::TempDir,
}

/// The D1 a shared test runs against.
#[derive(Clone, Copy, Debug)]
enum Engine {
    Fake,
    Workerd,
}

impl World {
    async fn start() -> World {
        World {
            d1: FakeD1::start().await,
            real: None,
            s3: FakeS3::start(&["backups"]).await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A world whose D1 is `engine`, with the (empty) databases `names`.
    async fn with(engine: Engine, names: &[&str]) -> World {
        let mut w = World::start().await;
        if let Engine::Workerd = engine {
            w.real = Some(Workerd::start(names));
        }
        w
    }

    fn d1_url(&self) -> &str {
        self.real.as_ref().map_or(&self.d1.url, |r| &r.url)
    }

    /// A SQLite file holding what `sql` builds, and the D1 database `name` holding the same;
    /// returns the file and the database's id. In workerd the SQL runs through D1 (its `_cf_`
    /// lines left out, which D1 refuses) and the file is D1's own copy of the result.
    async fn served_database(&self, name: &str, sql: &str) -> (PathBuf, String) {
        let Some(real) = &self.real else {
            return self.database(name, sql);
        };
        real.load(name, &as_d1_holds(sql)).await;
        let id = real.id(name);
        (self.saved(&id, &format!("{name}.db")), id)
    }

    /// The id of the empty D1 database `name`.
    fn empty_database(&self, name: &str) -> String {
        match &self.real {
            Some(real) => real.id(name),
            None => self.d1.add_database(name, ""),
        }
    }

    /// Runs SQL directly on a D1 database, as the application would.
    async fn execute(&self, id: &str, sql: &str) {
        match &self.real {
            Some(real) => real.execute(id, sql).await,
            None => self.d1.execute(id, sql),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A SQLite file built by `sql`, also served as the D1 database `name`; returns its id.
    fn database(&self, name: &str, sql: &str) -> (PathBuf, String) {
        let file = self.path(&format!("{name}.db"));
        create_db(&file, sql);
        let id = self.d1.add_database_from_file(name, &file);
        (file, id)
    }

    async fn run_with(&self, args: &[&str], token: &str) -> Run {
        self.run_with_env(args, &[("CLOUDFLARE_API_TOKEN", token)])
            .await
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, self.token()).await
    }

    fn token(&self) -> &'static str {
        if self.real.is_some() {
            common::workerd::TOKEN
        } else {
            TOKEN
        }
    }

    fn account(&self) -> &'static str {
        if self.real.is_some() {
            common::workerd::ACCOUNT
        } else {
            ACCOUNT
        }
    }

    /// Runs the binary against the fakes; `env` adds to or overrides the fakes' variables.
    async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        D1r2::new()
            .args(args)
            .env_remove("GITHUB_ACTIONS")
            .env("CLOUDFLARE_API_BASE_URL", self.d1_url())
            .env("CLOUDFLARE_API_TOKEN", self.token())
            .env("CLOUDFLARE_ACCOUNT_ID", self.account())
            .env("RUST_LOG", "warn")
            .envs(self.s3.env())
            .envs(env.iter().copied())
            .run_async()
            .await
    }

    /// Backs up `d1://name` into the local folder `folder`, and returns the folder.
    async fn backup_d1(&self, name: &str, folder: &str) -> PathBuf {
        let local = self.path(folder);
        let source = format!("d1://{name}");
        self.ok(&[
            "backup",
            "--source",
            &source,
            "--dest",
            local.to_str().unwrap(),
        ])
        .await;
        local
    }

    /// Restores the latest backup at `from` into the file `name` and checks it holds what
    /// `source` does, cell by cell.
    async fn restores_the_same(&self, from: &str, source: &Path, name: &str) {
        let restored = self.path(name);
        self.ok(&[
            "restore",
            "--from",
            from,
            "--to",
            restored.to_str().unwrap(),
        ])
        .await;
        assert_same_database(source, &restored);
    }

    async fn ok(&self, args: &[&str]) -> Run {
        let out = self.run(args).await;
        out.success();
        out
    }

    /// The D1 database `id` saved as a file, without D1's internal table, to compare.
    fn saved(&self, id: &str, name: &str) -> PathBuf {
        let file = self.path(name);
        let _ = std::fs::remove_file(&file);
        match &self.real {
            Some(real) => real.save(id, &file),
            None => self.d1.save(id, &file),
        }
        Connection::open(&file)
            .unwrap()
            .execute_batch("DROP TABLE IF EXISTS _cf_KV; DROP TABLE IF EXISTS _cf_METADATA")
            .unwrap();
        file
    }
}

fn text(out: &Run) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

fn manifest(dir: &Path) -> serde_json::Value {
    let entry = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("manifest.json").exists())
        .expect("a backup");
    serde_json::from_slice(&std::fs::read(entry.join("manifest.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_to_r2_and_back_cell_by_cell() {
    to_r2_and_back_cell_by_cell(Engine::Fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_to_r2_and_back_cell_by_cell_in_workerd() {
    to_r2_and_back_cell_by_cell(Engine::Workerd).await;
}

async fn to_r2_and_back_cell_by_cell(engine: Engine) {
    let w = World::with(engine, &["prod"]).await;
    let (source, _) = w
        .served_database("prod", include_str!("../fixtures/edge.sql"))
        .await;
    let local = w.path("local-copy");
    w.ok(&[
        "backup",
        "--source",
        "d1://prod",
        "--dest",
        "s3://backups/nightly",
        "--dest",
        local.to_str().unwrap(),
    ])
    .await;
    let m = manifest(&local);
    assert_eq!(m["source"]["kind"], "d1");
    assert_eq!(m["source"]["name"], "prod");
    assert!(
        m["source"]["bookmark"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    );
    assert!(
        !m["tables"].to_string().contains("_cf_KV"),
        "D1's internal table was backed up"
    );

    for from in ["s3://backups/nightly", local.to_str().unwrap()] {
        w.restores_the_same(from, &source, &format!("restored-{}.db", from.len()))
            .await;
        w.ok(&["verify", "--from", from]).await;
    }
    let log = w.s3.log();
    assert!(
        log.iter().any(|l| l.contains("/backups/nightly/")),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_d1_through_the_import_api() {
    restore_through_the_import_api(Engine::Fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_d1_through_the_import_api_in_workerd() {
    restore_through_the_import_api(Engine::Workerd).await;
}

async fn restore_through_the_import_api(engine: Engine) {
    let w = World::with(engine, &["prod", "staging"]).await;
    let (source, _) = w
        .served_database("prod", include_str!("../fixtures/edge.sql"))
        .await;
    let target = w.empty_database("staging");
    w.ok(&[
        "backup",
        "--source",
        "d1://prod",
        "--dest",
        "s3://backups/p",
    ])
    .await;
    let out = w
        .ok(&[
            "restore",
            "--from",
            "s3://backups/p",
            "--to",
            "d1://staging",
        ])
        .await;
    assert!(text(&out).contains("D1 bookmark after"), "{}", text(&out));
    assert_same_database(&source, &w.saved(&target, "staging-1.db"));

    let again = w
        .run(&[
            "restore",
            "--from",
            "s3://backups/p",
            "--to",
            "d1://staging",
        ])
        .await;
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("--force"), "{}", text(&again));

    // The latest backup is a chunked one: the import reads its rows from the chunks.
    w.ok(&[
        "backup",
        "--source",
        "d1://prod",
        "--dest",
        "s3://backups/p",
        "--chunk-size",
        "4096",
    ])
    .await;
    w.execute(
        &target,
        "INSERT INTO kv VALUES ('new', 1, 'changed since');",
    )
    .await;
    w.ok(&[
        "restore",
        "--from",
        "s3://backups/p",
        "--to",
        &format!("d1://{target}"),
        "--force",
    ])
    .await;
    assert_same_database(&source, &w.saved(&target, "staging-2.db"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_import_leaves_d1_as_it_was() {
    failing_import_leaves_d1_as_it_was(Engine::Fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_import_leaves_d1_as_it_was_in_workerd() {
    failing_import_leaves_d1_as_it_was(Engine::Workerd).await;
}

/// A backup whose rows break a foreign key (a SQLite file may hold them; D1 never does) is
/// refused by D1 at the end of the import, and the database keeps what it held.
async fn failing_import_leaves_d1_as_it_was(engine: Engine) {
    let w = World::with(engine, &["staging"]).await;
    let broken = w.path("broken.db");
    create_db(
        &broken,
        "PRAGMA foreign_keys=OFF; CREATE TABLE parent(id INTEGER PRIMARY KEY); CREATE TABLE child(p REFERENCES parent(id)); INSERT INTO child VALUES (42);",
    );
    let (_, target) = w
        .served_database(
            "staging",
            "CREATE TABLE keep(x); INSERT INTO keep VALUES (1);",
        )
        .await;
    w.ok(&[
        "backup",
        "--source",
        broken.to_str().unwrap(),
        "--dest",
        "s3://backups/p",
    ])
    .await;
    let out = w
        .run(&[
            "restore",
            "--from",
            "s3://backups/p",
            "--to",
            "d1://staging",
            "--force",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FOREIGN KEY"), "{}", text(&out));
    let saved = w.saved(&target, "after.db");
    let conn = Connection::open(saved).unwrap();
    assert_eq!(user_tables(&conn), ["keep"]);
    assert_eq!(
        table_cells(&conn, "keep"),
        [[Exact::Integer(1), Exact::Integer(1)]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_of_all_requests_failing_changes_nothing() {
    let w = World::start().await;
    let (source, _) = w.database("prod", include_str!("../fixtures/edge.sql"));
    let target = w.d1.add_database("staging", "");
    w.d1.fail_randomly(0.2, 7);
    w.s3.fail_randomly(0.2, 11);
    w.ok(&[
        "backup",
        "--source",
        "d1://prod",
        "--dest",
        "s3://backups/flaky",
    ])
    .await;
    w.restores_the_same("s3://backups/flaky", &source, "flaky.db")
        .await;
    w.ok(&[
        "restore",
        "--from",
        "s3://backups/flaky",
        "--to",
        "d1://staging",
    ])
    .await;
    w.d1.fail_randomly(0.0, 1);
    assert_same_database(&source, &w.saved(&target, "flaky-d1.db"));
    assert!(w.d1.count(|c| &c.faults) > 0, "no D1 request failed");
    assert!(
        w.s3.state.faults.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no S3 request failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_dropped_connections_are_retried() {
    let w = World::start().await;
    let (source, _) = w.database("prod", "CREATE TABLE t(a); INSERT INTO t VALUES (1), (2);");
    w.d1.script_faults(&[
        Fault::TooMany { retry_after: 1 },
        Fault::Drop,
        Fault::Internal,
        Fault::BadGateway,
    ]);
    let started = std::time::Instant::now();
    let local = w.backup_d1("prod", "b").await;
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After ignored"
    );
    assert_eq!(w.d1.count(|c| &c.faults), 4);
    w.restores_the_same(local.to_str().unwrap(), &source, "r.db")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_one_clear_line() {
    let w = World::start().await;
    w.database("prod", "CREATE TABLE t(a);");
    let local = w.path("b");
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec![
                "backup",
                "--source",
                "d1://prod",
                "--dest",
                local.to_str().unwrap(),
            ],
            "wrong-token-value-1234",
            "code 10000",
        ),
        (
            vec![
                "backup",
                "--source",
                "d1://nope",
                "--dest",
                local.to_str().unwrap(),
            ],
            TOKEN,
            "d1://nope",
        ),
        (
            vec![
                "backup",
                "--source",
                "d1://00000000-0000-4000-8000-00000000dead",
                "--dest",
                local.to_str().unwrap(),
            ],
            TOKEN,
            "no such database",
        ),
    ];
    for (args, token, expected) in cases {
        let out = w.run_with(&args, token).await;
        let stderr = &out.stderr;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            !text(&out).contains("wrong-token-value"),
            "the token was printed"
        );
    }
    // A failure that persists past the retries is exit 1, not bad input.
    w.d1.fail_randomly(1.0, 3);
    let out = w
        .run_with_env(
            &[
                "backup",
                "--source",
                "d1://prod",
                "--dest",
                local.to_str().unwrap(),
            ],
            &[("D1R2_API_MAX_ATTEMPTS", "3")],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("HTTP"), "{}", text(&out));
    let bad = w
        .run_with_env(
            &[
                "backup",
                "--source",
                "d1://prod",
                "--dest",
                local.to_str().unwrap(),
            ],
            &[("D1R2_API_MAX_ATTEMPTS", "many")],
        )
        .await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

/// What a backup costs in D1 terms: rows read stay at the row count (keyset pages, never
/// OFFSET), requests at a handful per megabyte; values over 100 kB restore into D1 within its
/// statement limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_read_and_requests_stay_near_the_row_count() {
    let w = World::start().await;
    let rows = 30_000;
    let (source, _) = w.database(
        "big",
        &format!(
            "CREATE TABLE events(id INTEGER PRIMARY KEY, kind TEXT, at INTEGER, payload TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO events SELECT i, 'kind-' || (i % 17), 1700000000 + i, printf('%.*c', 40 + i % 60, 'x') FROM n;
             CREATE TABLE blobs(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
             INSERT INTO blobs VALUES ('big', randomblob(300000)), ('small', X'01');"
        ),
    );
    w.d1.reset_counters();
    let local = w.backup_d1("big", "b").await;
    let read = w.d1.count(|c| &c.rows_read);
    let requests = w.d1.count(|c| &c.requests);
    let total_rows = rows + 2;
    eprintln!("backup of {total_rows} rows: {requests} requests, {read} rows read");
    assert!(read as f64 <= 1.1 * total_rows as f64, "{read} rows read");
    assert!(read >= total_rows, "the fake undercounts: {read}");

    let target = w.d1.add_database("copy", "");
    w.ok(&[
        "restore",
        "--from",
        local.to_str().unwrap(),
        "--to",
        "d1://copy",
    ])
    .await;
    assert_same_database(&source, &w.saved(&target, "copy.db"));
}

#[tokio::test]
async fn the_fake_bills_offset_like_d1() {
    let fake = FakeD1::start().await;
    let id = fake.add_database(
        "t",
        "CREATE TABLE t(a); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) INSERT INTO t SELECT i FROM n;",
    );
    let api = d1r2::CloudflareApi::new(&fake.url, TOKEN, ACCOUNT, Default::default());
    let path = api.account_path(&format!("d1/database/{id}/raw"));
    for (sql, at_least, at_most) in [
        ("SELECT * FROM t LIMIT 100 OFFSET 4000", 4000, 4200),
        (
            "SELECT * FROM t WHERE rowid > 4000 ORDER BY rowid LIMIT 100",
            100,
            110,
        ),
    ] {
        fake.reset_counters();
        let _: serde_json::Value = api
            .result(
                reqwest::Method::POST,
                &path,
                Some(&serde_json::json!({ "sql": sql })),
                "q",
            )
            .await
            .unwrap();
        let read = fake.count(|c: &Counters| &c.rows_read);
        assert!((at_least..=at_most).contains(&read), "{sql}: {read}");
    }
    let long = format!("SELECT '{}'", "x".repeat(100_000));
    let params: Vec<String> = (0..101).map(|i| i.to_string()).collect();
    let many = format!("SELECT {}", vec!["?"; 101].join(","));
    for (body, expected) in [
        (serde_json::json!({ "sql": long }), "SQLITE_TOOBIG"),
        (
            serde_json::json!({ "sql": many, "params": params }),
            "too many SQL variables",
        ),
        (
            serde_json::json!({ "sql": "BEGIN TRANSACTION" }),
            "SQLITE_AUTH",
        ),
    ] {
        let err = api
            .result::<serde_json::Value>(reqwest::Method::POST, &path, Some(&body), "q")
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
}

/// Values up to D1's 2,000,000-byte limit, which `quote()` cannot return whole there, and rows of
/// many long values: backed up from D1, restored into a file and into D1, the same cell by cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_at_d1_length_limit_round_trip() {
    length_limit_round_trip(Engine::Fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_at_d1_length_limit_round_trip_in_workerd() {
    length_limit_round_trip(Engine::Workerd).await;
}

async fn length_limit_round_trip(engine: Engine) {
    let w = World::with(engine, &["media", "media-copy"]).await;
    let (source, _) = w.served_database(
        "media",
        "CREATE TABLE files(id INTEGER PRIMARY KEY, name TEXT, body BLOB, note TEXT);
         INSERT INTO files VALUES
           (1, 'a.png', randomblob(1999000), NULL),
           (2, 'b.txt', NULL, replace(hex(zeroblob(400000)),'00','''é')),
           (3, 'c.bin', randomblob(1100000), CAST(randomblob(800000) AS TEXT)),
           (4, 'd', X'00', CAST(X'61006200' || zeroblob(1200000) AS TEXT));
         CREATE TABLE docs(slug TEXT PRIMARY KEY, a TEXT, b TEXT, c TEXT) WITHOUT ROWID;
         INSERT INTO docs VALUES ('x''y', hex(randomblob(300000)), hex(randomblob(300000)), hex(randomblob(300000)));",
    ).await;
    let target = w.empty_database("media-copy");
    w.ok(&[
        "backup",
        "--source",
        "d1://media",
        "--dest",
        "s3://backups/media",
    ])
    .await;
    w.restores_the_same("s3://backups/media", &source, "media-restored.db")
        .await;
    w.ok(&["verify", "--from", "s3://backups/media"]).await;
    w.ok(&[
        "restore",
        "--from",
        "s3://backups/media",
        "--to",
        "d1://media-copy",
    ])
    .await;
    assert_same_database(&source, &w.saved(&target, "media-copy.db"));
}

/// One reader of a large table asks for its next rowid window before the last one arrives, so
/// D1 always has a query waiting; rowids with gaps, negative ones and ones near the largest
/// integer still come back each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reader_keeps_d1_busy_with_rowid_windows() {
    let w = World::start().await;
    let (source, _) = w.database(
        "gappy",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
         INSERT INTO t SELECT CASE
             WHEN i <= 10000 THEN i - 20000
             WHEN i <= 30000 THEN i * 3
             WHEN i <= 39990 THEN 1000000000000 + i * i
             ELSE 9223372036854775807 - (40000 - i) END,
           printf('row %d %.*c', i, i % 50, 'x') FROM n;
         DELETE FROM t WHERE id BETWEEN 30000 AND 60000 OR id % 11 = 0;",
    );
    w.d1.set_latency(std::time::Duration::from_millis(10));
    w.d1.reset_counters();
    let local = w.backup_d1("gappy", "b").await;
    let at_once = w.d1.count(|c| &c.most_queries_at_once);
    assert!(
        at_once >= 2,
        "one reader left D1 idle: {at_once} query at once"
    );
    let manifest = manifest(&local);
    assert!(
        !manifest["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["key"].as_str().unwrap().contains(".r1-")),
        "one reader by default"
    );
    let rows: i64 = Connection::open(&source)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let read = w.d1.count(|c| &c.rows_read);
    assert!(
        read as f64 <= 1.1 * rows as f64,
        "{read} rows read for {rows}"
    );
    w.restores_the_same(local.to_str().unwrap(), &source, "restored.db")
        .await;
}

/// Two windows asked together travel apart, and D1 may answer the later one first: it is taken
/// in at once (and the next window asked for), yet its rows still follow the earlier window's in
/// the backup, every row once, in key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_answered_out_of_order_stay_in_key_order() {
    let w = World::start().await;
    let rows = 40_000;
    let (source, _) = w.database(
        "reordered",
        &format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO t SELECT i * 3, printf('row %d', i) FROM n;"
        ),
    );
    // Every other request takes longer: of two asked together, the second may arrive first.
    w.d1.set_latencies(&[
        std::time::Duration::from_millis(60),
        std::time::Duration::from_millis(1),
    ]);
    w.d1.reset_counters();
    let local = w.backup_d1("reordered", "b").await;
    assert!(
        w.d1.count(|c| &c.overtaken) > 0,
        "no answer overtook another: the test did not reorder anything"
    );
    let sql = w.path("reordered.sql");
    w.ok(&[
        "export",
        "--from",
        local.to_str().unwrap(),
        "--out",
        sql.to_str().unwrap(),
    ])
    .await;
    let text = std::fs::read_to_string(&sql).unwrap();
    let ids: Vec<i64> = text
        .split('(')
        .filter_map(|s| s.split_once(",'row ").and_then(|(id, _)| id.parse().ok()))
        .collect();
    let want: Vec<i64> = (1..=rows).map(|i| i * 3).collect();
    assert!(ids == want, "{} rows, not {rows} in key order", ids.len());
    w.restores_the_same(local.to_str().unwrap(), &source, "restored.db")
        .await;
}

/// A table's data goes in parts that are each one `PutObject` (under the 5 MiB at which an
/// upload goes multipart): no multipart upload to start and complete, and the parts, read back
/// one after another, restore the same database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_single_puts_and_restore_in_order() {
    let w = World::start().await;
    let source = w.path("blobs.db");
    // ~8.6 MiB of random bytes: hex literals that compress back to about that, two parts' worth.
    create_db(
        &source,
        "CREATE TABLE b(id INTEGER PRIMARY KEY, data BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2200)
         INSERT INTO b SELECT i, randomblob(4096) FROM n;",
    );
    let local = w.path("blobs-local");
    w.ok(&[
        "backup",
        "--source",
        source.to_str().unwrap(),
        "--dest",
        "s3://backups/blobs",
        "--dest",
        local.to_str().unwrap(),
    ])
    .await;
    let m = manifest(&local);
    let sizes: Vec<u64> = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["table"] == "b")
        .map(|o| o["bytes"].as_u64().unwrap())
        .collect();
    assert!(sizes.len() >= 2, "{sizes:?}");
    assert!(
        sizes.iter().all(|b| *b < d1r2::store::PART_SIZE as u64),
        "{sizes:?}"
    );
    let log = w.s3.log();
    assert!(log.iter().any(|l| l.contains("/backups/blobs/")), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains("uploads")),
        "a part went up as a multipart upload: {log:?}"
    );
    w.restores_the_same("s3://backups/blobs", &source, "blobs-restored.db")
        .await;
}

/// A user restoring "without us": `d1r2 export` of a backup taken from D1's own engine, applied
/// to an empty database with the stock `wrangler d1 execute --local --file`, holds every cell of
/// the source, storage class and bytes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_applied_with_wrangler_d1_execute_is_the_same_in_workerd() {
    let w = World::with(Engine::Workerd, &["prod"]).await;
    let (source, _) = w
        .served_database("prod", include_str!("../fixtures/edge.sql"))
        .await;
    let local = w.backup_d1("prod", "b").await;
    let sql = w.path("dump.sql");
    w.ok(&[
        "export",
        "--from",
        local.to_str().unwrap(),
        "--out",
        sql.to_str().unwrap(),
    ])
    .await;
    let by_hand = Workerd::configure(&["copy"]);
    let out = by_hand.execute_file("copy", &sql);
    assert!(
        out.status.success(),
        "wrangler d1 execute: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = w.path("copy.db");
    by_hand.save("copy", &copy);
    Connection::open(&copy)
        .unwrap()
        .execute_batch("DROP TABLE _cf_METADATA")
        .unwrap();
    assert_same_database(&source, &copy);
}

/// Notes that quote SQL transactions (`BEGIN TRANSACTION;`, `COMMIT;` in varied case and spacing,
/// made at random) in text cells and a text key: an export applied with the stock
/// `wrangler d1 execute --local --file`, which strips the first of each anywhere in a file holding
/// `BEGIN TRANSACTION` and refuses one holding it twice, and with the stock `sqlite3` shell holds
/// every cell of the source exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_text_quoting_transactions_applies_exactly_with_wrangler_and_the_shell() {
    let w = World::start().await;
    let source = w.path("notes.db");
    let conn = Connection::open(&source).unwrap();
    conn.execute_batch(
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, extra);
         CREATE TABLE tags(tag TEXT PRIMARY KEY, n) WITHOUT ROWID;",
    )
    .unwrap();
    let mut rng = fixture::Rng::new();
    let mut texts: Vec<String> = (0..60).map(|_| rng.sql_quoting_text()).collect();
    texts.push("run COMMIT; then BEGIN TRANSACTION; and again BEGIN TRANSACTION".to_string());
    for (i, text) in texts.iter().enumerate() {
        let extra = rng.sql_quoting_text();
        conn.execute(
            "INSERT INTO notes VALUES (?1, ?2, ?3)",
            rusqlite::params![i as i64, text, extra],
        )
        .unwrap();
        conn.execute(
            "INSERT OR IGNORE INTO tags VALUES (?1, ?2)",
            rusqlite::params![text, i as i64],
        )
        .unwrap();
    }
    drop(conn);
    let holding = texts
        .iter()
        .filter(|t| t.contains(d1r2::model::value::WRANGLER_TRANSACTION))
        .count();
    assert!(holding >= 2, "{holding} texts hold what wrangler strips");
    let local = w.path("b");
    w.ok(&[
        "backup",
        "--source",
        source.to_str().unwrap(),
        "--dest",
        local.to_str().unwrap(),
    ])
    .await;
    let sql = w.path("dump.sql");
    w.ok(&[
        "export",
        "--from",
        local.to_str().unwrap(),
        "--out",
        sql.to_str().unwrap(),
    ])
    .await;
    let by_hand = Workerd::configure(&["copy"]);
    let out = by_hand.execute_file("copy", &sql);
    assert!(
        out.status.success(),
        "wrangler d1 execute: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = w.path("copy.db");
    by_hand.save("copy", &copy);
    Connection::open(&copy)
        .unwrap()
        .execute_batch("DROP TABLE _cf_METADATA")
        .unwrap();
    assert_same_database(&source, &copy);
    let shell = w.path("shell.db");
    let out = std::process::Command::new("sqlite3")
        .arg("-bail")
        .arg(&shell)
        .stdin(std::fs::File::open(&sql).unwrap())
        .output()
        .expect("the stock sqlite3 shell must be installed");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_database(&source, &shell);
}

/// What `wrangler d1 migrations apply --local` does with `folder` on the data of backup `local`
/// (exported, applied with `wrangler d1 execute`): whether it succeeds, and the migrations
/// `d1_migrations` then records.
fn wrangler_applies(w: &World, local: &Path, folder: &Path, tag: &str) -> (bool, Vec<String>) {
    let sql = w.path(&format!("{tag}.sql"));
    let _ = std::fs::remove_file(&sql);
    let export = D1r2::new()
        .args([
            "export",
            "--from",
            local.to_str().unwrap(),
            "--out",
            sql.to_str().unwrap(),
        ])
        .run();
    export.success();
    wrangler_migrates(w, &sql, folder, tag)
}

/// What `wrangler d1 migrations apply --local` does with `folder` on a database that the SQL
/// file `sql` builds with `wrangler d1 execute --local --file`: whether it succeeds, and the
/// migrations `d1_migrations` then records.
fn wrangler_migrates(w: &World, sql: &Path, folder: &Path, tag: &str) -> (bool, Vec<String>) {
    let by_hand = Workerd::configure(&["copy"]);
    let out = by_hand.execute_file("copy", sql);
    assert!(out.status.success(), "{out:?}");
    let out = by_hand.migrations_apply("copy", folder);
    let copy = w.path(&format!("{tag}.db"));
    let _ = std::fs::remove_file(&copy);
    by_hand.save("copy", &copy);
    let recorded = Connection::open(&copy)
        .unwrap()
        .prepare("SELECT name FROM d1_migrations ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (out.status.success(), recorded)
}

/// drill applies a migrations folder as the pinned `wrangler d1 migrations apply --local` does,
/// with the same verdict: files wrapped in `BEGIN TRANSACTION; … COMMIT;` (the wrapping in
/// generated case and spacing around it), numbered out of text order, a database that already
/// records some migrations (whose files would fail if run again), and a migration that breaks on
/// the data, named by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_applies_migrations_as_wrangler_does() {
    let w = World::start().await;
    let source = w.path("app.db");
    let mut rng = fixture::Rng::new();
    create_db(
        &source,
        &format!(
            "CREATE TABLE d1_migrations(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL);
             INSERT INTO d1_migrations(name) VALUES ('1_init.sql'), ('2_users.sql');
             CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT);
             INSERT INTO users(email) VALUES ('a'), ('a'), ({});",
            d1r2::model::value::literal(d1r2::model::value::ValueRef::Text(
                rng.sql_quoting_text().as_bytes()
            ))
        ),
    );
    let local = w.path("b");
    w.ok(&[
        "backup",
        "--source",
        source.to_str().unwrap(),
        "--dest",
        local.to_str().unwrap(),
    ])
    .await;
    let folder = w.path("migrations");
    std::fs::create_dir_all(&folder).unwrap();
    let put = |name: &str, sql: &str| std::fs::write(folder.join(name), sql).unwrap();
    put("1_init.sql", "this was applied and never runs again;");
    put("2_users.sql", "CREATE TABLE users(id INTEGER PRIMARY KEY);");
    let glue = ["\n", " ", "\n\n", "\r\n"];
    let g = |rng: &mut fixture::Rng| *rng.pick(&glue);
    put(
        "10_notes.sql",
        &format!(
            "-- notes\n{}BEGIN TRANSACTION;{}CREATE TABLE notes(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), body TEXT);{}INSERT INTO notes VALUES (1, 1, 'x');{}COMMIT;{}",
            g(&mut rng),
            g(&mut rng),
            g(&mut rng),
            g(&mut rng),
            g(&mut rng)
        ),
    );
    put(
        "9_name.sql",
        "BEGIN TRANSACTION;\nALTER TABLE users ADD COLUMN name TEXT;\nCOMMIT;\n",
    );
    put("README.md", "not a migration");
    let drill = |folder: &Path| {
        D1r2::new()
            .args([
                "drill",
                "--from",
                local.to_str().unwrap(),
                "--migrations",
                folder.to_str().unwrap(),
            ])
            .run()
    };
    let (ok, recorded) = wrangler_applies(&w, &local, &folder, "good");
    assert!(ok, "wrangler refused the migrations");
    assert_eq!(
        recorded,
        ["1_init.sql", "2_users.sql", "9_name.sql", "10_notes.sql"]
    );
    let run = drill(&folder);
    run.success();
    assert!(
        run.stdout.contains("9_name.sql, 10_notes.sql"),
        "{}",
        run.stdout
    );
    // A migration that breaks on the data: both stop at it, the ones before applied.
    put(
        "11_unique.sql",
        "BEGIN TRANSACTION;\nCREATE UNIQUE INDEX one_email ON users(email);\nCOMMIT;\n",
    );
    put("12_after.sql", "CREATE TABLE after(a);");
    let (ok, recorded) = wrangler_applies(&w, &local, &folder, "bad");
    assert!(!ok, "wrangler applied a failing migration");
    assert_eq!(recorded.last().map(String::as_str), Some("10_notes.sql"));
    let run = drill(&folder);
    run.fails_with(1);
    assert!(
        run.stderr.contains("11_unique.sql") && run.stderr.contains("UNIQUE"),
        "{}",
        run.stderr
    );
}

/// D1 keeps rows that `PRAGMA foreign_key_check` reports: D1 checks every write, but once a
/// parent's unique index is dropped its foreign key no longer resolves, so dropping the parent
/// table then deletes nothing through it and leaves the child's rows pointing at a table that is
/// gone. A drill over a backup of such a D1 (backed up from workerd's D1) reaches the pinned
/// `wrangler d1 migrations apply --local`'s verdict on the same data (built alike in both, as an
/// export of it cannot be loaded: its child rows name a table that is gone): a folder wrangler
/// applies, one migration writing to the child table and one dropping a parent whose index is
/// already gone, is applied, with a warning naming the old row; a migration that adds a
/// violation fails in both, and drill names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_and_wrangler_agree_on_data_already_violating_foreign_keys() {
    let w = World::with(Engine::Workerd, &["app"]).await;
    let mut rng = fixture::Rng::new();
    let n = rng.below(1_000_000);
    let (parent, child, users, posts, kept, unresolved) = (
        format!("p{n}"),
        format!("c{n}"),
        format!("u{n}"),
        format!("s{n}"),
        format!("k{n}"),
        format!("r{n}"),
    );
    let key = 1 + rng.below(1 << 40);
    let orphans = 1 + rng.below(5);
    let rows: Vec<String> = (0..orphans)
        .map(|_| format!("({key}, '{}')", rng.below(1000)))
        .collect();
    let recipe = format!(
        "CREATE TABLE {parent}(k INTEGER);
CREATE UNIQUE INDEX {parent}_k ON {parent}(k);
INSERT INTO {parent} VALUES ({key});
CREATE TABLE {child}(id INTEGER PRIMARY KEY, k INTEGER REFERENCES {parent}(k), note TEXT);
INSERT INTO {child}(k, note) VALUES {};
DROP INDEX {parent}_k;
DROP TABLE {parent};
CREATE TABLE {users}(id INTEGER PRIMARY KEY);
INSERT INTO {users} VALUES (1);
CREATE TABLE {posts}(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES {users}(id));
CREATE TABLE {kept}(k INTEGER);
CREATE UNIQUE INDEX {kept}_k ON {kept}(k);
INSERT INTO {kept} VALUES ({key});
CREATE TABLE {unresolved}(k INTEGER REFERENCES {kept}(k));
INSERT INTO {unresolved} VALUES ({key});
DROP INDEX {kept}_k;
",
        rows.join(", ")
    );
    let id = w.empty_database("app");
    w.execute(&id, &recipe).await;
    let held = w.saved(&id, "held.db");
    let held = Connection::open(&held).unwrap();
    let violating: i64 = held
        .query_row(
            "SELECT count(*) FROM pragma_foreign_key_check(?1)",
            [&child],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(violating as u64, orphans, "D1 keeps every orphan");
    let whole = held.prepare("PRAGMA foreign_key_check").map(|_| ());
    assert!(
        whole
            .as_ref()
            .is_err_and(|e| e.to_string().contains("foreign key mismatch")),
        "{whole:?}"
    );
    let local = w.backup_d1("app", "b").await;
    let sql = w.path("recipe.sql");
    std::fs::write(&sql, &recipe).unwrap();
    let folder = w.path("migrations");
    std::fs::create_dir_all(&folder).unwrap();
    let put = |name: &str, sql: &str| std::fs::write(folder.join(name), sql).unwrap();
    put(
        "1_tags.sql",
        &format!(
            "CREATE TABLE tags{n}(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES {users}(id));\nINSERT INTO tags{n} VALUES (1, 1);\n"
        ),
    );
    put(
        "2_notes.sql",
        &format!("UPDATE {child} SET note = note || '!';\n"),
    );
    let drill = || {
        D1r2::new()
            .args([
                "drill",
                "--from",
                local.to_str().unwrap(),
                "--migrations",
                folder.to_str().unwrap(),
            ])
            .run()
    };
    put("3_unkept.sql", &format!("DROP TABLE {kept};\n"));
    let (ok, recorded) = wrangler_migrates(&w, &sql, &folder, "old");
    assert!(ok, "wrangler refused the migrations");
    assert_eq!(recorded, ["1_tags.sql", "2_notes.sql", "3_unkept.sql"]);
    let run = drill();
    run.success();
    assert!(
        run.stdout.contains("1_tags.sql, 2_notes.sql, 3_unkept.sql")
            && run.stdout.contains(&format!(
                "{orphans} rows of the backup already violate foreign keys, the first row 1 of table {child} (parent table {parent})"
            )),
        "{}",
        run.stdout
    );
    // A migration that adds a violation, deferred to the end of the migration.
    let missing = 2 + rng.below(1 << 40);
    put(
        "4_orphan.sql",
        &format!("PRAGMA defer_foreign_keys=ON;\nINSERT INTO {posts} VALUES (1, {missing});\n"),
    );
    put("5_after.sql", "CREATE TABLE after(a);");
    let (ok, recorded) = wrangler_migrates(&w, &sql, &folder, "new");
    assert!(!ok, "wrangler applied a migration adding a violation");
    assert_eq!(recorded.last().map(String::as_str), Some("3_unkept.sql"));
    let run = drill();
    run.fails_with(1);
    assert!(
        run.stderr.contains("4_orphan.sql")
            && run.stderr.contains("statement 2")
            && run.stderr.contains(&format!("row 1 of table {posts}"))
            && !run.stderr.contains(&missing.to_string()),
        "{}",
        run.stderr
    );
}
