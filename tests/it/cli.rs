//! The command line as a user meets it: exit codes, one-line errors, tampering detected by name,
//! the export loaded by the stock `sqlite3` shell, and no half-backup after a crash.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::cmd::{D1r2, Run};
use common::*;
use d1r2::BackupOptions;
use d1r2::source::sqlite::SqliteSource;
use d1r2::store::local::LocalStore;
use d1r2::store::{ByteStream, ObjectMeta, Store, StoreError, Upload};

fn d1r2(args: &[&str]) -> Run {
    D1r2::new().args(args).run()
}

fn words(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// What the sqlite3 shell or gzip printed on stderr.
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A database from the edge fixture and a full backup of it (parts of its own) in
/// `dir/backups`; returns the backup id.
fn setup(dir: &Path) -> String {
    create_db(&dir.join("app.db"), include_str!("../fixtures/edge.sql"));
    let out = d1r2(&[
        "backup",
        "--full",
        "--source",
        dir.join("app.db").to_str().unwrap(),
        "--dest",
        dir.join("backups").to_str().unwrap(),
    ]);
    out.success();
    let list = d1r2(&[
        "list",
        "--from",
        dir.join("backups").to_str().unwrap(),
        "--json",
    ]);
    let items: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    items[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = setup(d);
    std::fs::write(
        d.join("notes.txt"),
        "this is not a database, just some text\n".repeat(100),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("half/20260101T000000Z")).unwrap();
    std::fs::write(d.join("half/20260101T000000Z/schema.sql.gz"), b"x").unwrap();
    let backups = d.join("backups");
    let p = |name: &str| d.join(name).display().to_string();
    let b = backups.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            words(&["backup", "--source", &p("missing.db"), "--dest", &p("b")]),
            "does not exist",
        ),
        (
            words(&["backup", "--source", &p("notes.txt"), "--dest", &p("b")]),
            "is not a SQLite database",
        ),
        (
            words(&[
                "verify",
                "--from",
                &p("half"),
                "--backup",
                "20260101T000000Z",
            ]),
            "incomplete",
        ),
        (
            words(&["restore", "--from", &p("half"), "--to", &p("r.db")]),
            "no backups",
        ),
        (
            words(&["verify", "--from", &b, "--backup", "20200101T000000Z"]),
            "no backup 20200101T000000Z",
        ),
        (words(&["list", "--from", &p("nowhere")]), "does not exist"),
        (
            words(&["restore", "--from", &b, "--to", &p("app.db")]),
            "--force",
        ),
        (
            words(&[
                "backup",
                "--source",
                &p("app.db"),
                "--dest",
                &p("b"),
                "--tables",
                "nope",
            ]),
            "no table named nope",
        ),
        (
            words(&["backup", "--source", "ftp://x", "--dest", "b"]),
            "unknown source",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d1r2(&args);
        let err = out.stderr;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.trim_end()
                .lines()
                .filter(|l| l.starts_with("error:"))
                .count(),
            1,
            "{err}"
        );
    }
    assert!(!d.join("b").join(&id).exists());
}

/// The usage line names each value for what it is: a restore reads from backups into a target,
/// never "from DEST to SRC".
#[test]
fn the_usage_line_says_what_each_value_is() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join(format!("b{:08x}", rand::random::<u32>()));
    let out = d1r2(&["restore", "--from", from.to_str().unwrap()]);
    let err = out.stderr.clone();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--to <TARGET>"), "{err}");
    let help = d1r2(&["restore", "--help"]);
    help.success();
    let usage = help
        .stdout
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_default()
        .to_string();
    assert!(usage.contains("--from <BACKUPS> --to <TARGET>"), "{usage}");
    for wrong in ["<DEST>", "<SRC>"] {
        assert!(!usage.contains(wrong), "{usage}");
    }
}

/// Counts read as people say them, in one format: `1 row`, thousands separated by commas, in
/// the log lines and in the report alike.
#[test]
fn counts_are_spelled_for_their_number_in_one_format() {
    let dir = tempfile::tempdir().unwrap();
    let (one, many) = (
        format!("one_{:08x}", rand::random::<u32>()),
        format!("many_{:08x}", rand::random::<u32>()),
    );
    let rows = 1000 + u64::from(rand::random::<u16>()) % 9000;
    let db = dir.path().join("c.db");
    create_db(
        &db,
        &format!(
            "CREATE TABLE {one}(a); INSERT INTO {one} VALUES (1);
             CREATE TABLE {many}(a);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO {many} SELECT i FROM n;"
        ),
    );
    let out = d1r2(&[
        "backup",
        "--source",
        db.to_str().unwrap(),
        "--dest",
        dir.path().join("b").to_str().unwrap(),
    ]);
    out.success();
    let commas = |n: u64| format!("{},{:03}", n / 1000, n % 1000);
    for want in [
        format!("table {one}: 1 row\n"),
        format!("table {many}: {} rows\n", commas(rows)),
        ": 2 tables from".to_string(),
    ] {
        assert!(out.stderr.contains(&want), "{want:?} in {out}");
    }
    let total = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Rows"))
        .unwrap_or_default()
        .to_string();
    assert!(
        total.ends_with(&format!(" {}", commas(rows + 1))),
        "{total}"
    );
}

/// A bucket is opened while the source is: a bucket that cannot be opened is still bad input on
/// one line, and a local folder named after it is not made.
#[test]
fn a_bucket_that_cannot_open_is_bad_input_and_no_folder_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let folder = d.join("after");
    let out = D1r2::new()
        .args([
            "backup",
            "--source",
            d.join("app.db").to_str().unwrap(),
            "--dest",
            "r2://backups/app",
            "--dest",
            folder.to_str().unwrap(),
        ])
        .env_remove("R2_ENDPOINT_URL")
        .env_remove("R2_JURISDICTION")
        .env("CLOUDFLARE_ACCOUNT_ID", "not-an-account!")
        .run();
    let err = out.stderr;
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not an account id"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(!folder.exists());
}

#[test]
fn verify_names_a_flipped_missing_or_truncated_part_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = setup(d);
    let backups = d.join("backups");
    let ok = d1r2(&["verify", "--from", backups.to_str().unwrap()]);
    ok.success();

    let part = std::fs::read_dir(backups.join(&id).join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("values"))
        .unwrap();
    let name = part.file_name().unwrap().to_string_lossy().into_owned();
    let original = std::fs::read(&part).unwrap();
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x20;
    let truncated = original[..original.len() - 10].to_vec();
    for (what, content) in [
        ("flipped", Some(flipped)),
        ("truncated", Some(truncated)),
        ("missing", None),
    ] {
        match &content {
            Some(bytes) => std::fs::write(&part, bytes).unwrap(),
            None => std::fs::remove_file(&part).unwrap(),
        }
        for cmd in ["verify", "export"] {
            let mut args = vec![cmd, "--from", backups.to_str().unwrap()];
            let out_file = d.join("out.sql");
            if cmd == "export" {
                args.extend(["--out", out_file.to_str().unwrap()]);
            }
            let out = d1r2(&args);
            assert_eq!(out.status.code(), Some(1), "{cmd} {what}: {}", out.stderr);
            assert!(out.stderr.contains(&name), "{cmd} {what}: {}", out.stderr);
            assert!(
                !out_file.exists(),
                "export left a file behind for a {what} part"
            );
        }
        let target = d.join("restored.db");
        let out = d1r2(&[
            "restore",
            "--from",
            backups.to_str().unwrap(),
            "--to",
            target.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "restore {what}: {}", out.stderr);
        assert!(
            !target.exists(),
            "restore left a database behind for a {what} part"
        );
        let leftovers: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("d1r2-restore")
            })
            .collect();
        assert!(leftovers.is_empty(), "scratch files left: {leftovers:?}");
        std::fs::write(&part, &original).unwrap();
    }
}

#[test]
fn restore_force_replaces_and_tables_restores_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let backups = d.join("backups");
    let target = d.join("target.db");
    create_db(
        &target,
        "CREATE TABLE mine(x); INSERT INTO mine VALUES (1); CREATE TABLE kv(other);",
    );
    let out = d1r2(&[
        "restore",
        "--from",
        backups.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--tables",
        "kv,counters",
        "--force",
    ]);
    out.success();
    let conn = rusqlite::Connection::open(&target).unwrap();
    let tables = user_tables(&conn);
    assert_eq!(
        tables,
        vec!["counters", "kv", "mine"],
        "only the chosen tables are replaced"
    );
    let src = rusqlite::Connection::open(d.join("app.db")).unwrap();
    assert_eq!(table_cells(&conn, "kv"), table_cells(&src, "kv"));
    assert_eq!(
        table_cells(&conn, "counters"),
        table_cells(&src, "counters")
    );
    drop(conn);
    let out = d1r2(&[
        "restore",
        "--from",
        backups.to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--force",
    ]);
    out.success();
    assert_same_database(&d.join("app.db"), &target);
}

#[test]
fn the_export_loads_in_the_stock_sqlite3_shell() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let sql = d.join("dump.sql");
    let out = d1r2(&[
        "export",
        "--from",
        d.join("backups").to_str().unwrap(),
        "--out",
        sql.to_str().unwrap(),
    ]);
    out.success();
    let text = std::fs::read_to_string(&sql).unwrap();
    let (statements, _) = d1r2::format::dump::split::split_all(&text);
    for s in &statements {
        let upper = s.to_ascii_uppercase();
        assert!(
            !upper.starts_with("BEGIN") && !upper.starts_with("COMMIT"),
            "{s}"
        );
        assert!(!upper.contains("WRITABLE_SCHEMA"), "{s}");
    }
    let loaded = d.join("loaded.db");
    let shell = Command::new("sqlite3")
        .arg(&loaded)
        .arg(format!(".read {}", sql.display()))
        .output()
        .expect("the sqlite3 shell must be installed (.ci/run installs it)");
    assert!(
        shell.status.success() && shell.stderr.is_empty(),
        "{}",
        stderr(&shell)
    );
    assert_same_database(&d.join("app.db"), &loaded);
}

/// A store that fails the n-th upload, standing in for a crash or a network failure mid-backup.
struct FailingStore {
    inner: LocalStore,
    fail_at: usize,
    uploads: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl Store for FailingStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        if key.ends_with("manifest.json") && self.fail_at == usize::MAX {
            return Err(StoreError::Remote {
                op: "writing",
                store: "failing".into(),
                key: key.into(),
                message: "injected".into(),
            });
        }
        self.inner.put(key, data).await
    }
    async fn put_stream(&self, key: &str) -> Result<Box<dyn Upload>, StoreError> {
        let n = self
            .uploads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == self.fail_at {
            return Err(StoreError::Remote {
                op: "writing",
                store: "failing".into(),
                key: key.into(),
                message: "injected".into(),
            });
        }
        self.inner.put_stream(key).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn put_new(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put_new(key, data).await
    }
    async fn abort_stale_uploads(
        &self,
        older_than: chrono::DateTime<chrono::Utc>,
        owned: d1r2::store::OwnedKey,
    ) -> Result<usize, StoreError> {
        self.inner.abort_stale_uploads(older_than, owned).await
    }
}

#[tokio::test]
async fn a_failure_mid_backup_leaves_nothing_that_list_shows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    create_db(&db, include_str!("../fixtures/edge.sql"));
    for fail_at in [0, 3, usize::MAX] {
        let backups = dir.path().join(format!("backups-{fail_at}"));
        let store = Arc::new(FailingStore {
            inner: LocalStore::create(&backups).unwrap(),
            fail_at,
            uploads: Default::default(),
        });
        let source = SqliteSource::open(&db).unwrap();
        let result = d1r2::backup(
            &source,
            &[store.clone() as Arc<dyn Store>],
            &BackupOptions {
                concurrency: 1,
                ..BackupOptions::default()
            },
        )
        .await;
        assert!(
            result.is_err(),
            "the injected failure at upload {fail_at} must fail the backup"
        );
        assert!(
            d1r2::format::repo::backup_ids(store.as_ref())
                .await
                .unwrap()
                .is_empty()
        );
        let left: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            left,
            [d1r2::format::repo::STORE_MARKER],
            "parts of the failed backup were left behind"
        );
    }
}

/// A table whose rowid no name reaches (every alias taken by a column, no INTEGER PRIMARY KEY)
/// cannot be read a page at a time: the backup fails naming it and what to do, stores nothing,
/// and goes through with the table left out.
#[test]
fn a_table_whose_rowid_has_no_name_left_fails_and_can_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    create_db(
        &d.join("app.db"),
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO users VALUES (1, 'ada');
         CREATE TABLE \"odd t\"(\"ROWID\" TEXT, oid INT, _rowid_ BLOB);
         INSERT INTO \"odd t\" VALUES ('r', 2, X'00');",
    );
    let db = d.join("app.db");
    let backups = d.join("b");
    let args = |extra: &[&str]| {
        let mut args = vec![
            "backup",
            "--source",
            db.to_str().unwrap(),
            "--dest",
            backups.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        d1r2(&args)
    };
    let out = args(&[]);
    let err = out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("odd t") && err.contains("--exclude-tables"),
        "{err}"
    );
    let list = d1r2(&["list", "--from", backups.to_str().unwrap(), "--json"]);
    let items: serde_json::Value = serde_json::from_str(&list.stdout).unwrap_or_default();
    assert!(
        items.as_array().is_none_or(|a| a.is_empty()),
        "a failed backup is listed: {items}"
    );

    let out = args(&["--exclude-tables", "odd t"]);
    out.success();
    let restored = d.join("r.db");
    let out = d1r2(&[
        "restore",
        "--from",
        backups.to_str().unwrap(),
        "--to",
        restored.to_str().unwrap(),
    ]);
    out.success();
    let conn = rusqlite::Connection::open(&restored).unwrap();
    let name: String = conn
        .query_row("SELECT name FROM users WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "ada");
}

#[test]
fn excluding_a_required_or_unknown_column_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    create_db(
        &d.join("app.db"),
        "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL);",
    );
    for (columns, needle) in [
        ("users.email", "NOT NULL without a DEFAULT"),
        ("users.nope", "no such column"),
        ("users", "TABLE.COLUMN"),
    ] {
        let out = d1r2(&[
            "backup",
            "--source",
            d.join("app.db").to_str().unwrap(),
            "--dest",
            d.join("b").to_str().unwrap(),
            "--exclude-columns",
            columns,
        ]);
        assert_eq!(out.status.code(), Some(2), "{columns}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{columns}: {}", out.stderr);
    }
}

#[test]
fn drill_reports_the_migration_that_breaks_on_backed_up_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let migrations = d.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("0001_init.sql"),
        "this is already applied per d1_migrations and never runs;",
    )
    .unwrap();
    std::fs::write(
        migrations.join("0002_ok.sql"),
        "ALTER TABLE counters ADD COLUMN note TEXT;",
    )
    .unwrap();
    let backups = d.join("backups");
    let ok = d1r2(&[
        "drill",
        "--from",
        backups.to_str().unwrap(),
        "--migrations",
        migrations.to_str().unwrap(),
    ]);
    ok.success();
    assert!(ok.stdout.contains("0002_ok.sql"));
    std::fs::write(migrations.join("0003_bad.sql"), "CREATE UNIQUE INDEX one_parent ON child(parent_id);\nCREATE UNIQUE INDEX one_value ON kv(k);").unwrap();
    let bad = d1r2(&[
        "drill",
        "--from",
        backups.to_str().unwrap(),
        "--migrations",
        migrations.to_str().unwrap(),
    ]);
    bad.fails_with(1);
    let err = bad.stderr;
    assert!(
        err.contains("0003_bad.sql") && err.contains("statement 2") && err.contains("UNIQUE"),
        "{err}"
    );
}

/// A table of many pages is one part of many gzip members (pages compress on several threads),
/// and the stock `gzip` reads it as one stream: the parts stay plain `.sql.gz` files, whether
/// their members were coded with LZ77 matches (text) or by a Huffman code alone (random BLOBs,
/// whose hex holds no matches worth their search).
#[test]
fn a_part_of_many_pages_is_one_stream_for_the_stock_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("big.db");
    create_db(
        &db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
         INSERT INTO t SELECT i, printf('%d %.*c', i, 60 + i % 40, 'v') FROM n;
         CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
         INSERT INTO b SELECT i, randomblob(1500) FROM n;",
    );
    let backups = d.join("backups");
    let out = d1r2(&[
        "backup",
        "--full",
        "--source",
        db.to_str().unwrap(),
        "--dest",
        backups.to_str().unwrap(),
    ]);
    out.success();
    let id = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| d1r2::format::repo::is_backup_id(name))
        .unwrap();
    let mut parts: Vec<_> = std::fs::read_dir(backups.join(&id).join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 2, "{parts:?}");
    let gunzip = |from: &Path| -> Vec<u8> {
        let unzipped = Command::new("gzip")
            .arg("-dc")
            .arg(from)
            .output()
            .expect("gzip");
        assert!(unzipped.status.success(), "{}", stderr(&unzipped));
        unzipped.stdout
    };
    let mut sql = gunzip(&backups.join(&id).join("schema.sql.gz"));
    assert!(
        parts[1].to_string_lossy().ends_with("-b.0.sql.gz"),
        "{parts:?}"
    );
    for part in &parts {
        let gz = std::fs::read(part).unwrap();
        let members = gz.windows(3).filter(|w| w == &[0x1f, 0x8b, 0x08]).count();
        assert!(members > 2, "{}: {members} gzip members", part.display());
        let data = gunzip(part);
        if part == &parts[1] {
            // Hex carries 4 bits a character: a Huffman code stores it in about half its size,
            // LZ77 at libdeflate's level 1 in 54%.
            let ratio = gz.len() as f64 / data.len() as f64;
            assert!(
                ratio < 0.52,
                "random BLOBs stored at {ratio:.3} of their SQL"
            );
        }
        sql.extend(data);
    }
    let all = d.join("all.sql");
    std::fs::write(&all, sql).unwrap();
    let loaded = d.join("loaded.db");
    let shell = Command::new("sqlite3")
        .arg(&loaded)
        .arg(format!(".read {}", all.display()))
        .output()
        .expect("the sqlite3 shell");
    assert!(shell.status.success(), "{}", stderr(&shell));
    assert_same_database(&db, &loaded);
}

/// A backup written by a newer d1r2 (a format this one does not know) is refused with one line
/// that says to upgrade, never misread.
#[test]
fn a_newer_backup_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = setup(d);
    let path = d.join("backups").join(&id).join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["format"] = serde_json::json!(d1r2::format::manifest::FORMAT_VERSION + 1);
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let restored = d.join("restored.db");
    let out = d1r2(&[
        "restore",
        "--from",
        d.join("backups").to_str().unwrap(),
        "--to",
        restored.to_str().unwrap(),
    ]);
    out.fails_with(1);
    let err = out.stderr;
    assert!(err.contains("upgrade d1r2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!restored.exists());
}

/// Rewrites a plain backup's part as a bucket writer can: its SQL decoded, `edit`ed and gzipped
/// again, with the manifest's size and digest made to match.
fn write_over_part(backup: &Path, key: &str, edit: impl Fn(String) -> String) {
    use std::io::{Read, Write};
    let path = backup.join(key);
    let mut sql = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut sql)
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(edit(sql).as_bytes()).unwrap();
    let bytes = gz.finish().unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let manifest_path = backup.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for object in manifest["objects"].as_array_mut().unwrap() {
        if object["key"] == key {
            object["bytes"] = bytes.len().into();
            object["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)).into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

/// A plain backup is not authenticated, so a bucket writer can change the rows it restores; what
/// it cannot do is reach past them: restore, verify and export refuse a part that holds a
/// statement d1r2 does not write (an ATTACH of a file, a DROP, a VACUUM INTO, a line the sqlite3
/// shell runs as a command), exit 1 naming the part, and nothing is created.
#[test]
fn a_written_over_plain_part_cannot_reach_past_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = setup(d);
    let backups = d.join("backups");
    let backup = backups.join(&id);
    let key = std::fs::read_dir(backup.join("data"))
        .unwrap()
        .map(|e| format!("data/{}", e.unwrap().file_name().to_string_lossy()))
        .find(|k| k.contains("values"))
        .unwrap();
    let pwned = d.join("pwned");
    let original = std::fs::read(backup.join(&key)).unwrap();
    let manifest = std::fs::read(backup.join("manifest.json")).unwrap();
    let p = pwned.display();
    let then = "INSERT INTO \"values\"(v) VALUES('after');\n";
    for (what, extra) in [
        (
            "attach",
            format!("ATTACH '{p}' AS x;\nCREATE TABLE x.t(a);\n{then}"),
        ),
        ("dot command", format!(".shell touch {p}\n{then}")),
        ("drop", format!("DROP TABLE \"select\";\n{then}")),
        ("vacuum into", format!("VACUUM INTO '{p}';\n{then}")),
        ("pragma", format!("PRAGMA writable_schema=ON;\n{then}")),
        // The part's last line: the shell would run it when the file ends.
        ("at the end", format!(".shell touch {p}")),
    ] {
        write_over_part(&backup, &key, |sql| format!("{sql}{extra}"));
        let out_file = d.join("out.sql");
        let target = d.join("restored.db");
        for args in [
            vec!["verify", "--from", backups.to_str().unwrap()],
            vec![
                "export",
                "--from",
                backups.to_str().unwrap(),
                "--out",
                out_file.to_str().unwrap(),
            ],
            vec![
                "restore",
                "--from",
                backups.to_str().unwrap(),
                "--to",
                target.to_str().unwrap(),
            ],
        ] {
            let out = d1r2(&args);
            let err = out.stderr;
            assert_eq!(out.status.code(), Some(1), "{} {what}: {err}", args[0]);
            assert!(err.contains(&key), "{} {what}: {err}", args[0]);
            assert_eq!(err.lines().count(), 1, "{} {what}: {err}", args[0]);
            assert!(!pwned.exists(), "{} {what} reached {p}", args[0]);
            assert!(!out_file.exists(), "{} {what} left an export", args[0]);
            assert!(!target.exists(), "{} {what} left a database", args[0]);
        }
        std::fs::write(backup.join(&key), &original).unwrap();
        std::fs::write(backup.join("manifest.json"), &manifest).unwrap();
    }
}

/// The export's first line quotes the manifest; a bucket writer's line end there must not become
/// a line the sqlite3 shell runs.
#[test]
fn the_exports_header_keeps_a_written_over_manifest_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = setup(d);
    let backups = d.join("backups");
    let manifest_path = backups.join(&id).join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let pwned = d.join("pwned");
    manifest["source"]["name"] = format!("app\n.shell touch {}\n", pwned.display()).into();
    manifest["source"]["kind"] = "sqlite\r\n.quit\r\n".into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let sql = d.join("dump.sql");
    let out = d1r2(&[
        "export",
        "--from",
        backups.to_str().unwrap(),
        "--out",
        sql.to_str().unwrap(),
    ]);
    out.success();
    let text = std::fs::read_to_string(&sql).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("-- d1r2 backup") && first.contains(".shell"),
        "{first}"
    );
    assert!(text.lines().nth(1).unwrap().starts_with("PRAGMA"), "{text}");
    let loaded = d.join("loaded.db");
    let shell = Command::new("sqlite3")
        .arg(&loaded)
        .stdin(std::fs::File::open(&sql).unwrap())
        .output()
        .expect("the sqlite3 shell");
    assert!(shell.status.success(), "{}", stderr(&shell));
    assert!(!pwned.exists());
    assert_same_database(&d.join("app.db"), &loaded);
}

/// A database's objects other than SQLite's own indexes, as (type, name, table, sql), sorted.
fn objects(db: &Path) -> Vec<(String, String, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master \
             WHERE sql IS NOT NULL ORDER BY type, name",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The manifest's schema list says which statement of the schema and post parts creates what,
/// and a restore of some tables keeps or leaves each statement by it: a list that does not match
/// the parts statement for statement (an entry dropped, two swapped, a name or a table changed,
/// one added) is refused by verify, restore, a restore of some tables and export, exit 1 naming
/// the part, and nothing is created.
#[test]
fn a_schema_list_that_does_not_match_its_parts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = setup(d);
    let backups = d.join("backups");
    let manifest_path = backups.join(&id).join("manifest.json");
    let original = std::fs::read(&manifest_path).unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let schema = stored["schema"].as_array().unwrap().clone();
    let at = |name: &str| schema.iter().position(|e| e["name"] == name).unwrap();
    type Edit = Box<dyn Fn(&mut Vec<serde_json::Value>)>;
    let (kv, counters, idx_kv, v_gen, trg) = (
        at("kv"),
        at("counters"),
        at("idx_kv"),
        at("v_gen"),
        at("trg_counters"),
    );
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "a table's entry dropped",
            Box::new(move |s| {
                s.remove(kv);
            }),
            "schema.sql.gz",
        ),
        (
            "an index's entry dropped",
            Box::new(move |s| {
                s.remove(idx_kv);
            }),
            "post.sql.gz",
        ),
        (
            "two tables swapped",
            Box::new(move |s| s.swap(kv, counters)),
            "schema.sql.gz",
        ),
        (
            "a view and a trigger swapped",
            Box::new(move |s| s.swap(v_gen, trg)),
            "post.sql.gz",
        ),
        (
            "a table renamed",
            Box::new(move |s| s[kv]["name"] = "kv2".into()),
            "schema.sql.gz",
        ),
        (
            "an index moved to another table",
            Box::new(move |s| s[idx_kv]["table"] = "counters".into()),
            "post.sql.gz",
        ),
        (
            "an entry added",
            Box::new(|s| {
                s.push(serde_json::json!({"kind": "index", "name": "extra", "table": "kv"}))
            }),
            "post.sql.gz",
        ),
    ];
    let target = d.join("restored.db");
    let out_file = d.join("out.sql");
    let from = backups.to_str().unwrap();
    for (what, edit, part) in cases {
        let mut manifest = stored.clone();
        let mut list = schema.clone();
        edit(&mut list);
        manifest["schema"] = list.into();
        std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let to = target.to_str().unwrap();
        for args in [
            vec!["verify", "--from", from],
            vec!["restore", "--from", from, "--to", to],
            vec![
                "restore", "--from", from, "--to", to, "--tables", "counters",
            ],
            vec![
                "export",
                "--from",
                from,
                "--out",
                out_file.to_str().unwrap(),
            ],
        ] {
            let out = d1r2(&args);
            let err = out.stderr;
            let run = args.join(" ");
            assert_eq!(out.status.code(), Some(1), "{run}, {what}: {err}");
            assert!(err.contains(part), "{run}, {what}: {err}");
            assert!(err.contains("manifest's schema"), "{run}, {what}: {err}");
            assert_eq!(err.lines().count(), 1, "{run}, {what}: {err}");
            assert!(!target.exists(), "{run}, {what} left a database");
            assert!(!out_file.exists(), "{run}, {what} left an export");
        }
    }
    std::fs::write(&manifest_path, &original).unwrap();
    let out = d1r2(&["verify", "--from", from]);
    out.success();
}

/// A restore of some tables brings back exactly those tables, the indexes and triggers on them
/// and every view, each as the source has it, and nothing else.
#[test]
fn a_restore_of_some_tables_keeps_exactly_what_belongs_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let target = d.join("some.db");
    let out = d1r2(&[
        "restore",
        "--from",
        d.join("backups").to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
        "--tables",
        "kv,counters,select",
    ]);
    out.success();
    let wanted = [
        "counters",
        "idx_expr",
        "idx_kv",
        "kv",
        "select",
        "sqlite_sequence",
        "trg_counters",
        "v_gen",
        "v_of_v",
    ];
    let source: Vec<_> = objects(&d.join("app.db"))
        .into_iter()
        .filter(|o| wanted.contains(&o.1.as_str()))
        .collect();
    assert_eq!(source.len(), wanted.len());
    assert_eq!(objects(&target), source);
    let (src, restored) = (
        rusqlite::Connection::open(d.join("app.db")).unwrap(),
        rusqlite::Connection::open(&target).unwrap(),
    );
    for table in ["kv", "counters", "select"] {
        assert_eq!(
            table_cells(&restored, table),
            table_cells(&src, table),
            "{table}"
        );
    }
}

/// A backup whose rows already violate a foreign key (written with foreign keys off, say) is no
/// migration's fault: drill applies the migrations and warns. A migration that adds a violation
/// fails, named with its statement and a sample row, never a value.
#[test]
fn drill_blames_a_migration_only_for_violations_it_adds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing: i64 = 1000 + rand::random::<u16>() as i64;
    create_db(
        &d.join("app.db"),
        &format!(
            "PRAGMA foreign_keys=OFF;
             CREATE TABLE p(id INTEGER PRIMARY KEY);
             CREATE TABLE c(id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id));
             INSERT INTO p VALUES (1); INSERT INTO c VALUES (1, 1), (2, {missing});"
        ),
    );
    let backups = d.join("backups");
    d1r2(&[
        "backup",
        "--source",
        d.join("app.db").to_str().unwrap(),
        "--dest",
        backups.to_str().unwrap(),
    ])
    .success();
    let migrations = d.join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(migrations.join("0001_noop.sql"), "SELECT 1;").unwrap();
    let drill = || {
        d1r2(&[
            "drill",
            "--from",
            backups.to_str().unwrap(),
            "--migrations",
            migrations.to_str().unwrap(),
        ])
    };
    let ok = drill();
    ok.success();
    assert!(
        ok.stdout.contains("0001_noop.sql") && ok.stdout.contains("1 rows of the backup already"),
        "{}",
        ok.stdout
    );
    let orphan = missing + 1;
    std::fs::write(
        migrations.join("0002_orphan.sql"),
        format!("PRAGMA defer_foreign_keys=ON;\nINSERT INTO c VALUES (3, {orphan});\n"),
    )
    .unwrap();
    let bad = drill();
    bad.fails_with(1);
    let err = &bad.stderr;
    assert!(
        err.contains("0002_orphan.sql")
            && err.contains("statement 2")
            && err.contains("row 3 of table c")
            && !err.contains(&orphan.to_string()),
        "{err}"
    );
}
