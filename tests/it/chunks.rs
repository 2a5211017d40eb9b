//! Chunked backups through the binary, on the local folder and the S3 server, plain and
//! encrypted: they restore, verify and export cell for cell; a backup of an unchanged database
//! stores no new chunk, one after a changed row only the chunks around it; older backups keep
//! restoring; a chunk substituted or removed is refused by name with nothing written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, params};

use crate::common::assert_same_database;
use crate::common::cmd::{D1r2, Run};
use crate::fakes::d1::{ACCOUNT, FakeD1, TOKEN};
use crate::fakes::s3::{FakeS3, S3State};

const KEY_ENV: &str = "D1R2_ENCRYPTION_KEY";

/// Where the backups go: the destination as given, and the folder its objects are files in.
struct Dest {
    arg: String,
    root: PathBuf,
    env: Vec<(&'static str, String)>,
    key: Option<String>,
    /// The S3 server's request log, when the destination is one.
    log: Option<Arc<S3State>>,
}

impl Dest {
    /// The local folder `root`, plain or encrypted under `key`.
    fn folder(root: PathBuf, key: Option<String>) -> Dest {
        Dest {
            arg: p(&root).to_string(),
            root,
            env: Vec::new(),
            key,
            log: None,
        }
    }

    /// `prefix` in the S3 server's bucket `backups`, plain or encrypted under `key`.
    fn s3(server: &FakeS3, prefix: &str, key: Option<String>) -> Dest {
        Dest {
            arg: format!("s3://backups/{prefix}"),
            root: server.root.path().join("backups").join(prefix),
            env: server.env(),
            key,
            log: Some(server.state.clone()),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = D1r2::new();
        cmd.args(args)
            .env_remove(KEY_ENV)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(key) = &self.key {
            cmd.env(KEY_ENV, key);
        }
        cmd.run()
    }

    fn backup(&self, db: &Path) -> serde_json::Value {
        self.backup_from(p(db))
    }

    /// A chunked backup of `source` (a file or `d1://` name); its manifest as stored.
    fn backup_from(&self, source: &str) -> serde_json::Value {
        let mut args = vec!["backup", "--source", source, "--dest", &self.arg];
        args.extend(["--chunk-size", "4096"]);
        if self.key.is_some() {
            args.push("--encrypt");
        }
        self.run(&args).success();
        let out = self.run(&["list", "--from", &self.arg, "--json"]);
        let listed: serde_json::Value = serde_json::from_str(&out.success().stdout).unwrap();
        let newest = listed.as_array().unwrap().last().unwrap();
        self.manifest(newest["id"].as_str().unwrap())
    }

    /// The backup's manifest as stored: a plain one whole, an encrypted one's public header.
    fn manifest(&self, id: &str) -> serde_json::Value {
        let bytes = std::fs::read(self.root.join(id).join("manifest.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn restore(&self, id: &str, to: &Path) -> Run {
        self.run(&[
            "restore",
            "--from",
            &self.arg,
            "--backup",
            id,
            "--to",
            p(to),
        ])
    }

    fn chunks(&self) -> Vec<PathBuf> {
        files(&self.root.join("chunks"))
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if !path.file_name().unwrap().to_str().unwrap().starts_with('.') {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn random_text(len: usize) -> String {
    (0..len)
        .map(|_| char::from_u32(0x20 + rand::random::<u32>() % 0x2000).unwrap_or('x'))
        .collect()
}

fn random_real() -> f64 {
    loop {
        let f = f64::from_bits(rand::random::<u64>());
        if !f.is_nan() {
            return f;
        }
    }
}

/// A database with a rowid table of mixed values over a few dozen chunks, a table keyed by text
/// WITHOUT ROWID, and an AUTOINCREMENT table.
fn database(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let t = format!("t{:06x}", rand::random::<u32>() % 0xffffff);
    conn.execute_batch(&format!(
        "CREATE TABLE \"{t}\"(id INTEGER PRIMARY KEY, a, b REAL, c TEXT, d BLOB);
         CREATE INDEX \"{t}_c\" ON \"{t}\"(c);
         CREATE TABLE k(name TEXT PRIMARY KEY, v) WITHOUT ROWID;
         CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT, v);"
    ))
    .unwrap();
    let mut insert = conn
        .prepare(&format!("INSERT INTO \"{t}\" VALUES (?1, ?2, ?3, ?4, ?5)"))
        .unwrap();
    for i in 0..600i64 {
        let a: rusqlite::types::Value = match i % 4 {
            0 => rusqlite::types::Value::Integer(rand::random::<i64>()),
            1 => rusqlite::types::Value::Real(random_real()),
            2 => rusqlite::types::Value::Null,
            _ => rusqlite::types::Value::Blob(vec![]),
        };
        let blob: Vec<u8> = (0..rand::random::<u8>()).map(|_| rand::random()).collect();
        insert
            .execute(params![
                i * 7 + 1,
                a,
                random_real(),
                random_text(20 + i as usize % 50),
                blob
            ])
            .unwrap();
    }
    for _ in 0..200 {
        conn.execute(
            "INSERT OR IGNORE INTO k VALUES (?1, ?2)",
            params![random_text(12), rand::random::<i64>()],
        )
        .unwrap();
    }
    for _ in 0..50 {
        conn.execute("INSERT INTO s(v) VALUES (?1)", params![random_text(30)])
            .unwrap();
    }
    conn.execute("DELETE FROM s WHERE id > 45", []).unwrap();
}

/// The first table of `db` (the mixed one).
fn mixed_table(db: &Path) -> String {
    let conn = Connection::open(db).unwrap();
    conn.query_row(
        "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 't%'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn chunked_scenario(dest: Dest, work: &Path) {
    let db = work.join("source.db");
    database(&db);
    let first = dest.backup(&db);
    assert_eq!(first["format"], 4, "{first}");
    let first_id = first["id"].as_str().unwrap().to_string();
    let stored = dest.chunks();
    assert!(stored.len() > 10, "{} chunks", stored.len());
    // Nothing of the rows is in the backup's folder: its data is all in chunks.
    let folder = files(&dest.root.join(&first_id));
    assert!(
        folder
            .iter()
            .all(|f| !f.to_str().unwrap().contains("/data/")),
        "{folder:?}"
    );
    let restored = work.join("first.db");
    dest.restore(&first_id, &restored).success();
    assert_same_database(&db, &restored);
    dest.run(&["verify", "--from", &dest.arg]).success();
    let export = work.join("export.sql");
    dest.run(&["export", "--from", &dest.arg, "--out", p(&export)])
        .success();
    let exported = work.join("exported.db");
    let conn = Connection::open(&exported).unwrap();
    conn.execute_batch(&std::fs::read_to_string(&export).unwrap())
        .unwrap();
    drop(conn);
    assert_same_database(&db, &exported);

    // Unchanged: not one chunk more, and the same ones named, learnt from the manifests without
    // a request about any chunk.
    let requests = |log: &Option<Arc<S3State>>| log.as_ref().map(|l| l.log.lock().unwrap().len());
    let before = requests(&dest.log);
    let second = dest.backup(&db);
    assert_eq!(dest.chunks(), stored, "an unchanged backup stored chunks");
    if let (Some(log), Some(before)) = (&dest.log, before) {
        let log = log.log.lock().unwrap();
        let asked: Vec<&String> = log[before..]
            .iter()
            .filter(|l| l.contains("/chunks/"))
            .collect();
        assert!(asked.is_empty(), "{asked:?}");
    }
    let chunks_of = |m: &serde_json::Value| -> Vec<String> {
        match m.get("chunks") {
            Some(c) => serde_json::from_value(c.clone()).unwrap(),
            None => {
                let mut c: Vec<String> = m["objects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|o| o["chunk"].as_str().map(String::from))
                    .collect();
                c.sort();
                c.dedup();
                c
            }
        }
    };
    assert_eq!(chunks_of(&first), chunks_of(&second));

    // One row changed in the middle of the table: a chunk or two more, no more.
    let snapshot = work.join("snapshot.db");
    std::fs::copy(&db, &snapshot).unwrap();
    let table = mixed_table(&db);
    let conn = Connection::open(&db).unwrap();
    conn.execute(
        &format!("UPDATE \"{table}\" SET c = ?1 WHERE id = 7 * 300 + 1"),
        params![random_text(40)],
    )
    .unwrap();
    drop(conn);
    let third = dest.backup(&db);
    let added = dest.chunks().len() - stored.len();
    assert!((1..=2).contains(&added), "{added} chunks added");
    let third_id = third["id"].as_str().unwrap();
    let restored = work.join("third.db");
    dest.restore(third_id, &restored).success();
    assert_same_database(&db, &restored);
    // The first backup still restores as it was.
    let again = work.join("first-again.db");
    dest.restore(&first_id, &again).success();
    assert_same_database(&snapshot, &again);
}

/// A size as d1r2 prints it.
fn human(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1048576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1048576.0),
    }
}

fn key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Runs `scenario` on a local folder, plain and then encrypted.
fn in_a_folder(scenario: fn(Dest, &Path)) {
    for key in [None, Some(key())] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let dest = Dest::folder(root, key);
        scenario(dest, dir.path());
    }
}

/// Runs `scenario` on the S3 server, plain and then encrypted, each in a prefix of its own.
async fn in_s3(scenario: fn(Dest, &Path)) {
    let server = FakeS3::start(&["backups"]).await;
    for (n, key) in [None, Some(key())].into_iter().enumerate() {
        let prefix = format!("p{n}");
        let dest = Dest::s3(&server, &prefix, key);
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            scenario(dest, dir.path());
        })
        .await
        .unwrap();
    }
}

#[test]
fn chunked_backups_restore_and_share_chunks_in_a_folder() {
    in_a_folder(chunked_scenario);
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_backups_restore_and_share_chunks_in_s3() {
    in_s3(chunked_scenario).await;
}

/// A chunk swapped for another, or gone: the restore fails (exit 1) naming the chunk, and, in a
/// plain backup, its table; the target is never made.
fn substituted_scenario(dest: Dest, work: &Path) {
    let db = work.join("source.db");
    database(&db);
    let manifest = dest.backup(&db);
    let id = manifest["id"].as_str().unwrap();
    let chunks = dest.chunks();
    let (victim, other) = (&chunks[3], &chunks[5]);
    let name = victim.strip_prefix(&dest.root).unwrap().to_str().unwrap();
    let original = std::fs::read(victim).unwrap();
    std::fs::copy(other, victim).unwrap();
    let target = work.join("target.db");
    let out = dest.restore(id, &target);
    out.fails_with(1);
    assert!(out.stderr.contains(name), "{out}");
    assert!(!target.exists());
    if dest.key.is_none() {
        let table = manifest["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == name)
            .unwrap()["table"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(out.stderr.contains(&format!("{table:?}")), "{out}");
    }
    std::fs::remove_file(victim).unwrap();
    let out = dest.restore(id, &target);
    out.fails_with(1);
    assert!(out.stderr.contains(name), "{out}");
    assert!(!target.exists());
    std::fs::write(victim, original).unwrap();
    dest.restore(id, &target).success();
    assert_same_database(&db, &target);
}

#[test]
fn a_substituted_or_missing_chunk_is_refused_by_name_in_a_folder() {
    in_a_folder(substituted_scenario);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_substituted_or_missing_chunk_is_refused_by_name_in_s3() {
    in_s3(substituted_scenario).await;
}

/// The addresses of the chunk files in the store.
fn addresses(dest: &Dest) -> Vec<String> {
    dest.chunks()
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let address = name.strip_suffix(".sql.gz")?;
            let folder = p.parent()?.file_name()?.to_str()?;
            (address.len() == 64 && address.starts_with(folder)).then(|| address.to_string())
        })
        .collect()
}

fn plant(dest: &Dest, key: &str, bytes: &[u8]) -> PathBuf {
    let path = dest.root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn stale(path: &Path) {
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let file = std::fs::File::open(path).unwrap();
    file.set_times(std::fs::FileTimes::new().set_modified(then))
        .unwrap();
}

/// Prune collects the chunks no kept backup names, a crashed backup's included, and never while
/// a backup holds a live lock; a dry run counts them; foreign keys under `chunks/` stay.
fn collection_scenario(dest: Dest, work: &Path) {
    let db = work.join("source.db");
    database(&db);
    let first = dest.backup(&db);
    let table = mixed_table(&db);
    let conn = Connection::open(&db).unwrap();
    conn.execute(&format!("DELETE FROM \"{table}\" WHERE id % 3 = 0"), [])
        .unwrap();
    drop(conn);
    let second = dest.backup(&db);
    let second_id = second["id"].as_str().unwrap();
    let named = |m: &serde_json::Value| -> std::collections::BTreeSet<String> {
        match m.get("chunks") {
            Some(c) => serde_json::from_value(c.clone()).unwrap(),
            None => m["objects"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|o| o["chunk"].as_str().map(String::from))
                .collect(),
        }
    };
    let (a, b) = (named(&first), named(&second));
    assert!(a.difference(&b).count() > 0);
    // A chunk a crashed backup stored, and keys that are not chunks though they sit among them.
    let crashed = hex::encode(rand::random::<[u8; 32]>());
    plant(
        &dest,
        &format!("chunks/{}/{crashed}.sql.gz", &crashed[..2]),
        b"x",
    );
    let foreign: Vec<PathBuf> = [
        "chunks/notes.txt".to_string(),
        format!("chunks/{}/{}.sql.gz.bak", &crashed[..2], crashed),
        format!(
            "chunks/zz/{}.sql.gz",
            hex::encode(rand::random::<[u8; 32]>())
        ),
        "locks/backup-readme.json".to_string(),
    ]
    .iter()
    .map(|k| plant(&dest, k, &rand::random::<[u8; 16]>()))
    .collect();
    let all = addresses(&dest);
    let garbage = all.iter().filter(|x| !b.contains(*x)).count();
    assert_eq!(garbage, a.difference(&b).count() + 1);

    // `list --json` tells each backup's own bytes: its folder, and the chunks only it names.
    let out = dest.run(&["list", "--from", &dest.arg, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&out.success().stdout).unwrap();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let chunk_size = |address: &String| -> u64 {
        dest.chunks()
            .iter()
            .filter(|p| p.file_name().unwrap().to_str().unwrap() == format!("{address}.sql.gz"))
            .map(|p| size(p))
            .sum()
    };
    for (manifest, mine, theirs, item) in
        [(&first, &a, &b, &listed[0]), (&second, &b, &a, &listed[1])]
    {
        let id = manifest["id"].as_str().unwrap();
        assert_eq!(item["id"], id);
        let folder: u64 = files(&dest.root.join(id)).iter().map(|p| size(p)).sum();
        let alone: u64 = mine.difference(theirs).map(chunk_size).sum();
        assert!(alone > 0);
        assert_eq!(item["own_bytes"], folder + alone, "{item}");
    }
    // `list --stats` shows the same as a column, and the totals: what the backups name (chunks
    // they share counted for each), against what the store holds of theirs, the planted objects
    // left out.
    let stats = dest.run(&["list", "--from", &dest.arg, "--stats"]);
    let text = &stats.success().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("OWN"), "{text}");
    for item in listed.as_array().unwrap() {
        let row = lines
            .iter()
            .find(|l| l.starts_with(item["id"].as_str().unwrap()))
            .unwrap();
        let own = human(item["own_bytes"].as_u64().unwrap());
        assert!(row.contains(&format!(" {own} ")), "{own} not in {row:?}");
    }
    let named: u64 = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["bytes"].as_u64().unwrap())
        .sum();
    let held: u64 = [
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    ]
    .iter()
    .flat_map(|id| files(&dest.root.join(id)))
    .chain(dest.chunks().into_iter().filter(|c| !foreign.contains(c)))
    .map(|p| size(&p))
    .sum();
    let totals = format!(
        "{} named by the backups, {} stored",
        human(named),
        human(held)
    );
    assert!(text.contains(&totals), "{totals:?} not in {text}");
    let out = dest.run(&[
        "prune",
        "--from",
        &dest.arg,
        "--keep-last",
        "1",
        "--dry-run",
    ]);
    out.success();
    assert!(
        out.stdout.contains(&format!("{garbage} would be removed")),
        "{out}"
    );
    assert_eq!(addresses(&dest), all);

    // A backup running (its lock live): the policy is applied, the chunks are left.
    let lock = plant(
        &dest,
        &format!("locks/backup-{:016x}.json", rand::random::<u64>()),
        b"{}",
    );
    let out = dest.run(&["prune", "--from", &dest.arg, "--keep-last", "1"]);
    out.success();
    assert!(out.stdout.contains("a backup is running"), "{out}");
    assert_eq!(addresses(&dest), all);
    assert!(
        !dest
            .root
            .join(first["id"].as_str().unwrap())
            .join("manifest.json")
            .exists()
    );

    // The backup crashed: its lock goes stale, and the next prune collects.
    stale(&lock);
    let out = dest.run(&["prune", "--from", &dest.arg, "--keep-last", "1"]);
    out.success();
    assert!(out.stdout.contains(&format!("{garbage} removed")), "{out}");
    let left: std::collections::BTreeSet<String> = addresses(&dest).into_iter().collect();
    assert_eq!(left, b);
    assert!(!lock.exists());
    for path in &foreign {
        assert!(path.exists(), "{}", path.display());
    }
    let restored = work.join("restored.db");
    dest.restore(second_id, &restored).success();
    assert_same_database(&db, &restored);
}

#[test]
fn prune_collects_unnamed_chunks_unless_a_backup_runs_in_a_folder() {
    in_a_folder(collection_scenario);
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_collects_unnamed_chunks_unless_a_backup_runs_in_s3() {
    in_s3(collection_scenario).await;
}

/// The race prune's locks exist for, played out: a chunked backup of D1 that learnt the chunks
/// of a backup prune then drops is held at its last request to D1 (the closing bookmark), after
/// it decided which chunks to reuse and stored the others; prune runs meanwhile and leaves the
/// chunks, saying why; the backup resumes and restores, and so it does after the next prune.
async fn paused_backup_scenario(dest: Dest) {
    let d1 = FakeD1::start().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_path_buf();
    let (v1, v2) = (work.join("v1.db"), work.join("v2.db"));
    database(&v1);
    std::fs::copy(&v1, &v2).unwrap();
    let table = mixed_table(&v2);
    Connection::open(&v2)
        .unwrap()
        .execute(&format!("DELETE FROM \"{table}\" WHERE id % 2 = 0"), [])
        .unwrap();
    d1.add_database_from_file("v1", &v1);
    d1.add_database_from_file("v2", &v2);
    let mut env = dest.env.clone();
    env.extend([
        ("CLOUDFLARE_API_BASE_URL", d1.url.clone()),
        ("CLOUDFLARE_API_TOKEN", TOKEN.to_string()),
        ("CLOUDFLARE_ACCOUNT_ID", ACCOUNT.to_string()),
    ]);
    let dest = Arc::new(Dest { env, ..dest });
    let backup = |name: &'static str| {
        let dest = dest.clone();
        tokio::task::spawn_blocking(move || dest.backup_from(&format!("d1://{name}")))
    };
    let first = backup("v1").await.unwrap();
    backup("v2").await.unwrap();

    let held = d1.hold("/time_travel/bookmark", 1);
    let backing_up = backup("v1");
    held.arrived().await;
    let pruning = dest.clone();
    let out = tokio::task::spawn_blocking(move || {
        let out = pruning.run(&["prune", "--from", &pruning.arg, "--keep-last", "1"]);
        out.success();
        out
    })
    .await
    .unwrap();
    let first_id = first["id"].as_str().unwrap().to_string();
    assert!(!dest.root.join(&first_id).join("manifest.json").exists());
    held.release();
    let resumed = backing_up.await.unwrap();
    let resumed_id = resumed["id"].as_str().unwrap().to_string();
    assert_ne!(resumed_id, first_id);
    tokio::task::spawn_blocking(move || {
        let restored = work.join("restored.db");
        dest.restore(&resumed_id, &restored).success();
        assert_same_database(&v1, &restored);
        assert!(out.stdout.contains("a backup is running"), "{out}");
        dest.run(&["prune", "--from", &dest.arg, "--keep-last", "1"])
            .success();
        let again = work.join("again.db");
        dest.restore(&resumed_id, &again).success();
        assert_same_database(&v1, &again);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_paused_while_prune_runs_keeps_its_chunks_in_a_folder() {
    for key in [None, Some(key())] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let dest = Dest::folder(root, key);
        paused_backup_scenario(dest).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_paused_while_prune_runs_keeps_its_chunks_in_s3() {
    let server = FakeS3::start(&["backups"]).await;
    for (n, key) in [None, Some(key())].into_iter().enumerate() {
        let prefix = format!("p{n}");
        let dest = Dest::s3(&server, &prefix, key);
        paused_backup_scenario(dest).await;
    }
}

/// A chunked backup restores without d1r2, as docs/format.md says: each object of the manifest
/// in order (a chunk read from the store's prefix, the others from the backup's folder), gunzipped
/// by the stock `gzip`, or for an encrypted backup opened by `scripts/decrypt_part.py`, which
/// also checks each chunk against its address, run into the stock `sqlite3` shell.
#[test]
fn a_chunked_backup_restores_by_hand() {
    use sha2::Digest;
    use std::process::{Command, Stdio};
    for key in [None, Some(key())] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let dest = Dest::folder(root, key.clone());
        let db = dir.path().join("source.db");
        database(&db);
        let stored = dest.backup(&db);
        let id = stored["id"].as_str().unwrap();
        let folder = dest.root.join(id);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/decrypt_part.py");
        let decrypt = |args: &[&Path]| {
            let out = Command::new("python3")
                .arg(&script)
                .args(args)
                .env(KEY_ENV, key.as_deref().unwrap())
                .output()
                .unwrap();
            (
                out.status.success(),
                out.stdout,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let manifest: serde_json::Value = match &key {
            None => stored.clone(),
            Some(_) => {
                let (ok, out, err) =
                    decrypt(&[Path::new("--manifest"), &folder.join("manifest.json")]);
                assert!(ok, "{err}");
                serde_json::from_slice(&out).unwrap()
            }
        };
        let mut sql = Vec::new();
        let mut chunk_files = Vec::new();
        for object in manifest["objects"].as_array().unwrap() {
            let relative = object["key"].as_str().unwrap();
            let path = match object["chunk"].as_str() {
                Some(_) => dest.root.join(relative),
                None => folder.join(relative),
            };
            let plain = match &key {
                None => {
                    let out = Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
                    assert!(out.status.success(), "{}", path.display());
                    out.stdout
                }
                Some(_) => {
                    let (ok, out, err) = decrypt(&[&path]);
                    assert!(ok, "{}: {err}", path.display());
                    out
                }
            };
            if let (Some(address), None) = (object["chunk"].as_str(), &key) {
                assert_eq!(hex::encode(sha2::Sha256::digest(&plain)), address);
            }
            if object["chunk"].is_string() {
                chunk_files.push(path);
            }
            sql.extend(plain);
        }
        let restored = dir.path().join("restored.db");
        let mut shell = Command::new("sqlite3")
            .arg(&restored)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sqlite3 shell must be installed (.ci/run installs it)");
        use std::io::Write;
        shell.stdin.take().unwrap().write_all(&sql).unwrap();
        let out = shell.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tables: i64 = Connection::open(&restored)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(tables >= 3, "{tables} tables");
        // Cell for cell through SQLite 3.54 (the shell here, 3.40, reads a few reals under
        // 1e-290 one unit in the last place off: docs/format.md says so).
        let exact = dir.path().join("exact.db");
        Connection::open(&exact)
            .unwrap()
            .execute_batch(std::str::from_utf8(&sql).unwrap())
            .unwrap();
        assert_same_database(&db, &exact);

        // A chunk put in another's place is refused by the script; so is SQL encrypted under a
        // chunk's address by a holder of the key that does not hash to it. Neither is printed.
        if let Some(hex_key) = &key {
            std::fs::copy(&chunk_files[0], &chunk_files[1]).unwrap();
            let (ok, out, err) = decrypt(&[&chunk_files[1]]);
            assert!(!ok && out.is_empty(), "{err}");
            assert!(err.contains("corrupted"), "{err}");
            use d1r2::format::codec::{Compression, PartEncoder};
            use d1r2::format::crypto::{Key, PartKey};
            let name = chunk_files[1].file_name().unwrap().to_str().unwrap();
            let address = name.split('.').next().unwrap();
            let part_key = PartKey::chunk(&Key::parse(hex_key).unwrap(), address);
            let mut encoder = PartEncoder::new(Compression::Gzip, Some(&part_key)).unwrap();
            encoder.write(b"DELETE FROM k;").unwrap();
            let first = encoder.take();
            let (last, _) = encoder.finish().unwrap();
            std::fs::write(&chunk_files[1], [first, last].concat()).unwrap();
            let (ok, out, err) = decrypt(&[&chunk_files[1]]);
            assert!(!ok && out.is_empty(), "{err}");
            assert!(err.contains("does not hash to its address"), "{err}");
        }
    }
}
